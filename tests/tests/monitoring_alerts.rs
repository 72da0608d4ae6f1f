//! Built-in alerting and capacity planning against real processes: a controller
//! scraping a real hostd (killed: "host down" fires within its `for`, once, to a real
//! HTTP webhook and a real SMTP server, and resolves when it returns; its test-guest
//! VMs: one that suddenly spins is an anomaly, a busy one's noise is not) or pretend
//! hosts (a real HTTP server in the test serving hostd's `/metrics` with values the
//! test controls: silences and acknowledgements, retries and dead letters, a disk
//! filling at a known rate, forwarding to a real Alertmanager), and two controllers
//! on one real etcd, where only the leader notifies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use nova_controller_api::{
    AlertRule, AlertState, CapacityQuery, Cmp, Notification, Receiver, ReceiverKind, RuleKind,
    VmSpec,
};
use nova_tests::controller::{block_on, register_host, wait_for, Controller, EventStream, Opts};
use nova_tests::hostd::{testguest, Hostd, Opts as HostdOpts};
use nova_tests::{binary, free_port, require, require_kvm, unique, which, TempDir};
use serde::Deserialize;
use sha2::Sha256;

const SECRET: &str = "webhook-secret-0123456789";

/// A process this test started, killed when the test ends however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn opts(extra: &[&str]) -> Opts {
    let mut args: Vec<String> = ["--scrape-interval-ms", "1000", "--alert-interval-ms", "300"]
        .map(String::from)
        .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    Opts {
        // Pretend hosts do not heartbeat: keep them ready.
        down_after_ms: 600_000,
        args,
        ..Opts::default()
    }
}

/// Runs an axum app on a free loopback port in its own thread; answers the port.
fn serve(app: axum::Router) -> u16 {
    let port = free_port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    wait_for(10, "the test's HTTP server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    port
}

/// A webhook receiver: every POST's signature header and body, and how many calls
/// it refuses (503) before it accepts.
/// Signature header and body of each call a webhook accepted.
type Heard = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

#[derive(Clone, Default)]
struct Sink {
    got: Heard,
    refuse_first: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

impl Sink {
    fn start(refuse_first: usize) -> (Sink, String) {
        async fn hook(
            axum::extract::State(s): axum::extract::State<Sink>,
            headers: axum::http::HeaderMap,
            body: axum::body::Bytes,
        ) -> axum::http::StatusCode {
            s.calls.fetch_add(1, Ordering::SeqCst);
            if s.refuse_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return axum::http::StatusCode::SERVICE_UNAVAILABLE;
            }
            let sig = headers
                .get("x-nova-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            s.got.lock().unwrap().push((sig, body.to_vec()));
            axum::http::StatusCode::OK
        }
        let s = Sink {
            refuse_first: Arc::new(AtomicUsize::new(refuse_first)),
            ..Sink::default()
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(s.clone());
        let port = serve(app);
        (s, format!("http://127.0.0.1:{port}/hook"))
    }

    /// The notifications received, each signature checked.
    fn notifications(&self) -> Vec<Notification> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(sig, body)| {
                let mut m = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
                m.update(body);
                let want = format!("sha256={}", hex::encode(m.finalize().into_bytes()));
                assert_eq!(sig, &want, "a webhook body whose signature does not match");
                serde_json::from_slice(body).expect("a Notification")
            })
            .collect()
    }

    fn of(&self, group: &str, status: &str) -> Vec<Notification> {
        self.notifications()
            .into_iter()
            .filter(|n| n.group == group && n.status == status)
            .collect()
    }
}

/// A pretend hostd's `/metrics`: whatever the test sets.
#[derive(Clone, Default)]
struct Page(Arc<Mutex<String>>);

impl Page {
    fn start() -> (Page, String) {
        async fn metrics(axum::extract::State(p): axum::extract::State<Page>) -> String {
            p.0.lock().unwrap().clone()
        }
        let p = Page::default();
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics))
            .with_state(p.clone());
        let port = serve(app);
        (p, format!("http://127.0.0.1:{port}"))
    }

    fn set(&self, text: String) {
        *self.0.lock().unwrap() = text;
    }
}

