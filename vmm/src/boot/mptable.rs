//! Intel MultiProcessor Specification 1.4 table: tells the guest how many vCPUs it has
//! and where the IOAPIC is. Placed in the BIOS area at 0xF0000, where both Linux and
//! our test guest look for the "_MP_" floating pointer.

use vm_memory::{Bytes, GuestAddress};

use super::BootError;
use crate::memory::GuestMemory;

/// Address of the MP floating pointer structure.
pub const MPTABLE_ADDR: u64 = 0xf_0000;
/// The IOAPIC's MMIO base.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// The local APICs' MMIO base.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// IOAPIC input pins (KVM's in-kernel IOAPIC has 24).
pub const IOAPIC_PINS: u8 = 24;
/// Most vCPUs the table (and the VMM) supports.
pub const MAX_VCPUS: u8 = 32;

const APIC_VERSION: u8 = 0x14;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IOINT: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |s, b| s.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the floating pointer and configuration table for `vcpus` CPUs.
fn build(vcpus: u8) -> Vec<u8> {
    let ioapic_id = vcpus;
    let mut entries = Vec::new();
    for cpu in 0..vcpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BSP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, APIC_VERSION, flags]);
        // CPU signature (family 6), feature flags (FPU | APIC), reserved.
        entries.extend_from_slice(&0x600u32.to_le_bytes());
        entries.extend_from_slice(&0x201u32.to_le_bytes());
        entries.extend_from_slice(&[0u8; 8]);
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, APIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    // Every pin, 0 too, is an INT from the ISA IRQ of its number (KVM routes GSI n to
    // pin n): Linux needs IRQ 0 (the PIT) mapped to an IOAPIC pin, or its timer check
    // dereferences the unmapped IRQ 0 and panics. The 8259's ExtINT is LINT0, below.
    for pin in 0..IOAPIC_PINS {
        entries.extend_from_slice(&[ENTRY_IOINT, INT_TYPE_INT, 0, 0, 0, pin, ioapic_id, pin]);
    }
    // LINT0 is ExtINT and LINT1 NMI on every local APIC (0xff).
    entries.extend_from_slice(&[ENTRY_LINTSRC, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[ENTRY_LINTSRC, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);

    let entry_count = (vcpus as usize + 2 + IOAPIC_PINS as usize + 2) as u16;
    let table_addr = MPTABLE_ADDR as u32 + 16;
    let mut table = Vec::new();
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"NOVACRON");
    table.extend_from_slice(b"NOVA-VMM    ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&entry_count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    table.extend_from_slice(&[0u8; 4]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&table_addr.to_le_bytes());
    fp.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // length in 16-byte units, rev, checksum, features
    fp[10] = checksum(&fp);
    fp.extend_from_slice(&table);
    fp
}

/// Writes the MP table for `vcpus` vCPUs.
pub fn write_mptable(mem: &GuestMemory, vcpus: u8) -> Result<(), BootError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(BootError::MpTable(format!(
            "{vcpus} vCPUs; 1..={MAX_VCPUS} supported"
        )));
    }
    mem.write_slice(&build(vcpus), GuestAddress(MPTABLE_ADDR))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_make_both_structures_sum_to_zero() {
        let t = build(4);
        let sum = |b: &[u8]| b.iter().fold(0u8, |s, x| s.wrapping_add(*x));
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(sum(&t[0..16]), 0);
        let len = u16::from_le_bytes([t[20], t[21]]) as usize;
        assert_eq!(&t[16..20], b"PCMP");
        assert_eq!(sum(&t[16..16 + len]), 0);
        assert_eq!(u16::from_le_bytes([t[16 + 34], t[16 + 35]]), 4 + 2 + 24 + 2);
    }

    #[test]
    fn one_processor_entry_per_vcpu_with_the_bsp_first() {
        let t = build(3);
        let procs: Vec<_> = (0..3)
            .map(|i| &t[16 + 44 + i * 20..16 + 44 + i * 20 + 4])
            .collect();
        assert_eq!(
            procs[0],
            &[ENTRY_PROCESSOR, 0, APIC_VERSION, CPU_ENABLED | CPU_BSP]
        );
        assert_eq!(procs[2], &[ENTRY_PROCESSOR, 2, APIC_VERSION, CPU_ENABLED]);
    }
}
