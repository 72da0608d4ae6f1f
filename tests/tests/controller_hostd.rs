//! The controller driving real `nova-hostd` processes (which run real `nova-vmm`s
//! booting the test guest): a VM created through the controller is placed, created
//! and started on a host; stop, start and delete follow the desired state; a
//! controller killed and restarted picks up where it was; migrations to a dead host
//! fail cleanly; drain evacuates a host by live migration.

use std::time::Duration;

use nova_tests::controller::{wait_for, Controller, EventStream};
use nova_tests::hostd::{testguest, Hostd, Opts as HostdOpts};
use nova_tests::{require_kvm, unique, TempDir};
use serde_json::json;

const BOOT: Duration = Duration::from_secs(40);

fn hostd_for(c: &Controller) -> Hostd {
    let join = c.dir.join("join.token");
    Hostd::start(HostdOpts {
        args: vec![
            "--controller".into(),
            c.url.clone(),
            "--join-token-file".into(),
            join.display().to_string(),
            "--bridge".into(),
            unique("nbr"),
        ],
        ..HostdOpts::default()
    })
}

fn wait_hosts_ready(c: &Controller, n: usize) {
    wait_for(30, "hosts to register", || {
        let hosts = c.admin("GET", "/v1/hosts", None).body;
        (hosts
            .as_array()
            .map(|a| a.iter().filter(|h| h["state"] == "ready").count())
            == Some(n))
        .then_some(())
    });
}

fn wait_observed(c: &Controller, id: &str, state: &str, secs: u64) -> serde_json::Value {
    wait_for(secs, &format!("{id} to be {state}"), || {
        let v = c.admin("GET", &format!("/v1/vms/{id}"), None).body;
        (v["observed"]["state"] == state).then_some(v)
    })
}

fn guest(name: &str) -> serde_json::Value {
    json!({"name": name, "image": testguest(), "vcpus": 1, "mem_mib": 64, "cmdline": "nova.workload=counter"})
}

#[test]
fn vms_follow_their_desired_state_on_real_hosts_across_a_controller_restart() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let mut c = Controller::sqlite(d.path());
    let (h1, h2) = (hostd_for(&c), hostd_for(&c));
    wait_hosts_ready(&c, 2);
    let mut events = EventStream::open(&c.url, &c.admin);
    let id = c.admin("POST", "/v1/vms", Some(guest("web"))).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let placed = events.until("vm.placed", &id, 20);
    let v = wait_observed(&c, &id, "running", 40);
    let host_id = v["host"].as_str().unwrap().to_string();
    assert_eq!(placed["data"]["host"], host_id.as_str());
    let h = if h1.get("/v1/host")["host_id"] == host_id.as_str() {
        &h1
    } else {
        &h2
    };
    h.wait_console(&id, "NOVA-TICK", BOOT);

    // Stop and start through the controller.
    c.admin("POST", &format!("/v1/vms/{id}/stop"), None);
    h.wait_state(&id, "stopped", Duration::from_secs(30));
    wait_observed(&c, &id, "stopped", 20);

    // The controller dies; the desired state it stored drives its successor.
    c.kill();
    let c = Controller::sqlite(d.path());
    c.admin("POST", &format!("/v1/vms/{id}/start"), None);
    h.wait_state(&id, "running", Duration::from_secs(30));
    wait_observed(&c, &id, "running", 20);
    assert_eq!(
        h.get("/v1/vms")["vms"].as_array().unwrap().len(),
        1,
        "no duplicate after the restart"
    );

    // Delete: hostd lets it go, then the record goes.
    assert_eq!(
        c.admin("DELETE", &format!("/v1/vms/{id}"), None).status,
        202
    );
    wait_for(30, "the VM to be gone", || {
        (c.admin("GET", &format!("/v1/vms/{id}"), None).status == 404).then_some(())
    });
    assert_eq!(h.request("GET", &format!("/v1/vms/{id}"), None).0, 404);
}

