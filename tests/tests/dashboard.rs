//! The web dashboard (controller/ui, served by nova-controller under /ui/), tested in a
//! real browser: Debian's Chromium driven by playwright-core (tests/browser/
//! dashboard.mjs) against a real controller and two real hostd running the test guest.
//! The browser logs in, creates a VM, sees it run, migrates it and watches the
//! progress reach done with the downtime shown, stops two VMs at once, and finds that
//! a viewer cannot press the buttons that change things and that another tenant's VM
//! is not shown, a host's graphs from the metric history, the overview's alerts and
//! capacity forecast; this side then checks through the API that what the browser did
//! happened. Screenshots of every page land in docs/screenshots/. Also: the committed
//! build in controller/ui/dist is the build of the sources next to it.
//!
//! Needs Node, controller/ui/node_modules (`make ui-deps`) and /usr/bin/chromium
//! (`make deps`); skipped loudly without them, failed under NOVA_REQUIRE_KVM=1.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nova_controller_api::{
    AlertRule, Cmp, DesiredState, MigrationResult, OpState, Role, RuleKind, VmSpec,
};
use nova_tests::controller::{block_on, wait_for, Controller, Opts as ControllerOpts};
use nova_tests::hostd::hostd_for;
use nova_tests::hostd::testguest;
use nova_tests::{require, require_kvm, root, TempDir};

const CHROMIUM: &str = "/usr/bin/chromium";

fn ui_dir() -> PathBuf {
    root().join("controller/ui")
}

/// Node, the dashboard's npm packages and (for the browser story) Chromium are here.
fn require_node(browser: bool) -> bool {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    require(node, "node is not installed")
        && require(
            ui_dir().join("node_modules/vite").exists(),
            "controller/ui/node_modules is missing: run `make ui-deps`",
        )
        && (!browser
            || require(
                Path::new(CHROMIUM).exists(),
                "chromium is not installed (make deps)",
            ))
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_committed_dashboard_build_is_the_build_of_its_sources() {
    if !require_node(false) {
        return;
    }
    let out = TempDir::new();
    let built = out.join("dist");
    let r = Command::new("npm")
        .args(["run", "--silent", "build", "--", "--outDir"])
        .arg(&built)
        .current_dir(ui_dir())
        .output()
        .expect("npm");
    assert!(
        r.status.success(),
        "npm run build failed:\n{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    let committed = ui_dir().join("dist");
    assert_eq!(
        files(&built),
        files(&committed),
        "controller/ui/dist is not the build of controller/ui/src: run `make ui` and commit dist/"
    );
    for f in files(&built) {
        assert!(
            std::fs::read(built.join(&f)).unwrap() == std::fs::read(committed.join(&f)).unwrap(),
            "controller/ui/dist/{} differs from a fresh build: run `make ui` and commit dist/",
            f.display()
        );
    }
}

/// A plain GET with `headers`: status, the header block (lower-cased names), body.
fn get(base: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut rq = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        rq += &format!("{k}: {v}\r\n");
    }
    s.write_all(format!("{rq}\r\n").as_bytes()).unwrap();
    let mut resp = vec![];
    s.read_to_end(&mut resp).unwrap();
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&resp[..split]).to_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, resp[split + 4..].to_vec())
}

/// The event stream, opened as the dashboard opens it: the token in a subprotocol.
fn browser_style_events(
    base: &str,
    token: &str,
) -> Result<(tungstenite::WebSocket<std::net::TcpStream>, String), u16> {
    use tungstenite::client::IntoClientRequest;
    let addr = base.trim_start_matches("http://");
    let hexed: String = token.bytes().map(|b| format!("{b:02x}")).collect();
    let mut rq = format!("ws://{addr}/v1/events")
        .into_client_request()
        .unwrap();
    rq.headers_mut().insert(
        "sec-websocket-protocol",
        format!("nova.v1, nova.bearer.{hexed}").parse().unwrap(),
    );
    match tungstenite::client(rq, std::net::TcpStream::connect(addr).unwrap()) {
        Ok((ws, resp)) => {
            let protocol = resp.headers()["sec-websocket-protocol"]
                .to_str()
                .unwrap()
                .to_string();
            Ok((ws, protocol))
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Err(r.status().as_u16())
        }
        Err(e) => panic!("handshake: {e}"),
    }
}

