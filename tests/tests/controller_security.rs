//! The controller's front door under attack and misuse: roles, tenants, tokens,
//! rate limits, bad input. Real `nova-controller` processes on SQLite.

use nova_tests::controller::*;
use nova_tests::TempDir;
use serde_json::json;

fn vm(name: &str) -> serde_json::Value {
    json!({"name": name, "vcpus": 1, "mem_mib": 128, "image": "/nonexistent/kernel", "start": false})
}

#[test]
fn viewer_tokens_cannot_mutate() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let op = c.token_for("acme", "olga", "operator");
    let viewer = c.token_for("acme", "vic", "viewer");
    let made = c.as_(&op, "POST", "/v1/vms", Some(vm("web")));
    assert_eq!(made.status, 201, "{made:?}");
    let id = made.body["id"].as_str().unwrap();
    // The viewer reads...
    assert_eq!(
        c.as_(&viewer, "GET", &format!("/v1/vms/{id}"), None).status,
        200
    );
    assert_eq!(
        c.as_(&viewer, "GET", "/v1/vms", None)
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // ...and can change nothing.
    for (m, p, b) in [
        ("POST", "/v1/vms".to_string(), Some(vm("x"))),
        ("POST", format!("/v1/vms/{id}/start"), None),
        ("POST", format!("/v1/vms/{id}/stop"), None),
        ("DELETE", format!("/v1/vms/{id}"), None),
        ("POST", format!("/v1/vms/{id}/migrate"), None),
        (
            "POST",
            "/v1/users".to_string(),
            Some(json!({"id": "evil", "role": "admin"})),
        ),
        (
            "POST",
            "/v1/tokens".to_string(),
            Some(json!({"user": "vic"})),
        ),
        (
            "POST",
            "/v1/tenants".to_string(),
            Some(json!({"id": "mine"})),
        ),
    ] {
        let a = c.as_(&viewer, m, &p, b);
        assert_eq!(a.status, 403, "{m} {p} as a viewer: {a:?}");
    }
    assert_eq!(
        c.admin("GET", &format!("/v1/vms/{id}"), None).body["desired"],
        "stopped",
        "nothing changed"
    );
}

#[test]
fn tenants_cannot_see_each_others_vms() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let a = c.token_for("acme", "ann", "admin");
    let b = c.token_for("globex", "bob", "admin");
    let va = c.as_(&a, "POST", "/v1/vms", Some(vm("a-secret"))).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let vb = c.as_(&b, "POST", "/v1/vms", Some(vm("b-secret"))).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let list = c.as_(&a, "GET", "/v1/vms", None).body;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], va.as_str());
    // Every way at bob's VM answers "not found", as if it did not exist.
    for (m, p) in [
        ("GET", format!("/v1/vms/{vb}")),
        ("POST", format!("/v1/vms/{vb}/start")),
        ("POST", format!("/v1/vms/{vb}/stop")),
        ("DELETE", format!("/v1/vms/{vb}")),
        ("POST", format!("/v1/vms/{vb}/migrate")),
    ] {
        assert_eq!(c.as_(&a, m, &p, None).status, 404, "{m} {p} across tenants");
    }
    // Nor their users, tokens, audit entries, or a way to act for the other tenant.
    let users = c.as_(&a, "GET", "/v1/users", None).body;
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["tenant"] == "acme"),
        "{users}"
    );
    let tokens = c.as_(&a, "GET", "/v1/tokens", None).body;
    assert!(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["tenant"] == "acme"),
        "{tokens}"
    );
    let audit = c.as_(&a, "GET", "/v1/audit", None).body;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant"] == "acme"),
        "{audit}"
    );
    assert_eq!(
        c.as_(&a, "POST", "/v1/vms?tenant=globex", Some(vm("sneaky")))
            .status,
        403
    );
    assert_eq!(
        c.as_(
            &a,
            "POST",
            "/v1/users",
            Some(json!({"id": "mole", "role": "admin", "tenant": "globex"}))
        )
        .status,
        403
    );
    assert_eq!(
        c.as_(&a, "POST", "/v1/tokens", Some(json!({"user": "bob"})))
            .status,
        400,
        "bob is not in acme"
    );
    assert_eq!(
        c.as_(&a, "GET", "/v1/hosts", None).status,
        403,
        "hosts belong to the cluster"
    );
    // The system admin sees both.
    assert_eq!(
        c.admin("GET", "/v1/vms", None)
            .body
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn api_tokens_are_stored_only_as_hashes() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let t = c.token_for("acme", "ann", "viewer");
    assert!(
        t.starts_with("nova_") && t.len() == 69,
        "256-bit secret: {t}"
    );
    drop(c); // flush
    let db = std::fs::read(d.join("controller.db")).unwrap();
    let wal = std::fs::read(d.join("controller.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&t[5..]), "the secret is in the database");
    }
    let listed = Controller::sqlite(d.path());
    let tokens = listed.admin("GET", "/v1/tokens", None).body;
    assert!(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("hash").is_none()),
        "{tokens}"
    );
}

