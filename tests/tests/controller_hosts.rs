//! Hosts as the controller sees them: heartbeats, a host that goes silent is marked
//! down and its VMs whose policy says so restart elsewhere, and every change is on
//! the event stream. The hosts here are the test itself speaking hostd's side of the
//! protocol (register, heartbeat), so this is about the controller's decisions; the
//! real-hostd stories are in `controller_hostd.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nova_controller_api::{HostState, VmSpec};
use nova_tests::controller::*;
use nova_tests::TempDir;
use serde_json::json;

fn spec(v: serde_json::Value) -> VmSpec {
    serde_json::from_value(v).unwrap()
}

/// Heartbeats for a pretend host until `alive` goes false.
fn beat(
    c: &Controller,
    id: &'static str,
    token: String,
    alive: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let api = c.as_(&token);
    std::thread::spawn(move || {
        while alive.load(Ordering::SeqCst) {
            let hb = nova_hostd_api::Heartbeat {
                host_id: id.into(),
                info: host_info(id, 8, 8192),
                vms: vec![],
            };
            let _: Result<(), _> =
                block_on(api.http().post(&format!("/v1/hosts/{id}/heartbeat"), &hb));
            std::thread::sleep(Duration::from_millis(300));
        }
    })
}

#[test]
fn missed_heartbeats_mark_a_host_down_and_restart_its_vms_elsewhere() {
    let d = TempDir::new();
    let c = Controller::start(
        d.path(),
        Opts {
            down_after_ms: 2500,
            ..Opts::default()
        },
    );
    let mut events = EventStream::open(&c.url, &c.admin);
    // Nothing listens on port 9 of loopback: calls to these "hostd"s fail fast.
    let t1 = register_host(&c, "h1", "http://127.0.0.1:9", 8, 8192);
    let t2 = register_host(&c, "h2", "http://127.0.0.1:9", 8, 8192);
    let (a1, a2) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
    );
    let b1 = beat(&c, "h1", t1, a1.clone());
    let b2 = beat(&c, "h2", t2, a2.clone());
    block_on(c.api.cordon("h2")).unwrap();
    let ha = block_on(c.api.create_vm(
        &spec(json!({"name": "ha", "kernel": "/k", "on_host_failure": "restart"})),
        None,
    ))
    .unwrap()
    .id;
    let pet = block_on(
        c.api
            .create_vm(&spec(json!({"name": "pet", "kernel": "/k"})), None),
    )
    .unwrap()
    .id;
    events.until("vm.placed", &ha, 10);
    for id in [&ha, &pet] {
        wait_for(10, "placement on h1", || {
            (block_on(c.api.vm(id)).unwrap().host.as_deref() == Some("h1")).then_some(())
        });
    }
    block_on(c.api.uncordon("h2")).unwrap();

    a1.store(false, Ordering::SeqCst); // h1 goes silent
    b1.join().unwrap();
    events.until("host.down", "h1", 10);
    assert_eq!(block_on(c.api.host("h1")).unwrap().state, HostState::Down);
    let moved = events.until("vm.placed", &ha, 10);
    assert_eq!(moved.data["host"], "h2");
    let pet_now = block_on(c.api.vm(&pet)).unwrap();
    assert_eq!(
        pet_now.host.as_deref(),
        Some("h1"),
        "policy 'wait' keeps the VM where it was"
    );
    assert_eq!(pet_now.observed.unwrap().state, "unknown");
    assert_eq!(block_on(c.api.host("h2")).unwrap().state, HostState::Ready);
    a2.store(false, Ordering::SeqCst);
    b2.join().unwrap();
}

#[test]
fn the_scheduler_keeps_anti_affine_vms_apart_and_respects_capacity_and_quota() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    for h in ["h1", "h2", "h3"] {
        register_host(&c, h, "http://127.0.0.1:9", 2, 2048);
    }
    block_on(c.api.create_tenant(&nova_controller_api::NewTenant {
        id: "small".into(),
        quota: Some(nova_controller_api::Quota {
            vcpus: 64,
            mem_mib: 65536,
            vms: 4,
        }),
    }))
    .unwrap();
    let create_for_small = |v: serde_json::Value| {
        block_on(
            c.api
                .http()
                .post::<_, nova_controller_api::Vm>("/v1/vms?tenant=small", &spec(v)),
        )
    };
    let mut ids = vec![];
    for i in 0..3 {
        let v = create_for_small(
            json!({"name": format!("db{i}"), "kernel": "/k", "vcpus": 1, "mem_mib": 512,
                "labels": {"app": "db"}, "affinity": {"apart_from": ["app=db"]}}),
        )
        .unwrap();
        ids.push(v.id);
    }
    let hosts: Vec<String> = ids
        .iter()
        .map(|id| wait_for(10, "placement", || block_on(c.api.vm(id)).unwrap().host))
        .collect();
    let mut uniq = hosts.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 3, "anti-affine VMs share a host: {hosts:?}");
    // A fourth anti-affine VM has nowhere to go; the reason is in its observed state.
    let id = create_for_small(
        json!({"name": "db3", "kernel": "/k", "labels": {"app": "db"},
        "affinity": {"apart_from": ["app=db"]}}),
    )
    .unwrap()
    .id;
    let pending_reason = |id: &str| {
        wait_for(10, "a pending reason", || {
            block_on(c.api.vm(id))
                .unwrap()
                .observed
                .and_then(|o| o.error)
        })
    };
    let why = pending_reason(&id);
    assert!(why.contains("anti-affinity"), "{why}");
    // Too big for any host.
    let big = block_on(c.api.create_vm(
        &spec(json!({"name": "big", "kernel": "/k", "vcpus": 4})),
        None,
    ))
    .unwrap()
    .id;
    let why = pending_reason(&big);
    assert!(why.contains("capacity"), "{why}");
    // The tenant's quota (4 VMs) is full.
    let q = create_for_small(json!({"name": "db4", "kernel": "/k"}));
    let e = q.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.body().unwrap().error.contains("quota"));
}

#[test]
fn the_rebalancer_proposes_migrations_off_a_crowded_host() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    register_host(&c, "h1", "http://127.0.0.1:9", 8, 8192);
    register_host(&c, "h2", "http://127.0.0.1:9", 8, 8192);
    block_on(c.api.cordon("h2")).unwrap();
    let ids: Vec<String> = (0..6)
        .map(|i| {
            let s =
                spec(json!({"name": format!("v{i}"), "kernel": "/k", "vcpus": 1, "mem_mib": 1024}));
            block_on(c.api.create_vm(&s, None)).unwrap().id
        })
        .collect();
    for id in &ids {
        wait_for(10, "placement on h1", || {
            (block_on(c.api.vm(id)).unwrap().host.as_deref() == Some("h1")).then_some(())
        });
    }
    assert!(
        block_on(c.api.rebalance()).unwrap().is_empty(),
        "nowhere to move while h2 is cordoned"
    );
    block_on(c.api.uncordon("h2")).unwrap();
    let moves = block_on(c.api.rebalance()).unwrap();
    assert!(!moves.is_empty() && moves.len() <= 3, "{moves:?}");
    assert!(moves
        .iter()
        .all(|m| m.from == "h1" && m.to == "h2" && ids.contains(&m.vm)));
}
