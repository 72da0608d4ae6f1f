//! The host image (`make host-image`) boots under QEMU with TCG (KVM here cannot run a
//! stock kernel), its NIC a tap in a network namespace where the test runs a
//! controller: nova-init formats the blank data partition, starts nova-hostd, the host
//! registers and is Ready, its hostd answers, and the ACPI power button stops hostd
//! first and powers the machine off. Booted two ways: kernel + initramfs with the
//! settings on the command line (static address) and no disk at all, as a diskless
//! PXE host: only the controller's URL, a join token and its CA inline, hostd serving
//! TLS with the certificate the controller issues; and the raw disk by UEFI firmware
//! (OVMF, GRUB, slot A) with the settings in nova.conf on the EFI partition and the
//! address from a DHCP server (dnsmasq) on the tap. The first boot asks for a debug
//! console on the second serial line and uses it; the disk boots show none. The A/B
//! upgrade test boots the disk once and upgrades it twice (one good build, one broken).
//! Over 500 lines: the boots share their helpers here (each boot is minutes under TCG).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nova_controller_api::HostState;
use nova_tests::controller::{block_on, client, client_with_ca};
use nova_tests::hostd::in_namespace;
use nova_tests::net::{require_netns, NetNs};
use nova_tests::{binary, free_port, require, root, unique, wait_for, which, Console, TempDir};

/// Everything under TCG is slow (firmware, kernel and modules take tens of seconds
/// here); under nextest's 300 s limit, so a failure says where it stopped.
const BOOT_SECS: u64 = 240;

