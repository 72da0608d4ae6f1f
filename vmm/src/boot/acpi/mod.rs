//! ACPI tables for the guest: RSDP, XSDT, FADT (hardware-reduced), MADT and DSDT,
//! written into the BIOS area below the MP table, so stock distro kernels find every
//! device (virtio-mmio as `LNRO0005`, the serial port, the power button behind the
//! GED) as they do under Firecracker and QEMU microvm. The table bytes come from the
//! `acpi_tables` crate; this module decides what they say and where they go.
//! [`dsdt`] builds the AML namespace.

pub mod dsdt;

use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress};
use zerocopy::{Immutable, IntoBytes};

use super::mptable::{IOAPIC_ADDR, LAPIC_ADDR, MAX_VCPUS, MPTABLE_ADDR};
use super::BootError;
use crate::memory::GuestMemory;

/// Where the RSDP goes: the start of the BIOS read-only area Linux scans
/// (0xe0000..0x100000, reserved in our e820 map); the other tables follow it, and
/// all must end below the MP table at [`MPTABLE_ADDR`].
pub const RSDP_ADDR: u64 = 0xe_0000;
/// OEM fields of every table.
pub const OEM_ID: [u8; 6] = *b"NOVACR";
pub const OEM_TABLE_ID: [u8; 8] = *b"NOVA-VMM";
const OEM_REVISION: u32 = 1;

/// IAPC_BOOT_ARCH: no VGA, no MSI, no CMOS RTC (the VMM emulates none of them).
const BOOT_ARCH_NO_VGA: u16 = 1 << 2;
const BOOT_ARCH_NO_MSI: u16 = 1 << 3;
const BOOT_ARCH_NO_CMOS_RTC: u16 = 1 << 5;
/// MADT flags: PCAT_COMPAT (the VM has dual 8259s, KVM's in-kernel PIC).
const MADT_PCAT_COMPAT: u32 = 1;

/// One virtio-mmio transport: its register window and its GSI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDevice {
    pub base: u64,
    pub len: u64,
    pub gsi: u32,
}

/// What the tables describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub vcpus: u8,
    pub virtio: Vec<MmioDevice>,
    /// The 16550 UART: I/O port base and GSI.
    pub serial_port: u16,
    pub serial_gsi: u32,
    /// The generic event device's event register and GSI (power button).
    pub ged_addr: u64,
    pub ged_gsi: u32,
    /// The hardware-reduced sleep control register; the sleep status register is
    /// the byte after it.
    pub sleep_control_addr: u64,
}

/// Every table with its guest address; the RSDP first.
pub struct Tables {
    pub blobs: Vec<(u64, Vec<u8>)>,
}

fn aml_bytes(a: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    a.to_aml_bytes(&mut v);
    v
}

/// MADT Interrupt Source Override (ACPI 6.5, 5.2.12.5).
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
struct InterruptSourceOverride {
    kind: u8,
    length: u8,
    bus: u8,
    source: u8,
    gsi: u32,
    flags: u16,
}

impl Aml for InterruptSourceOverride {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(self.as_bytes());
    }
}

/// MADT Local APIC NMI (5.2.12.7): LINT1 of every processor is the NMI.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
struct LocalApicNmi {
    kind: u8,
    length: u8,
    processor_uid: u8,
    flags: u16,
    lint: u8,
}

impl Aml for LocalApicNmi {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(self.as_bytes());
    }
}

