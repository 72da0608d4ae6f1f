//! What a virtio-blk device is opened from (its config) and carries across a snapshot
//! or a migration (its state).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A disk as the VM's configuration describes it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    /// Raw disk image (or block device); its size must be a multiple of 512 bytes.
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
    /// Serial number the guest reads with GET_ID (at most 20 bytes).
    #[serde(default)]
    pub id: String,
}

/// What a block device carries across a snapshot or migration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BlockState {
    pub config: BlockConfig,
    pub capacity_sectors: u64,
}
