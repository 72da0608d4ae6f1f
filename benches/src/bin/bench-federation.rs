//! bench-federation: a federated list (`GET /v1/vms?scope=federation`) of 10,000 VMs
//! spread over three peered controllers on loopback, latency as the client sees it
//! (p50, p99, max), beside the same client listing one cluster's own share with
//! plain `GET /v1/vms` (every page). Writes docs/benchmarks/federation.{json,md}.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use nova_benches::write_report;
use nova_controller_api::{
    ControllerClient, IdentityPatch, JoinRequest, PeerPolicy, Role, TrustPolicy, TrustRule, Vm,
    VmSpec,
};
use nova_http::blocking::block_on;
use nova_tests::{free_port, wait_for};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// The nova-controller binary (release build).
    #[arg(
        long,
        default_value = "target/x86_64-unknown-linux-gnu/release/nova-controller"
    )]
    controller: PathBuf,
    /// VMs in the whole federation.
    #[arg(long, default_value_t = 10_000)]
    vms: usize,
    /// Federated lists measured (after 5 unmeasured ones).
    #[arg(long, default_value_t = 200)]
    requests: usize,
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_controller(bin: &Path, dir: &Path) -> anyhow::Result<(Proc, ControllerClient)> {
    std::fs::create_dir_all(dir)?;
    let port = free_port();
    let child = Command::new(bin)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--store")
        .arg(format!("sqlite:{}", dir.join("controller.db").display()))
        .arg("--admin-token-file")
        .arg(dir.join("admin.token"))
        .arg("--join-token-file")
        .arg(dir.join("join.token"))
        .args(["--insecure-http", "--max-vms-per-tenant", "1000000"])
        // No hosts: the loops have nothing to do; this measures the API.
        .args(["--reconcile-interval-ms", "3600000"])
        .env("NOVA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nova-controller")?;
    let proc = Proc(child);
    let url = format!("http://127.0.0.1:{port}");
    let anonymous = ControllerClient::new(&url, None, &Default::default())?;
    wait_for(20, "the controller to answer", || {
        block_on(anonymous.health()).ok()
    });
    let token = wait_for(10, "the admin token", || {
        std::fs::read_to_string(dir.join("admin.token")).ok()
    });
    Ok((proc, anonymous.with_token(token.trim())?))
}

