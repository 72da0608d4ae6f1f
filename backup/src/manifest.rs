//! Owns the index of one backup: per file, its size and the ordered chunk list (holes
//! recorded, not stored), plus how chunks were made and whether verify found damage.
//! Stored as versioned JSON; decoding validates every invariant and never panics.

use crate::chunk::{ChunkId, HashAlgo, MAX_CHUNK_LEN};
use crate::error::{BackupError, Result};
use serde::{Deserialize, Serialize};

/// Manifest format version; an unknown version is refused, never guessed at.
pub const MANIFEST_FORMAT: u32 = 1;
/// Largest manifest we decode (a 4 TiB disk in 4 MiB chunks is ~100 MiB of JSON at most).
pub const MAX_MANIFEST_LEN: usize = 256 << 20;

/// How files were split into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Chunking {
    /// Fixed-size chunks (4 MiB for disks), aligned with the dirty-block bitmap.
    Fixed { size: u32 },
    /// Content-defined chunking (FastCDC) with min/avg/max sizes.
    Cdc { min: u32, avg: u32, max: u32 },
}

impl Chunking {
    /// The default for disks: fixed 4 MiB.
    pub const DISK: Chunking = Chunking::Fixed { size: 4 << 20 };
    /// The default CDC parameters (1/4/8 MiB).
    pub const CDC: Chunking = Chunking::Cdc {
        min: 1 << 20,
        avg: 4 << 20,
        max: 8 << 20,
    };
}

/// One piece of a file: either a stored chunk or a hole (all zeros, stored nowhere).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Byte offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
    /// The chunk's id; `None` for a hole.
    pub id: Option<ChunkId>,
}

/// The index of one backed-up file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIndex {
    /// Name inside the backup (e.g. `disk0.img`, `memory`).
    pub name: String,
    /// File size in bytes.
    pub size: u64,
    /// Contiguous pieces covering `0..size` in order.
    pub chunks: Vec<ChunkRef>,
}

/// The index of one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version, [`MANIFEST_FORMAT`].
    pub format: u32,
    /// Backup id, also the manifest's object name.
    pub backup_id: String,
    /// Creation time, seconds since the epoch (UTC).
    pub created_unix: u64,
    /// Hash naming the chunks.
    pub hash: HashAlgo,
    /// How files were chunked.
    pub chunking: Chunking,
    /// Fingerprint of the encryption key, if the chunks are encrypted.
    pub key_fingerprint: Option<String>,
    /// The backed-up files.
    pub files: Vec<FileIndex>,
    /// Chunks that the last verify found damaged (empty: not damaged).
    #[serde(default)]
    pub damaged: Vec<ChunkId>,
    /// When the last verify ran, seconds since the epoch.
    #[serde(default)]
    pub verified_unix: Option<u64>,
}

/// Checks a backup id (it becomes an object name): `[a-z0-9._-]`, 1..=128 chars, not dots only.
pub fn validate_backup_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.bytes().all(|b| b == b'.')
        && id
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(BackupError::InvalidArgument {
            field: "backup_id",
            reason: format!(
                "{:?} must be 1-128 of [a-z0-9._-]",
                id.chars().take(140).collect::<String>()
            ),
        })
    }
}

impl Manifest {
    /// Whether verify marked this backup damaged.
    pub fn is_damaged(&self) -> bool {
        !self.damaged.is_empty()
    }

    /// Finds a file by name.
    pub fn file(&self, name: &str) -> Option<&FileIndex> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Every stored chunk this backup references (holes excluded).
    pub fn chunk_ids(&self) -> impl Iterator<Item = &ChunkId> {
        self.files
            .iter()
            .flat_map(|f| f.chunks.iter().filter_map(|c| c.id.as_ref()))
    }