fn madt(vcpus: u8) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    for cpu in 0..vcpus {
        madt.add_structure(ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled));
    }
    // The IOAPIC id follows the vCPUs' APIC ids, as in the MP table.
    madt.add_structure(IoApic::new(vcpus, IOAPIC_ADDR, 0));
    // KVM routes GSI 0 (the PIT) to IOAPIC pin 2, the PC convention.
    madt.add_structure(InterruptSourceOverride {
        kind: 2,
        length: 10,
        bus: 0,
        source: 0,
        gsi: 2,
        flags: 0,
    });
    madt.add_structure(LocalApicNmi {
        kind: 4,
        length: 6,
        processor_uid: 0xff,
        flags: 0,
        lint: 1,
    });
    let mut bytes = aml_bytes(&madt);
    // PCAT_COMPAT: the crate leaves the flags 0; set them and fix the checksum.
    bytes[40..44].copy_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    fix_checksum(&mut bytes, 9);
    bytes
}

fn fadt(dsdt_addr: u64, sleep_control_addr: u64) -> Vec<u8> {
    let mut b = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        // The power and sleep buttons are control-method devices (the GED's
        // PNP0C0C), not fixed-feature hardware.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .preferred_pm_profile(PmProfile::EnterpriseServer);
    b.iapc_boot_arch = (BOOT_ARCH_NO_VGA | BOOT_ARCH_NO_MSI | BOOT_ARCH_NO_CMOS_RTC).into();
    b.sleep_control_reg = GAS::new(
        AddressSpace::SystemMemory,
        8,
        0,
        AccessSize::ByteAccess,
        sleep_control_addr,
    );
    b.sleep_status_reg = GAS::new(
        AddressSpace::SystemMemory,
        8,
        0,
        AccessSize::ByteAccess,
        sleep_control_addr + 1,
    );
    b.hypervisor_vendor_identity = u64::from_le_bytes(*b"NOVACRON").into();
    aml_bytes(&b.finalize())
}

/// Sets the byte at `at` so that `bytes` sums to zero.
fn fix_checksum(bytes: &mut [u8], at: usize) {
    bytes[at] = 0;
    let sum = bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    bytes[at] = sum.wrapping_neg();
}

fn align16(a: u64) -> u64 {
    (a + 15) & !15
}

/// Builds every table for `layout`, placed from [`RSDP_ADDR`] up.
pub fn build(layout: &Layout) -> Result<Tables, BootError> {
    if layout.vcpus == 0 || layout.vcpus > MAX_VCPUS {
        return Err(BootError::Acpi(format!(
            "{} vCPUs; 1..={MAX_VCPUS} supported",
            layout.vcpus
        )));
    }
    let xsdt_addr = align16(RSDP_ADDR + Rsdp::len() as u64);
    // The XSDT points at two tables: FADT and MADT (the DSDT hangs off the FADT).
    let fadt_addr = align16(xsdt_addr + 36 + 2 * 8);
    let madt_addr = align16(fadt_addr + acpi_tables::fadt::FADT::len() as u64);
    let madt = madt(layout.vcpus);
    let dsdt_addr = align16(madt_addr + madt.len() as u64);
    let dsdt = dsdt::build(layout);
    let end = dsdt_addr + dsdt.len() as u64;
    if end > MPTABLE_ADDR {
        return Err(BootError::Acpi(format!(
            "tables end at {end:#x}, past the MP table at {MPTABLE_ADDR:#x}"
        )));
    }
    let fadt = fadt(dsdt_addr, layout.sleep_control_addr);
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let rsdp = Rsdp::new(OEM_ID, xsdt_addr);
    Ok(Tables {
        blobs: vec![
            (RSDP_ADDR, aml_bytes(&rsdp)),
            (xsdt_addr, aml_bytes(&xsdt)),
            (fadt_addr, fadt),
            (madt_addr, madt),
            (dsdt_addr, dsdt),
        ],
    })
}

/// Writes the tables for `layout` into guest memory; returns the RSDP's address.
pub fn write(mem: &GuestMemory, layout: &Layout) -> Result<u64, BootError> {
    let tables = build(layout)?;
    for (addr, bytes) in &tables.blobs {
        mem.write_slice(bytes, GuestAddress(*addr))?;
    }
    Ok(RSDP_ADDR)
}

#[cfg(test)]
mod tests;
