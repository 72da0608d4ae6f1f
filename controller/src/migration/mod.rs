//! Migrations (live, warm or cold), driven by the controller and carried out by hostd: pick the
//! destination, hold a slot within the policy's parallelism limits, ask the source
//! hostd to migrate to the destination hostd with the policy's parameters, follow its
//! progress into the operation and the event log, and move the VM's placement when
//! (and only when) hostd says the VM runs on the destination.

pub mod drain;
pub mod policy;

use std::time::{Duration, Instant};

use nova_hostd_api::{HostdClient, MigrateRequest, MigrationKind, MigrationState, MigrationTarget};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{
    now_ms, DesiredState, Host, HostState, MigrationPolicy, MigrationResult, Observed, OpState,
    Operation, Vm,
};
use crate::operations::{self, failed, Outcome};
use crate::placement;
use crate::scheduler::{self, Weights};
use crate::store::{Objects, StoreError};

/// How often a migration's progress is read from the source hostd.
const POLL: Duration = Duration::from_millis(200);
/// How long the source hostd may stay unreachable before the migration counts as failed.
const UNREACHABLE_FOR: Duration = Duration::from_secs(30);

/// Starts migrating `vm` (to `to`, or where the scheduler says) and answers its operation.
pub async fn start_one(
    ctx: &Context,
    vm: &Vm,
    to: Option<String>,
    kind: Option<MigrationKind>,
) -> Result<Operation> {
    if vm.host.is_none() || vm.desired != DesiredState::Running {
        return Err(Error::conflict(
            "only a placed, running VM can be live-migrated",
        ));
    }
    if vm.migrating.is_some() {
        return Err(Error::conflict("the VM is already migrating"));
    }
    let mut op = operations::new(&vm.tenant, "migrate", &vm.id);
    op.revision = ctx.store.create(&op).await?;
    let (ctx2, vm_id, op_id) = (ctx.clone(), vm.id.clone(), op.id.clone());
    tokio::spawn(async move {
        let outcome = migrate(&ctx2, &vm_id, to, kind, &op_id).await;
        operations::finish(&ctx2, &op_id, &outcome).await;
    });
    Ok(op)
}

fn to_value(r: &MigrationResult) -> serde_json::Value {
    serde_json::to_value(r).unwrap_or_default()
}

