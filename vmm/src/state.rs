//! The VM's saved state: everything but guest memory that a snapshot stores and a
//! migration carries (configuration, vCPUs, KVM's in-kernel devices, VMM devices).

use kvm_bindings::{kvm_clock_data, kvm_irqchip, kvm_pit_state2};
use serde::{Deserialize, Serialize};
use vm_superio::serial::SerialState;

use crate::config::VmConfig;
use crate::vcpu::state::VcpuState;
use crate::vcpu::tsc::ClockReference;

/// One VM, paused.
#[derive(Serialize, Deserialize)]
pub struct VmState {
    pub config: VmConfig,
    #[serde(with = "compact")]
    pub vcpus: Vec<VcpuState>,
    #[serde(with = "compact")]
    pub kvm: KvmState,
    pub serial: SerialSnapshot,
    /// Each virtio transport with its device, in device order.
    pub virtio: Vec<serde_json::Value>,
}

/// KVM's in-kernel devices and clock.
#[derive(Serialize, Deserialize)]
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
/// Version 3: the vCPU and KVM blocks positional (see [`compact`]), no legacy FPU block.
pub const VERSION: u32 = 3;

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
/// in the [`compact`] blocks) | crc32 of all before`.
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
    let end = 20usize
        .checked_add(len as usize)
        .filter(|e| *e + 4 == bytes.len());
    let Some(end) = end else {
        return Err(DecodeError::Truncated(bytes.len()));
    };
    let crc = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap());
    if crc32fast::hash(&bytes[..end]) != crc {
        return Err(DecodeError::Checksum);
    }
    rmp_serde::from_slice(&bytes[20..end]).map_err(|e| DecodeError::Parse(e.to_string()))
}

/// Serde `with` module: a value as one MessagePack binary holding its positional
/// encoding (structs as arrays, no field names). The vCPU and KVM blocks use it: a
/// stop-and-copy meets their decoder with a cold cache, and dozens of CPUID entries
/// and MSRs matched by field name took ~70 us of the downtime. [`VERSION`] guards the
/// layout; the configuration stays by name (its optional fields are left out).
mod compact {
    use std::marker::PhantomData;

    use serde::de::{DeserializeOwned, Visitor};
    use serde::{Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        let bytes = rmp_serde::to_vec(value).map_err(serde::ser::Error::custom)?;
        s.serialize_bytes(&bytes)
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        struct Positional<T>(PhantomData<T>);
        impl<T: DeserializeOwned> Visitor<'_> for Positional<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a MessagePack binary")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<T, E> {
                rmp_serde::from_slice(bytes).map_err(E::custom)
            }
        }
        d.deserialize_bytes(Positional(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VmState {
        VmState {
            config: VmConfig::new("/k".into()),
            vcpus: vec![],
            kvm: KvmState {
                pic_master: Default::default(),
                pic_slave: Default::default(),
                ioapic: Default::default(),
                pit: Default::default(),
                clock: Default::default(),
                clock_ref: Default::default(),
            },
            serial: SerialState::default().into(),
            virtio: vec![],
        }
    }

    #[test]
    fn state_round_trips() {
        let bytes = encode(&sample());
        let back: VmState = decode(&bytes).unwrap();
        assert_eq!(back.config, sample().config);
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
}