#[test]
fn the_controller_serves_the_dashboard_beside_its_api_and_lets_a_browser_follow_events() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());

    let (status, head, _) = get(&c.url, "/", &[]);
    assert_eq!(status, 302);
    assert!(head.contains("location: /ui/"), "{head}");
    // Any route of the app answers the page, with no token and a strict policy.
    let (status, head, page) = get(&c.url, "/ui/vms/vm-123", &[]);
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    let page = String::from_utf8(page).unwrap();
    let script = page
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page loads its script");
    let (status, head, js) = get(&c.url, script, &[("Accept-Encoding", "gzip, br")]);
    assert_eq!(status, 200);
    assert!(head.contains("content-encoding: br"), "{head}");
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(head.contains("immutable"), "{head}");
    assert!(
        js.len() < 300 * 1024,
        "first-load JavaScript within its budget: {} B",
        js.len()
    );
    assert_eq!(get(&c.url, "/ui/assets/gone-0000.js", &[]).0, 404);
    // The dashboard opened nothing of the API.
    assert_eq!(get(&c.url, "/v1/vms", &[]).0, 401);

    let (mut ws, protocol) = browser_style_events(&c.url, &c.admin).expect("the stream opens");
    assert_eq!(
        protocol, "nova.v1",
        "the answer names the protocol, never the token"
    );
    let vm = block_on(c.api.create_vm(&guest("watched", false), None)).unwrap();
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let ev: nova_controller_api::Event = loop {
        if let tungstenite::Message::Text(t) = ws.read().expect("an event") {
            break serde_json::from_str(&t).unwrap();
        }
    };
    assert_eq!(
        (ev.kind.as_str(), ev.id.as_str()),
        ("vm.created", vm.id.as_str())
    );
    assert_eq!(
        browser_style_events(&c.url, "nova_not-a-token").err(),
        Some(401)
    );
}

fn guest(name: &str, start: bool) -> VmSpec {
    serde_json::from_value(serde_json::json!({"name": name, "kernel": testguest(),
        "vcpus": 1, "mem_mib": 64, "cmdline": "nova.workload=counter", "start": start}))
    .unwrap()
}

