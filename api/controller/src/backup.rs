//! Backups in the cluster: backup stores (where hosts write chunks), backups of VMs
//! (tenant-scoped records of what a store holds), their schedules with retention,
//! and the bodies of create, restore, prune and GC. The chunk store itself is
//! `nova-backup`'s; hosts run the jobs (`nova_hostd_api::JobRequest`).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use nova_hostd_api::{
    BackupReport, ChunkHash, ChunkingKind, DamagedChunk, FileReport, GcReport, StoreLocation,
    VerifyReport,
};

use crate::FieldError;

/// A backup store the cluster's hosts write to (system admins configure them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupStore {
    /// `[a-z0-9-]`, 1-63.
    pub name: String,
    pub location: StoreLocation,
    #[serde(default)]
    pub hash: ChunkHash,
    #[serde(default)]
    pub chunking: ChunkingKind,
    /// 64 hex digits (a 32-byte key) to encrypt chunks; answered as `"redacted"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key: Option<String>,
    #[serde(default)]
    pub created_at_ms: u64,
}

/// What a backup store answers: secrets (S3 secret key, encryption key) redacted.
pub const REDACTED: &str = "redacted";

impl BackupStore {
    /// Checks the name and what hostd will check, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_name("name", &self.name)?;
        nova_hostd_api::StoreSpec {
            location: self.location.clone(),
            hash: self.hash,
            chunking: self.chunking,
            encryption_key: self.encryption_key.clone(),
        }
        .validate()
        .map_err(|e| FieldError::new(e.field.trim_start_matches("store."), e.problem))
    }

    /// The store as callers see it: secrets replaced by [`REDACTED`].
    pub fn redacted(&self) -> BackupStore {
        let mut s = self.clone();
        if let StoreLocation::S3 {
            secret_access_key, ..
        } = &mut s.location
        {
            *secret_access_key = REDACTED.into();
        }
        if s.encryption_key.is_some() {
            s.encryption_key = Some(REDACTED.into());
        }
        s
    }
}

/// Checks a store or schedule name: `[a-z0-9-]`, 1-63, not starting with `-`.
pub fn validate_name(field: &str, s: &str) -> Result<(), FieldError> {
    if s.is_empty()
        || s.len() > 63
        || s.starts_with('-')
        || !s
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
    {
        return Err(FieldError::new(
            field,
            "must be 1-63 of [a-z0-9-], not starting with -",
        ));
    }
    Ok(())
}

/// Where a backup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupState {
    /// Being written by its VM's host.
    Running,
    /// Complete in its store.
    Completed,
    /// The job failed: nothing usable was stored.
    Failed,
}

/// One backup of a VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Backup {
    /// Also the id in its store.
    pub id: String,
    pub tenant: String,
    pub vm_id: String,
    pub vm_name: String,
    pub store: String,
    pub state: BackupState,
    /// The backup this one is incremental to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// The VM's spec when it was backed up (what a restore starts from).
    pub spec: crate::VmSpec,
    /// It holds the guest's memory and device state too: a restore that starts the
    /// VM resumes the guest where it was.
    #[serde(default)]
    pub memory: bool,
    /// The host that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// What the host read and stored, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<BackupReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Verify found damaged or missing chunks (restore refuses it).
    #[serde(default)]
    pub damaged: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged_chunks: Vec<DamagedChunk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at_ms: Option<u64>,
    pub created_at_ms: u64,
    /// The operation that runs it (while it runs: a restarted controller finishes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// The host's job writing it, once started (a restarted controller follows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default)]
    pub revision: u64,
}

/// `POST /v1/vms/{id}/backups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupBody {
    /// The backup store's name.
    pub store: String,
    /// Read the whole disk even if the VMM's bitmap would do.
    #[serde(default)]
    pub full: bool,
    /// Also the guest's memory and device state, taken in the same pause as the
    /// disks' copy point (a running VM only): a restore resumes the guest where it was.
    #[serde(default)]
    pub memory: bool,
}

