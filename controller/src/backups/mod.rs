//! Backups in the cluster: the backup stores hosts write to, each VM's backups (a
//! tenant-scoped record of what its store holds), and the operations on them: back up
//! a VM (incremental on its previous backup in the same store), restore a backup to a
//! new VM on any host, verify, prune by retention, garbage-collect a store. The work
//! is a hostd backup job ([`jobs`]), followed as an operation with progress; the
//! schedules that take backups and apply retention are in [`schedule`]. Domain code:
//! no HTTP here.

pub mod jobs;
pub mod recovery;
pub mod running;
pub mod schedule;

use nova_hostd_api::{JobOp, JobResult};

use crate::context::Context;
use crate::error::{missing, Error, Result};
use crate::model::{
    now_ms, Backup, BackupBody, BackupRetention, BackupSchedule, BackupState, BackupStore,
    DesiredState, Operation, RestoreBody, Vm,
};
use crate::operations::{self, failed, Outcome};
use crate::store::{Object, Objects, StoreError};

impl Object for BackupStore {
    const PREFIX: &'static str = "backup-stores/";
    fn key(&self) -> &str {
        &self.name
    }
}

impl Object for Backup {
    const PREFIX: &'static str = "backups/";
    fn key(&self) -> &str {
        &self.id
    }
    fn set_revision(&mut self, rev: u64) {
        self.revision = rev;
    }
}

impl Object for BackupSchedule {
    const PREFIX: &'static str = "backup-schedules/";
    fn key(&self) -> &str {
        &self.vm_id
    }
    fn set_revision(&mut self, rev: u64) {
        self.revision = rev;
    }
}

