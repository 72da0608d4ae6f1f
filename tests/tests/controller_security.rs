//! The controller's front door under attack and misuse: roles, tenants, tokens,
//! rate limits, bad input. Real `nova-controller` processes on SQLite.

use std::time::Duration;

use nova_controller_api::{
    ControllerClient, MigrateBody, MigrationMode, MigrationPolicy, NewTenant, NewToken, NewUser,
    Role, VmSpec,
};
use nova_tests::controller::*;
use nova_tests::TempDir;
use serde_json::json;

fn vm(name: &str) -> VmSpec {
    serde_json::from_value(json!({"name": name, "vcpus": 1, "mem_mib": 128,
        "kernel": "sha256:0000000000000000000000000000000000000000000000000000000000000000", "start": false}))
    .unwrap()
}

/// Every change a tenant's user could try on VM `id`, each answering its status.
fn changes(api: &ControllerClient, id: &str) -> Vec<(String, u16)> {
    let s = |r: Result<_, nova_http::Error>| status(r.map(|_: nova_controller_api::Vm| ()));
    vec![
        ("start".into(), s(block_on(api.start_vm(id)))),
        ("stop".into(), s(block_on(api.stop_vm(id)))),
        ("delete".into(), s(block_on(api.delete_vm(id)))),
        (
            "migrate".into(),
            status(block_on(api.migrate_vm(id, &MigrateBody::default()))),
        ),
    ]
}

#[test]
fn viewer_tokens_cannot_mutate() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let op = c.as_(&c.token_for("acme", "olga", Role::Operator));
    let viewer = c.as_(&c.token_for("acme", "vic", Role::Viewer));
    let made = block_on(op.create_vm(&vm("web"), None)).unwrap();
    // The viewer reads...
    block_on(viewer.vm(&made.id)).unwrap();
    assert_eq!(block_on(viewer.vms()).unwrap().len(), 1);
    // ...and can change nothing.
    assert_eq!(status(block_on(viewer.create_vm(&vm("x"), None))), 403);
    for (what, st) in changes(&viewer, &made.id) {
        assert_eq!(st, 403, "{what} as a viewer");
    }
    let evil = NewUser {
        id: "evil".into(),
        role: Role::Admin,
        tenant: None,
    };
    assert_eq!(status(block_on(viewer.create_user(&evil))), 403);
    let tok = NewToken {
        user: "vic".into(),
        role: None,
    };
    assert_eq!(status(block_on(viewer.create_token(&tok))), 403);
    let t = NewTenant {
        id: "mine".into(),
        quota: None,
    };
    assert_eq!(status(block_on(viewer.create_tenant(&t))), 403);
    assert_eq!(
        block_on(c.api.vm(&made.id)).unwrap().desired,
        nova_controller_api::DesiredState::Stopped,
        "nothing changed"
    );
}

#[test]
fn tenants_cannot_see_each_others_vms() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let a = c.as_(&c.token_for("acme", "ann", Role::Admin));
    let b = c.as_(&c.token_for("globex", "bob", Role::Admin));
    let va = block_on(a.create_vm(&vm("a-secret"), None)).unwrap().id;
    let vb = block_on(b.create_vm(&vm("b-secret"), None)).unwrap().id;
    let list = block_on(a.vms()).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, va);
    // Every way at bob's VM answers "not found", as if it did not exist.
    assert_eq!(status(block_on(a.vm(&vb))), 404);
    for (what, st) in changes(&a, &vb) {
        assert_eq!(st, 404, "{what} across tenants");
    }
    // Nor their users, tokens, audit entries, or a way to act for the other tenant.
    assert!(block_on(a.users())
        .unwrap()
        .iter()
        .all(|u| u.tenant == "acme"));
    assert!(block_on(a.tokens())
        .unwrap()
        .iter()
        .all(|t| t.tenant == "acme"));
    assert!(block_on(a.audit())
        .unwrap()
        .iter()
        .all(|e| e.tenant == "acme"));
    let sneaky = block_on(
        a.http()
            .post::<_, nova_controller_api::Vm>("/v1/vms?tenant=globex", &vm("sneaky")),
    );
    assert_eq!(refusal(sneaky), (403, Some("tenant".into())));
    let mole = NewUser {
        id: "mole".into(),
        role: Role::Admin,
        tenant: Some("globex".into()),
    };
    assert_eq!(status(block_on(a.create_user(&mole))), 403);
    let bobs = NewToken {
        user: "bob".into(),
        role: None,
    };
    assert_eq!(
        refusal(block_on(a.create_token(&bobs))),
        (400, Some("user".into())),
        "bob is not in acme"
    );
    assert_eq!(
        status(block_on(a.hosts())),
        403,
        "hosts belong to the cluster"
    );
    // The system admin sees both, or one tenant's when it asks.
    assert_eq!(block_on(c.api.vms()).unwrap().len(), 2);
    let globex: nova_controller_api::Page<nova_controller_api::Vm> =
        block_on(c.api.http().get("/v1/vms?tenant=globex")).unwrap();
    assert_eq!(globex.items.len(), 1);
    assert_eq!(globex.items[0].id, vb);
}

