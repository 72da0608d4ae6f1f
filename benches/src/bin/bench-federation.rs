//! bench-federation: a federated list (`GET /v1/vms?scope=federation`) of 10,000 VMs
//! spread over three peered controllers on loopback, latency as the client sees it
//! (p50, p99, max), beside the same client listing one cluster's own share with
//! plain `GET /v1/vms` (every page); then cross-cluster live migration beside
//! intra-cluster on the same 100 Mbit/s link ([`migration`]: pause and total, the
//! same guest, medians of 3 runs). Writes docs/benchmarks/federation.{json,md}.
//! It is over 500 lines: both benchmarks write one report (migration: own module).

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
    /// Migrations measured each way (cross- and intra-cluster); 0 skips them (they
    /// need root, network namespaces, tc and /dev/kvm, and the release nova-hostd,
    /// nova-vmm and nova-controller in NOVA_BIN_DIR).
    #[arg(long, default_value_t = 3)]
    migration_runs: usize,
    /// The link's rate between the hosts (tc tbf), Mbit/s.
    #[arg(long, default_value_t = 100)]
    link_mbit: u64,
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
    let mut md = String::from(
        "# Federation: federated lists, cross-cluster migration\n\n## Federated list latency\n\n",
    );
    md += &format!(
        "Command: `{command}` (release build; `make bench-federation`). Three controllers \
         (SQLite each) peered on loopback on this machine's {cores} cores; the client, the \
         three controllers and the JSON of every VM share them. A federated list is the \
         asking controller's own VMs plus each peer's, asked of every peer in parallel \
         with a federated token per peer (one request and one body per peer, over the \
         pooled keep-alive connection), this cluster's own read meanwhile. Each \
         controller keeps its VMs' JSON per store revision: a list reads the VMs' keys \
         and revisions from the store's index and decodes and encodes only the VMs \
         that changed. A peer's answer is checked (every item its own, a JSON object) \
         and its items passed on as the bytes they came as. The time is the client's: \
         request to the whole body decoded, every VM typed.\n\n"
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
        migration: None,
    };
    drop(procs);
    let mut json = json;
    if a.migration_runs > 0 {
        let m = migration::run(&root, a.migration_runs, a.link_mbit)?;
        md += &m.markdown();
        json.migration = Some(m);
    }
    write_report(&a.out, "federation", &json, &md)?;
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
    /// Cross-cluster beside intra-cluster live migration (absent when skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    migration: Option<migration::Report>,
}

/// One list's latency over its requests.
#[derive(Serialize)]
struct Latency {
    vms: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Cross-cluster live migration beside intra-cluster, on the same link: two hosts in
/// network namespaces on one bridge shaped by `tc tbf`; intra-cluster, one
/// controller has both; cross-cluster, alpha has one and beta (its peer) the
/// other. The same guest (the test guest's counter plus 16 MiB rewritten at
/// 4 MiB/s, 64 MiB) and the same policy (zstd, the VMM's default mode and
/// downtime target) each time; each run migrates a freshly booted VM.
mod migration {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context};
    use nova_controller_api::{
        Compression, ControllerClient, HostState, IdentityPatch, JoinRequest, MigrateBody,
        MigrationParams, MigrationPolicy, MigrationResult, OpState, PeerPolicy, Role, TrustPolicy,
        TrustRule, VmSpec,
    };
    use nova_http::blocking::block_on;
    use nova_tests::controller::{Controller, Opts};
    use nova_tests::hostd::{testguest, Bridged, Hostd};
    use nova_tests::wait_for;
    use serde::Serialize;

    /// One way of migrating, over its runs.
    #[derive(Serialize)]
    pub struct Row {
        pub runs: usize,
        /// The pause the VMM measured (source vCPUs stopped to destination running), ms.
        pub pause_ms: Vec<f64>,
        /// The VMM's whole migration, ms.
        pub total_ms: Vec<f64>,
        /// From `POST /v1/vms/{id}/migrate` to the operation's end as the client saw
        /// it (admission, preparation, stream, adoption), ms.
        pub operation_ms: Vec<f64>,
        pub pause_median_ms: f64,
        pub total_median_ms: f64,
        pub operation_median_ms: f64,
    }

    /// `migration` in docs/benchmarks/federation.json.
    #[derive(Serialize)]
    pub struct Report {
        pub link_mbit: u64,
        pub guest: String,
        pub intra_cluster: Row,
        pub cross_cluster: Row,
        pub ratio_pause: f64,
        pub ratio_total: f64,
        pub ratio_operation: f64,
    }