#[test]
fn failed_authentication_is_rate_limited_per_client() {
    let d = TempDir::new();
    let c = Controller::start(
        d.path(),
        Opts {
            max_failed_auth: 5,
            ..Opts::default()
        },
    );
    for i in 0..5 {
        let a = call(
            &c.url,
            Some(&format!("nova_{i:064}")),
            "GET",
            "/v1/vms",
            None,
        );
        assert_eq!(a.status, 401, "{a:?}");
    }
    assert_eq!(
        call(&c.url, Some("nova_guess"), "GET", "/v1/vms", None).status,
        429
    );
    // Locked out, even with a good token, until the window passes.
    assert_eq!(c.admin("GET", "/v1/vms", None).status, 429);
    assert_eq!(
        call(&c.url, None, "GET", "/v1/health", None).status,
        200,
        "health stays open"
    );
}

#[test]
fn every_request_is_validated_and_the_error_names_the_field() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let cases = [
        (json!({"name": "a", "image": "/k", "vcpus": 0}), "vcpus"),
        (json!({"name": "a", "image": "/k", "vcpus": 999}), "vcpus"),
        (json!({"name": "a", "image": "/k", "mem_mib": 1}), "mem_mib"),
        (json!({"name": "a", "image": "relative/path"}), "image"),
        (json!({"name": "../etc", "image": "/k"}), "name"),
        (json!({"image": "/k"}), "name"),
        (json!({"name": "a", "image": "/k", "cpus": 2}), "cpus"),
        (
            json!({"name": "a", "image": "/k", "disks": [{"image": "/d"}, {}]}),
            "disks[1].size_mib",
        ),
        (
            json!({"name": "a", "image": "/k", "nics": [{"mac": "ff:ff:ff:ff:ff:ff"}]}),
            "nics[0].mac",
        ),
        (
            json!({"name": "a", "image": "/k", "labels": {"app": "we b"}}),
            "labels.app",
        ),
        (
            json!({"name": "a", "image": "/k", "affinity": {"apart_from": ["nokey"]}}),
            "affinity.apart_from[0]",
        ),
        (
            json!({"name": "a", "image": "/k", "affinity": {"with": 3}}),
            "affinity.with",
        ),
        (json!({"name": "a", "image": "/k", "vcpus": "two"}), "vcpus"),
    ];
    for (body, field) in cases {
        let a = c.admin("POST", "/v1/vms", Some(body.clone()));
        assert_eq!(a.status, 400, "{body}: {a:?}");
        assert_eq!(a.field(), Some(field), "{body}: {a:?}");
        assert!(a.body["error"].as_str().unwrap().contains(field), "{a:?}");
    }
    let p = c.admin(
        "PUT",
        "/v1/migration-policy",
        Some(
            json!({"mode": "postcopy", "downtime_ms": 100, "completion_timeout_s": 60,
        "postcopy_allowed": false, "max_parallel_cluster": 2, "max_parallel_per_host": 1}),
        ),
    );
    assert_eq!(p.field(), Some("mode"), "{p:?}");
}

#[test]
fn no_request_can_panic_the_server() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let garbage: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        vec![0xff; 64],
        format!("{{\"name\":\"{}\",\"image\":\"/k\"}}", "x".repeat(100_000)).into_bytes(),
        b"{\"name\":\"a\",\"image\":\"/k\",\"vcpus\":1e400}".to_vec(),
        b"{\"name\":\"a\",\"image\":\"/k\",\"mem_mib\":-1}".to_vec(),
        format!("{}1{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        vec![b'a'; 2 << 20],
    ];
    let paths = [
        "/v1/vms",
        "/v1/tenants",
        "/v1/users",
        "/v1/tokens",
        "/v1/hosts/register",
        "/v1/migration-policy",
        "/v1/vms/x/migrate",
    ];
    for p in paths {
        for g in &garbage {
            for m in ["POST", "PUT"] {
                let a = raw(&c.url, Some(&c.admin), m, p, g);
                assert!(
                    (400..500).contains(&a.status),
                    "{m} {p} with {} bytes: {a:?}",
                    g.len()
                );
            }
        }
    }
    for p in [
        "/v1/vms/%00",
        "/v1/vms/..%2F..%2Fetc",
        "/v1/operations/\u{7f}",
        "/v1/hosts/x/drain",
        "/nope",
        "/v1/vms/a/b/c",
    ] {
        let a = c.admin("GET", p, None);
        assert!((400..500).contains(&a.status), "{p}: {a:?}");
    }
    assert_eq!(c.admin("GET", "/v1/vms", None).status, 200, "still serving");
    assert!(!c.log().contains("panicked"), "{}", c.log());
}

