//! SMP bring-up: Intel MP table lookup, INIT/SIPI/SIPI through the xAPIC with the
//! trampoline at 0x10000, and `ap_main`, where each AP reports its APIC id and halts.

use crate::cpu::{apic_id, halt_forever, mmio_read32, mmio_write32, rdtsc, Clock};
use crate::entry::{ap_tramp_end, ap_tramp_start, MAX_APS, TRAMPOLINE_ADDR, TRAMPOLINE_VECTOR};
use crate::serial::Line;
use core::sync::atomic::{AtomicU32, Ordering};
use nova_guest_abi::line;

const LAPIC: usize = 0xfee0_0000;
const LAPIC_SVR: usize = LAPIC + 0xf0;
const LAPIC_ICR_LO: usize = LAPIC + 0x300;
const LAPIC_ICR_HI: usize = LAPIC + 0x310;
const ICR_BUSY: u32 = 1 << 12;
/// Destination shorthand "all excluding self", level assert.
const ICR_ALL_BUT_SELF: u32 = (3 << 18) | (1 << 14);
const ICR_INIT: u32 = 5 << 8;
const ICR_STARTUP: u32 = 6 << 8;

/// APs that have printed their line.
static APS_UP: AtomicU32 = AtomicU32::new(0);

/// First Rust code of every AP (called by the trampoline on its own stack).
#[no_mangle]
pub extern "C" fn ap_main() -> ! {
    Line::new(line::CPU).kv("apic", apic_id() as u64).emit();
    APS_UP.fetch_add(1, Ordering::Release);
    halt_forever()
}

/// Finds a checksummed MP floating pointer on a 16-byte boundary in `start..end`.
/// Uses `repne scasd`: KVM's emulator repeats string instructions internally, which is
/// far cheaper than a loop of emulated instructions (the BIOS area is 64 KiB).
fn find_mp_pointer(start: usize, end: usize) -> Option<usize> {
    const SIG: u32 = u32::from_le_bytes(*b"_MP_");
    let mut at = start;
    while at + 16 <= end {
        let next: usize;
        // SAFETY: scans dwords in at..end, memory below 1 MiB (identity-mapped,
        // readable); DF is clear per the ABI.
        unsafe {
            core::arch::asm!("repne scasd", inout("rdi") at => next, inout("rcx") (end - at) / 4 => _,
                             in("eax") SIG, options(nostack, readonly));
        }
        // `next` is one dword past the last one compared.
        let hit = next - 4;
        // SAFETY: hit lies in at..end.
        if hit < at || unsafe { mmio_read32(hit) } != SIG {
            return None;
        }
        if hit & 15 == 0 && sum8(hit, 16) == 0 {
            return Some(hit);
        }
        at = next;
    }
    None
}

/// Counts enabled processor entries of an Intel MP table whose floating pointer is in
/// the BIOS area 0xF0000..0x100000 (where nova-vmm puts it) or in the last KiB of
/// base memory 0x9FC00..0xA0000 (the MP spec's other usual place).
fn mp_table_cpus() -> Option<u32> {
    let fp = find_mp_pointer(0xf0000, 0x100000).or_else(|| find_mp_pointer(0x9fc00, 0xa0000))?;
    // SAFETY: a checksummed MP floating pointer; its config table address is at +4.
    let cfg = unsafe { mmio_read32(fp + 4) } as usize;
    if cfg == 0 || cfg >= 0x1_0000_0000 {
        return None;
    }
    // SAFETY: the config table header the floating pointer names (identity-mapped).
    let (sig, hdr) = unsafe { (mmio_read32(cfg), mmio_read32(cfg + 4)) };
    let len = (hdr & 0xffff) as usize;
    if sig != u32::from_le_bytes(*b"PCMP") || len < 44 || sum8(cfg, len) != 0 {
        return None;
    }
    // SAFETY: entry count at +34 of the header.
    let count = unsafe { mmio_read32(cfg + 32) } >> 16;
    let (mut at, end, mut cpus) = (cfg + 44, cfg + len, 0);
    for _ in 0..count {
        // SAFETY: at < end, inside the checksummed table.
        let kind = unsafe { (at as *const u8).read_volatile() };
        let size = if kind == 0 { 20 } else { 8 };
        if kind > 4 || at + size > end {
            break;
        }
        // SAFETY: processor entry flags at +3 (bit 0: enabled), inside the table.
        if kind == 0 && unsafe { ((at + 3) as *const u8).read_volatile() } & 1 != 0 {
            cpus += 1;
        }
        at += size;
    }
    (cpus > 0).then_some(cpus)
}

/// Byte sum of `len` bytes at `addr`.
fn sum8(addr: usize, len: usize) -> u8 {
    let mut s = 0u8;
    for i in 0..len {
        // SAFETY: callers pass ranges below 4 GiB (identity-mapped).
        s = s.wrapping_add(unsafe { ((addr + i) as *const u8).read_volatile() });
    }
    s
}

fn send_ipi(icr: u32) {
    // SAFETY: the xAPIC registers at 0xFEE00000 are identity-mapped.
    unsafe {
        mmio_write32(LAPIC_ICR_HI, 0);
        mmio_write32(LAPIC_ICR_LO, icr);
        let mut spins = 0;
        while mmio_read32(LAPIC_ICR_LO) & ICR_BUSY != 0 && spins < 1000 {
            spins += 1;
        }
    }
}

/// Starts the APs, prints this vCPU's `NOVA-CPU` and then `NOVA-CPUS count=<n>`.
pub fn start_aps(clock: &Clock) {
    Line::new(line::CPU).kv("apic", apic_id() as u64).emit();
    let expected = mp_table_cpus();
    if expected != Some(1) {
        // SAFETY: the trampoline is position-independent real-mode code; 0x10000 is
        // RAM below 1 MiB that nothing else uses (see README memory layout).
        unsafe {
            let start = &ap_tramp_start as *const u8;
            let len = (&ap_tramp_end as *const u8 as usize) - start as usize;
            core::ptr::copy_nonoverlapping(start, TRAMPOLINE_ADDR as *mut u8, len);
            // Software-enable the xAPIC (spurious vector 0xff).
            mmio_write32(LAPIC_SVR, mmio_read32(LAPIC_SVR) | 0x1ff);
        }
        send_ipi(ICR_ALL_BUT_SELF | ICR_INIT);
        clock.spin(clock.us(500));
        send_ipi(ICR_ALL_BUT_SELF | ICR_STARTUP | TRAMPOLINE_VECTOR);
        clock.spin(clock.us(200));
        send_ipi(ICR_ALL_BUT_SELF | ICR_STARTUP | TRAMPOLINE_VECTOR);
        let start = rdtsc();
        let mut seen = 0;
        let mut last_change = start;
        loop {
            let now = rdtsc();
            let up = APS_UP.load(Ordering::Acquire);
            if up != seen {
                seen = up;
                last_change = now;
            }
            let done = match expected {
                Some(n) => up + 1 >= n.min(MAX_APS + 1),
                None => now.wrapping_sub(last_change) > clock.ms(50),
            };
            if done || now.wrapping_sub(start) > clock.ms(1000) {
                break;
            }
            core::hint::spin_loop();
        }
    }
    let n = APS_UP.load(Ordering::Acquire) + 1;
    Line::new(line::CPUS).kv("count", n as u64).emit();
}
