//! bench-clone: clones of a golden snapshot through nova-hostd. A 256 MiB test guest
//! (counter workload) is booted and snapshotted into hostd's store; then each clone
//! is `POST /v1/vms` (stopped) + `POST /v1/vms/{id}/restore` (`stored`, `clone`),
//! timed from the first call to the clone's first console line (a `NOVA-TICK`: the
//! guest resumes mid-count, it does not boot). 100 in sequence (each deleted before
//! the next), 100 at once (all left running), then the host memory the 100 running
//! clones take (the sum of their VMMs' PSS: shared pages counted once) against one
//! cold-booted VM of the same guest. A cold boot through hostd (create to
//! `NOVA-BOOTED`) is the baseline in the same run. Writes docs/benchmarks/clone.{json,md}.
//! It is over 500 lines: one linear bench (the QEMU peer, four phases, the report).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use nova_benches::{kill_vmms_under, write_report};
use nova_hostd_api::{HostdClient, RestoreRequest, TakeSnapshot, VmSpec};
use nova_http::blocking::block_on;
use serde::Serialize;

#[derive(Parser)]
struct Args {
    #[arg(
        long,
        default_value = "target/x86_64-unknown-linux-gnu/release/nova-hostd"
    )]
    hostd: PathBuf,
    #[arg(
        long,
        default_value = "target/x86_64-unknown-linux-gnu/release/nova-vmm"
    )]
    vmm: PathBuf,
    #[arg(long, default_value = "guest-images/out/testguest.elf")]
    guest: PathBuf,
    /// Clones in each phase.
    #[arg(long, default_value_t = 100)]
    clones: usize,
    /// The golden VM's memory, MiB.
    #[arg(long, default_value_t = 256)]
    mem_mib: u64,
    /// Cold boots for the baseline.
    #[arg(long, default_value_t = 10)]
    boots: usize,
    /// QEMU restores of the same guest from a saved state (the peer).
    #[arg(long, default_value_t = 20)]
    qemu_runs: usize,
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
}

struct Hostd {
    child: Child,
    dir: PathBuf,
    api: HostdClient,
}

impl Hostd {
    fn start(args: &Args, dir: &Path) -> anyhow::Result<Hostd> {
        let token = format!("bench-token-{}", std::process::id());
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("token"), &token)?;
        let addr = format!("127.0.0.1:{}", nova_tests::free_port());
        let log = std::fs::File::create(dir.join("hostd.log"))?;
        // Clones share their memory: admit far more than the host's RAM says.
        let child = Command::new(&args.hostd)
            .args([
                "--listen",
                &addr,
                "--insecure-http",
                "--cpu-overcommit",
                "200",
                "--mem-overcommit",
                "50",
            ])
            .arg("--token-file")
            .arg(dir.join("token"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--vmm-bin")
            .arg(&args.vmm)
            .arg("--image-root")
            .arg(args.guest.parent().unwrap_or(Path::new("/")))
            .env("NOVA_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", args.hostd.display()))?;
        let opts = nova_http::ClientOptions {
            timeout: Duration::from_secs(120),
            ..Default::default()
        };
        let api = HostdClient::new(&format!("http://{addr}"), &token, &opts)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while block_on(api.health()).is_err() {
            if Instant::now() > deadline {
                bail!("hostd did not answer");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Hostd {
            child,
            dir: dir.to_path_buf(),
            api,
        })
    }

    fn console(&self, id: &str) -> PathBuf {
        self.dir.join("data/vms").join(id).join("console.log")
    }
}

impl Drop for Hostd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spec(args: &Args, id: &str, start: bool) -> VmSpec {
    VmSpec {
        id: Some(id.to_string()),
        name: id.to_string(),
        vcpus: 1,
        mem_mib: args.mem_mib,
        kernel: args.guest.to_string_lossy().into_owned(),
        initrd: None,
        cmdline: Some("nova.workload=counter".into()),
        disks: Vec::new(),
        nics: Vec::new(),
        restart: Default::default(),
        start,
        cloud_init: None,
    }
}

/// Whether the console file at `path` holds a line starting with `prefix` within its
/// first 4 KiB (a clone's first line is at its start; reading only the head keeps a
/// poll cheap however long the file has grown).
fn has_line(path: &Path, prefix: &[u8]) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut buf = [0u8; 4096];
    let n = f.read(&mut buf).unwrap_or(0);
    buf[..n]
        .split(|&c| c == b'\n')
        .any(|l| l.starts_with(prefix))
}

