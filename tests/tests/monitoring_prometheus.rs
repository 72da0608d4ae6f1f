//! NovaCron for users who run Prometheus: the shipped rules pass `promtool check
//! rules`, and Debian's `prometheus`, started with the shipped `prometheus.yml`
//! (pointed at a running cluster), discovers the controller and every hostd through
//! `GET /v1/metrics/targets`, scrapes them all (`up`), and loads the shipped rules.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

use nova_controller_api::{Role, SYSTEM_TENANT};
use nova_tests::controller::{block_on, wait_for, Controller, Opts};
use nova_tests::hostd::hostd_for;
use nova_tests::{free_port, require, root, which, TempDir};
use serde::Deserialize;

#[test]
fn the_shipped_rules_pass_promtool() {
    if !require(which("promtool"), "promtool (Debian package prometheus)") {
        return;
    }
    let rules = root().join("deploy/prometheus/nova-rules.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A process this test started, killed when the test ends however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prometheus' `GET /api/v1/targets` answer (the part this test reads).
#[derive(Deserialize)]
struct Answer<T> {
    status: String,
    data: T,
}

#[derive(Deserialize)]
struct Targets {
    #[serde(rename = "activeTargets")]
    active: Vec<Target>,
}

#[derive(Deserialize, Debug)]
struct Target {
    labels: BTreeMap<String, String>,
    health: String,
    #[serde(rename = "lastError")]
    last_error: String,
}

/// `GET /api/v1/rules`.
#[derive(Deserialize)]
struct Rules {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    health: String,
}

#[test]
fn prometheus_discovers_and_scrapes_every_hostd_and_the_controller_with_the_shipped_config() {
    if !require(
        which("prometheus"),
        "prometheus (Debian package prometheus)",
    ) {
        return;
    }
    let d = TempDir::new();
    let c = Controller::start(d.path(), Opts::default());
    let hosts = [hostd_for(&c), hostd_for(&c)];
    wait_for(30, "both hosts to register", || {
        (block_on(c.api.hosts()).ok()?.len() == hosts.len()).then_some(())
    });

    // The shipped configuration, pointed at this cluster: its URL, a system-tenant
    // viewer token (what the file's comment tells users to make), the shipped rules,
    // and intervals short enough for a test.
    let token = c.token_for(SYSTEM_TENANT, "prometheus", Role::Viewer);
    std::fs::write(d.join("nova.token"), &token).unwrap();
    let sd = block_on(c.as_(&token).sd_targets()).expect("the viewer token lists the targets");
    assert_eq!(sd.len(), 1 + hosts.len(), "{sd:?}");
    let shipped = std::fs::read_to_string(root().join("deploy/prometheus/prometheus.yml")).unwrap();
    let config = shipped
        .replace("http://127.0.0.1:7070", &c.url)
        .replace(
            "/etc/prometheus/nova.token",
            &d.join("nova.token").display().to_string(),
        )
        .replace(
            "- nova-rules.yml",
            &format!("- {}", d.join("rules.yml").display()),
        )
        .replace(
            "scrape_interval: 15s",
            "scrape_interval: 1s\n  evaluation_interval: 1s",
        )
        .replace("refresh_interval: 30s", "refresh_interval: 1s");
    assert_ne!(config, shipped, "the shipped prometheus.yml changed shape");
    std::fs::write(d.join("prometheus.yml"), &config).unwrap();
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/nova-rules.yml")).unwrap();
    std::fs::write(
        d.join("rules.yml"),
        rules.replace("interval: 30s", "interval: 1s"),
    )
    .unwrap();

    let port = free_port();
    let log = std::fs::File::create(d.join("prometheus.log")).unwrap();
    let _prom = Killed(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                d.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", d.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let prom = nova_http::Client::new(
        &format!("http://127.0.0.1:{port}"),
        None,
        &Default::default(),
    )
    .unwrap();
    let prom_log = || std::fs::read_to_string(d.join("prometheus.log")).unwrap_or_default();

    // Every host and the controller are discovered and up.
    let host_ids: Vec<String> = block_on(c.api.hosts())
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    let mut last = vec![];
    let up = (0..120).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let a: Answer<Targets> = block_on(prom.get("/api/v1/targets")).ok()?;
        assert_eq!(a.status, "success");
        last = a.data.active;
        let up = |job: &str, label: &str, value: &str| {
            last.iter().any(|t| {
                t.health == "up"
                    && t.labels.get("job").map(String::as_str) == Some(job)
                    && t.labels.get(label).map(String::as_str) == Some(value)
            })
        };
        (up("nova-controller", "node", &c.node)
            && host_ids.iter().all(|h| up("nova-hostd", "host", h))
            && last.len() == 1 + host_ids.len())
        .then_some(())
    });
    assert!(
        up.is_some(),
        "not every target is up: {last:?}\nprometheus log:\n{}",
        prom_log()
    );
    assert!(last.iter().all(|t| t.last_error.is_empty()), "{last:?}");

    // The shipped rules loaded, and every one evaluates cleanly.
    let groups = wait_for(30, "the shipped rules to be evaluated", || {
        let a: Answer<Rules> = block_on(prom.get("/api/v1/rules")).ok()?;
        let g = a.data.groups;
        (g.iter().any(|g| g.name == "nova-alerts")
            && g.iter().any(|g| g.name == "nova-recording")
            && g.iter().flat_map(|g| &g.rules).all(|r| r.health == "ok"))
        .then_some(g)
    });
    assert!(groups.iter().map(|g| g.rules.len()).sum::<usize>() >= 6);
}
