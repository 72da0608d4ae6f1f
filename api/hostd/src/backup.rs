//! Backup jobs (`POST /v1/backup-jobs`, `GET /v1/backup-jobs/{id}`): a backup store
//! (a directory under one of hostd's `--backup-root`s, or an S3-compatible bucket) and
//! one operation on it: back a VM's disks up (incremental from the VMM's bitmap),
//! restore a backup to a new VM here, verify a backup, collect garbage, delete backups.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{validate_id, FieldError, VmSpec};

/// Longest backup id.
pub const MAX_BACKUP_ID: usize = 128;

/// Checks a backup id: 1..=128 of `[a-z0-9._-]`, not dots only (it names an object).
pub fn validate_backup_id(field: &str, id: &str) -> Result<(), FieldError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_BACKUP_ID
        && !id.bytes().all(|b| b == b'.')
        && id
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "{:?} must be 1-{MAX_BACKUP_ID} of [a-z0-9._-]",
                id.chars().take(140).collect::<String>()
            ),
        ))
    }
}

/// Where a backup store lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreLocation {
    /// A directory (on storage the hosts share); must be under a `--backup-root`.
    Dir { path: String },
    /// An S3-compatible bucket (AWS, MinIO, Ceph RGW).
    S3 {
        /// `http(s)://host:port`; AWS itself when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        bucket: String,
        #[serde(default = "default_region")]
        region: String,
        access_key_id: String,
        secret_access_key: String,
        /// Allow a plain-HTTP endpoint.
        #[serde(default)]
        allow_http: bool,
    },
}

fn default_region() -> String {
    "us-east-1".into()
}

/// The hash naming chunks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChunkHash {
    #[default]
    Blake3,
    Sha256,
}

/// How disks are split into chunks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChunkingKind {
    /// Fixed 4 MiB, aligned with the VMM's dirty bitmap (incremental backups).
    #[default]
    Fixed,
    /// Content-defined (FastCDC 1/4/8 MiB).
    Cdc,
}

/// A backup store and how it makes chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreSpec {
    pub location: StoreLocation,
    #[serde(default)]
    pub hash: ChunkHash,
    #[serde(default)]
    pub chunking: ChunkingKind,
    /// The user's 32-byte key as 64 hex digits: chunks are encrypted and the store
    /// sees no plaintext. Absent: unencrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key: Option<String>,
}

impl StoreSpec {
    /// Checks what can be checked without the host, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        match &self.location {
            StoreLocation::Dir { path } => {
                if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
                    return Err(FieldError::new(
                        "store.location.path",
                        format!("'{path}' is not an absolute path without '..'"),
                    ));
                }
            }
            StoreLocation::S3 {
                bucket, endpoint, ..
            } => {
                if bucket.is_empty() || bucket.len() > 63 {
                    return Err(FieldError::new(
                        "store.location.bucket",
                        "must be 1-63 characters",
                    ));
                }
                if let Some(e) = endpoint {
                    if !(e.starts_with("http://") || e.starts_with("https://")) {
                        return Err(FieldError::new(
                            "store.location.endpoint",
                            format!("'{e}' is not an http(s) URL"),
                        ));
                    }
                }
            }
        }
        if let Some(k) = &self.encryption_key {
            if k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(FieldError::new(
                    "store.encryption_key",
                    "must be 64 hex digits (a 32-byte key)",
                ));
            }
        }
        Ok(())
    }
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobOp {
    /// Back up a VM of this host: its disks, crash-consistent (a checkpoint in a
    /// short pause), reading only what changed since `previous` when the VMM's
    /// bitmap allows.
    Backup {
        vm_id: String,
        backup_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<String>,
        /// Also the guest's memory and device state (`memory`, `state`), written in
        /// the same pause as the disks' checkpoint: a restore resumes the guest where
        /// it was. Only of a running VM.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        memory: bool,
    },
    /// Restore a backup to a new VM on this host: `spec` with its disks replaced by
    /// the backup's (in the same order; `read_only` kept from `spec` where given).
    /// A backup holding memory resumes the guest from it when `spec.start`.
    Restore {
        backup_id: String,
        spec: Box<VmSpec>,
    },
    /// Re-hash every chunk of a backup; damaged chunks are recorded in its manifest.
    Verify { backup_id: String },
    /// Delete chunks no backup references, older than `grace_s`.
    Gc {
        #[serde(default = "default_grace_s")]
        grace_s: u64,
    },
    /// Delete backups (their manifests; chunks go at the next GC).
    Delete { backup_ids: Vec<String> },
}

fn default_grace_s() -> u64 {
    86_400
}

/// `POST /v1/backup-jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub store: StoreSpec,
    pub op: JobOp,
}