#[test]
fn hosts_join_with_the_join_token_and_get_credentials_of_their_own() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let body = json!({"host_id": "h1", "hostname": "h1", "url": "http://192.0.2.10:7071", "token": "t", "info": host_info("h1", 4, 4096)});
    assert_eq!(
        call(
            &c.url,
            Some("nova_wrong"),
            "POST",
            "/v1/hosts/register",
            Some(body.clone())
        )
        .status,
        401
    );
    let viewer = c.token_for("acme", "vic", "viewer");
    assert_eq!(
        call(
            &c.url,
            Some(&viewer),
            "POST",
            "/v1/hosts/register",
            Some(body)
        )
        .status,
        403
    );
    let h1 = register_host(&c, "h1", "http://192.0.2.10:7071", 4, 4096);
    let h2 = register_host(&c, "h2", "http://192.0.2.11:7071", 4, 4096);
    assert_ne!(h1, c.join);
    assert_eq!(heartbeat(&c, "h1", &h1, 4, 4096).status, 200);
    assert_eq!(
        heartbeat(&c, "h2", &h1, 4, 4096).status,
        403,
        "h1's credentials cannot speak for h2"
    );
    assert_eq!(
        c.as_(&h1, "GET", "/v1/vms", None)
            .body
            .as_array()
            .map(|a| a.len()),
        Some(0),
        "a host sees no VMs it is not given"
    );
    assert_eq!(
        c.as_(&h1, "POST", "/v1/vms", Some(vm("x"))).status,
        403,
        "a host cannot create VMs"
    );
    let hosts = c.admin("GET", "/v1/hosts", None).body;
    assert_eq!(hosts.as_array().unwrap().len(), 2);
    assert!(
        hosts
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["hostd_token"] == ""),
        "hostd tokens are not shown: {hosts}"
    );
    let _ = h2;
}

#[test]
fn every_mutating_call_is_in_the_audit_log() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let op = c.token_for("acme", "olga", "operator");
    let id = c.as_(&op, "POST", "/v1/vms", Some(vm("web"))).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.as_(&op, "POST", &format!("/v1/vms/{id}/start"), None);
    c.as_(&op, "DELETE", &format!("/v1/vms/{id}"), None);
    let viewer = c.token_for("acme", "vic", "viewer");
    c.as_(&viewer, "POST", "/v1/vms", Some(vm("nope")));
    let log = c.admin("GET", "/v1/audit", None).body;
    let lines: Vec<String> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["actor"].as_str().unwrap(),
                e["method"].as_str().unwrap(),
                e["path"].as_str().unwrap(),
                e["status"]
            )
        })
        .collect();
    for want in [
        "olga POST /v1/vms 201".to_string(),
        format!("olga POST /v1/vms/{id}/start 200"),
        format!("olga DELETE /v1/vms/{id} 202"),
        "vic POST /v1/vms 403".to_string(),
        "admin POST /v1/tenants 201".to_string(),
    ] {
        assert!(lines.contains(&want), "{want} missing from {lines:#?}");
    }
    assert!(
        !lines.iter().any(|l| l.contains(" GET ")),
        "reads are not audited"
    );
}

#[test]
fn the_openapi_document_describes_the_api() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let doc = call(&c.url, None, "GET", "/v1/openapi.json", None).body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for p in [
        "/v1/vms",
        "/v1/vms/{id}/migrate",
        "/v1/hosts/{id}/drain",
        "/v1/operations/{id}/cancel",
        "/v1/events",
        "/v1/tokens",
        "/v1/audit",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing");
    }
    for s in [
        "Vm",
        "VmSpec",
        "Operation",
        "Host",
        "MigrationPolicy",
        "Event",
    ] {
        assert!(
            doc["components"]["schemas"].get(s).is_some(),
            "schema {s} missing"
        );
    }
}

#[test]
fn event_streams_show_a_tenant_only_its_own_objects() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let a = c.token_for("acme", "ann", "viewer");
    let b = c.token_for("globex", "bob", "operator");
    let op_a = c.token_for("acme", "al", "operator");
    let mut ann = EventStream::open(&c.url, &a);
    let mut admin = EventStream::open(&c.url, &c.admin);
    let theirs = c.as_(&b, "POST", "/v1/vms", Some(vm("b-secret"))).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mine = c.as_(&op_a, "POST", "/v1/vms", Some(vm("a-web"))).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    admin.until("vm.created", &theirs, 10);
    let ev = ann.until("vm.created", &mine, 10);
    assert_eq!(ev["tenant"], "acme");
    while let Some(e) = ann.next(std::time::Duration::from_millis(700)) {
        assert_eq!(e["tenant"], "acme", "another tenant's event leaked: {e}");
    }
    assert_eq!(
        raw(&c.url, None, "GET", "/v1/events", b"").status,
        401,
        "no token, no stream"
    );
}
