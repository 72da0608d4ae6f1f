//! The host image (`make host-image`) boots under QEMU with TCG (KVM here cannot run a
//! stock kernel), its NIC a tap in a network namespace where the test runs a
//! controller: nova-init formats the blank data partition, starts nova-hostd, the host
//! registers and is Ready, its hostd answers, and the ACPI power button stops hostd
//! first and powers the machine off. Booted two ways: kernel + initramfs with the
//! settings on the command line (static address), and the raw disk by UEFI firmware
//! (OVMF, GRUB, slot A) with the settings in nova.conf on the EFI partition and the
//! address from a DHCP server (dnsmasq) on the tap.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nova_controller_api::HostState;
use nova_tests::controller::{block_on, client};
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
fn ready_host(ns: &NetNs, url: &str, admin: &str, hostname: &str) -> nova_controller_api::Host {
    let api = client(url, Some(admin));
    wait_for(BOOT_SECS, "the host to be Ready in the controller", || {
        in_namespace(Some(&ns.name), || block_on(api.hosts()))
            .ok()?
            .into_iter()
            .find(|h| h.hostname == hostname && h.state == HostState::Ready)
    })
}

/// hostd on the image answers at the URL it registered, as the host registered.
fn assert_hostd_answers(ns: &NetNs, host: &nova_controller_api::Host) {
    let hostd =
        nova_hostd_api::HostdClient::new(&host.url, "health-needs-no-token", &Default::default())
            .unwrap();
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
    let _ctl = controller_in(&ns, dir.path(), "192.0.2.1", port);
    let url = format!("http://192.0.2.1:{port}");
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
    let mon = dir.join("monitor.sock");
    let mut qemu = ns.command(Path::new("qemu-system-x86_64"));
    qemu.args([
        "-M", "pc", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "1024",
    ])
    .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
    .arg("-monitor")
    .arg(format!("unix:{},server=on,wait=off", mon.display()))
    .arg("-kernel")
    .arg(image("vmlinuz"))
    .arg("-initrd")
    .arg(image("initrd.img"))
    .arg("-append")
    .arg(format!(
        "console=ttyS0 panic=-1 nova.ip=192.0.2.2/24 nova.controller={url} \
             nova.join_token={join} nova.insecure_http=1 nova.hostname=img-host"
    ))
    .arg("-netdev")
    .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
    .args(["-device", "virtio-net-pci,netdev=n0"])
    .arg("-drive")
    .arg(format!("file={},format=raw,if=virtio", disk.display()));
    let mut vm = Console::spawn(qemu);
    expect_line(&vm, "data partition is blank: formatting ext4");
    expect_line(&vm, "nova-hostd started");

    let host = ready_host(&ns, &url, &admin, "img-host");
    assert_eq!(host.url, "http://192.0.2.2:7070", "{host:?}");
    assert_hostd_answers(&ns, &host);

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
    let host = ready_host(&ns, &url, &admin, "uefi-host");
    assert!(host.url.starts_with("http://198.51.100.5"), "{host:?}");
    assert_hostd_answers(&ns, &host);
}
