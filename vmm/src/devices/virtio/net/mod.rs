//! virtio-net over a tap device (in progress).

use serde::{Deserialize, Serialize};

/// A network interface as the VM's configuration describes it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    pub tap: String,
    pub mac: Option<[u8; 6]>,
}

/// Why a network interface cannot be attached.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("tap {tap}: {source}")]
    Open { tap: String, source: std::io::Error },
}

/// What a net device carries across a snapshot or migration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NetState {
    pub tap: String,
    pub mac: [u8; 6],
}

/// Net device counters.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub rx_packets: u64,
}

/// A virtio-net device on a tap.
pub struct Net;
