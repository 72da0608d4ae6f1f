//! Linux's own drivers against a VMM's devices, with the small kernel built from
//! Debian's linux-source (`guest-images/linux/small-kernel/`): it finds its virtio-mmio
//! disk and NIC through ACPI alone (the `LNRO0005` entries of the DSDT, nothing on the
//! command line), mounts its ext4 root read-write (the host sees the superblock's
//! mount count go up) and brings up an address by in-kernel IP autoconfiguration that
//! answers the host's ping through a tap. On PVM hosts the kernel runs in KVM's
//! instruction emulator (about 16 s to its root mount) and no user space can run, so
//! its /sbin/init is a one-instruction loop; one boot per VMM serves every check.
//! Under nova-vmm the same checks run with its own ACPI tables, the MP table path
//! runs with `--no-acpi`, and a snapshot of the booted kernel is restored and then
//! stopped gracefully through the ACPI power button.

use std::time::Duration;

use nova_http::blocking::block_on;
use nova_tests::hostd::ping;
use nova_tests::linux::{
    self, LinuxVm, VirtioDevice, Vmm, DISK_MIB, GUEST_IP, HOST_IP, VIRTIO_ID_BLOCK, VIRTIO_ID_NET,
};
use nova_tests::net::{require_netns, NetNs};
use nova_tests::vmm::{client, ctl, VmmCmd};
use nova_tests::{require, require_kvm, require_qemu, wait_for, which, Line, TempDir};
use nova_vmm_api::StopRequest;

/// Generous: the boot is emulated and the machine may be shared. A kernel that
/// panics reboots, which ends the VMM and the wait at once.
const BOOT: Duration = Duration::from_secs(240);

/// One booted kernel and what the checks need; everything goes on drop (VMM first).
struct Booted {
    vm: LinuxVm,
    disk: std::path::PathBuf,
    mounts_before: u16,
    ns: NetNs,
    _dir: TempDir,
}

fn can_run() -> bool {
    require_netns()
        && require(which("mkfs.ext4"), "mkfs.ext4 (e2fsprogs) is not installed")
        && require(which("ping"), "ping (iputils-ping) is not installed")
}

fn boot(vmm: Vmm) -> Booted {
    let dir = TempDir::new();
    let disk = linux::root_disk(&dir);
    let mounts_before = linux::mount_count(&disk);
    let ns = NetNs::new();
    ns.add_tap("ltap0", &format!("{HOST_IP}/24"));
    let vm = linux::boot(vmm, &disk, &ns, "ltap0");
    Booted {
        vm,
        disk,
        mounts_before,
        ns,
        _dir: dir,
    }
}

fn wait_text(vm: &LinuxVm, needle: &str) -> Line {
    vm.console.wait_for(BOOT, |l| l.text.contains(needle))
}

/// The banner names our build and the command line is ours (returned).
fn is_the_small_kernel_with_our_command_line(vm: &LinuxVm) -> Line {
    let banner = wait_text(vm, "Linux version ");
    assert!(
        banner.text.contains("-nova (nova@novacron)"),
        "not the small kernel: {}",
        banner.text
    );
    let cmdline = wait_text(vm, "Command line: ");
    assert!(cmdline.text.contains(&linux::cmdline()), "{}", cmdline.text);
    cmdline
}

