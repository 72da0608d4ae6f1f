//! The destination side of a cross-cluster live migration. A peer's user (mapped
//! by this cluster's trust policy) asks to admit a VM: this cluster's own checks
//! (spec, quota, name) and scheduler pick the host, and a held VM record keeps its
//! place there. The source hostd then prepares that host through a gateway scoped
//! to this one migration (its own bearer token; only the calls a migration makes,
//! checked against what was admitted), so no host token ever leaves the cluster. The
//! record is adopted (the VM is this cluster's, with its id, name and history) once
//! the VM runs here, and dropped with everything made for it otherwise: told by the
//! source, or found by the watch on the host when the source goes silent. The
//! gateway itself is [`super::gateway`].

use std::time::Duration;

use nova_hostd_api::{HostdClient, IncomingOutcome, VmState};
use serde::{Deserialize, Serialize};

use super::local;
use crate::auth::{self, Caller};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{
    now_ms, Admitted, Host, IncomingMigration, IncomingPhase, IncomingVm, MigrationEnd, Observed,
    Vm, VmSpec,
};
use crate::placement;
use crate::scheduler::{self, Weights};
use crate::store::{Object, Objects};

/// How long the source may take to ask for the destination's preparation.
const PREPARE_WITHIN_MS: u64 = 120_000;
/// How often the watch looks at the destination host.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// An incoming migration as this cluster keeps it: what it shows, the hash of the
/// gateway's token, and the destination hostd's own migration id once prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arriving {
    pub shown: IncomingMigration,
    pub token_hash: String,
    /// The id the source hostd gave the migration (set when prepared).
    #[serde(default)]
    pub hostd_migration: Option<String>,
    /// The spec's vCPUs and memory as admitted: what the host prepares must match.
    pub vcpus: u8,
    pub mem_mib: u64,
    /// The images the VM boots from ([`boot_images`]): the ones the source may
    /// upload to the destination host through the gateway.
    #[serde(default)]
    pub images: Vec<String>,
}

/// The images a host needs to run `spec` (kernel, initrd, read-only disks' images;
/// writable disks travel in the VMM's stream), those named by content (`sha256:`)
/// only: a host path means nothing in another cluster.
pub fn boot_images(spec: &VmSpec) -> Vec<String> {
    let mut v = vec![spec.kernel.clone()];
    v.extend(spec.initrd.clone());
    v.extend(
        spec.disks
            .iter()
            .filter(|d| d.read_only)
            .filter_map(|d| d.image.clone()),
    );
    v.retain(|i| i.starts_with("sha256:"));
    v
}

impl Object for Arriving {
    const PREFIX: &'static str = "federation-incoming/";
    fn key(&self) -> &str {
        &self.shown.migration_id
    }
}

/// What holds an arriving VM's record (its `migrating`).
fn hold_of(mid: &str) -> String {
    format!("federation:{mid}")
}

