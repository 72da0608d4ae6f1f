//! Bursting: when the scheduler places a VM nowhere, [`unplaceable`] may launch a
//! cloud host (policy on, fewer than `max_hosts` burst hosts, `cooldown_s` since the
//! last launch) whose user-data carries the controller URL, a single-use join token
//! and the CA; the VM waits, pending, until the host joins ([`joined`], from the
//! registration that spends that token: the host gets its `provider`, `instance_id`
//! and `burst` labels) and the scheduler places it there. Each reconcile pass
//! ([`pass`]) terminates burst hosts that never joined within `join_timeout_s` and
//! those idle (no VM) for `idle_s`: cordoned, terminated at the provider, forgotten.
//! Machines tagged as this cluster's that no burst record claims are terminated too.
//! Every launch and termination is an event (`cloud.launched`, `cloud.joined`,
//! `cloud.terminated`) and an audit entry (actor `controller:burst`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nova_cloud::{CloudError, Fleet, LaunchRequest};

use super::{policy, TAG_BURST, TAG_CLUSTER};
use crate::context::Context;
use crate::error::Error;
use crate::model::{
    now_ms, AuditEntry, BurstEvent, BurstHost, BurstHosts, BurstPolicy, BurstState, Host,
    HostUserData, Vm, LABEL_BURST, LABEL_INSTANCE_ID, LABEL_PROVIDER, SYSTEM_TENANT,
};
use crate::store::{Objects, StoreError};

/// Terminated burst records are kept this long (for their cost), then pruned.
const KEEP_TERMINATED_MS: u64 = 7 * 86_400_000;
/// Between two sweeps for machines no record claims.
const SWEEP_EVERY_MS: u64 = 60_000;
/// When the last sweep ran (ms since the epoch), per process.
static LAST_SWEEP_MS: AtomicU64 = AtomicU64::new(0);

