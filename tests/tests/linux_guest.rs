//! The Linux guest (Debian's cloud kernel + our agent) under nova-vmm. On PVM hosts a
//! stock kernel runs in KVM's emulator and cannot finish booting, so there the test
//! stops at what runs: the banner, our command line and an e820 map that matches the
//! configured memory. With hardware virtualization it waits for the agent's marker.

use std::time::Duration;

use nova_tests::vmm::VmmCmd;
use nova_tests::{guest_image, require_kvm};

/// The usable RAM the kernel lists in its e820 lines, in bytes.
fn usable_bytes(lines: &[nova_tests::Line]) -> u64 {
    lines
        .iter()
        .filter(|l| l.text.contains("BIOS-e820: [mem ") && l.text.ends_with("usable"))
        .map(|l| {
            let range = l
                .text
                .split("[mem ")
                .nth(1)
                .unwrap()
                .split(']')
                .next()
                .unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let a = u64::from_str_radix(a.trim_start_matches("0x"), 16).unwrap();
            let b = u64::from_str_radix(b.trim_start_matches("0x"), 16).unwrap();
            b - a + 1
        })
        .sum()
}

fn boot_linux(kernel: &str, mem_mib: u64) -> nova_tests::vmm::Vm {
    VmmCmd::raw()
        .arg("--kernel")
        .arg(guest_image(kernel))
        .arg("--initrd")
        .arg(guest_image("initramfs.cpio.gz"))
        .args(["--mem-mib", &mem_mib.to_string(), "--vcpus", "2"])
        .args([
            "--cmdline",
            "console=ttyS0 earlyprintk=serial,ttyS0 nova.workload=counter",
        ])
        .spawn()
}

#[test]
fn debian_kernel_prints_its_banner_and_the_configured_memory_map() {
    if !require_kvm() {
        return;
    }
    let pvm = std::path::Path::new("/sys/module/kvm_pvm").exists();
    for mem_mib in [512u64, 4096] {
        let vm = boot_linux("vmlinux", mem_mib);
        let banner = vm.console.wait_for(Duration::from_secs(240), |l| {
            l.text.contains("Linux version 6.")
        });
        assert!(banner.text.contains("cloud-amd64"), "{}", banner.text);
        vm.console.wait_for(Duration::from_secs(60), |l| {
            l.text.contains("Command line: console=ttyS0")
        });
        // The map ends before the first non-e820 line after it.
        let (i, _) = vm
            .console
            .wait_for_from(0, Duration::from_secs(60), |l| l.text.contains("BIOS-e820"));
        vm.console.wait_for_from(i, Duration::from_secs(60), |l| {
            !l.text.contains("BIOS-e820") && !l.text.contains("RAM map")
        });
        let usable = usable_bytes(&vm.console.lines());
        // All RAM but the 384 KiB legacy hole below 1 MiB.
        assert_eq!(
            usable,
            (mem_mib << 20) - 0x6_0400,
            "e820 does not match {mem_mib} MiB"
        );
        if !pvm {
            vm.console.wait_line("NOVA-BOOTED", Duration::from_secs(60));
        }
    }
}

#[test]
fn a_bzimage_is_loaded_and_entered_through_the_64_bit_boot_protocol() {
    if !require_kvm() {
        return;
    }
    // Its decompressor alone takes minutes in the emulator, so on PVM the proof is
    // that the vCPU runs it without an emulation failure or a triple fault.
    let (cmd, sock) = VmmCmd::raw()
        .arg("--kernel")
        .arg(guest_image("vmlinuz"))
        .arg("--initrd")
        .arg(guest_image("initramfs.cpio.gz"))
        .args([
            "--mem-mib",
            "512",
            "--cmdline",
            "console=ttyS0 earlyprintk=serial,ttyS0 nova.workload=counter",
        ])
        .with_api();
    let vm = cmd.spawn();
    std::thread::sleep(Duration::from_secs(3));
    let info = nova_http::blocking::block_on(nova_tests::vmm::client(&sock).info());
    assert_eq!(
        info.map(|i| i.state).ok(),
        Some(nova_vmm_api::RunState::Running),
        "{}",
        vm.console.stderr()
    );
    assert!(
        !vm.console.stderr().contains("ERROR"),
        "{}",
        vm.console.stderr()
    );
    if !std::path::Path::new("/sys/module/kvm_pvm").exists() {
        vm.console.wait_line("NOVA-BOOTED", Duration::from_secs(60));
    }
}
