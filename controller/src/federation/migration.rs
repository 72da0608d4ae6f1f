//! The source side of a cross-cluster live migration: claim the VM, ask the peer
//! (as the user who asked, so the peer's trust policy decides) to admit it, then
//! have the source hostd migrate it through the peer's gateway for this migration
//! (the destination host's own per-migration TLS credential; this cluster's
//! migration policy for the bandwidth cap, compression and mode), following it as
//! an intra-cluster migration is followed. On success the peer adopts the VM and
//! this cluster lets go of its record; on any failure before the switch the VM runs
//! on here and the peer is told to drop what it prepared.

use std::time::Duration;

use nova_hostd_api::{MigrateRequest, MigrationKind, MigrationTarget};
use serde::Serialize;

use super::{caller_token, cluster_token, find_peer, local, Federation, LocalCluster};
use crate::auth::Caller;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{
    gateway_path, now_ms, DesiredState, Host, IncomingVm, MigrationEnd, MigrationResult, OpState,
    Operation, Peer, Vm, VmSpec,
};
use crate::operations::{self, failed, Outcome};
use crate::store::Objects;

/// The operation kind of a cross-cluster migration.
pub const KIND: &str = "migrate-cluster";
/// How long the peer has to admit the VM.
const ADMIT_WITHIN: Duration = Duration::from_secs(15);
/// How long the peer is told, in the background, that nothing moved.
const ABORT_FOR: Duration = Duration::from_secs(600);

/// Starts moving `vm` to peer `cluster` (its host `host`, or where its scheduler
/// says) for `caller`; answers the operation to follow.
pub async fn start(
    ctx: &Context,
    fed: &std::sync::Arc<Federation>,
    caller: &Caller,
    vm: &Vm,
    cluster: &str,
    host: Option<String>,
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
    let peer = find_peer(ctx, cluster)
        .await
        .map_err(|_| Error::conflict_on("cluster", format!("{cluster:?} is not a peer cluster")))?;
    let mut op = operations::new(&vm.tenant, KIND, &vm.id);
    op.revision = ctx.store.create(&op).await?;
    let (ctx2, fed2, caller2, vm_id, op_id) = (
        ctx.clone(),
        fed.clone(),
        caller.clone(),
        vm.id.clone(),
        op.id.clone(),
    );
    // Followed by this process from the start: the restart sweep ([`resume`])
    // leaves it alone.
    ctx.slots.follow(&op.id);
    tokio::spawn(async move {
        let outcome = run(&ctx2, &fed2, &caller2, &vm_id, &peer, host, kind, &op_id).await;
        operations::finish(&ctx2, &op_id, &outcome).await;
        ctx2.slots.unfollow(&op_id);
    });
    Ok(op)
}

/// `spec` with the images its host resolved (a host path becomes the `sha256:` id
/// the host imported it as): how another cluster's hosts know an image.
fn by_content(mut spec: VmSpec, on_host: &nova_hostd_api::VmInfo) -> VmSpec {
    let id = |s: &str| s.starts_with("sha256:").then(|| s.to_string());
    if let Some(k) = id(&on_host.spec.kernel) {
        spec.kernel = k;
    }
    if let Some(i) = on_host.spec.initrd.as_deref().and_then(id) {
        spec.initrd = Some(i);
    }
    for (d, info) in spec.disks.iter_mut().zip(&on_host.disks) {
        if d.read_only && d.image.is_some() {
            if let Some(b) = info.base.as_deref().and_then(id) {
                d.image = Some(b);
            }
        }
    }
    spec
}

fn to_value(r: &MigrationResult) -> serde_json::Value {
    serde_json::to_value(r).unwrap_or_default()
}

