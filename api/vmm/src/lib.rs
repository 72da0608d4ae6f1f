//! nova-vmm-api: the contract of nova-vmm's unix-socket API. Types with their
//! defaults and limits (written once, here) and, behind the `client` feature, a typed
//! client. The VMM serves these types; hostd, `nova-vmm-ctl`, tests and benches send
//! and read them. Nothing here knows how a VM runs.
//!
//! Routes: `GET /v1/vm` ([`VmInfo`]), `PUT /v1/vm/pause|resume|shutdown`,
//! `PUT /v1/vm/stop` ([`StopRequest`] -> [`StopReport`]: the ACPI power button),
//! `PUT /v1/snapshot` ([`SnapshotRequest`] -> [`SnapshotReport`]),
//! `PUT|GET|DELETE /v1/migration` ([`MigrationRequest`] -> [`MigrationStatus`]),
//! `PUT /v1/backup/checkpoint` ([`CheckpointRequest`] -> [`CheckpointReport`]).
//! Errors are `{"error": "...", "field": "..."}` (`nova_http::ErrorBody`; `field`
//! names the request value that is wrong, when one is).

pub mod backup;
pub mod config;
pub mod migration;
pub mod snapshot;
pub mod vm;

#[cfg(feature = "client")]
mod client;

pub use backup::{CheckpointReport, CheckpointRequest, DiskCheckpoint, BACKUP_BLOCK};
#[cfg(feature = "client")]
pub use client::VmmClient;
pub use config::{DiskConfig, NetConfig, VmConfig};
pub use migration::{
    BlockCounts, Compression, IncomingCredential, MigrationKind, MigrationMode, MigrationParams,
    MigrationPeer, MigrationRequest, MigrationState, MigrationStatus, PageCounts, PostcopyStats,
    Round,
};
pub use nova_http::{ErrorBody, FieldError};
pub use snapshot::{SnapshotReport, SnapshotRequest};
pub use vm::{
    BlockCounters, Counters, DeviceCounters, KvmKind, NetCounters, RunState, StopReport,
    StopRequest, VmInfo,
};