/// Runs the browser story; its output, or a panic with it.
fn run_story(c: &Controller, tokens: &[(&str, &str)], other: (&str, &str)) -> String {
    let mut cmd = Command::new("node");
    cmd.arg(root().join("tests/browser/dashboard.mjs"))
        .env("NOVA_URL", &c.url)
        .env("NOVA_UI_DIR", ui_dir())
        .env("NOVA_SCREENSHOTS", root().join("docs/screenshots"))
        .env("NOVA_KERNEL", testguest())
        .env("NOVA_OTHER_VM_ID", other.0)
        .env("NOVA_OTHER_VM_NAME", other.1)
        .env("CHROMIUM", CHROMIUM)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in tokens {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("node");
    let pid = child.id();
    // The story takes well under a minute; a hung browser must not hang the suite.
    let guard = std::thread::spawn(move || {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(300) {
            std::thread::sleep(Duration::from_millis(500));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        // SAFETY: signalling the node process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let out = child.wait_with_output().unwrap();
    let _ = guard.join();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the browser story failed ({}):\n{text}\ncontroller log:\n{}",
        out.status,
        c.log()
    );
    text
}

#[test]
fn a_browser_creates_migrates_and_stops_vms_and_each_role_sees_what_it_may() {
    if !require_kvm() || !require_node(true) {
        return;
    }
    let d = TempDir::new();
    // Scrapes and alert evaluations every second, so the graphs have history and the
    // rule below fires while the browser looks.
    let c = Controller::start(
        d.path(),
        ControllerOpts {
            args: [
                "--scrape-interval-ms",
                "1000",
                "--alert-interval-ms",
                "1000",
            ]
            .map(String::from)
            .to_vec(),
            ..ControllerOpts::default()
        },
    );
    let (_h1, _h2) = (hostd_for(&c), hostd_for(&c));
    // A rule that holds on every host: its alerts are what the overview shows.
    block_on(c.api.create_alert_rule(&AlertRule {
        id: "dashboard-hosts-up".into(),
        metric: "host.up".into(),
        target: None,
        condition: RuleKind::Threshold {
            cmp: Cmp::Above,
            value: 0.5,
            ratio_of: None,
        },
        for_s: 0,
        severity: "warning".into(),
        summary: "the host is up (a rule of the dashboard test)".into(),
        builtin: false,
    }))
    .unwrap();
    wait_for(30, "two hosts to be ready", || {
        let hosts = block_on(c.api.hosts()).ok()?;
        (hosts
            .iter()
            .filter(|h| h.state == nova_controller_api::HostState::Ready)
            .count()
            == 2)
            .then_some(())
    });
    let operator = c.token_for("acme", "alice", Role::Operator);
    let viewer = c.token_for("acme", "victor", Role::Viewer);
    let _globex = c.token_for("globex", "gina", Role::Operator);
    // What the browser finds already there: two more VMs of acme, one of globex.
    for n in ["web-2", "web-3"] {
        block_on(c.api.create_vm_in(Some("acme"), &guest(n, true), None)).unwrap();
    }
    let secret = block_on(
        c.api
            .create_vm_in(Some("globex"), &guest("globex-db", false), None),
    )
    .unwrap();

    let out = run_story(
        &c,
        &[
            ("NOVA_ADMIN_TOKEN", &c.admin),
            ("NOVA_OPERATOR_TOKEN", &operator),
            ("NOVA_VIEWER_TOKEN", &viewer),
        ],
        (&secret.id, "globex-db"),
    );
    println!("{out}");
    assert!(out.contains("dashboard story: ok"), "{out}");

    // What the browser did, as the API sees it.
    let vms = block_on(c.api.vms()).unwrap();
    let named = |n: &str| {
        vms.iter()
            .find(|v| v.spec.name == n)
            .unwrap_or_else(|| panic!("{n}: {vms:?}"))
    };
    let web1 = named("web-1");
    assert_eq!(
        web1.tenant, "acme",
        "created for the tenant chosen in the form"
    );
    assert_eq!(web1.spec.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(web1.observed.as_ref().unwrap().state, "running");
    let ops = block_on(c.api.operations()).unwrap();
    let moved = ops
        .iter()
        .find(|o| o.kind == "migrate" && o.target == web1.id)
        .expect("the browser's migration");
    assert_eq!(moved.state, OpState::Succeeded, "{moved:?}");
    let r: MigrationResult = serde_json::from_value(moved.result.clone()).unwrap();
    assert!(r.downtime_ms.is_some(), "{r:?}");
    assert_eq!(
        web1.host.as_deref(),
        Some(r.to.as_str()),
        "the VM is where it moved to"
    );
    for n in ["web-2", "web-3"] {
        assert_eq!(
            named(n).desired,
            DesiredState::Stopped,
            "{n} was stopped in bulk"
        );
    }
    let firing = block_on(c.api.alerts()).unwrap();
    assert!(
        firing
            .iter()
            .any(|a| a.rule == "dashboard-hosts-up" && a.active()),
        "the alerts the overview showed: {firing:?}"
    );
    let audit = block_on(c.api.audit()).unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.actor == "alice" && e.path.ends_with("/stop") && e.status == 200)
            .count(),
        2,
        "the operator's two stops, one call each"
    );
    assert!(
        audit
            .iter()
            .any(|e| e.actor == "victor" && e.path.ends_with("/stop") && e.status == 403),
        "the viewer's stop was refused by the API"
    );
    for page in [
        "login",
        "overview",
        "hosts",
        "host-detail",
        "vms",
        "vm-new",
        "vm-detail",
        "vm-detail-viewer",
        "operations",
        "audit",
        "access",
    ] {
        for size in ["1280", "phone"] {
            let f = root().join(format!("docs/screenshots/{page}-{size}.png"));
            assert!(
                f.metadata().is_ok_and(|m| m.len() > 1000),
                "{} was written",
                f.display()
            );
        }
    }
}
