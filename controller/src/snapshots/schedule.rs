//! Snapshot schedules, evaluated by the leading controller: every VM whose schedule
//! is due gets a snapshot, then its scheduled snapshots beyond the keep policy are
//! deleted. A failed run is recorded on the schedule and retried at the next tick.

use std::time::Duration;

use crate::context::Context;
use crate::error::Result;
use crate::model::{now_ms, Snapshot, SnapshotSchedule, Vm};
use crate::store::{Objects, StoreError};

/// How often schedules are looked at.
const TICK: Duration = Duration::from_millis(500);

/// Runs forever; acts only while this controller leads.
pub async fn run(ctx: Context) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !ctx.leads() {
            continue;
        }
        if let Err(e) = pass(&ctx).await {
            tracing::warn!("snapshot schedules: {e}");
        }
    }
}

/// One look at every schedule.
pub async fn pass(ctx: &Context) -> Result<()> {
    for s in ctx.store.list_all::<SnapshotSchedule>().await? {
        let Some(vm) = ctx.store.read::<Vm>(&s.vm_id).await? else {
            // The VM is gone: so is its schedule (its snapshots stay).
            ctx.store.remove::<SnapshotSchedule>(&s.vm_id).await?;
            continue;
        };
        if now_ms().saturating_sub(s.last_run_ms) < s.every_secs * 1000 {
            continue;
        }
        let running = vm.observed.as_ref().is_some_and(|o| o.state == "running");
        if !running || vm.migrating.is_some() {
            continue;
        }
        let taken = crate::snapshots::take(ctx, &vm, None, true).await;
        let error = taken.as_ref().err().map(|e| e.to_string());
        let recorded = ctx
            .store
            .update::<SnapshotSchedule, _>(&s.vm_id, |x| {
                x.last_run_ms = now_ms();
                x.last_error = error.clone();
                true
            })
            .await;
        // Removed meanwhile: what it took is still pruned by the policy it had.
        if let Some(e) = recorded
            .as_ref()
            .err()
            .filter(|e| !matches!(e, StoreError::NotFound(_)))
        {
            tracing::warn!(vm = s.vm_id, "recording a scheduled snapshot: {e}");
        }
        if taken.is_ok() {
            prune(ctx, &s).await?;
        }
    }
    Ok(())
}

/// Deletes the VM's scheduled snapshots its keep policy does not keep.
pub async fn prune(ctx: &Context, s: &SnapshotSchedule) -> Result<()> {
    let mine: Vec<Snapshot> =
        crate::snapshots::list(ctx, |x| x.vm_id == s.vm_id && x.scheduled).await?;
    let times: Vec<u64> = mine.iter().map(|x| x.created_at_ms).collect();
    let kept = crate::snapshots::keep::kept(&times, &s.keep);
    for (i, snap) in mine.iter().enumerate() {
        if !kept.contains(&i) {
            if let Err(e) = crate::snapshots::delete(ctx, snap).await {
                tracing::warn!(snapshot = snap.id, "retention: {e}");
            }
        }
    }
    Ok(())
}