/// Waits for a console line of `vm` containing `needle`; on timeout, fails showing the
/// console's last lines.
fn expect_line(vm: &Console, needle: &str) -> String {
    let t = std::time::Instant::now();
    loop {
        let lines = vm.lines();
        if let Some(l) = lines.iter().find(|l| l.text.contains(needle)) {
            return l.text.clone();
        }
        if t.elapsed() > Duration::from_secs(BOOT_SECS) {
            let tail: Vec<&str> = lines
                .iter()
                .rev()
                .take(40)
                .rev()
                .map(|l| l.text.as_str())
                .collect();
            panic!(
                "no console line with '{needle}' in {BOOT_SECS} s; last lines:\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn image(name: &str) -> PathBuf {
    root().join("host-image/out").join(name)
}

/// The image is built and QEMU, namespaces and taps are available.
fn require_image_and_qemu() -> bool {
    require_netns()
        && require(
            which("qemu-system-x86_64"),
            "qemu-system-x86_64 is not installed",
        )
        && require(
            ["vmlinuz", "initrd.img", "nova-host.raw"]
                .iter()
                .all(|f| image(f).exists()),
            "the host image is not built: run `make host-image`",
        )
}

/// A nova-controller listening on `ip:port` inside `ns` (where the guest reaches it).
fn controller_in(ns: &NetNs, dir: &Path, ip: &str, port: u16) -> Console {
    let mut cmd = ns.command(&binary("nova-controller"));
    cmd.args(["--insecure-http", "--listen", &format!("{ip}:{port}")])
        .args(["--heartbeat-ms", "1000", "--down-after-ms", "30000"])
        .arg("--store")
        .arg(format!("sqlite:{}", dir.join("c.db").display()))
        .arg("--admin-token-file")
        .arg(dir.join("admin"))
        .arg("--join-token-file")
        .arg(dir.join("join"));
    Console::spawn(cmd)
}

/// A nova-controller on TLS in `ns` (its certificate from a dev CA made in `ca`,
/// naming `ip`) that issues hosts' serving certificates with that CA.
fn tls_controller_in(ns: &NetNs, dir: &Path, ca: &Path, ip: &str, port: u16) -> Console {
    let out = Command::new(binary("nova-controller"))
        .arg("dev-ca")
        .arg(ca)
        .args(["--san", ip])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = ns.command(&binary("nova-controller"));
    cmd.args(["--listen", &format!("{ip}:{port}")])
        .args(["--heartbeat-ms", "1000", "--down-after-ms", "30000"])
        .arg("--tls-cert")
        .arg(ca.join("server.pem"))
        .arg("--tls-key")
        .arg(ca.join("server.key"))
        .arg("--hostd-ca")
        .arg(ca.join("ca.pem"))
        .arg("--hostd-ca-key")
        .arg(ca.join("ca.key"))
        .arg("--store")
        .arg(format!("sqlite:{}", dir.join("c.db").display()))
        .arg("--admin-token-file")
        .arg(dir.join("admin"))
        .arg("--join-token-file")
        .arg(dir.join("join"));
    Console::spawn(cmd)
}

/// A sparse copy of the image's raw disk (the guest writes its data partition).
fn disk_copy(dir: &TempDir) -> PathBuf {
    let disk = dir.join("disk.raw");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(image("nova-host.raw"))
        .arg(&disk)
        .status()
        .unwrap();
    assert!(st.success(), "copying the raw image");
    disk
}

/// The Ready host named `hostname` in the controller at `url` (seen from `ns`).
fn ready_host(
    ns: &NetNs,
    url: &str,
    admin: &str,
    hostname: &str,
    ca: Option<&Path>,
) -> nova_controller_api::Host {
    let api = client_with_ca(url, Some(admin), ca);
    wait_for(BOOT_SECS, "the host to be Ready in the controller", || {
        in_namespace(Some(&ns.name), || block_on(api.hosts()))
            .ok()?
            .into_iter()
            .find(|h| h.hostname == hostname && h.state == HostState::Ready)
    })
}

/// hostd on the image answers at the URL it registered, as the host registered.
fn assert_hostd_answers(ns: &NetNs, host: &nova_controller_api::Host, ca: Option<&Path>) {
    let opts = nova_http::ClientOptions {
        ca_file: ca.map(Path::to_path_buf),
        ..Default::default()
    };
    let hostd =
        nova_hostd_api::HostdClient::new(&host.url, "health-needs-no-token", &opts).unwrap();
    let health = in_namespace(Some(&ns.name), || block_on(hostd.health()))
        .expect("hostd on the image answers /v1/health");
    assert_eq!(health.host_id, host.id);
}

/// Sends one command to QEMU's human monitor on `sock`.
fn monitor(sock: &Path, command: &str) {
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("QEMU monitor");
    writeln!(s, "{command}").unwrap();
    std::thread::sleep(Duration::from_millis(500));
}

/// Types `line` on the debug console at `sock` (QEMU's second serial line); what it
/// printed until its next prompt.
fn debug_console(sock: &Path, line: &str) -> String {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("the ttyS1 socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    writeln!(s, "{line}").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
        let text = String::from_utf8_lossy(&got);
        // The echo-less console answers, then prompts again.
        if text.matches("nova# ").count() >= 1
            && text.trim_end().ends_with("nova#")
            && text.lines().count() > 1
        {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn host_image_joins_the_controller_and_powers_off_on_the_button() {
    if !require_image_and_qemu() {
        return;
    }
    let dir = TempDir::new();
    let ns = NetNs::new();
    let tap = unique("nvi");
    ns.add_tap(&tap, "192.0.2.1/24");
    let port = free_port();
    let ca = dir.join("ca");
    let _ctl = tls_controller_in(&ns, dir.path(), &ca, "192.0.2.1", port);
    let url = format!("https://192.0.2.1:{port}");
    let ca_pem = ca.join("ca.pem");
    wait_for(30, "the controller to answer", || {
        in_namespace(Some(&ns.name), || {
            block_on(client_with_ca(&url, None, Some(&ca_pem)).health())
        })
        .ok()
    });
    let ca_b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&ca_pem).unwrap())
    };
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    let (admin, join) = (read("admin"), read("join"));

    let mon = dir.join("monitor.sock");
    let dbg = dir.join("ttyS1.sock");
    let mut qemu = ns.command(Path::new("qemu-system-x86_64"));
    qemu.args([
        "-M", "pc", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "1024",
    ])
    .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
    // The second serial line: the debug console the command line asks for.
    .arg("-serial")
    .arg(format!("unix:{},server=on,wait=off", dbg.display()))
    .arg("-monitor")
    .arg(format!("unix:{},server=on,wait=off", mon.display()))
    .arg("-kernel")
    .arg(image("vmlinuz"))
    .arg("-initrd")
    .arg(image("initrd.img"))
    .arg("-append")
    .arg(format!(
        "console=ttyS0 panic=-1 nova.ip=192.0.2.2/24 nova.controller={url} \
             nova.join_token={join} nova.ca_b64={ca_b64} nova.hostname=img-host \
             nova.debug_console=ttyS1"
    ))
    .arg("-netdev")
    .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
    .args(["-device", "virtio-net-pci,netdev=n0"]);
    let mut vm = Console::spawn(qemu);
    expect_line(&vm, "debug console on /dev/ttyS1");
    expect_line(&vm, "no data partition");
    expect_line(&vm, "nova-hostd started");

    // Diskless, no TLS files: hostd serves the certificate the controller issued,
    // verified here against the controller's CA alone.
    let host = ready_host(&ns, &url, &admin, "img-host", Some(&ca_pem));
    assert_eq!(host.url, "https://192.0.2.2:7070", "{host:?}");
    assert_hostd_answers(&ns, &host, Some(&ca_pem));
    // The debug console answers on its line; the image has no shell behind it.
    let answer = debug_console(&dbg, "version");
    assert!(answer.contains("image "), "{answer}");
    let answer = debug_console(&dbg, "sh");
    assert!(answer.contains("sh: unknown command"), "{answer}");

    // The ACPI power button: hostd is stopped first, then the machine powers off.
    monitor(&mon, "system_powerdown");
    expect_line(&vm, "power button pressed");
    expect_line(&vm, "stopping nova-hostd");
    expect_line(&vm, "nova-hostd stopped");
    let st = vm.wait_exit(Duration::from_secs(120));
    assert!(st.success(), "QEMU ended {st} after power-off");
}

#[test]
fn host_disk_boots_by_uefi_with_settings_on_the_efi_partition_and_dhcp() {
    if !require_image_and_qemu()
        || !require(which("dnsmasq"), "dnsmasq (a DHCP server) is not installed")
        || !require(which("mcopy"), "mtools is not installed")
    {
        return;
    }
    let firmware = Path::new("/usr/share/ovmf/OVMF.fd");
    if !require(
        firmware.exists(),
        "OVMF (UEFI firmware, package ovmf) is not installed",
    ) {
        return;
    }
    let dir = TempDir::new();
    let ns = NetNs::new();
    let tap = unique("nvu");
    ns.add_tap(&tap, "198.51.100.1/24");
    let port = free_port();
    let _ctl = controller_in(&ns, dir.path(), "198.51.100.1", port);
    let url = format!("http://198.51.100.1:{port}");
    wait_for(30, "the controller to answer", || {
        in_namespace(Some(&ns.name), || block_on(client(&url, None).health())).ok()
    });
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    let (admin, join) = (read("admin"), read("join"));
    let mut dhcp = ns.command(Path::new("dnsmasq"));
    dhcp.args([
        "--no-daemon",
        "--port=0",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
    ])
    .arg(format!("--interface={tap}"))
    .arg("--dhcp-range=198.51.100.50,198.51.100.59,255.255.255.0,1h")
    .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
    .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()));
    let _dhcp = Console::spawn(dhcp);

    // The site's settings, where an operator puts them: nova.conf on the EFI partition
    // (the first partition, at 1 MiB).
    let disk = disk_copy(&dir);
    let conf = dir.join("nova.conf");
    std::fs::write(
        &conf,
        format!("controller={url}\njoin_token={join}\ninsecure_http=1\nhostname=uefi-host\n"),
    )
    .unwrap();
    let st = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@1M", disk.display()))
        .arg(&conf)
        .arg("::/nova/nova.conf")
        .status()
        .unwrap();
    assert!(st.success(), "mcopy nova.conf onto the EFI partition");

    let mut qemu = ns.command(Path::new("qemu-system-x86_64"));
    qemu.args([
        "-M", "q35", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "1024",
    ])
    .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
    .arg("-bios")
    .arg(firmware)
    .arg("-netdev")
    .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
    .args(["-device", "virtio-net-pci,netdev=n0"])
    .arg("-drive")
    .arg(format!("file={},format=raw,if=virtio", disk.display()));
    let vm = Console::spawn(qemu);
    expect_line(&vm, "NovaCron host: slot a");
    expect_line(&vm, "EFI partition mounted");
    let up = expect_line(&vm, "network up (DHCP)");
    assert!(up.contains("198.51.100.5"), "{up}");
    let host = ready_host(&ns, &url, &admin, "uefi-host", None);
    assert!(host.url.starts_with("http://198.51.100.5"), "{host:?}");
    assert_hostd_answers(&ns, &host, None);

    // Powered off through the API: hostd is stopped first, then the machine.
    let mut vm = vm;
    let (ok, out) = novactl(&ns, &url, &admin, &["host", "poweroff", &host.id]);
    assert!(ok, "{out}");
    assert!(out.contains("powering off"), "{out}");
    let asked = expect_line(&vm, "stop requested: PowerOff");
    assert!(
        asked.trim_end().ends_with("12"),
        "SIGUSR2 from hostd: {asked:?}"
    );
    expect_line(&vm, "nova-hostd stopped");
    let st = vm.wait_exit(Duration::from_secs(120));
    assert!(st.success(), "QEMU ended {st} after power-off");
}

/// Waits for a console line containing `needle` at index >= `from`; its index.
fn expect_from(vm: &Console, from: usize, needle: &str, secs: u64) -> usize {
    vm.wait_for_from(from, Duration::from_secs(secs), |l| l.text.contains(needle))
        .0
}

/// A host image version for the controller's `--system-images`: the built kernel, and
/// the built initramfs followed by a cpio archive of `overlay` (path in the image,
/// bytes, mode). The kernel unpacks concatenated archives in order, later files
/// replacing earlier ones: a build that differs in those files only.
fn derived_version(images: &Path, version: &str, overlay: &[(&str, &[u8], &str)]) {
    let d = images.join(version);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(image("vmlinuz"), d.join("vmlinuz")).unwrap();
    let src = d.join("overlay");
    std::fs::create_dir_all(&src).unwrap();
    let mut spec = String::new();
    for (path, bytes, mode) in overlay {
        let f = src.join(path.trim_start_matches('/').replace('/', "_"));
        std::fs::write(&f, bytes).unwrap();
        spec.push_str(&format!("file {path} {} {mode}\n", f.display()));
    }
    let out = Command::new(root().join("guest-images/linux/mkcpio.sh"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(spec.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "mkcpio.sh");
    let mut initrd = std::fs::read(image("initrd.img")).unwrap();
    // The next archive must start 4-byte aligned; zeros between archives are skipped.
    initrd.resize(initrd.len().next_multiple_of(512), 0);
    initrd.extend_from_slice(&out.stdout);
    std::fs::write(d.join("initrd.img"), initrd).unwrap();
    std::fs::remove_dir_all(&src).unwrap();
}

/// Runs novactl in `ns` against the controller at `url`; its status and output.
fn novactl(ns: &NetNs, url: &str, admin: &str, args: &[&str]) -> (bool, String) {
    let out = ns
        .command(&binary("novactl"))
        .env("NOVA_URL", url)
        .env("NOVA_TOKEN", admin)
        .env_remove("NOVA_CONFIG")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// One boot of the raw disk (UEFI, GRUB, slot A) serves every upgrade check: a rolling
/// upgrade (`novactl cluster upgrade`) to a second build writes slot B, boots it once,
/// and the host is back Ready reporting the new version with slot B marked good; then
/// `novactl host upgrade` to a deliberately broken third build (its hostd cannot
/// start, so it never registers) boots slot A on trial, which misses its deadline,
/// and nova-init reboots into slot B: the host is Ready on the second build again.
/// Without `nova.debug_console` on the command line there is no debug console. The
/// host trusts one image signing key (nova.conf's `image_keys`): an unsigned build is
/// refused first, the host staying as it was; the second build, signed with that key,
/// trusts the next key too (baked in), and the third is signed with the next key only.
#[test]
fn host_disk_upgrades_to_a_new_build_and_falls_back_from_a_broken_one() {
    if !require_image_and_qemu() || !require(which("mcopy"), "mtools is not installed") {
        return;
    }
    let firmware = Path::new("/usr/share/ovmf/OVMF.fd");
    if !require(
        firmware.exists(),
        "OVMF (UEFI firmware, package ovmf) is not installed",
    ) {
        return;
    }
    let v1 = std::fs::read_to_string(image("VERSION"))
        .expect("host-image/out/VERSION (make host-image)")
        .trim()
        .to_string();
    let (v2, v3) = (format!("{v1}-next"), format!("{v1}-broken"));
    let unsigned = format!("{v1}-unsigned");
    let dir = TempDir::new();
    let images = dir.join("images");
    // The operator's signing key: the host trusts it (nova.conf), every build but one
    // is signed with it.
    let keygen = |name: &str| {
        let key = dir.join(name);
        let out = Command::new(binary("novactl"))
            .args(["host-image", "keygen", "--out"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success(), "novactl host-image keygen");
        (key, String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    // Key rotation: the second build bakes the next key into its initramfs
    // (/etc/nova-image-keys, what NOVA_IMAGE_KEYS does), and the third build is signed
    // with that key only: the host installs it because the image it runs trusts it.
    let (key, public) = keygen("image.key");
    let (next_key, next_public) = keygen("next.key");
    derived_version(
        &images,
        &unsigned,
        &[(
            "/etc/nova-version",
            format!("{unsigned}\n").as_bytes(),
            "0644",
        )],
    );
    derived_version(
        &images,
        &v2,
        &[
            ("/etc/nova-version", format!("{v2}\n").as_bytes(), "0644"),
            (
                "/etc/nova-image-keys",
                format!("{next_public}\n").as_bytes(),
                "0644",
            ),
        ],
    );
    // Broken: hostd is an empty file (exec fails, nova-init retries with backoff).
    derived_version(
        &images,
        &v3,
        &[
            ("/etc/nova-version", format!("{v3}\n").as_bytes(), "0644"),
            ("/bin/nova-hostd", b"", "0755"),
        ],
    );

    for (v, key) in [(&v2, &key), (&v3, &next_key)] {
        let st = Command::new(binary("novactl"))
            .args(["host-image", "sign", "--key"])
            .arg(key)
            .arg(images.join(v))
            .status()
            .unwrap();
        assert!(st.success(), "novactl host-image sign {v}");
    }

    let ns = NetNs::new();
    let tap = unique("nvg");
    ns.add_tap(&tap, "203.0.113.1/24");
    let port = free_port();
    let mut cmd = ns.command(&binary("nova-controller"));
    cmd.args([
        "--insecure-http",
        "--listen",
        &format!("203.0.113.1:{port}"),
    ])
    .args(["--heartbeat-ms", "1000", "--down-after-ms", "5000"])
    .arg("--system-images")
    .arg(&images)
    .arg("--store")
    .arg(format!("sqlite:{}", dir.join("c.db").display()))
    .arg("--admin-token-file")
    .arg(dir.join("admin"))
    .arg("--join-token-file")
    .arg(dir.join("join"));
    let _ctl = Console::spawn(cmd);
    let url = format!("http://203.0.113.1:{port}");
    wait_for(30, "the controller to answer", || {
        in_namespace(Some(&ns.name), || block_on(client(&url, None).health())).ok()
    });
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    let (admin, join) = (read("admin"), read("join"));

    let disk = disk_copy(&dir);
    let conf = dir.join("nova.conf");
    std::fs::write(
        &conf,
        format!(
            "controller={url}\njoin_token={join}\ninsecure_http=1\nhostname=ab-host\n\
             ip=203.0.113.2/24\ntrial_secs=90\nimage_keys={public}\n"
        ),
    )
    .unwrap();
    let st = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@1M", disk.display()))
        .arg(&conf)
        .arg("::/nova/nova.conf")
        .status()
        .unwrap();
    assert!(st.success(), "mcopy nova.conf onto the EFI partition");

    let mon = dir.join("monitor.sock");
    let mut qemu = ns.command(Path::new("qemu-system-x86_64"));
    qemu.args([
        "-M", "q35", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "1024",
    ])
    // No -no-reboot: upgrades reboot the machine, QEMU keeps running it.
    .args(["-display", "none", "-serial", "stdio"])
    .arg("-monitor")
    .arg(format!("unix:{},server=on,wait=off", mon.display()))
    .arg("-bios")
    .arg(firmware)
    .arg("-netdev")
    .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
    .args(["-device", "virtio-net-pci,netdev=n0"])
    .arg("-drive")
    .arg(format!("file={},format=raw,if=virtio", disk.display()));
    let mut vm = Console::spawn(qemu);
    let secs = BOOT_SECS;
    expect_from(&vm, 0, "NovaCron host: slot a", secs);
    expect_from(&vm, 0, "no debug console", secs);
    let host = ready_host(&ns, &url, &admin, "ab-host", None);
    assert_eq!(host.image_version.as_deref(), Some(v1.as_str()), "{host:?}");
    assert!(
        !vm.lines()
            .iter()
            .any(|l| l.text.contains("debug console on")),
        "a debug console without nova.debug_console"
    );

    // An unsigned build is refused by the host (it trusts a key, from nova.conf):
    // novactl says why at once, and the host never reboots.
    let mark = vm.lines().len();
    let (ok, out) = novactl(
        &ns,
        &url,
        &admin,
        &["host", "upgrade", &host.id, "--image", &unsigned],
    );
    assert!(!ok, "an unsigned upgrade fails: {out}");
    assert!(out.contains("is not signed"), "{out}");
    assert!(out.contains(&format!("stays on {v1}")), "{out}");
    let host = ready_host(&ns, &url, &admin, "ab-host", None);
    assert_eq!(host.image_version.as_deref(), Some(v1.as_str()), "{host:?}");
    assert!(
        !vm.lines()[mark..]
            .iter()
            .any(|l| l.text.contains("NovaCron host: slot")),
        "the host rebooted for an unsigned image"
    );

    // A rolling upgrade of the cluster (one host here) to the second build.
    let mark = vm.lines().len();
    let (ok, out) = novactl(&ns, &url, &admin, &["cluster", "upgrade", "--image", &v2]);
    assert!(ok, "novactl cluster upgrade: {out}");
    for step in [
        "1 host(s) to upgrade",
        "draining",
        "rebooting",
        "uncordoned",
    ] {
        assert!(out.contains(step), "progress '{step}' in:\n{out}");
    }
    assert!(out.contains(&format!("Ready on {v2}")), "{out}");
    let b = expect_from(&vm, mark, "NovaCron host: slot b", 30);
    expect_from(&vm, b, "slot b is on trial", 30);
    expect_from(&vm, b, "slot b registered: marked good", 60);
    let host = ready_host(&ns, &url, &admin, "ab-host", None);
    assert_eq!(host.image_version.as_deref(), Some(v2.as_str()), "{host:?}");
    assert!(!host.cordoned, "uncordoned after the upgrade: {host:?}");
    assert_hostd_answers(&ns, &host, None);

    // The broken third build: slot A on trial, no registration, back to slot B.
    let mark = vm.lines().len();
    let (ok, out) = novactl(
        &ns,
        &url,
        &admin,
        &["host", "upgrade", &host.id, "--image", &v3],
    );
    assert!(!ok, "a rolled-back upgrade fails: {out}");
    assert!(out.contains(&format!("rolled back to {v2}")), "{out}");
    let a = expect_from(&vm, mark, "NovaCron host: slot a", 30);
    expect_from(&vm, a, "starting nova-hostd", secs);
    let back = expect_from(&vm, a, "slot a did not register within 90 s", 30);
    let b = expect_from(&vm, back, "NovaCron host: slot b", 60);
    assert!(
        !vm.lines()[b..]
            .iter()
            .any(|l| l.text.contains("is on trial")),
        "slot b is the default again, not on trial"
    );
    let host = ready_host(&ns, &url, &admin, "ab-host", None);
    assert_eq!(host.image_version.as_deref(), Some(v2.as_str()), "{host:?}");
    assert_hostd_answers(&ns, &host, None);

    monitor(&mon, "system_powerdown");
    let st = vm.wait_exit(Duration::from_secs(120));
    assert!(st.success(), "QEMU ended {st} after power-off");
}
