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

use serde::{Deserialize, Serialize};

pub use protocol::Compression;

/// How memory moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Copy while running, switch when the rest fits the downtime target.
    Precopy,
    /// Switch at once; the destination fetches pages on first touch.
    Postcopy,
    /// Pre-copy rounds, then post-copy if they stop converging.
    Hybrid,
}

fn default_mode() -> Mode {
    Mode::Hybrid
}
fn default_downtime_ms() -> u64 {
    5
}
fn default_compress() -> Compression {
    Compression::None
}
fn default_connections() -> u32 {
    1
}

/// The body of `PUT /v1/migration`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationRequest {
    /// `tcp:HOST:PORT` of the destination's `--incoming`.
    pub to: String,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Longest pause the pre-copy phase aims for.
    #[serde(default = "default_downtime_ms")]
    pub downtime_ms: u64,
    /// Cap on the migration's bandwidth, all connections together.
    #[serde(default)]
    pub bandwidth_mbit: Option<u64>,
    #[serde(default = "default_compress")]
    pub compress: Compression,
    /// TCP connections carrying memory in parallel.
    #[serde(default = "default_connections")]
    pub connections: u32,
}

impl MigrationRequest {
    /// Checks values and returns the destination's socket address text.
    pub fn validate(&self) -> Result<&str, String> {
        let addr = self
            .to
            .strip_prefix("tcp:")
            .ok_or("to: must be tcp:HOST:PORT")?;
        if addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err("to: must be tcp:HOST:PORT".into());
        }
        if !(1..=16).contains(&self.connections) {
            return Err(format!(
                "connections: {} is out of range 1..=16",
                self.connections
            ));
        }
        if self.downtime_ms == 0 || self.downtime_ms > 60_000 {
            return Err(format!(
                "downtime_ms: {} is out of range 1..=60000",
                self.downtime_ms
            ));
        }
        if self.bandwidth_mbit == Some(0) {
            return Err("bandwidth_mbit: must be positive".into());
        }
        Ok(addr)
    }
}

/// Where a migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Completed,
    Failed,
    Cancelled,
    /// Contact was lost after `Switch`: the VM is paused here and may run there.
    Unknown,
}

/// Page counts of the result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PageCounts {
    /// Pages sent with their data.
    pub sent: u64,
    /// Pages found zero and sent as such (or not at all in the first pass).
    pub zero: u64,
    /// Pages never touched by the guest, never read.
    pub skipped: u64,
    /// Pages whose data was compressed.
    pub compressed: u64,
}

/// Post-copy figures, reported by the destination.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PostcopyStats {
    pub faults_served: u64,
    pub fault_latency_us_p50: u64,
    pub fault_latency_us_p99: u64,
}

/// One pre-copy round.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: u32,
    pub pages: u64,
    pub ms: f64,
    pub bandwidth_mbit: f64,
    pub dirty_rate_mbit: f64,
}

/// Progress, then the result: what `GET /v1/migration` returns.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationStatus {
    pub state: State,
    pub mode: Mode,
    /// The phase now: handshake, first-pass, dirty-rounds, stop-and-copy, device-state,
    /// switch, post-copy, done.
    pub phase: String,
    pub converged: bool,
    pub switched_to_postcopy: bool,
    pub rounds: u32,
    /// Source vCPUs paused -> destination vCPUs running (see `sender::downtime`).
    pub downtime_ms: f64,
    pub total_ms: f64,
    pub bytes_sent: u64,
    pub pages: PageCounts,
    pub postcopy: PostcopyStats,
    pub round_log: Vec<Round>,
    pub remaining_pages: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

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
            status: Mutex::new(MigrationStatus {
                state: State::Running,
                mode,
                phase: "handshake".into(),
                converged: false,
                switched_to_postcopy: false,
                rounds: 0,
                downtime_ms: 0.0,
                total_ms: 0.0,
                bytes_sent: 0,
                pages: PageCounts::default(),
                postcopy: PostcopyStats::default(),
                round_log: Vec::new(),
                remaining_pages: 0,
                error: None,
            }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_default_to_hybrid_with_a_5ms_target_and_name_bad_fields() {
        let r: MigrationRequest = serde_json::from_str(r#"{"to":"tcp:127.0.0.1:4000"}"#).unwrap();
        assert_eq!(
            (r.mode, r.downtime_ms, r.connections, r.compress),
            (Mode::Hybrid, 5, 1, Compression::None)
        );
        assert_eq!(r.validate().unwrap(), "127.0.0.1:4000");
        let bad = MigrationRequest {
            connections: 0,
            ..r.clone()
        };
        assert!(bad.validate().unwrap_err().starts_with("connections"));
        let bad = MigrationRequest {
            to: "udp:x".into(),
            ..r.clone()
        };
        assert!(bad.validate().unwrap_err().starts_with("to"));
        let e =
            serde_json::from_str::<MigrationRequest>(r#"{"to":"tcp:a:1","speed":3}"#).unwrap_err();
        assert!(e.to_string().contains("speed"));
    }
}
