//! The event stream: every state change (VM, host, operation) is published here and
//! fanned out to WebSocket subscribers of `/v1/events`, filtered by tenant.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::model::now_ms;

/// One state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Increases by one per event on this controller.
    pub seq: u64,
    pub at_ms: u64,
    /// `vm.created`, `vm.placed`, `vm.state`, `vm.deleted`, `host.registered`, `host.ready`,
    /// `host.down`, `host.cordoned`, `operation.progress`, `operation.done`, ...
    pub kind: String,
    /// Owner of the object (`system` for hosts).
    pub tenant: String,
    /// The object's id.
    pub id: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// The publisher; cheap to clone.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    seq: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Events {
            tx,
            seq: Default::default(),
        }
    }

    /// Publishes a change (dropped when nobody listens).
    pub fn publish(&self, kind: &str, tenant: &str, id: &str, data: serde_json::Value) {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        tracing::debug!(kind, id, "event");
        let _ = self.tx.send(Event {
            seq,
            at_ms: now_ms(),
            kind: kind.into(),
            tenant: tenant.into(),
            id: id.into(),
            data,
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
