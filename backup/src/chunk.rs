//! Owns one chunk: how it is named (plain or keyed hash, BLAKE3 or SHA-256) and its
//! stored form `magic | version | flags | raw_len | payload` (zstd, optionally
//! XChaCha20-Poly1305 with the chunk id as associated data). Decoding is hostile-input safe.

use crate::error::{BackupError, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

const MAGIC: &[u8; 4] = b"NVCK";
const VERSION: u8 = 1;
const FLAG_ZSTD: u8 = 1;
const FLAG_ENCRYPTED: u8 = 2;
const HEADER_LEN: usize = 10;
const NONCE_LEN: usize = 24;
/// Largest chunk we accept when decoding (CDC max and fixed chunks are well below).
pub const MAX_CHUNK_LEN: usize = 16 << 20;

/// The hash that names chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashAlgo {
    /// BLAKE3 (default: fastest here, see docs/benchmarks/backup.md).
    Blake3,
    /// SHA-256, for sites that require a FIPS hash.
    Sha256,
}

/// A chunk's id: 32 bytes, shown and stored as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// Parses and validates a hex id; anything else is refused before it can become a path.
    pub fn parse(s: &str) -> Result<Self> {
        let valid = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !valid {
            return Err(BackupError::InvalidChunkId(s.chars().take(80).collect()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| BackupError::InvalidChunkId(s.into()))?;
        Ok(ChunkId(out))
    }

    /// The lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.to_hex())
    }
}

impl Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChunkId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The user's encryption key, from which the cipher key and the chunk-id key are derived.
#[derive(Clone)]
pub struct CryptKey {
    cipher: [u8; 32],
    id_key: [u8; 32],
    fingerprint: String,
}

impl fmt::Debug for CryptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CryptKey(fingerprint {})", self.fingerprint)
    }
}

impl CryptKey {
    /// Derives the keys from 32 bytes the user holds (never stored in the backup store).
    pub fn from_master(master: &[u8; 32]) -> Self {
        let cipher = blake3::derive_key("nova-backup 2026 chunk cipher key", master);
        let id_key = blake3::derive_key("nova-backup 2026 chunk id key", master);
        let fp = blake3::derive_key("nova-backup 2026 key fingerprint", master);
        CryptKey {
            cipher,
            id_key,
            fingerprint: hex::encode(&fp[..8]),
        }
    }

    /// A public fingerprint recorded in manifests so a wrong key is named, not guessed at.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Names `data`: a plain hash, or a keyed hash when encrypting (so ids leak no plaintext hash).
pub fn chunk_id(algo: HashAlgo, key: Option<&CryptKey>, data: &[u8]) -> ChunkId {
    match (algo, key) {
        (HashAlgo::Blake3, None) => ChunkId(*blake3::hash(data).as_bytes()),
        (HashAlgo::Blake3, Some(k)) => ChunkId(*blake3::keyed_hash(&k.id_key, data).as_bytes()),
        (HashAlgo::Sha256, None) => ChunkId(Sha256::digest(data).into()),
        (HashAlgo::Sha256, Some(k)) => {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&k.id_key)
                .expect("HMAC accepts keys of any length");
            mac.update(data);
            ChunkId(mac.finalize().into_bytes().into())
        }
    }
}

/// Encodes a chunk for storage: zstd, then (with a key) XChaCha20-Poly1305 bound to `id`.
pub fn encode_chunk(
    id: &ChunkId,
    data: &[u8],
    key: Option<&CryptKey>,
    level: i32,
) -> Result<Vec<u8>> {
    let compressed = zstd::bulk::compress(data, level)
        .map_err(|e| BackupError::io(format!("compressing chunk {id}"), e))?;
    let (flags, body) = if compressed.len() < data.len() {
        (FLAG_ZSTD, compressed)
    } else {
        (0, data.to_vec())
    };
    let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + body.len() + 16);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    match key {
        None => {
            out.push(flags);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&body);
        }
        Some(k) => {
            out.push(flags | FLAG_ENCRYPTED);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            let mut nonce = [0u8; NONCE_LEN];
            getrandom::getrandom(&mut nonce).map_err(|e| {
                BackupError::io(
                    "reading a nonce from the OS",
                    std::io::Error::other(e.to_string()),
                )
            })?;
            let cipher = XChaCha20Poly1305::new((&k.cipher).into());
            let sealed = cipher
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: &body,
                        aad: &id.0,
                    },
                )
                .map_err(|_| BackupError::Decrypt(id.to_hex()))?;
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&sealed);
        }
    }
    Ok(out)
}