/// Creates `n` stopped VMs in `api`'s cluster, one after another.
fn fill(api: &ControllerClient, prefix: &str, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        let spec = VmSpec {
            start: false,
            ..VmSpec::new(format!("{prefix}-{i}"), "/k")
        };
        block_on(api.create_vm(&spec, None))?;
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Latencies (ms) of `n` calls of `f`, sorted.
fn measure<T>(n: usize, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<Vec<f64>> {
    for _ in 0..5 {
        f()?;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v)
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let root = std::env::temp_dir().join(format!("nova-bench-federation-{}", std::process::id()));
    let mut procs = Vec::new();
    let mut apis = Vec::new();
    let dirs: Vec<PathBuf> = ["alpha", "beta", "gamma"]
        .iter()
        .map(|n| root.join(n))
        .collect();
    for (name, dir) in ["alpha", "beta", "gamma"].iter().zip(&dirs) {
        let (p, api) = start_controller(&a.controller, dir)?;
        block_on(api.set_identity(&IdentityPatch {
            name: Some(name.to_string()),
            region: None,
        }))?;
        procs.push(p);
        apis.push(api);
    }
    let alpha_id = block_on(apis[0].federation())?.cluster.cluster_id;
    for (peer, dir) in apis[1..].iter().zip(&dirs[1..]) {
        let token = std::fs::read_to_string(dir.join("admin.token"))?
            .trim()
            .to_string();
        block_on(apis[0].join_federation(&JoinRequest {
            peer_url: peer.url().to_string(),
            peer_token: token,
            self_url: apis[0].url().to_string(),
            trust: TrustPolicy::default(),
            placement: true,
        }))?;
        block_on(peer.set_peer_policy(
            &alpha_id,
            &PeerPolicy {
                trust: TrustPolicy {
                    rules: vec![TrustRule {
                        remote_tenant: "system".into(),
                        local_tenant: None,
                        roles: vec![Role::Admin],
                    }],
                },
                placement: true,
            },
        ))?;
    }
    let share = a.vms / 3;
    let started = Instant::now();
    std::thread::scope(|s| {
        let fills: Vec<_> = apis
            .iter()
            .enumerate()
            .map(|(i, api)| {
                let n = if i == 0 { a.vms - 2 * share } else { share };
                s.spawn(move || fill(api, &format!("vm{i}"), n))
            })
            .collect();
        fills
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("a fill panicked"))?)
    })?;
    println!(
        "{} VMs created in {:.1} s",
        a.vms,
        started.elapsed().as_secs_f64()
    );

    let fed = measure(a.requests, || {
        let l = block_on(apis[0].federated::<Vm>("/v1/vms", Some(5000)))?;
        if l.partial || l.items.len() != a.vms {
            bail!(
                "{} items, partial {}: {:?}",
                l.items.len(),
                l.partial,
                l.clusters
            );
        }
        Ok(())
    })?;
    let local_n = a.vms - 2 * share;
    let local = measure(a.requests, || {
        let v = block_on(apis[0].vms())?;
        if v.len() != local_n {
            bail!("{} VMs, not {local_n}", v.len());
        }
        Ok(())
    })?;
    let row = |v: &[f64]| {
        (
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.last().copied().unwrap_or(f64::NAN),
        )
    };
    let (f50, f99, fmax) = row(&fed);
    let (l50, l99, lmax) = row(&local);
    println!(
        "federated {} VMs: p50 {f50:.1} ms, p99 {f99:.1} ms, max {fmax:.1} ms",
        a.vms
    );
    println!("one cluster's {local_n} VMs: p50 {l50:.1} ms, p99 {l99:.1} ms, max {lmax:.1} ms");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut md = String::from("# Federated list latency\n\n");
    md += &format!(
        "Command: `{command}` (release build; `make bench-federation`). Three controllers \
         (SQLite each) peered on loopback on this machine's {cores} cores; the client, the \
         three controllers and the JSON of every VM share them. A federated list is the \
         asking controller's own VMs plus each peer's, fetched in parallel (1,000 a page) \
         with a federated token per peer, then answered as one body.\n\n"
    );
    md += "| request | VMs | runs | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n";
    md += &format!(
        "| `GET /v1/vms?scope=federation` (3 clusters) | {} | {} | {f50:.1} | {f99:.1} | {fmax:.1} |\n",
        a.vms, a.requests
    );
    md += &format!(
        "| `GET /v1/vms`, every page (one cluster) | {local_n} | {} | {l50:.1} | {l99:.1} | {lmax:.1} |\n",
        a.requests
    );
    md += &format!(
        "\nRatio federated / one cluster's share: p50 {:.2}, p99 {:.2}. Target: p99 < 50 ms.\n",
        f50 / l50,
        f99 / l99
    );
    md += &format!(
        "\nLoad average when the run ended: {} (other work shared the machine).\n",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let json = Report {
        command,
        cores,
        vms: a.vms,
        requests: a.requests,
        federated: Latency {
            vms: a.vms,
            p50_ms: f50,
            p99_ms: f99,
            max_ms: fmax,
        },
        one_cluster: Latency {
            vms: local_n,
            p50_ms: l50,
            p99_ms: l99,
            max_ms: lmax,
        },
        ratio_p50: f50 / l50,
        ratio_p99: f99 / l99,
        target_federated_p99_ms: 50.0,
        loadavg: load.trim().to_string(),
    };
    write_report(&a.out, "federation", &json, &md)?;
    drop(procs);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// `docs/benchmarks/federation.json`.
#[derive(Serialize)]
struct Report {
    command: String,
    cores: usize,
    vms: usize,
    requests: usize,
    federated: Latency,
    one_cluster: Latency,
    ratio_p50: f64,
    ratio_p99: f64,
    target_federated_p99_ms: f64,
    loadavg: String,
}

/// One list's latency over its requests.
#[derive(Serialize)]
struct Latency {
    vms: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}
