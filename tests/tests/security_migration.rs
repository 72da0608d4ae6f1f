//! The migration receiver as an attacker meets it (issue 12, attacks 1 and 5): a raw
//! socket that connects first, a stream naming a host file as a disk or more memory
//! than the destination was given, a zstd bomb, a Hello whose data connections never
//! come, a silent data connection, stray connections. Each used to succeed (a hijack,
//! gigabytes of RSS, a hang, a dead destination); now each is refused or dropped.
//! The stream attacks come from a client holding the migration's credential (a
//! hostile source): without it nothing gets past TLS, which the hijack tests show.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nova_http::blocking::block_on;
use nova_tests::migration::{
    assert_counter_continuous, connect_secure, joined, migrate, migrate_to, Destination,
};
use nova_tests::vmm::{client, VmmCmd};
use nova_tests::{require_kvm, TempDir};
use nova_vmm_api::{DiskConfig, VmConfig};
use nova_vmm_api::{MigrationPeer, MigrationRequest};

const MAGIC: &[u8; 8] = b"NOVAMIGR";
const VERSION: u32 = 7;
const K_HELLO: u8 = 1;
const K_DATA_HELLO: u8 = 2;
const K_PAGES: u8 = 3;
const K_FLUSH: u8 = 5;
const K_STATE: u8 = 7;
const K_WELCOME: u8 = 15;
const K_ABORT: u8 = 14;

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = ((payload.len() + 1) as u32).to_le_bytes().to_vec();
    f.push(kind);
    f.extend_from_slice(payload);
    f
}

fn hello(connections: u32, config: &VmConfig) -> Vec<u8> {
    let mut p = MAGIC.to_vec();
    p.extend_from_slice(&VERSION.to_le_bytes());
    p.extend_from_slice(&connections.to_le_bytes());
    p.extend_from_slice(&serde_json::to_vec(config).unwrap());
    frame(K_HELLO, &p)
}

/// A connection to a destination: TLS with its credential, or plain TCP.
trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// Reads one frame: (kind, payload), or None when the connection ends.
fn read_frame(c: &mut dyn Conn) -> Option<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    c.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    c.read_exact(&mut buf).ok()?;
    Some((buf[0], buf[1..].to_vec()))
}

/// A connection as a source makes it: TLS with the destination's credential.
fn connect(dst: &Destination) -> Box<dyn Conn> {
    match &dst.peer {
        Some(p) => Box::new(connect_secure(dst.port, p).unwrap()),
        None => Box::new(connect_raw(dst)),
    }
}

