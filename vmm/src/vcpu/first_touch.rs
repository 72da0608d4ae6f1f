//! The guest pages a vCPU touches first when it runs again: the code at RIP, the stack
//! at RSP, the GDT and IDT, and the page tables that map them, found by walking the
//! guest's tables from CR3. A restore or a post-copy migration puts these in place
//! before the vCPU starts, so its first instructions do not each wait for a page.

use kvm_bindings::kvm_sregs;

use super::state::VcpuState;

const PAGE_SIZE: u64 = 4096;

/// Guest physical addresses (page-aligned, sorted, unique) of the pages `vcpus` touch
/// first. `entry` reads the 8-byte page-table entry at a guest physical address.
pub fn pages(vcpus: &[VcpuState], entry: impl Fn(u64) -> Option<u64>) -> Vec<u64> {
    let mut pages = Vec::new();
    for v in vcpus {
        let s = &v.sregs;
        for linear in [
            s.cs.base.wrapping_add(v.regs.rip),
            s.ss.base.wrapping_add(v.regs.rsp),
            s.gdt.base,
            s.idt.base,
        ] {
            pages.extend(translate(s, linear, &entry));
        }
    }
    pages.sort_unstable();
    pages.dedup();
    pages
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
    let page = |a: u64| a & !(PAGE_SIZE - 1);
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
