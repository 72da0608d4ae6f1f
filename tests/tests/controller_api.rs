//! The API behaving as users of such APIs expect: lists come a page at a time, a
//! retried create returns the first object, names are unique per tenant, updates can
//! be made conditional on the revision read, and the OpenAPI document is valid.

use std::time::Duration;

use nova_controller_api::{
    ListQuery, MigrationParamsPatch, MigrationPolicyPatch, NewTenant, Page, Role,
};
use nova_tests::controller::*;
use nova_tests::TempDir;

use nova_tests::controller::stopped_spec as spec;

#[test]
fn every_list_comes_a_page_at_a_time_and_the_pages_add_up_to_the_whole() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let ann = c.as_(&c.token_for("acme", "ann", Role::Admin));
    c.token_for("globex", "bob", Role::Viewer);
    let mut made = vec![];
    for i in 0..7 {
        made.push(
            block_on(ann.create_vm(&spec(&format!("v{i}")), None))
                .unwrap()
                .id,
        );
        // Another tenant's VMs in between: a tenant's pages are full all the same.
        block_on(c.api.create_vm(&spec(&format!("sys{i}")), None)).unwrap();
    }
    let mut q = ListQuery {
        limit: Some(3),
        continue_token: None,
    };
    let mut seen = vec![];
    let mut pages = 0;
    loop {
        let p = block_on(ann.vms_page(&q)).unwrap();
        pages += 1;
        assert!(p.items.len() <= 3);
        seen.extend(p.items.into_iter().map(|v| v.id));
        match p.continue_token {
            Some(t) => q.continue_token = Some(t),
            None => break,
        }
    }
    made.sort();
    assert_eq!(seen, made, "every VM once, in order");
    assert_eq!(pages, 3);
    assert_eq!(
        block_on(c.api.vms()).unwrap().len(),
        14,
        "the client follows pages"
    );
    // Every other list pages the same way.
    let one = ListQuery {
        limit: Some(1),
        continue_token: None,
    };
    for (path, more) in [
        ("/v1/tenants", true),
        ("/v1/users", true),
        ("/v1/tokens", true),
        ("/v1/audit", true),
        ("/v1/hosts", false),
        ("/v1/operations", false),
    ] {
        let p: Page<serde_json::Value> = block_on(c.api.page(path, &one)).unwrap();
        assert!(p.items.len() <= 1, "{path}");
        assert_eq!(
            p.continue_token.is_some(),
            more,
            "{path}: {:?}",
            p.continue_token
        );
    }
    let all_tokens = block_on(c.api.tokens()).unwrap();
    assert!(all_tokens.len() >= 2 && all_tokens.iter().all(|t| t.hash.is_empty()));
    let too_many = ListQuery {
        limit: Some(1001),
        continue_token: None,
    };
    assert_eq!(
        refusal(block_on(c.api.vms_page(&too_many))),
        (400, Some("limit".into()))
    );
}

#[test]
fn a_retried_create_with_the_same_key_returns_the_first_vm() {
    let d = TempDir::new();
    let c = Controller::start(
        d.path(),
        Opts {
            args: vec!["--idempotency-ttl-s".into(), "2".into()],
            ..Opts::default()
        },
    );
    let first = block_on(c.api.create_vm(&spec("web"), Some("k-1"))).unwrap();
    let again = block_on(c.api.create_vm(&spec("web"), Some("k-1"))).unwrap();
    assert_eq!(first, again, "the same VM, not a second one");
    assert_eq!(block_on(c.api.vms()).unwrap().len(), 1);
    // The same key with another body is a mistake, and says so.
    let other = block_on(c.api.create_vm(&spec("db"), Some("k-1")));
    assert_eq!(refusal(other), (422, Some("Idempotency-Key".into())));
    // Keys belong to their caller: another user's "k-1" is another key.
    let bob = c.as_(&c.token_for("acme", "bob", Role::Operator));
    block_on(bob.create_vm(&spec("web"), Some("k-1"))).unwrap();
    // Tenants and users take keys too; tokens refuse them (their secret is never kept).
    let t = NewTenant {
        id: "globex".into(),
        quota: None,
    };
    let t1 = block_on(c.api.create_tenant_with_key(&t, Some("t-1"))).unwrap();
    assert_eq!(
        block_on(c.api.create_tenant_with_key(&t, Some("t-1"))).unwrap(),
        t1
    );
    let tok = with_headers(
        &c,
        "/v1/tokens",
        Some(r#"{"user":"admin"}"#),
        &[("Idempotency-Key", "tk")],
    );
    assert_eq!(
        (tok.status, tok.body["field"].as_str()),
        (400, Some("Idempotency-Key"))
    );
    // Keys expire (2 s here): then the retry is a new request, and the name is taken.
    std::thread::sleep(Duration::from_millis(2500));
    let late = block_on(c.api.create_vm(&spec("web"), Some("k-1")));
    assert_eq!(refusal(late), (409, Some("name".into())));
}

/// A call the typed client would never make (a key on token creation, a malformed
/// If-Match), with `headers`; its status and body.
fn with_headers(
    c: &Controller,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let body: Option<serde_json::Value> = body.map(|b| serde_json::from_str(b).unwrap());
    let r: Result<serde_json::Value, _> = block_on(c.api.http().call_with(
        nova_http::Method::POST,
        path,
        body.as_ref(),
        headers,
    ));
    match r {
        Ok(v) => Answer {
            status: 200,
            body: v,
        },
        Err(e) => Answer {
            status: e.status().unwrap_or(0),
            body: serde_json::to_value(e.body().unwrap()).unwrap(),
        },
    }
}

#[test]
fn a_vm_name_is_unique_in_its_tenant_and_free_again_once_the_vm_is_gone() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let web = block_on(c.api.create_vm(&spec("web"), None)).unwrap();
    let dup = block_on(c.api.create_vm(&spec("web"), None));
    let e = dup.unwrap_err();
    assert_eq!(e.status(), Some(409));
    assert_eq!(e.body().unwrap().field.as_deref(), Some("name"));
    assert!(e.body().unwrap().error.contains("web"), "{e}");
    // Another tenant may use the name.
    let ann = c.as_(&c.token_for("acme", "ann", Role::Operator));
    block_on(ann.create_vm(&spec("web"), None)).unwrap();
    // Deleted (unplaced, so the record goes on the next pass): the name is free.
    block_on(c.api.delete_vm(&web.id)).unwrap();
    wait_for(10, "the deleted VM's name to be free", || {
        block_on(c.api.create_vm(&spec("web"), None)).ok()
    });
}

