//! Live migrations, driven by the controller and carried out by hostd: pick the
//! destination, hold a slot within the policy's parallelism limits, ask the source
//! hostd to migrate to the destination hostd, follow its progress into the operation
//! and the event stream, and move the VM's placement when (and only when) hostd says
//! the VM runs on the destination.

pub mod drain;
pub mod policy;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nova_hostd::api::types::{MigrateRequest, MigrationState, MigrationStatus, MigrationTarget};

use crate::api::{ApiError, AppState};
use crate::hostd::Hostd;
use crate::model::{
    now_ms, DesiredState, Host, HostState, Observed, OpState, Operation, Tenant, Vm,
};
use crate::scheduler::{self, Weights};
use crate::store::{Objects, StoreError};
use policy::MigrationPolicy;

/// Reads the cluster's policy (the default when none was set).
pub async fn load_policy(st: &AppState) -> Result<MigrationPolicy, StoreError> {
    match st.store.get(MigrationPolicy::KEY).await? {
        Some(v) => serde_json::from_slice(&v.value)
            .map_err(|e| StoreError::Codec(MigrationPolicy::KEY.into(), e.to_string())),
        None => Ok(MigrationPolicy::default()),
    }
}

/// Migrations under way on this controller, per host (source and destination) and in
/// total, so the policy's parallelism limits hold.
#[derive(Default)]
pub struct Slots {
    inner: Mutex<(u32, HashMap<String, u32>)>,
    /// Operation ids followed by this process.
    pub following: Mutex<HashSet<String>>,
}

