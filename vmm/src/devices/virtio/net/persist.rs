//! What a virtio-net device carries across a snapshot or a migration.

use serde::{Deserialize, Serialize};

/// What a net device carries across a snapshot or migration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NetState {
    pub tap: String,
    /// The MAC the guest knows; the destination keeps it whatever its config says.
    pub mac: [u8; 6],
}
