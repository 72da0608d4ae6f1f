//! A VM as hostd reports it ([`VmInfo`]): its state, disks, NICs, last exit, last
//! migration, its VMM's counters; its snapshots and console.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::migration::MigrationStatus;
use crate::spec::VmSpec;

/// Where a VM is in its life on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Defined, never started (or stopped by request before start).
    Created,
    /// VMM spawned, API socket not answering yet.
    Starting,
    Running,
    Paused,
    /// The VMM exited cleanly (guest poweroff/reset, or stopped by request).
    Stopped,
    /// The VMM failed or was killed; see `exit`.
    Crashed,
    /// Leaving this host (live migration out in progress).
    MigratingOut,
    /// Arriving on this host: the VMM is receiving; not running here until the switch.
    MigratingIn,
    /// hostd cannot read this VM's record (`vm.json`); `exit.reason` says why. Its VMM,
    /// if one runs, is left running; the record file is left as it was.
    Unknown,
}

/// How a VMM ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExitInfo {
    /// Exit code, when hostd was the VMM's parent (not after a reattach).
    pub code: Option<i32>,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// One line: what hostd knows about why.
    pub reason: String,
    /// The last console lines, for a crash report.
    pub console_tail: Vec<String>,
    /// The last lines of the VMM's own log.
    pub log_tail: Vec<String>,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// How a disk was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CloneMethod {
    /// FICLONE: shares blocks with the base image until written.
    Reflink,
    /// Copy of the base's data extents only (SEEK_DATA/SEEK_HOLE); holes stay holes.
    SparseCopy,
    /// A new sparse file.
    Blank,
    /// Not made: an existing file on shared storage (`shared_path`), used in place.
    Shared,
}

/// A VM disk as made on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiskInfo {
    pub path: String,
    /// `sha256:<hex>` of the base image, if cloned.
    pub base: Option<String>,
    pub read_only: bool,
    pub size_bytes: u64,
    pub method: CloneMethod,
}

/// A VM NIC as made on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NicInfo {
    pub mac: String,
    pub tap: String,
}

/// One VM as hostd reports it (`GET /v1/vms/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VmInfo {
    pub id: String,
    pub name: String,
    pub state: VmState,
    /// The spec it was created with (`id` filled in; image refs resolved to `sha256:`).
    pub spec: VmSpec,
    pub pid: Option<u32>,
    /// `pvm` or `hardware`, as the VMM reports it.
    pub kvm: Option<String>,
    pub uptime_ms: Option<u64>,
    pub disks: Vec<DiskInfo>,
    pub nics: Vec<NicInfo>,
    /// Times hostd restarted it under its restart policy.
    pub restarts: u32,
    /// Last exit of its VMM.
    pub exit: Option<ExitInfo>,
    /// The VMM's counters (`vcpu_exits`, `io_exits`, `console_bytes`, ...), when running.
    pub counters: BTreeMap<String, u64>,
    /// The last migration that touched this VM here.
    pub migration: Option<MigrationStatus>,
}

/// `GET /v1/vms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VmList {
    pub vms: Vec<VmInfo>,
}

/// A snapshot taken on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotInfo {
    pub vm_id: String,
    pub name: String,
    pub path: String,
    pub diff: bool,
    pub created_at_ms: u64,
}

/// `GET /v1/vms/{id}/console?lines=N`: the last N lines of the console log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsoleLog {
    pub lines: Vec<String>,
    /// Size of the whole log.
    pub bytes: u64,
}
