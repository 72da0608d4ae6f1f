//! The same story, through the API, on both backends: a SQLite file and a real etcd.
//! Everything a user stores survives a controller restart.

use nova_tests::controller::*;
use nova_tests::TempDir;
use serde_json::json;

fn story(c: &Controller) {
    let op = c.token_for("acme", "olga", "operator");
    // hosts
    let h = register_host(c, "h1", "http://127.0.0.1:9", 8, 8192);
    assert_eq!(heartbeat(c, "h1", &h, 8, 8192).status, 200);
    assert_eq!(
        c.admin("POST", "/v1/hosts/h1/cordon", None).body["cordoned"],
        true
    );
    assert_eq!(
        c.admin("POST", "/v1/hosts/h1/uncordon", None).body["cordoned"],
        false
    );
    // VMs: desired state changes
    let made = c.as_(
        &op,
        "POST",
        "/v1/vms",
        Some(json!({"name": "web", "image": "/k", "labels": {"app": "web"}, "start": false})),
    );
    assert_eq!(made.status, 201, "{made:?}");
    let id = made.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        c.as_(&op, "POST", &format!("/v1/vms/{id}/start"), None)
            .body["desired"],
        "running"
    );
    assert_eq!(
        c.as_(&op, "POST", &format!("/v1/vms/{id}/stop"), None).body["desired"],
        "stopped"
    );
    let got = c.as_(&op, "GET", &format!("/v1/vms/{id}"), None);
    assert_eq!(got.body["spec"]["labels"]["app"], "web");
    // The scheduler places it on the only host.
    wait_for(10, "placement", || {
        (c.as_(&op, "GET", &format!("/v1/vms/{id}"), None).body["host"] == "h1").then_some(())
    });
    // policy
    let p = json!({"mode": "precopy", "downtime_ms": 250, "bandwidth_mbit": 1000, "completion_timeout_s": 120,
        "postcopy_allowed": false, "max_parallel_cluster": 3, "max_parallel_per_host": 1});
    assert_eq!(
        c.admin("PUT", "/v1/migration-policy", Some(p.clone()))
            .status,
        200
    );
    assert_eq!(c.admin("GET", "/v1/migration-policy", None).body, p);
    // a second VM, deleted: its record goes once no host holds it
    let gone = c
        .as_(
            &op,
            "POST",
            "/v1/vms",
            Some(json!({"name": "tmp", "image": "/k", "start": false})),
        )
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        c.as_(&op, "DELETE", &format!("/v1/vms/{gone}"), None)
            .status,
        202
    );
    // tokens: revoke one
    let extra = c.admin(
        "POST",
        "/v1/tokens",
        Some(json!({"user": "olga", "role": "viewer"})),
    );
    let (secret, tid) = (
        extra.body["token"].as_str().unwrap().to_string(),
        extra.body["info"]["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(c.as_(&secret, "GET", "/v1/vms", None).status, 200);
    assert_eq!(
        c.admin("DELETE", &format!("/v1/tokens/{tid}"), None).status,
        200
    );
    assert_eq!(
        c.as_(&secret, "GET", "/v1/vms", None).status,
        401,
        "revoked"
    );
    // audit
    let log = c.admin("GET", "/v1/audit", None).body;
    assert!(log.as_array().unwrap().len() >= 8, "{log}");
}

fn after_restart(c: &Controller) {
    let vms = c.admin("GET", "/v1/vms", None).body;
    let names: Vec<_> = vms
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["spec"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"web".to_string()), "{names:?}");
    assert_eq!(c.admin("GET", "/v1/hosts/h1", None).status, 200);
    assert_eq!(
        c.admin("GET", "/v1/migration-policy", None).body["downtime_ms"],
        250
    );
    assert_eq!(
        c.admin("GET", "/v1/users", None)
            .body
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["id"] == "olga")
            .count(),
        1
    );
}

#[test]
fn same_suite_passes_on_sqlite_and_etcd() {
    // SQLite
    let d = TempDir::new();
    let mut c = Controller::sqlite(d.path());
    story(&c);
    c.kill();
    let c = Controller::sqlite(d.path());
    after_restart(&c);
    drop(c);
    // etcd
    let Some(etcd) = Etcd::start() else { return };
    let d = TempDir::new();
    let opts = Opts {
        store: Some(format!("etcd:{}", etcd.url)),
        ..Opts::default()
    };
    let mut c = Controller::start(d.path(), opts.clone());
    wait_for(10, "leadership", || {
        (call(&c.url, None, "GET", "/v1/leader", None).body["leader"] == true).then_some(())
    });
    story(&c);
    c.kill();
    let c = Controller::start(
        d.path(),
        Opts {
            node: nova_tests::unique("ctl"),
            ..opts
        },
    );
    after_restart(&c);
}
