//! The DSDT: the guest's device namespace in AML. Under `\_SB_`: the serial port
//! (`PNP0501`), one `LNRO0005` device per virtio-mmio transport with its register
//! window and interrupt (what Linux's virtio_mmio driver binds through ACPI), the
//! generic event device (`ACPI0013`) whose `_EVT` turns the VMM's power-button event
//! into a `Notify` of the power button (`PNP0C0C`); and `\_S5_`, the soft-off sleep
//! type the guest writes to the sleep control register.

use acpi_tables::aml::{
    And, Device, EISAName, Equal, Field, FieldAccessType, FieldEntry, FieldLockRule,
    FieldUpdateRule, If, Interrupt, Local, Memory32Fixed, Method, Name, Notify, OpRegion,
    OpRegionSpace, Package, Path, ResourceTemplate, Scope, Store, IO, ONE, ZERO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

use super::{Layout, OEM_ID, OEM_TABLE_ID};

/// The GED event register's bit for a power-button press (as QEMU's GED numbers it).
pub const GED_EVENT_POWER_BUTTON: u32 = 1 << 1;
/// SLP_TYP of S5 (soft off): what the guest writes, shifted, to the sleep control
/// register (see [`crate::devices::power`]).
pub const S5_SLEEP_TYPE: u8 = 5;
/// A device notification code: "status change", a button press for `PNP0C0C`.
const NOTIFY_STATUS_CHANGE: u8 = 0x80;

/// An edge-triggered, active-high, exclusive interrupt the device consumes: how
/// KVM's irqfds raise the IOAPIC pins.
fn irq(gsi: u32) -> Interrupt {
    Interrupt::new(true, true, false, false, gsi)
}

fn bytes(a: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    a.to_aml_bytes(&mut v);
    v
}

/// The DSDT for `layout` (revision 2: 64-bit integers).
pub fn build(layout: &Layout) -> Vec<u8> {
    let s5 = Package::new(vec![&S5_SLEEP_TYPE, &S5_SLEEP_TYPE, &ZERO, &ZERO]);
    let mut body = bytes(&Name::new("_S5_".into(), &s5));

    // Each device is encoded in one statement: the AML builders borrow their parts.
    let mut sb = Vec::new();
    let port = layout.serial_port;
    sb.extend(bytes(&Device::new(
        "COM1".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0501")),
            &Name::new("_UID".into(), &ZERO),
            &Name::new(
                "_CRS".into(),
                &ResourceTemplate::new(vec![&IO::new(port, port, 1, 8), &irq(layout.serial_gsi)]),
            ),
        ],
    )));

    // The GED: its interrupt runs _EVT, which reads (and so clears) the event
    // register and notifies the power button when its bit is set.
    let gdat: Path = "GDAT".into();
    let bit = GED_EVENT_POWER_BUTTON;
    let pwrb: Path = "\\_SB_.PWRB".into();
    sb.extend(bytes(&Device::new(
        "GED_".into(),
        vec![
            &Name::new("_HID".into(), &"ACPI0013"),
            &Name::new("_UID".into(), &ZERO),
            &Name::new(
                "_CRS".into(),
                &ResourceTemplate::new(vec![&irq(layout.ged_gsi)]),
            ),
            &OpRegion::new(
                "GDST".into(),
                OpRegionSpace::SystemMemory,
                &layout.ged_addr,
                &4u32,
            ),
            &Field::new(
                "GDST".into(),
                FieldAccessType::DWord,
                FieldLockRule::NoLock,
                FieldUpdateRule::WriteAsZeroes,
                vec![FieldEntry::Named(*b"GDAT", 32)],
            ),
            &Method::new(
                "_EVT".into(),
                1,
                true,
                vec![
                    &Store::new(&Local(0), &gdat),
                    &If::new(
                        &Equal::new(&And::new(&Local(1), &Local(0), &bit), &bit),
                        vec![&Notify::new(&pwrb, &NOTIFY_STATUS_CHANGE)],
                    ),
                ],
            ),
        ],
    )));
    sb.extend(bytes(&Device::new(
        "PWRB".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0C0C")),
            &Name::new("_UID".into(), &ONE),
        ],
    )));

    // One device per virtio-mmio transport, named V000, V001, ...
    for (i, d) in layout.virtio.iter().enumerate() {
        let name = format!("V{i:03X}");
        sb.extend(bytes(&Device::new(
            name.as_str().into(),
            vec![
                &Name::new("_HID".into(), &"LNRO0005"),
                &Name::new("_UID".into(), &(i as u32)),
                &Name::new(
                    "_CRS".into(),
                    &ResourceTemplate::new(vec![
                        &Memory32Fixed::new(true, d.base as u32, d.len as u32),
                        &irq(d.gsi),
                    ]),
                ),
            ],
        )));
    }
    body.extend(Scope::raw("\\_SB_".into(), sb));

    let mut sdt = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE_ID, 1);
    sdt.append_slice(&body);
    sdt.as_slice().to_vec()
}
