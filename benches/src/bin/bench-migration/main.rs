//! `make bench-migration`: live migration of the same test guest by nova-vmm and by
//! QEMU microvm (QMP; downtime-limit lowered, bandwidth unlimited, postcopy-ram for
//! its post-copy runs), loopback TCP, alternated, for memory x workload x mode with
//! `counter` always running. Reports each VMM's own downtime, the guest-observed pause
//! (largest gap between NOVA-TICK lines of both consoles merged by arrival time), total
//! time, bytes on the wire and convergence; medians and worst runs. Also snapshot
//! create and restore (eager, lazy) times. Writes docs/benchmarks/migration.{json,md}.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use jailed::{Jails, DST_UID, SRC_UID};
use nova_benches::{guest_view, jail, write_report, StealSample, Summary};
use nova_http::blocking::block_on;
use nova_tests::vmm::{client, VmmCmd};
use nova_tests::{free_port, Console, Line};
use nova_vmm_api::{MigrationMode, MigrationParams, MigrationRequest, MigrationState};
use qemu::qemu_run;
use serde::Serialize;
use snapshots::{snapshot_times, SnapshotTimes};

mod jailed;
mod qemu;
mod snapshots;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    vmm: PathBuf,
    #[arg(long)]
    guest: PathBuf,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
    /// Memory sizes in MiB.
    #[arg(long, value_delimiter = ',', default_value = "1024,4096")]
    mem: Vec<u64>,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "idle,dirty:64:max,dirty:512:max"
    )]
    workloads: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "precopy,postcopy,hybrid")]
    modes: Vec<MigrationMode>,
    /// QEMU's downtime-limit in ms (its best result: lowered from the 300 ms default).
    #[arg(long, default_value_t = 10)]
    qemu_downtime_ms: u64,
    /// nova-vmm migrates in plaintext (`--insecure` on both VMMs) instead of over TLS
    /// with a per-migration credential: to measure what TLS costs.
    #[arg(long)]
    insecure: bool,
    /// nova-vmm runs bare instead of jailed as hostd starts it (its own uid, a mount
    /// namespace holding its files only, cgroups, rlimits; favordynmods as hostd sets
    /// it): to measure what the jail costs.
    #[arg(long)]
    no_jail: bool,
}

/// QEMU's downtime as it reports it, over the runs where that does not exceed the
/// whole migration (QEMU 7.2 counts some post-copy downtimes from a stale start,
/// hours); `n/a` when no run's figure is possible.
fn qemu_downtime(q: &Cell) -> String {
    let possible: Vec<f64> = q
        .runs
        .iter()
        .filter(|r| r.downtime_ms <= r.total_ms)
        .map(|r| r.downtime_ms)
        .collect();
    if possible.is_empty() {
        return "n/a".into();
    }
    let s = Summary::of(&possible);
    format!("{:.1} ({:.1})", s.median, s.max)
}

/// Milliseconds between the test guest's `NOVA-TICK` lines.
const TICK_MS: f64 = 1.0;

/// The least pause ratio any VMM could reach against `qemu_pause_ms`: a guest-observed
/// pause is a gap between ticks, never shorter than the tick period.
fn pause_ratio_floor(qemu_pause_ms: f64) -> f64 {
    TICK_MS / qemu_pause_ms
}

#[derive(Serialize, Clone, Debug)]
struct Run {
    converged: bool,
    downtime_ms: f64,
    guest_pause_ms: f64,
    worst_stall_ms: f64,
    counter_continuous: bool,
    total_ms: f64,
    bytes: u64,
}

impl Run {
    /// A run that did not complete (the error is in the progress log).
    fn failed() -> Run {
        Run {
            converged: false,
            downtime_ms: f64::NAN,
            guest_pause_ms: f64::NAN,
            worst_stall_ms: f64::NAN,
            counter_continuous: false,
            total_ms: f64::NAN,
            bytes: 0,
        }
    }
}

#[derive(Serialize)]
struct Cell {
    mem_mib: u64,
    workload: String,
    mode: String,
    vmm: &'static str,
    runs: Vec<Run>,
    downtime_ms: Summary,
    guest_pause_ms: Summary,
    worst_stall_ms: Summary,
    total_ms: Summary,
    bytes: Summary,
    converged: usize,
}

/// How long the source of a finished migration gets to exit by itself (nova-vmm
/// does once its VM moved; QEMU's paused source is killed at once).
const SOURCE_EXIT: Duration = Duration::from_secs(5);

fn wait_line(g: &Console, prefix: &str, timeout: Duration) -> anyhow::Result<Line> {
    g.try_wait_line(prefix, timeout).map_err(anyhow::Error::msg)
}

