//! VMs as the controller owns them: a spec checked field by field, a name unique in
//! its tenant, the tenant's quota, the desired state users change (start, stop,
//! delete, guarded by the revision they read) and the observed state hosts report.
//! The reconcile loop makes hosts follow; nothing here calls a host except a forced
//! stop and the console.

use nova_http::FieldError;

use crate::context::Context;
use crate::error::{missing, Error, Result};
use crate::model::{now_ms, ConsoleLines, DesiredState, Observed, Resources, Tenant, Vm, VmSpec};
use crate::store::{Expect, Objects, StoreError};

/// The prefix of the name claims: `vmnames/<tenant>/<name>` holds the VM's id.
const NAMES: &str = "vmnames/";

/// Checks a label key or value (also used for `k=v` affinity terms).
pub fn validate_label(field: &str, s: &str) -> std::result::Result<(), FieldError> {
    if s.is_empty() || s.len() > 63 {
        return Err(FieldError::new(field, "must be 1 to 63 characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(FieldError::new(
            field,
            format!("character {c:?} not allowed"),
        ));
    }
    Ok(())
}

/// Checks a spec, naming the field.
pub fn validate_spec(s: &VmSpec) -> std::result::Result<(), FieldError> {
    crate::model::spec_to_hostd(s, "x").validate()?;
    if s.labels.len() > 32 {
        return Err(FieldError::new("labels", "more than 32 labels"));
    }
    for (k, v) in &s.labels {
        validate_label(&format!("labels.{k}"), k)?;
        validate_label(&format!("labels.{k}"), v)?;
    }
    for (k, v) in &s.affinity.host_labels {
        validate_label(&format!("affinity.host_labels.{k}"), k)?;
        validate_label(&format!("affinity.host_labels.{k}"), v)?;
    }
    for (name, terms) in [
        ("with", &s.affinity.with),
        ("apart_from", &s.affinity.apart_from),
    ] {
        if terms.len() > 16 {
            return Err(FieldError::new(
                format!("affinity.{name}"),
                "more than 16 terms",
            ));
        }
        for (i, t) in terms.iter().enumerate() {
            let field = format!("affinity.{name}[{i}]");
            let (k, v) = t
                .split_once('=')
                .ok_or_else(|| FieldError::new(&field, "must be key=value"))?;
            validate_label(&field, k)?;
            validate_label(&field, v)?;
        }
    }
    Ok(())
}

/// Refuses a VM that would take `tenant` over its quota, or past the cluster's
/// `--max-vms-per-tenant`.
async fn check_quota(ctx: &Context, tenant: &str, spec: &VmSpec) -> Result<()> {
    let max = ctx.settings.max_vms_per_tenant;
    let count = ctx
        .store
        .list_all::<Vm>()
        .await?
        .iter()
        .filter(|v| v.tenant == tenant && v.desired != DesiredState::Deleted)
        .count() as u64;
    if count >= max {
        return Err(Error::conflict(format!(
            "tenant {tenant} has {count} VMs: this cluster allows {max} per tenant (--max-vms-per-tenant)"
        )));
    }
    let Some(q) = ctx
        .store
        .read::<Tenant>(tenant)
        .await?
        .and_then(|t| t.quota)
    else {
        return Ok(());
    };
    let mine: Vec<Vm> = ctx
        .store
        .list_all::<Vm>()
        .await?
        .into_iter()
        .filter(|v| v.tenant == tenant && v.desired != DesiredState::Deleted)
        .collect();
    let used = mine
        .iter()
        .fold(Resources::default(), |a, v| a.plus(v.spec.resources()));
    let r = spec.resources();
    if mine.len() as u64 + 1 > q.vms
        || used.vcpus + r.vcpus > q.vcpus
        || used.mem_mib + r.mem_mib > q.mem_mib
    {
        return Err(Error::conflict(format!(
            "tenant quota exceeded: {} VMs, {} vCPUs, {} MiB in use of {} VMs, {} vCPUs, {} MiB",
            mine.len(),
            used.vcpus,
            used.mem_mib,
            q.vms,
            q.vcpus,
            q.mem_mib
        )));
    }
    Ok(())
}

fn name_key(tenant: &str, name: &str) -> String {
    format!("{NAMES}{tenant}/{name}")
}

/// How long a create may take from claiming its name to storing its record: a claim
/// younger than this whose VM is not stored yet is a create under way, not one that
/// was interrupted.
const CLAIM_GRACE_MS: u64 = 60_000;

/// A name claim's stored value: the VM's id and when it was claimed.
fn claim_value(id: &str) -> Vec<u8> {
    format!("{id} {}", now_ms()).into_bytes()
}

/// The VM id and the claim time (0 when unknown) of a stored name claim.
fn claim_of(value: &[u8]) -> (String, u64) {
    let text = String::from_utf8_lossy(value);
    let mut words = text.split(' ');
    let id = words.next().unwrap_or_default().to_string();
    (id, words.next().and_then(|t| t.parse().ok()).unwrap_or(0))
}

