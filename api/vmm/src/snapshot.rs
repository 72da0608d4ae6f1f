//! Snapshot requests and what a snapshot took (`PUT /v1/snapshot`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `PUT /v1/snapshot`: write the VM's state and memory into `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// Absolute directory, created if missing.
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// Only the pages written since this VM's previous snapshot.
    #[serde(default)]
    pub diff: bool,
}

/// What a snapshot took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotReport {
    #[schema(value_type = String)]
    pub path: PathBuf,
    pub diff: bool,
    pub pages_written: u64,
    pub bytes_written: u64,
    pub paused_ms: f64,
}