/// Waits until the console file holds a line starting with `prefix`.
fn wait_line(path: &Path, prefix: &[u8], deadline: Instant) -> anyhow::Result<Instant> {
    loop {
        if has_line(path, prefix) {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "{} shows no {}",
                path.display(),
                String::from_utf8_lossy(prefix)
            );
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Starts one clone of stored snapshot `snap`: its VMM's pid.
fn start_clone(h: &Hostd, args: &Args, snap: &str, id: &str) -> anyhow::Result<u32> {
    block_on(h.api.create(&spec(args, id, false))).with_context(|| format!("create {id}"))?;
    let req = RestoreRequest {
        snapshot: snap.into(),
        lazy: false,
        stored: true,
        clone: true,
    };
    let vm = block_on(h.api.restore(id, &req)).with_context(|| format!("restore {id}"))?;
    Ok(vm.pid.unwrap_or(0))
}

/// One clone of stored snapshot `snap`: (pid, ms from the first call to its first line).
fn clone(h: &Hostd, args: &Args, snap: &str, id: &str) -> anyhow::Result<(u32, f64)> {
    let t0 = Instant::now();
    let pid = start_clone(h, args, snap, id)?;
    let t = wait_line(&h.console(id), b"NOVA-TICK", t0 + Duration::from_secs(300))?;
    Ok((pid, (t - t0).as_secs_f64() * 1e3))
}

/// When each console in `paths` first shows a `NOVA-TICK` line, polled by this one
/// thread every 0.5 ms (the concurrent phase: one poller per clone, 100 threads each
/// opening its file every 0.2 ms, took CPU from the clones it was timing).
fn watch_all(paths: &[PathBuf], deadline: Instant) -> anyhow::Result<Vec<Instant>> {
    let mut seen: Vec<Option<Instant>> = vec![None; paths.len()];
    loop {
        let mut pending = 0;
        for (p, s) in paths.iter().zip(seen.iter_mut()) {
            if s.is_none() {
                if has_line(p, b"NOVA-TICK") {
                    *s = Some(Instant::now());
                } else {
                    pending += 1;
                }
            }
        }
        if pending == 0 {
            return Ok(seen.into_iter().flatten().collect());
        }
        if Instant::now() > deadline {
            bail!("{pending} clones show no NOVA-TICK");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// PSS of `pid` in KiB (its share of every page it maps: pages shared by N
/// processes count 1/N each, so a sum over processes is what they take together).
fn pss_kib(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    s.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("no Pss in smaps_rollup")
}

/// `qemu-system-x86_64 --version`'s number.
fn qemu_version() -> String {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(3)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

#[derive(Serialize)]
struct Latency {
    runs: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(v: &[f64]) -> Latency {
        Latency {
            runs: v.len(),
            p50_ms: percentile(v, 50.0),
            p99_ms: percentile(v, 99.0),
            max_ms: percentile(v, 100.0),
        }
    }
}

/// The peer: QEMU microvm saves the same guest (counting) with `migrate exec:cat >
/// FILE`, then each run is a new QEMU with `-incoming exec:cat FILE`, timed from its
/// spawn to its first console line. QEMU has no copy-on-write clone: every restore
/// reads the whole saved state.
fn qemu_restores(args: &Args, tmp: &Path) -> anyhow::Result<Vec<f64>> {
    use nova_benches::qmp::{Migrate, NoArgs, Qmp};
    use nova_tests::vmm::{qemu_microvm, QemuRam};
    let append = format!(
        "nova.workload=counter nova.tsc_khz={}",
        nova_tests::host_tsc_khz()
    );
    let qemu = |log: &Path, extra: &[String]| -> anyhow::Result<Child> {
        let mut c = qemu_microvm(&args.guest, args.mem_mib, 1, &append, QemuRam::Anonymous);
        c.args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log)?)
            .stderr(Stdio::null());
        Ok(c.spawn()?)
    };
    let state = tmp.join("qemu-state");
    let sock = tmp.join("qemu-qmp.sock");
    let golden_log = tmp.join("qemu-golden.log");
    let mut golden = qemu(
        &golden_log,
        &[
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", sock.display()),
        ],
    )?;
    let saved = (|| {
        wait_line(
            &golden_log,
            b"NOVA-TICK",
            Instant::now() + Duration::from_secs(60),
        )?;
        let mut q = Qmp::connect(&sock)?;
        let uri = format!("exec:cat > {}", state.display());
        q.cmd("migrate", &Migrate { uri })?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = q.cmd("query-migrate", &NoArgs {})?;
            match s.get("status").and_then(|v| v.as_str()) {
                Some("completed") => return Ok(()),
                Some("failed") | Some("cancelled") => bail!("QEMU save: {s}"),
                _ => {}
            }
            if Instant::now() > deadline {
                bail!("QEMU save did not finish");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })();
    let _ = golden.kill();
    let _ = golden.wait();
    saved?;
    let mut out = Vec::new();
    for i in 0..args.qemu_runs {
        let log = tmp.join(format!("qemu-restore-{i}.log"));
        let t0 = Instant::now();
        let mut c = qemu(
            &log,
            &["-incoming".into(), format!("exec:cat {}", state.display())],
        )?;
        let t = wait_line(&log, b"NOVA-TICK", t0 + Duration::from_secs(60));
        let _ = c.kill();
        let _ = c.wait();
        out.push((t? - t0).as_secs_f64() * 1e3);
    }
    Ok(out)
}

/// The 1-minute load average (`/proc/loadavg`): the machine is shared, and the
/// latencies depend on what else runs.
fn load_avg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

#[derive(Serialize)]
struct Report {
    command: String,
    /// 1-minute load average when the clone phases began and when they ended.
    load_avg_start: f64,
    load_avg_end: f64,
    guest_mem_mib: u64,
    clones: usize,
    snapshot_paused_ms: f64,
    snapshot_stored_mib: f64,
    cold_boot_through_hostd: Latency,
    qemu_restore: Latency,
    clone_sequential: Latency,
    clone_concurrent: Latency,
    concurrent_all_running_s: f64,
    one_vm_pss_mib: f64,
    clones_pss_mib_total: f64,
    clones_pss_mib_each: f64,
    clones_vs_one_vm: f64,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    for p in [&mut args.hostd, &mut args.vmm, &mut args.guest] {
        *p = p
            .canonicalize()
            .with_context(|| format!("{}", p.display()))?;
    }
    let tmp = std::env::temp_dir().join(format!("bench-clone-{}", std::process::id()));
    let result = run(&args, &tmp);
    kill_vmms_under(&tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn run(args: &Args, tmp: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(tmp)?;
    let qemu = qemu_restores(args, tmp)?;
    let h = Hostd::start(args, tmp)?;

    // Baseline: cold boots through hostd, create to NOVA-BOOTED.
    let mut boots = Vec::new();
    for i in 0..args.boots {
        let id = format!("boot-{i}");
        let t0 = Instant::now();
        block_on(h.api.create(&spec(args, &id, true)))?;
        let t = wait_line(
            &h.console(&id),
            b"NOVA-BOOTED",
            t0 + Duration::from_secs(60),
        )?;
        boots.push((t - t0).as_secs_f64() * 1e3);
        block_on(h.api.delete(&id))?;
    }

    // The golden VM: booted, counting, measured, snapshotted, deleted.
    block_on(h.api.create(&spec(args, "golden", true)))?;
    wait_line(
        &h.console("golden"),
        b"NOVA-TICK",
        Instant::now() + Duration::from_secs(60),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let golden_pid = block_on(h.api.vm("golden"))?
        .pid
        .context("golden has no pid")?;
    let one_vm = pss_kib(golden_pid)? as f64 / 1024.0;
    let snap = block_on(h.api.take_snapshot(&TakeSnapshot {
        id: "gold".into(),
        vm_id: "golden".into(),
    }))?;
    block_on(h.api.delete("golden"))?;

    // Sequential: each clone alone on the host.
    let load_avg_start = load_avg();
    let mut seq = Vec::new();
    for i in 0..args.clones {
        let id = format!("seq-{i}");
        seq.push(clone(&h, args, "gold", &id)?.1);
        block_on(h.api.delete(&id))?;
    }

    // Concurrent: all at once (every call made at t0), left running.
    let ids: Vec<String> = (0..args.clones).map(|i| format!("par-{i}")).collect();
    let consoles: Vec<PathBuf> = ids.iter().map(|id| h.console(id)).collect();
    let t0 = Instant::now();
    let (pids, seen) = std::thread::scope(|s| {
        let watcher = s.spawn(|| watch_all(&consoles, t0 + Duration::from_secs(300)));
        let handles: Vec<_> = ids
            .iter()
            .map(|id| {
                let h = &h;
                s.spawn(move || start_clone(h, args, "gold", id))
            })
            .collect();
        let pids = handles
            .into_iter()
            .map(|j| j.join().expect("clone thread"))
            .collect::<anyhow::Result<Vec<_>>>();
        (pids, watcher.join().expect("watcher thread"))
    });
    let (pids, seen) = (pids?, seen?);
    let par: Vec<f64> = seen.iter().map(|t| (*t - t0).as_secs_f64() * 1e3).collect();
    let all_running = par.iter().cloned().fold(0.0, f64::max) / 1e3;
    std::thread::sleep(Duration::from_secs(1));
    let mut total = 0u64;
    for pid in &pids {
        total += pss_kib(*pid)?;
    }
    let total_mib = total as f64 / 1024.0;

    let report = Report {
        command: "make bench-clone".into(),
        load_avg_start,
        load_avg_end: load_avg(),
        guest_mem_mib: args.mem_mib,
        clones: args.clones,
        snapshot_paused_ms: snap.paused_ms,
        snapshot_stored_mib: snap.stored_bytes as f64 / (1 << 20) as f64,
        cold_boot_through_hostd: Latency::of(&boots),
        qemu_restore: Latency::of(&qemu),
        clone_sequential: Latency::of(&seq),
        clone_concurrent: Latency::of(&par),
        concurrent_all_running_s: all_running,
        one_vm_pss_mib: one_vm,
        clones_pss_mib_total: total_mib,
        clones_pss_mib_each: total_mib / args.clones as f64,
        clones_vs_one_vm: total_mib / one_vm,
    };
    let r = &report;
    let md = format!(
        "# Clones of a golden snapshot through hostd\n\n\
         `make bench-clone` (`bench-clone --clones {n} --mem-mib {m}`): a {m} MiB test guest \
         (counter workload) booted and snapshotted into hostd's store (paused {pause:.1} ms, \
         {stored:.1} MiB stored); each clone is `POST /v1/vms` (stopped) + \
         `POST /v1/vms/{{id}}/restore` (`stored`, `clone`: the VMM maps the snapshot's memory \
         copy-on-write), timed from the first call to the clone's first console line \
         (a `NOVA-TICK`: it resumes counting, it does not boot). Baseline in the same run: a cold \
         boot through hostd, create to `NOVA-BOOTED`; the peer, QEMU {qv} microvm restoring the same \
         guest saved while counting (`-incoming exec:cat FILE`, spawn to first line; no \
         copy-on-write clones in QEMU).\n\n\
         | | runs | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|\n\
         | cold boot through hostd | {bn} | {bp50:.1} | {bp99:.1} | {bmax:.1} |\n\
         | QEMU restore (peer) | {qn} | {qp50:.1} | {qp99:.1} | {qmax:.1} |\n\
         | clone, sequential | {sn} | {sp50:.1} | {sp99:.1} | {smax:.1} |\n\
         | clone, {n} at once | {cn} | {cp50:.1} | {cp99:.1} | {cmax:.1} |\n\n\
         Clone p50 vs cold boot p50: {ratio:.2}x; vs QEMU restore p50: {qratio:.2}x. All {n} \
         concurrent clones printing: \
         {all:.2} s (all {n} started at once; one thread watches all {n} consoles \
         every 0.5 ms). Load average (1 min) {l0:.1} at the start of the clone phases, \
         {l1:.1} at their end: the machine (2 cores) is shared with other builds.\n\n\
         | host memory (sum of VMM PSS) | MiB |\n|---|---|\n\
         | one cold-booted VM | {one:.1} |\n| {n} running clones | {tot:.1} ({each:.2} each) |\n\
         | {n} clones / one VM | {x:.2}x |\n\n\
         PSS counts a page shared by k processes as 1/k in each, so the sum is what the \
         clones take together. The test guest touches only a few MiB of its {m} MiB, so one \
         VM's PSS is mostly the VMM itself; a clone's private memory is the pages it writes \
         after the restore plus its VMM's own.\n",
        n = r.clones,
        m = r.guest_mem_mib,
        pause = r.snapshot_paused_ms,
        stored = r.snapshot_stored_mib,
        bn = r.cold_boot_through_hostd.runs,
        bp50 = r.cold_boot_through_hostd.p50_ms,
        bp99 = r.cold_boot_through_hostd.p99_ms,
        bmax = r.cold_boot_through_hostd.max_ms,
        sn = r.clone_sequential.runs,
        sp50 = r.clone_sequential.p50_ms,
        sp99 = r.clone_sequential.p99_ms,
        smax = r.clone_sequential.max_ms,
        cn = r.clone_concurrent.runs,
        cp50 = r.clone_concurrent.p50_ms,
        cp99 = r.clone_concurrent.p99_ms,
        cmax = r.clone_concurrent.max_ms,
        ratio = r.clone_sequential.p50_ms / r.cold_boot_through_hostd.p50_ms,
        qratio = r.clone_sequential.p50_ms / r.qemu_restore.p50_ms,
        qv = qemu_version(),
        qn = r.qemu_restore.runs,
        qp50 = r.qemu_restore.p50_ms,
        qp99 = r.qemu_restore.p99_ms,
        qmax = r.qemu_restore.max_ms,
        all = r.concurrent_all_running_s,
        l0 = r.load_avg_start,
        l1 = r.load_avg_end,
        one = r.one_vm_pss_mib,
        tot = r.clones_pss_mib_total,
        each = r.clones_pss_mib_each,
        x = r.clones_vs_one_vm,
    );
    write_report(&args.out, "clone", &report, &md)?;
    print!("{md}");
    for vm in block_on(h.api.vms())?.vms {
        let _ = block_on(h.api.delete(&vm.id));
    }
    let _ = block_on(h.api.delete_stored_snapshot("gold"));
    Ok(())
}