/// Stores a new backup store (its name must be free).
pub async fn create_store(ctx: &Context, mut s: BackupStore) -> Result<BackupStore> {
    s.validate()?;
    s.created_at_ms = now_ms();
    match ctx.store.create(&s).await {
        Ok(_) => Ok(s.redacted()),
        Err(StoreError::Conflict(_)) => Err(Error::conflict_on(
            "name",
            format!("a backup store {:?} exists", s.name),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Every backup store, secrets redacted.
pub async fn stores(ctx: &Context) -> Result<Vec<BackupStore>> {
    Ok(ctx
        .store
        .list_all::<BackupStore>()
        .await?
        .iter()
        .map(BackupStore::redacted)
        .collect())
}

/// Forgets a backup store no backup record names.
pub async fn delete_store(ctx: &Context, name: &str) -> Result<BackupStore> {
    let s = ctx
        .store
        .must_read::<BackupStore>(name)
        .await
        .map_err(missing("backup store"))?;
    let used = ctx
        .store
        .list_all::<Backup>()
        .await?
        .iter()
        .filter(|b| b.store == name)
        .count();
    if used > 0 {
        return Err(Error::conflict(format!(
            "{used} backups are in store {name}: delete them first"
        )));
    }
    ctx.store.remove::<BackupStore>(name).await?;
    Ok(s.redacted())
}

async fn store_named(ctx: &Context, name: &str) -> Result<BackupStore> {
    ctx.store.read::<BackupStore>(name).await?.ok_or_else(|| {
        nova_http::FieldError::new("store", format!("no backup store {name:?}")).into()
    })
}

/// Starts backing up `vm` into `body.store`; answers the operation.
pub async fn start_backup(ctx: &Context, vm: &Vm, body: &BackupBody) -> Result<Operation> {
    let store = store_named(ctx, &body.store).await?;
    let Some(host) = vm.host.clone() else {
        return Err(Error::conflict("the VM is not placed on a host yet"));
    };
    if vm.desired == DesiredState::Deleted {
        return Err(Error::conflict("the VM is being deleted"));
    }
    let mine: Vec<Backup> = ctx
        .store
        .list_all::<Backup>()
        .await?
        .into_iter()
        .filter(|b| b.vm_id == vm.id)
        .collect();
    if mine.iter().any(|b| b.state == BackupState::Running) {
        return Err(Error::conflict("a backup of this VM is running"));
    }
    // Incremental on the newest complete, undamaged backup in the same store.
    let previous = (!body.full)
        .then(|| {
            mine.iter()
                .filter(|b| {
                    b.store == store.name && b.state == BackupState::Completed && !b.damaged
                })
                .max_by_key(|b| b.created_at_ms)
                .map(|b| b.id.clone())
        })
        .flatten();
    let mut b = Backup {
        id: format!("bk-{}", hex::encode(rand::random::<[u8; 6]>())),
        tenant: vm.tenant.clone(),
        vm_id: vm.id.clone(),
        vm_name: vm.spec.name.clone(),
        store: store.name.clone(),
        state: BackupState::Running,
        previous: previous.clone(),
        spec: vm.spec.clone(),
        memory: body.memory,
        host: Some(host.clone()),
        report: None,
        error: None,
        damaged: false,
        damaged_chunks: Vec::new(),
        verified_at_ms: None,
        created_at_ms: now_ms(),
        operation: None,
        job: None,
        revision: 0,
    };
    let mut op = operations::new(&vm.tenant, "backup", &vm.id);
    b.operation = Some(op.id.clone());
    // Followed from before it is stored: recovery must never take it for one left behind.
    running::following().insert(b.id.clone());
    b.revision = match ctx.store.create(&b).await {
        Ok(rev) => rev,
        Err(e) => {
            running::following().remove(&b.id);
            return Err(e.into());
        }
    };
    op.revision = ctx.store.create(&op).await?;
    ctx.events
        .publish("backup.started", &b.tenant, &b.id, crate::events::data(&b))
        .await;
    let (ctx2, op_id) = (ctx.clone(), op.id.clone());
    tokio::spawn(async move {
        let outcome = running::run_backup(&ctx2, &b, Some(&store), &host, &op_id).await;
        operations::finish(&ctx2, &op_id, &outcome).await;
    });
    Ok(op)
}

/// Starts restoring backup `b` to a new VM of `tenant` named `body.name`.
pub async fn start_restore(
    ctx: &Context,
    b: &Backup,
    tenant: &str,
    body: &RestoreBody,
) -> Result<Operation> {
    if b.state != BackupState::Completed {
        return Err(Error::conflict("the backup is not complete"));
    }
    if b.damaged {
        return Err(Error::conflict(
            "verify found this backup damaged: restore another one",
        ));
    }
    let store = store_named(ctx, &b.store).await?;
    let host = jobs::ready_host(ctx, body.host.as_deref()).await?;
    let mut spec = b.spec.clone();
    spec.name = body.name.clone();
    spec.start = body.start;
    // The restored disks are the backup's, not the images the VM was made from.
    for (d, f) in spec
        .disks
        .iter_mut()
        .zip(b.report.iter().flat_map(|r| r.files.iter()))
    {
        d.image = None;
        d.size_mib = Some(f.size.div_ceil(1 << 20).max(1));
    }
    let vm_id = crate::vms::reserve(ctx, tenant, &spec).await?;
    let mut op = operations::new(tenant, "restore", &b.id);
    op.revision = ctx.store.create(&op).await?;
    let (ctx2, op_id, b2, tenant) = (ctx.clone(), op.id.clone(), b.clone(), tenant.to_string());
    tokio::spawn(async move {
        let job = JobOp::Restore {
            backup_id: b2.id.clone(),
            spec: Box::new(crate::model::spec_to_hostd(&spec, &vm_id)),
        };
        let outcome = match jobs::run(&ctx2, &host, &store, job, &op_id).await {
            Ok(_) => {
                match crate::vms::record_restored(&ctx2, &tenant, &vm_id, spec, &host.id).await {
                    Ok(vm) => {
                        ctx2.events
                            .publish("backup.restored", &tenant, &b2.id, crate::events::data(&vm))
                            .await;
                        Ok(crate::events::data(&vm))
                    }
                    Err(e) => Err(failed(e)),
                }
            }
            Err(e) => {
                crate::vms::release(&ctx2, &tenant, &spec.name).await;
                Err(failed(e))
            }
        };
        operations::finish(&ctx2, &op_id, &outcome).await;
    });
    Ok(op)
}

/// Starts verifying backup `b`: every chunk re-hashed; damage recorded on the backup.
pub async fn start_verify(ctx: &Context, b: &Backup) -> Result<Operation> {
    if b.state != BackupState::Completed {
        return Err(Error::conflict("the backup is not complete"));
    }
    let store = store_named(ctx, &b.store).await?;
    let host = jobs::ready_host(ctx, None).await?;
    let mut op = operations::new(&b.tenant, "backup.verify", &b.id);
    op.revision = ctx.store.create(&op).await?;
    let (ctx2, op_id, id) = (ctx.clone(), op.id.clone(), b.id.clone());
    tokio::spawn(async move {
        let job = JobOp::Verify {
            backup_id: id.clone(),
        };
        let outcome = async {
            let r = match jobs::run(&ctx2, &host, &store, job, &op_id).await {
                Ok(JobResult::Verify(r)) => r,
                Ok(other) => return Err(failed(format!("unexpected job result {other:?}"))),
                Err(e) => return Err(failed(e)),
            };
            let b = ctx2
                .store
                .update::<Backup, _>(&id, |b| {
                    b.damaged = !r.damaged.is_empty();
                    b.damaged_chunks = r.damaged.clone();
                    b.verified_at_ms = Some(now_ms());
                    true
                })
                .await
                .map_err(failed)?;
            let kind = if b.damaged {
                "backup.damaged"
            } else {
                "backup.verified"
            };
            ctx2.events
                .publish(kind, &b.tenant, &b.id, crate::events::data(&b))
                .await;
            Ok(crate::events::data(&r))
        }
        .await;
        operations::finish(&ctx2, &op_id, &outcome).await;
    });
    Ok(op)
}

/// Deletes `ids` (all of `tenant`, in their stores) and their records; answers the
/// ids deleted. Their chunks go at the store's next GC.
async fn delete_many(
    ctx: &Context,
    backups: &[Backup],
    op_id: &str,
) -> std::result::Result<Vec<String>, String> {
    let mut by_store: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for b in backups {
        by_store.entry(&b.store).or_default().push(b.id.clone());
    }
    let mut deleted = Vec::new();
    for (name, ids) in by_store {
        let store = store_named(ctx, name).await.map_err(|e| e.to_string())?;
        let host = jobs::ready_host(ctx, None)
            .await
            .map_err(|e| e.to_string())?;
        jobs::run(
            ctx,
            &host,
            &store,
            JobOp::Delete {
                backup_ids: ids.clone(),
            },
            op_id,
        )
        .await?;
        for id in ids {
            if let Ok(true) = ctx.store.remove::<Backup>(&id).await {
                if let Some(b) = backups.iter().find(|b| b.id == id) {
                    ctx.events
                        .publish("backup.deleted", &b.tenant, &id, crate::events::data(b))
                        .await;
                }
            }
            deleted.push(id);
        }
    }
    Ok(deleted)
}

/// Starts deleting backup `b` from its store.
pub async fn start_delete(ctx: &Context, b: &Backup) -> Result<Operation> {
    if b.state == BackupState::Running {
        return Err(Error::conflict("the backup is still being written"));
    }
    let mut op = operations::new(&b.tenant, "backup.delete", &b.id);
    op.revision = ctx.store.create(&op).await?;
    let (ctx2, op_id, b2) = (ctx.clone(), op.id.clone(), b.clone());
    tokio::spawn(async move {
        let outcome = delete_many(&ctx2, std::slice::from_ref(&b2), &op_id)
            .await
            .map(|d| {
                crate::events::data(&crate::model::PruneResult {
                    deleted: d,
                    kept: vec![],
                })
            })
            .map_err(failed);
        operations::finish(&ctx2, &op_id, &outcome).await;
    });
    Ok(op)
}

/// Which of a VM's complete backups `retention` keeps, and which it drops.
pub fn select(backups: &[Backup], retention: &BackupRetention) -> (Vec<Backup>, Vec<Backup>) {
    let done: Vec<&Backup> = backups
        .iter()
        .filter(|b| b.state != BackupState::Running)
        .collect();
    let times: Vec<u64> = done.iter().map(|b| b.created_at_ms / 1000).collect();
    let policy = nova_backup::RetentionPolicy {
        keep_last: retention.keep_last,
        keep_hourly: retention.keep_hourly,
        keep_daily: retention.keep_daily,
        keep_weekly: retention.keep_weekly,
    };
    let keep = nova_backup::select_retained(&times, &policy);
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for (i, b) in done.into_iter().enumerate() {
        // A failed backup holds nothing worth keeping.
        if keep.contains(&i) && b.state == BackupState::Completed {
            kept.push(b.clone());
        } else {
            dropped.push(b.clone());
        }
    }
    (kept, dropped)
}

/// Starts pruning VM `vm_id`'s backups (of `tenant`) by `retention`.
pub async fn start_prune(
    ctx: &Context,
    tenant: &str,
    vm_id: &str,
    retention: BackupRetention,
) -> Result<Operation> {
    retention.validate("retention")?;
    let mut op = operations::new(tenant, "backup.prune", vm_id);
    op.revision = ctx.store.create(&op).await?;
    let (ctx2, op_id, vm_id) = (ctx.clone(), op.id.clone(), vm_id.to_string());
    tokio::spawn(async move {
        let outcome = prune(&ctx2, &vm_id, &retention, &op_id).await;
        operations::finish(&ctx2, &op_id, &outcome).await;
    });
    Ok(op)
}

async fn prune(ctx: &Context, vm_id: &str, retention: &BackupRetention, op_id: &str) -> Outcome {
    let mine: Vec<Backup> = ctx
        .store
        .list_all::<Backup>()
        .await
        .map_err(failed)?
        .into_iter()
        .filter(|b| b.vm_id == vm_id)
        .collect();
    let (kept, dropped) = select(&mine, retention);
    let deleted = if dropped.is_empty() {
        Vec::new()
    } else {
        delete_many(ctx, &dropped, op_id).await.map_err(failed)?
    };
    Ok(crate::events::data(&crate::model::PruneResult {
        deleted,
        kept: kept.into_iter().map(|b| b.id).collect(),
    }))
}

/// Starts a GC of store `name`: chunks no backup references, older than `grace_s`.
pub async fn start_gc(ctx: &Context, tenant: &str, name: &str, grace_s: u64) -> Result<Operation> {
    let store = ctx
        .store
        .must_read::<BackupStore>(name)
        .await
        .map_err(missing("backup store"))?;
    let host = jobs::ready_host(ctx, None).await?;
    let mut op = operations::new(tenant, "backup.gc", name);
    op.revision = ctx.store.create(&op).await?;
    let (ctx2, op_id) = (ctx.clone(), op.id.clone());
    tokio::spawn(async move {
        let outcome = match jobs::run(&ctx2, &host, &store, JobOp::Gc { grace_s }, &op_id).await {
            Ok(JobResult::Gc(r)) => Ok(crate::events::data(&r)),
            Ok(other) => Err(failed(format!("unexpected job result {other:?}"))),
            Err(e) => Err(failed(e)),
        };
        operations::finish(&ctx2, &op_id, &outcome).await;
    });
    Ok(op)
}
