//! bench-metrics: the cost of the controller's metric history. Simulated hostd
//! expositions (the names, labels and per-VM series hostd serves, values moving like
//! a live host's) are turned into samples and stored exactly as the scrape loop does
//! (`monitoring::scrape::host_samples` + `history::tsdb::Tsdb::ingest`, one thread),
//! for `--hosts` x `--vms` over `--scrapes` 10 s scrapes; then the alert rules'
//! reads: a day of one VM's CPU queried from a store holding that day. Prometheus'
//! bytes per sample on the same data (`promtool tsdb create-blocks-from openmetrics`)
//! are measured in the same run. Writes docs/benchmarks/metrics.{json,md}.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use nova_benches::write_report;
use nova_controller::history::tsdb::{Key, Tsdb, DEFAULT_TIERS};
use nova_controller::monitoring::scrape::{host_samples, Rates};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// Simulated hosts.
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    /// VMs per host.
    #[arg(long, default_value_t = 100)]
    vms: usize,
    /// Scrapes (10 s apart) of every host to ingest and time (40: the committed
    /// figures' data, so `make bench-metrics` reproduces them).
    #[arg(long, default_value_t = 40)]
    scrapes: u64,
    /// Queries of a day of one VM's CPU.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
}

/// A small deterministic generator, so every run sees the same data.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn unit(&mut self) -> f64 {
        (self.next() % 1_000_000) as f64 / 1_000_000.0
    }
}

/// One simulated host's counters and gauges, moved on by each scrape.
struct Host {
    id: String,
    cpu: f64,
    vms: Vec<Vm>,
}

struct Vm {
    id: String,
    cpu: f64,
    rss: f64,
    disk_r: f64,
    disk_w: f64,
    rx: f64,
    tx: f64,
    exits: f64,
}

impl Host {
    fn new(i: usize, vms: usize, rng: &mut Lcg) -> Host {
        Host {
            id: format!("host-{i:03}"),
            cpu: 0.0,
            vms: (0..vms)
                .map(|j| Vm {
                    id: format!("vm-{i:03}-{j:03}"),
                    cpu: 0.0,
                    rss: (64 + rng.next() % 1024) as f64 * 1048576.0,
                    disk_r: 0.0,
                    disk_w: 0.0,
                    rx: 0.0,
                    tx: 0.0,
                    exits: 0.0,
                })
                .collect(),
        }
    }

    /// Ten seconds later: what hostd's /metrics would say.
    fn page(&mut self, rng: &mut Lcg) -> String {
        let mut s = String::with_capacity(256 * self.vms.len());
        self.cpu += 10.0 * (4.0 + 4.0 * rng.unit());
        s.push_str(&format!(
            "# TYPE nova_host_cpu_seconds counter\nnova_host_cpu_seconds_total {}\n\
             # TYPE nova_host_memory_bytes gauge\nnova_host_memory_bytes 274877906944\n\
             # TYPE nova_host_memory_available_bytes gauge\nnova_host_memory_available_bytes {}\n\
             # TYPE nova_host_cores gauge\nnova_host_cores 64\n\
             # TYPE nova_host_disk_size_bytes gauge\nnova_host_disk_size_bytes 4000000000000\n\
             # TYPE nova_host_disk_free_bytes gauge\nnova_host_disk_free_bytes {}\n\
             # TYPE nova_host_vms gauge\nnova_host_vms {}\n",
            self.cpu,
            (100.0 + 20.0 * rng.unit()) * 1073741824.0,
            2e12 + 1e9 * rng.unit(),
            self.vms.len()
        ));
        let fam = |s: &mut String, name: &str, kind: &str| {
            s.push_str(&format!("# TYPE {name} {kind}\n"));
        };
        fam(&mut s, "nova_vm_process_cpu_seconds", "counter");
        for v in &mut self.vms {
            v.cpu += 10.0 * 0.3 * rng.unit();
            s.push_str(&format!(
                "nova_vm_process_cpu_seconds_total{{vm=\"{}\"}} {}\n",
                v.id, v.cpu
            ));
        }
        fam(&mut s, "nova_vm_guest_resident_bytes", "gauge");
        for v in &mut self.vms {
            v.rss += (rng.unit() - 0.5) * 1048576.0;
            s.push_str(&format!(
                "nova_vm_guest_resident_bytes{{vm=\"{}\"}} {}\n",
                v.id,
                v.rss.round()
            ));
        }
        fam(&mut s, "nova_vm_memory_bytes", "gauge");
        for v in &self.vms {
            s.push_str(&format!(
                "nova_vm_memory_bytes{{vm=\"{}\"}} 2147483648\n",
                v.id
            ));
        }
        for (name, dev) in [
            ("nova_vm_disk_read_bytes", "disk"),
            ("nova_vm_disk_written_bytes", "disk"),
            ("nova_vm_net_receive_bytes", "nic"),
            ("nova_vm_net_transmit_bytes", "nic"),
        ] {
            fam(&mut s, name, "counter");
            for v in &mut self.vms {
                let c = match name {
                    "nova_vm_disk_read_bytes" => &mut v.disk_r,
                    "nova_vm_disk_written_bytes" => &mut v.disk_w,
                    "nova_vm_net_receive_bytes" => &mut v.rx,
                    _ => &mut v.tx,
                };
                *c += (10.0 * 1e5 * rng.unit()).round();
                s.push_str(&format!(
                    "{name}_total{{vm=\"{}\",{dev}=\"0\"}} {}\n",
                    v.id, c
                ));
            }
        }
        fam(&mut s, "nova_vm_vcpu_exits", "counter");
        for v in &mut self.vms {
            v.exits += (10.0 * 2000.0 * rng.unit()).round();
            s.push_str(&format!(
                "nova_vm_vcpu_exits_total{{vm=\"{}\"}} {}\n",
                v.id, v.exits
            ));
        }
        fam(&mut s, "nova_vm_restarts", "counter");
        fam(&mut s, "nova_vm_state", "gauge");
        for v in &self.vms {
            s.push_str(&format!("nova_vm_restarts_total{{vm=\"{}\"}} 0\n", v.id));
            for st in ["running", "stopped", "crashed"] {
                let on = if st == "running" { 1 } else { 0 };
                s.push_str(&format!(
                    "nova_vm_state{{vm=\"{}\",state=\"{st}\"}} {on}\n",
                    v.id
                ));
            }
        }
        s
    }
}

