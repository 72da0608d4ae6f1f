//! The VM's saved state: everything but guest memory that a snapshot stores and a
//! migration carries (configuration, vCPUs, KVM's in-kernel devices, VMM devices).

use kvm_bindings::{kvm_clock_data, kvm_irqchip, kvm_pit_state2};
use nova_vmm_api::VmConfig;
use serde::{Deserialize, Serialize};
use vm_superio::serial::SerialState;

use crate::devices::virtio::block::backup_log::BackupBitmapState;
use crate::vcpu::state::VcpuState;
use crate::vcpu::tsc::ClockReference;
use raw::{put, put_list, RawBlock, Reader};

pub mod raw;

/// One VM, paused.
#[derive(Serialize, Deserialize)]
pub struct VmState {
    pub config: VmConfig,
    #[serde(with = "raw::blocks")]
    pub vcpus: Vec<VcpuState>,
    #[serde(with = "raw::blocks")]
    pub kvm: KvmState,
    pub serial: SerialSnapshot,
    /// Each virtio transport with its device, in device order.
    pub virtio: Vec<serde_json::Value>,
    /// Each disk's blocks written since its last backup checkpoint, so that a
    /// migrated or restored VM's next backup stays incremental (absent: lost).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backup_bitmaps: Vec<BackupBitmapState>,
}

/// KVM's in-kernel devices and clock.
#[derive(Serialize, Deserialize, Default)]
pub struct KvmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
    /// Host TSC and real time when the state was saved, for moving the guest's
    /// clocks on by the time a migration took (see [`crate::vcpu::tsc`]).
    pub clock_ref: ClockReference,
}