/// hostd's exposition with a host's memory and disk and one VM's CPU counter.
fn exposition(mem_used: f64, disk_used: f64, vm_cpu_seconds: f64) -> String {
    let mem = 16.0 * 1073741824.0;
    let disk = 1e12;
    format!(
        "# TYPE nova_host_memory_bytes gauge\nnova_host_memory_bytes {mem}\n\
         # TYPE nova_host_memory_available_bytes gauge\nnova_host_memory_available_bytes {}\n\
         # TYPE nova_host_disk_size_bytes gauge\nnova_host_disk_size_bytes {disk}\n\
         # TYPE nova_host_disk_free_bytes gauge\nnova_host_disk_free_bytes {}\n\
         # TYPE nova_vm_process_cpu_seconds counter\n\
         nova_vm_process_cpu_seconds_total{{vm=\"vm-spin\"}} {vm_cpu_seconds}\n",
        mem - mem_used * mem,
        disk - disk_used
    )
}

fn webhook(id: &str, url: &str, attempts: u32, backoff_ms: u64) -> Receiver {
    Receiver {
        id: id.into(),
        channel: ReceiverKind::Webhook {
            url: url.into(),
            secret: SECRET.into(),
        },
        min_severity: None,
        max_attempts: attempts,
        backoff_ms,
    }
}

fn rule(id: &str, metric: &str, condition: RuleKind, for_s: u64) -> AlertRule {
    AlertRule {
        id: id.into(),
        metric: metric.into(),
        target: None,
        condition,
        for_s,
        severity: "warning".into(),
        summary: format!("{id} test rule"),
        builtin: false,
    }
}

fn state_of(c: &Controller, id: &str) -> Option<AlertState> {
    block_on(c.api.alert(id)).ok().map(|a| a.state)
}

