//! Snapshots hostd keeps apart from any VM (`DATA/snapshots/<id>`): a crash-consistent
//! copy of a running VM (memory, device state and its writable disks, taken while
//! the VM is paused, the disks by reflink), which survive the VM, restore into
//! another VM here (eagerly, lazily or as a copy-on-write clone), and which another
//! hostd pulls file by file (`GET /v1/snapshots/{id}/files/{file}`).

use nova_http::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::names::validate_id;
use crate::spec::VmSpec;
use crate::vm::CloneMethod;

/// `POST /v1/snapshots`: snapshot VM `vm_id` into the host's snapshot store as `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TakeSnapshot {
    /// The stored snapshot's id (a directory name).
    pub id: String,
    pub vm_id: String,
}

impl TakeSnapshot {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_id("id", &self.id)?;
        validate_id("vm_id", &self.vm_id)
    }
}

/// One writable disk a stored snapshot holds (`disk<index>.raw`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotDisk {
    /// The VM disk's position (the spec's order; the seed disk is last).
    pub index: usize,
    pub size_bytes: u64,
    /// How its point in time was taken (always `reflink` during a pause).
    pub method: CloneMethod,
}

/// A snapshot in the host's store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredSnapshot {
    pub id: String,
    /// The VM it was taken of.
    pub vm_id: String,
    /// That VM's spec (a restore or clone needs as much memory and as many disks).
    pub spec: VmSpec,
    pub disks: Vec<SnapshotDisk>,
    /// Bytes the snapshot's files take on disk (sparse files count what is allocated).
    pub stored_bytes: u64,
    /// How long the VM was paused for it, ms (0 for a copy fetched from a peer).
    pub paused_ms: f64,
    pub created_at_ms: u64,
}

impl StoredSnapshot {
    /// The files a peer fetches, in order: the state, the memory, every disk, the
    /// description last (its presence marks a complete copy).
    pub fn files(&self) -> Vec<String> {
        let mut f = vec!["state".to_string(), "memory".to_string()];
        f.extend(self.disks.iter().map(|d| disk_file(d.index)));
        f.push(META_FILE.to_string());
        f
    }
}

/// The description file in a stored snapshot's directory.
pub const META_FILE: &str = "snapshot.json";

/// The file name of disk `index` in a stored snapshot.
pub fn disk_file(index: usize) -> String {
    format!("disk{index}.raw")
}

/// Whether `name` is a file a stored snapshot may hold (what the file route serves).
pub fn is_snapshot_file(name: &str) -> bool {
    if matches!(name, "state" | "memory" | META_FILE) {
        return true;
    }
    name.strip_prefix("disk")
        .and_then(|r| r.strip_suffix(".raw"))
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| n < crate::spec::MAX_DISKS + 1 && disk_file(n) == name)
}

/// `GET /v1/snapshots`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredSnapshotList {
    pub snapshots: Vec<StoredSnapshot>,
}

/// `POST /v1/snapshots/{id}/fetch`: copy stored snapshot `id` from the hostd at
/// `from_url` (which expects `token`) into this host's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchSnapshot {
    pub from_url: String,
    pub token: String,
}

impl FetchSnapshot {
    pub fn validate(&self) -> Result<(), FieldError> {
        if !(self.from_url.starts_with("http://") || self.from_url.starts_with("https://"))
            || self.from_url.len() > 512
        {
            return Err(FieldError::new("from_url", "not an http(s) URL"));
        }
        if self.token.is_empty() || self.token.len() > 512 || self.token.contains(char::is_control)
        {
            return Err(FieldError::new("token", "empty, too long or not printable"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stored_snapshots_own_files_are_served() {
        for ok in ["state", "memory", "snapshot.json", "disk0.raw", "disk8.raw"] {
            assert!(is_snapshot_file(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../state",
            "disk.raw",
            "disk01.raw",
            "disk9.raw",
            "disk-1.raw",
            "vm.json",
            "memory/..",
        ] {
            assert!(!is_snapshot_file(bad), "{bad}");
        }
    }
}
