//! Why a migration stopped early, on either side.

use super::protocol::ProtocolError;
use crate::vm::VmError;

/// Why a migration stopped early.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("connecting to {addr}: {err}")]
    Connect { addr: String, err: std::io::Error },
    #[error("securing the connection to {addr}: {err}")]
    Secure { addr: String, err: String },
    #[error("destination aborted: {0}")]
    Aborted(String),
    #[error("destination sent {0} where {1} was expected")]
    Unexpected(String, &'static str),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Vm(String),
    #[error("guest memory: {0}")]
    Memory(std::io::Error),
}

impl From<VmError> for MigrationError {
    fn from(e: VmError) -> Self {
        MigrationError::Vm(e.to_string())
    }
}
