//! The small Linux kernel (`guest-images/linux/small-kernel/`, `nova-linux`): a root
//! ext4 disk for it, booting it under QEMU microvm (ACPI on) or nova-vmm with the same
//! disk, NIC and command line (the VMM is one parameter), and what its boot log and
//! its disk say afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::net::NetNs;
use crate::vmm::VmmCmd;
use crate::{guest_image, Console, Line, TempDir};

/// Which VMM runs the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmm {
    /// QEMU 7.2 `-M microvm,acpi=on`: the devices are `LNRO0005` entries in its DSDT.
    Qemu,
    /// nova-vmm.
    Nova,
}

/// The guest's address and its gateway (the host's end of the tap), from the
/// documentation range.
pub const GUEST_IP: &str = "192.0.2.2";
pub const HOST_IP: &str = "192.0.2.1";
/// The guest's root filesystem image, in MiB.
pub const DISK_MIB: u64 = 16;
/// Guest RAM (the bench reports it): the kernel's memory map setup runs in KVM's emulator on PVM hosts, so
/// it costs boot time per MiB.
pub const MEM_MIB: u64 = 64;
/// Where the root filesystem keeps the idle init (`nova-linux-idle-init`).
pub const INIT: &str = "/sbin/nova-idle-init";
/// CPUID features KVM's instruction emulator cannot run, cleared by the kernel itself
/// (QEMU's `-cpu` masks for leaf 7 do not reach the guest here), by bit number since
/// the small kernel has no feature names: smap, fsgsbase, invpcid, pcid, popcnt,
/// rdpid, pku, cx16, xsave, rdrand, rdseed.
pub const CLEARCPUID: &str = "clearcpuid=308,288,298,145,151,534,515,141,154,158,306";
/// Offset of the ext4 superblock's `s_mnt_count` (u16 LE) and `s_magic` in the image.
const S_MNT_COUNT: u64 = 1024 + 0x34;
const S_MAGIC: u64 = 1024 + 0x38;

/// The kernel command line: root on the first virtio disk, read-write; the address
/// for eth0 from in-kernel IP autoconfiguration; no device named (the kernel finds
/// them through ACPI); a panic reboots, which ends the VMM.
pub fn cmdline() -> String {
    format!(
        "console=ttyS0 panic=-1 no_timer_check {CLEARCPUID} root=/dev/vda rw rootfstype=ext4 \
         init={INIT} ip={GUEST_IP}::{HOST_IP}:255.255.255.0::eth0:off"
    )
}

/// A fresh ext4 image of `DISK_MIB` MiB in `dir` holding only the idle init (and
/// `/dev`, `/proc`, `/sys` to mount on), made by `mkfs.ext4 -d`.
pub fn root_disk(dir: &TempDir) -> PathBuf {
    let tree = dir.join("rootfs");
    for d in ["sbin", "dev", "proc", "sys"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    let init = tree.join(INIT.trim_start_matches('/'));
    std::fs::copy(guest_image("nova-linux-idle-init"), &init).unwrap();
    let image = dir.join("root.ext4");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "nova-root", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg(format!("{DISK_MIB}M"))
        .output()
        .expect("running mkfs.ext4 (e2fsprogs)");
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// How many times the ext4 filesystem in `image` has been mounted read-write
/// (`s_mnt_count`, which the kernel increments and writes back at mount time).
pub fn mount_count(image: &Path) -> u16 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(image).unwrap();
    let mut b = [0u8; 2];
    f.read_exact_at(&mut b, S_MAGIC).unwrap();
    assert_eq!(
        u16::from_le_bytes(b),
        0xef53,
        "{} is not ext4",
        image.display()
    );
    f.read_exact_at(&mut b, S_MNT_COUNT).unwrap();
    u16::from_le_bytes(b)
}

/// Boots `nova-linux` under `vmm` on one vCPU with `disk` as its virtio disk and a
/// virtio NIC on `tap` in `ns` (the VMM runs in that namespace).
pub fn boot(vmm: Vmm, disk: &Path, ns: &NetNs, tap: &str) -> LinuxVm {
    let kernel = guest_image("nova-linux");
    match vmm {
        Vmm::Qemu => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.name, "qemu-system-x86_64"])
                // auto-kernel-cmdline=off: QEMU adds no virtio_mmio.device= of its own.
                .args([
                    "-M",
                    "microvm,acpi=on,pcie=off,rtc=off,x-option-roms=off,auto-kernel-cmdline=off",
                ])
                .args([
                    "-enable-kvm",
                    "-cpu",
                    "host,-arch-capabilities",
                    "-smp",
                    "1",
                ])
                .args([
                    "-m",
                    &format!("{MEM_MIB}M"),
                    "-nodefaults",
                    "-no-user-config",
                ])
                .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
                // Modern virtio-mmio (version 2), as nova-vmm's devices are.
                .args(["-global", "virtio-mmio.force-legacy=false"])
                .arg("-kernel")
                .arg(kernel)
                .args(["-append", &cmdline()])
                .arg("-drive")
                .arg(format!("id=d0,file={},format=raw,if=none", disk.display()))
                .args(["-device", "virtio-blk-device,drive=d0"])
                .arg("-netdev")
                .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
                .args(["-device", "virtio-net-device,netdev=n0"]);
            LinuxVm {
                console: Console::spawn(c),
                _dir: None,
            }
        }
        Vmm::Nova => spawn_nova(nova_cmd(disk, tap), ns),
    }
}