    impl Report {
        pub fn markdown(&self) -> String {
            let mut md = String::from(
                "\n## Cross-cluster live migration beside intra-cluster, same link\n\n",
            );
            md += &format!(
                "Two hosts in network namespaces on one bridge, each way shaped to {} Mbit/s \
                 by `tc qdisc ... tbf`; intra-cluster, one controller has both hosts; \
                 cross-cluster, alpha has one and its peer beta the other, and `POST \
                 /v1/vms/{{id}}/migrate` names `cluster: beta` (beta admits the VM, the source \
                 hostd prepares beta's host through beta's gateway, beta adopts it). Guest: \
                 {}. Policy: zstd, the VMM's default mode (hybrid) and downtime target, no \
                 cap. Medians of {} runs, each a freshly booted VM; TLS between the VMMs \
                 with the destination's per-migration credential.\n\n",
                self.link_mbit, self.guest, self.intra_cluster.runs
            );
            md += "| migration | runs | pause ms | VMM total ms | operation ms |\n|---|---|---|---|---|\n";
            for (name, r) in [
                (
                    "intra-cluster (host to host, one controller)",
                    &self.intra_cluster,
                ),
                ("cross-cluster (alpha to beta)", &self.cross_cluster),
            ] {
                md += &format!(
                    "| {name} | {} | {:.2} | {:.1} | {:.1} |\n",
                    r.runs, r.pause_median_ms, r.total_median_ms, r.operation_median_ms
                );
            }
            md += &format!(
                "\nRatio cross / intra: pause {:.2}, VMM total {:.2}, operation {:.2}. \
                 Pause is what the VMM measured; the operation adds the controllers' \
                 work (admission and adoption by beta, 200 ms progress polls).\n",
                self.ratio_pause, self.ratio_total, self.ratio_operation
            );
            md
        }
    }

    fn median(v: &[f64]) -> f64 {
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }

    const WORKLOAD: &str = "counter,dirty:16:4";

    fn guest(name: &str) -> VmSpec {
        VmSpec {
            mem_mib: 64,
            cmdline: Some(format!("nova.workload={WORKLOAD}")),
            ..VmSpec::new(name, testguest().display().to_string())
        }
    }

