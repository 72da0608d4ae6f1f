//! nova-hostd's API against bad callers: no token, bad input, names that try to
//! leave the data dir, VMs that do not fit. Nothing of it may change state or panic
//! the daemon.

use std::time::Duration;

use nova_tests::hostd::{testguest, Hostd, Opts};
use nova_tests::require_kvm;
use serde_json::{json, Value};

fn spec(id: &str) -> Value {
    json!({"id": id, "name": id, "kernel": testguest(), "mem_mib": 64, "cmdline": "nova.workload=idle"})
}

fn vm_dirs(h: &Hostd) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(h.data().join("vms"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn requests_without_the_token_get_401_and_change_nothing() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    h.create_vm(spec("keep"));
    let body = spec("intruder").to_string();
    let wrong = format!("{}x", h.token);
    let cases: Vec<(&str, &str, Option<&str>)> = vec![
        ("POST", "/v1/vms", Some(&body)),
        ("DELETE", "/v1/vms/keep", None),
        ("POST", "/v1/vms/keep/stop", None),
        ("POST", "/v1/vms/keep/pause", None),
        ("GET", "/v1/vms", None),
        ("GET", "/v1/vms/keep/console", None),
        ("GET", "/v1/host", None),
        ("GET", "/metrics", None),
        ("POST", "/v1/images", Some(r#"{"path":"/etc/passwd"}"#)),
        ("POST", "/v1/migrations/incoming", Some("{}")),
        ("GET", "/v1/openapi.json", None),
    ];
    for (method, path, b) in &cases {
        for token in [
            None,
            Some(wrong.as_str()),
            Some(""),
            Some(&h.token[..h.token.len() - 1]),
        ] {
            let (s, v) = h.try_request(method, path, *b, token).unwrap();
            assert_eq!(s, 401, "{method} {path} with {token:?}: {v}");
            assert!(v["error"].as_str().unwrap().contains("token"), "{v}");
        }
    }
    // Nothing happened.
    let vms = h.get("/v1/vms");
    assert_eq!(vms["vms"].as_array().unwrap().len(), 1);
    assert_eq!(vms["vms"][0]["state"], "running");
    assert_eq!(vm_dirs(&h), vec!["keep"]);
    assert!(
        h.get("/v1/images")["images"].as_array().unwrap().len() == 1,
        "only the kernel was imported"
    );
    // Health is open (for load balancers), and says nothing secret.
    let (s, v) = h.try_request("GET", "/v1/health", None, None).unwrap();
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
}

#[test]
fn names_cannot_escape_the_data_dir() {
    let h = Hostd::start(Opts::default());
    let evil = [
        "..",
        "../x",
        "../../etc",
        "a/b",
        "/abs",
        "x\u{0}y",
        ".hidden",
        "-rf",
        &"n".repeat(64),
        "sp ace",
        "ünï",
    ];
    for name in evil {
        for field in ["id", "name"] {
            let mut s = json!({"id": "ok", "name": "ok", "kernel": "/nonexistent", "start": false});
            s[field] = json!(name);
            let (status, v) = h.request("POST", "/v1/vms", Some(&s.to_string()));
            assert_eq!(status, 400, "{field}={name:?}: {v}");
            assert_eq!(v["field"], field, "{v}");
        }
    }
    for path in [
        "/v1/vms/..",
        "/v1/vms/..%2F..%2Fetc",
        "/v1/vms/%2e%2e",
        "/v1/vms/a%00b/console",
        "/v1/vms/.x/stop",
    ] {
        for method in ["GET", "DELETE", "POST"] {
            let (s, v) = h.request(method, path, Some("{}"));
            assert!(s == 400 || s == 404 || s == 405, "{method} {path}: {s} {v}");
        }
    }
    let (s, v) = h.request("GET", "/v1/vms/..%2F..%2Fetc", None);
    assert_eq!((s, v["field"].as_str()), (400, Some("id")), "{v}");
    // Images are addressed by digest only.
    let (s, v) = h.request("GET", "/v1/images/..%2F..%2Fhost-id", None);
    assert_eq!(s, 400, "{v}");
    assert_eq!(vm_dirs(&h), Vec::<String>::new(), "nothing was created");
    let data_entries: Vec<_> = std::fs::read_dir(h.data())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        data_entries.len() <= 4,
        "only hostd's own files in the data dir: {data_entries:?}"
    );
}

#[test]
fn bad_input_is_refused_with_the_field_named_and_never_panics() {
    let h = Hostd::start(Opts::default());
    let cases: Vec<(Value, &str)> = vec![
        (json!({"name": "a", "kernel": "/k", "cpus": 2}), "cpus"),
        (json!({"name": "a", "kernel": "/k", "vcpus": 0}), "vcpus"),
        (json!({"name": "a", "kernel": "/k", "vcpus": 300}), "vcpus"),
        (json!({"name": "a", "kernel": "/k", "vcpus": -1}), "vcpus"),
        (
            json!({"name": "a", "kernel": "/k", "mem_mib": 1}),
            "mem_mib",
        ),
        (
            json!({"name": "a", "kernel": "/k", "mem_mib": u64::MAX}),
            "mem_mib",
        ),
        (json!({"name": "a", "kernel": "relative/path"}), "kernel"),
        (json!({"name": "a", "kernel": "sha256:xyz"}), "kernel"),
        (json!({"name": "a"}), "kernel"),
        (json!({"kernel": "/k"}), "name"),
        (
            json!({"name": "a", "kernel": "/k", "disks": [{}]}),
            "disks[0].size_mib",
        ),
        (
            json!({"name": "a", "kernel": "/k", "disks": [{"size_mib": 0}]}),
            "disks[0].size_mib",
        ),
        (
            json!({"name": "a", "kernel": "/k", "disks": [{"size_mib": 1, "format": "qcow2"}]}),
            "disks[0].format",
        ),
        (
            json!({"name": "a", "kernel": "/k", "nics": [{"mac": "ff:ff:ff:ff:ff:ff"}]}),
            "nics[0].mac",
        ),
        (
            json!({"name": "a", "kernel": "/k", "nics": [{"mac": "nonsense"}]}),
            "nics[0].mac",
        ),
        (
            json!({"name": "a", "kernel": "/k", "restart": "sometimes"}),
            "restart",
        ),
        (
            json!({"name": "a", "kernel": "/k", "cmdline": "a\nb"}),
            "cmdline",
        ),
        (json!({"name": "a", "kernel": "/does/not/exist"}), "kernel"),
        (json!([1, 2, 3]), "body"),
        (json!("string"), "body"),
    ];
    for (body, field) in cases {
        let (s, v) = h.request("POST", "/v1/vms", Some(&body.to_string()));
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["field"], field, "{body}: {v}");
    }
    for raw in [
        "",
        "{",
        "null",
        "{\"name\":",
        "\u{0}\u{1}",
        &"[".repeat(10_000),
    ] {
        let (s, v) = h.request("POST", "/v1/vms", Some(raw));
        assert_eq!(s, 400, "{raw:.20}: {v}");
    }
    let big = "x".repeat(2 << 20);
    let (s, _) = h.request("POST", "/v1/vms", Some(&big));
    assert_eq!(s, 400);
    for (path, body, field) in [
        (
            "/v1/vms/nope/migrate",
            json!({"to": {"url": "ftp://x", "token": "t"}}),
            "to.url",
        ),
        (
            "/v1/vms/nope/migrate",
            json!({"to": {"url": "http://x:1", "token": "t"}, "downtime_ms": 0}),
            "downtime_ms",
        ),
        (
            "/v1/vms/nope/migrate",
            json!({"to": {"url": "http://x:1", "token": "t"}, "mode": "teleport"}),
            "mode",
        ),
        ("/v1/vms/nope/snapshot", json!({"name": "../up"}), "name"),
        ("/v1/images", json!({"path": "relative"}), "path"),
        (
            "/v1/network/peers",
            json!({"address": "not-an-ip"}),
            "address",
        ),
    ] {
        let (s, v) = h.request("POST", path, Some(&body.to_string()));
        assert_eq!(s, 400, "{path} {body}: {v}");
        assert_eq!(v["field"], field, "{path} {body}: {v}");
    }
    for q in [
        "lines=0",
        "lines=-1",
        "lines=99999999999999999999",
        "lines=x",
    ] {
        let (s, v) = h.request("GET", &format!("/v1/vms/none/console?{q}"), None);
        assert!(s == 400 || s == 404, "{q}: {v}");
    }
    let (s, _) = h.request("POST", "/v1/vms/x/stop?force=maybe", None);
    assert!(s == 400 || s == 404);
    // Still alive and well.
    let (s, _) = h.request("GET", "/v1/health", None);
    assert_eq!(s, 200);
    assert!(std::fs::read_dir(h.data().join("vms"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn a_vm_that_does_not_fit_is_refused() {
    if !require_kvm() {
        return;
    }
    // 2 cores x 1.0 = 2 vCPUs (fewer cores here: fewer vCPUs); memory: all but the reserve.
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    let h = Hostd::start(Opts {
        args: vec!["--cpu-overcommit".into(), "1".into()],
        ..Opts::default()
    });
    let host = h.get("/v1/host");
    assert_eq!(host["capacity"]["vcpus"], cores, "{host}");
    let mem_cap = host["capacity"]["mem_mib"].as_u64().unwrap();

    let mut big = spec("big");
    big["mem_mib"] = json!(mem_cap + 64);
    let (s, v) = h.request("POST", "/v1/vms", Some(&big.to_string()));
    assert_eq!(s, 409, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("does not fit") && e.contains("memory") && !e.contains("vcpus"),
        "{e}"
    );

    let mut wide = spec("wide");
    wide["vcpus"] = json!(cores);
    h.create_vm(wide);
    let (s, v) = h.request("POST", "/v1/vms", Some(&spec("one-more").to_string()));
    assert_eq!(s, 409, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains(&format!("vcpus: 1 requested, 0 free of {cores}")),
        "{e}"
    );

    // Disk: a blank disk larger than the filesystem.
    let mut disky = spec("disky");
    disky["start"] = json!(false);
    disky["disks"] = json!([{"size_mib": host["disk_total_mib"].as_u64().unwrap() + 1}]);
    let (s, v) = h.request("POST", "/v1/vms", Some(&disky.to_string()));
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("disk"), "{v}");

    // Nothing of the refused VMs exists.
    let ids: Vec<String> = h.get("/v1/vms")["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec!["wide"]);
    assert_eq!(vm_dirs(&h), vec!["wide"]);
    // Created without starting it fits (it holds no CPU), but cannot start.
    let mut later = spec("later");
    later["start"] = json!(false);
    assert_eq!(h.create_vm(later)["state"], "created");
    let (s, v) = h.request("POST", "/v1/vms/later/start", None);
    assert_eq!(s, 409, "{v}");
    // Room made: it starts.
    h.post("/v1/vms/wide/stop", &json!({}));
    let v = h.post("/v1/vms/later/start", &json!({}));
    assert_eq!(v["state"], "running");
    let _ = Duration::ZERO;
}

#[test]
fn openapi_document_lists_every_route() {
    let h = Hostd::start(Opts::default());
    let doc = h.get("/v1/openapi.json");
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    for (p, method) in [
        ("/v1/vms", "post"),
        ("/v1/vms/{id}", "delete"),
        ("/v1/vms/{id}/migrate", "post"),
        ("/v1/migrations/incoming", "post"),
        ("/v1/host", "get"),
        ("/metrics", "get"),
    ] {
        assert!(paths[p][method].is_object(), "{p} {method} missing");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    assert!(
        schemas["VmSpec"]["properties"]["mem_mib"].is_object(),
        "{}",
        schemas["VmSpec"]
    );
    // Every path in the document is served: a request to it is not "no route".
    for (p, ops) in paths {
        for m in ops.as_object().unwrap().keys() {
            let path = p
                .replace("{id}", "nosuchvm")
                .replace("{mid}", "nosuchmig")
                .replace(
                    "{image}",
                    "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                );
            let (s, v) = h.request(&m.to_uppercase(), &path, Some("{}"));
            let no_route = s == 405
                || v["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("no route"));
            assert!(!no_route, "{m} {p}: {s} {v}");
        }
    }
}
