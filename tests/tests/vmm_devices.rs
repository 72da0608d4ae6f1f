//! nova-vmm's virtio devices seen from the guest: disk blocks cross between host and
//! guest intact, and the guest answers ARP, ping and UDP echo on a tap.

use std::time::Duration;

use nova_tests::net::{require_netns, NetNs};
use nova_tests::vmm::VmmCmd;
use nova_tests::{disk_with_host_blocks, guest_blocks, require_kvm, TempDir};

#[test]
fn blocks_written_by_the_guest_verify_on_the_host_and_host_blocks_verify_in_the_guest() {
    if !require_kvm() {
        return;
    }
    let dir = TempDir::new();
    let disk = dir.join("disk.img");
    disk_with_host_blocks(&disk, 8);
    let mut vm = VmmCmd::testguest("disk,poweroff")
        .arg("--disk")
        .arg(&disk)
        .spawn();
    assert!(
        vm.console.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        vm.console.stderr()
    );
    let report = vm
        .console
        .lines()
        .into_iter()
        .find(|l| l.text.starts_with("NOVA-DISK"))
        .expect("a disk report");
    assert_eq!(
        report.num("host_ok"),
        Some(nova_guest_abi::HOST_BLOCKS),
        "{}",
        report.text
    );
    assert_eq!(report.num("errors"), Some(0), "{}", report.text);
    assert_eq!(report.num("verified"), Some(nova_guest_abi::GUEST_BLOCKS));
    // After poweroff, the host reads what the guest wrote (flushed, not in a cache).
    let blocks = guest_blocks(&disk);
    assert!(blocks.iter().all(|b| *b == Ok(1)), "{blocks:?}");
}

#[test]
fn a_read_only_disk_refuses_guest_writes_and_stays_unchanged() {
    if !require_kvm() {
        return;
    }
    let dir = TempDir::new();
    let disk = dir.join("ro.img");
    disk_with_host_blocks(&disk, 8);
    let before = std::fs::read(&disk).unwrap();
    let mut vm = VmmCmd::testguest("disk,poweroff")
        .arg("--disk")
        .arg(format!("{},ro", disk.display()))
        .spawn();
    vm.console.wait_exit(Duration::from_secs(60));
    let lines = vm.console.lines();
    let report = lines
        .iter()
        .find(|l| l.text.starts_with("NOVA-DISK"))
        .expect("a disk report");
    assert_eq!(
        report.num("host_ok"),
        Some(nova_guest_abi::HOST_BLOCKS),
        "reads still work"
    );
    assert!(
        report.num("errors").unwrap() > 0,
        "writes must fail: {}",
        report.text
    );
    assert_eq!(
        std::fs::read(&disk).unwrap(),
        before,
        "a read-only disk changed"
    );
}

#[test]
fn the_guest_answers_arp_ping_and_udp_echo_on_a_tap() {
    if !require_kvm() || !require_netns() {
        return;
    }
    let ns = NetNs::new();
    ns.add_tap("ntap0", "198.51.100.1/24");
    let vm = VmmCmd::testguest("net nova.ip=198.51.100.2/24")
        .args(["--net", "tap=ntap0,mac=52:54:00:00:00:2a"])
        .in_netns(&ns)
        .spawn();
    let ready = vm.console.wait_line("NOVA-NET", Duration::from_secs(20));
    assert_eq!(
        ready.field("mac"),
        Some("52:54:00:00:00:2a"),
        "the configured MAC reaches the guest"
    );
    let ping = ns.run(&["ping", "-c", "3", "-W", "2", "198.51.100.2"]);
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    // ARP resolved to the guest's MAC.
    let neigh = ns.run(&["ip", "neigh", "show", "198.51.100.2"]);
    assert!(String::from_utf8_lossy(&neigh.stdout).contains("52:54:00:00:00:2a"));
    let echo = ns.run(&[
        "python3",
        "-c",
        "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3);\
         s.sendto(b'nova-echo-123',('198.51.100.2',7));print(s.recvfrom(100)[0].decode())",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&echo.stdout).trim(),
        "nova-echo-123",
        "{}",
        String::from_utf8_lossy(&echo.stderr)
    );
}
