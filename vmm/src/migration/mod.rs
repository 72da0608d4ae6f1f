//! Live migration over TCP: pre-copy, post-copy (userfaultfd) and hybrid, one protocol.
//!
//! The source's [`sender`] runs on a thread of its own, started by `PUT /v1/migration`
//! and reported by `GET /v1/migration`; the destination's [`receiver`] is what
//! `nova-vmm run --incoming tcp:ADDR:PORT` does instead of booting.
//!
//! The rule: exactly one side runs the VM. Until the source sends `Switch`, any
//! failure (the destination dies, the connection drops, the stream is corrupt, the
//! user cancels) resumes the VM on the source as it was. The destination runs the VM
//! only after `Switch`. Post-copy moves the switch early: from then on the destination
//! runs with pages still on the source, so losing the source loses the VM; the window
//! is as short as pushing the remaining pages takes, and pre-copy rounds (hybrid) shrink it.

pub mod postcopy;
pub mod protocol;
pub mod receiver;
pub mod sender;

use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

pub use nova_vmm_api::migration::{
    Compression, MigrationMode as Mode, MigrationRequest, MigrationState as State, MigrationStatus,
    PageCounts, PostcopyStats, Round,
};

/// A migration in progress (or finished) on the source.
pub struct Migration {
    pub status: Mutex<MigrationStatus>,
    pub cancel: AtomicBool,
    /// Someone read the final result (the process may exit).
    pub result_read: AtomicBool,
}

impl Migration {
    pub fn new(mode: Mode) -> Self {
        Migration {
            status: Mutex::new(MigrationStatus::started(mode)),
            cancel: AtomicBool::new(false),
            result_read: AtomicBool::new(false),
        }
    }

    pub fn snapshot(&self) -> MigrationStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut MigrationStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Why a migration stopped early.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    #[error("connecting to {addr}: {err}")]
    Connect { addr: String, err: std::io::Error },
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

impl From<crate::vm::VmError> for MigrationError {
    fn from(e: crate::vm::VmError) -> Self {
        MigrationError::Vm(e.to_string())
    }
}
