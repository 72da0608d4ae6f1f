//! Reconciliation: the desired state is in the store; these loops (run by the leader
//! only) drive hosts towards it through hostd's API. Every pass starts from the store
//! and what hosts report, so a pass can be killed at any line and a restarted
//! controller picks up where the last one was. Also: hosts that miss heartbeats are
//! marked down, and their VMs whose policy says so are restarted elsewhere.

use std::collections::HashMap;
use std::time::Duration;

use nova_hostd::api::types::{VmState, VmSummary};

use crate::api::AppState;
use crate::hostd::Hostd;
use crate::model::{
    now_ms, DesiredState, Host, HostFailurePolicy, HostState, Observed, Tenant, Vm, SYSTEM_TENANT,
};
use crate::scheduler::{self, HostView, Request, Weights};
use crate::store::{Objects, StoreError};

/// Loop timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Between passes.
    pub interval: Duration,
    /// A host silent this long is down.
    pub down_after: Duration,
}

/// Runs the loops forever; passes only while this controller leads.
pub async fn run(st: AppState, t: Timing, weights: Weights) {
    let mut tick = tokio::time::interval(t.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !*st.leading.borrow() {
            continue;
        }
        if let Err(e) = pass(&st, t, weights).await {
            tracing::warn!("reconcile pass: {e}");
        }
    }
}

/// One pass: host health, then placement, then every VM towards its desired state.
pub async fn pass(st: &AppState, t: Timing, weights: Weights) -> Result<(), StoreError> {
    check_hosts(st, t.down_after).await?;
    crate::migration::resume_orphans(st).await?;
    place_pending(st, weights).await?;
    drive_all(st).await
}

/// Marks silent hosts down; their VMs with `on_host_failure: restart` lose their
/// placement so the scheduler restarts them elsewhere.
async fn check_hosts(st: &AppState, down_after: Duration) -> Result<(), StoreError> {
    let limit = down_after.as_millis() as u64;
    for h in st.store.list_all::<Host>().await? {
        if h.state != HostState::Ready || now_ms().saturating_sub(h.last_heartbeat_ms) <= limit {
            continue;
        }
        let mut marked = false;
        st.store
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
        st.events.publish(
            "host.down",
            SYSTEM_TENANT,
            &h.id,
            serde_json::json!({"last_heartbeat_ms": h.last_heartbeat_ms}),
        );
        for vm in st.store.list_all::<Vm>().await? {
            if vm.host.as_deref() != Some(h.id.as_str()) {
                continue;
            }
            let restart = vm.spec.on_host_failure == HostFailurePolicy::Restart
                && vm.desired != DesiredState::Deleted;
            let v = st
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
                        state: if restart {
                            "rescheduling".into()
                        } else {
                            "unknown".into()
                        },
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
            st.events
                .publish(kind, &v.tenant, &v.id, serde_json::json!({"host": h.id}));
        }
    }
    Ok(())
}

/// The scheduler's view of every host, built from the store, and the VMs.
pub async fn host_views(st: &AppState) -> Result<(Vec<HostView>, Vec<Vm>), StoreError> {
    let hosts = st.store.list_all::<Host>().await?;
    let vms = st.store.list_all::<Vm>().await?;
    let mut views: Vec<HostView> = hosts
        .iter()
        .map(|h| HostView {
            id: h.id.clone(),
            ready: h.state == HostState::Ready,
            cordoned: h.cordoned,
            labels: h.labels.clone(),
            capacity: h.capacity,
            ..Default::default()
        })
        .collect();
    let index: HashMap<String, usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (v.id.clone(), i))
        .collect();
    for vm in &vms {
        if let Some(i) = vm.host.as_ref().and_then(|h| index.get(h)) {
            let labels: Vec<String> = vm
                .spec
                .label_pairs()
                .map(|l| format!("{}/{l}", vm.tenant))
                .collect();
            views[*i].add(&vm.id, vm.spec.resources(), &labels);
        }
    }
    Ok((views, vms))
}

