//! The event log: every state change (VM, host, operation) is appended to the store's
//! log under `events/`, so it has a revision, survives restarts, and reaches the
//! subscribers of every controller (under etcd each one watches the shared log).
//! `/v1/events?since=` reads it from a revision on, then follows it.

use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use crate::model::now_ms;
use crate::store::{DynStore, StoreError};

pub use nova_controller_api::Event;

/// The prefix of the event log in the store.
pub const PREFIX: &str = "events/";

/// The publisher and the subscriptions; cheap to clone.
#[derive(Clone)]
pub struct Events {
    store: DynStore,
}

impl Events {
    pub fn new(store: DynStore) -> Self {
        Events { store }
    }

    /// Appends a change to the log. The change itself already happened, so a store
    /// that fails here is logged, not answered.
    pub async fn publish(&self, kind: &str, tenant: &str, id: &str, data: serde_json::Value) {
        let ev = Event {
            revision: 0,
            at_ms: now_ms(),
            kind: kind.into(),
            tenant: tenant.into(),
            id: id.into(),
            data,
        };
        let bytes = match serde_json::to_vec(&ev) {
            Ok(b) => b,
            Err(e) => return tracing::error!(kind, id, "event not encoded: {e}"),
        };
        match self.store.append(PREFIX, bytes).await {
            Ok(rev) => tracing::debug!(kind, id, rev, "event"),
            Err(e) => tracing::error!(kind, id, "event not stored: {e}"),
        }
    }

    /// The events after revision `since` (only new ones when None), then every new
    /// one as it is appended, in revision order.
    pub fn subscribe(&self, since: Option<u64>) -> BoxStream<'static, Result<Event, StoreError>> {
        self.store
            .clone()
            .watch_log(PREFIX, since)
            .filter_map(|r| async move {
                match r {
                    Ok(v) => match serde_json::from_slice::<Event>(&v.value) {
                        Ok(mut e) => {
                            e.revision = v.revision;
                            Some(Ok(e))
                        }
                        Err(err) => {
                            tracing::warn!(rev = v.revision, "unreadable event skipped: {err}");
                            None
                        }
                    },
                    Err(e) => Some(Err(e)),
                }
            })
            .boxed()
    }
}