fn novactl(c: &Controller, args: &[&str]) -> String {
    let out = Command::new(binary("novactl"))
        .args(["--url", &c.url, "--token", &c.admin])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "novactl {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A real SMTP server (Python's aiosmtpd) delivering into a Maildir.
fn smtp_server(dir: &Path) -> Option<(Killed, u16, PathBuf)> {
    let ok = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    if !require(ok, "python3 -m aiosmtpd (PyPI aiosmtpd, `make deps`)") {
        return None;
    }
    let port = free_port();
    let maildir = dir.join("maildir");
    let child = Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start aiosmtpd");
    let k = Killed(child);
    wait_for(20, "the SMTP server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    Some((k, port, maildir))
}

/// The mails delivered so far.
fn mails(maildir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(maildir.join("new"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_killed_hostd_fires_host_down_within_its_for_once_by_webhook_and_mail_and_resolves_when_back() {
    let d = TempDir::new();
    let Some((_smtp, smtp_port, maildir)) = smtp_server(d.path()) else {
        return;
    };
    let c = Controller::start(d.path(), opts(&[]));
    let mut h = Hostd::start(HostdOpts {
        args: vec![
            "--controller".into(),
            c.url.clone(),
            "--join-token-file".into(),
            c.dir.join("join.token").display().to_string(),
            "--bridge".into(),
            unique("nbr"),
        ],
        ..HostdOpts::default()
    });
    let host = wait_for(30, "the host to register", || {
        block_on(c.api.hosts()).ok()?.first().map(|h| h.id.clone())
    });
    // The shipped rule, with a `for` short enough for a test (PUT keeps it builtin).
    let mut down = wait_for(10, "the shipped rules", || {
        block_on(c.api.alert_rule("host-down")).ok()
    });
    assert!(down.builtin);
    down.for_s = 3;
    assert!(block_on(c.api.put_alert_rule(&down)).unwrap().builtin);
    let (sink, url) = Sink::start(0);
    block_on(c.api.create_alert_receiver(&webhook("hook", &url, 3, 100))).unwrap();
    block_on(c.api.create_alert_receiver(&Receiver {
        id: "mail".into(),
        channel: ReceiverKind::Email {
            smtp: format!("127.0.0.1:{smtp_port}"),
            from: "nova@example.org".into(),
            to: vec!["ops@example.org".into()],
        },
        min_severity: Some("critical".into()),
        max_attempts: 3,
        backoff_ms: 100,
    }))
    .unwrap();
    let shown = block_on(c.api.alert_receivers()).unwrap();
    assert!(
        shown.iter().all(|r| !matches!(&r.channel,
            ReceiverKind::Webhook { secret, .. } if !secret.is_empty())),
        "the API shows a webhook's secret: {shown:?}"
    );

    // While the host answers: no alert.
    let id = format!("host-down:{host}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(state_of(&c, &id), None);

    let mut events = EventStream::open(&c.url, &c.admin);
    h.kill();
    let killed = Instant::now();
    events.until("alert.pending", &id, 30);
    let firing = events.until("alert.firing", &id, 30);
    let a: nova_controller_api::Alert = serde_json::from_value(firing.data).unwrap();
    let fired = a.fired_ms.expect("fired_ms of a firing alert");
    assert!(
        fired >= a.since_ms + 3000,
        "fired {} ms after pending, before its for (3 s)",
        fired - a.since_ms
    );
    assert!(
        killed.elapsed() < Duration::from_secs(3 + 10),
        "fired {:?} after the kill",
        killed.elapsed()
    );
    wait_for(20, "the webhook's firing notification", || {
        (!sink.of("host-down", "firing").is_empty()).then_some(())
    });
    wait_for(20, "the firing mail", || {
        mails(&maildir)
            .iter()
            .any(|m| m.contains("[FIRING] host-down") && m.contains(&host))
            .then_some(())
    });
    // Once: more evaluations send nothing more.
    std::thread::sleep(Duration::from_secs(3));
    let fired = sink.of("host-down", "firing");
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].alerts.len(), 1);
    assert_eq!(fired[0].alerts[0].id, id);
    assert_eq!(fired[0].alerts[0].state, AlertState::Firing);
    assert_eq!(mails(&maildir).len(), 1);
    let listed = novactl(&c, &["alert", "list"]);
    assert!(
        listed.contains(&id) && listed.contains("firing"),
        "{listed}"
    );

    // The host comes back: resolved, notified once more on each channel.
    h.restart();
    events.until("alert.resolved", &id, 30);
    wait_for(20, "the webhook's resolved notification", || {
        (!sink.of("host-down", "resolved").is_empty()).then_some(())
    });
    wait_for(20, "the resolved mail", || {
        mails(&maildir)
            .iter()
            .any(|m| m.contains("[RESOLVED] host-down"))
            .then_some(())
    });
    assert_eq!(sink.of("host-down", "firing").len(), 1);
    assert_eq!(state_of(&c, &id), Some(AlertState::Resolved));
}

#[test]
fn silences_and_acknowledgements_hold_notifications_and_failed_webhooks_are_retried_then_dead_lettered(
) {
    let d = TempDir::new();
    let c = Controller::start(d.path(), opts(&[]));
    let (page, url) = Page::start();
    page.set(exposition(0.5, 1e11, 0.0));
    register_host(&c, "h-mem", &url, 8, 16384);
    block_on(c.api.create_alert_rule(&rule(
        "mem-high",
        "host.mem_used_bytes",
        RuleKind::Threshold {
            cmp: Cmp::Above,
            value: 0.75,
            ratio_of: Some("host.mem_total_bytes".into()),
        },
        0,
    )))
    .unwrap();
    // Refuses twice, then accepts: the notification arrives on the third attempt.
    let (flaky, flaky_url) = Sink::start(2);
    block_on(
        c.api
            .create_alert_receiver(&webhook("flaky", &flaky_url, 4, 100)),
    )
    .unwrap();
    // Nobody listens there: three attempts, then a dead letter.
    let nobody = format!("http://127.0.0.1:{}/hook", free_port());
    block_on(
        c.api
            .create_alert_receiver(&webhook("nobody", &nobody, 3, 50)),
    )
    .unwrap();
    // Only critical alerts: hears nothing of this warning.
    let (critical, critical_url) = Sink::start(0);
    let mut only_critical = webhook("critical-only", &critical_url, 3, 50);
    only_critical.min_severity = Some("critical".into());
    block_on(c.api.create_alert_receiver(&only_critical)).unwrap();
    let id = "mem-high:h-mem";
    wait_for(20, "the host's memory in the history", || {
        let a = block_on(c.api.metric_query(&nova_controller_api::MetricQuery {
            metric: "host.mem_used_bytes".into(),
            target: Some("h-mem".into()),
            ..Default::default()
        }))
        .ok()?;
        (!a.series.first()?.points.is_empty()).then_some(())
    });
    assert_eq!(state_of(&c, id), None);

    page.set(exposition(0.9, 1e11, 0.0));
    wait_for(20, "the alert to fire", || {
        (state_of(&c, id)? == AlertState::Firing).then_some(())
    });
    wait_for(20, "the flaky webhook's notification", || {
        (flaky.of("mem-high", "firing").len() == 1).then_some(())
    });
    assert_eq!(
        flaky.calls.load(Ordering::SeqCst),
        3,
        "two refusals, one delivery"
    );
    let dl = wait_for(20, "the dead letter", || {
        block_on(c.api.dead_letters())
            .ok()?
            .into_iter()
            .find(|d| d.receiver == "nobody")
    });
    assert_eq!(dl.attempts, 3);
    assert_eq!(dl.notification.group, "mem-high");
    assert!(!dl.error.is_empty());
    let listed = novactl(&c, &["alert", "dead-letters"]);
    assert!(
        listed.contains("nobody") && listed.contains("mem-high"),
        "{listed}"
    );
    block_on(c.api.delete_alert_receiver("nobody")).unwrap();

    // Silenced: it resolves and fires again, and nobody hears of it.
    let out = novactl(&c, &["alert", "silence", id, "--for-s", "600"]);
    assert!(out.contains("silenced"), "{out}");
    page.set(exposition(0.5, 1e11, 0.0));
    wait_for(20, "the silenced alert to resolve", || {
        (state_of(&c, id)? == AlertState::Resolved).then_some(())
    });
    page.set(exposition(0.9, 1e11, 0.0));
    wait_for(20, "the new alert to come up silenced", || {
        (state_of(&c, id)? == AlertState::Silenced).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(flaky.notifications().len(), 1, "a silenced alert notified");

    // The silence ends: the alert fires and notifies.
    let silences = block_on(c.api.silences()).unwrap();
    assert_eq!(silences.len(), 1);
    assert_eq!(
        silences[0].matchers.get("target").map(String::as_str),
        Some("h-mem")
    );
    novactl(&c, &["alert", "unsilence", &silences[0].id]);
    wait_for(20, "the unsilenced alert's notification", || {
        (flaky.of("mem-high", "firing").len() == 2).then_some(())
    });
    assert_eq!(state_of(&c, id), Some(AlertState::Firing));

    // Acknowledged: stays quiet, then its resolution is told.
    let out = novactl(&c, &["alert", "ack", id]);
    assert!(out.contains("acknowledged"), "{out}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(state_of(&c, id), Some(AlertState::Acknowledged));
    assert_eq!(flaky.notifications().len(), 2);
    page.set(exposition(0.5, 1e11, 0.0));
    wait_for(20, "the resolved notification", || {
        (flaky.of("mem-high", "resolved").len() == 1).then_some(())
    });
    let a = block_on(c.api.alert(id)).unwrap();
    assert_eq!(a.state, AlertState::Resolved);
    assert!(a.acknowledged_by.is_some());
    assert_eq!(
        critical.calls.load(Ordering::SeqCst),
        0,
        "min_severity ignored"
    );

    // Bad input is refused naming the field.
    let mut bad = rule(
        "x",
        "vm.cpu",
        RuleKind::Anomaly {
            z: -1.0,
            window_s: 60,
        },
        0,
    );
    let e = block_on(c.api.create_alert_rule(&bad)).unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert_eq!(
        e.body().and_then(|b| b.field.clone()).as_deref(),
        Some("condition.z")
    );
    bad.condition = RuleKind::Absent { window_s: 60 };
    bad.severity = "urgent".into();
    let e = block_on(c.api.create_alert_rule(&bad)).unwrap_err();
    assert_eq!(
        e.body().and_then(|b| b.field.clone()).as_deref(),
        Some("severity")
    );
    let e = block_on(
        c.api
            .create_alert_receiver(&webhook("w", "ftp://x/", 3, 100)),
    )
    .unwrap_err();
    assert_eq!(
        e.body().and_then(|b| b.field.clone()).as_deref(),
        Some("channel.url")
    );
}

#[test]
fn a_real_vm_that_suddenly_spins_fires_the_anomaly_rule_and_a_busy_vms_noise_does_not() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let c = Controller::start(d.path(), opts(&[]));
    let _h = Hostd::start(HostdOpts {
        args: vec![
            "--controller".into(),
            c.url.clone(),
            "--join-token-file".into(),
            c.dir.join("join.token").display().to_string(),
            "--bridge".into(),
            unique("nbr"),
        ],
        ..HostdOpts::default()
    });
    wait_for(30, "the host to register", || {
        (block_on(c.api.hosts()).ok()?.len() == 1).then_some(())
    });
    // A robust z-score over the last minute: the VM's CPU against its own median.
    block_on(c.api.create_alert_rule(&rule(
        "cpu-anomaly",
        "vm.cpu",
        RuleKind::Anomaly {
            z: 50.0,
            window_s: 60,
        },
        0,
    )))
    .unwrap();
    let mut events = EventStream::open(&c.url, &c.admin);
    // The test guest's `spin:30` halts for 30 s (woken by its timer ten times a
    // second), then spins; `spin:0` spins from boot, its CPU share moving with
    // whatever else runs on the host: the noise.
    let vm = |name: &str, workload: &str| {
        let spec = VmSpec {
            mem_mib: 64,
            cmdline: Some(format!("nova.workload={workload}")),
            ..VmSpec::new(name, testguest().display().to_string())
        };
        block_on(c.api.create_vm(&spec, None)).unwrap().id
    };
    let spinner = vm("spinner", "spin:30");
    let busy = vm("busy", "spin:0");
    for id in [&spinner, &busy] {
        wait_for(60, "the VM to run", || {
            let v = block_on(c.api.vm(id)).ok()?;
            (v.observed?.state == "running").then_some(())
        });
    }
    let booted = Instant::now();
    let cpu = |id: &str| -> Vec<f64> {
        block_on(c.api.metric_query(&nova_controller_api::MetricQuery {
            metric: "vm.cpu".into(),
            target: Some(id.into()),
            ..Default::default()
        }))
        .ok()
        .and_then(|a| a.series.into_iter().next())
        .map(|s| s.points.into_iter().map(|p| p.1).collect())
        .unwrap_or_default()
    };
    // While the spinner still halts: no anomaly for either VM.
    let quiet_until = booted + Duration::from_secs(24);
    while Instant::now() < quiet_until {
        if let Some(e) = events.next(Duration::from_millis(500)) {
            assert!(
                !e.id.starts_with("cpu-anomaly:"),
                "an anomaly before anything spun: {e:?}"
            );
        }
    }
    let idle = cpu(&spinner);
    assert!(idle.len() >= 15, "too little history: {idle:?}");
    // (Past the VMM's own start-up, in the first points.)
    let idle_max = idle.iter().skip(3).copied().fold(0.0, f64::max);
    assert!(idle_max < 0.05, "the halted guest used CPU: {idle:?}");
    let noisy = cpu(&busy);
    assert!(
        noisy.iter().rev().take(10).any(|&v| v > 0.05),
        "the busy guest does not spin: {noisy:?}"
    );

    // It spins: the rule fires for it, and its firing value is a large z.
    let e = events.until("alert.firing", &format!("cpu-anomaly:{spinner}"), 40);
    let a: nova_controller_api::Alert = serde_json::from_value(e.data).unwrap();
    assert!(a.value > 50.0, "{a:?}");
    assert!(
        booted.elapsed() >= Duration::from_secs(25),
        "fired {:?} after boot, before the guest spun",
        booted.elapsed()
    );
    let spun = cpu(&spinner);
    assert!(
        spun.iter()
            .rev()
            .take(3)
            .any(|&v| v > 2.0 * idle_max.max(0.02)),
        "the spinner's CPU did not rise: {spun:?}"
    );
    // The busy VM's ups and downs over the same minute raised nothing.
    assert_eq!(state_of(&c, &format!("cpu-anomaly:{busy}")), None);
    eprintln!(
        "spinner z {:.0}; CPU halted {idle:?}, spinning {spun:?}; busy VM {:?}",
        a.value,
        cpu(&busy)
    );
}

#[test]
fn a_disk_filling_at_a_known_rate_is_forecast_within_ten_percent_by_its_rule_and_capacity() {
    let d = TempDir::new();
    let c = Controller::start(d.path(), opts(&[]));
    let (page, url) = Page::start();
    register_host(&c, "h-disk", &url, 8, 16384);
    // 500 MB/s into 1 TB from 400 GB used: full in (1e12 - used) / 5e8 s, about 20
    // minutes (fast enough to rise above the history's 12-bit mantissa in seconds).
    const RATE: f64 = 5e8;
    let t0 = Instant::now();
    let used_at = move |t: Instant| 4e11 + RATE * t.duration_since(t0).as_secs_f64();
    {
        let page = page.clone();
        std::thread::spawn(move || loop {
            page.set(exposition(0.5, used_at(Instant::now()), 0.0));
            std::thread::sleep(Duration::from_millis(20));
        });
    }
    let truth_days = || (1e12 - used_at(Instant::now())) / RATE / 86_400.0;
    block_on(c.api.create_alert_rule(&rule(
        "disk-soon",
        "host.disk_used_bytes",
        RuleKind::Forecast {
            capacity_of: "host.disk_total_bytes".into(),
            days: 30.0,
            window_s: 60,
        },
        0,
    )))
    .unwrap();
    wait_for(30, "the forecast rule to fire", || {
        (state_of(&c, "disk-soon:h-disk")? == AlertState::Firing).then_some(())
    });
    // More history, then the forecast against the truth.
    std::thread::sleep(Duration::from_secs(8));
    let a = block_on(c.api.alert("disk-soon:h-disk")).unwrap();
    let truth = truth_days();
    assert!(
        (a.value - truth).abs() / truth < 0.10,
        "rule forecast {} days, truth {truth}",
        a.value
    );
    // The shipped rule (full within 3 days) sees it too, pending for its 15 minutes.
    let shipped = block_on(c.api.alert("disk-filling:h-disk")).unwrap();
    assert_eq!(shipped.state, AlertState::Pending);
    assert!((shipped.value - truth).abs() / truth < 0.10, "{shipped:?}");

    let cap = block_on(c.api.capacity(&CapacityQuery {
        window_s: Some(60),
        ..Default::default()
    }))
    .unwrap();
    let host = cap.hosts.iter().find(|h| h.host == "h-disk").unwrap();
    let disk = host
        .resources
        .iter()
        .find(|r| r.resource == "disk_bytes")
        .unwrap();
    let truth = truth_days();
    let days = disk
        .days_until_used_full
        .expect("a forecast of the disk's use");
    assert!(
        (days - truth).abs() / truth < 0.10,
        "capacity forecast {days} days, truth {truth}"
    );
    let per_day = disk.used_trend_per_day.unwrap();
    assert!(
        (per_day - RATE * 86_400.0).abs() / (RATE * 86_400.0) < 0.10,
        "{per_day}"
    );
    // 8 vCPUs and 16 GiB free: eight 1-vCPU 512 MiB VMs fit, by vCPUs.
    assert_eq!(host.fits_now, 8);
    assert_eq!(cap.cluster.fits_now, 8);
    let text = novactl(&c, &["capacity", "--window-s", "60", "--vcpus", "2"]);
    assert!(
        text.contains("h-disk") && text.contains("disk_bytes"),
        "{text}"
    );
    assert!(text.contains("cluster"), "{text}");
    let e = block_on(c.api.capacity(&CapacityQuery {
        window_s: Some(1),
        ..Default::default()
    }))
    .unwrap_err();
    assert_eq!(
        e.body().and_then(|b| b.field.clone()).as_deref(),
        Some("window_s")
    );
}

#[test]
fn under_etcd_only_the_leader_notifies_once_and_after_it_dies_the_other_takes_over_once() {
    let Some(etcd) = nova_tests::etcd::Etcd::start() else {
        return;
    };
    let d = TempDir::new();
    // Two controllers on one etcd, each with its own history (both scrape).
    let start = |i: usize| {
        let db = d.join(&format!("c{i}-metrics.db")).display().to_string();
        Controller::start(
            d.path(),
            Opts {
                store: Some(format!("etcd:{}", etcd.url)),
                node: format!("c{i}"),
                ..opts(&["--metrics-db", &db])
            },
        )
    };
    let mut ctls = vec![start(1), start(2)];
    let leader = wait_for(10, "one leader", || {
        let l: Vec<usize> = (0..2).filter(|&i| ctls[i].leads()).collect();
        (l.len() == 1).then(|| l[0])
    });
    let other = 1 - leader;
    let (page_a, url_a) = Page::start();
    let (page_b, url_b) = Page::start();
    page_a.set(exposition(0.5, 1e11, 0.0));
    page_b.set(exposition(0.5, 1e11, 0.0));
    // Written through the follower: rules and receivers live in etcd, not in one
    // controller.
    register_host(&ctls[other], "h-a", &url_a, 8, 16384);
    register_host(&ctls[other], "h-b", &url_b, 8, 16384);
    block_on(ctls[other].api.create_alert_rule(&rule(
        "mem-high",
        "host.mem_used_bytes",
        RuleKind::Threshold {
            cmp: Cmp::Above,
            value: 0.75,
            ratio_of: Some("host.mem_total_bytes".into()),
        },
        0,
    )))
    .unwrap();
    let (sink, url) = Sink::start(0);
    block_on(
        ctls[other]
            .api
            .create_alert_receiver(&webhook("hook", &url, 3, 100)),
    )
    .unwrap();
    // Both controllers keep the history: the follower is ready to take over.
    for c in &ctls {
        wait_for(
            20,
            "both hosts' memory in each controller's history",
            || {
                let a = block_on(c.api.metric_query(&nova_controller_api::MetricQuery {
                    metric: "host.mem_used_bytes".into(),
                    ..Default::default()
                }))
                .ok()?;
                (a.series.iter().filter(|s| !s.points.is_empty()).count() == 2).then_some(())
            },
        );
    }
    let fired = |target: &str| -> usize {
        sink.of("mem-high", "firing")
            .iter()
            .flat_map(|n| &n.alerts)
            .filter(|a| a.target == target)
            .count()
    };

    // h-a's memory rises: one notification, though two controllers evaluate every
    // 300 ms if both did.
    page_a.set(exposition(0.9, 1e11, 0.0));
    wait_for(20, "h-a's firing notification", || {
        (fired("h-a") >= 1).then_some(())
    });
    // Each evaluation that finds the condition holding counts once on the stored
    // alert: over a span, no more than one evaluator's ticks (300 ms apart, never in
    // bursts) could add; two evaluators would add about twice that.
    let count = || {
        block_on(ctls[other].api.alert("mem-high:h-a"))
            .unwrap()
            .count
    };
    let (c0, t0) = (count(), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (c1, span) = (count(), t0.elapsed());
    let most = span.as_millis() as u64 / 300 + 2;
    assert!(
        c1 - c0 <= most,
        "{} evaluations in {span:?}: more than one controller evaluates",
        c1 - c0
    );
    assert!(c1 > c0, "nobody evaluates");
    assert_eq!(fired("h-a"), 1, "{:?}", sink.notifications());
    assert_eq!(sink.of("mem-high", "firing").len(), 1);
    assert_eq!(
        state_of(&ctls[other], "mem-high:h-a"),
        Some(AlertState::Firing)
    );
    // And the one that sent it is the leader.
    let notified = |c: &Controller| {
        c.log()
            .lines()
            .filter(|l| l.contains("notified") && l.contains("group=mem-high"))
            .count()
    };
    assert_eq!(notified(&ctls[leader]), 1, "{}", ctls[leader].log());
    assert_eq!(notified(&ctls[other]), 0, "{}", ctls[other].log());

    // The leader dies; the other leads, keeps h-a firing without telling it again,
    // and fires h-b once.
    ctls[leader].kill();
    wait_for(10, "the other controller to lead", || {
        ctls[other].leads().then_some(())
    });
    page_b.set(exposition(0.9, 1e11, 0.0));
    wait_for(20, "h-b's firing notification from the new leader", || {
        (fired("h-b") >= 1).then_some(())
    });
    // h-a resolves: told once, by the new leader.
    page_a.set(exposition(0.5, 1e11, 0.0));
    wait_for(20, "h-a's resolved notification", || {
        (!sink.of("mem-high", "resolved").is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(fired("h-a"), 1, "{:?}", sink.notifications());
    assert_eq!(fired("h-b"), 1, "{:?}", sink.notifications());
    assert_eq!(
        sink.of("mem-high", "resolved").len(),
        1,
        "{:?}",
        sink.notifications()
    );
    assert_eq!(sink.of("mem-high", "firing").len(), 2);
    // Both sent by the new leader.
    assert_eq!(notified(&ctls[other]), 2, "{}", ctls[other].log());
    assert_eq!(
        state_of(&ctls[other], "mem-high:h-b"),
        Some(AlertState::Firing)
    );
}

/// Alertmanager's `GET /api/v2/alerts` (the part this test reads).
#[derive(Deserialize, Debug)]
struct AmAlert {
    labels: BTreeMap<String, String>,
    status: AmStatus,
}

#[derive(Deserialize, Debug)]
struct AmStatus {
    state: String,
}

#[test]
fn alerts_are_forwarded_to_a_real_alertmanager_and_resolved_there() {
    if !require(
        which("prometheus-alertmanager"),
        "prometheus-alertmanager (Debian package prometheus-alertmanager)",
    ) {
        return;
    }
    let d = TempDir::new();
    std::fs::write(
        d.join("am.yml"),
        "route:\n  receiver: nobody\n  group_wait: 1s\nreceivers:\n  - name: nobody\n",
    )
    .unwrap();
    let port = free_port();
    let _am = Killed(
        Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", d.join("am.yml").display()))
            .arg(format!("--storage.path={}", d.join("am").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus-alertmanager"),
    );
    let am = nova_http::Client::new(
        &format!("http://127.0.0.1:{port}"),
        None,
        &Default::default(),
    )
    .unwrap();
    wait_for(20, "Alertmanager to answer", || {
        block_on(am.get::<Vec<AmAlert>>("/api/v2/alerts")).ok()
    });

    let c = Controller::start(d.path(), opts(&[]));
    let (page, url) = Page::start();
    page.set(exposition(0.5, 1e11, 0.0));
    register_host(&c, "h-am", &url, 8, 16384);
    block_on(c.api.create_alert_rule(&rule(
        "mem-high",
        "host.mem_used_bytes",
        RuleKind::Threshold {
            cmp: Cmp::Above,
            value: 0.75,
            ratio_of: Some("host.mem_total_bytes".into()),
        },
        0,
    )))
    .unwrap();
    block_on(c.api.create_alert_receiver(&Receiver {
        id: "am".into(),
        channel: ReceiverKind::Alertmanager {
            url: format!("http://127.0.0.1:{port}"),
        },
        min_severity: None,
        max_attempts: 3,
        backoff_ms: 100,
    }))
    .unwrap();
    page.set(exposition(0.9, 1e11, 0.0));
    let got = wait_for(30, "the alert in Alertmanager", || {
        block_on(am.get::<Vec<AmAlert>>("/api/v2/alerts"))
            .ok()?
            .into_iter()
            .find(|a| a.labels.get("alertname").map(String::as_str) == Some("mem-high"))
    });
    assert_eq!(got.status.state, "active");
    assert_eq!(got.labels.get("target").map(String::as_str), Some("h-am"));
    assert_eq!(
        got.labels.get("severity").map(String::as_str),
        Some("warning")
    );

    page.set(exposition(0.5, 1e11, 0.0));
    wait_for(30, "Alertmanager to see it resolved", || {
        let all = block_on(am.get::<Vec<AmAlert>>("/api/v2/alerts?active=true")).ok()?;
        (!all
            .iter()
            .any(|a| a.labels.get("alertname").map(String::as_str) == Some("mem-high")))
        .then_some(())
    });
}
