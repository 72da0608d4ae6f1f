//! Retention: history does not grow forever. Finished operations, audit entries,
//! events and remembered idempotent answers are pruned past their age and past their
//! count (oldest first); the leader's loop runs this once per `Retention::every`.

use std::time::Duration;

use crate::context::{Context, Retention};
use crate::error::Result;
use crate::model::{now_ms, Operation};
use crate::store::{Expect, Objects, AUDIT_PREFIX};

/// Most entries one prune removes per kind (the rest go next time).
const MAX_PER_RUN: usize = 10_000;

/// Prunes every kind of history past `r`.
pub async fn prune(ctx: &Context, r: &Retention) -> Result<()> {
    let ops = operations(ctx, r.operations_max_age, r.operations_max_count).await?;
    let audit = time_keyed(ctx, AUDIT_PREFIX, r.audit_max_age, r.audit_max_count).await?;
    let events = time_keyed(
        ctx,
        crate::events::PREFIX,
        r.events_max_age,
        r.events_max_count,
    )
    .await?;
    let keys = crate::idempotency::prune(&ctx.store, r.idempotency_ttl).await?;
    if ops + audit + events + keys > 0 {
        tracing::info!(ops, audit, events, keys, "pruned history");
    }
    Ok(())
}

/// How many of `n` entries sorted oldest first go: those older than `max_age`
/// (`old` of them) and those beyond `max_count`.
fn doomed(n: usize, old: usize, max_count: usize) -> usize {
    old.max(n.saturating_sub(max_count)).min(MAX_PER_RUN)
}

/// Finished operations, by when they last changed.
async fn operations(ctx: &Context, max_age: Duration, max_count: usize) -> Result<usize> {
    let cutoff = now_ms().saturating_sub(max_age.as_millis() as u64);
    let mut done: Vec<Operation> = ctx
        .store
        .list_all::<Operation>()
        .await?
        .into_iter()
        .filter(|o| o.state.is_final())
        .collect();
    done.sort_by_key(|o| o.updated_at_ms);
    let old = done.iter().take_while(|o| o.updated_at_ms < cutoff).count();
    let n = doomed(done.len(), old, max_count);
    for o in &done[..n] {
        ctx.store.remove::<Operation>(&o.id).await?;
    }
    Ok(n)
}

/// A log whose keys start with the entry's time (`<at_ms:016>-...`: the audit log,
/// and events under etcd) or whose key order is time order (events under SQLite, keyed
/// by revision; their age is read from the entry).
async fn time_keyed(
    ctx: &Context,
    prefix: &str,
    max_age: Duration,
    max_count: usize,
) -> Result<usize> {
    let cutoff = now_ms().saturating_sub(max_age.as_millis() as u64);
    let all = ctx.store.list(prefix).await?;
    let at_ms = |v: &[u8]| {
        #[derive(serde::Deserialize)]
        struct At {
            at_ms: u64,
        }
        serde_json::from_slice::<At>(v)
            .map(|a| a.at_ms)
            .unwrap_or(0)
    };
    let old = all
        .iter()
        .take_while(|(_, v)| at_ms(&v.value) < cutoff)
        .count();
    let n = doomed(all.len(), old, max_count);
    for (k, _) in &all[..n] {
        ctx.store.delete(k, Expect::Any).await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::doomed;

    #[test]
    fn the_oldest_go_past_the_age_or_the_count_whichever_takes_more() {
        assert_eq!(doomed(10, 0, 100), 0, "young and few: all stay");
        assert_eq!(doomed(10, 3, 100), 3, "three too old");
        assert_eq!(doomed(10, 0, 4), 6, "six too many");
        assert_eq!(doomed(10, 7, 4), 7);
        assert_eq!(doomed(100_000, 0, 0), 10_000, "bounded per run");
    }
}
