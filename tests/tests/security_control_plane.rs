//! The control plane under attack (issue 12): TLS between controller, hostd and
//! novactl; hosts that impersonate other hosts; a flood of bad tokens that must not
//! silence a host; host paths as disks; half-sent requests by the thousand; secrets on
//! disk. Real `nova-controller` and `nova-hostd` processes.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nova_controller_api::{DiskRequest, HostState, NewJoinToken, Role, VmSpec};
use nova_hostd_api::ImageImportRequest;
use nova_tests::controller::*;
use nova_tests::hostd::{self, Hostd};
use nova_tests::{binary, TempDir};

const IMAGE: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fn vm_with(name: &str, kernel: &str) -> VmSpec {
    VmSpec {
        mem_mib: 128,
        start: false,
        ..VmSpec::new(name, kernel)
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `nova-controller dev-ca DIR`: the development CA and server certificate.
fn dev_ca(dir: &Path) {
    let out = Command::new(binary("nova-controller"))
        .arg("dev-ca")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tls_args(ca: &Path) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        ca.join("server.pem").display().to_string(),
        "--tls-key".into(),
        ca.join("server.key").display().to_string(),
    ]
}

#[test]
fn the_controller_serves_tls_and_plaintext_only_when_told_to() {
    let d = TempDir::new();
    let ca = d.join("ca");
    dev_ca(&ca);
    assert_eq!(mode(&ca.join("server.key")), 0o600);
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    let c = Controller::start(
        d.path(),
        Opts {
            args: tls_args(&ca),
            ca: Some(ca.join("ca.pem")),
            ..Opts::default()
        },
    );
    assert!(c.url.starts_with("https://"));
    assert_eq!(block_on(c.api.whoami()).unwrap().user, "admin");
    // A client that does not trust the CA gets no answer at all.
    let e = block_on(client(&c.url, Some(&c.admin)).whoami()).unwrap_err();
    assert!(e.is_unreachable(), "{e}");
    // Plaintext on the TLS port is not served.
    let plain = c.url.replace("https://", "http://");
    assert!(block_on(client(&plain, Some(&c.admin)).whoami()).is_err());
    // novactl with --ca talks to it; without, it cannot.
    let novactl = |ca: Option<&Path>| {
        let mut cmd = Command::new(binary("novactl"));
        cmd.args(["--url", &c.url, "--token", &c.admin]);
        if let Some(ca) = ca {
            cmd.arg("--ca").arg(ca);
        }
        cmd.args(["host", "list"])
            .env("NOVA_CONFIG", d.join("novactl.toml"));
        cmd.output().unwrap()
    };
    let ok = novactl(Some(&ca.join("ca.pem")));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(!novactl(None).status.success());
    // The database holding hostd tokens and the admin token are the owner's only.
    assert_eq!(mode(&d.join("controller.db")), 0o600);
    assert_eq!(mode(&d.join("admin.token")), 0o600);
    assert_eq!(mode(&d.join("join.token")), 0o600);

    // No TLS and no --insecure-http: refused at start, naming the flag.
    let d2 = TempDir::new();
    let e = Controller::try_start(
        d2.path(),
        Opts {
            args: vec!["--tls-key".into(), "/nonexistent".into()],
            ..Opts::default()
        },
    )
    .err()
    .unwrap();
    assert!(e.contains("--tls-cert"), "{e}");
}

#[test]
fn hostd_serves_tls_and_registers_over_tls_with_its_own_credential() {
    let d = TempDir::new();
    let ca = d.join("ca");
    dev_ca(&ca);
    let c = Controller::start(
        d.path(),
        Opts {
            args: {
                let mut a = tls_args(&ca);
                a.extend(["--hostd-ca".into(), ca.join("ca.pem").display().to_string()]);
                a
            },
            ca: Some(ca.join("ca.pem")),
            ..Opts::default()
        },
    );
    let mut args = tls_args(&ca);
    args.extend([
        "--controller".into(),
        c.url.clone(),
        "--join-token-file".into(),
        d.join("join.token").display().to_string(),
        "--controller-ca".into(),
        ca.join("ca.pem").display().to_string(),
    ]);
    let h = std::thread::spawn(move || {
        // hostd's health check in the harness is plaintext: poll the controller instead.
        let mut cmd = Command::new(binary("nova-hostd"));
        let dir = TempDir::new();
        std::fs::write(dir.join("token"), "nova-test-token-0123456789abcdef").unwrap();
        cmd.args([
            "--listen",
            &format!("127.0.0.1:{}", nova_tests::free_port()),
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--token-file")
        .arg(dir.join("token"))
        .args(&args);
        (nova_tests::Console::spawn(cmd), dir)
    })
    .join()
    .unwrap();
    let host = nova_tests::wait_for(30, "hostd to register over TLS", || {
        block_on(c.api.hosts()).ok()?.into_iter().next()
    });
    assert!(host.url.starts_with("https://"), "{}", host.url);
    let saved = h.1.join("data/controller.token");
    nova_tests::wait_for(10, "the host's credential to be saved", || {
        saved.exists().then_some(())
    });
    assert_eq!(mode(&saved), 0o600);
    // The controller reaches the https hostd (its CA from --hostd-ca): the host's
    // heartbeats keep it ready and a forced console call would go through the client.
    std::thread::sleep(Duration::from_millis(1500));
    let host = block_on(c.api.host(&host.id)).unwrap();
    assert_eq!(host.state, HostState::Ready);
    drop(h);
}

#[test]
fn a_join_token_cannot_impersonate_a_registered_host() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let url = "http://192.0.2.10:7071";
    let h1 = register_host(&c, "h1", url, 4, 4096);
    let h2 = register_host(&c, "h2", "http://192.0.2.11:7071", 4, 4096);
    // Re-registering h1 (a new URL: the impostor's) with the join token: refused.
    let (s, _) = refusal(register_with(
        &c,
        &c.join,
        "h1",
        "http://192.0.2.66:7071",
        4,
        4096,
    ));
    assert_eq!(s, 403);
    assert_eq!(
        block_on(c.api.host("h1")).unwrap().url,
        url,
        "h1 is untouched"
    );
    // Nor may another host's token re-register it, nor heartbeat for it.
    assert_eq!(
        status(register_with(
            &c,
            &h2,
            "h1",
            "http://192.0.2.66:7071",
            4,
            4096
        )),
        403
    );
    assert_eq!(status(heartbeat(&c, "h1", &h2, 4, 4096)), 403);
    assert_eq!(status(heartbeat(&c, "h1", &c.join, 4, 4096)), 401);
    // h1 itself may; its new token replaces the old one.
    let again = register_with(&c, &h1, "h1", url, 4, 4096).unwrap();
    heartbeat(&c, "h1", &again.token, 4, 4096).unwrap();
    assert_eq!(
        status(heartbeat(&c, "h1", &h1, 4, 4096)),
        401,
        "the old token is revoked"
    );

    // Issued join tokens: admin-only, single use, expiring.
    let op = c.token_for("acme", "olga", Role::Operator);
    assert_eq!(
        status(block_on(
            c.as_(&op).create_join_token(&NewJoinToken::default())
        )),
        403
    );
    let (s, field) = refusal(block_on(
        c.api.create_join_token(&NewJoinToken { ttl_s: Some(0) }),
    ));
    assert_eq!((s, field.as_deref()), (400, Some("ttl_s")));
    let once = block_on(c.api.create_join_token(&NewJoinToken::default()))
        .unwrap()
        .token;
    register_with(&c, &once, "h3", "http://192.0.2.12:7071", 4, 4096).unwrap();
    assert_eq!(
        status(register_with(
            &c,
            &once,
            "h4",
            "http://192.0.2.13:7071",
            4,
            4096
        )),
        401,
        "a join token admits one host"
    );
    let short = block_on(c.api.create_join_token(&NewJoinToken { ttl_s: Some(1) }))
        .unwrap()
        .token;
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(
        status(register_with(
            &c,
            &short,
            "h4",
            "http://192.0.2.13:7071",
            4,
            4096
        )),
        401,
        "an expired join token admits nobody"
    );

    // Forgetting a host revokes its credentials; it may then join anew.
    assert_eq!(status(block_on(c.as_(&op).forget_host("h1"))), 403);
    let f = block_on(c.api.forget_host("h1")).unwrap();
    assert_eq!(f.tokens_revoked, 1);
    assert_eq!(status(heartbeat(&c, "h1", &again.token, 4, 4096)), 401);
    assert_eq!(status(block_on(c.api.host("h1"))), 404);
    register_host(&c, "h1", url, 4, 4096);
}

#[test]
fn bad_tokens_from_a_hosts_address_never_block_its_valid_heartbeats() {
    let d = TempDir::new();
    let c = Controller::start(
        d.path(),
        Opts {
            max_failed_auth: 20,
            down_after_ms: 3000,
            ..Opts::default()
        },
    );
    let h = register_host(&c, "h1", "http://127.0.0.1:9", 4, 4096);
    let bad = c.as_("nova_wrong");
    let t = Instant::now();
    let mut refused = vec![];
    // Past the down-after time, with 30 bad tokens first and more between heartbeats.
    for _ in 0..30 {
        refused.push(status(block_on(bad.whoami())));
    }
    while t.elapsed() < Duration::from_secs(5) {
        refused.push(status(block_on(bad.whoami())));
        heartbeat(&c, "h1", &h, 4, 4096).expect("a valid heartbeat is answered");
        assert_eq!(block_on(c.api.whoami()).unwrap().user, "admin");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(refused[..20].iter().all(|&s| s == 401), "{refused:?}");
    assert!(refused[20..].iter().all(|&s| s == 429), "{refused:?}");
    assert_eq!(
        block_on(c.api.host("h1")).unwrap().state,
        HostState::Ready,
        "never marked down"
    );
}

#[test]
fn host_paths_are_for_system_admins_only() {
    let d = TempDir::new();
    let c = Controller::start(
        d.path(),
        Opts {
            args: vec!["--max-vms-per-tenant".into(), "2".into()],
            ..Opts::default()
        },
    );
    let op = c.as_(&c.token_for("acme", "olga", Role::Operator));
    let acme_admin = c.as_(&c.token_for("acme", "ada", Role::Admin));
    let (s, field) = refusal(block_on(op.create_vm(&vm_with("a", "/etc/shadow"), None)));
    assert_eq!((s, field.as_deref()), (403, Some("kernel")));
    let mut spec = vm_with("b", IMAGE);
    let disk = |image: &str| DiskRequest {
        image: Some(image.into()),
        size_mib: None,
        read_only: false,
        shared_path: None,
    };
    spec.disks = vec![disk(IMAGE), disk("/var/lib/nova/vms/x/disk0.raw")];
    let (s, field) = refusal(block_on(op.create_vm(&spec, None)));
    assert_eq!((s, field.as_deref()), (403, Some("disks[1].image")));
    // A tenant's admin is no cluster admin.
    let (s, field) = refusal(block_on(
        acme_admin.create_vm(&vm_with("c", "/boot/vmlinuz"), None),
    ));
    assert_eq!((s, field.as_deref()), (403, Some("kernel")));
    // Images from the cache are fine; so is a host path from a system admin.
    block_on(op.create_vm(&vm_with("d", IMAGE), None)).unwrap();
    block_on(c.api.create_vm(&vm_with("e", "/opt/kernels/vmlinux"), None)).unwrap();
    // --max-vms-per-tenant 2: acme's third VM is refused.
    block_on(op.create_vm(&vm_with("f", IMAGE), None)).unwrap();
    let s = status(block_on(op.create_vm(&vm_with("g", IMAGE), None)));
    assert_eq!(s, 409);
}

#[test]
fn hostd_reads_host_paths_only_under_its_image_roots() {
    let roots = TempDir::new();
    let kernel = roots.join("kernel.elf");
    std::fs::write(&kernel, b"not really a kernel, but a file").unwrap();
    let h = Hostd::start(hostd::Opts {
        args: vec!["--image-root".into(), roots.path().display().to_string()],
        ..Default::default()
    });
    let mut spec = hostd::guest("v1", "idle");
    spec.start = false;
    for bad in ["/etc/shadow", "/proc/self/environ"] {
        spec.kernel = bad.into();
        let (s, body) = h.refused(h.api().create(&spec));
        assert_eq!(
            (s, body.field.as_deref()),
            (400, Some("kernel")),
            "{bad}: {body:?}"
        );
    }
    // A symlink under the root pointing out of it is outside.
    std::os::unix::fs::symlink("/etc/passwd", roots.join("escape")).unwrap();
    spec.kernel = roots.join("escape").display().to_string();
    let (s, body) = h.refused(h.api().create(&spec));
    assert_eq!((s, body.field.as_deref()), (400, Some("kernel")));
    // hostd's token file and another VM's disk in its data dir, as a disk image.
    spec.kernel = kernel.display().to_string();
    let victim = h.data().join("vms/other/disk0.raw");
    std::fs::create_dir_all(victim.parent().unwrap()).unwrap();
    std::fs::write(&victim, vec![7u8; 4096]).unwrap();
    for bad in [
        victim.display().to_string(),
        h.dir.join("token").display().to_string(),
    ] {
        spec.disks = vec![nova_hostd_api::DiskSpec {
            image: Some(bad.clone()),
            size_mib: None,
            read_only: false,
            shared_path: None,
        }];
        let (s, body) = h.refused(h.api().create(&spec));
        assert_eq!(
            (s, body.field.as_deref()),
            (400, Some("disks[0].image")),
            "{bad}: {body:?}"
        );
    }
    // Imports: under the root into the cache; elsewhere refused naming `path`.
    let img = h.ok(h.api().import_image(&ImageImportRequest {
        path: kernel.display().to_string(),
    }));
    assert!(img.id.starts_with("sha256:"));
    let (s, body) = h.refused(h.api().import_image(&ImageImportRequest {
        path: "/etc/shadow".into(),
    }));
    assert_eq!((s, body.field.as_deref()), (400, Some("path")));
}

#[test]
fn hostd_refuses_an_upload_past_max_image_mib() {
    let h = Hostd::start(hostd::Opts {
        args: vec!["--max-image-mib".into(), "1".into()],
        ..Default::default()
    });
    let d = TempDir::new();
    let small = d.join("small");
    std::fs::write(&small, vec![1u8; 512 << 10]).unwrap();
    h.ok(h.api().upload_image(&small));
    let big = d.join("big");
    std::fs::write(&big, vec![1u8; 3 << 20]).unwrap();
    let (s, body) = h.refused(h.api().upload_image(&big));
    assert_eq!((s, body.field.as_deref()), (400, Some("body")), "{body:?}");
}

/// Opens `n` connections to `addr`, each sending half a request head and then
/// nothing; answers the ones that connected.
fn half_sent(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    raise_fd_limit();
    let mut held = Vec::new();
    for _ in 0..n {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = s.write_all(b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Le");
            held.push(s);
        }
    }
    held
}

fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain rlimit syscalls on this test process with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

const BOUNDS: [&str; 6] = [
    "--max-connections",
    "256",
    "--header-timeout-s",
    "2",
    "--idle-timeout-s",
    "2",
];

#[test]
fn two_thousand_half_sent_requests_do_not_exhaust_hostd() {
    let h = Hostd::start(hostd::Opts {
        args: BOUNDS.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    });
    let held = half_sent(h.addr, 2000);
    assert!(held.len() >= 256, "only {} connected", held.len());
    let fds = open_fds(h.pid());
    assert!(fds < 256 + 64, "hostd holds {fds} descriptors");
    // A valid request answers once the stalled ones time out.
    let t = Instant::now();
    nova_tests::wait_for(60, "hostd to answer beside the flood", || {
        h.wait(h.api().host()).ok()
    });
    assert!(t.elapsed() < Duration::from_secs(60));
    drop(held);
}

#[test]
fn two_thousand_half_sent_requests_do_not_exhaust_the_controller() {
    let d = TempDir::new();
    let c = Controller::start(
        d.path(),
        Opts {
            args: BOUNDS.iter().map(|s| s.to_string()).collect(),
            ..Opts::default()
        },
    );
    let addr: SocketAddr = c.url.trim_start_matches("http://").parse().unwrap();
    let pid = controller_pid(&c);
    let held = half_sent(addr, 2000);
    assert!(held.len() >= 256, "only {} connected", held.len());
    let fds = open_fds(pid);
    assert!(fds < 256 + 64, "the controller holds {fds} descriptors");
    nova_tests::wait_for(60, "the controller to answer beside the flood", || {
        block_on(c.api.whoami()).ok()
    });
    drop(held);
}

/// The controller's pid, from the process that listens on its port.
fn controller_pid(c: &Controller) -> u32 {
    let port = c.url.rsplit(':').next().unwrap();
    let out = Command::new("ss")
        .args(["-Htlpn", &format!("sport = :{port}")])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let pid = s
        .split("pid=")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no listener on {port}: {s}"));
    pid
}

#[test]
fn revoking_a_token_closes_its_open_event_streams() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let olga = c.token_for("acme", "olga", Role::Operator);
    let tid = block_on(c.api.tokens())
        .unwrap()
        .into_iter()
        .find(|t| t.user == "olga")
        .unwrap()
        .id;
    let mut doomed = EventStream::open(&c.url, &olga);
    let mut other = EventStream::open(&c.url, &c.admin);
    block_on(c.api.revoke_token(&tid)).unwrap();
    // The admin's stream sees the revocation; olga's ends at once (not at the timeout).
    other.until("token.revoked", &tid, 10);
    let t = Instant::now();
    assert!(doomed.next(Duration::from_secs(20)).is_none());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the stream stayed open {:?} after the revocation",
        t.elapsed()
    );
    // And the revoked token opens no new one.
    assert_eq!(EventStream::since(&c.url, &olga, None).err(), Some(401));
}

#[test]
fn a_corrupt_vm_json_is_reported_and_its_running_vmm_left_alone() {
    if !nova_tests::require_kvm() {
        return;
    }
    let mut h = Hostd::start(hostd::Opts::default());
    h.create_vm(&hostd::guest("c1", "counter"));
    h.wait_console("c1", "NOVA-TICK", Duration::from_secs(30));
    let pid = h.ok(h.api().vm("c1")).pid.unwrap();
    let record = h.data().join("vms/c1/vm.json");
    // Written durably: the owner's only, no temp file left beside it.
    assert_eq!(mode(&record), 0o600);
    h.kill();
    std::fs::write(&record, b"{\"spec\": {\"name\": tru").unwrap();
    h.restart();
    let vm = h.ok(h.api().vm("c1"));
    assert_eq!(vm.state, nova_hostd_api::VmState::Unknown, "{vm:?}");
    let why = vm.exit.unwrap().reason;
    assert!(
        why.contains("vm.json") && why.contains(&pid.to_string()),
        "{why}"
    );
    // The guest still runs: its VMM was neither killed nor restarted.
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the VMM was orphaned or killed"
    );
    let console = h.data().join("vms/c1/console.log");
    let len0 = std::fs::metadata(&console).unwrap().len();
    std::thread::sleep(Duration::from_millis(500));
    assert!(std::fs::metadata(&console).unwrap().len() > len0);
    // The corrupt file is left for a person to look at.
    assert_eq!(
        std::fs::read(&record).unwrap(),
        b"{\"spec\": {\"name\": tru"
    );
    // SAFETY: ends the VMM this test started (hostd no longer manages it).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

#[test]
fn tenants_upload_images_and_only_admins_import_host_paths() {
    let d = TempDir::new();
    let c = Controller::start(
        d.path(),
        Opts {
            args: vec!["--max-image-mib".into(), "1".into()],
            ..Opts::default()
        },
    );
    let roots = TempDir::new();
    let on_host = roots.join("kernel.bin");
    std::fs::write(&on_host, vec![9u8; 8192]).unwrap();
    let h = Hostd::start(hostd::Opts {
        args: vec![
            "--controller".into(),
            c.url.clone(),
            "--join-token-file".into(),
            d.join("join.token").display().to_string(),
            "--image-root".into(),
            roots.path().display().to_string(),
        ],
        ..Default::default()
    });
    let host = nova_tests::wait_for(30, "the host to be ready", || {
        block_on(c.api.hosts())
            .ok()?
            .into_iter()
            .find(|x| x.state == HostState::Ready)
    });
    let op = c.as_(&c.token_for("acme", "olga", Role::Operator));
    let file = d.join("image.bin");
    std::fs::write(&file, vec![5u8; 64 << 10]).unwrap();
    let img = block_on(op.upload_image(&file)).unwrap();
    assert!(img.id.starts_with("sha256:"), "{img:?}");
    assert_eq!(img.hosts, vec![host.id.clone()]);
    assert_eq!(h.ok(h.api().image(&img.id)).size_bytes, 64 << 10);
    let listed = block_on(op.images()).unwrap().images;
    assert!(listed.iter().any(|i| i.id == img.id), "{listed:?}");
    // The tenant's VM names the image; nobody named a host file.
    block_on(op.create_vm(&vm_with("web", &img.id), None)).unwrap();
    // Past --max-image-mib: 413, field `body`.
    let big = d.join("big.bin");
    std::fs::write(&big, vec![5u8; 3 << 20]).unwrap();
    let (s, field) = refusal(block_on(op.upload_image(&big)));
    assert_eq!((s, field.as_deref()), (413, Some("body")));
    // Imports of host paths: system admins only, and only under the hosts' roots.
    let (s, field) = refusal(block_on(op.import_image(&on_host.display().to_string())));
    assert_eq!((s, field.as_deref()), (403, Some("path")));
    let imported = block_on(c.api.import_image(&on_host.display().to_string())).unwrap();
    assert_eq!(imported.hosts, vec![host.id.clone()]);
    let (s, field) = refusal(block_on(c.api.import_image("/etc/shadow")));
    assert_eq!((s, field.as_deref()), (400, Some("path")));
    // novactl image list shows both.
    let out = Command::new(binary("novactl"))
        .args(["--url", &c.url, "--token", &c.admin, "image", "list"])
        .env("NOVA_CONFIG", d.join("novactl.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&img.id) && text.contains(&imported.id),
        "{text}"
    );
}

#[test]
fn the_join_token_file_expires_after_its_max_age() {
    let d = TempDir::new();
    let c = Controller::start(
        d.path(),
        Opts {
            args: vec!["--join-token-max-age-s".into(), "2".into()],
            ..Opts::default()
        },
    );
    register_host(&c, "h1", "http://192.0.2.10:7071", 4, 4096);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        status(register_with(
            &c,
            &c.join,
            "h2",
            "http://192.0.2.11:7071",
            4,
            4096
        )),
        401
    );
    // An issued token still enrols.
    let t = block_on(c.api.create_join_token(&NewJoinToken::default()))
        .unwrap()
        .token;
    register_with(&c, &t, "h2", "http://192.0.2.11:7071", 4, 4096).unwrap();
}