    /// Serialises to the stored form.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| BackupError::MalformedManifest {
            name: self.backup_id.clone(),
            reason: e.to_string(),
        })
    }

    /// Parses and validates a stored manifest; `name` is used in errors.
    pub fn decode(name: &str, bytes: &[u8]) -> Result<Manifest> {
        let bad = |reason: String| BackupError::MalformedManifest {
            name: name.chars().take(140).collect(),
            reason,
        };
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(bad(format!(
                "{} bytes, over the {MAX_MANIFEST_LEN} limit",
                bytes.len()
            )));
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        m.validate().map_err(bad)?;
        Ok(m)
    }

    /// The invariants restore and GC rely on.
    fn validate(&self) -> std::result::Result<(), String> {
        if self.format != MANIFEST_FORMAT {
            return Err(format!(
                "unknown format {} (this build reads {MANIFEST_FORMAT})",
                self.format
            ));
        }
        validate_backup_id(&self.backup_id).map_err(|e| e.to_string())?;
        match self.chunking {
            Chunking::Fixed { size } if size == 0 || size as usize > MAX_CHUNK_LEN => {
                return Err(format!("chunking.size {size} out of 1..={MAX_CHUNK_LEN}"));
            }
            Chunking::Cdc { min, avg, max }
                if !(min > 0 && min <= avg && avg <= max && max as usize <= MAX_CHUNK_LEN) =>
            {
                return Err(format!(
                    "chunking min/avg/max {min}/{avg}/{max} not ordered within limits"
                ));
            }
            _ => {}
        }
        let mut names = std::collections::HashSet::new();
        for f in &self.files {
            if f.name.is_empty()
                || f.name.len() > 255
                || f.name.contains(['/', '\0'])
                || f.name == ".."
                || f.name == "."
            {
                return Err(format!(
                    "files[].name {:?} is not a plain file name",
                    f.name
                ));
            }
            if !names.insert(f.name.as_str()) {
                return Err(format!("files[].name {:?} appears twice", f.name));
            }
            let mut next = 0u64;
            for (i, c) in f.chunks.iter().enumerate() {
                if c.offset != next {
                    return Err(format!(
                        "file {:?} chunks[{i}].offset {} leaves a gap or overlap (expected {next})",
                        f.name, c.offset
                    ));
                }
                if c.len == 0 || c.len as usize > MAX_CHUNK_LEN {
                    return Err(format!(
                        "file {:?} chunks[{i}].len {} out of 1..={MAX_CHUNK_LEN}",
                        f.name, c.len
                    ));
                }
                next = next
                    .checked_add(c.len as u64)
                    .ok_or_else(|| format!("file {:?} offsets overflow", f.name))?;
            }
            if next != f.size {
                return Err(format!(
                    "file {:?} chunks cover {next} bytes, size says {}",
                    f.name, f.size
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            backup_id: "vm1-0001".into(),
            created_unix: 1,
            hash: HashAlgo::Blake3,
            chunking: Chunking::DISK,
            key_fingerprint: None,
            files: vec![FileIndex {
                name: "disk0".into(),
                size: 10,
                chunks: vec![
                    ChunkRef {
                        offset: 0,
                        len: 4,
                        id: None,
                    },
                    ChunkRef {
                        offset: 4,
                        len: 6,
                        id: Some(ChunkId([1; 32])),
                    },
                ],
            }],
            damaged: vec![],
            verified_unix: None,
        }
    }

    #[test]
    fn manifest_round_trips() {
        let m = sample();
        assert_eq!(Manifest::decode("m", &m.encode().unwrap()).unwrap(), m);
    }

    #[test]
    fn manifest_with_gap_or_bad_name_or_version_is_refused_with_the_field() {
        let mut m = sample();
        m.files[0].chunks[1].offset = 5;
        let e = Manifest::decode("m", &m.encode().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("chunks[1].offset"), "{e}");
        let mut m = sample();
        m.files[0].name = "../x".into();
        let e = Manifest::decode("m", &m.encode().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("files[].name"), "{e}");
        let mut m = sample();
        m.format = 9;
        let e = Manifest::decode("m", &m.encode().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown format 9"), "{e}");
        let e = Manifest::decode("m", b"{not json").unwrap_err().to_string();
        assert!(e.contains("malformed manifest m"), "{e}");
    }

    #[test]
    fn backup_ids_that_could_be_paths_are_refused() {
        for id in ["", "..", "a/b", "A", "x\0"] {
            assert!(validate_backup_id(id).is_err(), "{id:?}");
        }
        validate_backup_id("vm-1.2026_12_06").unwrap();
    }
}