impl JobRequest {
    /// Checks the store and the operation, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.store.validate()?;
        match &self.op {
            JobOp::Backup {
                vm_id,
                backup_id,
                previous,
                memory: _,
            } => {
                validate_id("op.vm_id", vm_id)?;
                validate_backup_id("op.backup_id", backup_id)?;
                if let Some(p) = previous {
                    validate_backup_id("op.previous", p)?;
                }
            }
            JobOp::Restore { backup_id, spec } => {
                validate_backup_id("op.backup_id", backup_id)?;
                spec.validate()
                    .map_err(|e| FieldError::new(format!("op.spec.{}", e.field), e.problem))?;
            }
            JobOp::Verify { backup_id } => validate_backup_id("op.backup_id", backup_id)?,
            JobOp::Gc { .. } => {}
            JobOp::Delete { backup_ids } => {
                for (i, b) in backup_ids.iter().enumerate() {
                    validate_backup_id(&format!("op.backup_ids[{i}]"), b)?;
                }
            }
        }
        Ok(())
    }
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

/// One backed-up file (a disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileReport {
    /// `disk<i>`.
    pub name: String,
    pub size: u64,
    /// Whether the whole disk was read, and why.
    pub full_read: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_read_reason: Option<String>,
    pub bytes_read: u64,
    pub bytes_stored: u64,
    pub chunks_new: u64,
    pub chunks_reused: u64,
    pub holes: u64,
}

/// What a backup did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackupReport {
    pub backup_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    pub created_unix: u64,
    /// How long the guest was paused for the checkpoint (0 for a stopped VM).
    pub paused_ms: f64,
    pub files: Vec<FileReport>,
    pub bytes_read: u64,
    pub bytes_stored: u64,
}

/// What a restore made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestoreReport {
    /// The new VM's id on this host.
    pub vm_id: String,
    pub bytes_written: u64,
    /// The guest resumed from the backup's memory (rather than booting, or staying
    /// stopped).
    #[serde(default)]
    pub resumed: bool,
}

/// A damaged or missing chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DamagedChunk {
    pub chunk: String,
    pub reason: String,
}

/// What verify found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifyReport {
    pub backup_id: String,
    pub chunks_checked: u64,
    pub damaged: Vec<DamagedChunk>,
}

/// What GC did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcReport {
    pub referenced: u64,
    pub removed: u64,
    pub removed_bytes: u64,
    pub kept_in_grace: u64,
}

/// A finished job's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum JobResult {
    Backup(BackupReport),
    Restore(RestoreReport),
    Verify(VerifyReport),
    Gc(GcReport),
    Delete { deleted: Vec<String> },
}

/// A backup job, running or done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackupJob {
    pub id: String,
    pub state: JobState,
    /// What the job is doing now (`checkpoint`, `disk0`, ...).
    pub phase: String,
    /// Progress: bytes read (backup), written (restore) or chunks checked (verify).
    pub done: u64,
    /// What `done` goes up to, when known (0: unknown).
    pub total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_req(path: &str) -> JobRequest {
        JobRequest {
            store: StoreSpec {
                location: StoreLocation::Dir { path: path.into() },
                hash: ChunkHash::Blake3,
                chunking: ChunkingKind::Fixed,
                encryption_key: None,
            },
            op: JobOp::Verify {
                backup_id: "b-1".into(),
            },
        }
    }

    #[test]
    fn job_requests_name_the_bad_field() {
        dir_req("/srv/backups").validate().unwrap();
        assert_eq!(
            dir_req("/srv/../etc").validate().unwrap_err().field,
            "store.location.path"
        );
        assert_eq!(
            dir_req("rel").validate().unwrap_err().field,
            "store.location.path"
        );
        let mut r = dir_req("/s");
        r.store.encryption_key = Some("zz".into());
        assert_eq!(r.validate().unwrap_err().field, "store.encryption_key");
        let mut r = dir_req("/s");
        r.op = JobOp::Backup {
            vm_id: "../x".into(),
            backup_id: "b".into(),
            previous: None,
            memory: false,
        };
        assert_eq!(r.validate().unwrap_err().field, "op.vm_id");
        r.op = JobOp::Delete {
            backup_ids: vec!["ok".into(), "Bad/".into()],
        };
        assert_eq!(r.validate().unwrap_err().field, "op.backup_ids[1]");
        let e = serde_json::from_str::<JobRequest>(
            r#"{"store":{"location":{"kind":"dir","path":"/s"}},"op":{"op":"gc","x":1}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains('x'), "{e}");
        let gc: JobRequest = serde_json::from_str(
            r#"{"store":{"location":{"kind":"dir","path":"/s"}},"op":{"op":"gc"}}"#,
        )
        .unwrap();
        assert_eq!(gc.op, JobOp::Gc { grace_s: 86_400 });
    }
}
