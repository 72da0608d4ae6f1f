//! Drain: cordon a host and move every VM off it: running VMs by migration of the
//! policy's kind (within its parallelism limits), falling back per VM to a warm
//! migration when a live one is impossible (it failed or ran out of time: a guest
//! dirtying memory faster than the link carries it), stopped ones by re-placement.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use nova_hostd_api::MigrationKind;

use super::{migrate, policy};
use crate::context::Context;
use crate::error::{missing, Result};
use crate::model::{DesiredState, Host, MigrationResult, OpState, Operation, Vm, SYSTEM_TENANT};
use crate::operations::{self, failed, Outcome};
use crate::store::Objects;

/// Starts draining `host_id` (at `revision`, when given); answers the drain operation.
pub async fn start(ctx: &Context, host_id: &str, revision: Option<u64>) -> Result<Operation> {
    ctx.store
        .update_at::<Host, _>(host_id, revision, |h| {
            h.cordoned = true;
            h.draining = true;
            true
        })
        .await
        .map_err(missing("host"))?;
    ctx.events
        .publish(
            "host.cordoned",
            SYSTEM_TENANT,
            host_id,
            serde_json::json!({"draining": true}),
        )
        .await;
    let mut op = operations::new(SYSTEM_TENANT, "drain", host_id);
    op.revision = ctx.store.create(&op).await?;
    let (ctx2, h, id) = (ctx.clone(), host_id.to_string(), op.id.clone());
    tokio::spawn(async move {
        let outcome = run(&ctx2, &h, &id).await;
        operations::finish(&ctx2, &id, &outcome).await;
        let _ = ctx2
            .store
            .update::<Host, _>(&h, |h| {
                h.draining = false;
                true
            })
            .await;
    });
    Ok(op)
}

/// Moves one VM off `host`: a stopped one is let go by its hostd and placed again by
/// the scheduler; a running one is live-migrated under an operation of its own.
async fn move_one(ctx: &Context, host: &Host, vm: &Vm, drain_op: &str) -> Outcome {
    if vm.desired == DesiredState::Stopped {
        match ctx.hostd(host).map_err(failed)?.delete(&vm.id).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(failed(e)),
        }
        ctx.store
            .update::<Vm, _>(&vm.id, |v| {
                v.host = None;
                v.observed = None;
                true
            })
            .await
            .map_err(failed)?;
        return Ok(serde_json::to_value(MigrationResult {
            from: host.id.clone(),
            ..Default::default()
        })
        .unwrap_or_default());
    }
    let kind = policy::load(ctx).await.map_err(failed)?.kind;
    let outcome = migrate_child(ctx, vm, kind).await;
    // Live did not work for this VM (and nobody cancelled the drain): a warm migration
    // always converges, at the cost of a pause as long as the copy.
    if kind == MigrationKind::Live && outcome.is_err() && !cancelled(ctx, drain_op).await {
        tracing::info!(vm = vm.id, "live migration impossible; moving it warm");
        return migrate_child(ctx, vm, MigrationKind::Warm).await;
    }
    outcome
}

/// One VM's migration, as an operation of its own, visible to its tenant.
async fn migrate_child(ctx: &Context, vm: &Vm, kind: MigrationKind) -> Outcome {
    let child = operations::new(&vm.tenant, "migrate", &vm.id);
    ctx.store.create(&child).await.map_err(failed)?;
    let outcome = migrate(ctx, &vm.id, None, Some(kind), &child.id).await;
    operations::finish(ctx, &child.id, &outcome).await;
    outcome
}

async fn cancelled(ctx: &Context, op_id: &str) -> bool {
    operations::cancel_requested(ctx, op_id).await
}

async fn run(ctx: &Context, host_id: &str, op_id: &str) -> Outcome {
    let policy = policy::load(ctx).await.map_err(failed)?;
    let vms: Vec<Vm> = ctx
        .store
        .list_all::<Vm>()
        .await
        .map_err(failed)?
        .into_iter()
        .filter(|v| v.host.as_deref() == Some(host_id) && v.desired != DesiredState::Deleted)
        .collect();
    let total = vms.len().max(1);
    operations::update(ctx, op_id, |o| {
        o.state = OpState::Running;
        o.message = format!("{} VMs to move", vms.len());
    })
    .await
    .map_err(failed)?;
    let host = ctx.store.must_read::<Host>(host_id).await.map_err(failed)?;
    let per_host = Arc::new(Semaphore::new(policy.max_parallel_per_host as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for vm in vms {
        let (ctx, host, per_host, op_id) = (
            ctx.clone(),
            host.clone(),
            per_host.clone(),
            op_id.to_string(),
        );
        tasks.spawn(async move {
            let _permit = per_host.acquire_owned().await;
            if operations::cancel_requested(&ctx, &op_id).await {
                return (vm.id, Err((OpState::Cancelled, "drain cancelled".into())));
            }
            let outcome = move_one(&ctx, &host, &vm, &op_id).await;
            (vm.id, outcome)
        });
    }
    let mut done = 0usize;
    let mut results: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut failures = 0;
    while let Some(r) = tasks.join_next().await {
        let Ok((vm, outcome)) = r else { continue };
        done += 1;
        let entry = outcome.unwrap_or_else(|(_, msg)| {
            failures += 1;
            serde_json::to_value(MigrationResult {
                from: host_id.into(),
                error: Some(msg),
                ..Default::default()
            })
            .unwrap_or_default()
        });
        results.insert(vm, entry);
        let snapshot = serde_json::to_value(&results).unwrap_or_default();
        let _ = operations::update(ctx, op_id, |o| {
            o.progress = ((done * 100) / total).min(99) as u8;
            o.message = format!("{done} of {total} moved");
            o.result = snapshot.clone();
        })
        .await;
    }
    if failures > 0 {
        return Err((
            OpState::Failed,
            format!("{failures} VMs could not be moved; the host stays cordoned"),
        ));
    }
    Ok(serde_json::to_value(&results).unwrap_or_default())
}
