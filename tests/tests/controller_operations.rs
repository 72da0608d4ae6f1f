//! Running the controller: Prometheus metrics (names by the rules, with their TYPE
//! lines), one access line per request naming the caller, a TOML config file, and
//! history pruned by age and count.

use std::time::Duration;

use nova_controller_api::{ListQuery, Role};
use nova_tests::controller::*;
use nova_tests::TempDir;

use nova_tests::controller::stopped_spec as spec;

#[test]
fn metrics_are_scraped_with_a_system_token_and_follow_the_naming_rules() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    register_host(&c, "h1", "http://127.0.0.1:9", 8, 8192);
    let v = block_on(c.api.create_vm(&spec("web"), None)).unwrap();
    wait_for(10, "placement", || block_on(c.api.vm(&v.id)).unwrap().host);
    // A metrics reader: a viewer of the system tenant.
    let reader = c.token_for("system", "prometheus", Role::Viewer);
    let text = block_on(c.as_(&reader).metrics()).unwrap();
    for line in [
        "# TYPE nova_controller_api_request_duration_seconds histogram",
        "# UNIT nova_controller_api_request_duration_seconds seconds",
        "# TYPE nova_controller_reconcile_passes counter",
        "# TYPE nova_controller_reconcile_pass_duration_seconds histogram",
        "# TYPE nova_controller_scheduler_decisions counter",
        "# TYPE nova_controller_migrations counter",
        "# TYPE nova_controller_migration_downtime_seconds histogram",
        "# TYPE nova_controller_migration_bytes counter",
        "# TYPE nova_controller_leader gauge",
        "# TYPE nova_controller_hosts gauge",
        "nova_controller_leader 1",
        "nova_controller_scheduler_decisions_total{result=\"placed\"} 1",
        "nova_controller_hosts{state=\"ready\"} 1",
        "# EOF",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    // Latency by route template, not by path (one series for every VM).
    assert!(
        text.contains("nova_controller_api_request_duration_seconds_count{method=\"GET\",route=\"/v1/vms/{id}\",status=\"200\"}"),
        "{text}"
    );
    assert!(
        text.contains("nova_controller_reconcile_passes_total{result=\"ok\"}"),
        "{text}"
    );
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let name = l.split(['{', ' ']).next().unwrap();
        assert!(name.starts_with("nova_controller_"), "{l}");
        let counter = text.contains(&format!(
            "# TYPE {} counter",
            name.trim_end_matches("_total").trim_end_matches("_created")
        ));
        assert!(
            !counter || name.ends_with("_total") || name.ends_with("_created"),
            "{l}"
        );
    }
    // Tenants and anonymous callers get nothing.
    let ann = c.token_for("acme", "ann", Role::Admin);
    assert_eq!(status(block_on(c.as_(&ann).metrics())), 403);
    assert_eq!(status(block_on(c.anonymous().metrics())), 401);
}

#[test]
fn every_request_leaves_one_access_line_naming_its_caller() {
    let d = TempDir::new();
    let c = Controller::start(
        d.path(),
        Opts {
            args: vec!["--log-format".into(), "json".into()],
            ..Opts::default()
        },
    );
    let ann = c.token_for("acme", "ann", Role::Operator);
    let v = block_on(c.as_(&ann).create_vm(&spec("web"), None)).unwrap();
    block_on(c.as_(&ann).vm(&v.id)).unwrap();
    let _ = block_on(c.anonymous().vms());
    wait_for(5, "the access lines", || {
        c.log().contains(&format!("/v1/vms/{}", v.id)).then_some(())
    });
    let lines: Vec<serde_json::Value> = c
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l["target"] == "access")
        .collect();
    let find = |method: &str, path: &str| {
        lines
            .iter()
            .filter(|l| l["method"] == method && l["path"] == path)
            .collect::<Vec<_>>()
    };
    let created = find("POST", "/v1/vms");
    let created: Vec<_> = created.iter().filter(|l| l["who"] == "ann").collect();
    assert_eq!(created.len(), 1, "{lines:#?}");
    assert_eq!(created[0]["status"], 201);
    let got = find("GET", &format!("/v1/vms/{}", v.id));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["who"], "ann");
    let anonymous: Vec<_> = find("GET", "/v1/vms")
        .into_iter()
        .filter(|l| l["status"] == 401)
        .collect();
    assert_eq!(anonymous.len(), 1);
    assert_eq!(anonymous[0]["who"], "-");
}