/// The scheduler's request for a VM.
pub fn request_for(vm: &Vm, tenants: &HashMap<String, Tenant>, vms: &[Vm]) -> Request {
    let mut used = crate::model::Resources::default();
    let mut count = 0;
    for o in vms.iter().filter(|o| {
        o.tenant == vm.tenant
            && o.id != vm.id
            && o.host.is_some()
            && o.desired != DesiredState::Deleted
    }) {
        used = used.plus(o.spec.resources());
        count += 1;
    }
    Request {
        tenant: vm.tenant.clone(),
        resources: vm.spec.resources(),
        host_labels: vm.spec.affinity.host_labels.clone(),
        with: vm
            .spec
            .affinity
            .with
            .iter()
            .map(|l| format!("{}/{l}", vm.tenant))
            .collect(),
        apart_from: vm
            .spec
            .affinity
            .apart_from
            .iter()
            .map(|l| format!("{}/{l}", vm.tenant))
            .collect(),
        exclude: vec![],
        quota: tenants.get(&vm.tenant).and_then(|t| t.quota),
        tenant_usage: (used, count),
    }
}

async fn set_observed(st: &AppState, id: &str, obs: Observed) -> Result<(), StoreError> {
    let mut changed = false;
    let v = st
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
        st.events.publish(
            "vm.state",
            &v.tenant,
            id,
            serde_json::to_value(&obs).unwrap_or_default(),
        );
    }
    Ok(())
}