/// Migrates one VM (`kind`, or the policy's), holding a slot; the VM's placement
/// moves only on hostd's "completed".
pub async fn migrate(
    ctx: &Context,
    vm_id: &str,
    to: Option<String>,
    kind: Option<MigrationKind>,
    op_id: &str,
) -> Outcome {
    let policy = policy::load(ctx).await.map_err(failed)?;
    let kind = kind.unwrap_or(policy.kind);
    let vm = ctx.store.must_read::<Vm>(vm_id).await.map_err(failed)?;
    let src_id = vm
        .host
        .clone()
        .ok_or_else(|| failed("the VM is not placed"))?;
    let src = ctx.store.must_read::<Host>(&src_id).await.map_err(failed)?;
    // Destination: the one asked for (it must pass the filters) or the scheduler's pick.
    let (views, vms) = placement::host_views(ctx).await.map_err(failed)?;
    let tenants = placement::tenants(ctx).await.map_err(failed)?;
    let mut req = placement::request_for(&vm, &tenants, &vms);
    req.exclude = vec![src_id.clone()];
    let candidates: Vec<_> = match &to {
        Some(t) => views.into_iter().filter(|h| h.id == *t).collect(),
        None => views,
    };
    let picked = scheduler::place(&req, &candidates, Weights::default());
    ctx.metrics.decision(picked.is_ok());
    let dst_id = picked.map_err(failed)?.id.clone();
    let dst = ctx.store.must_read::<Host>(&dst_id).await.map_err(failed)?;

    // Wait for a slot within the policy's limits.
    let slot = loop {
        if let Some(s) = ctx.slots.try_take(&policy, &src_id, &dst_id) {
            break s;
        }
        if operations::cancel_requested(ctx, op_id).await {
            return Err((OpState::Cancelled, "cancelled while queued".into()));
        }
        operations::update(ctx, op_id, |o| {
            o.message = "waiting for a migration slot".into()
        })
        .await
        .map_err(failed)?;
        tokio::time::sleep(POLL).await;
    };
    if !claim(ctx, vm_id, &src_id, op_id).await.map_err(failed)? {
        return Err(failed("the VM moved or is already migrating"));
    }
    let started = MigrationResult {
        from: src_id.clone(),
        to: dst_id.clone(),
        mode: Some(policy.params.mode),
        kind: Some(kind),
        ..Default::default()
    };
    operations::update(ctx, op_id, |o| {
        o.state = OpState::Running;
        o.progress = 5;
        o.message = format!("migrating {src_id} -> {dst_id}");
        o.result = to_value(&started);
    })
    .await
    .map_err(failed)?;
    ctx.events
        .publish(
            "vm.migrating",
            &vm.tenant,
            vm_id,
            serde_json::json!({"from": src_id, "to": dst_id, "operation": op_id}),
        )
        .await;

    // The policy's parameters travel as they are: one set of defaults, the VMM's.
    let rq = MigrateRequest {
        to: MigrationTarget {
            url: dst.url.clone(),
            token: dst.hostd_token.clone(),
        },
        params: policy.params,
        kind,
    };
    let outcome = match ctx.hostd(&src) {
        Ok(hd) => match hd.migrate(vm_id, &rq).await {
            Ok(_) => follow(ctx, &hd, &started, vm_id, op_id, &policy).await,
            Err(e) => Err(failed(format!("source hostd refused: {e}"))),
        },
        Err(e) => Err(failed(e)),
    };
    release(ctx, vm_id, op_id, &dst_id, &outcome).await;
    drop(slot);
    outcome
}

/// Follows the source hostd's migration status until it ends, cancelling on request
/// or on the policy's completion timeout (cross-cluster migrations follow it too).
pub(crate) async fn follow(
    ctx: &Context,
    hd: &HostdClient,
    base: &MigrationResult,
    vm_id: &str,
    op_id: &str,
    policy: &MigrationPolicy,
) -> Outcome {
    ctx.slots.follow(op_id);
    let started = Instant::now();
    let mut cancelling = false;
    let mut unreachable_since: Option<Instant> = None;
    let out = loop {
        tokio::time::sleep(POLL).await;
        let status = match hd.migration(vm_id).await {
            Ok(s) => {
                unreachable_since = None;
                s
            }
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > UNREACHABLE_FOR {
                    break Err(failed(format!("source hostd unreachable: {e}")));
                }
                continue;
            }
        };
        let result = MigrationResult {
            mode: Some(status.mode),
            downtime_ms: status.downtime_ms,
            total_ms: status.total_ms,
            bytes: status.bytes_sent,
            rounds: status.rounds,
            ..base.clone()
        };
        match status.state {
            MigrationState::Completed => break Ok(result),
            MigrationState::Failed => {
                break Err(failed(status.error.unwrap_or_else(|| "failed".into())))
            }
            MigrationState::Cancelled => {
                break Err((
                    OpState::Cancelled,
                    "cancelled; the VM stays on its source".into(),
                ))
            }
            MigrationState::Preparing | MigrationState::Running => {}
        }
        let timed_out = started.elapsed() > Duration::from_secs(policy.completion_timeout_s);
        if !cancelling && (timed_out || operations::cancel_requested(ctx, op_id).await) {
            cancelling = true;
            if let Err(e) = hd.cancel_migration(vm_id).await {
                tracing::warn!(vm = vm_id, "cancel: {e}");
            }
        }
        let rounds = status.rounds.unwrap_or(0);
        let progress = if status.state == MigrationState::Preparing {
            10
        } else {
            (20 + rounds * 10).min(95) as u8
        };
        let _ = operations::update(ctx, op_id, |o| {
            o.progress = o.progress.max(progress);
            o.message = format!("{:?}, round {rounds}", status.state).to_lowercase();
            o.result = to_value(&result);
        })
        .await;
    };
    ctx.slots.unfollow(op_id);
    let (kind, downtime, bytes) = match &out {
        Ok(r) => ("succeeded", r.downtime_ms, r.bytes),
        Err((OpState::Cancelled, _)) => ("cancelled", None, None),
        Err(_) => ("failed", None, None),
    };
    ctx.metrics.migration(kind, downtime, bytes);
    out.map(|r| to_value(&r))
}

