//! Operations: long-running work (a migration, a drain) as a stored object its tenant
//! can follow, with progress, a result, and a cancel request the work honours. Every
//! change is published on the event log.

use crate::context::Context;
use crate::error::{missing, Result};
use crate::model::{now_ms, OpState, Operation};
use crate::store::{Objects, StoreError};

/// How a piece of work ended: its result, or the final state and why.
pub type Outcome = std::result::Result<serde_json::Value, (OpState, String)>;

/// A failed outcome.
pub fn failed(e: impl std::fmt::Display) -> (OpState, String) {
    (OpState::Failed, e.to_string())
}

/// A new pending operation of `kind` on `target` (not stored yet).
pub fn new(tenant: &str, kind: &str, target: &str) -> Operation {
    let now = now_ms();
    Operation {
        id: format!("op-{}", hex::encode(rand::random::<[u8; 6]>())),
        tenant: tenant.into(),
        kind: kind.into(),
        target: target.into(),
        state: OpState::Pending,
        progress: 0,
        message: "queued".into(),
        result: serde_json::json!({}),
        cancel_requested: false,
        created_at_ms: now,
        updated_at_ms: now,
        revision: 0,
    }
}

/// Changes an operation that has not ended yet, and publishes the change.
pub async fn update(
    ctx: &Context,
    id: &str,
    mut f: impl FnMut(&mut Operation) + Send,
) -> std::result::Result<Operation, StoreError> {
    let o = ctx
        .store
        .update::<Operation, _>(id, |o| {
            if o.state.is_final() {
                return false;
            }
            f(o);
            o.updated_at_ms = now_ms();
            true
        })
        .await?;
    let kind = if o.state.is_final() {
        "operation.done"
    } else {
        "operation.progress"
    };
    ctx.events
        .publish(
            kind,
            &o.tenant,
            &o.id,
            serde_json::to_value(&o).unwrap_or_default(),
        )
        .await;
    Ok(o)
}

/// Records how an operation ended.
pub async fn finish(ctx: &Context, id: &str, outcome: &Outcome) {
    let r = update(ctx, id, |o| match outcome {
        Ok(res) => {
            o.state = OpState::Succeeded;
            o.progress = 100;
            o.message = "done".into();
            o.result = res.clone();
        }
        Err((state, msg)) => {
            o.state = *state;
            o.message = msg.clone();
        }
    })
    .await;
    if let Err(e) = r {
        tracing::error!(op = id, "recording the outcome: {e}");
    }
}

/// Whether somebody asked operation `id` to stop.
pub async fn cancel_requested(ctx: &Context, id: &str) -> bool {
    ctx.store
        .read::<Operation>(id)
        .await
        .ok()
        .flatten()
        .is_some_and(|o| o.cancel_requested)
}

/// Asks operation `id` (at `revision`, when given) to stop; a migration not yet
/// switched over leaves its VM on the source.
pub async fn cancel(ctx: &Context, id: &str, revision: Option<u64>) -> Result<Operation> {
    let o = ctx
        .store
        .update_at::<Operation, _>(id, revision, |o| {
            if o.state.is_final() {
                return false;
            }
            o.cancel_requested = true;
            o.updated_at_ms = now_ms();
            true
        })
        .await
        .map_err(missing("operation"))?;
    ctx.events
        .publish(
            "operation.cancel_requested",
            &o.tenant,
            id,
            serde_json::json!({}),
        )
        .await;
    Ok(o)
}