/// Places every VM that has no host.
async fn place_pending(st: &AppState, weights: Weights) -> Result<(), StoreError> {
    let (mut views, vms) = host_views(st).await?;
    let pending: Vec<&Vm> = vms
        .iter()
        .filter(|v| v.host.is_none() && v.desired != DesiredState::Deleted)
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let tenants: HashMap<String, Tenant> = st
        .store
        .list_all::<Tenant>()
        .await?
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    for vm in pending {
        let req = request_for(vm, &tenants, &vms);
        let picked = scheduler::place(&req, &views, weights).map(|h| h.id.clone());
        match picked {
            Ok(host) => {
                let mut placed = false;
                let v = st
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
                        let labels: Vec<String> = v
                            .spec
                            .label_pairs()
                            .map(|l| format!("{}/{l}", v.tenant))
                            .collect();
                        h.add(&v.id, v.spec.resources(), &labels);
                    }
                    st.events.publish(
                        "vm.placed",
                        &v.tenant,
                        &v.id,
                        serde_json::json!({"host": host}),
                    );
                }
            }
            Err(e) => {
                set_observed(
                    st,
                    &vm.id,
                    Observed {
                        state: "pending".into(),
                        host: None,
                        at_ms: now_ms(),
                        error: Some(e.to_string()),
                    },
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// Drives every placed VM on a Ready host towards its desired state, hosts in parallel.
async fn drive_all(st: &AppState) -> Result<(), StoreError> {
    let hosts: HashMap<String, Host> = st
        .store
        .list_all::<Host>()
        .await?
        .into_iter()
        .map(|h| (h.id.clone(), h))
        .collect();
    let vms = st.store.list_all::<Vm>().await?;
    let mut tasks = tokio::task::JoinSet::new();
    for vm in vms {
        if vm.migrating.is_some() {
            continue;
        }
        let host = match vm.host.as_ref() {
            None if vm.desired == DesiredState::Deleted => {
                forget(st, &vm).await?;
                continue;
            }
            None => continue,
            Some(h) => match hosts.get(h) {
                Some(h) if h.state == HostState::Ready => h.clone(),
                Some(_) => continue,
                None => {
                    // Its host was removed from the cluster: place it again.
                    st.store
                        .update::<Vm, _>(&vm.id, |v| {
                            v.host = None;
                            true
                        })
                        .await?;
                    continue;
                }
            },
        };
        let st = st.clone();
        tasks.spawn(async move {
            if let Err(e) = drive(&st, &vm, &host).await {
                tracing::warn!(vm = %vm.id, "reconcile: {e}");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn forget(st: &AppState, vm: &Vm) -> Result<(), StoreError> {
    if st.store.remove::<Vm>(&vm.id).await? {
        st.events
            .publish("vm.deleted", &vm.tenant, &vm.id, serde_json::json!({}));
    }
    Ok(())
}

fn state_name(s: VmState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| format!("{s:?}"))
}

/// One VM on its host: create, start, stop or delete it as needed (idempotent).
async fn drive(st: &AppState, vm: &Vm, host: &Host) -> Result<(), StoreError> {
    let hd = Hostd {
        http: &st.http,
        url: &host.url,
        token: &host.hostd_token,
    };
    let obs = |state: String, error: Option<String>| Observed {
        state,
        host: Some(host.id.clone()),
        at_ms: now_ms(),
        error,
    };
    let info = match hd.vm(&vm.id).await {
        Ok(i) => Some(i),
        Err(e) if e.is_not_found() => None,
        Err(e) => {
            return set_observed(st, &vm.id, obs("unknown".into(), Some(e.to_string()))).await
        }
    };
    let result = match (vm.desired, info) {
        (DesiredState::Deleted, None) => return forget(st, vm).await,
        (DesiredState::Deleted, Some(_)) => match hd.delete(&vm.id).await {
            Ok(_) => return forget(st, vm).await,
            Err(e) if e.is_not_found() => return forget(st, vm).await,
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
            hd.start(&vm.id).await.map(|_| "starting".to_string())
        }
        (DesiredState::Stopped, Some(i))
            if matches!(
                i.state,
                VmState::Running | VmState::Paused | VmState::Starting
            ) =>
        {
            hd.stop(&vm.id).await.map(|_| "stopping".to_string())
        }
        (_, Some(i)) => Ok(state_name(i.state)),
    };
    match result {
        Ok(s) => set_observed(st, &vm.id, obs(s, None)).await,
        Err(e) => set_observed(st, &vm.id, obs("error".into(), Some(e.to_string()))).await,
    }
}

/// Records the VM states a host reported in its heartbeat.
pub async fn observe_heartbeat(
    st: &AppState,
    host: &str,
    vms: &[VmSummary],
) -> Result<(), StoreError> {
    for s in vms {
        let Some(vm) = st.store.read::<Vm>(&s.id).await? else {
            continue;
        };
        if vm.host.as_deref() != Some(host) || vm.migrating.is_some() {
            continue;
        }
        let state = state_name(s.state);
        if vm
            .observed
            .as_ref()
            .is_some_and(|o| o.state == state && o.error.is_none())
        {
            continue;
        }
        set_observed(
            st,
            &s.id,
            Observed {
                state,
                host: Some(host.into()),
                at_ms: now_ms(),
                error: None,
            },
        )
        .await?;
    }
    Ok(())
}

/// The loop logic against an in-process fake hostd (the end-to-end proof against real
/// hostd processes is in `tests/tests/controller_hostd.rs`).
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::{json, Value};

    use super::*;
    use crate::model::{HostState, Resources, VmSpec};

    #[derive(Clone, Default)]
    struct Fake {
        vms: Arc<Mutex<HashMap<String, (Value, &'static str)>>>,
        calls: Arc<Mutex<Vec<String>>>,
    }

    fn info(id: &str, spec: &Value, state: &str) -> Value {
        json!({"id": id, "name": spec["name"], "state": state, "spec": spec, "pid": null, "kvm": null, "uptime_ms": null,
            "disks": [], "nics": [], "restarts": 0, "exit": null, "counters": {}, "migration": null})
    }

    async fn fake_hostd() -> (String, Fake) {
        let fake = Fake::default();
        async fn get_vm(
            State(f): State<Fake>,
            Path(id): Path<String>,
        ) -> Result<Json<Value>, axum::http::StatusCode> {
            let vms = f.vms.lock().unwrap();
            vms.get(&id)
                .map(|(s, st)| Json(info(&id, s, st)))
                .ok_or(axum::http::StatusCode::NOT_FOUND)
        }
        async fn create(State(f): State<Fake>, Json(spec): Json<Value>) -> Json<Value> {
            let id = spec["id"].as_str().unwrap_or_default().to_string();
            let state = if spec["start"] == true {
                "running"
            } else {
                "created"
            };
            f.calls.lock().unwrap().push(format!("create {id}"));
            f.vms
                .lock()
                .unwrap()
                .insert(id.clone(), (spec.clone(), state));
            Json(info(&id, &spec, state))
        }
        async fn act(
            State(f): State<Fake>,
            Path((id, what)): Path<(String, String)>,
        ) -> Json<Value> {
            f.calls.lock().unwrap().push(format!("{what} {id}"));
            if let Some(v) = f.vms.lock().unwrap().get_mut(&id) {
                v.1 = if what == "start" {
                    "running"
                } else {
                    "stopped"
                };
            }
            Json(json!({}))
        }
        async fn delete(State(f): State<Fake>, Path(id): Path<String>) -> Json<Value> {
            f.calls.lock().unwrap().push(format!("delete {id}"));
            f.vms.lock().unwrap().remove(&id);
            Json(json!({}))
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

    fn state(dir: &std::path::Path) -> AppState {
        let (_tx, leading) = tokio::sync::watch::channel(true);
        AppState {
            store: Arc::new(crate::store::sqlite::SqliteStore::open(&dir.join("db")).unwrap()),
            events: crate::events::Events::new(),
            leading,
            node: "t".into(),
            join_hash: Arc::new(String::new()),
            limiter: Arc::new(crate::auth::FailedAuthLimiter::new(
                5,
                Duration::from_secs(60),
            )),
            http: crate::hostd::client(),
            slots: Default::default(),
            heartbeat_ms: 1000,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_drive_a_vm_through_its_life_and_repeat_nothing() {
        let dir = std::env::temp_dir().join(format!("nova-reconcile-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let st = state(&dir);
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
            registered_at_ms: now_ms(),
            last_heartbeat_ms: now_ms(),
        };
        st.store.create(&host).await.unwrap();
        let spec: VmSpec = serde_json::from_value(json!({"name": "web", "image": "/k"})).unwrap();
        let vm = Vm {
            id: "vm-1".into(),
            tenant: "t".into(),
            spec,
            desired: DesiredState::Running,
            host: None,
            observed: None,
            migrating: None,
            created_at_ms: now_ms(),
            revision: 0,
        };
        st.store.create(&vm).await.unwrap();
        let t = Timing {
            interval: Duration::from_millis(10),
            down_after: Duration::from_secs(60),
        };
        let w = Weights::default();
        let calls = |f: &Fake| f.calls.lock().unwrap().clone();

        pass(&st, t, w).await.unwrap();
        pass(&st, t, w).await.unwrap();
        let v = st.store.must_read::<Vm>("vm-1").await.unwrap();
        assert_eq!(v.host.as_deref(), Some("h1"));
        assert_eq!(v.observed.unwrap().state, "running");
        assert_eq!(
            calls(&fake),
            vec!["create vm-1"],
            "created once, however many passes"
        );

        st.store
            .update::<Vm, _>("vm-1", |v| {
                v.desired = DesiredState::Stopped;
                true
            })
            .await
            .unwrap();
        for _ in 0..3 {
            pass(&st, t, w).await.unwrap();
        }
        assert_eq!(calls(&fake), vec!["create vm-1", "stop vm-1"]);
        assert_eq!(
            st.store
                .must_read::<Vm>("vm-1")
                .await
                .unwrap()
                .observed
                .unwrap()
                .state,
            "stopped"
        );

        // hostd lost the VM (say, its disk was wiped): the next pass makes it again.
        fake.vms.lock().unwrap().clear();
        st.store
            .update::<Vm, _>("vm-1", |v| {
                v.desired = DesiredState::Running;
                true
            })
            .await
            .unwrap();
        pass(&st, t, w).await.unwrap();
        assert_eq!(calls(&fake).last().unwrap(), "create vm-1");

        st.store
            .update::<Vm, _>("vm-1", |v| {
                v.desired = DesiredState::Deleted;
                true
            })
            .await
            .unwrap();
        pass(&st, t, w).await.unwrap();
        pass(&st, t, w).await.unwrap();
        assert_eq!(calls(&fake).last().unwrap(), "delete vm-1");
        assert_eq!(
            calls(&fake)
                .iter()
                .filter(|c| c.starts_with("delete"))
                .count(),
            1
        );
        assert!(
            st.store.read::<Vm>("vm-1").await.unwrap().is_none(),
            "the record goes once hostd let it go"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