fn cmdline(workload: &str) -> String {
    if workload == "idle" {
        "nova.workload=counter".into()
    } else {
        format!("nova.workload=counter,{workload}")
    }
}

/// Waits until the guest is in its steady state: ticking, and one dirty pass done.
fn warm(g: &Console, workload: &str) -> anyhow::Result<()> {
    wait_line(g, "NOVA-TICK 100", Duration::from_secs(30))?;
    if workload != "idle" {
        wait_line(g, "NOVA-DIRTY pass=1", Duration::from_secs(120))?;
    }
    Ok(())
}

fn nova_run(a: &Args, mem: u64, workload: &str, mode: MigrationMode) -> anyhow::Result<Run> {
    // Canonical: in a jail only those paths exist.
    let (vmm, guest) = (a.vmm.canonicalize()?, a.guest.canonicalize()?);
    // Dropped last, once both VMMs are gone.
    let mut jails = Jails::new(a.no_jail, vmm.clone());
    let (mut src, sock) = VmmCmd::of(&vmm)
        .arg("--kernel")
        .arg(&guest)
        .args([
            "--mem-mib",
            &mem.to_string(),
            "--cmdline",
            &cmdline(workload),
        ])
        .args(a.insecure.then_some("--insecure"))
        .env("NOVA_LOG", "error")
        .realtime_console()
        .with_api();
    jails.add(&mut src, "src", SRC_UID, mem, vec![guest])?;
    let (mut src, _src_dir) = jails.spawn(src)?;
    let port = free_port();
    let cred_dir = nova_tests::TempDir::new();
    let mut dst = VmmCmd::of(&vmm)
        .args(["--incoming", &format!("tcp:127.0.0.1:{port}")])
        .args(["--mem-mib", &mem.to_string(), "--vcpus", "1"]);
    let mut files = Vec::new();
    let peer = match a.insecure {
        true => {
            dst = dst.arg("--insecure");
            None
        }
        false => {
            let (file, peer) = nova_tests::migration::credential(cred_dir.path());
            if !a.no_jail {
                nova_hostd::jail::give(&file, DST_UID)?;
            }
            let file = file.canonicalize()?;
            dst = dst.arg("--incoming-credential").arg(&file);
            files.push(file);
            Some(peer)
        }
    };
    let mut dst = dst.env("NOVA_LOG", "error").realtime_console();
    jails.add(&mut dst, "dst", DST_UID, mem, files)?;
    let (dst, _dst_dir) = jails.spawn(dst)?;
    let vmm = client(&sock);
    warm(&src, workload)?;
    let start = Instant::now();
    let req = MigrationRequest {
        to: format!("tcp:127.0.0.1:{port}"),
        params: MigrationParams {
            mode,
            ..MigrationParams::default()
        },
        peer,
    };
    block_on(vmm.migrate(&req))?;
    // Followed as `nova-vmm ctl migrate` does; the source exits once it gave the result.
    let r = loop {
        std::thread::sleep(Duration::from_millis(50));
        let s = block_on(vmm.migration())?;
        if s.state.is_final() {
            break s;
        }
    };
    if r.state != MigrationState::Completed {
        bail!("nova migration failed: {r:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let v = guest_view(&src.finish(SOURCE_EXIT), &dst.lines(), start);
    Ok(Run {
        converged: r.converged,
        downtime_ms: r.downtime_ms,
        guest_pause_ms: v.pause_ms,
        worst_stall_ms: v.worst_stall_ms,
        counter_continuous: v.continuous,
        total_ms: r.total_ms,
        bytes: r.bytes_sent,
    })
}

fn summarize(
    mem: u64,
    workload: &str,
    mode: MigrationMode,
    vmm: &'static str,
    runs: Vec<Run>,
) -> Cell {
    let ok: Vec<&Run> = runs.iter().filter(|r| r.converged).collect();
    let f = |g: fn(&Run) -> f64| Summary::of(&ok.iter().map(|r| g(r)).collect::<Vec<_>>());
    Cell {
        mem_mib: mem,
        workload: workload.into(),
        mode: mode.as_str().into(),
        vmm,
        downtime_ms: f(|r| r.downtime_ms),
        guest_pause_ms: f(|r| r.guest_pause_ms),
        worst_stall_ms: f(|r| r.worst_stall_ms),
        total_ms: f(|r| r.total_ms),
        bytes: f(|r| r.bytes as f64),
        converged: ok.len(),
        runs,
    }
}

#[derive(Serialize)]
struct Ratio {
    mem_mib: u64,
    workload: String,
    mode: String,
    pause_ratio: f64,
    pause_ratio_floor: f64,
    total_ratio: f64,
}

#[derive(Serialize)]
struct Report {
    command: String,
    /// nova-vmm ran jailed as hostd starts it (else bare, `--no-jail`).
    jailed: bool,
    /// Migration streams in TLS (else plaintext, `--insecure`).
    tls: bool,
    /// How cgroup2's favordynmods was found or set, as hostd does at start.
    cgroup_favordynmods: &'static str,
    host_steal_percent: f64,
    cells: Vec<Cell>,
    ratios: Vec<Ratio>,
    snapshots: Vec<SnapshotTimes>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let favordynmods = if a.no_jail {
        "off"
    } else {
        jail::favor_dynmods()
    };
    let dir = std::env::temp_dir().join(format!("nova-bench-migration-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let steal = StealSample::now();
    let mut cells = Vec::new();
    for &mem in &a.mem {
        for workload in &a.workloads {
            for &mode in &a.modes {
                let (mut nova, mut qemu) = (Vec::new(), Vec::new());
                for run in 0..a.runs {
                    let n = nova_run(&a, mem, workload, mode);
                    let q = qemu_run(&a, mem, workload, mode, &dir);
                    let m = mode.as_str();
                    eprintln!("{mem} MiB {workload} {m} run {run}: nova {n:?} | qemu {q:?}");
                    nova.push(n.unwrap_or_else(|_| Run::failed()));
                    qemu.push(q.unwrap_or_else(|_| Run::failed()));
                }
                cells.push(summarize(mem, workload, mode, "nova-vmm", nova));
                cells.push(summarize(mem, workload, mode, "qemu", qemu));
            }
        }
    }
    let mut snapshots = Vec::new();
    for &mem in &a.mem {
        snapshots.push(snapshot_times(&a.vmm, &a.guest, a.runs, mem, &dir)?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let steal_percent = steal.percent_since();

    let command = format!(
        "make bench-migration  # bench-migration --vmm {} --guest {} --runs {} --mem {} --workloads {} --modes {}{}{}",
        a.vmm.display(),
        a.guest.display(),
        a.runs,
        a.mem.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(","),
        a.workloads.join(","),
        a.modes.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","),
        if a.insecure { " --insecure" } else { "" },
        if a.no_jail { " --no-jail" } else { "" },
    );
    let mut md =
        String::from("# Live migration: nova-vmm and QEMU microvm, same guest, loopback TCP\n\n");
    md.push_str(&format!("Command: `{command}`\n\n"));
    md.push_str(&format!(
        "nova-vmm: {}, migration streams {}. ",
        if a.no_jail {
            "bare (`--no-jail`), with its seccomp filters".to_string()
        } else {
            format!(
                "source and destination jailed as hostd starts them (each its own uid, a mount \
                 namespace holding its files only, a PID namespace, cgroup limits, rlimits, no_new_privs, seccomp \
                 filters; cgroup2 favordynmods {favordynmods}), the jail entered before the timing starts"
            )
        },
        if a.insecure {
            "in plaintext (`--insecure`)"
        } else {
            "in TLS 1.3 under a per-migration credential"
        }
    ));
    md.push_str(&format!(
        "Test guest with `counter` beside each workload, runs alternated between the VMMs. nova-vmm: defaults \
         (downtime target 5 ms). QEMU 7.2: its default anonymous RAM (its fastest), downtime-limit {} ms, max-bandwidth unlimited, postcopy-ram for its \
         post-copy and hybrid runs (hybrid: migrate-start-postcopy after the third dirty sync). \
         *pause* is what the guest saw of the switch: the gap from the source's last NOVA-TICK line to the \
         destination's first, both consoles read at once and merged by host arrival time; *stall* is the longest \
         gap anywhere from the start of the migration (dirty logging before the switch, post-copy faults after it). \
         The counter prints a line per ms, each byte a VM exit, so a gap includes printing one line, and no gap \
         can be shorter than the {TICK_MS} ms between ticks: where QEMU's median pause is under twice that \
         (marked †), no VMM can reach a pause ratio of 0.5 (the JSON's `pause_ratio_floor` is the least ratio \
         possible on each row). QEMU's downtime is what it reports, leaving out runs where that exceeds the whole \
         migration (QEMU 7.2 counts some post-copy downtimes from a stale start; `n/a`: every run). \
         Medians over converged runs, worst in brackets; `conv` = runs that completed within 60 s; `cont` = runs \
         whose counter never skipped or repeated.\n\n\
         Host: {} cores; CPU steal during the run {:.0}% (time the hypervisor under this machine ran \
         something else on its cores; above a few percent, millisecond gaps spread for both VMMs).\n\n",
        a.qemu_downtime_ms,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        steal_percent
    ));
    md.push_str("| mem | workload | mode | nova pause ms | QEMU pause ms | pause ratio | nova stall ms | QEMU stall ms | nova downtime ms | QEMU downtime ms | nova total ms | QEMU total ms | total ratio | nova MB | QEMU MB | conv nova/QEMU | cont nova/QEMU |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let mut ratios = Vec::new();
    let (mut halved, mut unreachable) = (0, 0);
    for pair in cells.chunks(2) {
        let (n, q) = (&pair[0], &pair[1]);
        let pr = n.guest_pause_ms.median / q.guest_pause_ms.median;
        let floor = pause_ratio_floor(q.guest_pause_ms.median);
        let tr = n.total_ms.median / q.total_ms.median;
        halved += usize::from(pr <= 0.5);
        unreachable += usize::from(floor > 0.5);
        ratios.push(Ratio {
            mem_mib: n.mem_mib,
            workload: n.workload.clone(),
            mode: n.mode.clone(),
            pause_ratio: pr,
            pause_ratio_floor: floor,
            total_ratio: tr,
        });
        md.push_str(&format!(
            "| {} | {} | {} | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.2}{} | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.1} ({:.1}) | {} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} | {}/{} | {}/{} |\n",
            n.mem_mib, n.workload, n.mode,
            n.guest_pause_ms.median, n.guest_pause_ms.max, q.guest_pause_ms.median, q.guest_pause_ms.max, pr,
            if floor > 0.5 { " †" } else { "" },
            n.worst_stall_ms.median, n.worst_stall_ms.max, q.worst_stall_ms.median, q.worst_stall_ms.max,
            n.downtime_ms.median, n.downtime_ms.max, qemu_downtime(q),
            n.total_ms.median, q.total_ms.median, tr,
            n.bytes.median / 1e6, q.bytes.median / 1e6, n.converged, q.converged,
            n.runs.iter().filter(|r| r.counter_continuous).count(), q.runs.iter().filter(|r| r.counter_continuous).count(),
        ));
    }
    md.push_str(&format!(
        "\nPause ratio at most 0.5 on {halved} of {} rows; {unreachable} rows marked † (QEMU's pause under {} ms).\n",
        cells.len() / 2,
        2.0 * TICK_MS
    ));
    md.push_str("\n## Snapshots (nova-vmm, bare)\n\nCreate: `PUT /v1/snapshot` wall time (the VMM's client) on a guest running `counter`. Restore: process start to the restored guest's first `NOVA-TICK` line, median of at least 10 restores.\n\n");
    md.push_str("| mem | create ms | MB written | restore eager ms | restore lazy ms | restore clone ms |\n|---|---|---|---|---|---|\n");
    for s in &snapshots {
        let r = &s.restore_to_first_tick_ms;
        md.push_str(&format!(
            "| {} MiB | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            s.mem_mib,
            s.create_ms,
            s.create_report.bytes_written as f64 / 1e6,
            r.eager.median,
            r.lazy.median,
            r.clone.median,
        ));
    }
    let report = Report {
        command,
        jailed: !a.no_jail,
        tls: !a.insecure,
        cgroup_favordynmods: favordynmods,
        host_steal_percent: steal_percent,
        cells,
        ratios,
        snapshots,
    };
    write_report(&a.out, "migration", &report, &md)?;
    print!("{md}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{pause_ratio_floor, qemu_downtime, Cell, Run, Summary};

    fn qemu_cell(downtime_and_total: &[(f64, f64)]) -> Cell {
        let runs: Vec<Run> = downtime_and_total
            .iter()
            .map(|&(downtime_ms, total_ms)| Run {
                converged: true,
                downtime_ms,
                guest_pause_ms: 1.0,
                worst_stall_ms: 1.0,
                counter_continuous: true,
                total_ms,
                bytes: 1,
            })
            .collect();
        let none = Summary::of(&[]);
        Cell {
            mem_mib: 1024,
            workload: "idle".into(),
            mode: "postcopy".into(),
            vmm: "qemu",
            runs,
            downtime_ms: none.clone(),
            guest_pause_ms: none.clone(),
            worst_stall_ms: none.clone(),
            total_ms: none.clone(),
            bytes: none,
            converged: 0,
        }
    }

    #[test]
    fn qemus_impossible_downtimes_are_left_out() {
        let c = qemu_cell(&[(1.0, 80.0), (2.0, 90.0), (29_973_997.0, 85.0)]);
        assert_eq!(qemu_downtime(&c), "1.5 (2.0)");
        assert_eq!(qemu_downtime(&qemu_cell(&[(3e7, 80.0)])), "n/a");
    }

    #[test]
    fn half_of_qemus_pause_is_out_of_reach_when_qemu_pauses_under_two_ticks() {
        assert_eq!(pause_ratio_floor(2.0), 0.5);
        assert!(pause_ratio_floor(1.8) > 0.5);
        assert!(pause_ratio_floor(4.0) < 0.5);
    }
}