#[test]
fn a_config_file_sets_what_flags_would_and_a_flag_still_wins() {
    let d = TempDir::new();
    let cfg = d.join("controller.toml");
    std::fs::write(
        &cfg,
        "heartbeat_ms = 1234\nnode = \"from-file\"\nmax_failed_auth = 3\n",
    )
    .unwrap();
    let c = Controller::start(
        d.path(),
        Opts {
            node: "from-flag".into(),
            heartbeat_ms: None,
            args: vec!["--config".into(), cfg.display().to_string()],
            ..Opts::default()
        },
    );
    // From the file: hosts are told to heartbeat every 1234 ms.
    let r = register_with(&c, &c.join, "h1", "http://127.0.0.1:9", 4, 4096).unwrap();
    assert_eq!(r.heartbeat_interval_ms, 1234);
    // The harness passes --node and --max-failed-auth as flags: they win.
    assert_eq!(block_on(c.anonymous().leader()).unwrap().node, "from-flag");
    for i in 0..4 {
        raw(
            &c.url,
            Some(&format!("nova_{i:064}")),
            "GET",
            "/v1/vms",
            b"",
        );
    }
    block_on(c.api.vms()).expect("20 failures allowed (the flag), not 3 (the file)");
    // A mistyped key is refused, naming it.
    std::fs::write(&cfg, "heartbeat_msec = 5\n").unwrap();
    let d2 = TempDir::new();
    let e = Controller::try_start(
        d2.path(),
        Opts {
            args: vec!["--config".into(), cfg.display().to_string()],
            ..Opts::default()
        },
    )
    .err()
    .expect("an unknown key stops the controller");
    assert!(e.contains("heartbeat_msec"), "{e}");
}

#[test]
fn history_is_pruned_past_its_count_and_its_age() {
    let d = TempDir::new();
    let c = Controller::start(
        d.path(),
        Opts {
            args: [
                "--prune-interval-s",
                "1",
                "--operations-max-count",
                "2",
                "--audit-max-count",
                "5",
                "--events-max-age-s",
                "3",
            ]
            .map(String::from)
            .to_vec(),
            ..Opts::default()
        },
    );
    // Five finished operations (drains of an empty host end at once).
    register_host(&c, "h1", "http://127.0.0.1:9", 4, 4096);
    for _ in 0..5 {
        let op = block_on(c.api.drain("h1")).unwrap();
        wait_for(10, "the drain to end", || {
            block_on(c.api.operation(&op.id))
                .ok()
                .filter(|o| o.state.is_final())
        });
    }
    wait_for(10, "operations pruned to 2", || {
        (block_on(c.api.operations()).unwrap().len() == 2).then_some(())
    });
    // The audit log is kept to its 5 newest entries.
    wait_for(10, "the audit log pruned to 5", || {
        let n = block_on(c.api.audit()).unwrap().len();
        (n <= 5).then_some(())
    });
    // Events older than 3 s are gone from the log (newer ones, like the host going
    // down, may have come since).
    let mut s = EventStream::since(&c.url, &c.admin, Some(0)).unwrap();
    let mut seen = 0;
    while s.next(Duration::from_millis(500)).is_some() {
        seen += 1;
    }
    assert!(seen > 0, "recent events are there");
    let old = s.last;
    std::thread::sleep(Duration::from_secs(5));
    let mut s = EventStream::since(&c.url, &c.admin, Some(0)).unwrap();
    if let Some(e) = s.next(Duration::from_secs(1)) {
        assert!(
            e.revision > old,
            "an event older than 3 s is still there: {e:?}"
        );
    }
    let q = ListQuery::default();
    assert!(block_on(c.api.operations_page(&q)).unwrap().items.len() <= 2);
}

#[test]
fn operations_and_audit_entries_are_pruned_by_age_from_the_config_file() {
    let d = TempDir::new();
    let cfg = d.join("controller.toml");
    std::fs::write(
        &cfg,
        "prune_interval_s = 1\noperations_max_age_s = 2\naudit_max_age_s = 2\n",
    )
    .unwrap();
    let c = Controller::start(
        d.path(),
        Opts {
            args: vec!["--config".into(), cfg.display().to_string()],
            ..Opts::default()
        },
    );
    register_host(&c, "h1", "http://127.0.0.1:9", 4, 4096);
    let op = block_on(c.api.drain("h1")).unwrap();
    wait_for(10, "the drain to end", || {
        block_on(c.api.operation(&op.id))
            .ok()
            .filter(|o| o.state.is_final())
    });
    let audited = |path: &str| {
        block_on(c.api.audit())
            .unwrap()
            .iter()
            .any(|e| e.path == path)
    };
    assert!(audited("/v1/hosts/h1/drain"));
    wait_for(10, "the finished operation to age out", || {
        block_on(c.api.operation(&op.id))
            .err()
            .filter(|e| e.is_not_found())
    });
    wait_for(10, "the audit entry to age out", || {
        (!audited("/v1/hosts/h1/drain")).then_some(())
    });
}

#[test]
fn the_systemd_unit_starts_the_controller_with_flags_it_knows() {
    let unit =
        std::fs::read_to_string(nova_tests::root().join("deploy/systemd/nova-controller.service"))
            .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let mut words = exec.split_whitespace();
    assert!(words.next().unwrap().ends_with("/nova-controller"));
    // The unit's own flags, with its config file in a scratch directory.
    let d = TempDir::new();
    let cfg = d.join("controller.toml");
    std::fs::write(&cfg, "reconcile_interval_ms = 250\n").unwrap();
    let args: Vec<String> = words
        .map(|w| {
            if w == "/etc/nova/controller.toml" {
                cfg.display().to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    assert!(args.contains(&"--config".to_string()), "{args:?}");
    let c = Controller::start(
        d.path(),
        Opts {
            args,
            ..Opts::default()
        },
    );
    block_on(c.api.whoami()).unwrap();
}
