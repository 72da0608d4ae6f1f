//! Hosts as the controller sees them: heartbeats, a host that goes silent is marked
//! down and its VMs whose policy says so restart elsewhere, and every change is on
//! the event stream. The hosts here are the test itself speaking hostd's side of the
//! protocol (register, heartbeat), so this is about the controller's decisions; the
//! real-hostd stories are in `controller_hostd.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nova_tests::controller::*;
use nova_tests::TempDir;
use serde_json::json;

/// Heartbeats for a pretend host until `alive` goes false.
fn beat(
    url: String,
    id: &'static str,
    token: String,
    alive: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while alive.load(Ordering::SeqCst) {
            let _ = call(
                &url,
                Some(&token),
                "POST",
                &format!("/v1/hosts/{id}/heartbeat"),
                Some(json!({"host_id": id, "info": host_info(id, 8, 8192), "vms": []})),
            );
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
    let b1 = beat(c.url.clone(), "h1", t1, a1.clone());
    let b2 = beat(c.url.clone(), "h2", t2, a2.clone());
    c.admin("POST", "/v1/hosts/h2/cordon", None);
    let ha = c
        .admin(
            "POST",
            "/v1/vms",
            Some(json!({"name": "ha", "image": "/k", "on_host_failure": "restart"})),
        )
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pet = c
        .admin(
            "POST",
            "/v1/vms",
            Some(json!({"name": "pet", "image": "/k"})),
        )
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    events.until("vm.placed", &ha, 10);
    for id in [&ha, &pet] {
        wait_for(10, "placement on h1", || {
            (c.admin("GET", &format!("/v1/vms/{id}"), None).body["host"] == "h1").then_some(())
        });
    }
    c.admin("POST", "/v1/hosts/h2/uncordon", None);

    a1.store(false, Ordering::SeqCst); // h1 goes silent
    b1.join().unwrap();
    events.until("host.down", "h1", 10);
    assert_eq!(c.admin("GET", "/v1/hosts/h1", None).body["state"], "down");
    let moved = events.until("vm.placed", &ha, 10);
    assert_eq!(moved["data"]["host"], "h2");
    let pet_now = c.admin("GET", &format!("/v1/vms/{pet}"), None).body;
    assert_eq!(
        pet_now["host"], "h1",
        "policy 'wait' keeps the VM where it was"
    );
    assert_eq!(pet_now["observed"]["state"], "unknown");
    assert_eq!(c.admin("GET", "/v1/hosts/h2", None).body["state"], "ready");
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
    let t = c.admin(
        "POST",
        "/v1/tenants",
        Some(json!({"id": "small", "quota": {"vcpus": 64, "mem_mib": 65536, "vms": 4}})),
    );
    assert_eq!(t.status, 201, "{t:?}");
    let mut ids = vec![];
    for i in 0..3 {
        let a = c.admin(
            "POST",
            "/v1/vms?tenant=small",
            Some(
                json!({"name": format!("db{i}"), "image": "/k", "vcpus": 1, "mem_mib": 512,
            "labels": {"app": "db"}, "affinity": {"apart_from": ["app=db"]}}),
            ),
        );
        assert_eq!(a.status, 201, "{a:?}");
        ids.push(a.body["id"].as_str().unwrap().to_string());
    }
    let hosts: Vec<String> = ids
        .iter()
        .map(|id| {
            wait_for(10, "placement", || {
                c.admin("GET", &format!("/v1/vms/{id}"), None).body["host"]
                    .as_str()
                    .map(String::from)
            })
        })
        .collect();
    let mut uniq = hosts.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 3, "anti-affine VMs share a host: {hosts:?}");
    // A fourth anti-affine VM has nowhere to go; the reason is in its observed state.
    let a = c.admin("POST", "/v1/vms?tenant=small", Some(json!({"name": "db3", "image": "/k", "labels": {"app": "db"}, "affinity": {"apart_from": ["app=db"]}})));
    let id = a.body["id"].as_str().unwrap().to_string();
    let why = wait_for(10, "a pending reason", || {
        c.admin("GET", &format!("/v1/vms/{id}"), None).body["observed"]["error"]
            .as_str()
            .map(String::from)
    });
    assert!(why.contains("anti-affinity"), "{why}");
    // Too big for any host.
    let big = c
        .admin(
            "POST",
            "/v1/vms",
            Some(json!({"name": "big", "image": "/k", "vcpus": 4})),
        )
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let why = wait_for(10, "a pending reason", || {
        c.admin("GET", &format!("/v1/vms/{big}"), None).body["observed"]["error"]
            .as_str()
            .map(String::from)
    });
    assert!(why.contains("capacity"), "{why}");
    // The tenant's quota (4 VMs) is full.
    let q = c.admin(
        "POST",
        "/v1/vms?tenant=small",
        Some(json!({"name": "db4", "image": "/k"})),
    );
    assert_eq!(q.status, 409, "{q:?}");
    assert!(q.body["error"].as_str().unwrap().contains("quota"));
}

#[test]
fn the_rebalancer_proposes_migrations_off_a_crowded_host() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    register_host(&c, "h1", "http://127.0.0.1:9", 8, 8192);
    register_host(&c, "h2", "http://127.0.0.1:9", 8, 8192);
    c.admin("POST", "/v1/hosts/h2/cordon", None);
    let ids: Vec<String> = (0..6)
        .map(|i| {
            c.admin(
                "POST",
                "/v1/vms",
                Some(json!({"name": format!("v{i}"), "image": "/k", "vcpus": 1, "mem_mib": 1024})),
            )
            .body["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for id in &ids {
        wait_for(10, "placement on h1", || {
            (c.admin("GET", &format!("/v1/vms/{id}"), None).body["host"] == "h1").then_some(())
        });
    }
    assert_eq!(
        c.admin("GET", "/v1/rebalance", None).body,
        json!([]),
        "nowhere to move while h2 is cordoned"
    );
    c.admin("POST", "/v1/hosts/h2/uncordon", None);
    let moves = c.admin("GET", "/v1/rebalance", None).body;
    let moves = moves.as_array().unwrap();
    assert!(!moves.is_empty() && moves.len() <= 3, "{moves:?}");
    assert!(moves.iter().all(|m| m["from"] == "h1"
        && m["to"] == "h2"
        && ids.contains(&m["vm"].as_str().unwrap().to_string())));
}
