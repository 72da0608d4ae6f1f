//! The test guest's disk and net drivers against QEMU microvm's virtio-mmio devices:
//! a reference implementation checks our guest drivers, and through them our devices.

use std::time::Duration;

use nova_tests::net::{require_netns, NetNs};
use nova_tests::vmm::qemu_testguest;
use nova_tests::{disk_with_host_blocks, guest_blocks, require_qemu, TempDir};

#[test]
fn the_disk_workload_passes_on_qemu_virtio_blk() {
    if !require_qemu() {
        return;
    }
    let dir = TempDir::new();
    let disk = dir.join("disk.img");
    disk_with_host_blocks(&disk, 8);
    let drive = format!("id=d0,file={},format=raw,if=none", disk.display());
    let mut q = qemu_testguest(
        None,
        128,
        "nova.workload=disk,poweroff",
        &["-drive", &drive, "-device", "virtio-blk-device,drive=d0"],
    );
    q.wait_exit(Duration::from_secs(60));
    let report = q
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
    assert!(guest_blocks(&disk).iter().all(|b| *b == Ok(1)));
}

#[test]
fn the_net_workload_answers_ping_and_echo_on_qemu_virtio_net() {
    if !require_qemu() || !require_netns() {
        return;
    }
    let ns = NetNs::new();
    ns.add_tap("qtap0", "203.0.113.1/24");
    let q = qemu_testguest(
        Some(&ns.name),
        128,
        "nova.workload=net nova.ip=203.0.113.2/24",
        &[
            "-netdev",
            "tap,id=n0,ifname=qtap0,script=no,downscript=no",
            "-device",
            "virtio-net-device,netdev=n0",
        ],
    );
    q.wait_line("NOVA-NET", Duration::from_secs(30));
    let ping = ns.run(&["ping", "-c", "2", "-W", "2", "203.0.113.2"]);
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let echo = ns.run(&[
        "python3",
        "-c",
        "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3);\
         s.sendto(b'qemu-echo',('203.0.113.2',7));print(s.recvfrom(100)[0].decode())",
    ]);
    assert_eq!(String::from_utf8_lossy(&echo.stdout).trim(), "qemu-echo");
}
