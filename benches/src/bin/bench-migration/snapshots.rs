//! bench-migration's snapshot rows: creating a snapshot of a running guest through
//! the VMM's API, and restoring it eagerly, lazily and as a clone, each timed from the
//! process start to the restored guest's first tick.

use std::path::Path;
use std::time::{Duration, Instant};

use nova_benches::Summary;
use nova_http::blocking::block_on;
use nova_tests::vmm::{client, VmmCmd};
use nova_vmm_api::{SnapshotReport, SnapshotRequest};
use serde::Serialize;

use crate::wait_line;

/// One restore's times, over the runs.
#[derive(Serialize)]
pub struct RestoreTimes {
    pub eager: Summary,
    pub lazy: Summary,
    pub clone: Summary,
}

/// What a snapshot of a guest of `mem_mib` MiB took, and restoring it.
#[derive(Serialize)]
pub struct SnapshotTimes {
    pub mem_mib: u64,
    pub create_ms: f64,
    pub create_report: SnapshotReport,
    pub restore_to_first_tick_ms: RestoreTimes,
}

/// Snapshot create and restore (eager, lazy, clone) for a guest of `mem` MiB, booted
/// from `guest` by the nova-vmm at `vmm`; each restore timed over `runs` (at least 10).
pub fn snapshot_times(
    vmm: &Path,
    guest: &Path,
    runs: usize,
    mem: u64,
    dir: &Path,
) -> anyhow::Result<SnapshotTimes> {
    let snap = dir.join(format!("snap-{mem}"));
    let _ = std::fs::remove_dir_all(&snap);
    let (src, sock) = VmmCmd::of(vmm)
        .arg("--kernel")
        .arg(guest)
        .args(["--mem-mib", &mem.to_string()])
        .args(["--cmdline", "nova.workload=counter"])
        .env("NOVA_LOG", "error")
        .with_api();
    let g = src.spawn();
    let api = client(&sock);
    wait_line(&g.console, "NOVA-TICK 100", Duration::from_secs(30))?;
    let t = Instant::now();
    let req = SnapshotRequest {
        path: snap.clone(),
        diff: false,
    };
    let create_report = block_on(api.snapshot(&req))?;
    let create_ms = t.elapsed().as_secs_f64() * 1000.0;
    drop(g);
    let restore = |flag: Option<&str>| -> anyhow::Result<Summary> {
        let mut times = Vec::new();
        for _ in 0..runs.max(10) {
            let mut cmd = VmmCmd::of(vmm)
                .arg("--restore")
                .arg(&snap)
                .env("NOVA_LOG", "error");
            if let Some(f) = flag {
                cmd = cmd.arg(f);
            }
            let restored = cmd.realtime_console().spawn();
            // A whole line: the tail of a tick the snapshot cut does not start with it.
            let tick = wait_line(&restored.console, "NOVA-TICK", Duration::from_secs(30))?;
            let took = tick.at.saturating_duration_since(restored.console.started);
            times.push(took.as_secs_f64() * 1000.0);
        }
        Ok(Summary::of(&times))
    };
    Ok(SnapshotTimes {
        mem_mib: mem,
        create_ms,
        create_report,
        restore_to_first_tick_ms: RestoreTimes {
            eager: restore(None)?,
            lazy: restore(Some("--lazy"))?,
            clone: restore(Some("--clone"))?,
        },
    })
}