/// What `vm.migrating`/`vm.migrated` events of a cross-cluster move say.
#[derive(Serialize)]
struct Leaving<'a> {
    from: &'a str,
    to_cluster: &'a str,
    to_name: &'a str,
    to: &'a str,
    operation: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    downtime_ms: Option<f64>,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    ctx: &Context,
    fed: &Federation,
    caller: &Caller,
    vm_id: &str,
    peer: &Peer,
    host: Option<String>,
    kind: Option<MigrationKind>,
    op_id: &str,
) -> Outcome {
    let policy = crate::migration::policy::load(ctx).await.map_err(failed)?;
    let kind = kind.unwrap_or(policy.kind);
    let vm = ctx.store.must_read::<Vm>(vm_id).await.map_err(failed)?;
    let src_id = vm
        .host
        .clone()
        .ok_or_else(|| failed("the VM is not placed"))?;
    let src = ctx.store.must_read::<Host>(&src_id).await.map_err(failed)?;
    let me = local(ctx).await.map_err(failed)?;
    if !crate::migration::claim(ctx, vm_id, &src_id, op_id)
        .await
        .map_err(failed)?
    {
        return Err(failed("the VM moved or is already migrating"));
    }
    let mut base = MigrationResult {
        from: src_id.clone(),
        mode: Some(policy.params.mode),
        kind: Some(kind),
        cluster: Some(peer.name.clone()),
        ..Default::default()
    };
    let _ = operations::update(ctx, op_id, |o| {
        o.state = OpState::Running;
        o.progress = 2;
        o.message = format!("asking cluster {} to admit the VM", peer.name);
        o.result = to_value(&base);
    })
    .await;
    // The images by content, as the source host resolved them: the peer's hosts
    // know an image by its id, and its gateway takes uploads of these only.
    let on_host = ctx
        .hostd(&src)
        .map_err(failed)?
        .vm(vm_id)
        .await
        .map_err(|e| failed(format!("the source host: {e}")))?;
    // The peer's own admission: as the user who asked (its trust policy maps them).
    let ask = IncomingVm {
        vm_id: vm.id.clone(),
        spec: by_content(vm.spec.clone(), &on_host),
        created_at_ms: vm.created_at_ms,
        source_host: src_id.clone(),
        operation: op_id.to_string(),
        host,
        timeout_s: (policy.completion_timeout_s + 120).clamp(60, 86_400),
    };
    let admitted = async {
        let token = caller_token(&me, caller, &peer.cluster_id)?;
        let c = fed.client(&peer.url, &token)?;
        match tokio::time::timeout(ADMIT_WITHIN, c.admit_migration(&ask)).await {
            Err(_) => Err(Error::conflict(format!(
                "cluster {} did not answer within {} s",
                peer.name,
                ADMIT_WITHIN.as_secs()
            ))),
            Ok(Err(e)) if e.is_unreachable() => Err(Error::conflict(format!(
                "cluster {} could not be reached: {e}",
                peer.name
            ))),
            Ok(Err(e)) => Err(Error::conflict(format!(
                "cluster {} refused the VM: {}",
                peer.name,
                e.body()
                    .map(|b| b.error.clone())
                    .unwrap_or_else(|| e.to_string())
            ))),
            Ok(Ok(a)) => Ok(a),
        }
    }
    .await;
    let admitted = match admitted {
        Ok(a) => a,
        Err(e) => {
            unclaim(ctx, vm_id, op_id).await;
            return Err(failed(e));
        }
    };
    base.to = admitted.host.clone();
    let _ = operations::update(ctx, op_id, |o| {
        o.progress = 5;
        o.message = format!(
            "migrating {src_id} -> {} in cluster {}",
            admitted.host, peer.name
        );
        o.result = to_value(&base);
    })
    .await;
    ctx.events
        .publish(
            "vm.migrating",
            &vm.tenant,
            vm_id,
            crate::events::data(&Leaving {
                from: &src_id,
                to_cluster: &peer.cluster_id,
                to_name: &peer.name,
                to: &admitted.host,
                operation: op_id,
                downtime_ms: None,
            }),
        )
        .await;
    let slot_to = format!("{}/{}", peer.cluster_id, admitted.host);
    let slot = loop {
        if let Some(s) = ctx.slots.try_take(&policy, &src_id, &slot_to) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The source hostd prepares the destination through the peer's gateway for this
    // migration only; the VMMs then talk directly, over TLS with the destination's
    // per-migration credential, under this cluster's policy.
    let rq = MigrateRequest {
        to: MigrationTarget {
            url: format!("{}{}", peer.url, gateway_path(&admitted.migration_id)),
            token: admitted.token.clone(),
        },
        params: policy.params,
        kind,
    };
    let outcome = match ctx.hostd(&src) {
        Ok(hd) => match hd.migrate(vm_id, &rq).await {
            Ok(_) => {
                let out = crate::migration::follow(ctx, &hd, &base, vm_id, op_id, &policy).await;
                // `follow` lets go of the operation when it ends; it is not over yet.
                ctx.slots.follow(op_id);
                out
            }
            Err(e) => Err(failed(format!("source hostd refused: {e}"))),
        },
        Err(e) => Err(failed(e)),
    };
    drop(slot);
    let token = cluster_token(&me, &peer.cluster_id).ok();
    match &outcome {
        Ok(result) => {
            let r: MigrationResult = serde_json::from_value(result.clone()).unwrap_or_default();
            let end = MigrationEnd {
                downtime_ms: r.downtime_ms,
                total_ms: r.total_ms,
                error: None,
            };
            // The peer adopted the VM when its host took it; this confirms it.
            if let Some(t) = &token {
                if let Ok(c) = fed.client(&peer.url, t) {
                    if let Err(e) = c.commit_migration(&admitted.migration_id, &end).await {
                        tracing::warn!(vm = vm_id, "telling {} the VM arrived: {e}", peer.name);
                    }
                }
            }
            ctx.events
                .publish(
                    "vm.migrated",
                    &vm.tenant,
                    vm_id,
                    crate::events::data(&Leaving {
                        from: &src_id,
                        to_cluster: &peer.cluster_id,
                        to_name: &peer.name,
                        to: &admitted.host,
                        operation: op_id,
                        downtime_ms: r.downtime_ms,
                    }),
                )
                .await;
            // The VM is the peer's now: this cluster forgets it (and frees its name).
            let gone = Vm {
                desired: DesiredState::Deleted,
                ..ctx.store.must_read::<Vm>(vm_id).await.map_err(failed)?
            };
            crate::vms::forget(ctx, &gone).await.map_err(failed)?;
            tracing::info!(vm = vm_id, to = %peer.name, "federation: VM migrated out");
        }
        Err((_, why)) => {
            unclaim(ctx, vm_id, op_id).await;
            tell_abort(fed, &me, peer, &admitted.migration_id, why.clone());
        }
    }
    outcome
}

/// Lets go of the VM after a failure: it runs on here.
async fn unclaim(ctx: &Context, vm_id: &str, op_id: &str) {
    let r = ctx
        .store
        .update::<Vm, _>(vm_id, |v| {
            if v.migrating.as_deref() != Some(op_id) {
                return false;
            }
            v.migrating = None;
            true
        })
        .await;
    if let Err(e) = r {
        tracing::error!(vm = vm_id, "releasing after a failed migration: {e}");
    }
}

/// Tells the peer, until it hears it (or for [`ABORT_FOR`]), that nothing moved.
fn tell_abort(fed: &Federation, me: &LocalCluster, peer: &Peer, mid: &str, why: String) {
    let (mid, name, url, peer_id) = (
        mid.to_string(),
        peer.name.clone(),
        peer.url.clone(),
        peer.cluster_id.clone(),
    );
    let me = me.clone();
    // A fresh short-lived cluster token for every attempt.
    let client = {
        let http = fed.http.clone();
        move || -> Option<nova_controller_api::ControllerClient> {
            let t = cluster_token(&me, &peer_id).ok()?;
            nova_controller_api::ControllerClient::sharing(&http, &url, &t).ok()
        }
    };
    tokio::spawn(async move {
        let end = MigrationEnd {
            error: Some(why),
            ..Default::default()
        };
        let started = now_ms();
        let mut delay = Duration::from_millis(200);
        while now_ms() - started < ABORT_FOR.as_millis() as u64 {
            if let Some(c) = client() {
                match tokio::time::timeout(Duration::from_secs(5), c.abort_migration(&mid, &end))
                    .await
                {
                    Ok(Ok(_)) => return,
                    Ok(Err(e)) if matches!(e.status(), Some(404 | 409)) => return,
                    _ => {}
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        tracing::warn!(migration = %mid, peer = %name, "the peer never heard the abort; its watch drops it");
    });
}

/// After a controller restart (or a new leader): a cross-cluster migration that
/// nobody here follows ends by what the source hostd says: the VM gone from it or
/// its migration completed (the peer has adopted it: forget it here), failed or
/// never started (it runs here: let go of it). One still streaming is looked at
/// again on the next pass; the peer's own watch settles its side.
pub async fn resume(ctx: &Context) -> Result<()> {
    use nova_hostd_api::MigrationState;
    for op in ctx.store.list_all::<Operation>().await? {
        if op.state.is_final() || op.kind != KIND || ctx.slots.follows(&op.id) {
            continue;
        }
        let Some(vm) = ctx.store.read::<Vm>(&op.target).await? else {
            operations::finish(ctx, &op.id, &Err(failed("the VM is gone"))).await;
            continue;
        };
        if vm.migrating.as_deref() != Some(op.id.as_str()) {
            if now_ms().saturating_sub(op.updated_at_ms) > 5_000 {
                let why = failed("interrupted by a controller restart before it started");
                operations::finish(ctx, &op.id, &Err(why)).await;
            }
            continue;
        }
        let Some(src) = vm.host.as_deref() else {
            continue;
        };
        let Some(h) = ctx.store.read::<Host>(src).await? else {
            continue;
        };
        let Ok(hd) = ctx.hostd(&h) else { continue };
        let gone = match hd.vm(&vm.id).await {
            Err(e) if e.is_not_found() => true,
            Err(_) => continue,
            Ok(_) => false,
        };
        let state = match hd.migration(&vm.id).await {
            Ok(m) => Some((m.state, m.error)),
            Err(e) if e.is_not_found() => None,
            Err(_) => continue,
        };
        let outcome: Outcome = match state {
            _ if gone => Ok(op.result.clone()),
            Some((MigrationState::Completed, _)) => Ok(op.result.clone()),
            Some((MigrationState::Failed | MigrationState::Cancelled, why)) => {
                Err(failed(why.unwrap_or_else(|| "failed".into())))
            }
            None => Err(failed(
                "interrupted by a controller restart before it started",
            )),
            Some(_) => continue,
        };
        tracing::info!(op = %op.id, vm = %vm.id, ok = outcome.is_ok(),
            "federation: ending a migration started before a restart");
        match &outcome {
            Ok(_) => {
                let gone = Vm {
                    desired: DesiredState::Deleted,
                    ..vm.clone()
                };
                crate::vms::forget(ctx, &gone).await?;
            }
            Err(_) => unclaim(ctx, &vm.id, &op.id).await,
        }
        operations::finish(ctx, &op.id, &outcome).await;
    }
    Ok(())
}