#[test]
fn a_migration_to_a_dead_host_fails_and_leaves_the_vm_running_on_its_source() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let (h1, mut h2) = (hostd_for(&c), hostd_for(&c));
    wait_hosts_ready(&c, 2);
    let id2 = h2.get("/v1/host")["host_id"].as_str().unwrap().to_string();
    c.admin("POST", &format!("/v1/hosts/{id2}/cordon"), None);
    let id = c.admin("POST", "/v1/vms", Some(guest("web"))).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = wait_observed(&c, &id, "running", 40);
    let src = v["host"].as_str().unwrap().to_string();
    c.admin("POST", &format!("/v1/hosts/{id2}/uncordon"), None);
    // The destination dies; the controller has not noticed yet (no missed heartbeat).
    h2.kill();
    let mut events = EventStream::open(&c.url, &c.admin);
    let op = c.admin("POST", &format!("/v1/vms/{id}/migrate"), None);
    assert_eq!(op.status, 202, "{op:?}");
    let op_id = op.body["id"].as_str().unwrap().to_string();
    let done = events.until("operation.done", &op_id, 60);
    assert_eq!(done["data"]["state"], "failed", "{done}");
    assert!(!done["data"]["message"].as_str().unwrap().is_empty());
    let v = c.admin("GET", &format!("/v1/vms/{id}"), None).body;
    assert_eq!(v["host"], src.as_str(), "the placement did not move: {v}");
    assert!(v.get("migrating").is_none(), "the VM is released: {v}");
    h1.wait_state(&id, "running", Duration::from_secs(10));
    // A viewer of another tenant cannot even see the operation.
    let other = c.token_for("acme", "vic", "viewer");
    assert_eq!(
        c.as_(&other, "GET", &format!("/v1/operations/{op_id}"), None)
            .status,
        404
    );
}

#[test]
fn drain_evacuates_a_host_by_live_migration_within_the_policy() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let (_h1, _h2) = (hostd_for(&c), hostd_for(&c));
    wait_hosts_ready(&c, 2);
    let hosts = c.admin("GET", "/v1/hosts", None).body;
    let (a, b) = (
        hosts[0]["id"].as_str().unwrap().to_string(),
        hosts[1]["id"].as_str().unwrap().to_string(),
    );
    c.admin("POST", &format!("/v1/hosts/{b}/cordon"), None);
    let policy = json!({"mode": "precopy", "downtime_ms": 300, "completion_timeout_s": 120, "postcopy_allowed": false,
        "max_parallel_cluster": 2, "max_parallel_per_host": 1});
    assert_eq!(
        c.admin("PUT", "/v1/migration-policy", Some(policy)).status,
        200
    );
    let ids: Vec<String> = (0..2)
        .map(|i| {
            c.admin("POST", "/v1/vms", Some(guest(&format!("w{i}"))))
                .body["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for id in &ids {
        assert_eq!(wait_observed(&c, id, "running", 40)["host"], a.as_str());
    }
    c.admin("POST", &format!("/v1/hosts/{b}/uncordon"), None);
    let mut events = EventStream::open(&c.url, &c.admin);
    let op = c.admin("POST", &format!("/v1/hosts/{a}/drain"), Some(json!({})));
    assert_eq!(op.status, 202, "{op:?}");
    let op_id = op.body["id"].as_str().unwrap().to_string();
    let done = events.until("operation.done", &op_id, 180);
    assert_eq!(done["data"]["state"], "succeeded", "{done}");
    for id in &ids {
        let v = c.admin("GET", &format!("/v1/vms/{id}"), None).body;
        assert_eq!(v["host"], b.as_str(), "{v}");
        let r = &done["data"]["result"][id];
        assert!(
            r["downtime_ms"].is_number() && r["bytes"].is_number() && r["total_ms"].is_number(),
            "{r}"
        );
    }
    assert_eq!(
        c.admin("GET", &format!("/v1/hosts/{a}"), None).body["cordoned"],
        true
    );
}