pub(super) fn valid_id(
    field: &str,
    id: &str,
    prefix: &str,
) -> std::result::Result<(), nova_http::FieldError> {
    let ok = id.strip_prefix(prefix).is_some_and(|h| {
        !h.is_empty() && h.len() <= 32 && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if ok {
        Ok(())
    } else {
        Err(nova_http::FieldError::new(
            field,
            format!("must be {prefix}<letters and digits>"),
        ))
    }
}

/// Admits `v` from peer `peer` for `caller` (a peer's user as this cluster's policy
/// maps them): places it, holds its place, and answers the gateway's credential.
pub async fn admit(ctx: &Context, peer: &str, caller: &Caller, v: &IncomingVm) -> Result<Admitted> {
    valid_id("vm_id", &v.vm_id, "vm-")?;
    valid_id("operation", &v.operation, "op-")?;
    if v.source_host.is_empty() || v.source_host.len() > 128 {
        return Err(
            nova_http::FieldError::new("source_host", "must be 1 to 128 characters").into(),
        );
    }
    if !(60..=86_400).contains(&v.timeout_s) {
        return Err(nova_http::FieldError::new("timeout_s", "must be 60 to 86400").into());
    }
    crate::vms::validate_spec(&v.spec).map_err(|e| e.under("spec"))?;
    if !caller.can_operate() {
        return Err(Error::Forbidden(format!(
            "this cluster's trust policy gives {} the role {:?} in tenant {}: it cannot \
             create VMs here",
            caller.user, caller.role, caller.tenant
        )));
    }
    if v.host.is_some() && !caller.is_cluster() {
        return Err(Error::Forbidden(
            "only the system tenant chooses destination hosts".into(),
        ));
    }
    let source = ctx
        .store
        .read::<crate::model::Peer>(peer)
        .await?
        .ok_or(Error::NotFound("peer"))?;
    // This cluster's own scheduler, with its own filters, picks the host.
    let probe = Vm {
        id: v.vm_id.clone(),
        tenant: caller.tenant.clone(),
        spec: v.spec.clone(),
        desired: crate::model::DesiredState::Running,
        host: None,
        observed: None,
        migrating: None,
        created_at_ms: v.created_at_ms,
        revision: 0,
    };
    let (views, vms) = placement::host_views(ctx).await?;
    let tenants = placement::tenants(ctx).await?;
    let req = placement::request_for(&probe, &tenants, &vms);
    let candidates: Vec<_> = match &v.host {
        Some(h) => views.into_iter().filter(|x| x.id == *h).collect(),
        None => views,
    };
    if v.host.is_some() && candidates.is_empty() {
        return Err(Error::conflict_on("host", "no such host in this cluster"));
    }
    let me = local(ctx).await?;
    let host = match scheduler::place(&req, &candidates, Weights::default()) {
        Ok(h) => h.id.clone(),
        Err(e) => {
            return Err(Error::conflict(format!(
                "cluster {} has no host for the VM: {e}",
                me.name
            )))
        }
    };
    let mid = format!("xmig-{}", hex::encode(rand::random::<[u8; 8]>()));
    crate::vms::create_arriving(
        ctx,
        &v.vm_id,
        &caller.tenant,
        v.spec.clone(),
        &host,
        &hold_of(&mid),
        v.created_at_ms,
    )
    .await?;
    let token = auth::new_secret();
    let now = now_ms();
    let a = Arriving {
        shown: IncomingMigration {
            migration_id: mid.clone(),
            vm_id: v.vm_id.clone(),
            tenant: caller.tenant.clone(),
            host: host.clone(),
            phase: IncomingPhase::Admitted,
            source_cluster: source.cluster_id.clone(),
            source_name: source.name.clone(),
            source_host: v.source_host.clone(),
            operation: v.operation.clone(),
            created_at_ms: now,
            deadline_ms: now + v.timeout_s * 1000,
            error: None,
        },
        token_hash: auth::hash(&token),
        hostd_migration: None,
        vcpus: v.spec.vcpus,
        mem_mib: v.spec.mem_mib,
        images: boot_images(&v.spec),
    };
    if let Err(e) = ctx.store.create(&a).await {
        let _ = forget_record(ctx, &v.vm_id, &mid).await;
        return Err(e.into());
    }
    ctx.events
        .publish(
            "vm.migration_admitted",
            &caller.tenant,
            &v.vm_id,
            crate::events::data(&a.shown),
        )
        .await;
    tracing::info!(vm = %v.vm_id, from = %source.name, %host, migration = %mid,
        "federation: admitted an incoming migration");
    watch(ctx.clone(), mid.clone());
    Ok(Admitted {
        migration_id: mid,
        host,
        tenant: caller.tenant.clone(),
        token,
    })
}

/// An incoming migration of peer `peer` (or, with None, of any peer: a local admin).
pub async fn show(ctx: &Context, peer: Option<&str>, mid: &str) -> Result<IncomingMigration> {
    let a = ctx
        .store
        .read::<Arriving>(mid)
        .await?
        .filter(|a| peer.is_none_or(|p| p == a.shown.source_cluster))
        .ok_or(Error::NotFound("incoming migration"))?;
    Ok(a.shown)
}

/// The source says the VM runs here: adopt it (idempotent).
pub async fn commit(
    ctx: &Context,
    peer: &str,
    mid: &str,
    e: &MigrationEnd,
) -> Result<IncomingMigration> {
    show(ctx, Some(peer), mid).await?;
    adopt(ctx, mid, e.downtime_ms).await?;
    show(ctx, Some(peer), mid).await
}

/// The source says nothing moved: drop what was made here (idempotent; refused once
/// adopted).
pub async fn abort(
    ctx: &Context,
    peer: &str,
    mid: &str,
    e: &MigrationEnd,
) -> Result<IncomingMigration> {
    let a = show(ctx, Some(peer), mid).await?;
    if a.phase == IncomingPhase::Adopted {
        return Err(Error::conflict("the VM runs here already"));
    }
    let why = e
        .error
        .clone()
        .unwrap_or_else(|| "aborted by the source".into());
    drop_arrival(ctx, mid, &why).await?;
    show(ctx, Some(peer), mid).await
}

async fn forget_record(ctx: &Context, vm_id: &str, mid: &str) -> Result<()> {
    if let Some(vm) = ctx.store.read::<Vm>(vm_id).await? {
        if vm.migrating.as_deref() == Some(hold_of(mid).as_str()) {
            crate::vms::forget(ctx, &vm).await?;
        }
    }
    Ok(())
}

async fn set_phase(
    ctx: &Context,
    mid: &str,
    phase: IncomingPhase,
    error: Option<String>,
) -> Result<Arriving> {
    Ok(ctx
        .store
        .update::<Arriving, _>(mid, |a| {
            let final_ = matches!(
                a.shown.phase,
                IncomingPhase::Adopted | IncomingPhase::Dropped
            );
            if final_ || a.shown.phase == phase {
                return false;
            }
            a.shown.phase = phase;
            a.shown.error = error.clone();
            true
        })
        .await?)
}

/// The VM runs on its host here: its record is this cluster's now.
pub(super) async fn adopt(ctx: &Context, mid: &str, downtime_ms: Option<f64>) -> Result<()> {
    let a = ctx.store.must_read::<Arriving>(mid).await?;
    match a.shown.phase {
        IncomingPhase::Adopted => return Ok(()),
        IncomingPhase::Dropped => {
            return Err(Error::conflict(
                "this migration was dropped here: the VM does not run here",
            ))
        }
        _ => {}
    }
    let hold = hold_of(mid);
    let host = a.shown.host.clone();
    ctx.store
        .update::<Vm, _>(&a.shown.vm_id, |v| {
            if v.migrating.as_deref() != Some(hold.as_str()) {
                return false;
            }
            v.migrating = None;
            v.observed = Some(Observed {
                state: "running".into(),
                host: Some(host.clone()),
                at_ms: now_ms(),
                error: None,
            });
            true
        })
        .await?;
    let done = set_phase(ctx, mid, IncomingPhase::Adopted, None).await?;
    #[derive(Serialize)]
    struct Arrived<'a> {
        from_cluster: &'a str,
        from_name: &'a str,
        from_host: &'a str,
        operation: &'a str,
        migration: &'a str,
        host: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        downtime_ms: Option<f64>,
    }
    let s = &done.shown;
    ctx.events
        .publish(
            "vm.migrated_in",
            &s.tenant,
            &s.vm_id,
            crate::events::data(&Arrived {
                from_cluster: &s.source_cluster,
                from_name: &s.source_name,
                from_host: &s.source_host,
                operation: &s.operation,
                migration: &s.migration_id,
                host: &s.host,
                downtime_ms,
            }),
        )
        .await;
    tracing::info!(vm = %s.vm_id, from = %s.source_name, host = %s.host,
        "federation: a VM migrated in; adopted");
    Ok(())
}

/// Nothing moved: the host drops what it prepared, the held record goes.
pub(super) async fn drop_arrival(ctx: &Context, mid: &str, why: &str) -> Result<()> {
    let a = ctx.store.must_read::<Arriving>(mid).await?;
    if matches!(
        a.shown.phase,
        IncomingPhase::Dropped | IncomingPhase::Adopted
    ) {
        return Ok(());
    }
    if let Some(hm) = &a.hostd_migration {
        if let Ok(hd) = host_client(ctx, &a.shown.host).await {
            let o = IncomingOutcome {
                downtime_ms: None,
                error: Some(why.to_string()),
            };
            match hd.incoming_abort(hm, &o).await {
                Ok(()) => {}
                Err(e) if matches!(e.status(), Some(404)) => {}
                Err(e) if e.status() == Some(409) => {
                    // It completed on the host after all: the VM runs here.
                    return adopt(ctx, mid, None).await;
                }
                Err(e) => tracing::warn!(migration = mid, "telling the host to abort: {e}"),
            }
        }
    }
    forget_record(ctx, &a.shown.vm_id, mid).await?;
    let done = set_phase(ctx, mid, IncomingPhase::Dropped, Some(why.to_string())).await?;
    ctx.events
        .publish(
            "vm.migration_dropped",
            &done.shown.tenant,
            &done.shown.vm_id,
            crate::events::data(&done.shown),
        )
        .await;
    tracing::info!(
        migration = mid,
        why,
        "federation: dropped an incoming migration"
    );
    Ok(())
}

/// The client of `host`'s hostd, down or not: a call to a host that is gone fails
/// as unreachable (a 502 through the gateway), which the source hostd retries.
pub(super) async fn host_client(ctx: &Context, host: &str) -> Result<HostdClient> {
    let h = ctx.store.must_read::<Host>(host).await?;
    ctx.hostd(&h)
}

/// Watches an incoming migration until it ends: adopts it when the VM runs on its
/// host (whatever the source says), drops it when the host no longer has it, when
/// the source never asked for the preparation, or at its deadline.
fn watch(ctx: Context, mid: String) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let Ok(Some(a)) = ctx.store.read::<Arriving>(&mid).await else {
                return;
            };
            if matches!(
                a.shown.phase,
                IncomingPhase::Adopted | IncomingPhase::Dropped
            ) {
                return;
            }
            let now = now_ms();
            let seen = match host_client(&ctx, &a.shown.host).await {
                Ok(hd) => match hd.vm(&a.shown.vm_id).await {
                    Ok(v) => Some(Some(v.state)),
                    Err(e) if e.is_not_found() => Some(None),
                    Err(_) => None,
                },
                Err(_) => None,
            };
            let r = match seen {
                Some(Some(VmState::Running | VmState::Paused)) => adopt(&ctx, &mid, None).await,
                Some(None) if a.shown.phase == IncomingPhase::Prepared => {
                    drop_arrival(&ctx, &mid, "the destination host gave the VM up").await
                }
                _ if a.shown.phase == IncomingPhase::Admitted
                    && now > a.shown.created_at_ms + PREPARE_WITHIN_MS =>
                {
                    drop_arrival(&ctx, &mid, "the source never asked for the preparation").await
                }
                _ if now > a.shown.deadline_ms => {
                    drop_arrival(&ctx, &mid, "the migration did not end in time").await
                }
                _ => Ok(()),
            };
            if let Err(e) = r {
                tracing::warn!(migration = %mid, "watching an incoming migration: {e}");
            }
        }
    });
}