/// Moves the placement on success, and always lets go of the VM.
async fn release(ctx: &Context, vm_id: &str, op_id: &str, dst_id: &str, outcome: &Outcome) {
    let r = ctx
        .store
        .update::<Vm, _>(vm_id, |v| {
            if v.migrating.as_deref() != Some(op_id) {
                return false;
            }
            v.migrating = None;
            if outcome.is_ok() {
                v.host = Some(dst_id.to_string());
                v.observed = Some(Observed {
                    state: "running".into(),
                    host: Some(dst_id.into()),
                    at_ms: now_ms(),
                    error: None,
                });
            }
            true
        })
        .await;
    match r {
        Ok(v) => {
            if let Ok(result) = outcome {
                ctx.events
                    .publish("vm.migrated", &v.tenant, vm_id, result.clone())
                    .await;
            }
        }
        Err(e) => tracing::error!(vm = vm_id, "releasing after migration: {e}"),
    }
}

/// After a controller restart (or a new leader): migrations that were under way and
/// that nobody here follows are followed again from the source hostd's status.
pub async fn resume_orphans(ctx: &Context) -> std::result::Result<(), StoreError> {
    for op in ctx.store.list_all::<Operation>().await? {
        if op.state.is_final() || op.kind != "migrate" || ctx.slots.follows(&op.id) {
            continue;
        }
        let Some(vm) = ctx.store.read::<Vm>(&op.target).await? else {
            operations::finish(ctx, &op.id, &Err(failed("the VM is gone"))).await;
            continue;
        };
        if vm.migrating.as_deref() != Some(op.id.as_str()) {
            // Pending (queued) on a controller that died: nothing was started.
            if now_ms().saturating_sub(op.updated_at_ms) > 5_000 {
                let why = failed("interrupted by a controller restart before it started");
                operations::finish(ctx, &op.id, &Err(why)).await;
            }
            continue;
        }
        let Ok(base) = serde_json::from_value::<MigrationResult>(op.result.clone()) else {
            continue;
        };
        let Some(src) = ctx.store.read::<Host>(&base.from).await? else {
            continue;
        };
        if src.state != HostState::Ready || vm.host.as_deref() != Some(base.from.as_str()) {
            continue;
        }
        let Ok(hd) = ctx.hostd(&src) else { continue };
        tracing::info!(op = %op.id, "following a migration started before a restart");
        ctx.slots.follow(&op.id);
        let ctx2 = ctx.clone();
        tokio::spawn(async move {
            let policy = policy::load(&ctx2).await.unwrap_or_default();
            let outcome = follow(&ctx2, &hd, &base, &vm.id, &op.id, &policy).await;
            release(&ctx2, &vm.id, &op.id, &base.to, &outcome).await;
            operations::finish(&ctx2, &op.id, &outcome).await;
        });
    }
    Ok(())
}

/// Claims `vm_id` for the migration `op_id` while it is still on `src_id` and no other
/// migration holds it: nobody else may migrate it, and the reconcile loop leaves it
/// alone. False when it moved or is already migrating.
pub(crate) async fn claim(
    ctx: &Context,
    vm_id: &str,
    src_id: &str,
    op_id: &str,
) -> std::result::Result<bool, crate::store::StoreError> {
    let mut claimed = false;
    ctx.store
        .update::<Vm, _>(vm_id, |v| {
            claimed = v.migrating.is_none() && v.host.as_deref() == Some(src_id);
            if claimed {
                v.migrating = Some(op_id.to_string());
            }
            claimed
        })
        .await?;
    Ok(claimed)
}
