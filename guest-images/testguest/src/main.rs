//! NovaCron's freestanding x86_64 test guest.
//!
//! Booted through PVH (QEMU `-M microvm -kernel`, nova-vmm), it prints `NOVA-BOOTED`
//! from its 32-bit entry, enters long mode, reports memory and vCPUs, and runs the
//! workloads named by `nova.workload=` with polled virtio-mmio drivers. It uses only
//! instructions KVM's emulator handles (no SSE arithmetic, no XSAVE, no cmpxchg16b),
//! and never `core::fmt` (its integer formatting uses SSE).
#![no_std]
#![no_main]

mod blk;
mod cpu;
mod entry;
mod mem;
mod net;
mod pvh;
mod serial;
mod smp;
mod timer;
mod virtio;
mod workloads;

use cpu::Clock;
use nova_guest_abi::line;
use serial::Line;

/// Fallback TSC frequency when neither CPUID nor the command line gives one.
const DEFAULT_TSC_KHZ: u64 = 2_000_000;

/// First Rust code on the BSP, in long mode; `start_info` is the PVH `hvm_start_info`.
#[no_mangle]
pub extern "C" fn rust_main(start_info: u32) -> ! {
    let boot = pvh::BootInfo::parse(start_info as u64);
    let cfg = pvh::Config::parse(boot.cmdline);
    let khz = match cpu::hypervisor_tsc_khz().or(cfg.tsc_khz) {
        Some(k) => k,
        None => {
            serial::error("tsc_khz_unknown");
            DEFAULT_TSC_KHZ
        }
    };
    let clock = Clock { per_ms: khz };
    Line::new(line::MEM)
        .kv("mib", boot.ram_bytes.div_ceil(1 << 20))
        .emit();
    smp::start_aps(&clock);
    workloads::run(&cfg, &boot, &clock)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    serial::error("panic");
    cpu::halt_forever()
}
