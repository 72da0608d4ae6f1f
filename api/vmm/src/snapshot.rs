//! Snapshot requests and what a snapshot took (`PUT /v1/snapshot`).

use std::path::PathBuf;

use nova_http::FieldError;
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

impl SnapshotRequest {
    /// Checks the path, naming the field: it must be absolute (a relative one would
    /// land wherever the VMM happens to run).
    pub fn validate(&self) -> Result<(), FieldError> {
        if !self.path.is_absolute() {
            return Err(FieldError::new(
                "path",
                format!("'{}' is not an absolute path", self.path.display()),
            ));
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_snapshot_path_is_refused_by_name() {
        let req: SnapshotRequest = serde_json::from_str(r#"{"path":"snaps/a"}"#).unwrap();
        assert_eq!(req.validate().unwrap_err().field, "path");
        let req: SnapshotRequest = serde_json::from_str(r#"{"path":"/snaps/a"}"#).unwrap();
        assert!(req.validate().is_ok() && !req.diff);
    }
}