/// Both virtio devices were registered from ACPI platform devices (`LNRO0005:NN`),
/// the disk became vda with the image's size and the NIC eth0 with our address.
fn finds_disk_and_nic_through_acpi_alone(vm: &LinuxVm) {
    wait_text(vm, "ACPI: Interpreter enabled");
    let vda = vm.console.wait_for(BOOT, |l| {
        l.text.contains("virtio_blk virtio") && l.text.contains("[vda]")
    });
    eprintln!(
        "virtio_blk probed vda {:.1} s after the VMM started: {}",
        (vda.at - vm.console.started).as_secs_f64(),
        vda.text
    );
    wait_text(vm, "IP-Config: Complete");
    let eth0 = wait_text(vm, "device=eth0,");
    assert!(
        eth0.text.contains(&format!("ipaddr={GUEST_IP},")),
        "{}",
        eth0.text
    );

    let devices: Vec<VirtioDevice> = vm
        .console
        .lines()
        .iter()
        .filter_map(VirtioDevice::parse)
        .collect();
    assert_eq!(devices.len(), 2, "one disk and one NIC: {devices:?}");
    for d in &devices {
        assert!(
            d.platform.starts_with("LNRO0005:"),
            "{} was not found through ACPI: {d:?}",
            d.virtio
        );
    }
    let blk = devices.iter().find(|d| d.id == VIRTIO_ID_BLOCK);
    let blk = blk.unwrap_or_else(|| panic!("no virtio block device: {devices:?}"));
    let sectors = DISK_MIB * 2048;
    assert!(
        vda.text.contains(&format!(
            "virtio_blk {}: [vda] {sectors} 512-byte logical blocks",
            blk.virtio
        )),
        "vda is not the ACPI disk {blk:?}: {}",
        vda.text
    );
    assert!(
        devices.iter().any(|d| d.id == VIRTIO_ID_NET),
        "no virtio network device: {devices:?}"
    );
}

/// The kernel mounted the ext4 image as its root, read-write: the host reads a
/// higher mount count in the image's superblock.
fn mounts_root_read_write(b: &Booted) {
    let mounted = wait_text(&b.vm, "VFS: Mounted root (ext4 filesystem)");
    assert!(!mounted.text.contains("readonly"), "{}", mounted.text);
    let after = wait_for(30, "the superblock's mount count to go up", || {
        let n = linux::mount_count(&b.disk);
        (n > b.mounts_before).then_some(n)
    });
    assert_eq!(after, b.mounts_before + 1);
}

/// The address from `ip=` answers the host's ping through the tap.
fn answers_ping(b: &Booted) {
    wait_for(60, "the guest to answer ping", || {
        ping(&b.ns, GUEST_IP, 1).then_some(())
    });
}

#[test]
fn under_qemu_linux_finds_its_disk_and_nic_through_acpi_mounts_root_and_answers_ping() {
    if !require_qemu() || !can_run() {
        return;
    }
    let b = boot(Vmm::Qemu);
    let cmdline = is_the_small_kernel_with_our_command_line(&b.vm);
    assert!(
        !cmdline.text.contains("virtio_mmio"),
        "the command line names a device: {}",
        cmdline.text
    );
    finds_disk_and_nic_through_acpi_alone(&b.vm);
    answers_ping(&b);
    mounts_root_read_write(&b);
    assert!(
        !b.vm
            .console
            .lines()
            .iter()
            .any(|l| l.text.contains("Kernel panic")),
        "the kernel panicked"
    );
}

#[test]
fn under_nova_vmm_linux_finds_its_disk_and_nic_through_acpi_mounts_root_and_answers_ping() {
    if !require_kvm() || !can_run() {
        return;
    }
    let b = boot(Vmm::Nova);
    let cmdline = is_the_small_kernel_with_our_command_line(&b.vm);
    // With ACPI on, nova-vmm appends no virtio_mmio.device= words: the devices the
    // kernel finds come from the DSDT alone.
    assert!(
        !cmdline.text.contains("virtio_mmio"),
        "the command line names a device: {}",
        cmdline.text
    );
    let rsdp = wait_text(&b.vm, "ACPI: RSDP ");
    assert!(
        rsdp.text.contains("NOVACR"),
        "not nova-vmm's RSDP: {}",
        rsdp.text
    );
    finds_disk_and_nic_through_acpi_alone(&b.vm);
    answers_ping(&b);
    mounts_root_read_write(&b);
    let lines = b.vm.console.lines();
    for table in ["ACPI: XSDT ", "ACPI: FACP ", "ACPI: DSDT ", "ACPI: APIC "] {
        assert!(
            lines
                .iter()
                .any(|l| l.text.contains(table) && l.text.contains("NOVACR")),
            "the kernel did not list nova-vmm's {table}"
        );
    }
    assert!(
        !lines.iter().any(|l| l.text.contains("Kernel panic")),
        "the kernel panicked"
    );
}

