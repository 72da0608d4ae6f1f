//! A virtio device's saved state, whichever device it is: what a snapshot stores and a
//! migration carries beside the transport's registers and queue positions.

use serde::{Deserialize, Serialize};

use super::block::persist::BlockState;
use super::net::persist::NetState;

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
