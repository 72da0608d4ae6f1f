//! A vCPU's registers at the kernel's entry: flat 32-bit protected mode for PVH, long
//! mode on identity-mapped page tables for the Linux 64-bit entry.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use crate::boot::{EntryPoint, GDT_ADDR, PML4_ADDR, START_INFO_ADDR, ZERO_PAGE_ADDR};
use crate::memory::GuestMemory;

const GDT: [u64; 5] = [
    0,                     // null
    0x00cf_9b00_0000_ffff, // 0x08: code, 32-bit, flat
    0x00af_9b00_0000_ffff, // 0x10: code, 64-bit
    0x00cf_9300_0000_ffff, // 0x18: data, flat
    0x0000_8b00_0000_0067, // 0x20: TSS, busy, base 0
];
/// Initial stack pointer: top of the free page below the page tables.
const BOOT_STACK: u64 = 0x8ff0;
const SEL_CODE32: u16 = 0x08;
const SEL_CODE64: u16 = 0x10;
const SEL_DATA: u16 = 0x18;
const SEL_TSS: u16 = 0x20;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;

/// Decodes a GDT descriptor into KVM's segment form.
fn segment(selector: u16) -> kvm_segment {
    let d = GDT[(selector >> 3) as usize];
    let limit = ((d & 0xffff) | ((d >> 32) & 0xf_0000)) as u32;
    let g = ((d >> 55) & 1) as u8;
    kvm_segment {
        base: ((d >> 16) & 0xff_ffff) | (((d >> 56) & 0xff) << 24),
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector,
        type_: ((d >> 40) & 0xf) as u8,
        present: ((d >> 47) & 1) as u8,
        dpl: ((d >> 45) & 3) as u8,
        db: ((d >> 54) & 1) as u8,
        s: ((d >> 44) & 1) as u8,
        l: ((d >> 53) & 1) as u8,
        g,
        avl: ((d >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// Writes the GDT, and for the 64-bit entry identity page tables over the first 4 GiB
/// (PML4, one PDPT, four page directories of 2 MiB pages).
pub fn write_tables(
    mem: &GuestMemory,
    entry: EntryPoint,
) -> Result<(), vm_memory::GuestMemoryError> {
    for (i, d) in GDT.iter().enumerate() {
        mem.write_obj(*d, GuestAddress(GDT_ADDR + i as u64 * 8))?;
    }
    if let EntryPoint::Linux64(_) = entry {
        let pdpt = PML4_ADDR + 0x1000;
        mem.write_obj(pdpt | 0x3, GuestAddress(PML4_ADDR))?;
        for gib in 0..4u64 {
            let pd = pdpt + 0x1000 * (gib + 1);
            mem.write_obj(pd | 0x3, GuestAddress(pdpt + gib * 8))?;
            for i in 0..512u64 {
                let page = (gib << 30) | (i << 21) | 0x83;
                mem.write_obj(page, GuestAddress(pd + i * 8))?;
            }
        }
    }
    Ok(())
}

/// Sets the boot vCPU's registers for `entry`.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, entry: EntryPoint) -> Result<(), kvm_ioctls::Error> {
    let mut sregs: kvm_sregs = vcpu.get_sregs()?;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    let data = segment(SEL_DATA);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(SEL_TSS);
    let mut regs = kvm_regs {
        rflags: 2,
        ..Default::default()
    };
    match entry {
        EntryPoint::Pvh(rip) => {
            sregs.cs = segment(SEL_CODE32);
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = rip;
            regs.rbx = START_INFO_ADDR;
            // PVH leaves ESP undefined; a usable one forgives entry code that calls early.
            regs.rsp = BOOT_STACK;
        }
        EntryPoint::Linux64(rip) => {
            sregs.cs = segment(SEL_CODE64);
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 = CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
            regs.rip = rip;
            regs.rsi = ZERO_PAGE_ADDR;
            regs.rsp = BOOT_STACK;
            regs.rbp = BOOT_STACK;
        }
    }
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&regs)?;
    Ok(())
}

/// State every vCPU starts with: FPU defaults, MSRs, LAPIC LINT0 = ExtINT, LINT1 = NMI.
pub fn setup_common(vcpu: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu)?;
    let msrs = Msrs::from_entries(&[kvm_bindings::kvm_msr_entry {
        index: MSR_IA32_MISC_ENABLE,
        data: MISC_ENABLE_FAST_STRING,
        ..Default::default()
    }])
    .expect("one MSR fits");
    vcpu.set_msrs(&msrs)?;
    let mut lapic = vcpu.get_lapic()?;
    set_lapic_reg(&mut lapic.regs, 0x350, 0x700); // LVT LINT0: ExtINT
    set_lapic_reg(&mut lapic.regs, 0x360, 0x400); // LVT LINT1: NMI
    vcpu.set_lapic(&lapic)?;
    Ok(())
}

fn set_lapic_reg(regs: &mut [std::os::raw::c_char; 1024], offset: usize, value: u32) {
    let old = u32::from_le_bytes(std::array::from_fn(|i| regs[offset + i] as u8));
    let new = (old & !0x700) | value;
    for (i, b) in new.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *b as std::os::raw::c_char;
    }
}

/// One line with the registers that tell where a vCPU was, for error reports.
pub fn describe(vcpu: &VcpuFd) -> String {
    let (Ok(r), Ok(s)) = (vcpu.get_regs(), vcpu.get_sregs()) else {
        return "registers unavailable".into();
    };
    format!(
        "rip={:#x} rsp={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} \
         rflags={:#x} cs={:#x} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
        r.rip,
        r.rsp,
        r.rax,
        r.rbx,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        r.rflags,
        s.cs.selector,
        s.cr0,
        s.cr3,
        s.cr4,
        s.efer
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_descriptors_decode_to_flat_segments() {
        let cs = segment(SEL_CODE32);
        assert_eq!(
            (cs.base, cs.limit, cs.db, cs.l, cs.type_),
            (0, 0xffff_ffff, 1, 0, 0xb)
        );
        let cs64 = segment(SEL_CODE64);
        assert_eq!((cs64.l, cs64.db), (1, 0));
        let tss = segment(SEL_TSS);
        assert_eq!((tss.type_, tss.limit, tss.s), (0xb, 0x67, 0));
    }
}
