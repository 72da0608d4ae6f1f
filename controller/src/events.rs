//! The event stream: every state change (VM, host, operation) is published here and
//! fanned out to WebSocket subscribers of `/v1/events`, filtered by tenant.

use tokio::sync::broadcast;

use crate::model::now_ms;

pub use nova_controller_api::Event;

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