/// After a restart: every incoming migration still open is watched again.
pub async fn resume(ctx: &Context) -> Result<()> {
    for a in ctx.store.list_all::<Arriving>().await? {
        if !matches!(
            a.shown.phase,
            IncomingPhase::Adopted | IncomingPhase::Dropped
        ) {
            watch(ctx.clone(), a.shown.migration_id.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DiskRequest;

    #[test]
    fn a_gateway_takes_only_the_images_the_vm_boots_from_named_by_content() {
        let disk = |image: &str, read_only| DiskRequest {
            image: Some(image.into()),
            size_mib: None,
            read_only,
            shared_path: None,
        };
        let mut spec = VmSpec::new("v", "sha256:k");
        spec.initrd = Some("sha256:i".into());
        spec.disks = vec![
            disk("sha256:ro", true),
            // A writable disk travels in the VMM's stream; a path names nothing there.
            disk("sha256:rw", false),
            disk("/srv/images/ro.raw", true),
        ];
        assert_eq!(boot_images(&spec), ["sha256:k", "sha256:i", "sha256:ro"]);
        assert!(boot_images(&VmSpec::new("v", "/boot/vmlinuz")).is_empty());
    }

    #[test]
    fn ids_are_their_prefix_and_letters_digits_or_dashes() {
        assert!(valid_id("vm_id", "vm-0a1b2c", "vm-").is_ok());
        assert!(valid_id("migration", "xmig-00ff", "xmig-").is_ok());
        for bad in [
            "vm-",
            "vm",
            "x-1",
            "vm-a/b",
            "vm-a b",
            "vm-../x",
            &format!("vm-{}", "a".repeat(33)),
        ] {
            assert_eq!(
                valid_id("vm_id", bad, "vm-").unwrap_err().field,
                "vm_id",
                "{bad}"
            );
        }
    }
}
