//! QEMU's side of the comparison: the same guest migrated by QEMU microvm over QMP
//! (downtime-limit lowered, bandwidth unlimited, postcopy-ram for its post-copy and
//! hybrid runs).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use nova_benches::guest_view;
use nova_benches::qmp::{Capabilities, Migrate, MigrateParameters, NoArgs, Qmp};
use nova_tests::vmm::{qemu_microvm, QemuRam};
use nova_tests::{free_port, host_tsc_khz, Console};
use nova_vmm_api::MigrationMode;

use super::{cmdline, warm, Args, Run};

fn qemu(a: &Args, mem: u64, workload: &str, qmp: &Path, incoming: Option<u16>) -> Command {
    let mut c = qemu_microvm(
        &a.guest,
        mem,
        1,
        &format!("{} nova.tsc_khz={}", cmdline(workload), host_tsc_khz()),
        QemuRam::Anonymous,
    );
    c.arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()));
    if let Some(p) = incoming {
        c.args(["-incoming", &format!("tcp:127.0.0.1:{p}")]);
    }
    c
}

pub fn qemu_run(
    a: &Args,
    mem: u64,
    workload: &str,
    mode: MigrationMode,
    dir: &Path,
) -> anyhow::Result<Run> {
    let (sq, dq) = (dir.join("src.qmp"), dir.join("dst.qmp"));
    let port = free_port();
    let mut src = Console::spawn_realtime(qemu(a, mem, workload, &sq, None));
    let dst = Console::spawn_realtime(qemu(a, mem, workload, &dq, Some(port)));
    let mut s = Qmp::connect(&sq)?;
    let mut d = Qmp::connect(&dq)?;
    let post = mode != MigrationMode::Precopy;
    for q in [&mut s, &mut d] {
        q.cmd(
            "migrate-set-capabilities",
            &Capabilities::one("postcopy-ram", post),
        )?;
    }
    s.cmd(
        "migrate-set-parameters",
        &MigrateParameters {
            downtime_limit: a.qemu_downtime_ms,
            max_bandwidth: 100_000_000_000u64,
        },
    )?;
    warm(&src, workload)?;
    let start = Instant::now();
    s.cmd(
        "migrate",
        &Migrate {
            uri: format!("tcp:127.0.0.1:{port}"),
        },
    )?;
    let mut switched = false;
    let deadline = Duration::from_secs(60);
    let info = loop {
        std::thread::sleep(Duration::from_millis(10));
        let info = s.cmd("query-migrate", &NoArgs {})?;
        let status = info["status"].as_str().unwrap_or("").to_string();
        if status == "completed" || status == "failed" {
            break info;
        }
        // post-copy: switch at once; hybrid: after the first pass, as ours does when
        // pre-copy stops converging.
        let passes = info["ram"]["dirty-sync-count"].as_u64().unwrap_or(0);
        if !switched
            && status == "active"
            && (mode == MigrationMode::Postcopy || (mode == MigrationMode::Hybrid && passes >= 3))
        {
            s.cmd("migrate-start-postcopy", &NoArgs {})?;
            switched = true;
        }
        if start.elapsed() > deadline {
            let _ = s.cmd("migrate_cancel", &NoArgs {});
            return Ok(Run {
                bytes: info["ram"]["transferred"].as_u64().unwrap_or(0),
                ..Run::failed()
            });
        }
    };
    if info["status"] != "completed" {
        bail!("QEMU migration failed: {info}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let v = guest_view(&src.finish(Duration::ZERO), &dst.lines(), start);
    Ok(Run {
        converged: true,
        downtime_ms: info["downtime"].as_f64().unwrap_or(f64::NAN),
        guest_pause_ms: v.pause_ms,
        worst_stall_ms: v.worst_stall_ms,
        counter_continuous: v.continuous,
        total_ms: info["total-time"].as_f64().unwrap_or(f64::NAN),
        bytes: info["ram"]["transferred"].as_u64().unwrap_or(0),
    })
}
