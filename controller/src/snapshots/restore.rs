//! Restoring a snapshot: into its own VM (the VM is held, stopped, and its host
//! restores the snapshot's disks and memory), or into a new VM on any host (the
//! new VM is recorded already placed and held so the reconcile loop leaves it
//! alone, its host pulls the snapshot if it lacks it, creates the VM stopped and
//! restores into it, eagerly or as a copy-on-write clone).

use nova_hostd_api::{FetchSnapshot, RestoreRequest};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{now_ms, DesiredState, Host, HostState, Observed, Snapshot, Vm, VmSpec};
use crate::store::Objects;

/// What `Vm.migrating` holds while a restore works on the VM: the reconcile loop
/// and migrations leave a VM alone while it is set.
fn hold_of(snap: &Snapshot) -> String {
    format!("restore-{}", snap.id)
}

/// Makes sure `host` has the snapshot in its store (pulling it from the holder).
async fn ensure_on(ctx: &Context, snap: &Snapshot, host: &Host) -> Result<()> {
    if host.id == snap.host || snap.copies.contains(&host.id) {
        return Ok(());
    }
    let holder = ctx.store.must_read::<Host>(&snap.host).await?;
    ctx.hostd(host)?
        .fetch_snapshot(
            &snap.id,
            &FetchSnapshot {
                from_url: holder.url.clone(),
                token: holder.hostd_token.clone(),
            },
        )
        .await?;
    let to = host.id.clone();
    ctx.store
        .update::<Snapshot, _>(&snap.id, |s| {
            let add = !s.copies.contains(&to);
            if add {
                s.copies.push(to.clone());
            }
            add
        })
        .await?;
    Ok(())
}

/// A Ready host by id.
async fn ready_host(ctx: &Context, id: &str) -> Result<Host> {
    let h = ctx
        .store
        .read::<Host>(id)
        .await?
        .ok_or_else(|| Error::Invalid(nova_http::FieldError::new("host", "no such host")))?;
    if h.state != HostState::Ready {
        return Err(Error::conflict_on(
            "host",
            format!("host {id} is not ready"),
        ));
    }
    Ok(h)
}

/// Lets the reconcile loop have VM `id` again, with `observed` when given.
async fn release(ctx: &Context, id: &str, hold: &str, failed: Option<String>, host: &str) {
    let r = ctx
        .store
        .update::<Vm, _>(id, |v| {
            if v.migrating.as_deref() != Some(hold) {
                return false;
            }
            v.migrating = None;
            if failed.is_some() {
                v.desired = DesiredState::Stopped;
            }
            v.observed = Some(Observed {
                state: if failed.is_some() { "error" } else { "running" }.into(),
                host: Some(host.to_string()),
                at_ms: now_ms(),
                error: failed.clone(),
            });
            true
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(vm = id, "releasing a restore's hold: {e}");
    }
}

/// Restores `snap` into the VM it was taken of, on that VM's host.
pub async fn in_place(ctx: &Context, snap: &Snapshot) -> Result<Vm> {
    let hold = hold_of(snap);
    let vm = ctx
        .store
        .read::<Vm>(&snap.vm_id)
        .await?
        .ok_or_else(|| Error::conflict("the snapshot's VM is gone: restore it to a new VM"))?;
    let host_id = vm
        .host
        .clone()
        .ok_or_else(|| Error::conflict("the VM is not placed on a host"))?;
    let host = ready_host(ctx, &host_id).await?;
    let mut held = false;
    ctx.store
        .update::<Vm, _>(&vm.id, |v| {
            held = v.migrating.is_none() && v.desired != DesiredState::Deleted;
            if held {
                v.migrating = Some(hold.clone());
                v.desired = DesiredState::Running;
            }
            held
        })
        .await?;
    if !held {
        return Err(Error::conflict(
            "the VM is migrating, being restored or deleted",
        ));
    }
    let work = async {
        ensure_on(ctx, snap, &host).await?;
        let hd = ctx.hostd(&host)?;
        match hd.stop(&vm.id, true).await {
            Ok(_) => {}
            Err(e) if e.status() == Some(409) => {} // already stopped
            Err(e) => return Err(Error::from(e)),
        }
        hd.restore(&vm.id, &stored_request(snap, false)).await?;
        Ok(())
    }
    .await;
    release(
        ctx,
        &vm.id,
        &hold,
        work.as_ref().err().map(|e| e.to_string()),
        &host.id,
    )
    .await;
    work?;
    publish_restored(ctx, snap, &vm.id, &host.id, false).await;
    Ok(ctx.store.must_read::<Vm>(&vm.id).await?)
}

fn stored_request(snap: &Snapshot, clone: bool) -> RestoreRequest {
    RestoreRequest {
        snapshot: snap.id.clone(),
        lazy: false,
        stored: true,
        clone,
    }
}

/// What `snapshot.restored` says: which snapshot, where, and whether as a clone.
#[derive(serde::Serialize)]
struct Restored<'a> {
    snapshot: &'a str,
    host: &'a str,
    clone: bool,
}

async fn publish_restored(ctx: &Context, snap: &Snapshot, vm: &str, host: &str, clone: bool) {
    let restored = Restored {
        snapshot: &snap.id,
        host,
        clone,
    };
    ctx.events
        .publish(
            "snapshot.restored",
            &snap.tenant,
            vm,
            crate::events::data(&restored),
        )
        .await;
}

/// Restores `snap` into a new VM of `tenant` with `spec` (the snapshot's, renamed,
/// perhaps with other guest configuration) on `host` (the snapshot's holder when
/// None). `clone` maps the snapshot's memory copy-on-write instead of copying it.
pub async fn into_new_vm(
    ctx: &Context,
    tenant: &str,
    snap: &Snapshot,
    mut spec: VmSpec,
    host: Option<&str>,
    clone: bool,
) -> Result<Vm> {
    let host = ready_host(ctx, host.unwrap_or(&snap.host)).await?;
    // A new VM is a new machine: its NICs get MACs of their own.
    for n in &mut spec.nics {
        n.mac = None;
    }
    spec.start = true;
    let hold = hold_of(snap);
    let vm = crate::vms::create_held(ctx, tenant, spec, &host.id, &hold).await?;
    let work = async {
        ensure_on(ctx, snap, &host).await?;
        let hd = ctx.hostd(&host)?;
        let mut hspec = crate::model::spec_to_hostd(&vm.spec, &vm.id);
        hspec.start = false;
        hd.create(&hspec).await?;
        hd.restore(&vm.id, &stored_request(snap, clone)).await?;
        Ok::<_, Error>(())
    }
    .await;
    release(
        ctx,
        &vm.id,
        &hold,
        work.as_ref().err().map(|e| e.to_string()),
        &host.id,
    )
    .await;
    work?;
    publish_restored(ctx, snap, &vm.id, &host.id, clone).await;
    Ok(ctx.store.must_read::<Vm>(&vm.id).await?)
}