/// Why a burst step failed.
#[derive(Debug, thiserror::Error)]
pub enum BurstError {
    #[error(transparent)]
    Domain(#[from] Error),
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

impl From<StoreError> for BurstError {
    fn from(e: StoreError) -> Self {
        BurstError::Domain(e.into())
    }
}

type Result<T> = std::result::Result<T, BurstError>;

async fn audit(ctx: &Context, call: &str, what: &str, ok: bool) {
    let e = AuditEntry {
        id: String::new(),
        at_ms: now_ms(),
        actor: "controller:burst".into(),
        tenant: SYSTEM_TENANT.into(),
        method: call.into(),
        path: what.into(),
        status: if ok { 200 } else { 502 },
    };
    if let Err(err) = ctx.store.audit(&e).await {
        tracing::error!("audit log write failed: {err}");
    }
}

/// What VM `vm`, which fits on no host, is waiting for, or why no host is launched
/// for it (naming the policy field that says no); None without a cloud provider.
pub async fn unplaceable(ctx: &Context, vm: &Vm) -> Option<String> {
    let cloud = ctx.cloud.clone()?;
    Some(match try_burst(ctx, &cloud, vm).await {
        Ok(note) => note,
        Err(e) => format!("burst failed: {e}"),
    })
}

async fn try_burst(ctx: &Context, cloud: &Arc<Fleet>, vm: &Vm) -> Result<String> {
    let p = policy::load(ctx).await?;
    if !p.enabled {
        return Ok("no burst host: the burst policy's `enabled` is false".into());
    }
    let all = ctx.store.list_all::<BurstHost>().await?;
    let active: Vec<&BurstHost> = all
        .iter()
        .filter(|b| b.state != BurstState::Terminated)
        .collect();
    // One launch at a time: VMs that fit nowhere wait for the host on its way.
    if let Some(b) = active.iter().find(|b| b.state == BurstState::Launching) {
        if !b.for_vms.contains(&vm.id) {
            ctx.store
                .update::<BurstHost, _>(&b.id, |b| {
                    let add = !b.for_vms.contains(&vm.id);
                    if add {
                        b.for_vms.push(vm.id.clone());
                    }
                    add
                })
                .await?;
        }
        return Ok(waiting(b));
    }
    if active.len() >= p.max_hosts as usize {
        return Ok(format!(
            "no burst host: the burst policy's `max_hosts` ({}) burst hosts are up",
            p.max_hosts
        ));
    }
    let now = now_ms();
    if let Some(last) = all.iter().map(|b| b.launched_at_ms).max() {
        let next = last.saturating_add(p.cooldown_s.saturating_mul(1000));
        if now < next {
            return Ok(format!(
                "no burst host yet: the burst policy's `cooldown_s` ({}) has {} s to run",
                p.cooldown_s,
                (next - now).div_ceil(1000)
            ));
        }
    }
    let b = launch(ctx, cloud, &p, vm).await?;
    Ok(waiting(&b))
}

fn waiting(b: &BurstHost) -> String {
    format!(
        "waiting for burst host {} ({} {}) to join",
        b.id, b.provider, b.instance_id
    )
}

/// Launches one burst host for `vm`.
async fn launch(ctx: &Context, cloud: &Fleet, p: &BurstPolicy, vm: &Vm) -> Result<BurstHost> {
    let id = format!("b-{:016x}", rand::random::<u64>());
    let (secret, token) =
        crate::hosts::issue_join_token(ctx, p.join_timeout_s, &format!("burst:{id}")).await?;
    let user_data = HostUserData {
        format: HostUserData::FORMAT.into(),
        controller: cloud.controller_url.clone(),
        join_token: secret,
        ca_pem: cloud.ca_pem.clone(),
    };
    let user_data = serde_json::to_string(&user_data)
        .map_err(|e| Error::Store(StoreError::Codec("user-data".into(), e.to_string())))?;
    let mut rec = BurstHost {
        id: id.clone(),
        provider: cloud.provider.name().into(),
        instance_id: String::new(),
        state: BurstState::Launching,
        host_id: None,
        for_vms: vec![vm.id.clone()],
        join_hash: token.hash.clone(),
        launched_at_ms: now_ms(),
        joined_at_ms: None,
        idle_since_ms: None,
        terminated_at_ms: None,
        reason: None,
        hours: 0.0,
        cost_usd: None,
    };
    // Recorded before the launch, so a machine launched by a controller that dies
    // right after is still claimed (and terminated when it never joins).
    ctx.store.create(&rec).await?;
    let req = LaunchRequest {
        name: format!("nova-{id}"),
        user_data,
        tags: BTreeMap::from([
            (TAG_CLUSTER.to_string(), cloud.cluster.clone()),
            (TAG_BURST.to_string(), id.clone()),
        ]),
    };
    let launched = cloud.provider.launch(&req).await;
    let call = "RunInstances";
    match launched {
        Ok(i) => {
            rec = ctx
                .store
                .update::<BurstHost, _>(&id, |b| {
                    b.instance_id = i.id.clone();
                    true
                })
                .await?;
            audit(ctx, call, &format!("{}/{}", rec.provider, i.id), true).await;
            tracing::info!(burst = %id, instance = %i.id, vm = %vm.id, "launched a burst host");
            ctx.events
                .publish(
                    "cloud.launched",
                    SYSTEM_TENANT,
                    &id,
                    crate::events::data(&BurstEvent {
                        instance_id: i.id.clone(),
                        provider: Some(rec.provider.clone()),
                        vm: Some(vm.id.clone()),
                        ..BurstEvent::default()
                    }),
                )
                .await;
            Ok(rec)
        }
        Err(e) => {
            // Kept as terminated: its launch time holds the cooldown, so a failing
            // API is not called every pass.
            let why = e.to_string();
            ctx.store
                .update::<BurstHost, _>(&id, |b| {
                    b.state = BurstState::Terminated;
                    b.terminated_at_ms = Some(now_ms());
                    b.reason = Some(format!("launch failed: {why}"));
                    true
                })
                .await?;
            ctx.store
                .remove::<crate::hosts::JoinToken>(&token.hash)
                .await?;
            audit(ctx, call, &format!("{}/{id}", cloud.provider.name()), false).await;
            Err(e.into())
        }
    }
}

/// The host that registered with the join token hashing to `join_hash` is a burst
/// host when a burst record holds that hash: the record is joined and the host gets
/// its `provider`, `instance_id` and `burst` labels.
pub async fn joined(ctx: &Context, join_hash: &str, host_id: &str) -> crate::error::Result<()> {
    let bursts = ctx.store.list_all::<BurstHost>().await?;
    let Some(b) = bursts.into_iter().find(|b| b.join_hash == join_hash) else {
        return Ok(());
    };
    let now = now_ms();
    let b = ctx
        .store
        .update::<BurstHost, _>(&b.id, |b| {
            b.state = BurstState::Joined;
            b.host_id = Some(host_id.to_string());
            b.joined_at_ms = Some(now);
            true
        })
        .await?;
    ctx.store
        .update::<Host, _>(host_id, |h| {
            h.labels.insert(LABEL_PROVIDER.into(), b.provider.clone());
            h.labels
                .insert(LABEL_INSTANCE_ID.into(), b.instance_id.clone());
            h.labels.insert(LABEL_BURST.into(), b.id.clone());
            true
        })
        .await?;
    ctx.events
        .publish(
            "cloud.joined",
            SYSTEM_TENANT,
            &b.id,
            crate::events::data(&BurstEvent {
                instance_id: b.instance_id.clone(),
                host: Some(host_id.to_string()),
                ..BurstEvent::default()
            }),
        )
        .await;
    Ok(())
}

/// One pass over the burst hosts (leader only, from the reconcile loop).
pub async fn pass(ctx: &Context) -> crate::error::Result<()> {
    let Some(cloud) = ctx.cloud.clone() else {
        return Ok(());
    };
    let bursts = ctx.store.list_all::<BurstHost>().await?;
    let now = now_ms();
    for b in bursts.iter().filter(|b| b.state == BurstState::Terminated) {
        if b.terminated_at_ms
            .unwrap_or(0)
            .saturating_add(KEEP_TERMINATED_MS)
            < now
        {
            ctx.store.remove::<BurstHost>(&b.id).await?;
        }
    }
    if bursts.iter().any(|b| b.state != BurstState::Terminated) {
        let p = policy::load(ctx).await?;
        let vms = ctx.store.list_all::<Vm>().await?;
        for b in bursts.iter().filter(|b| b.state != BurstState::Terminated) {
            if let Err(e) = step(ctx, &cloud, &p, &vms, b).await {
                tracing::warn!(burst = %b.id, "burst host: {e}");
            }
        }
    }
    if now.saturating_sub(LAST_SWEEP_MS.load(Ordering::Relaxed)) >= SWEEP_EVERY_MS {
        LAST_SWEEP_MS.store(now, Ordering::Relaxed);
        if let Err(e) = sweep(ctx, &cloud).await {
            tracing::warn!("sweeping cloud machines: {e}");
        }
    }
    Ok(())
}

/// One burst host: terminated when it never joined, or idle past `idle_s`.
async fn step(
    ctx: &Context,
    cloud: &Fleet,
    p: &BurstPolicy,
    vms: &[Vm],
    b: &BurstHost,
) -> Result<()> {
    let now = now_ms();
    match b.state {
        BurstState::Launching => {
            let deadline = b
                .launched_at_ms
                .saturating_add(p.join_timeout_s.saturating_mul(1000));
            if now >= deadline {
                let why = format!(
                    "never joined within the burst policy's `join_timeout_s` ({})",
                    p.join_timeout_s
                );
                terminate(ctx, cloud, b, &why).await?;
            }
        }
        BurstState::Joined => {
            let host = b.host_id.clone().unwrap_or_default();
            if ctx.store.read::<Host>(&host).await?.is_none() {
                return terminate(ctx, cloud, b, "its host was forgotten").await;
            }
            let busy = vms.iter().any(|v| v.host.as_deref() == Some(host.as_str()));
            if busy {
                if b.idle_since_ms.is_some() {
                    ctx.store
                        .update::<BurstHost, _>(&b.id, |b| {
                            b.idle_since_ms = None;
                            true
                        })
                        .await?;
                }
                return Ok(());
            }
            let Some(since) = b.idle_since_ms else {
                ctx.store
                    .update::<BurstHost, _>(&b.id, |b| {
                        b.idle_since_ms = Some(now);
                        true
                    })
                    .await?;
                return Ok(());
            };
            // A migration may be about to land here: wait for it to finish.
            let migrating = vms.iter().any(|v| v.migrating.is_some());
            if !migrating && now.saturating_sub(since) >= p.idle_s.saturating_mul(1000) {
                let why = format!("idle for the burst policy's `idle_s` ({})", p.idle_s);
                terminate(ctx, cloud, b, &why).await?;
            }
        }
        BurstState::Terminating => {
            let why = b.reason.clone().unwrap_or_default();
            terminate(ctx, cloud, b, &why).await?;
        }
        BurstState::Terminated => {}
    }
    Ok(())
}

/// Cordons `b`'s host, terminates its machine and forgets the host (resumed by the
/// next pass at whichever step failed).
async fn terminate(ctx: &Context, cloud: &Fleet, b: &BurstHost, why: &str) -> Result<()> {
    ctx.store
        .update::<BurstHost, _>(&b.id, |b| {
            b.state = BurstState::Terminating;
            b.reason = Some(why.to_string());
            true
        })
        .await?;
    // A join token still unspent dies with the machine it was for.
    ctx.store
        .remove::<crate::hosts::JoinToken>(&b.join_hash)
        .await?;
    if let Some(host) = &b.host_id {
        let exists = ctx.store.read::<Host>(host).await?.is_some();
        if exists {
            crate::hosts::set_cordon(ctx, host, true, None).await?;
            // Placed between the idle check and the cordon: keep the host.
            let vms = ctx.store.list_all::<Vm>().await?;
            if vms.iter().any(|v| v.host.as_deref() == Some(host.as_str())) {
                crate::hosts::set_cordon(ctx, host, false, None).await?;
                ctx.store
                    .update::<BurstHost, _>(&b.id, |b| {
                        b.state = BurstState::Joined;
                        b.idle_since_ms = None;
                        b.reason = None;
                        true
                    })
                    .await?;
                return Ok(());
            }
        }
    }
    let what = format!("{}/{}", b.provider, b.instance_id);
    if !b.instance_id.is_empty() {
        let r = cloud.provider.terminate(&b.instance_id).await;
        audit(ctx, "TerminateInstances", &what, r.is_ok()).await;
        r?;
    }
    if let Some(host) = &b.host_id {
        match crate::hosts::forget(ctx, host).await {
            Ok(_) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.store
        .update::<BurstHost, _>(&b.id, |b| {
            b.state = BurstState::Terminated;
            b.terminated_at_ms = Some(now_ms());
            true
        })
        .await?;
    tracing::info!(burst = %b.id, instance = %b.instance_id, "terminated a burst host: {why}");
    ctx.events
        .publish(
            "cloud.terminated",
            SYSTEM_TENANT,
            &b.id,
            crate::events::data(&BurstEvent {
                instance_id: b.instance_id.clone(),
                host: b.host_id.clone(),
                reason: Some(why.to_string()),
                ..BurstEvent::default()
            }),
        )
        .await;
    Ok(())
}

/// Terminates machines tagged as this cluster's that no live burst record claims (a
/// record lost with a store restore, say).
async fn sweep(ctx: &Context, cloud: &Fleet) -> Result<()> {
    let tags = BTreeMap::from([(TAG_CLUSTER.to_string(), cloud.cluster.clone())]);
    let machines = cloud.provider.list(&tags).await?;
    let bursts = ctx.store.list_all::<BurstHost>().await?;
    for m in machines.iter().filter(|m| !m.state.is_gone()) {
        let claimed = m.tags.get(TAG_BURST).is_some_and(|id| {
            bursts
                .iter()
                .any(|b| &b.id == id && b.state != BurstState::Terminated)
        });
        if claimed {
            continue;
        }
        let what = format!("{}/{}", cloud.provider.name(), m.id);
        let r = cloud.provider.terminate(&m.id).await;
        audit(ctx, "TerminateInstances", &what, r.is_ok()).await;
        r?;
        tracing::warn!(instance = %m.id, "terminated a machine of this cluster no burst record claims");
        ctx.events
            .publish(
                "cloud.terminated",
                SYSTEM_TENANT,
                &m.id,
                crate::events::data(&BurstEvent {
                    instance_id: m.id.clone(),
                    reason: Some("unclaimed".into()),
                    ..BurstEvent::default()
                }),
            )
            .await;
    }
    Ok(())
}

/// Every burst record, with the hours and cost so far.
pub async fn list(ctx: &Context) -> crate::error::Result<BurstHosts> {
    let now = now_ms();
    let mut items = ctx.store.list_all::<BurstHost>().await?;
    let mut total = None;
    for b in &mut items {
        b.join_hash = String::new();
        let until = b.terminated_at_ms.unwrap_or(now);
        match &ctx.cloud {
            Some(c) if !b.instance_id.is_empty() => {
                let cost = c.provider.cost(&b.instance_id, b.launched_at_ms, until);
                b.hours = cost.hours;
                b.cost_usd = cost.usd;
            }
            _ => b.hours = 0.0,
        }
        if let Some(usd) = b.cost_usd {
            total = Some(total.unwrap_or(0.0) + usd);
        }
    }
    Ok(BurstHosts {
        provider: ctx.cloud.as_ref().map(|c| c.provider.name().to_string()),
        items,
        total_cost_usd: total,
    })
}
