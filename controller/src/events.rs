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
    /// one as it is appended, in revision order; every event published after this
    /// returns is in the stream.
    pub async fn subscribe(
        &self,
        since: Option<u64>,
    ) -> BoxStream<'static, Result<Event, StoreError>> {
        self.store
            .clone()
            .watch_log(PREFIX, since)
            .await
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

    /// One object's stored events (those naming it, and those of operations acting
    /// on it), oldest first: at most `limit` after revision `after`, and the revision
    /// to continue from when the log holds more. Reads at most [`SCAN_MAX`] log
    /// entries per call, so a long log costs several calls, never one long one.
    pub async fn of_object(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<u64>), StoreError> {
        let mut found = Vec::new();
        let mut cursor = after;
        let mut scanned = 0;
        loop {
            let batch = self.store.log_since(PREFIX, cursor, SCAN_BATCH).await?;
            let full = batch.len() == SCAN_BATCH;
            for (_, v) in batch {
                cursor = v.revision;
                scanned += 1;
                let Ok(mut e) = serde_json::from_slice::<Event>(&v.value) else {
                    continue;
                };
                e.revision = v.revision;
                if concerns(&e, id) {
                    found.push(e);
                    if found.len() == limit {
                        return Ok((found, Some(cursor)));
                    }
                }
            }
            if !full {
                return Ok((found, None));
            }
            if scanned >= SCAN_MAX {
                return Ok((found, Some(cursor)));
            }
        }
    }
}

/// Log entries read per store call, and per API call at most.
const SCAN_BATCH: usize = 1000;
pub const SCAN_MAX: usize = 20_000;

/// Whether `e` is about the object `id`: it names it, or it is an operation acting
/// on it.
fn concerns(e: &Event, id: &str) -> bool {
    e.id == id
        || (e.kind.starts_with("operation.")
            && serde_json::from_value::<nova_controller_api::Operation>(e.data.clone())
                .is_ok_and(|op| op.target == id))
}

/// The data of an event: the object it is about (or a struct saying what happened),
/// serialized from its typed contract.
pub fn data<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// The data of an event that says only what happened to which object: `{}`.
pub fn no_data() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}