/// `POST /v1/backups/{id}/restore`: a new VM from the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    /// The new VM's name (unique in the tenant).
    pub name: String,
    /// The host to restore on (system tenant only); the first ready host otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Start it once restored (default true).
    #[serde(default = "yes")]
    pub start: bool,
}

fn yes() -> bool {
    true
}

/// How many backups to keep: the newest `keep_last`, plus the newest of each of the
/// last `keep_hourly` hours, `keep_daily` days and `keep_weekly` ISO weeks (UTC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRetention {
    #[serde(default)]
    pub keep_last: u32,
    #[serde(default)]
    pub keep_hourly: u32,
    #[serde(default)]
    pub keep_daily: u32,
    #[serde(default)]
    pub keep_weekly: u32,
}

impl BackupRetention {
    /// A policy that keeps nothing would delete every backup: refused.
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        if self.keep_last + self.keep_hourly + self.keep_daily + self.keep_weekly == 0 {
            return Err(FieldError::new(
                field,
                "keeps nothing: set at least one keep_*",
            ));
        }
        Ok(())
    }
}

/// `POST /v1/vms/{id}/backups/prune`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneBody {
    pub retention: BackupRetention,
}

/// What a prune (or a delete) did: the backups deleted and those kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PruneResult {
    pub deleted: Vec<String>,
    pub kept: Vec<String>,
}

/// `POST /v1/backup-stores/{name}/gc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GcBody {
    /// Unreferenced chunks younger than this stay (a backup may be about to use them).
    #[serde(default = "day")]
    pub grace_s: u64,
}

fn day() -> u64 {
    86_400
}

/// A VM's backup schedule (`PUT /v1/vms/{id}/backup-schedule`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupSchedule {
    pub store: String,
    /// Seconds between backups (1 to 31 days' worth).
    pub every_s: u64,
    /// Applied after each scheduled backup.
    pub retention: BackupRetention,
    /// Each backup holds the guest's memory too (see [`BackupBody::memory`]).
    #[serde(default)]
    pub memory: bool,
    /// Set by the controller.
    #[serde(default)]
    pub vm_id: String,
    #[serde(default)]
    pub tenant: String,
    #[serde(default)]
    pub last_run_ms: u64,
    #[serde(default)]
    pub revision: u64,
}

impl BackupSchedule {
    /// Checks the interval and the retention, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_name("store", &self.store)?;
        if self.every_s == 0 || self.every_s > 31 * 86_400 {
            return Err(FieldError::new("every_s", "must be 1 to 2678400"));
        }
        self.retention.validate("retention")
    }
}

/// `GET /v1/backups?vm=`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BackupListQuery {
    /// Only this VM's backups.
    pub vm: Option<String>,
    pub limit: Option<u32>,
    #[serde(rename = "continue")]
    #[param(rename = "continue")]
    pub continue_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_name_the_bad_field_and_answer_without_secrets() {
        let s: BackupStore = serde_json::from_str(
            r#"{"name":"s3","location":{"kind":"s3","endpoint":"http://127.0.0.1:1","bucket":"b",
                "access_key_id":"a","secret_access_key":"SECRET"},
                "encryption_key":"0000000000000000000000000000000000000000000000000000000000000000"}"#,
        )
        .unwrap();
        s.validate().unwrap();
        let shown = serde_json::to_string(&s.redacted()).unwrap();
        assert!(
            !shown.contains("SECRET") && !shown.contains("00000000"),
            "{shown}"
        );
        let mut bad = s.clone();
        bad.name = "Bad".into();
        assert_eq!(bad.validate().unwrap_err().field, "name");
        let mut bad = s;
        bad.encryption_key = Some("x".into());
        assert_eq!(bad.validate().unwrap_err().field, "encryption_key");
        let r = BackupRetention::default();
        assert_eq!(r.validate("retention").unwrap_err().field, "retention");
    }
}
