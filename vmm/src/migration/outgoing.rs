//! The source's record of its migration: the latest one's status (what
//! `GET /v1/migration` reports), its cancel flag (which also cuts its connections
//! until the switch), and whether its final result has been read (the process exits
//! once the VM has moved, but not before that). One migration runs at a time: the
//! [`Slot`] refuses a second.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::error::MigrationError;

use nova_vmm_api::{MigrationMode, MigrationState, MigrationStatus};

/// A migration in progress (or finished) on the source.
pub struct Outgoing {
    status: Mutex<MigrationStatus>,
    cancel: AtomicBool,
    result_read: AtomicBool,
    links: Mutex<Links>,
}

/// The migration's connections as a cancel sees them: handles on each socket until
/// the switch (a cancel shuts them down, so a sender blocked on a dead link fails at
/// once instead of after the peer timeout), none after it (the destination owns the
/// VM then, and its connections must live).
#[derive(Default)]
struct Links {
    sockets: Vec<TcpStream>,
    switched: bool,
}

impl Outgoing {
    fn new(mode: MigrationMode) -> Self {
        Outgoing {
            status: Mutex::new(MigrationStatus::started(mode)),
            cancel: AtomicBool::new(false),
            result_read: AtomicBool::new(false),
            links: Mutex::new(Links::default()),
        }
    }

    fn links(&self) -> std::sync::MutexGuard<'_, Links> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Its status now.
    pub fn status(&self) -> MigrationStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes its status (the sender, as it goes).
    pub fn update(&self, f: impl FnOnce(&mut MigrationStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Asks the sender to stop before the switch (`DELETE /v1/migration`): before it,
    /// its connections are shut down, so a sender stuck writing to a dead link fails
    /// now and resumes the VM here; after it, nothing changes.
    pub fn cancel(&self) {
        let links = self.links();
        self.cancel.store(true, Ordering::SeqCst);
        if !links.switched {
            for s in &links.sockets {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Lets a cancel cut `socket`, one of this migration's connections, until the
    /// switch (a connection made after a cancel is cut at once).
    pub fn watch(&self, socket: &TcpStream) -> Result<(), MigrationError> {
        let mut links = self.links();
        let handle = socket
            .try_clone()
            .map_err(|e| MigrationError::Vm(format!("a handle on the connection: {e}")))?;
        if self.is_cancelled() {
            let _ = handle.shutdown(Shutdown::Both);
            return Err(MigrationError::Cancelled);
        }
        links.sockets.push(handle);
        Ok(())
    }

    /// The switch is about to be sent: fails with `Cancelled` if a cancel came first;
    /// otherwise from now on a cancel changes nothing.
    pub fn enter_switch(&self) -> Result<(), MigrationError> {
        let mut links = self.links();
        if self.is_cancelled() {
            return Err(MigrationError::Cancelled);
        }
        links.switched = true;
        links.sockets.clear();
        Ok(())
    }

    /// The sender is done with its connections: the handles a cancel would cut are
    /// closed too, so that the peer sees them end.
    pub fn release_links(&self) {
        self.links().sockets.clear();
    }

    /// Whether [`cancel`](Self::cancel) was asked.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Someone received the final status: the process may exit now.
    pub fn mark_result_read(&self) {
        self.result_read.store(true, Ordering::SeqCst);
    }

    /// Whether the final status has been received.
    pub fn result_read(&self) -> bool {
        self.result_read.load(Ordering::SeqCst)
    }
}

/// The VM's latest migration, running or finished; and whether this VMM may
/// migrate in plaintext (`--insecure`).
#[derive(Default)]
pub struct Slot(Mutex<Option<Arc<Outgoing>>>, bool);

impl Slot {
    /// A slot for a VMM run with `--insecure` (`true`): migrations without a peer
    /// credential go in plaintext; otherwise they are refused.
    pub fn new(insecure: bool) -> Self {
        Slot(Mutex::new(None), insecure)
    }

    /// Whether plaintext migrations are allowed.
    pub fn insecure(&self) -> bool {
        self.1
    }

    /// The latest migration, if one was started.
    pub fn latest(&self) -> Option<Arc<Outgoing>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A record for a new migration in `mode`, now the latest; `None` while another
    /// is running.
    pub fn claim(&self, mode: MigrationMode) -> Option<Arc<Outgoing>> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if slot
            .as_ref()
            .is_some_and(|m| m.status().state == MigrationState::Running)
        {
            return None;
        }
        let m = Arc::new(Outgoing::new(mode));
        *slot = Some(m.clone());
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_migration_is_refused_while_the_first_runs() {
        let slot = Slot::default();
        assert!(slot.latest().is_none());
        let first = slot.claim(MigrationMode::Precopy).unwrap();
        assert!(slot.claim(MigrationMode::Hybrid).is_none());
        first.update(|s| s.state = MigrationState::Failed);
        let second = slot.claim(MigrationMode::Hybrid).unwrap();
        assert_eq!(slot.latest().unwrap().status().mode, MigrationMode::Hybrid);
        assert!(!second.is_cancelled());
        second.cancel();
        assert!(slot.latest().unwrap().is_cancelled());
    }
}
