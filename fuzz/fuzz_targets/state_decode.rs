//! The state/snapshot decoder (`DIR/state`, the migration's `State`) on arbitrary
//! bytes, with and without a valid checksum (so the parser behind it is reached).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nova_vmm::snapshot::Snapshot;
use nova_vmm::state::{decode, VmState};

fuzz_target!(|data: &[u8]| {
    let _ = decode::<Snapshot>(data);
    // The same bytes as a payload behind a well-formed header, so that the
    // MessagePack and raw KVM block decoders see them too.
    let mut framed = b"NOVASTAT".to_vec();
    framed.extend_from_slice(&nova_vmm::state::VERSION.to_le_bytes());
    framed.extend_from_slice(&(data.len() as u64).to_le_bytes());
    framed.extend_from_slice(data);
    let crc = crc32(&framed);
    framed.extend_from_slice(&crc.to_le_bytes());
    let _ = decode::<Snapshot>(&framed);
    let _ = decode::<VmState>(&framed);
});

/// CRC-32 (IEEE), as the state's trailer uses.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= *b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
