//! Reconciliation: the desired state is in the store; these loops (run by the leader
//! only) drive hosts towards it through hostd's API. Every pass starts from the store
//! and what hosts report, so a pass can be killed at any line and a restarted
//! controller picks up where the last one was. Also: hosts that miss heartbeats are
//! marked down, and their VMs whose policy says so are restarted elsewhere; history
//! past its retention is pruned.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nova_hostd_api::VmState;

use crate::context::Context;
use crate::error::Result;
use crate::model::{
    now_ms, state_name, DesiredState, Host, HostFailurePolicy, HostState, Observed, Vm,
    SYSTEM_TENANT,
};
use crate::placement::{self, tenant_labels};
use crate::scheduler;
use crate::store::Objects;
use crate::vms::{forget, set_observed};

/// Runs the loops forever; passes only while this controller leads.
pub async fn run(ctx: Context) {
    let mut tick = tokio::time::interval(ctx.settings.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retention = ctx.settings.retention;
    let mut pruned: Option<Instant> = None;
    loop {
        tick.tick().await;
        let leads = ctx.leads();
        ctx.metrics.set_leading(leads);
        if !leads {
            continue;
        }
        let t = Instant::now();
        let r = pass(&ctx).await;
        ctx.metrics.reconcile_pass(r.is_ok(), t.elapsed());
        if let Err(e) = r {
            tracing::warn!("reconcile pass: {e}");
        }
        if pruned.is_none_or(|t| t.elapsed() >= retention.every) {
            pruned = Some(Instant::now());
            if let Err(e) = crate::retention::prune(&ctx, &retention).await {
                tracing::warn!("pruning history: {e}");
            }
        }
    }
}

/// One pass: host health, then placement, then every VM towards its desired state.
pub async fn pass(ctx: &Context) -> Result<()> {
    check_hosts(ctx, ctx.settings.down_after).await?;
    crate::migration::resume_orphans(ctx).await?;
    if let Err(e) = crate::federation::migration::resume(ctx).await {
        tracing::warn!("cross-cluster migrations after a restart: {e}");
    }
    place_pending(ctx).await?;
    crate::cloud::burst::pass(ctx).await?;
    drive_all(ctx).await
}

/// Marks silent hosts down; their VMs with `on_host_failure: restart` lose their
/// placement so the scheduler restarts them elsewhere.
async fn check_hosts(ctx: &Context, down_after: Duration) -> Result<()> {
    let limit = down_after.as_millis() as u64;
    let hosts = ctx.store.list_all::<Host>().await?;
    let ready = hosts.iter().filter(|h| h.state == HostState::Ready).count();
    ctx.metrics.set_hosts(ready, hosts.len() - ready);
    for h in hosts {
        if h.state != HostState::Ready || now_ms().saturating_sub(h.last_heartbeat_ms) <= limit {
            continue;
        }
        let mut marked = false;
        ctx.store
            .update::<Host, _>(&h.id, |h| {
                marked = h.state == HostState::Ready
                    && now_ms().saturating_sub(h.last_heartbeat_ms) > limit;
                if marked {
                    h.state = HostState::Down;
                }
                marked
            })
            .await?;
        if !marked {
            continue;
        }
        tracing::warn!(host = %h.id, "missed heartbeats: host down");
        ctx.events
            .publish(
                "host.down",
                SYSTEM_TENANT,
                &h.id,
                serde_json::json!({"last_heartbeat_ms": h.last_heartbeat_ms}),
            )
            .await;
        for vm in ctx.store.list_all::<Vm>().await? {
            if vm.host.as_deref() != Some(h.id.as_str()) {
                continue;
            }
            host_down(ctx, &h, &vm).await?;
        }
    }
    Ok(())
}

/// A VM whose host went down: rescheduled (policy `restart`) or left waiting.
async fn host_down(ctx: &Context, h: &Host, vm: &Vm) -> Result<()> {
    let restart = vm.spec.on_host_failure == HostFailurePolicy::Restart
        && vm.desired != DesiredState::Deleted;
    let v = ctx
        .store
        .update::<Vm, _>(&vm.id, |v| {
            if v.host.as_deref() != Some(h.id.as_str()) {
                return false;
            }
            if restart {
                v.host = None;
                v.migrating = None;
            }
            v.observed = Some(Observed {
                state: if restart { "rescheduling" } else { "unknown" }.into(),
                host: Some(h.id.clone()),
                at_ms: now_ms(),
                error: Some(format!("host {} is down", h.id)),
            });
            true
        })
        .await?;
    let kind = if restart {
        "vm.rescheduling"
    } else {
        "vm.host_down"
    };
    ctx.events
        .publish(kind, &v.tenant, &v.id, serde_json::json!({"host": h.id}))
        .await;
    Ok(())
}

/// Places every VM that has no host.
async fn place_pending(ctx: &Context) -> Result<()> {
    let (mut views, vms) = placement::host_views(ctx).await?;
    let pending: Vec<&Vm> = vms
        .iter()
        .filter(|v| v.host.is_none() && v.desired != DesiredState::Deleted)
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let tenants = placement::tenants(ctx).await?;
    for vm in pending {
        let req = placement::request_for(vm, &tenants, &vms);
        let picked = scheduler::place(&req, &views, ctx.settings.weights).map(|h| h.id.clone());
        ctx.metrics.decision(picked.is_ok());
        let host = match picked {
            Ok(host) => host,
            Err(e) => {
                let mut error = e.to_string();
                if let Some(burst) = crate::cloud::burst::unplaceable(ctx, vm).await {
                    error = format!("{error}; {burst}");
                }
                let why = Observed {
                    state: "pending".into(),
                    host: None,
                    at_ms: now_ms(),
                    error: Some(error),
                };
                set_observed(ctx, &vm.id, why).await?;
                continue;
            }
        };
        let mut placed = false;
        let v = ctx
            .store
            .update::<Vm, _>(&vm.id, |v| {
                placed = v.host.is_none() && v.desired != DesiredState::Deleted;
                if placed {
                    v.host = Some(host.clone());
                }
                placed
            })
            .await?;
        if placed {
            if let Some(h) = views.iter_mut().find(|h| h.id == host) {
                h.add(&v.id, v.spec.resources(), &tenant_labels(&v));
            }
            ctx.events
                .publish(
                    "vm.placed",
                    &v.tenant,
                    &v.id,
                    serde_json::json!({"host": host}),
                )
                .await;
        }
    }
    Ok(())
}

/// Drives every placed VM on a Ready host towards its desired state, hosts in parallel.
async fn drive_all(ctx: &Context) -> Result<()> {
    let hosts: HashMap<String, Host> = ctx
        .store
        .list_all::<Host>()
        .await?
        .into_iter()
        .map(|h| (h.id.clone(), h))
        .collect();
    let vms = ctx.store.list_all::<Vm>().await?;
    let mut tasks = tokio::task::JoinSet::new();
    for vm in vms {
        if vm.migrating.is_some() {
            continue;
        }
        let host = match vm.host.as_ref() {
            None if vm.desired == DesiredState::Deleted => {
                forget(ctx, &vm).await?;
                continue;
            }
            None => continue,
            Some(h) => match hosts.get(h) {
                Some(h) if h.state == HostState::Ready => h.clone(),
                Some(_) => continue,
                None => {
                    // Its host was removed from the cluster: place it again.
                    ctx.store
                        .update::<Vm, _>(&vm.id, |v| {
                            v.host = None;
                            true
                        })
                        .await?;
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        tasks.spawn(async move {
            if let Err(e) = drive(&ctx, &vm, &host).await {
                tracing::warn!(vm = %vm.id, "reconcile: {e}");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// One VM on its host: create, start, stop or delete it as needed (idempotent).
async fn drive(ctx: &Context, vm: &Vm, host: &Host) -> Result<()> {
    let hd = ctx.hostd(host)?;
    let obs = |state: &str, error: Option<String>| Observed {
        state: state.into(),
        host: Some(host.id.clone()),
        at_ms: now_ms(),
        error,
    };
    let info = match hd.vm(&vm.id).await {
        Ok(i) => Some(i),
        Err(e) if e.is_not_found() => None,
        Err(e) => return set_observed(ctx, &vm.id, obs("unknown", Some(e.to_string()))).await,
    };
    let result = match (vm.desired, info) {
        (DesiredState::Deleted, None) => return forget(ctx, vm).await,
        (DesiredState::Deleted, Some(_)) => match hd.delete(&vm.id).await {
            Ok(()) => return forget(ctx, vm).await,
            Err(e) if e.is_not_found() => return forget(ctx, vm).await,
            Err(e) => Err(e),
        },
        (d, None) => {
            let mut spec = crate::model::spec_to_hostd(&vm.spec, &vm.id);
            spec.start = d == DesiredState::Running;
            hd.create(&spec).await.map(|i| state_name(i.state))
        }
        (DesiredState::Running, Some(i))
            if matches!(
                i.state,
                VmState::Created | VmState::Stopped | VmState::Crashed
            ) =>
        {
            hd.start(&vm.id).await.map(|_| "starting")
        }
        (DesiredState::Stopped, Some(i))
            if matches!(
                i.state,
                VmState::Running | VmState::Paused | VmState::Starting
            ) =>
        {
            hd.stop(&vm.id, false).await.map(|_| "stopping")
        }
        (_, Some(i)) => Ok(state_name(i.state)),
    };
    match result {
        Ok(s) => set_observed(ctx, &vm.id, obs(s, None)).await,
        Err(e) => set_observed(ctx, &vm.id, obs("error", Some(e.to_string()))).await,
    }
}

/// The loop logic against an in-process fake hostd that speaks hostd's contract (the
/// end-to-end proof against real hostd processes is in `tests/tests/controller_hostd.rs`).
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use nova_hostd_api::{VmInfo, VmSpec as HostdSpec, VmState};

    use super::*;
    use crate::context::Settings;
    use crate::model::{Resources, VmSpec};

    #[derive(Clone, Default)]
    struct Fake {
        vms: Arc<Mutex<HashMap<String, VmInfo>>>,
        calls: Arc<Mutex<Vec<String>>>,
    }

    fn info(spec: &HostdSpec, state: VmState) -> VmInfo {
        VmInfo {
            id: spec.id.clone().unwrap_or_default(),
            name: spec.name.clone(),
            state,
            spec: spec.clone(),
            pid: None,
            kvm: None,
            uptime_ms: None,
            disks: vec![],
            nics: vec![],
            restarts: 0,
            exit: None,
            counters: Default::default(),
            migration: None,
        }
    }

    async fn fake_hostd() -> (String, Fake) {
        let fake = Fake::default();
        async fn get_vm(
            State(f): State<Fake>,
            Path(id): Path<String>,
        ) -> std::result::Result<Json<VmInfo>, StatusCode> {
            let vms = f.vms.lock().unwrap();
            vms.get(&id).cloned().map(Json).ok_or(StatusCode::NOT_FOUND)
        }
        async fn create(State(f): State<Fake>, Json(spec): Json<HostdSpec>) -> Json<VmInfo> {
            let id = spec.id.clone().unwrap_or_default();
            let state = if spec.start {
                VmState::Running
            } else {
                VmState::Created
            };
            f.calls.lock().unwrap().push(format!("create {id}"));
            let i = info(&spec, state);
            f.vms.lock().unwrap().insert(id, i.clone());
            Json(i)
        }
        async fn act(
            State(f): State<Fake>,
            Path((id, what)): Path<(String, String)>,
        ) -> std::result::Result<Json<VmInfo>, StatusCode> {
            f.calls.lock().unwrap().push(format!("{what} {id}"));
            let mut vms = f.vms.lock().unwrap();
            let v = vms.get_mut(&id).ok_or(StatusCode::NOT_FOUND)?;
            v.state = if what == "start" {
                VmState::Running
            } else {
                VmState::Stopped
            };
            Ok(Json(v.clone()))
        }
        async fn delete(State(f): State<Fake>, Path(id): Path<String>) -> StatusCode {
            f.calls.lock().unwrap().push(format!("delete {id}"));
            f.vms.lock().unwrap().remove(&id);
            StatusCode::NO_CONTENT
        }
        let app = Router::new()
            .route("/v1/vms", post(create))
            .route("/v1/vms/{id}", get(get_vm).delete(delete))
            .route("/v1/vms/{id}/{what}", post(act))
            .with_state(fake.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        (url, fake)
    }

    fn context(dir: &std::path::Path) -> Context {
        let (_tx, leading) = tokio::sync::watch::channel(true);
        let store = Arc::new(crate::store::sqlite::SqliteStore::open(&dir.join("db")).unwrap());
        Context::new(store, Settings::default(), leading, "t".into()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_drive_a_vm_through_its_life_and_repeat_nothing() {
        let dir = nova_tests::TempDir::new();
        let ctx = context(dir.path());
        let (url, fake) = fake_hostd().await;
        let host = Host {
            id: "h1".into(),
            hostname: "h1".into(),
            url,
            hostd_token: "t".into(),
            labels: Default::default(),
            state: HostState::Ready,
            cordoned: false,
            draining: false,
            capacity: Resources {
                vcpus: 4,
                mem_mib: 4096,
                disk_mib: 0,
            },
            allocated: Resources::default(),
            kvm: "none".into(),
            image_version: None,
            registered_at_ms: now_ms(),
            last_heartbeat_ms: now_ms(),
            revision: 0,
        };
        ctx.store.create(&host).await.unwrap();
        let spec: VmSpec = serde_json::from_str(r#"{"name": "web", "kernel": "/k"}"#).unwrap();
        let vm = crate::vms::create(&ctx, "t", spec).await.unwrap();
        let id = vm.id.clone();
        let calls = |f: &Fake| f.calls.lock().unwrap().clone();

        pass(&ctx).await.unwrap();
        pass(&ctx).await.unwrap();
        let v = ctx.store.must_read::<Vm>(&id).await.unwrap();
        assert_eq!(v.host.as_deref(), Some("h1"));
        assert_eq!(v.observed.unwrap().state, "running");
        assert_eq!(
            calls(&fake),
            vec![format!("create {id}")],
            "created once, however many passes"
        );

        crate::vms::set_desired(&ctx, &id, DesiredState::Stopped, None)
            .await
            .unwrap();
        for _ in 0..3 {
            pass(&ctx).await.unwrap();
        }
        assert_eq!(
            calls(&fake),
            vec![format!("create {id}"), format!("stop {id}")]
        );
        let observed = ctx.store.must_read::<Vm>(&id).await.unwrap().observed;
        assert_eq!(observed.unwrap().state, "stopped");

        // hostd lost the VM (say, its disk was wiped): the next pass makes it again.
        fake.vms.lock().unwrap().clear();
        crate::vms::set_desired(&ctx, &id, DesiredState::Running, None)
            .await
            .unwrap();
        pass(&ctx).await.unwrap();
        assert_eq!(calls(&fake).last().unwrap(), &format!("create {id}"));

        crate::vms::set_desired(&ctx, &id, DesiredState::Deleted, None)
            .await
            .unwrap();
        pass(&ctx).await.unwrap();
        pass(&ctx).await.unwrap();
        assert_eq!(calls(&fake).last().unwrap(), &format!("delete {id}"));
        let deletes = calls(&fake)
            .iter()
            .filter(|c| c.starts_with("delete"))
            .count();
        assert_eq!(deletes, 1);
        assert!(
            ctx.store.read::<Vm>(&id).await.unwrap().is_none(),
            "the record goes once hostd let it go"
        );
        // ... and its name is free again.
        let again: VmSpec = serde_json::from_str(r#"{"name": "web", "kernel": "/k"}"#).unwrap();
        crate::vms::create(&ctx, "t", again).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_vm_name_is_taken_once_per_tenant() {
        let dir = nova_tests::TempDir::new();
        let ctx = context(dir.path());
        let spec: VmSpec = serde_json::from_str(r#"{"name": "db", "kernel": "/k"}"#).unwrap();
        // Raced: exactly one of eight concurrent creates of one name wins.
        let mut tasks = vec![];
        for _ in 0..8 {
            let (ctx, spec) = (ctx.clone(), spec.clone());
            tasks.push(tokio::spawn(async move {
                crate::vms::create(&ctx, "t", spec).await
            }));
        }
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => won += 1,
                Err(crate::error::Error::Conflict { field, .. }) => {
                    assert_eq!(field.as_deref(), Some("name"))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(won, 1);
        crate::vms::create(&ctx, "other", spec).await.unwrap();
    }
}
