//! CPU primitives: port I/O, MMIO, CPUID, the TSC clock, halting.

use core::arch::asm;

/// Reads a byte from an I/O port.
#[inline(always)]
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port reads have no memory effects visible to Rust.
    unsafe {
        asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Writes a byte to an I/O port.
#[inline(always)]
pub fn outb(port: u16, v: u8) {
    // SAFETY: the ports this guest writes (COM1, i8042) have no memory effects.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a 32-bit MMIO register.
///
/// # Safety
/// `addr` must be an identity-mapped device register (or RAM) below 4 GiB.
#[inline(always)]
pub unsafe fn mmio_read32(addr: usize) -> u32 {
    // SAFETY: per the caller's contract.
    unsafe { (addr as *const u32).read_volatile() }
}

/// Writes a 32-bit MMIO register.
///
/// # Safety
/// `addr` must be an identity-mapped device register below 4 GiB.
#[inline(always)]
pub unsafe fn mmio_write32(addr: usize, v: u32) {
    // SAFETY: per the caller's contract.
    unsafe { (addr as *mut u32).write_volatile(v) }
}

/// The time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no memory effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// CPUID (EAX, EBX, ECX, EDX) for a leaf, subleaf 0.
pub fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// This vCPU's initial xAPIC id (CPUID.1:EBX[31:24]).
pub fn apic_id() -> u32 {
    cpuid(1)[1] >> 24
}

/// TSC frequency published by the hypervisor in leaf 0x40000010 (kHz), if any.
pub fn hypervisor_tsc_khz() -> Option<u64> {
    if cpuid(1)[2] & (1 << 31) == 0 {
        return None;
    }
    if cpuid(0x4000_0000)[0] < 0x4000_0010 {
        return None;
    }
    match cpuid(0x4000_0010)[0] {
        0 => None,
        khz => Some(khz as u64),
    }
}

/// Converts between TSC ticks and time.
#[derive(Clone, Copy)]
pub struct Clock {
    /// TSC ticks per millisecond.
    pub per_ms: u64,
}

impl Clock {
    /// Ticks in `ms` milliseconds.
    pub fn ms(&self, ms: u64) -> u64 {
        self.per_ms * ms
    }

    /// Ticks in `us` microseconds (at least 1).
    pub fn us(&self, us: u64) -> u64 {
        (self.per_ms * us / 1000).max(1)
    }

    /// Busy-waits `ticks` TSC ticks.
    pub fn spin(&self, ticks: u64) {
        let start = rdtsc();
        while rdtsc().wrapping_sub(start) < ticks {
            core::hint::spin_loop();
        }
    }
}

/// Disables interrupts and halts this vCPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli; hlt only stops this vCPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