#[derive(Serialize)]
struct Report {
    hosts: usize,
    vms_per_host: usize,
    scrapes: u64,
    samples: u64,
    series: usize,
    samples_per_s_one_core: f64,
    parse_share: f64,
    /// Chunk bytes of the 10 s tier per point it holds.
    bytes_per_sample_tier0: f64,
    /// Chunk bytes of every tier (10 s, 5 min, 1 h) per sample ingested.
    bytes_per_sample_all_tiers: f64,
    bytes_per_sample_5m: Option<f64>,
    sqlite_file_bytes_per_sample: f64,
    /// Prometheus' whole block (chunks, index, metadata) per sample.
    prometheus_bytes_per_sample: Option<f64>,
    /// Prometheus' chunk files alone per sample.
    prometheus_chunk_bytes_per_sample: Option<f64>,
    query_day_points: usize,
    query_p50_ms: f64,
    query_p99_ms: f64,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Prometheus' TSDB bytes per sample on the OpenMetrics text in `file`: the whole
/// block's, and its chunk files' alone.
fn prometheus_bytes(file: &Path, dir: &Path, samples: u64) -> Option<(f64, f64)> {
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(file)
        .arg(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("promtool: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let (mut bytes, mut chunks) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let m = e.metadata().ok()?;
            if m.is_dir() {
                stack.push(e.path());
            } else {
                bytes += m.len();
                if d.file_name().is_some_and(|n| n == "chunks") {
                    chunks += m.len();
                }
            }
        }
    }
    Some((
        bytes as f64 / samples as f64,
        chunks as f64 / samples as f64,
    ))
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let tmp = std::env::temp_dir().join(format!("bench-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let mut rng = Lcg(7);
    let mut hosts: Vec<Host> = (0..a.hosts)
        .map(|i| Host::new(i, a.vms, &mut rng))
        .collect();
    let db = Tsdb::open(&tmp.join("metrics.db"), &DEFAULT_TIERS, 10_000_000)?;
    let tenants: HashMap<String, String> = HashMap::new();
    let mut rates = Rates::default();
    // The stored samples, as OpenMetrics with timestamps, for Prometheus.
    let mut om = std::io::BufWriter::new(std::fs::File::create(tmp.join("samples.om"))?);
    let t0 = 1_700_000_000u64;
    let (mut samples, mut busy, mut parse) = (0u64, 0f64, 0f64);
    for k in 0..a.scrapes {
        let t = t0 + 10 * k;
        let pages: Vec<(String, String)> = hosts
            .iter_mut()
            .map(|h| (h.id.clone(), h.page(&mut rng)))
            .collect();
        let started = Instant::now();
        let mut batch = vec![];
        for (id, text) in &pages {
            batch.extend(host_samples(id, text, t, &tenants, &mut rates));
        }
        let parsed = started.elapsed().as_secs_f64();
        let refs: Vec<(Key, &str, f64)> = batch
            .iter()
            .map(|(k, ten, v)| (k.clone(), ten.as_str(), *v))
            .collect();
        db.ingest(t, &refs)?;
        busy += started.elapsed().as_secs_f64();
        parse += parsed;
        samples += batch.len() as u64;
        for (k, _, v) in &batch {
            let name = k.metric.replace('.', "_");
            writeln!(om, "nova_{name}{{target=\"{}\"}} {v} {t}", k.target)?;
        }
    }
    writeln!(om, "# EOF")?;
    om.flush()?;
    drop(om);
    let started = Instant::now();
    db.checkpoint()?;
    busy += started.elapsed().as_secs_f64();
    let (b0, n0) = db.chunk_bytes(0)?;
    let (b1, n1) = db.chunk_bytes(1)?;
    let (b2, _) = db.chunk_bytes(2)?;
    let prom = prometheus_bytes(&tmp.join("samples.om"), &tmp.join("prom"), samples);

    // A day of one VM's CPU (and its host's other series), then queries of it.
    let day = Tsdb::open(&tmp.join("day.db"), &DEFAULT_TIERS, 100_000)?;
    let mut one = Host::new(0, 1, &mut rng);
    let mut day_rates = Rates::default();
    for k in 0..8640u64 {
        let t = t0 + 10 * k;
        let page = one.page(&mut rng);
        let s = host_samples(&one.id, &page, t, &tenants, &mut day_rates);
        let refs: Vec<(Key, &str, f64)> = s
            .iter()
            .map(|(k, ten, v)| (k.clone(), ten.as_str(), *v))
            .collect();
        day.ingest(t, &refs)?;
    }
    day.checkpoint()?;
    let end = t0 + 10 * 8639;
    let mut lat = vec![];
    let mut points = 0;
    for _ in 0..a.queries {
        let q = Instant::now();
        let (_, found) = day.query(
            "vm.cpu",
            Some("vm-000-000"),
            end - 86_400,
            end,
            end,
            &|_| true,
        )?;
        lat.push(q.elapsed().as_secs_f64() * 1000.0);
        points = found.first().map_or(0, |f| f.points.len());
    }
    let r = Report {
        hosts: a.hosts,
        vms_per_host: a.vms,
        scrapes: a.scrapes,
        samples,
        series: db.series_count(),
        samples_per_s_one_core: samples as f64 / busy,
        parse_share: parse / busy,
        bytes_per_sample_tier0: b0 as f64 / n0.max(1) as f64,
        bytes_per_sample_all_tiers: (b0 + b1 + b2) as f64 / samples.max(1) as f64,
        bytes_per_sample_5m: (n1 > 0).then(|| b1 as f64 / n1 as f64),
        sqlite_file_bytes_per_sample: db.bytes()? as f64 / samples as f64,
        prometheus_bytes_per_sample: prom.map(|p| p.0),
        prometheus_chunk_bytes_per_sample: prom.map(|p| p.1),
        query_day_points: points,
        query_p50_ms: percentile(&mut lat, 0.5),
        query_p99_ms: percentile(&mut lat, 0.99),
    };
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let md = format!(
        "# Metric history cost\n\n\
         Command: `bench-metrics --hosts {} --vms {} --scrapes {}` (release build; `make bench-metrics`).\n\n\
         Simulated hostd expositions (hostd's names and labels, counters and gauges moving like a live host's) are \
         parsed, mapped and stored as the controller's scrape loop does, on one thread; the same samples are written \
         as OpenMetrics and turned into a Prometheus TSDB block by `promtool tsdb create-blocks-from openmetrics` in the \
         same run. The query reads a day of one VM's CPU (8,640 points at 10 s) from a store that holds that day.\n\n\
         | figure | NovaCron | Prometheus | ratio |\n|---|---|---|---|\n\
         | samples ingested per second, one core (parse + store) | {:.0} | - | - |\n\
         | share of that time parsing the exposition | {:.0} % | - | - |\n\
         | bytes per sample, 10 s tier (compressed chunks; Prometheus: its chunk files) | {:.2} | {} | {} |\n\
         | bytes per ingested sample, compressed chunks of all tiers (10 s, 5 min, 1 h) | {:.2} | - | - |\n\
         | bytes per sample, whole store (SQLite pages in use; Prometheus: whole block) | {:.2} | {} | {} |\n\
         | bytes per point, 5 min tier | {} | - | - |\n\
         | query: a day of one VM's CPU, p50 / p99 ms | {:.2} / {:.2} | - | - |\n\n\
         {} samples over {} series, {} scrapes each: a chunk holds those {} points, so its fixed cost \
         (a few bytes: codec 1 stores no start time, no raw first value, no end marker) is spread over \
         few of them. Targets: >= 50,000 samples/s on one core, <= 2 bytes per sample after downsampling, \
         query p99 < 50 ms. The whole-store figures carry every series' name and index on both sides, \
         which {} samples per series cannot amortise; Prometheus keeps \
         full float64 values where NovaCron keeps 12 bits of mantissa.\n",
        r.hosts,
        r.vms_per_host,
        r.scrapes,
        r.samples_per_s_one_core,
        100.0 * r.parse_share,
        r.bytes_per_sample_tier0,
        fmt(r.prometheus_chunk_bytes_per_sample),
        fmt(r.prometheus_chunk_bytes_per_sample.map(|p| r.bytes_per_sample_tier0 / p)),
        r.bytes_per_sample_all_tiers,
        r.sqlite_file_bytes_per_sample,
        fmt(r.prometheus_bytes_per_sample),
        fmt(r.prometheus_bytes_per_sample.map(|p| r.sqlite_file_bytes_per_sample / p)),
        fmt(r.bytes_per_sample_5m),
        r.query_p50_ms,
        r.query_p99_ms,
        r.samples,
        r.series,
        r.scrapes,
        r.scrapes,
        r.scrapes,
    );
    write_report(&a.out, "metrics", &r, &md)?;
    print!("{md}");
    std::fs::remove_dir_all(&tmp).ok();
    Ok(())
}