#[test]
fn api_tokens_are_stored_only_as_hashes() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let t = c.token_for("acme", "ann", Role::Viewer);
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
    let tokens = block_on(listed.api.tokens()).unwrap();
    assert!(tokens.iter().all(|t| t.hash.is_empty()), "{tokens:?}");
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
        let a = raw(
            &c.url,
            Some(&format!("nova_{i:064}")),
            "GET",
            "/v1/vms",
            b"",
        );
        assert_eq!(a.status, 401, "{a:?}");
    }
    assert_eq!(
        raw(&c.url, Some("nova_guess"), "GET", "/v1/vms", b"").status,
        429
    );
    // Locked out for guesses, never for a good token (a host's heartbeats from the
    // same address must go on).
    block_on(c.api.vms()).expect("a valid token is never locked out");
    block_on(c.anonymous().health()).expect("health stays open");
}

#[test]
fn every_request_is_validated_and_the_error_names_the_field() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let cases = [
        (json!({"name": "a", "kernel": "/k", "vcpus": 0}), "vcpus"),
        (json!({"name": "a", "kernel": "/k", "vcpus": 999}), "vcpus"),
        (
            json!({"name": "a", "kernel": "/k", "mem_mib": 1}),
            "mem_mib",
        ),
        (json!({"name": "a", "kernel": "relative/path"}), "kernel"),
        // The kernel's old name is still read.
        (json!({"name": "a", "image": "relative/path"}), "kernel"),
        (json!({"name": "../etc", "kernel": "/k"}), "name"),
        (json!({"kernel": "/k"}), "name"),
        (json!({"name": "a", "kernel": "/k", "cpus": 2}), "cpus"),
        (
            json!({"name": "a", "kernel": "/k", "disks": [{"image": "/d"}, {}]}),
            "disks[1].size_mib",
        ),
        (
            json!({"name": "a", "kernel": "/k", "nics": [{"mac": "ff:ff:ff:ff:ff:ff"}]}),
            "nics[0].mac",
        ),
        (
            json!({"name": "a", "kernel": "/k", "labels": {"app": "we b"}}),
            "labels.app",
        ),
        (
            json!({"name": "a", "kernel": "/k", "affinity": {"apart_from": ["nokey"]}}),
            "affinity.apart_from[0]",
        ),
        (
            json!({"name": "a", "kernel": "/k", "affinity": {"with": 3}}),
            "affinity.with",
        ),
        (
            json!({"name": "a", "kernel": "/k", "vcpus": "two"}),
            "vcpus",
        ),
    ];
    // Malformed on purpose: sent as raw JSON, not through the typed client.
    for (body, field) in cases {
        let a = raw(
            &c.url,
            Some(&c.admin),
            "POST",
            "/v1/vms",
            body.to_string().as_bytes(),
        );
        assert_eq!(a.status, 400, "{body}: {a:?}");
        assert_eq!(a.body["field"], field, "{body}: {a:?}");
        assert!(a.body["error"].as_str().unwrap().contains(field), "{a:?}");
    }
    let mut p = MigrationPolicy {
        postcopy_allowed: false,
        ..Default::default()
    };
    p.params.mode = MigrationMode::Postcopy;
    assert_eq!(
        refusal(block_on(c.api.set_migration_policy(&p))),
        (400, Some("params.mode".into()))
    );
    for (patch, field) in [
        (
            &br#"{"params": {"connections": 0}}"#[..],
            "params.connections",
        ),
        (&br#"{"params": {"speed": 1}}"#[..], "params.speed"),
    ] {
        let a = raw(
            &c.url,
            Some(&c.admin),
            "PATCH",
            "/v1/migration-policy",
            patch,
        );
        assert_eq!(
            (a.status, a.body["field"].as_str()),
            (400, Some(field)),
            "{a:?}"
        );
    }
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("bogus=1", "bogus"),
    ] {
        let a = raw(&c.url, Some(&c.admin), "GET", &format!("/v1/vms?{q}"), b"");
        assert_eq!(
            (a.status, a.body["field"].as_str()),
            (400, Some(field)),
            "{q}: {a:?}"
        );
    }
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
            for m in ["POST", "PUT", "PATCH"] {
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
        "/v1/vms?continue=%00",
        "/v1/events?since=-1",
    ] {
        let a = raw(&c.url, Some(&c.admin), "GET", p, b"");
        assert!((400..500).contains(&a.status), "{p}: {a:?}");
    }
    block_on(c.api.vms()).expect("still serving");
    assert!(!c.log().contains("panicked"), "{}", c.log());
}