/// A plain TCP connection, as anyone on the network makes one.
fn connect_raw(dst: &Destination) -> TcpStream {
    let c = TcpStream::connect(("127.0.0.1", dst.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c
}

/// The configuration a stream would carry for a 64 MiB, 1-vCPU test guest.
fn stream_config() -> VmConfig {
    let mut c = VmConfig::new("/boot/vmlinuz".into());
    c.mem_mib = 64;
    c
}

/// Sends a Hello for `config` and returns the destination's answer.
fn hello_answer(
    dst: &Destination,
    connections: u32,
    config: &VmConfig,
) -> (Box<dyn Conn>, u8, String) {
    let mut c = connect(dst);
    c.write_all(&hello(connections, config)).unwrap();
    let (kind, payload) = read_frame(&mut *c).expect("an answer to the Hello");
    (c, kind, String::from_utf8_lossy(&payload).into_owned())
}

#[test]
fn a_stream_naming_a_host_file_as_a_disk_is_refused_and_the_file_untouched() {
    if !require_kvm() {
        return;
    }
    let dir = TempDir::new();
    let victim = dir.join("host-secret");
    std::fs::write(&victim, b"root:$6$not-for-guests").unwrap();
    let mut dst = Destination::start_for(64, 1, &[]);
    let mut config = stream_config();
    config.disks = vec![DiskConfig {
        path: victim.clone(),
        read_only: false,
        shared: false,
        backup_bitmap: None,
    }];
    let (_c, kind, why) = hello_answer(&dst, 1, &config);
    assert_eq!(kind, K_ABORT, "the destination accepted the stream: {why}");
    assert!(why.contains("disks"), "{why}");
    assert!(!dst.vm.console.wait_exit(Duration::from_secs(20)).success());
    assert_eq!(std::fs::read(&victim).unwrap(), b"root:$6$not-for-guests");
}

#[test]
fn a_stream_asking_for_more_memory_or_vcpus_than_admitted_is_refused_by_field() {
    if !require_kvm() {
        return;
    }
    for (field, config) in [
        ("mem_mib", {
            let mut c = stream_config();
            c.mem_mib = 1 << 20;
            c
        }),
        ("vcpus", {
            let mut c = stream_config();
            c.vcpus = 32;
            c
        }),
    ] {
        let mut dst = Destination::start_for(64, 1, &[]);
        let (_c, kind, why) = hello_answer(&dst, 1, &config);
        assert_eq!(kind, K_ABORT, "{field}: accepted: {why}");
        assert!(why.contains(field), "{why}");
        assert!(!dst.vm.console.wait_exit(Duration::from_secs(20)).success());
    }
}

#[test]
fn the_destination_needs_its_memory_and_vcpus_from_its_own_flags() {
    let mut vm = VmmCmd::raw()
        .args(["--incoming", "tcp:127.0.0.1:0", "--vcpus", "1"])
        .spawn();
    assert!(!vm.console.wait_exit(Duration::from_secs(20)).success());
    assert!(
        vm.console.stderr().contains("mem_mib"),
        "{}",
        vm.console.stderr()
    );
}

#[test]
fn a_zstd_bomb_is_refused_by_the_page_count_it_claims() {
    if !require_kvm() {
        return;
    }
    // 64 MiB of zeros compress to a few KB; the frame claims all 16384 pages at once.
    let out = std::process::Command::new("sh")
        .args(["-c", "head -c 67108864 /dev/zero | zstd -q -c"])
        .output()
        .expect("zstd (Debian package zstd)");
    assert!(out.status.success() && out.stdout.len() < 64 << 10);
    let mut dst = Destination::start_for(64, 1, &[]);
    let (mut c, kind, why) = hello_answer(&dst, 1, &stream_config());
    assert_eq!(kind, K_WELCOME, "{why}");
    let mut p = vec![1u8]; // zstd
    p.extend_from_slice(&16384u32.to_le_bytes());
    for i in 0..16384u64 {
        p.extend_from_slice(&i.to_le_bytes());
    }
    p.extend_from_slice(&out.stdout);
    c.write_all(&frame(K_PAGES, &p)).unwrap();
    let (kind, why) = read_frame(&mut *c).expect("an answer to the bomb");
    let why = String::from_utf8_lossy(&why);
    assert_eq!(kind, K_ABORT);
    assert!(why.contains("more than a batch"), "{why}");
    assert!(!dst.vm.console.wait_exit(Duration::from_secs(20)).success());
}

#[test]
fn a_hello_announcing_connections_that_never_come_ends_the_incoming() {
    if !require_kvm() {
        return;
    }
    let mut dst = Destination::start_for(64, 1, &[]);
    let (c, kind, why) = hello_answer(&dst, 5, &stream_config());
    assert_eq!(kind, K_WELCOME, "{why}");
    drop(c);
    // It used to wait for them forever.
    assert!(!dst.vm.console.wait_exit(Duration::from_secs(40)).success());
    assert!(
        dst.vm.console.stderr().contains("did not arrive"),
        "{}",
        dst.vm.console.stderr()
    );
}

#[test]
fn a_silent_data_connection_ends_the_incoming() {
    if !require_kvm() {
        return;
    }
    let mut dst = Destination::start_for(64, 1, &[]);
    let (mut c, kind, why) = hello_answer(&dst, 2, &stream_config());
    assert_eq!(kind, K_WELCOME, "{why}");
    let mut data = connect(&dst);
    let mut p = MAGIC.to_vec();
    p.extend_from_slice(&VERSION.to_le_bytes());
    p.extend_from_slice(&1u32.to_le_bytes());
    data.write_all(&frame(K_DATA_HELLO, &p)).unwrap();
    // The control connection asks for a flush the data connection never sends.
    c.write_all(&frame(K_FLUSH, &[])).unwrap();
    assert!(!dst.vm.console.wait_exit(Duration::from_secs(40)).success());
    drop(data);
}

#[test]
fn a_state_with_a_length_of_two_to_the_64_minus_21_is_refused_not_a_panic() {
    if !require_kvm() {
        return;
    }
    let mut dst = Destination::start_for(64, 1, &[]);
    let (mut c, kind, why) = hello_answer(&dst, 1, &stream_config());
    assert_eq!(kind, K_WELCOME, "{why}");
    let mut state = b"NOVASTAT".to_vec();
    state.extend_from_slice(&4u32.to_le_bytes());
    state.extend_from_slice(&(u64::MAX - 20).to_le_bytes());
    state.extend_from_slice(&[0; 8]);
    c.write_all(&frame(K_STATE, &state)).unwrap();
    let (kind, why) = read_frame(&mut *c).expect("an answer to the state");
    assert_eq!(kind, K_ABORT, "{}", String::from_utf8_lossy(&why));
    let st = dst.vm.console.wait_exit(Duration::from_secs(20));
    // A refusal (exit 2), not a panic (101) or a signal.
    assert_eq!(st.code(), Some(2), "{}", dst.vm.console.stderr());
}

#[test]
fn connections_without_the_credential_are_dropped_and_the_migration_still_succeeds() {
    if !require_kvm() {
        return;
    }
    let (cmd, sock) = VmmCmd::testguest("counter")
        .args(["--mem-mib", "64"])
        .with_api();
    let mut src = cmd.spawn();
    src.console
        .wait_line("NOVA-TICK 20", Duration::from_secs(30));
    let mut dst = Destination::start_for(64, 1, &[]);
    let peer = dst.peer.clone().unwrap();
    // A port scanner; a raw socket that stays open and silent; the old hijack, a
    // plaintext Hello for a VM of its own; garbage.
    drop(connect_raw(&dst));
    let _silent = connect_raw(&dst);
    let mut hijack = connect_raw(&dst);
    hijack.write_all(&hello(1, &stream_config())).unwrap();
    connect_raw(&dst)
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap();
    // TLS to the right destination, with a wrong secret, then sending a Hello: the
    // handshake completes (the certificate is the pinned one), the secret does not.
    let wrong = MigrationPeer {
        secret: "42".repeat(32),
        ..peer.clone()
    };
    let mut impostor = connect_secure(dst.port, &wrong).unwrap();
    let _ = impostor.write_all(&hello(1, &stream_config()));
    // None of them got an answer: each was dropped, not let in.
    assert_eq!(read_frame(&mut hijack), None);
    assert_eq!(read_frame(&mut impostor), None);
    // A data connection out of turn, even with the credential, is dropped too.
    let mut p = MAGIC.to_vec();
    p.extend_from_slice(&VERSION.to_le_bytes());
    p.extend_from_slice(&1u32.to_le_bytes());
    connect(&dst).write_all(&frame(K_DATA_HELLO, &p)).unwrap();
    // The real source, with the credential, migrates the VM.
    let (ok, status, err) = migrate_to(&sock, &dst, &[]);
    assert!(ok, "{err} {status:?}");
    dst.vm.console.wait_more_ticks(5, Duration::from_secs(20));
    let lines = joined(
        &src.console.finish(Duration::from_secs(5)),
        &dst.vm.console.lines(),
    );
    assert_counter_continuous(&lines);
    let log = dst.vm.console.stderr();
    assert!(
        log.contains("did not present this migration's secret"),
        "{log}"
    );
    dst.vm.console.kill();
}

#[test]
fn a_source_without_the_credential_is_refused_and_keeps_its_vm() {
    if !require_kvm() {
        return;
    }
    let (cmd, sock) = VmmCmd::testguest("counter")
        .args(["--mem-mib", "64"])
        .with_api();
    let src = cmd.spawn();
    src.console
        .wait_line("NOVA-TICK 20", Duration::from_secs(30));
    let dst = Destination::start_for(64, 1, &[]);
    // Without --insecure the source refuses to send in plaintext, naming the field.
    let req = MigrationRequest {
        to: format!("tcp:127.0.0.1:{}", dst.port),
        params: Default::default(),
        peer: None,
    };
    let e = block_on(client(&sock).migrate(&req)).unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("peer"), "{e}");
    // With another destination's credential, the pinned certificate does not match.
    let other = Destination::start_for(64, 1, &[]);
    let p = other.peer.clone().unwrap();
    let args = [
        "--peer-cert-sha256",
        p.cert_sha256.as_str(),
        "--peer-secret",
        p.secret.as_str(),
    ];
    let (ok, status, err) = migrate(&sock, dst.port, &args);
    assert!(!ok, "{status:?}");
    assert!(
        status.error.as_deref().unwrap_or("").contains("securing"),
        "{status:?} {err}"
    );
    src.console.wait_more_ticks(10, Duration::from_secs(20));
}

/// A TCP relay to `port` that records what the source sends.
fn recording_relay(port: u16) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                return;
            };
            let (mut c2, mut s_back) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_back, &mut c2);
            });
            let seen = s2.clone();
            std::thread::spawn(move || {
                let (mut from, mut to) = (client, server);
                let mut buf = vec![0u8; 1 << 16];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    let mut s = seen.lock().unwrap();
                    if s.len() < 256 << 20 {
                        s.extend_from_slice(&buf[..n]);
                    }
                }
                let _ = to.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (relay_port, seen)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_stream_is_encrypted_unless_both_sides_run_insecure() {
    if !require_kvm() {
        return;
    }
    for insecure in [false, true] {
        let mut cmd = VmmCmd::testguest("counter").args(["--mem-mib", "64"]);
        if insecure {
            cmd = cmd.arg("--insecure");
        }
        let (cmd, sock) = cmd.with_api();
        let src = cmd.spawn();
        src.console
            .wait_line("NOVA-TICK 20", Duration::from_secs(30));
        let dst = match insecure {
            true => Destination::start_for_insecure(64, 1, &[]),
            false => Destination::start_for(64, 1, &[]),
        };
        let (relay, seen) = recording_relay(dst.port);
        let mut args: Vec<&str> = vec!["--mode", "precopy"];
        if let Some(p) = &dst.peer {
            args.extend([
                "--peer-cert-sha256",
                p.cert_sha256.as_str(),
                "--peer-secret",
                p.secret.as_str(),
            ]);
        }
        let (ok, status, err) = migrate(&sock, relay, &args);
        assert!(ok, "insecure={insecure}: {err} {status:?}");
        let seen = seen.lock().unwrap();
        assert!(seen.len() > 64 << 10, "{}", seen.len());
        // The protocol's magic and the VM's configuration (its memory size as JSON)
        // are on the wire in plaintext, and only there.
        assert_eq!(contains(&seen, MAGIC), insecure, "insecure={insecure}");
        assert_eq!(
            contains(&seen, b"\"mem_mib\""),
            insecure,
            "insecure={insecure}"
        );
        // Only a destination run --insecure answers a plaintext Hello.
        let probe = match insecure {
            true => Destination::start_for_insecure(64, 1, &[]),
            false => Destination::start_for(64, 1, &[]),
        };
        let mut c = connect_raw(&probe);
        c.write_all(&hello(1, &stream_config())).unwrap();
        let answer = read_frame(&mut c).map(|(k, _)| k);
        assert_eq!(
            answer.is_some(),
            insecure,
            "insecure={insecure}: {answer:?}"
        );
        drop((dst, probe));
    }
}

/// `Seccomp_filters` of each thread of `pid` whose name starts with `prefix`.
fn filters_of_threads(pid: u32, prefix: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let n = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp_filters:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        out.push(n);
    }
    out
}

#[test]
fn the_destinations_migration_threads_run_under_their_own_seccomp_filter() {
    if !require_kvm() {
        return;
    }
    let dst = Destination::start_for(64, 1, &[]);
    let pid = dst.vm.console.pid();
    // The main thread has its own filter; the thread accepting migration connections
    // (and each examining one) adds the Migration filters on top: its list and the
    // one answering its opens EACCES.
    let main = filters_of_threads(pid, "nova-vmm");
    let accept = nova_tests::wait_for(5, "the accepting thread", || {
        let a = filters_of_threads(pid, "migration-accep");
        (!a.is_empty()).then_some(a)
    });
    assert_eq!(main, [1], "main thread: {main:?}");
    assert_eq!(accept, [3], "accept thread: {accept:?}");
    // A silent connection is examined on a thread of its own, under the same filter.
    let _c = connect_raw(&dst);
    let admit = nova_tests::wait_for(5, "an admission thread", || {
        let a = filters_of_threads(pid, "migration-admi");
        (!a.is_empty()).then_some(a)
    });
    assert!(
        admit.iter().all(|n| *n == 5),
        "admission threads: {admit:?}"
    );
}
