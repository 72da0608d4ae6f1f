//! The migration receiver as an attacker meets it (issue 12, attacks 1 and 5): a raw
//! socket that connects first, a stream naming a host file as a disk or more memory
//! than the destination was given, a zstd bomb, a Hello whose data connections never
//! come, a silent data connection, stray connections. Each used to succeed (a hijack,
//! gigabytes of RSS, a hang, a dead destination); now each is refused or dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use nova_tests::migration::{assert_counter_continuous, joined, migrate, Destination};
use nova_tests::vmm::VmmCmd;
use nova_tests::{require_kvm, TempDir};
use nova_vmm_api::{DiskConfig, VmConfig};

const MAGIC: &[u8; 8] = b"NOVAMIGR";
const VERSION: u32 = 6;
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

/// Reads one frame: (kind, payload), or None when the connection ends.
fn read_frame(c: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    c.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    c.read_exact(&mut buf).ok()?;
    Some((buf[0], buf[1..].to_vec()))
}

fn connect(dst: &Destination) -> TcpStream {
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
fn hello_answer(dst: &Destination, connections: u32, config: &VmConfig) -> (TcpStream, u8, String) {
    let mut c = connect(dst);
    c.write_all(&hello(connections, config)).unwrap();
    let (kind, payload) = read_frame(&mut c).expect("an answer to the Hello");
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
    let (kind, why) = read_frame(&mut c).expect("an answer to the bomb");
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
    let (kind, why) = read_frame(&mut c).expect("an answer to the state");
    assert_eq!(kind, K_ABORT, "{}", String::from_utf8_lossy(&why));
    let st = dst.vm.console.wait_exit(Duration::from_secs(20));
    // A refusal (exit 2), not a panic (101) or a signal.
    assert_eq!(st.code(), Some(2), "{}", dst.vm.console.stderr());
}

#[test]
fn stray_connections_do_not_end_the_wait_and_the_migration_still_succeeds() {
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
    // A port scanner, a garbage sender and a data connection out of turn.
    drop(connect(&dst));
    connect(&dst).write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut p = MAGIC.to_vec();
    p.extend_from_slice(&VERSION.to_le_bytes());
    p.extend_from_slice(&1u32.to_le_bytes());
    connect(&dst).write_all(&frame(K_DATA_HELLO, &p)).unwrap();
    let (ok, status, err) = migrate(&sock, dst.port, &[]);
    assert!(ok, "{err} {status:?}");
    dst.vm.console.wait_more_ticks(5, Duration::from_secs(20));
    let lines = joined(
        &src.console.finish(Duration::from_secs(5)),
        &dst.vm.console.lines(),
    );
    assert_counter_continuous(&lines);
    dst.vm.console.kill();
}