#[test]
fn an_update_at_a_stale_revision_is_refused_with_412() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let v = block_on(c.api.create_vm(&spec("web"), None)).unwrap();
    let started = block_on(c.api.start_vm_if(&v.id, Some(v.revision))).unwrap();
    assert!(started.revision > v.revision);
    // Somebody else changed it since `v` was read.
    let stale = block_on(c.api.stop_vm_if(&v.id, false, Some(v.revision)));
    assert_eq!(refusal(stale), (412, Some("If-Match".into())));
    assert_eq!(
        block_on(c.api.vm(&v.id)).unwrap().desired,
        nova_controller_api::DesiredState::Running,
        "nothing changed"
    );
    block_on(c.api.stop_vm_if(&v.id, false, Some(started.revision))).unwrap();
    // The policy carries its revision too.
    let p = block_on(c.api.migration_policy()).unwrap();
    let patch = MigrationPolicyPatch {
        params: Some(MigrationParamsPatch {
            downtime_ms: Some(40),
            ..Default::default()
        }),
        ..Default::default()
    };
    let p2 = block_on(c.api.patch_migration_policy_if(&patch, Some(p.revision))).unwrap();
    assert_eq!(p2.params.downtime_ms, 40);
    let again = block_on(c.api.patch_migration_policy_if(&patch, Some(p.revision)));
    assert_eq!(refusal(again), (412, Some("If-Match".into())));
    // So do hosts and operations; a malformed If-Match is named.
    register_host(&c, "h1", "http://127.0.0.1:9", 4, 4096);
    let h = block_on(c.api.host("h1")).unwrap();
    let if_match = |v: &str| with_headers(&c, "/v1/hosts/h1/cordon", None, &[("If-Match", v)]);
    let bad = if_match("yesterday");
    assert_eq!(
        (bad.status, bad.body["field"].as_str()),
        (400, Some("If-Match"))
    );
    let stale = if_match(&format!("\"{}\"", h.revision + 1000));
    assert_eq!(stale.status, 412);
    let ok = if_match(&format!("\"{}\"", h.revision));
    assert_eq!(ok.status, 200, "{ok:?}");
}

#[test]
fn the_openapi_document_is_valid_and_describes_the_api() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let doc = block_on(c.anonymous().openapi()).unwrap();
    let file = d.join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let v = std::process::Command::new("openapi-spec-validator")
        .arg(&file)
        .output()
        .expect("openapi-spec-validator (make deps installs it)");
    assert!(
        v.status.success(),
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // An empty requirement: anyone may call it.
    assert_eq!(
        doc["paths"]["/v1/health"]["get"]["security"],
        serde_json::json!([{}])
    );
    let mut params = std::collections::BTreeSet::new();
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                ids.insert(op["operationId"].as_str().unwrap().to_string()),
                "{method} {path}"
            );
            for p in op["parameters"].as_array().into_iter().flatten() {
                params.insert(p["name"].as_str().unwrap().to_string());
            }
            let err = &op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(err, "#/components/schemas/ErrorBody", "{method} {path}");
        }
    }
    for p in [
        "force",
        "lines",
        "tenant",
        "limit",
        "continue",
        "since",
        "If-Match",
        "Idempotency-Key",
    ] {
        assert!(params.contains(p), "parameter {p} missing: {params:?}");
    }
    let register = &doc["paths"]["/v1/hosts/register"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"]["$ref"];
    assert_eq!(register, "#/components/schemas/RegisterRequest");
    for s in [
        "Vm",
        "VmSpec",
        "Operation",
        "Host",
        "MigrationPolicy",
        "MigrationParams",
        "Event",
        "Heartbeat",
        "HostInfo",
    ] {
        assert!(
            doc["components"]["schemas"].get(s).is_some(),
            "schema {s} missing"
        );
    }
}