/// The nova-vmm command [`boot`] runs (`nova-linux` on one vCPU, `disk`, a NIC on
/// `tap`), to add flags to (`--no-acpi`, `with_api`) before [`spawn_nova`].
pub fn nova_cmd(disk: &Path, tap: &str) -> VmmCmd {
    nova_cmd_of(&crate::binary("nova-vmm"), disk, tap)
}

/// [`nova_cmd`] with the nova-vmm binary at `program` (a bench's release build).
pub fn nova_cmd_of(program: &Path, disk: &Path, tap: &str) -> VmmCmd {
    VmmCmd::of(program)
        .arg("--kernel")
        .arg(guest_image("nova-linux"))
        .args(["--vcpus", "1", "--mem-mib", &MEM_MIB.to_string()])
        .args(["--cmdline", &cmdline()])
        .arg("--disk")
        .arg(disk)
        .args(["--net", &format!("tap={tap}")])
}

/// Runs `c` (a [`nova_cmd`], or a restore of its snapshot) inside `ns`.
pub fn spawn_nova(c: VmmCmd, ns: &NetNs) -> LinuxVm {
    let c = c.in_netns(ns);
    LinuxVm {
        console: Console::spawn(c.cmd),
        _dir: Some(c.dir),
    }
}

/// A running VMM with the small kernel; killed when dropped.
pub struct LinuxVm {
    pub console: Console,
    _dir: Option<TempDir>,
}

/// One virtio-mmio device as the kernel registered it: the line
/// `virtio-mmio <platform device>: <virtioN>: virtio device id <id>, ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioDevice {
    /// `LNRO0005:NN` when found through ACPI, `virtio-mmio.N` from the command line.
    pub platform: String,
    pub virtio: String,
    pub id: u32,
}

impl VirtioDevice {
    /// Parses the small kernel's `virtio-mmio ...: virtioN: virtio device id ...` line.
    pub fn parse(line: &Line) -> Option<VirtioDevice> {
        let rest = line.text.split("virtio-mmio ").nth(1)?;
        let mut parts = rest.splitn(3, ": ");
        let platform = parts.next()?.to_string();
        let virtio = parts.next()?.to_string();
        let id = parts
            .next()?
            .strip_prefix("virtio device id ")?
            .split(',')
            .next()?
            .parse()
            .ok()?;
        Some(VirtioDevice {
            platform,
            virtio,
            id,
        })
    }
}

/// Virtio device ids (virtio spec 5).
pub const VIRTIO_ID_NET: u32 = 1;
pub const VIRTIO_ID_BLOCK: u32 = 2;