/// Decodes a stored chunk back to its content; refuses anything malformed with a reason.
/// Does not re-hash: callers that need integrity use [`decode_and_verify`].
pub fn decode_chunk(id: &ChunkId, stored: &[u8], key: Option<&CryptKey>) -> Result<Vec<u8>> {
    let bad = |reason: &str| BackupError::MalformedChunk {
        id: id.to_hex(),
        reason: reason.to_string(),
    };
    if stored.len() < HEADER_LEN {
        return Err(bad("shorter than the 10-byte header"));
    }
    if &stored[..4] != MAGIC {
        return Err(bad("bad magic (not a nova-backup chunk)"));
    }
    if stored[4] != VERSION {
        return Err(bad(&format!("unknown version {}", stored[4])));
    }
    let flags = stored[5];
    if flags & !(FLAG_ZSTD | FLAG_ENCRYPTED) != 0 {
        return Err(bad(&format!("unknown flags {flags:#x}")));
    }
    let raw_len = u32::from_le_bytes([stored[6], stored[7], stored[8], stored[9]]) as usize;
    if raw_len > MAX_CHUNK_LEN {
        return Err(bad(&format!(
            "raw length {raw_len} over the {MAX_CHUNK_LEN} limit"
        )));
    }
    let rest = &stored[HEADER_LEN..];
    let body = if flags & FLAG_ENCRYPTED != 0 {
        let k = key.ok_or_else(|| {
            BackupError::KeyMismatch(format!("chunk {id} is encrypted and no key was given"))
        })?;
        if rest.len() < NONCE_LEN + 16 {
            return Err(bad("encrypted body shorter than nonce and tag"));
        }
        let cipher = XChaCha20Poly1305::new((&k.cipher).into());
        cipher
            .decrypt(
                XNonce::from_slice(&rest[..NONCE_LEN]),
                Payload {
                    msg: &rest[NONCE_LEN..],
                    aad: &id.0,
                },
            )
            .map_err(|_| BackupError::Decrypt(id.to_hex()))?
    } else {
        if key.is_some() {
            return Err(BackupError::KeyMismatch(format!(
                "chunk {id} is not encrypted but the store is"
            )));
        }
        rest.to_vec()
    };
    let data = if flags & FLAG_ZSTD != 0 {
        zstd::bulk::decompress(&body, raw_len).map_err(|e| bad(&format!("zstd: {e}")))?
    } else {
        body
    };
    if data.len() != raw_len {
        return Err(bad(&format!(
            "content is {} bytes, header says {raw_len}",
            data.len()
        )));
    }
    Ok(data)
}

/// Decodes a chunk and checks that it hashes to its id.
pub fn decode_and_verify(
    id: &ChunkId,
    stored: &[u8],
    algo: HashAlgo,
    key: Option<&CryptKey>,
) -> Result<Vec<u8>> {
    let data = decode_chunk(id, stored, key)?;
    let actual = chunk_id(algo, key, &data);
    if actual != *id {
        return Err(BackupError::ChunkHashMismatch {
            id: id.to_hex(),
            actual: actual.to_hex(),
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_round_trips_plain_and_encrypted_with_both_hashes() {
        let key = CryptKey::from_master(&[7u8; 32]);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for algo in [HashAlgo::Blake3, HashAlgo::Sha256] {
            for k in [None, Some(&key)] {
                let id = chunk_id(algo, k, &data);
                let stored = encode_chunk(&id, &data, k, 3).unwrap();
                assert_eq!(decode_and_verify(&id, &stored, algo, k).unwrap(), data);
            }
        }
    }

    #[test]
    fn keyed_ids_differ_from_plain_hashes() {
        let key = CryptKey::from_master(&[1u8; 32]);
        for algo in [HashAlgo::Blake3, HashAlgo::Sha256] {
            assert_ne!(
                chunk_id(algo, None, b"secret"),
                chunk_id(algo, Some(&key), b"secret")
            );
        }
    }

    #[test]
    fn wrong_key_is_refused_as_decrypt_error() {
        let a = CryptKey::from_master(&[1u8; 32]);
        let b = CryptKey::from_master(&[2u8; 32]);
        let id = chunk_id(HashAlgo::Blake3, Some(&a), b"data");
        let stored = encode_chunk(&id, b"data", Some(&a), 3).unwrap();
        assert!(matches!(
            decode_chunk(&id, &stored, Some(&b)),
            Err(BackupError::Decrypt(_))
        ));
    }

    #[test]
    fn malformed_chunks_are_refused_not_panicked_on() {
        let id = chunk_id(HashAlgo::Blake3, None, b"x");
        for bad in [
            &b""[..],
            b"NVCK",
            b"XXXX\x01\x00\x01\x00\x00\x00x",
            b"NVCK\x09\x00\x01\x00\x00\x00x",
            b"NVCK\x01\x80\x01\x00\x00\x00x",
            b"NVCK\x01\x01\xff\xff\xff\xffx",
            b"NVCK\x01\x01\x05\x00\x00\x00junk",
        ] {
            let err = decode_chunk(&id, bad, None).unwrap_err();
            assert!(matches!(err, BackupError::MalformedChunk { .. }), "{err}");
        }
    }

    #[test]
    fn chunk_ids_are_validated_before_use() {
        assert!(ChunkId::parse("../../etc/passwd").is_err());
        assert!(ChunkId::parse(&"A".repeat(64)).is_err());
        assert!(ChunkId::parse(&"a".repeat(64)).is_ok());
    }
}