/// `--no-acpi`: no tables, so the kernel boots through nova-vmm's MP table; this
/// kernel, like Debian's, honours no `virtio_mmio.device=` (nova-vmm appends them
/// without ACPI), so it finds no virtio device and stops where it would mount root.
#[test]
fn under_nova_vmm_without_acpi_linux_reads_the_mp_table_and_finds_no_device() {
    if !require_kvm() || !can_run() {
        return;
    }
    let dir = TempDir::new();
    let disk = linux::root_disk(&dir);
    let ns = NetNs::new();
    ns.add_tap("ltap0", &format!("{HOST_IP}/24"));
    let vm = linux::spawn_nova(linux::nova_cmd(&disk, "ltap0").arg("--no-acpi"), &ns);
    let cmdline = is_the_small_kernel_with_our_command_line(&vm);
    assert!(
        cmdline.text.contains("virtio_mmio.device=4K@0xd0000000:5"),
        "without ACPI the devices are on the command line: {}",
        cmdline.text
    );
    let no_root = wait_text(&vm, "VFS: Cannot open root device \"vda\"");
    let lines = vm.console.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.text.contains("MPTABLE: OEM ID: NOVACRON")),
        "the kernel did not read nova-vmm's MP table"
    );
    assert!(
        !lines.iter().any(|l| l.text.contains("ACPI: RSDP")),
        "ACPI tables were found with --no-acpi"
    );
    assert!(
        !lines.iter().any(|l| VirtioDevice::parse(l).is_some()),
        "a virtio device was found without ACPI"
    );
    eprintln!("nova-vmm without ACPI: {}", no_root.text);
}

/// One boot serves both: the running kernel is snapshotted (its ACPI tables are in
/// guest memory) and restored in a new VMM, where it still answers ping; then
/// `PUT /v1/vm/stop` presses the ACPI power button (GED event, `Notify` of the
/// PNP0C0C button) and the kernel powers off by itself through the S5 sleep
/// control register before the stop's timeout.
#[test]
fn linux_restored_from_a_snapshot_answers_ping_and_powers_off_at_the_power_button() {
    if !require_kvm() || !can_run() {
        return;
    }
    let dir = TempDir::new();
    let disk = linux::root_disk(&dir);
    let ns = NetNs::new();
    ns.add_tap("ltap0", &format!("{HOST_IP}/24"));
    let (cmd, sock) = linux::nova_cmd(&disk, "ltap0").with_api();
    let mut vm = linux::spawn_nova(cmd, &ns);
    wait_text(&vm, "IP-Config: Complete");
    wait_for(60, "the guest to answer ping", || {
        ping(&ns, GUEST_IP, 1).then_some(())
    });
    let snap = dir.join("snap");
    let (status, _, err) = ctl(
        &sock,
        &["snapshot", "create", "--path", snap.to_str().unwrap()],
    );
    assert!(status.success(), "snapshot: {err}");
    vm.console.kill();

    let (cmd, sock) = VmmCmd::raw().arg("--restore").arg(&snap).with_api();
    let mut restored = linux::spawn_nova(cmd, &ns);
    wait_for(60, "the restored guest to answer ping", || {
        ping(&ns, GUEST_IP, 1).then_some(())
    });

    let api = client(&sock);
    let req = StopRequest {
        force: false,
        timeout_ms: 120_000,
    };
    let report = block_on(api.stop(&req)).expect("PUT /v1/vm/stop");
    assert!(report.power_button, "{report:?}");
    let exit = restored.console.wait_exit(Duration::from_secs(150));
    assert!(exit.success(), "{exit:?}");
    let lines = restored.console.lines();
    let has = |s: &str| lines.iter().any(|l| l.text.contains(s));
    assert!(
        has("power button: powering off"),
        "the button driver did not act"
    );
    assert!(has("reboot: Power down"), "the kernel did not power down");
    let log = restored.console.stderr();
    assert!(
        log.contains("VM stopped: Poweroff"),
        "not the guest's poweroff: {log}"
    );
    assert!(!log.contains("did not power off"), "{log}");
}