    fn policy() -> MigrationPolicy {
        MigrationPolicy {
            completion_timeout_s: 120,
            params: MigrationParams {
                compress: Compression::Zstd,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn shape(net: &Bridged, mbit: u64) -> anyhow::Result<()> {
        for (ns, dev) in net.ns.iter().zip(&net.dev) {
            let rate = format!("{mbit}mbit");
            let out = ns.run(&[
                "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", "128kb",
                "latency", "100ms",
            ]);
            if !out.status.success() {
                bail!("tc tbf: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(())
    }

    fn joining(c: &Controller) -> Vec<String> {
        vec![
            "--controller".into(),
            c.url.clone(),
            "--join-token-file".into(),
            c.dir.join("join.token").display().to_string(),
        ]
    }

    fn wait_ready(c: &Controller, n: usize) {
        wait_for(30, "hosts to register", || {
            let ready = block_on(c.api.hosts())
                .ok()?
                .iter()
                .filter(|h| h.state == HostState::Ready)
                .count();
            (ready == n).then_some(())
        });
    }

    fn controller(dir: &Path, net: &Bridged) -> anyhow::Result<Controller> {
        std::fs::create_dir_all(dir)?;
        Ok(Controller::start(
            dir,
            Opts {
                ip: Some(net.root_ip()),
                args: vec!["--insecure-http".into()],
                ..Default::default()
            },
        ))
    }

    /// Boots a VM in `api`'s cluster, waits for its dirtier's first whole pass on
    /// whichever of `hosts` runs it, migrates it with `body`; answers (pause,
    /// total, operation) in ms and the VM's id.
    fn one(
        api: &ControllerClient,
        hosts: &[(&Hostd, String)],
        name: &str,
        body: &MigrateBody,
    ) -> anyhow::Result<(f64, f64, f64, String)> {
        let vm = block_on(api.create_vm(&guest(name), None))?;
        let placed = wait_for(60, "the VM to run", || {
            let v = block_on(api.vm(&vm.id)).ok()?;
            v.observed
                .as_ref()
                .filter(|o| o.state == "running")
                .and(v.host.clone())
        });
        let (h, _) = hosts
            .iter()
            .find(|(_, id)| *id == placed)
            .context("the VM runs on neither host")?;
        h.wait_console(&vm.id, "NOVA-DIRTY", Duration::from_secs(60));
        let t = Instant::now();
        let op = block_on(api.migrate_vm(&vm.id, body))?;
        let done = loop {
            let o = block_on(api.operation(&op.id))?;
            if o.state.is_final() {
                break o;
            }
            if t.elapsed() > Duration::from_secs(180) {
                bail!("migration {} did not end in 180 s", op.id);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let op_ms = t.elapsed().as_secs_f64() * 1e3;
        if done.state != OpState::Succeeded {
            bail!("migration {} {:?}: {}", op.id, done.state, done.message);
        }
        let r: MigrationResult = serde_json::from_value(done.result)?;
        Ok((
            r.downtime_ms.context("no downtime")?,
            r.total_ms.context("no total")?,
            op_ms,
            vm.id,
        ))
    }

    fn row(samples: Vec<(f64, f64, f64)>) -> Row {
        let pause: Vec<f64> = samples.iter().map(|s| s.0).collect();
        let total: Vec<f64> = samples.iter().map(|s| s.1).collect();
        let op: Vec<f64> = samples.iter().map(|s| s.2).collect();
        Row {
            runs: samples.len(),
            pause_median_ms: median(&pause),
            total_median_ms: median(&total),
            operation_median_ms: median(&op),
            pause_ms: pause,
            total_ms: total,
            operation_ms: op,
        }
    }

    fn intra(dir: &Path, runs: usize, mbit: u64) -> anyhow::Result<Row> {
        let net = Bridged::new();
        shape(&net, mbit)?;
        let c = controller(&dir.join("solo"), &net)?;
        let hosts = [net.hostd(0, &joining(&c)), net.hostd(1, &joining(&c))];
        wait_ready(&c, 2);
        block_on(c.api.set_migration_policy(&policy()))?;
        let ids: Vec<(&Hostd, String)> = hosts
            .iter()
            .map(|h| (h, h.ok(h.api().host()).host_id))
            .collect();
        let mut samples = Vec::new();
        for i in 0..runs {
            let (p, t, o, id) = one(&c.api, &ids, &format!("intra-{i}"), &MigrateBody::default())?;
            println!(
                "intra-cluster run {i}: pause {p:.2} ms, total {t:.1} ms, operation {o:.1} ms"
            );
            samples.push((p, t, o));
            block_on(c.api.delete_vm(&id))?;
            wait_for(30, "the VM to go", || {
                block_on(c.api.vm(&id)).is_err().then_some(())
            });
        }
        Ok(row(samples))
    }

    fn cross(dir: &Path, runs: usize, mbit: u64) -> anyhow::Result<Row> {
        let net = Bridged::new();
        shape(&net, mbit)?;
        let alpha = controller(&dir.join("m-alpha"), &net)?;
        let beta = controller(&dir.join("m-beta"), &net)?;
        let hosts = [
            net.hostd(0, &joining(&alpha)),
            net.hostd(1, &joining(&beta)),
        ];
        wait_ready(&alpha, 1);
        wait_ready(&beta, 1);
        for (c, name) in [(&alpha, "alpha"), (&beta, "beta")] {
            block_on(c.api.set_identity(&IdentityPatch {
                name: Some(name.into()),
                region: None,
            }))?;
        }
        block_on(alpha.api.join_federation(&JoinRequest {
            peer_url: beta.url.clone(),
            peer_token: beta.admin.clone(),
            self_url: alpha.url.clone(),
            trust: TrustPolicy::default(),
            placement: true,
        }))?;
        let alpha_id = block_on(alpha.api.federation())?.cluster.cluster_id;
        block_on(beta.api.set_peer_policy(
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
        block_on(beta.api.import_image(&testguest().display().to_string()))?;
        block_on(alpha.api.set_migration_policy(&policy()))?;
        let src = [(&hosts[0], hosts[0].ok(hosts[0].api().host()).host_id)];
        let body = MigrateBody {
            cluster: Some("beta".into()),
            ..Default::default()
        };
        let mut samples = Vec::new();
        for i in 0..runs {
            let (p, t, o, id) = one(&alpha.api, &src, &format!("cross-{i}"), &body)?;
            println!(
                "cross-cluster run {i}: pause {p:.2} ms, total {t:.1} ms, operation {o:.1} ms"
            );
            samples.push((p, t, o));
            block_on(beta.api.delete_vm(&id))?;
            wait_for(30, "the VM to go", || {
                block_on(beta.api.vm(&id)).is_err().then_some(())
            });
        }
        Ok(row(samples))
    }

    pub fn run(dir: &Path, runs: usize, mbit: u64) -> anyhow::Result<Report> {
        let intra_cluster = intra(dir, runs, mbit)?;
        let cross_cluster = cross(dir, runs, mbit)?;
        Ok(Report {
            link_mbit: mbit,
            guest: format!("test guest, 64 MiB, 1 vCPU, nova.workload={WORKLOAD}"),
            ratio_pause: cross_cluster.pause_median_ms / intra_cluster.pause_median_ms,
            ratio_total: cross_cluster.total_median_ms / intra_cluster.total_median_ms,
            ratio_operation: cross_cluster.operation_median_ms / intra_cluster.operation_median_ms,
            intra_cluster,
            cross_cluster,
        })
    }
}
