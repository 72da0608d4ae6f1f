//! Lazy restore: guest RAM starts empty and a userfaultfd thread fills each page from
//! the snapshot's memory file the first time anything (vCPU, device, KVM) touches it.

use std::fs::File;
use std::os::unix::fs::FileExt;

use kvm_bindings::kvm_sregs;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::memory::{GuestMemory, PAGE_SIZE};
use crate::uffd::Uffd;
use crate::vcpu::state::VcpuState;

/// Registers every RAM region with a userfaultfd and serves faults from `file` (at the
/// same RAM offsets) on a thread of its own for the life of the process.
pub fn serve_from_file(mem: &GuestMemory, file: File) -> std::io::Result<()> {
    let uffd = Uffd::new()?;
    // (host start, host end, RAM offset) of each region.
    let mut regions = Vec::new();
    let mut ram_off = 0u64;
    for r in mem.iter() {
        let host = r.as_ptr() as u64;
        uffd.register(host, r.len())?;
        regions.push((host, host + r.len(), ram_off));
        ram_off += r.len();
    }
    std::thread::Builder::new()
        .name("lazy-restore".into())
        .stack_size(128 << 10)
        .spawn(move || {
            let mut page = vec![0u8; PAGE_SIZE];
            while let Ok(fault) = uffd.next_fault() {
                let Some(fault) = fault else { continue };
                let addr = fault.addr & !(PAGE_SIZE as u64 - 1);
                let Some((host, _, off)) =
                    regions.iter().find(|(s, e, _)| (*s..*e).contains(&addr))
                else {
                    continue;
                };
                let file_off = off + (addr - host);
                let served = match file.read_exact_at(&mut page, file_off) {
                    Ok(()) if page.iter().any(|b| *b != 0) => uffd.copy(addr, &page),
                    _ => uffd.zero(addr, PAGE_SIZE as u64),
                };
                if let Err(e) = served {
                    tracing::error!("lazy restore: cannot serve page at {file_off:#x}: {e}");
                }
            }
        })?;
    Ok(())
}

/// Copies the pages each vCPU touches first from `file` into guest memory, before
/// [`serve_from_file`] registers it: the code at RIP, the stack at RSP, the GDT and IDT,
/// and the page tables that map them. Served by faults, each would cost a round trip
/// through the userfaultfd thread before the guest's first instruction completes.
/// Best effort: a page it cannot find is left to the fault handler.
pub fn prefetch_first_touched(mem: &GuestMemory, file: &File, vcpus: &[VcpuState]) {
    let read = |gpa: u64| -> Option<Vec<u8>> {
        let off = ram_offset(mem, gpa & !(PAGE_SIZE as u64 - 1))?;
        let mut page = vec![0u8; PAGE_SIZE];
        file.read_exact_at(&mut page, off).ok()?;
        Some(page)
    };
    let mut pages = Vec::new();
    for v in vcpus {
        let s = &v.sregs;
        for linear in [
            s.cs.base.wrapping_add(v.regs.rip),
            s.ss.base.wrapping_add(v.regs.rsp),
            s.gdt.base,
            s.idt.base,
        ] {
            pages.extend(translate(s, linear, |gpa| {
                let page = read(gpa)?;
                let at = (gpa as usize) & (PAGE_SIZE - 1) & !7;
                Some(u64::from_le_bytes(page[at..at + 8].try_into().ok()?))
            }));
        }
    }
    pages.sort_unstable();
    pages.dedup();
    for gpa in pages {
        if let Some(page) = read(gpa) {
            let _ = mem.write_slice(&page, GuestAddress(gpa));
        }
    }
}

/// RAM offset (the memory file's) of guest physical page `gpa`.
fn ram_offset(mem: &GuestMemory, gpa: u64) -> Option<u64> {
    let mut off = 0;
    for r in mem.iter() {
        let start = r.start_addr().0;
        if (start..start + r.len()).contains(&gpa) {
            return Some(off + gpa - start);
        }
        off += r.len();
    }
    None
}

const PRESENT: u64 = 1;
const LARGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const CR0_PG: u64 = 1 << 31;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;

/// The guest physical pages needed to reach `linear`: the page tables walked (long
/// mode, 4 or 5 levels) and the page itself; without paging, the page alone. Other
/// paging modes give nothing. `entry` reads the 8-byte table entry at a physical address.
fn translate(s: &kvm_sregs, linear: u64, entry: impl Fn(u64) -> Option<u64>) -> Vec<u64> {
    let page = |a: u64| a & !(PAGE_SIZE as u64 - 1);
    if s.cr0 & CR0_PG == 0 {
        return vec![page(linear)];
    }
    if s.efer & EFER_LMA == 0 {
        return Vec::new();
    }
    let levels: u32 = if s.cr4 & CR4_LA57 != 0 { 5 } else { 4 };
    let mut pages = Vec::new();
    let mut table = s.cr3 & ADDR_MASK;
    for level in (1..=levels).rev() {
        pages.push(table);
        let shift = 12 + 9 * (level - 1);
        let index = (linear >> shift) & 0x1ff;
        let Some(e) = entry(table + index * 8) else {
            return pages;
        };
        if e & PRESENT == 0 {
            return pages;
        }
        // A 1 GiB (level 3) or 2 MiB (level 2) page ends the walk.
        if level == 1 || (e & LARGE != 0 && level <= 3) {
            let base = e & ADDR_MASK & !((1u64 << shift) - 1);
            pages.push(page(base + (linear & ((1u64 << shift) - 1))));
            return pages;
        }
        table = e & ADDR_MASK;
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_long_mode_walk_yields_every_table_and_the_page() {
        // PML4 at 0x1000 -> PDPT at 0x2000 -> PD at 0x3000 -> 2 MiB page at 0x4000_0000.
        let mut mem = HashMap::new();
        let va: u64 = 0xffff_8000_0020_1234;
        let (i4, i3, i2) = ((va >> 39) & 0x1ff, (va >> 30) & 0x1ff, (va >> 21) & 0x1ff);
        mem.insert(0x1000 + i4 * 8, 0x2000 | PRESENT);
        mem.insert(0x2000 + i3 * 8, 0x3000 | PRESENT);
        mem.insert(0x3000 + i2 * 8, 0x4000_0000 | PRESENT | LARGE);
        let s = kvm_sregs {
            cr0: CR0_PG | 1,
            cr3: 0x1000,
            efer: EFER_LMA,
            ..Default::default()
        };
        let pages = translate(&s, va, |a| mem.get(&a).copied());
        assert_eq!(pages, vec![0x1000, 0x2000, 0x3000, 0x4000_1000]);
        // A hole in the tables stops the walk where it is.
        let pages = translate(&s, va ^ (1 << 30), |a| mem.get(&a).copied());
        assert_eq!(pages, vec![0x1000, 0x2000]);
        // Without paging, linear is physical.
        let flat = kvm_sregs::default();
        assert_eq!(translate(&flat, 0x7c05, |_| None), vec![0x7000]);
    }
}
