//! Cluster snapshots: a VM's memory, devices and disks taken crash-consistently by
//! its host (one pause; disks reflinked, never copied during it) and kept in that
//! host's snapshot store; the controller keeps the record, which tenant owns it and
//! where copies are. A snapshot restores into its own VM (stopped first) or into a
//! new VM on any host (the target hostd pulls the files from the holder first), and
//! is the source templates clone from ([`restore::into_new_vm`]). Schedules
//! ([`schedule`]) take snapshots and prune them by a keep policy ([`keep`]).
//! Domain only: no HTTP here.

pub mod keep;
pub mod restore;
pub mod schedule;

use nova_hostd_api::{validate_id, TakeSnapshot};

use crate::context::Context;
use crate::error::{missing, Error, Result};
use crate::model::{now_ms, Host, Snapshot, SnapshotSchedule, Vm};
use crate::store::{Object, Objects};

impl Object for Snapshot {
    const PREFIX: &'static str = "snapshots/";
    fn key(&self) -> &str {
        &self.id
    }
}

impl Object for SnapshotSchedule {
    const PREFIX: &'static str = "snapshot-schedules/";
    fn key(&self) -> &str {
        &self.vm_id
    }
}

/// Takes a snapshot of `vm` on its host and records it.
pub async fn take(
    ctx: &Context,
    vm: &Vm,
    name: Option<String>,
    scheduled: bool,
) -> Result<Snapshot> {
    let created = now_ms();
    let name = name.unwrap_or_else(|| format!("snap-{created}"));
    validate_id("name", &name)?;
    if vm.migrating.is_some() {
        return Err(Error::conflict("the VM is migrating or being restored"));
    }
    let host_id = vm
        .host
        .clone()
        .ok_or_else(|| Error::conflict("the VM is not placed on a host yet"))?;
    let host = ctx.store.must_read::<Host>(&host_id).await?;
    let id = format!("snap-{}", hex::encode(rand::random::<[u8; 6]>()));
    let stored = ctx
        .hostd(&host)?
        .take_snapshot(&TakeSnapshot {
            id: id.clone(),
            vm_id: vm.id.clone(),
        })
        .await?;
    let snap = Snapshot {
        id,
        tenant: vm.tenant.clone(),
        vm_id: vm.id.clone(),
        vm_name: vm.spec.name.clone(),
        name,
        host: host_id,
        copies: vec![],
        spec: vm.spec.clone(),
        created_at_ms: created,
        paused_ms: stored.paused_ms,
        stored_bytes: stored.stored_bytes,
        scheduled,
    };
    ctx.store.create(&snap).await?;
    ctx.events
        .publish(
            "snapshot.created",
            &snap.tenant,
            &snap.vm_id,
            crate::events::data(&snap),
        )
        .await;
    Ok(snap)
}

/// Every snapshot `keep` accepts, newest first.
pub async fn list(ctx: &Context, keep: impl Fn(&Snapshot) -> bool) -> Result<Vec<Snapshot>> {
    let mut all: Vec<Snapshot> = ctx
        .store
        .list_all::<Snapshot>()
        .await?
        .into_iter()
        .filter(|s| keep(s))
        .collect();
    all.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(b.id.cmp(&a.id)));
    Ok(all)
}

/// Snapshot `id`, if `sees` its tenant (others' answer not found).
pub async fn visible(ctx: &Context, id: &str, sees: impl Fn(&str) -> bool) -> Result<Snapshot> {
    match ctx.store.read::<Snapshot>(id).await? {
        Some(s) if sees(&s.tenant) => Ok(s),
        _ => Err(Error::NotFound("snapshot")),
    }
}

/// Removes a snapshot's files from every host that holds them, then its record. A
/// host that is gone or no longer has them is not an error.
pub async fn delete(ctx: &Context, snap: &Snapshot) -> Result<()> {
    for host_id in std::iter::once(&snap.host).chain(&snap.copies) {
        let Some(host) = ctx.store.read::<Host>(host_id).await? else {
            continue;
        };
        match ctx.hostd(&host)?.delete_stored_snapshot(&snap.id).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.store
        .remove::<Snapshot>(&snap.id)
        .await
        .map_err(missing("snapshot"))?;
    ctx.events
        .publish(
            "snapshot.deleted",
            &snap.tenant,
            &snap.vm_id,
            crate::events::data(&snap),
        )
        .await;
    Ok(())
}
