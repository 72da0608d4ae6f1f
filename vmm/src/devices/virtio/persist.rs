//! What each virtio device saves in a snapshot and a migration carries, beside the
//! transport's registers and queue positions: one file for all devices, because the
//! device trait (in `device.rs`) names their union, [`DeviceState`], which every
//! device imports; a device's own module holding its part would import its importer.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a device saves in a snapshot and a migration carries, beyond its queues'
/// positions and acked features (which the transport saves).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeviceState {
    Block(BlockState),
    Net(NetState),
}

impl DeviceState {
    /// `block` or `net`.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceState::Block(_) => "block",
            DeviceState::Net(_) => "net",
        }
    }
}

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

/// What a net device carries across a snapshot or migration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NetState {
    pub tap: String,
    /// The MAC the guest knows; the destination keeps it whatever its config says.
    pub mac: [u8; 6],
}
