//! nova-hostd's API against bad callers and as operators run it: no token, bad input,
//! names that try to leave the data dir, VMs that do not fit (nothing of it may
//! change state or panic the daemon); the OpenAPI document, validated and called
//! route by route; a config file; its logs.

use std::process::Command;
use std::time::Duration;

use std::sync::{Arc, Mutex};

use nova_hostd_api::{Heartbeat, RegisterRequest, RegisterResponse, VmSpec, VmState};
use nova_tests::hostd::{guest, Hostd, Opts};
use nova_tests::{binary, require_kvm, wait_for, TempDir};
use serde_json::{json, Value};

fn vm_dirs(h: &Hostd) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(h.data().join("vms"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn idle(id: &str) -> VmSpec {
    guest(id, "idle")
}

#[test]
fn requests_without_the_token_get_401_and_change_nothing() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    h.create_vm(&idle("keep"));
    let body = serde_json::to_string(&idle("intruder")).unwrap();
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
            let (s, v) = h.raw(method, path, *b, token).unwrap();
            assert_eq!(s, 401, "{method} {path} with {token:?}: {v}");
            assert!(v["error"].as_str().unwrap().contains("token"), "{v}");
        }
    }
    // Nothing happened.
    let vms = h.ok(h.api().vms()).vms;
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].state, VmState::Running);
    assert_eq!(vm_dirs(&h), vec!["keep"]);
    assert_eq!(
        h.ok(h.api().images()).images.len(),
        1,
        "only the kernel was imported"
    );
    // Health is open (for load balancers), and says nothing secret.
    let health = h.ok(h.api().health());
    assert_eq!(health.status, "ok");
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
            let mut s = idle("ok");
            s.kernel = "/nonexistent".into();
            s.start = false;
            match field {
                "id" => s.id = Some(name.to_string()),
                _ => s.name = name.to_string(),
            }
            let (status, e) = h.refused(h.api().create(&s));
            assert_eq!(status, 400, "{field}={name:?}: {e:?}");
            assert_eq!(e.field.as_deref(), Some(field), "{e:?}");
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
    // Malformed on purpose: only raw requests can send these.
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
    let to = json!({"url": "http://x:1", "token": "t"});
    for (path, body, field) in [
        (
            "/v1/vms/nope/migrate",
            json!({"to": {"url": "ftp://x", "token": "t"}}),
            "to.url",
        ),
        (
            "/v1/vms/nope/migrate",
            json!({"to": to, "params": {"downtime_ms": 0}}),
            "params.downtime_ms",
        ),
        (
            "/v1/vms/nope/migrate",
            json!({"to": to, "params": {"mode": "teleport"}}),
            "params.mode",
        ),
        (
            "/v1/vms/nope/migrate",
            json!({"to": to, "params": {"connections": 99}}),
            "params.connections",
        ),
        // The old flat form (mode, downtime_ms beside `to`) is refused by name.
        (
            "/v1/vms/nope/migrate",
            json!({"to": to, "downtime_ms": 300}),
            "downtime_ms",
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
    h.ok(h.api().health());
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
    // 1 vCPU per core; memory: all but the reserve.
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    let h = Hostd::start(Opts {
        args: vec!["--cpu-overcommit".into(), "1".into()],
        ..Opts::default()
    });
    let api = h.api();
    let host = h.ok(api.host());
    assert_eq!(host.capacity.vcpus, cores, "{host:?}");

    let mut big = idle("big");
    big.mem_mib = host.capacity.mem_mib + 64;
    let (s, e) = h.refused(api.create(&big));
    assert_eq!(s, 409, "{e:?}");
    assert!(
        e.error.contains("does not fit")
            && e.error.contains("memory")
            && !e.error.contains("vcpus"),
        "{e:?}"
    );

    let mut wide = idle("wide");
    wide.vcpus = cores as u8;
    h.create_vm(&wide);
    let (s, e) = h.refused(api.create(&idle("one-more")));
    assert_eq!(s, 409, "{e:?}");
    assert!(
        e.error
            .contains(&format!("vcpus: 1 requested, 0 free of {cores}")),
        "{e:?}"
    );

    // Disk: a blank disk larger than the filesystem.
    let mut disky = idle("disky");
    disky.start = false;
    disky.disks = vec![nova_hostd_api::DiskSpec {
        image: None,
        size_mib: Some(host.disk_total_mib + 1),
        read_only: false,
        shared_path: None,
    }];
    let (s, e) = h.refused(api.create(&disky));
    assert_eq!(s, 409, "{e:?}");
    assert!(e.error.contains("disk"), "{e:?}");

    // Nothing of the refused VMs exists.
    assert_eq!(h.vm_ids(), vec!["wide"]);
    assert_eq!(vm_dirs(&h), vec!["wide"]);
    // Created without starting it fits (it holds no CPU), but cannot start.
    let mut later = idle("later");
    later.start = false;
    assert_eq!(h.create_vm(&later).state, VmState::Created);
    assert_eq!(h.refused(api.start("later")).0, 409);
    // Room made: it starts.
    h.ok(api.stop("wide", false));
    assert_eq!(h.ok(api.start("later")).state, VmState::Running);
}

#[test]
fn the_openapi_document_is_valid_and_every_route_in_it_is_served() {
    let h = Hostd::start(Opts::default());
    let doc = h.get("/v1/openapi.json");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    // The validator every OpenAPI tool chain agrees with.
    let dir = TempDir::new();
    let file = dir.join("hostd.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = Command::new("openapi-spec-validator")
        .arg(&file)
        .output()
        .expect("openapi-spec-validator (make deps installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A bearer security scheme, required everywhere but on health.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"][0]["bearer"], json!([]));
    assert_eq!(doc["paths"]["/v1/health"]["get"]["security"], json!([{}]));
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    assert!(schemas["VmSpec"]["properties"]["mem_mib"].is_object());
    assert!(schemas["ErrorBody"]["properties"]["field"].is_object());
    // hostd's migration status and the VMM's it nests are two schemas, not one.
    let ms = &schemas["MigrationStatus"]["properties"];
    assert!(ms["vmm"].to_string().contains("VmmMigrationStatus"), "{ms}");
    assert!(schemas["MigrationState"]["enum"]
        .as_array()
        .unwrap()
        .contains(&json!("preparing")));
    let paths = doc["paths"].as_object().unwrap();
    let mut op_ids = Vec::new();
    let mut error_refs = 0;
    for (p, ops) in paths {
        for (m, op) in ops.as_object().unwrap() {
            op_ids.push(op["operationId"].as_str().unwrap().to_string());
            for (status, r) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &r["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{m} {p} {status} answers with an ErrorBody"
                    );
                    error_refs += 1;
                }
            }
        }
    }
    assert!(
        error_refs > 20,
        "error responses are described: {error_refs}"
    );
    let n = op_ids.len();
    op_ids.sort();
    op_ids.dedup();
    assert_eq!(op_ids.len(), n, "operationIds are unique: {op_ids:?}");
    let query = |p: &str, m: &str| -> Vec<String> {
        doc["paths"][p][m]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| q["in"] == "query")
            .map(|q| q["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(query("/v1/vms/{id}/stop", "post"), ["force"]);
    assert_eq!(query("/v1/vms/{id}/console", "get"), ["lines"]);
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
    assert_eq!(
        paths.len(),
        34,
        "the document lists every route: {:?}",
        paths.keys()
    );
}

#[test]
fn a_config_file_configures_hostd_and_flags_override_it() {
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    let dir = TempDir::new();
    let file = dir.join("hostd.toml");
    std::fs::write(
        &file,
        "cpu-overcommit = 3.0\nmem-reserve-mib = 1024\nbridge = \"novacfgbr0\"\n",
    )
    .unwrap();
    let config = |extra: &[&str]| {
        let mut args = vec!["--config".to_string(), file.to_string_lossy().into_owned()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Opts {
            args,
            ..Opts::default()
        }
    };
    let h = Hostd::start(config(&[]));
    let host = h.ok(h.api().host());
    assert_eq!(host.capacity.vcpus, cores * 3, "from the file: {host:?}");
    assert_eq!(host.cpu_overcommit, 3.0);
    assert_eq!(host.network.bridge, "novacfgbr0");
    assert_eq!(
        host.capacity.mem_mib,
        host.mem_mib.saturating_sub(1024),
        "{host:?}"
    );
    drop(h);
    let h = Hostd::start(config(&["--cpu-overcommit", "2"]));
    assert_eq!(
        h.ok(h.api().host()).capacity.vcpus,
        cores * 2,
        "the flag wins"
    );
    drop(h);
    // A bad file: hostd does not start, and says which key is wrong.
    std::fs::write(&file, "cpu-overcommit = \"lots\"\n").unwrap();
    let out = Command::new(binary("nova-hostd"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cpu-overcommit:"), "{err}");
    std::fs::write(&file, "listen = \"127.0.0.1:1\"\ncpu-overcomit = 3\n").unwrap();
    let out = Command::new(binary("nova-hostd"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cpu-overcomit"), "{err}");
}

#[test]
fn every_request_leaves_one_access_line_naming_the_caller() {
    let h = Hostd::start(Opts {
        args: vec!["--log-format".into(), "json".into()],
        ..Opts::default()
    });
    h.ok(h.api().vms());
    let (s, _) = h.raw("GET", "/v1/host", None, None).unwrap();
    assert_eq!(s, 401);
    let access = || -> Vec<Value> {
        h.stderr()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
            .filter(|v| v["target"] == "access")
            .collect()
    };
    let lines = wait_for(5, "two access lines", || {
        let a = access();
        (a.iter().filter(|v| v["path"] != "/v1/health").count() >= 2).then_some(a)
    });
    let vms: Vec<&Value> = lines.iter().filter(|v| v["path"] == "/v1/vms").collect();
    assert_eq!(vms.len(), 1, "{lines:?}");
    assert_eq!(
        (&vms[0]["method"], &vms[0]["status"], &vms[0]["who"]),
        (&json!("GET"), &json!(200), &json!("host-token"))
    );
    let refused: Vec<&Value> = lines.iter().filter(|v| v["path"] == "/v1/host").collect();
    assert_eq!(
        (&refused[0]["status"], &refused[0]["who"]),
        (&json!(401), &json!("-"))
    );
    // NOVA_LOG filters: at `warn`, no access lines.
    let quiet = Hostd::start(Opts {
        env: vec![("NOVA_LOG".into(), "warn".into())],
        ..Opts::default()
    });
    quiet.ok(quiet.api().vms());
    std::thread::sleep(Duration::from_millis(200));
    assert!(!quiet.stderr().contains("/v1/vms"), "{}", quiet.stderr());
}

/// What a controller heard from hostd.
#[derive(Default)]
struct Heard {
    registered: Vec<RegisterRequest>,
    heartbeats: Vec<Heartbeat>,
}

/// A controller's registration routes on a TLS listener whose certificate a CA made
/// here signs; what it hears is kept. Returns its port and the CA's PEM.
fn tls_controller(dir: &TempDir, heard: Arc<Mutex<Heard>>) -> (u16, std::path::PathBuf) {
    use axum::routing::post;
    use axum::{extract::State, http::HeaderMap, Json};
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "nova test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let (cert, key) = (leaf.pem().into_bytes(), key.serialize_pem().into_bytes());

    async fn register(
        State(h): State<Arc<Mutex<Heard>>>,
        headers: HeaderMap,
        Json(r): Json<RegisterRequest>,
    ) -> Result<Json<RegisterResponse>, axum::http::StatusCode> {
        if headers["authorization"] != "Bearer join-token-0123456789" {
            return Err(axum::http::StatusCode::UNAUTHORIZED);
        }
        let host_id = r.host_id.clone();
        h.lock().unwrap().registered.push(r);
        Ok(Json(RegisterResponse {
            host_id,
            token: "own-host-token-0123456789".into(),
            heartbeat_interval_ms: 200,
            certificate: None,
        }))
    }
    async fn heartbeat(
        State(h): State<Arc<Mutex<Heard>>>,
        headers: HeaderMap,
        Json(hb): Json<Heartbeat>,
    ) -> Result<Json<Value>, axum::http::StatusCode> {
        if headers["authorization"] != "Bearer own-host-token-0123456789" {
            return Err(axum::http::StatusCode::UNAUTHORIZED);
        }
        h.lock().unwrap().heartbeats.push(hb);
        Ok(Json(json!({"ok": true})))
    }

    let port = nova_tests::free_port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert, key)
                .await
                .unwrap();
            let app = axum::Router::new()
                .route("/v1/hosts/register", post(register))
                .route("/v1/hosts/{id}/heartbeat", post(heartbeat))
                .with_state(heard);
            axum_server::bind_rustls(([127, 0, 0, 1], port).into(), tls)
                .serve(app.into_make_service())
                .await
                .unwrap();
        });
    });
    wait_for(10, "the TLS controller to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    (port, ca_file)
}

#[test]
fn hostd_registers_with_an_https_controller_it_trusts_through_its_ca() {
    let dir = TempDir::new();
    let heard = Arc::new(Mutex::new(Heard::default()));
    let (port, ca) = tls_controller(&dir, heard.clone());
    let join = dir.join("join");
    std::fs::write(&join, "join-token-0123456789").unwrap();
    let args = |ca: Option<&std::path::Path>| {
        let mut a = vec![
            "--controller".to_string(),
            format!("https://127.0.0.1:{port}"),
            "--join-token-file".into(),
            join.to_string_lossy().into_owned(),
        ];
        if let Some(ca) = ca {
            a.extend(["--controller-ca".into(), ca.to_string_lossy().into_owned()]);
        }
        Opts {
            args: a,
            ..Opts::default()
        }
    };
    // Without the CA the controller's certificate is not trusted: no registration.
    let untrusting = Hostd::start(args(None));
    wait_for(10, "a refused TLS handshake in hostd's log", || {
        untrusting
            .stderr()
            .contains("registering with")
            .then_some(())
    });
    assert!(heard.lock().unwrap().registered.is_empty());
    drop(untrusting);
    // With it: registered with the contract's body, then heartbeats with its own token.
    let h = Hostd::start(args(Some(&ca)));
    let host_id = h.ok(h.api().health()).host_id;
    wait_for(20, "two heartbeats over TLS", || {
        (heard.lock().unwrap().heartbeats.len() >= 2).then_some(())
    });
    let heard = heard.lock().unwrap();
    assert_eq!(heard.registered[0].host_id, host_id);
    assert_eq!(heard.registered[0].url, format!("http://{}", h.addr));
    assert_eq!(heard.registered[0].token, h.token);
    assert_eq!(heard.heartbeats[0].host_id, host_id);
    assert!(!h.stderr().contains("heartbeat:"), "{}", h.stderr());
}

#[test]
fn hostd_tells_systemd_it_is_ready_once_it_serves() {
    // What systemd does for a Type=notify unit: a datagram socket in $NOTIFY_SOCKET.
    let dir = TempDir::new();
    let sock_path = dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let h = Hostd::start(Opts {
        env: vec![(
            "NOTIFY_SOCKET".into(),
            sock_path.to_string_lossy().into_owned(),
        )],
        ..Opts::default()
    });
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).expect("READY=1 from hostd");
    assert_eq!(&buf[..n], b"READY=1\n");
    h.ok(h.api().health());
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_and_leaves_vmms_running_on_stop() {
    if !nova_tests::require(
        nova_tests::which("systemd-analyze"),
        "systemd-analyze (systemd) is not installed",
    ) {
        return;
    }
    let unit =
        std::fs::read_to_string(nova_tests::root().join("deploy/systemd/nova-hostd.service"))
            .unwrap();
    // The unit as installed, pointing at the binary under test.
    let dir = TempDir::new();
    let file = dir.join("nova-hostd.service");
    let bin = binary("nova-hostd");
    std::fs::write(
        &file,
        unit.replace("/usr/local/bin/nova-hostd", bin.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let settings: Vec<&str> = unit.lines().map(str::trim).collect();
    for want in ["KillMode=process", "Restart=on-failure", "Type=notify"] {
        assert!(settings.contains(&want), "{want} missing from the unit");
    }
}