#[test]
fn hosts_join_with_the_join_token_and_get_credentials_of_their_own() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let url = "http://192.0.2.10:7071";
    assert_eq!(
        status(register_with(&c, "nova_wrong", "h1", url, 4, 4096)),
        401
    );
    let viewer = c.token_for("acme", "vic", Role::Viewer);
    assert_eq!(status(register_with(&c, &viewer, "h1", url, 4, 4096)), 403);
    let h1 = register_host(&c, "h1", url, 4, 4096);
    let h2 = register_host(&c, "h2", "http://192.0.2.11:7071", 4, 4096);
    assert_ne!(h1, c.join);
    heartbeat(&c, "h1", &h1, 4, 4096).unwrap();
    assert_eq!(
        status(heartbeat(&c, "h2", &h1, 4, 4096)),
        403,
        "h1's credentials cannot speak for h2"
    );
    let host = c.as_(&h1);
    assert!(
        block_on(host.vms()).unwrap().is_empty(),
        "a host sees no VMs it is not given"
    );
    assert_eq!(
        status(block_on(host.create_vm(&vm("x"), None))),
        403,
        "a host cannot create VMs"
    );
    let hosts = block_on(c.api.hosts()).unwrap();
    assert_eq!(hosts.len(), 2);
    assert!(
        hosts.iter().all(|h| h.hostd_token.is_empty()),
        "hostd tokens are not shown: {hosts:?}"
    );
    let _ = h2;
}

#[test]
fn every_mutating_call_is_in_the_audit_log() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let op = c.as_(&c.token_for("acme", "olga", Role::Operator));
    let id = block_on(op.create_vm(&vm("web"), None)).unwrap().id;
    block_on(op.start_vm(&id)).unwrap();
    block_on(op.delete_vm(&id)).unwrap();
    let viewer = c.as_(&c.token_for("acme", "vic", Role::Viewer));
    let _ = block_on(viewer.create_vm(&vm("nope"), None));
    let lines: Vec<String> = block_on(c.api.audit())
        .unwrap()
        .iter()
        .map(|e| format!("{} {} {} {}", e.actor, e.method, e.path, e.status))
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
fn event_streams_show_a_tenant_only_its_own_objects() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let a = c.token_for("acme", "ann", Role::Viewer);
    let b = c.as_(&c.token_for("globex", "bob", Role::Operator));
    let op_a = c.as_(&c.token_for("acme", "al", Role::Operator));
    let mut ann = EventStream::open(&c.url, &a);
    let mut admin = EventStream::open(&c.url, &c.admin);
    let theirs = block_on(b.create_vm(&vm("b-secret"), None)).unwrap().id;
    let mine = block_on(op_a.create_vm(&vm("a-web"), None)).unwrap().id;
    admin.until("vm.created", &theirs, 10);
    let ev = ann.until("vm.created", &mine, 10);
    assert_eq!(ev.tenant, "acme");
    while let Some(e) = ann.next(Duration::from_millis(700)) {
        assert_eq!(e.tenant, "acme", "another tenant's event leaked: {e:?}");
    }
    // A stream from the start replays only what the tenant may see, too.
    let mut replay = EventStream::since(&c.url, &a, Some(0)).unwrap();
    let mut seen = 0;
    while let Some(e) = replay.next(Duration::from_millis(700)) {
        assert_eq!(e.tenant, "acme", "{e:?}");
        seen += 1;
    }
    assert!(seen >= 1);
    assert_eq!(
        EventStream::since(&c.url, "", None).err(),
        Some(401),
        "no token, no stream"
    );
}
