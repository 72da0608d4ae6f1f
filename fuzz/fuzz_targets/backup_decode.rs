//! The backup store's decoders on arbitrary bytes: a manifest (JSON, then every invariant
//! restore and GC rely on) and a stored chunk (header, zstd, XChaCha20-Poly1305), with and
//! without a key, raw and behind a well-formed header so the zstd and AEAD paths are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nova_backup::chunk::{decode_and_verify, decode_chunk, ChunkId, CryptKey, HashAlgo};
use nova_backup::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode("fuzz", data) {
        // A manifest that decodes must re-encode and decode to itself.
        let again = Manifest::decode("fuzz", &m.encode().expect("encode")).expect("re-decode");
        assert_eq!(again, m);
    }
    let id = ChunkId([7; 32]);
    let key = CryptKey::from_master(&[9; 32]);
    let _ = decode_chunk(&id, data, None);
    let _ = decode_chunk(&id, data, Some(&key));
    for flags in [0u8, 1, 2, 3] {
        let mut framed = b"NVCK\x01".to_vec();
        framed.push(flags);
        framed.extend_from_slice(&(data.len().min(1 << 20) as u32).to_le_bytes());
        framed.extend_from_slice(data);
        let _ = decode_and_verify(&id, &framed, HashAlgo::Blake3, None);
        let _ = decode_and_verify(&id, &framed, HashAlgo::Sha256, Some(&key));
    }
});