/// Claims `name` in `tenant` for VM `id`: one compare-and-swap, so two creates of one
/// name cannot both win. A claim whose VM is gone (a create interrupted between claim
/// and record) is taken over once it is older than [`CLAIM_GRACE_MS`]: a younger one
/// is a create still under way, whose record is not written yet.
async fn claim_name(ctx: &Context, tenant: &str, name: &str, id: &str) -> Result<()> {
    let key = name_key(tenant, name);
    let taken = || {
        Error::conflict_on(
            "name",
            format!("name: a VM named {name:?} exists in tenant {tenant}"),
        )
    };
    loop {
        match ctx.store.put(&key, claim_value(id), Expect::Absent).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let Some(held) = ctx.store.get(&key).await? else {
            continue; // released meanwhile
        };
        let (owner, claimed_at) = claim_of(&held.value);
        let under_way = now_ms().saturating_sub(claimed_at) < CLAIM_GRACE_MS;
        if under_way || ctx.store.read::<Vm>(&owner).await?.is_some() {
            return Err(taken());
        }
        match ctx
            .store
            .put(&key, claim_value(id), Expect::Revision(held.revision))
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Stores a new VM of `tenant` as desired (the scheduler places it) and answers it.
pub async fn create(ctx: &Context, tenant: &str, spec: VmSpec) -> Result<Vm> {
    create_as(ctx, tenant, spec, None).await
}

/// Stores a new VM already placed on `host` and held (`migrating` = `hold`): the
/// reconcile loop leaves it to whoever holds it (a snapshot restore) until released.
pub async fn create_held(
    ctx: &Context,
    tenant: &str,
    spec: VmSpec,
    host: &str,
    hold: &str,
) -> Result<Vm> {
    create_as(ctx, tenant, spec, Some((host.into(), hold.into()))).await
}

async fn create_as(
    ctx: &Context,
    tenant: &str,
    spec: VmSpec,
    held: Option<(String, String)>,
) -> Result<Vm> {
    validate_spec(&spec)?;
    // Quota is checked here for a clear answer, and again by the scheduler.
    check_quota(ctx, tenant, &spec).await?;
    let id = format!("vm-{}", hex::encode(rand::random::<[u8; 6]>()));
    claim_name(ctx, tenant, &spec.name, &id).await?;
    let desired = if spec.start {
        DesiredState::Running
    } else {
        DesiredState::Stopped
    };
    let mut vm = Vm {
        id: id.clone(),
        tenant: tenant.into(),
        spec,
        desired,
        host: held.as_ref().map(|h| h.0.clone()),
        observed: None,
        migrating: held.map(|h| h.1),
        created_at_ms: now_ms(),
        revision: 0,
    };
    match ctx.store.create(&vm).await {
        Ok(rev) => vm.revision = rev,
        Err(e) => {
            let _ = ctx
                .store
                .delete(&name_key(tenant, &vm.spec.name), Expect::Any)
                .await;
            return Err(e.into());
        }
    }
    ctx.events
        .publish(
            "vm.created",
            tenant,
            &id,
            serde_json::json!({"name": vm.spec.name}),
        )
        .await;
    Ok(vm)
}

/// Stores VM `id` arriving from a peer cluster (a cross-cluster migration): checked,
/// within `tenant`'s quota, its name claimed, placed on `host` and held by `hold`
/// (the reconcile loop leaves it alone) until the migration adopts or drops it.
pub async fn create_arriving(
    ctx: &Context,
    id: &str,
    tenant: &str,
    spec: VmSpec,
    host: &str,
    hold: &str,
    created_at_ms: u64,
) -> Result<Vm> {
    validate_spec(&spec)?;
    check_quota(ctx, tenant, &spec).await?;
    claim_name(ctx, tenant, &spec.name, id).await?;
    let mut vm = Vm {
        id: id.into(),
        tenant: tenant.into(),
        desired: DesiredState::Running,
        spec,
        host: Some(host.into()),
        observed: None,
        migrating: Some(hold.into()),
        created_at_ms,
        revision: 0,
    };
    match ctx.store.create(&vm).await {
        Ok(rev) => vm.revision = rev,
        Err(e) => {
            release(ctx, tenant, &vm.spec.name).await;
            return Err(match e {
                StoreError::Conflict(_) => {
                    Error::conflict_on("vm_id", "a VM of that id exists here")
                }
                e => e.into(),
            });
        }
    }
    Ok(vm)
}

/// Reserves a new VM of `tenant` for `spec` (checked, within quota, its name
/// claimed) without storing it: a restore makes it on a host first, then
/// [`record_restored`] stores it placed there. Answers its id.
pub async fn reserve(ctx: &Context, tenant: &str, spec: &VmSpec) -> Result<String> {
    validate_spec(spec)?;
    check_quota(ctx, tenant, spec).await?;
    let id = format!("vm-{}", hex::encode(rand::random::<[u8; 6]>()));
    claim_name(ctx, tenant, &spec.name, &id).await?;
    Ok(id)
}

/// Releases a name [`reserve`] claimed for a VM that was never made.
pub async fn release(ctx: &Context, tenant: &str, name: &str) {
    let _ = ctx.store.delete(&name_key(tenant, name), Expect::Any).await;
}

/// Stores reserved VM `id`, made on `host` already (a restore), as desired by `spec`.
pub async fn record_restored(
    ctx: &Context,
    tenant: &str,
    id: &str,
    spec: VmSpec,
    host: &str,
) -> Result<Vm> {
    let mut vm = Vm {
        id: id.into(),
        tenant: tenant.into(),
        desired: if spec.start {
            DesiredState::Running
        } else {
            DesiredState::Stopped
        },
        spec,
        host: Some(host.into()),
        observed: None,
        migrating: None,
        created_at_ms: now_ms(),
        revision: 0,
    };
    vm.revision = ctx.store.create(&vm).await?;
    ctx.events
        .publish(
            "vm.created",
            tenant,
            id,
            serde_json::to_value(&vm).unwrap_or_default(),
        )
        .await;
    Ok(vm)
}

/// Sets the desired state of VM `id` (at `revision`, when given).
pub async fn set_desired(
    ctx: &Context,
    id: &str,
    d: DesiredState,
    revision: Option<u64>,
) -> Result<Vm> {
    let mut deleting = false;
    let v = ctx
        .store
        .update_at::<Vm, _>(id, revision, |v| {
            deleting = v.desired == DesiredState::Deleted && d != DesiredState::Deleted;
            let change = v.desired != d && !deleting;
            if change {
                v.desired = d;
            }
            change
        })
        .await
        .map_err(missing("vm"))?;
    if deleting {
        return Err(Error::conflict("the VM is being deleted"));
    }
    let kind = match d {
        DesiredState::Running => "vm.start_requested",
        DesiredState::Stopped => "vm.stop_requested",
        DesiredState::Deleted => "vm.delete_requested",
    };
    ctx.events
        .publish(kind, &v.tenant, id, serde_json::json!({"desired": d}))
        .await;
    Ok(v)
}

/// Stops VM `id` at once: desired `stopped`, and its host kills the VMM now instead of
/// waiting for the guest (a stopped or unplaced VM has nothing to kill).
pub async fn force_stop(ctx: &Context, id: &str, revision: Option<u64>) -> Result<Vm> {
    let v = set_desired(ctx, id, DesiredState::Stopped, revision).await?;
    if let (Some(host), None) = (&v.host, &v.migrating) {
        let h = ctx.store.must_read::<crate::model::Host>(host).await?;
        match ctx.hostd(&h)?.stop(id, true).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(v)
}

/// The last `lines` lines of VM `vm`'s console, from its host.
pub async fn console(ctx: &Context, vm: &Vm, lines: u32) -> Result<ConsoleLines> {
    let host = vm
        .host
        .as_deref()
        .ok_or_else(|| Error::conflict("the VM is not placed on a host yet"))?;
    let h = ctx.store.must_read::<crate::model::Host>(host).await?;
    let log = ctx.hostd(&h)?.console(&vm.id, lines as usize).await?;
    Ok(ConsoleLines {
        lines: log.lines,
        bytes: log.bytes,
    })
}

/// Records what a host says about a VM; publishes `vm.state` when it changed.
pub async fn set_observed(ctx: &Context, id: &str, obs: Observed) -> Result<()> {
    let mut changed = false;
    let v = ctx
        .store
        .update::<Vm, _>(id, |v| {
            let same = v.observed.as_ref().is_some_and(|o| {
                o.state == obs.state && o.host == obs.host && o.error == obs.error
            });
            changed = !same;
            if changed {
                v.observed = Some(obs.clone());
            }
            changed
        })
        .await?;
    if changed {
        ctx.events
            .publish(
                "vm.state",
                &v.tenant,
                id,
                serde_json::to_value(&obs).unwrap_or_default(),
            )
            .await;
    }
    Ok(())
}

/// Removes a deleted VM's record (once no host holds it) and frees its name.
pub async fn forget(ctx: &Context, vm: &Vm) -> Result<()> {
    if ctx.store.remove::<Vm>(&vm.id).await? {
        let key = name_key(&vm.tenant, &vm.spec.name);
        if let Some(held) = ctx.store.get(&key).await? {
            if claim_of(&held.value).0 == vm.id {
                let _ = ctx
                    .store
                    .delete(&key, Expect::Revision(held.revision))
                    .await;
            }
        }
        ctx.events
            .publish("vm.deleted", &vm.tenant, &vm.id, crate::events::no_data())
            .await;
    }
    Ok(())
}
