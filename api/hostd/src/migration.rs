//! Live migration between hosts: the request that starts one (`to` and the VMM's
//! `MigrationParams`), its status, and the destination-side calls between two hostd.

use nova_http::FieldError;
use nova_vmm_api::{MigrationKind, MigrationMode, MigrationParams};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::spec::VmSpec;

/// `GET /v1/migrations`: under way and finished, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MigrationList {
    pub migrations: Vec<MigrationStatus>,
}

/// The destination hostd and the token to call it with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationTarget {
    /// `http://host:port` of the destination hostd.
    pub url: String,
    pub token: String,
}

/// `POST /v1/vms/{id}/migrate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    pub to: MigrationTarget,
    /// How the VMM moves the VM (its defaults: hybrid, 5 ms downtime target).
    #[serde(default)]
    pub params: MigrationParams,
    /// Live (the default), warm or cold.
    #[serde(default)]
    pub kind: MigrationKind,
}

impl MigrateRequest {
    pub fn validate(&self) -> Result<(), FieldError> {
        let u = &self.to.url;
        if !(u.starts_with("http://") || u.starts_with("https://"))
            || u.len() > 512
            || u.chars().any(char::is_whitespace)
        {
            return Err(FieldError::new(
                "to.url",
                "must be http(s)://HOST:PORT of the destination hostd",
            ));
        }
        if self.to.token.is_empty() || self.to.token.len() > 4096 {
            return Err(FieldError::new("to.token", "must be 1 to 4096 characters"));
        }
        self.params.validate().map_err(|e| e.under("params"))
    }
}

/// Which way a migration goes from this host's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MigrationDirection {
    Outgoing,
    Incoming,
}

/// Where a migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    /// Asking the destination to get ready / getting ready for the source.
    Preparing,
    /// VMM to VMM stream under way.
    Running,
    /// The VM runs on the destination; the source has let it go.
    Completed,
    /// The VM stays where it was (on the source); see `error`.
    Failed,
    Cancelled,
}

/// A migration's progress and result (`GET /v1/vms/{id}/migration`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MigrationStatus {
    pub id: String,
    pub vm_id: String,
    pub direction: MigrationDirection,
    pub state: MigrationState,
    pub mode: MigrationMode,
    /// Live, warm or cold.
    #[serde(default)]
    pub kind: MigrationKind,
    /// The other hostd's URL (outgoing) or the source's address (incoming).
    pub peer: String,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// Downtime the VMM measured (pause on the source to run on the destination).
    pub downtime_ms: Option<f64>,
    pub total_ms: Option<f64>,
    pub bytes_sent: Option<u64>,
    pub rounds: Option<u64>,
    /// hostd's own time on the switch: from the VMM reporting completion to hostd
    /// having handed the VM over (ms, fractional).
    pub hostd_switch_ms: Option<f64>,
    pub error: Option<String>,
    /// The VMM's last `GET /v1/migration` answer.
    pub vmm: Option<nova_vmm_api::MigrationStatus>,
}

/// `POST /v1/migrations/incoming` (hostd to hostd): get ready to receive a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncomingRequest {
    pub migration_id: String,
    /// The VM's spec, `id` set; kernel/initrd/disk images by `sha256:` (the destination
    /// must have them, see `missing_images` in the answer).
    pub spec: VmSpec,
    /// The VM's NIC MACs (kept across hosts so traffic can follow).
    pub macs: Vec<String>,
    pub mode: MigrationMode,
    /// The source hostd's host id.
    pub source_host: String,
    /// The source's disks, one per `spec.disks` entry, as they travel (absent: every
    /// disk is cloned from its image, as from a source that copies no disk).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<IncomingDisk>,
}

/// How one of the VM's disks reaches the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncomingDisk {
    /// The source disk's exact size, bytes: the destination's must match.
    pub size_bytes: u64,
    /// Bytes the source's disk has allocated: at most what the copy needs of free space.
    pub allocated_bytes: u64,
    /// The VMM copies it in the migration stream (live block migration): the
    /// destination prepares an empty sparse file, not a clone of the image.
    pub copied: bool,
}

impl IncomingRequest {
    /// Checks the disks list against the spec, naming the field.
    pub fn validate_disks(&self) -> Result<(), FieldError> {
        if !self.disks.is_empty() && self.disks.len() != self.spec.disks.len() {
            return Err(FieldError::new(
                "disks",
                format!(
                    "{} entries for {} disks in the spec",
                    self.disks.len(),
                    self.spec.disks.len()
                ),
            ));
        }
        for (i, (d, s)) in self.disks.iter().zip(&self.spec.disks).enumerate() {
            if d.copied && s.shared_path.is_some() {
                return Err(FieldError::new(
                    format!("disks[{i}].copied"),
                    "a shared disk is never copied",
                ));
            }
            if d.copied && s.read_only {
                return Err(FieldError::new(
                    format!("disks[{i}].copied"),
                    "a read-only disk is never copied",
                ));
            }
            if d.size_bytes == 0 || d.size_bytes % 512 != 0 {
                return Err(FieldError::new(
                    format!("disks[{i}].size_bytes"),
                    format!("{} is not a positive multiple of 512", d.size_bytes),
                ));
            }
        }
        Ok(())
    }
}

/// The destination's answer: where the source VMM should send the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IncomingReady {
    pub migration_id: String,
    /// `tcp:IP:PORT` for the source VMM's `PUT /v1/migration {"to"}`.
    pub address: String,
    /// This migration's own credential, for the source VMM's `PUT /v1/migration
    /// {"peer"}`; absent only from a hostd run with `--insecure-migration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<nova_vmm_api::MigrationPeer>,
}

/// `POST /v1/migrations/incoming/{id}/complete` or `/abort` (hostd to hostd).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncomingOutcome {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
