//! The tables' checksums and contents, and a parse back by ACPICA's disassembler
//! (`iasl -d`, Debian's acpica-tools) when it is installed.

use super::*;

fn layout(vcpus: u8, devices: usize) -> Layout {
    Layout {
        vcpus,
        virtio: (0..devices)
            .map(|i| MmioDevice {
                base: 0xd000_0000 + i as u64 * 0x1000,
                len: 0x1000,
                gsi: 5 + i as u32,
            })
            .collect(),
        serial_port: 0x3f8,
        serial_gsi: 4,
        ged_addr: 0xfea0_0000,
        ged_gsi: 23,
        sleep_control_addr: 0xfea0_0200,
    }
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The table at `addr`.
fn find(t: &Tables, addr: u64) -> &[u8] {
    &t.blobs.iter().find(|(a, _)| *a == addr).unwrap().1
}

#[test]
fn every_table_sums_to_zero_and_says_its_own_length() {
    let t = build(&layout(4, 3)).unwrap();
    let (addr, rsdp) = &t.blobs[0];
    assert_eq!(*addr, RSDP_ADDR);
    assert_eq!(&rsdp[0..8], b"RSD PTR ");
    assert_eq!(sum(&rsdp[0..20]), 0, "RSDP v1 checksum");
    assert_eq!(sum(rsdp), 0, "RSDP extended checksum");
    for (addr, table) in &t.blobs[1..] {
        let sig = String::from_utf8_lossy(&table[0..4]).to_string();
        assert_eq!(u32_at(table, 4) as usize, table.len(), "{sig} length");
        assert_eq!(sum(table), 0, "{sig} checksum");
        assert_eq!(&table[10..16], &OEM_ID, "{sig} OEM id");
        assert!(
            *addr % 16 == 0 && *addr < MPTABLE_ADDR,
            "{sig} at {addr:#x}"
        );
    }
}

#[test]
fn the_rsdp_leads_to_the_fadt_madt_and_dsdt() {
    let t = build(&layout(2, 2)).unwrap();
    let xsdt = find(&t, u64_at(&t.blobs[0].1, 24));
    assert_eq!(&xsdt[0..4], b"XSDT");
    let entries: Vec<u64> = (36..xsdt.len())
        .step_by(8)
        .map(|o| u64_at(xsdt, o))
        .collect();
    let sigs: Vec<&[u8]> = entries.iter().map(|a| &find(&t, *a)[0..4]).collect();
    assert_eq!(sigs, [b"FACP", b"APIC"]);
    let fadt = find(&t, entries[0]);
    let dsdt = find(&t, u64_at(fadt, 140));
    assert_eq!(&dsdt[0..4], b"DSDT");
}

#[test]
fn the_fadt_is_hardware_reduced_with_control_method_buttons_and_our_sleep_registers() {
    let t = build(&layout(1, 1)).unwrap();
    let fadt = &t.blobs.iter().find(|(_, b)| &b[0..4] == b"FACP").unwrap().1;
    let flags = u32_at(fadt, 112);
    assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_ne!(
        flags & (1 << 4),
        0,
        "PWR_BUTTON: a control-method power button"
    );
    assert_ne!(flags & (1 << 5), 0, "SLP_BUTTON");
    // SLEEP_CONTROL_REG at 244 and SLEEP_STATUS_REG at 256: system memory, 8 bits.
    assert_eq!(fadt[244], 0, "sleep control in system memory");
    assert_eq!(fadt[245], 8);
    assert_eq!(u64_at(fadt, 248), 0xfea0_0200);
    assert_eq!(u64_at(fadt, 260), 0xfea0_0201);
    assert_eq!(fadt[8], 6, "FADT major version 6");
}

#[test]
fn the_madt_has_one_enabled_local_apic_per_vcpu_and_the_ioapic() {
    for vcpus in [1u8, 3, 32] {
        let t = build(&layout(vcpus, 0)).unwrap();
        let madt = &t.blobs.iter().find(|(_, b)| &b[0..4] == b"APIC").unwrap().1;
        assert_eq!(u32_at(madt, 36), LAPIC_ADDR);
        assert_eq!(u32_at(madt, 40), MADT_PCAT_COMPAT);
        let mut at = 44;
        let (mut lapics, mut ioapics, mut isos) = (Vec::new(), Vec::new(), Vec::new());
        while at < madt.len() {
            let (kind, len) = (madt[at], madt[at + 1] as usize);
            match kind {
                0 => lapics.push((madt[at + 2], madt[at + 3], u32_at(madt, at + 4))),
                1 => ioapics.push((madt[at + 2], u32_at(madt, at + 4), u32_at(madt, at + 8))),
                2 => isos.push((madt[at + 3], u32_at(madt, at + 4))),
                _ => {}
            }
            at += len;
        }
        assert_eq!(at, madt.len(), "structures fill the table exactly");
        let want: Vec<_> = (0..vcpus).map(|c| (c, c, 1)).collect();
        assert_eq!(lapics, want);
        assert_eq!(ioapics, [(vcpus, IOAPIC_ADDR, 0)]);
        assert_eq!(isos, [(0, 2)], "IRQ 0 (the PIT) on GSI 2");
    }
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_dsdt_names_every_virtio_device_with_its_window_and_interrupt() {
    let t = build(&layout(1, 3)).unwrap();
    let dsdt = &t.blobs.iter().find(|(_, b)| &b[0..4] == b"DSDT").unwrap().1;
    for i in 0..3u32 {
        assert!(
            contains(dsdt, format!("V00{i}").as_bytes()),
            "device V00{i}"
        );
        // Memory32Fixed: tag 0x86, length 9, read-write, base, length.
        let mut mem = vec![0x86, 9, 0, 1];
        mem.extend_from_slice(&(0xd000_0000 + i * 0x1000).to_le_bytes());
        mem.extend_from_slice(&0x1000u32.to_le_bytes());
        assert!(contains(dsdt, &mem), "window of V00{i}");
        // Extended interrupt: tag 0x89, length 6, consumer|edge, one GSI.
        let mut int = vec![0x89, 6, 0, 0b11, 1];
        int.extend_from_slice(&(5 + i).to_le_bytes());
        assert!(contains(dsdt, &int), "interrupt of V00{i}");
    }
    let hids = dsdt.windows(8).filter(|w| w == b"LNRO0005").count();
    assert_eq!(hids, 3);
    assert!(contains(dsdt, b"ACPI0013"), "the GED");
    assert!(contains(dsdt, b"_S5_"), "the soft-off sleep type");
}

#[test]
fn too_many_vcpus_or_none_is_refused() {
    for vcpus in [0u8, MAX_VCPUS + 1] {
        let err = build(&layout(vcpus, 1)).err().unwrap().to_string();
        assert!(err.contains("vCPUs"), "{err}");
    }
}

/// ACPICA's own disassembler reads every table back: its listing names each
/// device, resource and the power-button notify, and it reports no error.
#[test]
fn acpica_disassembles_every_table_into_what_we_described() {
    let Some(iasl) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("iasl"))
            .find(|f| f.exists())
    }) else {
        assert!(
            std::env::var_os("NOVA_REQUIRE_KVM").is_none(),
            "iasl (acpica-tools) is not installed"
        );
        eprintln!("skipped: iasl (Debian's acpica-tools) is not installed");
        return;
    };
    let dir = std::env::temp_dir().join(format!("nova-acpi-iasl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let t = build(&layout(2, 2)).unwrap();
    let mut listings = String::new();
    for (_, table) in &t.blobs[1..] {
        let sig = String::from_utf8_lossy(&table[0..4]).to_lowercase();
        let file = dir.join(format!("{sig}.dat"));
        std::fs::write(&file, table).unwrap();
        let out = std::process::Command::new(&iasl)
            .arg("-d")
            .arg(&file)
            .current_dir(&dir)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "iasl -d {sig}: {log}");
        assert!(!log.contains("Error"), "iasl -d {sig}: {log}");
        let dsl = std::fs::read_to_string(dir.join(format!("{sig}.dsl"))).unwrap();
        assert!(!dsl.contains("Invalid"), "{sig}: {dsl}");
        listings += &dsl;
    }
    let _ = std::fs::remove_dir_all(&dir);
    for want in [
        "Hardware Reduced (V5) : 1",
        "Control Method Power Button (V1) : 1",
        "Local Apic Address : FEE00000",
        "Address : FEC00000",
        "Processor ID : 01",
        "Device (V000)",
        "Device (V001)",
        "Name (_HID, \"LNRO0005\")",
        "0xD0001000,         // Address Base",
        "Name (_HID, \"ACPI0013\"",
        "If (((Local1 = (Local0 & 0x02)) == 0x02))",
        "EisaId (\"PNP0501\")",
        "EisaId (\"PNP0C0C\")",
        "Notify (\\_SB.PWRB, 0x80)",
        "Name (_S5, Package",
        "0x00000017,",
        "Subtable Type : 02 [Interrupt Source Override]",
    ] {
        assert!(listings.contains(want), "no `{want}` in:\n{listings}");
    }
}
