//! Sleeping without spinning: a 64-bit IDT whose every vector runs one handler (EOI
//! to the xAPIC, `iretq`) and the xAPIC timer ticking every ~100 ms, so
//! [`sleep_until`] halts the vCPU between ticks instead of polling the TSC.

use core::arch::{asm, global_asm};

use crate::cpu::{mmio_read32, mmio_write32, rdtsc};

const LAPIC: usize = 0xfee0_0000;
const LAPIC_SVR: usize = LAPIC + 0xf0;
const LVT_TIMER: usize = LAPIC + 0x320;
const TIMER_INITIAL: usize = LAPIC + 0x380;
const TIMER_DIVIDE: usize = LAPIC + 0x3e0;
const TICK_VECTOR: u32 = 0x40;
const LVT_PERIODIC: u32 = 1 << 17;
const LVT_MASKED: u32 = 1 << 16;
/// Divide the APIC bus clock by 16 (KVM's bus runs at 1 GHz: 62.5 MHz).
const DIVIDE_BY_16: u32 = 0b0011;
/// About 100 ms at 62.5 MHz; only how often the sleeper looks at the TSC.
const TICK_COUNT: u32 = 6_250_000;
/// The 64-bit code selector (see `entry.rs`).
const CODE_SELECTOR: u64 = 0x08;

global_asm!(
    ".global nova_tick_isr",
    "nova_tick_isr:",
    "push rax",
    "mov eax, 0xfee000b0",
    "mov dword ptr [rax], 0",
    "pop rax",
    "iretq",
);

extern "C" {
    fn nova_tick_isr();
}

/// 256 interrupt gates of 16 bytes.
#[repr(C, align(16))]
struct Idt([u64; 512]);

static mut IDT: Idt = Idt([0; 512]);

#[repr(C, packed)]
struct IdtPointer {
    limit: u16,
    base: u64,
}

/// Halts until the TSC reaches `deadline`, woken by the xAPIC timer; interrupts are
/// off again and the timer stopped when it returns.
pub fn sleep_until(deadline: u64) {
    let h = nova_tick_isr as *const () as usize as u64;
    // Present, DPL 0, 64-bit interrupt gate (type 0xE), no IST.
    let low = (h & 0xffff) | (CODE_SELECTOR << 16) | (0x8e << 40) | (((h >> 16) & 0xffff) << 48);
    let high = h >> 32;
    let idt = &raw mut IDT;
    // SAFETY: the IDT is this guest's own static, written by the BSP alone before
    // interrupts are enabled; the xAPIC registers at 0xFEE00000 are identity-mapped.
    unsafe {
        for v in 0..256 {
            (*idt).0[2 * v] = low;
            (*idt).0[2 * v + 1] = high;
        }
        let p = IdtPointer {
            limit: (512 * 8 - 1) as u16,
            base: idt as u64,
        };
        asm!("lidt [{}]", in(reg) &p, options(readonly, nostack, preserves_flags));
        // Software-enable the xAPIC (spurious vector 0xff), then the periodic tick.
        mmio_write32(LAPIC_SVR, mmio_read32(LAPIC_SVR) | 0x1ff);
        mmio_write32(TIMER_DIVIDE, DIVIDE_BY_16);
        mmio_write32(LVT_TIMER, TICK_VECTOR | LVT_PERIODIC);
        mmio_write32(TIMER_INITIAL, TICK_COUNT);
    }
    while rdtsc() < deadline {
        // SAFETY: `sti` takes effect after `hlt` begins (the interrupt shadow), so a
        // tick cannot slip in between and leave the vCPU halted; the handler above
        // only acknowledges it.
        unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
    }
    // SAFETY: as above.
    unsafe {
        mmio_write32(LVT_TIMER, LVT_MASKED);
        mmio_write32(TIMER_INITIAL, 0);
    }
}