impl RawBlock for KvmState {
    fn put(&self, out: &mut Vec<u8>) {
        for chip in [&self.pic_master, &self.pic_slave, &self.ioapic] {
            put(out, chip);
        }
        put(out, &self.pit);
        put(out, &self.clock);
        put(out, &self.clock_ref.realtime_ns);
        put(out, &self.clock_ref.host_tsc);
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, String> {
        Ok(KvmState {
            pic_master: r.block("PIC (master)")?,
            pic_slave: r.block("PIC (slave)")?,
            ioapic: r.block("IOAPIC")?,
            pit: r.block("PIT")?,
            clock: r.block("KVM clock")?,
            clock_ref: ClockReference {
                realtime_ns: r.block("clock reference")?,
                host_tsc: r.block("clock reference")?,
            },
        })
    }
}

impl RawBlock for VcpuState {
    fn put(&self, out: &mut Vec<u8>) {
        put_list(out, &self.cpuid);
        put_list(out, &self.msrs);
        put(out, &self.regs);
        put(out, &self.sregs);
        put(out, &self.xsave);
        put(out, &self.xcrs);
        put(out, &self.debugregs);
        put(out, &self.lapic);
        put(out, &self.mp_state);
        put(out, &self.events);
        put(out, &self.tsc_khz);
        put(out, &u8::from(self.tsc_offset.is_some()));
        put(out, &self.tsc_offset.unwrap_or(0));
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, String> {
        Ok(VcpuState {
            cpuid: r.list("CPUID entry")?,
            msrs: r.list("MSR")?,
            regs: r.block("registers")?,
            sregs: r.block("special registers")?,
            xsave: r.block("XSAVE area")?,
            xcrs: r.block("XCRs")?,
            debugregs: r.block("debug registers")?,
            lapic: r.block("local APIC")?,
            mp_state: r.block("MP state")?,
            events: r.block("vCPU events")?,
            tsc_khz: r.block("TSC frequency")?,
            tsc_offset: {
                let present: u8 = r.block("TSC offset")?;
                let offset: u64 = r.block("TSC offset")?;
                (present != 0).then_some(offset)
            },
        })
    }
}

/// The UART's registers (vm-superio's state has no serde).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SerialSnapshot {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

impl From<SerialState> for SerialSnapshot {
    fn from(s: SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialSnapshot> for SerialState {
    fn from(s: &SerialSnapshot) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

/// Magic at the start of every encoded state.
pub const MAGIC: &[u8; 8] = b"NOVASTAT";
/// Version of the encoding; anything else is refused, never guessed at. Version 2:
/// MessagePack instead of JSON, so KVM's register blocks travel as bytes, not as
/// arrays of decimal numbers (a 4 KiB XSAVE area took longer to parse than to load).
/// Version 3: the vCPU and KVM blocks positional, no legacy FPU block. Version 4: the
/// vCPU and KVM blocks as KVM's own structures, byte for byte (see [`raw`]).
pub const VERSION: u32 = 4;

/// Why an encoded state was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a NovaCron VM state (bad magic)")]
    Magic,
    #[error("VM state version {found} is not supported (this nova-vmm reads version {VERSION})")]
    Version { found: u32 },
    #[error("VM state is truncated ({0} bytes)")]
    Truncated(usize),
    #[error("VM state checksum mismatch: the data is corrupt")]
    Checksum,
    #[error("VM state does not parse: {0}")]
    Parse(String),
}

/// `magic | version u32 | payload length u64 | payload (MessagePack, fields by name but
/// in the [`raw`] blocks) | crc32 of all before`.
pub fn encode<T: Serialize>(state: &T) -> Vec<u8> {
    let payload = rmp_serde::to_vec_named(state).expect("VM state serializes");
    let mut out = Vec::with_capacity(payload.len() + 24);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes what [`encode`] produced, refusing anything else with the reason.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return Err(DecodeError::Magic);
    }
    if bytes.len() < 24 {
        return Err(DecodeError::Truncated(bytes.len()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version != VERSION {
        return Err(DecodeError::Version { found: version });
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
    // Checked all the way: a crafted length near 2^64 must be refused, not wrap (or
    // panic on overflow) into a small end that passes the comparison.
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(20))
        .filter(|e| e.checked_add(4) == Some(bytes.len()));
    let Some(end) = end else {
        return Err(DecodeError::Truncated(bytes.len()));
    };
    let crc = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap());
    if crc32fast::hash(&bytes[..end]) != crc {
        return Err(DecodeError::Checksum);
    }
    rmp_serde::from_slice(&bytes[20..end]).map_err(|e| DecodeError::Parse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VmState {
        VmState {
            config: VmConfig::new("/k".into()),
            vcpus: vec![],
            kvm: KvmState::default(),
            serial: SerialState::default().into(),
            virtio: vec![],
            backup_bitmaps: vec![],
        }
    }

    fn vcpu() -> VcpuState {
        use kvm_bindings::{kvm_cpuid_entry2, kvm_msr_entry, kvm_regs};
        VcpuState {
            cpuid: vec![
                kvm_cpuid_entry2 {
                    function: 0x4000_0010,
                    eax: 2_596_122,
                    ..Default::default()
                };
                2
            ],
            msrs: (0..3)
                .map(|i| kvm_msr_entry {
                    index: 0xc000_0080 + i,
                    data: 0xd01 + i as u64,
                    ..Default::default()
                })
                .collect(),
            regs: kvm_regs {
                rip: 0x10_3034,
                ..Default::default()
            },
            sregs: Default::default(),
            xsave: Default::default(),
            xcrs: Default::default(),
            debugregs: Default::default(),
            lapic: Default::default(),
            mp_state: Default::default(),
            events: Default::default(),
            tsc_khz: 2_596_122,
            tsc_offset: Some(u64::MAX - 7),
        }
    }

    #[test]
    fn state_round_trips() {
        let mut state = sample();
        state.vcpus = vec![vcpu(), vcpu()];
        state.kvm.clock.clock = 123_456_789;
        state.kvm.clock_ref.host_tsc = 42;
        let bytes = encode(&state);
        let back: VmState = decode(&bytes).unwrap();
        assert_eq!(back.config, sample().config);
        assert_eq!(back.vcpus.len(), 2);
        let v = &back.vcpus[1];
        assert_eq!((v.cpuid.len(), v.cpuid[1].eax), (2, 2_596_122));
        assert_eq!(
            (v.msrs.len(), v.msrs[2].index, v.msrs[2].data),
            (3, 0xc000_0082, 0xd03)
        );
        assert_eq!(v.regs.rip, 0x10_3034);
        assert_eq!((v.tsc_khz, v.tsc_offset), (2_596_122, Some(u64::MAX - 7)));
        assert_eq!(back.kvm.clock.clock, 123_456_789);
        assert_eq!(back.kvm.clock_ref.host_tsc, 42);
        // Byte for byte: what comes back encodes to what went in.
        assert_eq!(encode(&back), bytes);
    }

    #[test]
    fn a_short_or_overcounted_block_is_refused_by_what_is_missing() {
        let mut bytes = Vec::new();
        vec![vcpu()].put(&mut bytes);
        // Cut inside the XSAVE area.
        let xsave_at = 4 + 4 + 2 * 40 + 4 + 3 * 16 + 144 + 312;
        let err = Vec::<VcpuState>::take(&mut Reader::new(&bytes[..xsave_at + 100])).err();
        assert!(err.unwrap().starts_with("XSAVE area"));
        // A count far beyond the bytes that follow: refused, nothing allocated.
        let mut lying = bytes.clone();
        lying[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = Vec::<VcpuState>::take(&mut Reader::new(&lying)).err();
        assert!(err.unwrap().contains("CPUID entry"));
        let mut lying = bytes.clone();
        lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Vec::<VcpuState>::take(&mut Reader::new(&lying)).is_err());
    }

    #[test]
    fn corrupt_old_and_foreign_states_are_refused_by_reason() {
        let bytes = encode(&sample());
        let mut flipped = bytes.clone();
        flipped[30] ^= 0x40;
        assert_eq!(
            decode::<VmState>(&flipped).err(),
            Some(DecodeError::Checksum)
        );
        let mut v2 = bytes.clone();
        v2[8] = 1;
        assert_eq!(
            decode::<VmState>(&v2).err(),
            Some(DecodeError::Version { found: 1 })
        );
        assert_eq!(
            decode::<VmState>(b"ELF....").err(),
            Some(DecodeError::Magic)
        );
        assert!(matches!(
            decode::<VmState>(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated(_))
        ));
    }

    #[test]
    fn a_length_near_two_to_the_64_is_refused_not_wrapped() {
        let bytes = encode(&sample());
        for len in [u64::MAX - 20, u64::MAX - 23, u64::MAX, 1 << 63] {
            let mut lying = bytes.clone();
            lying[12..20].copy_from_slice(&len.to_le_bytes());
            assert!(matches!(
                decode::<VmState>(&lying),
                Err(DecodeError::Truncated(_))
            ));
        }
    }
}
