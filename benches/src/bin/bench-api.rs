//! bench-api: the controller's API throughput and latency under `wrk` on loopback,
//! reads (`GET /v1/vms/{id}`) and writes (`POST /v1/vms`), on the SQLite and the etcd
//! backends. Each write is four stored writes: the VM's name claim and record (each a
//! compare-and-swap), its `vm.created` event and the audit entry.
//! Writes docs/benchmarks/api.{json,md}.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};
use clap::Parser;
use nova_benches::write_report;
use nova_controller_api::{ControllerClient, VmSpec};
use nova_http::blocking::block_on;
use nova_tests::etcd::Etcd;
use nova_tests::{free_port, wait_for};

#[derive(Parser)]
struct Args {
    /// The nova-controller binary (release build).
    #[arg(
        long,
        default_value = "target/x86_64-unknown-linux-gnu/release/nova-controller"
    )]
    controller: PathBuf,
    #[arg(long, default_value = "wrk")]
    wrk: String,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// wrk connections; a comma list runs each.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    connections: Vec<u32>,
    #[arg(long, default_value_t = 2)]
    threads: u32,
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

fn start_controller(
    bin: &Path,
    dir: &Path,
    store: &str,
) -> anyhow::Result<(Proc, ControllerClient)> {
    let port = free_port();
    let child = Command::new(bin)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--store", store])
        .arg("--admin-token-file")
        .arg(dir.join("admin.token"))
        .arg("--join-token-file")
        .arg(dir.join("join.token"))
        // The loops would compete with the API for the CPU; this measures the API.
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

/// One wrk result.
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn to_ms(s: &str) -> f64 {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => f64::NAN,
    }
}

fn wrk(a: &Args, conns: u32, url: &str, script: &Path) -> anyhow::Result<Run> {
    let o = Command::new(&a.wrk)
        .args([
            "-t",
            &a.threads.to_string(),
            "-c",
            &conns.to_string(),
            "-d",
            &format!("{}s", a.duration),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk (Debian package wrk)")?;
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let mut r = Run {
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        errors: 0,
    };
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["Requests/sec:", v] => r.rps = v.parse().unwrap_or(f64::NAN),
            ["50%", v] => r.p50_ms = to_ms(v),
            ["99%", v] => r.p99_ms = to_ms(v),
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    if r.rps.is_nan() {
        bail!("could not read wrk's output:\n{text}");
    }
    Ok(r)
}

/// A wrk script sending `method` with the token; a POST creates a VM with a name no
/// other request uses (names are unique per tenant).
fn script(dir: &Path, name: &str, token: &str, method: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    let mut s =
        format!("wrk.method = \"{method}\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\n");
    if method == "POST" {
        s += r#"wrk.headers["Content-Type"] = "application/json"
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
local n = 0
function request()
  n = n + 1
  local body = string.format('{"name":"bench-%d-%d","kernel":"/k","start":false}', id, n)
  return wrk.format(nil, nil, nil, body)
end
"#;
    }
    std::fs::write(&p, s)?;
    Ok(p)
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let command = format!(
        "bench-api --controller {} --duration {} --connections {} --threads {} --out {}",
        a.controller.display(),
        a.duration,
        a.connections
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        a.threads,
        a.out.display()
    );
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mut rows = vec![];
    let mut md = String::from("# Controller API throughput\n\n");
    md += &format!("Command: `{command}` (release build; `make bench`). wrk and the controller share this machine's {cores} cores over loopback; the reconcile loops are idle so the API alone is measured. Every request is authenticated (token hash lookup in the store).\n\n");
    md += "| backend | request | connections | requests/s | p50 ms | p99 ms | non-2xx |\n|---|---|---|---|---|---|---|\n";
    for backend in ["sqlite", "etcd"] {
        let dir =
            std::env::temp_dir().join(format!("nova-bench-api-{}-{backend}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut _etcd = None;
        let store = if backend == "sqlite" {
            format!("sqlite:{}", dir.join("controller.db").display())
        } else {
            // Skipped (loudly) when etcd is not installed.
            let Some(e) = Etcd::start() else { continue };
            let url = e.url.clone();
            _etcd = Some(e);
            format!("etcd:{url}")
        };
        let (_ctl, api) = start_controller(&a.controller, &dir, &store)?;
        let spec: VmSpec = serde_json::from_str(r#"{"name":"bench","kernel":"/k","start":false}"#)?;
        let id = block_on(api.create_vm(&spec, None))?.id;
        let (url, token) = (
            api.url().to_string(),
            std::fs::read_to_string(dir.join("admin.token"))?,
        );
        let token = token.trim();
        let get = script(&dir, "get.lua", token, "GET")?;
        let post = script(&dir, "post.lua", token, "POST")?;
        for &conns in &a.connections {
            for (what, path, s) in [
                ("GET /v1/vms/{id}", format!("{url}/v1/vms/{id}"), &get),
                ("POST /v1/vms", format!("{url}/v1/vms"), &post),
            ] {
                let r = wrk(&a, conns, &path, s)?;
                println!(
                    "{backend} {what} c={conns}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, non-2xx {}",
                    r.rps, r.p50_ms, r.p99_ms, r.errors
                );
                md += &format!(
                    "| {backend} | `{what}` | {conns} | {:.0} | {:.2} | {:.2} | {} |\n",
                    r.rps, r.p50_ms, r.p99_ms, r.errors
                );
                rows.push(serde_json::json!({"backend": backend, "request": what, "connections": conns,
                    "requests_per_s": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "non_2xx": r.errors}));
            }
        }
        drop(_ctl);
        drop(_etcd);
        let _ = std::fs::remove_dir_all(&dir);
    }
    md += "\nTarget: >= 20,000 GET/s with p99 < 5 ms on 2 cores with SQLite.\n";
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    md += &format!(
        "\nLoad average when the run ended: {} (other work shared the machine).\n",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let json = serde_json::json!({"command": command, "cores": cores, "connections": a.connections, "duration_s": a.duration, "rows": rows, "loadavg": load.trim(),
        "targets": {"sqlite_get_per_s": 20000, "sqlite_get_p99_ms": 5}});
    write_report(&a.out, "api", &json, &md)?;
    Ok(())
}
