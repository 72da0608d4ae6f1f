//! Backup schedules: each VM's schedule takes a backup every `every_s` into its store
//! and then applies its retention. Run by the leader; `last_run_ms` is claimed by
//! compare-and-swap before a run, so two controllers never run one schedule twice.

use std::time::Duration;

use crate::context::Context;
use crate::error::{missing, Error, Result};
use crate::model::{now_ms, BackupBody, BackupSchedule, OpState, Operation, Vm};
use crate::store::{Objects, StoreError};

/// Sets VM `vm`'s schedule (replacing any).
pub async fn set(ctx: &Context, vm: &Vm, mut s: BackupSchedule) -> Result<BackupSchedule> {
    s.validate()?;
    ctx.store
        .read::<crate::model::BackupStore>(&s.store)
        .await?
        .ok_or_else(|| {
            nova_http::FieldError::new("store", format!("no backup store {:?}", s.store))
        })?;
    s.vm_id = vm.id.clone();
    s.tenant = vm.tenant.clone();
    let _ = ctx.store.remove::<BackupSchedule>(&vm.id).await?;
    s.revision = ctx.store.create(&s).await?;
    Ok(s)
}

/// VM `vm_id`'s schedule.
pub async fn get(ctx: &Context, vm_id: &str) -> Result<BackupSchedule> {
    ctx.store
        .must_read::<BackupSchedule>(vm_id)
        .await
        .map_err(missing("backup schedule"))
}

/// Removes VM `vm_id`'s schedule.
pub async fn remove(ctx: &Context, vm_id: &str) -> Result<BackupSchedule> {
    let s = get(ctx, vm_id).await?;
    ctx.store.remove::<BackupSchedule>(vm_id).await?;
    Ok(s)
}

/// The leader's loop: every second, runs the schedules that are due.
pub async fn run(ctx: Context) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !ctx.leads() {
            continue;
        }
        if let Err(e) = tick(&ctx).await {
            tracing::warn!("backup schedules: {e}");
        }
    }
}

async fn tick(ctx: &Context) -> Result<()> {
    let now = now_ms();
    for s in ctx.store.list_all::<BackupSchedule>().await? {
        if now < s.last_run_ms.saturating_add(s.every_s * 1000) {
            continue;
        }
        // Claimed: another controller (or a slow previous tick) skips it.
        let claimed = ctx
            .store
            .update_at::<BackupSchedule, _>(&s.vm_id, Some(s.revision), |x| {
                x.last_run_ms = now;
                true
            })
            .await;
        match claimed {
            Ok(_) => {}
            Err(StoreError::Stale { .. } | StoreError::Conflict(_) | StoreError::NotFound(_)) => {
                continue
            }
            Err(e) => return Err(e.into()),
        }
        let ctx2 = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = run_one(&ctx2, &s).await {
                tracing::warn!(vm = s.vm_id, "scheduled backup: {e}");
            }
        });
    }
    Ok(())
}

/// Takes one scheduled backup, waits for it, then applies the retention.
async fn run_one(ctx: &Context, s: &BackupSchedule) -> Result<()> {
    let Some(vm) = ctx.store.read::<Vm>(&s.vm_id).await? else {
        // The VM is gone: its schedule goes too (its backups stay).
        ctx.store.remove::<BackupSchedule>(&s.vm_id).await?;
        return Ok(());
    };
    let body = BackupBody {
        store: s.store.clone(),
        full: false,
        memory: s.memory,
    };
    let op = super::start_backup(ctx, &vm, &body).await?;
    let done = wait(ctx, &op.id).await?;
    if done.state != OpState::Succeeded {
        return Err(Error::conflict(format!("backup failed: {}", done.message)));
    }
    let prune = super::start_prune(ctx, &s.tenant, &s.vm_id, s.retention).await?;
    wait(ctx, &prune.id).await?;
    Ok(())
}

async fn wait(ctx: &Context, op_id: &str) -> Result<Operation> {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let o = ctx
            .store
            .must_read::<Operation>(op_id)
            .await
            .map_err(missing("operation"))?;
        if o.state.is_final() {
            return Ok(o);
        }
    }
}
