//! Backup checkpoints (`PUT /v1/backup/checkpoint`): the VMM pauses the VM, takes and
//! resets each disk's blocks written since the previous checkpoint, copies the blocks a
//! backup must read into a sparse staging file per disk (so the backup reads a
//! crash-consistent image while the guest runs on), and resumes.

use std::path::PathBuf;

use nova_http::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Bytes per bit of the backup bitmap: the backup store's fixed disk chunk (4 MiB), so
/// a dirty bit is exactly one chunk to read again.
pub const BACKUP_BLOCK: u64 = 4 << 20;
/// Longest checkpoint id.
pub const MAX_CHECKPOINT_LEN: usize = 128;

/// Checks a checkpoint id: 1..=128 of `[a-z0-9._-]` (it is a backup id).
pub fn validate_checkpoint(field: &str, id: &str) -> Result<(), FieldError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_CHECKPOINT_LEN
        && id
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "{:?} must be 1-{MAX_CHECKPOINT_LEN} of [a-z0-9._-]",
                id.chars().take(140).collect::<String>()
            ),
        ))
    }
}

/// `PUT /v1/backup/checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRequest {
    /// Id of this checkpoint (the backup being taken); the next checkpoint's bitmaps
    /// are relative to it.
    pub checkpoint: String,
    /// The checkpoint the caller's previous backup was taken at: only when each disk's
    /// bitmap is relative to exactly it are just the changed blocks copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Absolute directory (created if missing) for the staging files `disk<i>.img`.
    #[schema(value_type = String)]
    pub staging_dir: PathBuf,
    /// Copy every allocated block even when the bitmap would do (a full backup).
    #[serde(default)]
    pub full: bool,
    /// Also write the guest's memory and device state (a full snapshot: `state`,
    /// `memory`) into this absolute directory (created if missing), in the
    /// checkpoint's pause. It leaves the VM's snapshots alone: no diff snapshot
    /// counts from it, and the dirty-page tracking they use is not restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub memory_dir: Option<PathBuf>,
}

impl CheckpointRequest {
    /// Checks ids and the staging path, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_checkpoint("checkpoint", &self.checkpoint)?;
        if let Some(p) = &self.previous {
            validate_checkpoint("previous", p)?;
        }
        for (field, dir) in [
            ("staging_dir", Some(&self.staging_dir)),
            ("memory_dir", self.memory_dir.as_ref()),
        ] {
            if let Some(d) = dir.filter(|d| !d.is_absolute()) {
                return Err(FieldError::new(
                    field,
                    format!("'{}' is not an absolute path", d.display()),
                ));
            }
        }
        Ok(())
    }
}

/// One disk at a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiskCheckpoint {
    /// Disk index, in configuration order.
    pub index: u32,
    /// Disk size in bytes.
    pub size: u64,
    /// The sparse copy of what must be read: every allocated block when `full`, else
    /// exactly the blocks marked in `dirty_words`.
    #[schema(value_type = String)]
    pub staged: PathBuf,
    /// Whether every allocated block was copied (no usable bitmap, or asked for).
    pub full: bool,
    /// Why the bitmap could not be used, when `full` and it was not asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_reason: Option<String>,
    /// Bytes per bitmap bit ([`BACKUP_BLOCK`]).
    pub block_size: u64,
    /// Bits covering the disk: block `i` is bit `i % 64` of word `i / 64`; set =
    /// written since `previous`. Meaningful when not `full`.
    pub dirty_words: Vec<u64>,
    /// Blocks marked dirty.
    pub dirty_blocks: u64,
    /// Bytes copied into `staged` while the VM was paused.
    pub bytes_copied: u64,
}

/// What a checkpoint did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointReport {
    pub checkpoint: String,
    pub disks: Vec<DiskCheckpoint>,
    /// How long the guest was paused for the copy, ms.
    pub paused_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_requests_name_the_bad_field() {
        let ok = CheckpointRequest {
            checkpoint: "b-1".into(),
            previous: Some("b-0".into()),
            staging_dir: "/s".into(),
            full: false,
            memory_dir: Some("/s/vm".into()),
        };
        ok.validate().unwrap();
        let mut r = ok.clone();
        r.checkpoint = "../x".into();
        assert_eq!(r.validate().unwrap_err().field, "checkpoint");
        let mut r = ok.clone();
        r.previous = Some(String::new());
        assert_eq!(r.validate().unwrap_err().field, "previous");
        let mut r = ok.clone();
        r.memory_dir = Some("vm".into());
        assert_eq!(r.validate().unwrap_err().field, "memory_dir");
        let mut r = ok;
        r.staging_dir = "rel".into();
        assert_eq!(r.validate().unwrap_err().field, "staging_dir");
        assert!(serde_json::from_str::<CheckpointRequest>(
            r#"{"checkpoint":"a","staging_dir":"/s","bogus":1}"#
        )
        .is_err());
    }
}