/// A held slot, released on drop.
pub struct Slot {
    slots: Arc<Slots>,
    hosts: [String; 2],
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.slots.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = g.0.saturating_sub(1);
        for h in &self.hosts {
            if let Some(n) = g.1.get_mut(h) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

impl Slots {
    fn try_take(self: &Arc<Self>, p: &MigrationPolicy, from: &str, to: &str) -> Option<Slot> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let busy = |h: &str| g.1.get(h).copied().unwrap_or(0);
        if g.0 >= p.max_parallel_cluster
            || busy(from) >= p.max_parallel_per_host
            || busy(to) >= p.max_parallel_per_host
        {
            return None;
        }
        g.0 += 1;
        *g.1.entry(from.into()).or_default() += 1;
        *g.1.entry(to.into()).or_default() += 1;
        Some(Slot {
            slots: self.clone(),
            hosts: [from.into(), to.into()],
        })
    }
}

pub(crate) fn new_op(tenant: &str, kind: &str, target: &str) -> Operation {
    let now = now_ms();
    Operation {
        id: format!("op-{}", hex::encode(rand::random::<[u8; 6]>())),
        tenant: tenant.into(),
        kind: kind.into(),
        target: target.into(),
        state: OpState::Pending,
        progress: 0,
        message: "queued".into(),
        result: serde_json::json!({}),
        cancel_requested: false,
        created_at_ms: now,
        updated_at_ms: now,
    }
}

/// Updates an operation and publishes the change.
pub async fn set_op(
    st: &AppState,
    id: &str,
    f: impl FnMut(&mut Operation) + Send,
) -> Result<Operation, StoreError> {
    let mut f = f;
    let o = st
        .store
        .update::<Operation, _>(id, |o| {
            if o.state.is_final() {
                return false;
            }
            f(o);
            o.updated_at_ms = now_ms();
            true
        })
        .await?;
    let kind = if o.state.is_final() {
        "operation.done"
    } else {
        "operation.progress"
    };
    st.events.publish(
        kind,
        &o.tenant,
        &o.id,
        serde_json::to_value(&o).unwrap_or_default(),
    );
    Ok(o)
}

/// Starts migrating `vm` (to `to`, or where the scheduler says) and answers its operation.
pub async fn start_one(st: &AppState, vm: &Vm, to: Option<String>) -> Result<Operation, ApiError> {
    if vm.host.is_none() || vm.desired != DesiredState::Running {
        return Err(ApiError::conflict(
            "only a placed, running VM can be live-migrated",
        ));
    }
    if vm.migrating.is_some() {
        return Err(ApiError::conflict("the VM is already migrating"));
    }
    let op = new_op(&vm.tenant, "migrate", &vm.id);
    st.store.create(&op).await?;
    let (st2, vm_id, op_id) = (st.clone(), vm.id.clone(), op.id.clone());
    tokio::spawn(async move {
        let outcome = migrate(&st2, &vm_id, to, &op_id).await;
        finish(&st2, &op_id, outcome).await;
    });
    Ok(op)
}

/// How one migration ended.
pub type Outcome = Result<serde_json::Value, (OpState, String)>;

async fn finish(st: &AppState, op_id: &str, outcome: Outcome) {
    let r = set_op(st, op_id, |o| match &outcome {
        Ok(res) => {
            o.state = OpState::Succeeded;
            o.progress = 100;
            o.message = "done".into();
            o.result = res.clone();
        }
        Err((state, msg)) => {
            o.state = *state;
            o.message = msg.clone();
        }
    })
    .await;
    if let Err(e) = r {
        tracing::error!(op = op_id, "recording the outcome: {e}");
    }
}

fn failed(e: impl std::fmt::Display) -> (OpState, String) {
    (OpState::Failed, e.to_string())
}

/// Migrates one VM, holding a slot; the VM's placement moves only on hostd's "completed".
pub async fn migrate(st: &AppState, vm_id: &str, to: Option<String>, op_id: &str) -> Outcome {
    let policy = load_policy(st).await.map_err(failed)?;
    let vm = st.store.must_read::<Vm>(vm_id).await.map_err(failed)?;
    let src_id = vm
        .host
        .clone()
        .ok_or_else(|| failed("the VM is not placed"))?;
    let src = st.store.must_read::<Host>(&src_id).await.map_err(failed)?;
    // Destination: the one asked for (it must pass the filters) or the scheduler's pick.
    let (views, vms) = crate::reconcile::host_views(st).await.map_err(failed)?;
    let tenants: HashMap<String, Tenant> = st
        .store
        .list_all::<Tenant>()
        .await
        .map_err(failed)?
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    let mut req = crate::reconcile::request_for(&vm, &tenants, &vms);
    req.exclude = vec![src_id.clone()];
    let candidates: Vec<_> = match &to {
        Some(t) => views.into_iter().filter(|h| h.id == *t).collect(),
        None => views,
    };
    let dst_id = scheduler::place(&req, &candidates, Weights::default())
        .map_err(failed)?
        .id
        .clone();
    let dst = st.store.must_read::<Host>(&dst_id).await.map_err(failed)?;

    // Wait for a slot within the policy's limits.
    let slot = loop {
        if let Some(s) = st.slots.try_take(&policy, &src_id, &dst_id) {
            break s;
        }
        if st
            .store
            .read::<Operation>(op_id)
            .await
            .ok()
            .flatten()
            .is_some_and(|o| o.cancel_requested)
        {
            return Err((OpState::Cancelled, "cancelled while queued".into()));
        }
        set_op(st, op_id, |o| {
            o.message = "waiting for a migration slot".into()
        })
        .await
        .map_err(failed)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Claim the VM: nobody else may migrate it, the reconcile loop leaves it alone.
    let mut claimed = false;
    st.store
        .update::<Vm, _>(vm_id, |v| {
            claimed = v.migrating.is_none() && v.host.as_deref() == Some(src_id.as_str());
            if claimed {
                v.migrating = Some(op_id.to_string());
            }
            claimed
        })
        .await
        .map_err(failed)?;
    if !claimed {
        return Err(failed("the VM moved or is already migrating"));
    }
    set_op(st, op_id, |o| {
        o.state = OpState::Running;
        o.progress = 5;
        o.message = format!("migrating {src_id} -> {dst_id}");
        o.result = serde_json::json!({"from": src_id, "to": dst_id});
    })
    .await
    .map_err(failed)?;
    st.events.publish(
        "vm.migrating",
        &vm.tenant,
        vm_id,
        serde_json::json!({"from": src_id, "to": dst_id, "operation": op_id}),
    );

    let rq = MigrateRequest {
        to: MigrationTarget {
            url: dst.url.clone(),
            token: dst.hostd_token.clone(),
        },
        mode: policy.mode.into(),
        downtime_ms: policy.downtime_ms,
        bandwidth_mbit: policy.bandwidth_mbit,
        compress: Default::default(),
        connections: 1,
    };
    let hd = Hostd {
        http: &st.http,
        url: &src.url,
        token: &src.hostd_token,
    };
    let outcome = match hd.migrate(vm_id, &rq).await {
        Ok(_) => follow(st, &src, &dst_id, vm_id, op_id, &policy).await,
        Err(e) => Err(failed(format!("source hostd refused: {e}"))),
    };
    release(st, vm_id, op_id, &dst_id, &outcome).await;
    drop(slot);
    outcome
}

/// Follows the source hostd's migration status until it ends, cancelling on request
/// or on the policy's completion timeout.
async fn follow(
    st: &AppState,
    src: &Host,
    dst_id: &str,
    vm_id: &str,
    op_id: &str,
    policy: &MigrationPolicy,
) -> Outcome {
    st.slots
        .following
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(op_id.to_string());
    let hd = Hostd {
        http: &st.http,
        url: &src.url,
        token: &src.hostd_token,
    };
    let started = Instant::now();
    let mut cancelling = false;
    let mut unreachable_since: Option<Instant> = None;
    let out = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status: MigrationStatus = match hd.migration(vm_id).await {
            Ok(s) => {
                unreachable_since = None;
                s
            }
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(30) {
                    break Err(failed(format!("source hostd unreachable: {e}")));
                }
                continue;
            }
        };
        match status.state {
            MigrationState::Completed => {
                break Ok(serde_json::json!({
                    "from": src.id, "to": dst_id, "mode": status.mode,
                    "downtime_ms": status.downtime_ms, "total_ms": status.total_ms,
                    "bytes": status.bytes_sent, "rounds": status.rounds,
                }))
            }
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
        let op = st.store.read::<Operation>(op_id).await.ok().flatten();
        let timed_out = started.elapsed() > Duration::from_secs(policy.completion_timeout_s);
        if !cancelling && (timed_out || op.as_ref().is_some_and(|o| o.cancel_requested)) {
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
        let vmm = status.vmm.clone();
        let _ = set_op(st, op_id, |o| {
            o.progress = o.progress.max(progress);
            o.message = format!("{:?}, round {rounds}", status.state).to_lowercase();
            if let Some(obj) = o.result.as_object_mut() {
                obj.insert("bytes".into(), serde_json::json!(status.bytes_sent));
                obj.insert("vmm".into(), vmm.clone().unwrap_or_default());
            }
        })
        .await;
    };
    st.slots
        .following
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(op_id);
    out
}

/// Moves the placement on success, and always lets go of the VM.
async fn release(st: &AppState, vm_id: &str, op_id: &str, dst_id: &str, outcome: &Outcome) {
    let r = st
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
        Ok(v) if outcome.is_ok() => st.events.publish(
            "vm.migrated",
            &v.tenant,
            vm_id,
            outcome.clone().unwrap_or_default(),
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(vm = vm_id, "releasing after migration: {e}"),
    }
}

/// After a controller restart (or a new leader): migrations that were under way and
/// that nobody here follows are followed again from the source hostd's status.
pub async fn resume_orphans(st: &AppState) -> Result<(), StoreError> {
    for op in st.store.list_all::<Operation>().await? {
        if op.state.is_final() || op.kind != "migrate" {
            continue;
        }
        if st
            .slots
            .following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&op.id)
        {
            continue;
        }
        let Some(vm) = st.store.read::<Vm>(&op.target).await? else {
            finish(st, &op.id, Err(failed("the VM is gone"))).await;
            continue;
        };
        if vm.migrating.as_deref() != Some(op.id.as_str()) {
            // Pending (queued) on a controller that died: nothing was started.
            if now_ms().saturating_sub(op.updated_at_ms) > 5_000 {
                finish(
                    st,
                    &op.id,
                    Err(failed(
                        "interrupted by a controller restart before it started",
                    )),
                )
                .await;
            }
            continue;
        }
        let (Some(src_id), Some(dst_id)) = (
            vm.host.clone(),
            op.result
                .get("to")
                .and_then(|v| v.as_str())
                .map(String::from),
        ) else {
            continue;
        };
        let Some(src) = st.store.read::<Host>(&src_id).await? else {
            continue;
        };
        if src.state != HostState::Ready {
            continue;
        }
        tracing::info!(op = %op.id, "following a migration started before a restart");
        st.slots
            .following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(op.id.clone());
        let st2 = st.clone();
        tokio::spawn(async move {
            let policy = load_policy(&st2).await.unwrap_or_default();
            let outcome = follow(&st2, &src, &dst_id, &vm.id, &op.id, &policy).await;
            release(&st2, &vm.id, &op.id, &dst_id, &outcome).await;
            finish(&st2, &op.id, outcome).await;
        });
    }
    Ok(())
}

pub(crate) use new_op as operation;
