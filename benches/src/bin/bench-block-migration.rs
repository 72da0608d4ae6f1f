//! `make bench-block-migration`: live migration of a VM with a writable local disk by
//! nova-vmm (block migration in its stream: allocated blocks only, dirty-block rounds,
//! deltas for re-sent blocks) and by QEMU microvm 7.2 (its `block` migration
//! capability: the whole drive copied in the migration stream, then dirty blocks), the
//! same test guest (`counter,disk`: it rewrites and verifies its blocks all along) on
//! the same disk image, over loopback TCP and, with `--link-mbit`, between two network
//! namespaces joined by a veth pair shaped by `tc tbf` (this kernel has no netem), runs
//! alternated. Reports the guest-observed pause (tick gap), each VMM's downtime, total
//! time and bytes on the wire (memory and disk), and whether the destination's disk
//! matched the source's outside the guest's own blocks; medians and worst runs. Writes
//! docs/benchmarks/block-migration.{json,md}. It is over 500 lines: one linear bench
//! (the link, both VMMs' runs, the report).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use nova_benches::qmp::{Capabilities, Migrate, MigrateParameters, NoArgs, Qmp};
use nova_benches::{guest_view, write_report, StealSample, Summary};
use nova_http::blocking::block_on;
use nova_tests::net::NetNs;
use nova_tests::vmm::{client, qemu_microvm, QemuRam, VmmCmd};
use nova_tests::{disk_with_host_blocks, free_port, host_tsc_khz, Console, Line};
use nova_vmm_api::{MigrationParams, MigrationRequest, MigrationState};
use serde::Serialize;

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
    /// Guest memory, MiB.
    #[arg(long, default_value_t = 1024)]
    mem: u64,
    /// The disk's size, MiB.
    #[arg(long, default_value_t = 1024)]
    disk_mib: u64,
    /// MiB of it written (data past the guest's blocks; the rest are holes).
    #[arg(long, default_value_t = 256)]
    written_mib: u64,
    /// QEMU's downtime-limit in ms (lowered from its 300 ms default).
    #[arg(long, default_value_t = 10)]
    qemu_downtime_ms: u64,
    /// The links to measure, Mbit/s, comma-separated; 0 is loopback (unshaped), any
    /// other rate a veth pair between two network namespaces shaped by `tc tbf`.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    link_mbit: Vec<u64>,
}

/// Where the two sides run: both on the host's loopback, or each in a network
/// namespace of its own, joined by a veth pair whose both ends `tbf` shapes.
struct Link {
    mbit: u64,
    ns: Option<(NetNs, NetNs)>,
}

impl Link {
    const SRC_IP: &'static str = "10.203.0.1";
    const DST_IP: &'static str = "10.203.0.2";

    fn new(mbit: u64) -> anyhow::Result<Link> {
        if mbit == 0 {
            return Ok(Link { mbit, ns: None });
        }
        let (a, b) = (NetNs::new(), NetNs::new());
        let out = nova_tests::net::ip(&[
            "link", "add", "nbm0", "netns", &a.name, "type", "veth", "peer", "name", "nbm1",
            "netns", &b.name,
        ]);
        if !out.status.success() {
            bail!("veth pair: {}", String::from_utf8_lossy(&out.stderr));
        }
        for (ns, dev, ip) in [(&a, "nbm0", Self::SRC_IP), (&b, "nbm1", Self::DST_IP)] {
            nova_tests::net::ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ]);
            nova_tests::net::ip(&["-n", &ns.name, "link", "set", dev, "up"]);
            let rate = format!("{mbit}mbit");
            let out = ns.run(&[
                "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", "128kb",
                "latency", "50ms",
            ]);
            if !out.status.success() {
                bail!("tc tbf on {dev}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(Link {
            mbit,
            ns: Some((a, b)),
        })
    }

    fn name(&self) -> String {
        match self.mbit {
            0 => "loopback".into(),
            m if m % 1000 == 0 => format!("{} Gbit/s", m / 1000),
            m => format!("{m} Mbit/s"),
        }
    }

    /// The address the destination listens on.
    fn dst_ip(&self) -> &'static str {
        match self.ns {
            Some(_) => Self::DST_IP,
            None => "127.0.0.1",
        }
    }

    fn vmm(&self, cmd: VmmCmd, dst: bool) -> VmmCmd {
        match &self.ns {
            Some((a, b)) => cmd.in_netns(if dst { b } else { a }),
            None => cmd,
        }
    }

    fn qemu(&self, cmd: Command, dst: bool) -> Command {
        let Some((a, b)) = &self.ns else { return cmd };
        let mut c = (if dst { b } else { a }).command(Path::new(cmd.get_program()));
        c.args(cmd.get_args());
        c
    }

    /// How long a migration may take: 2 minutes, or twice what the memory and disk
    /// take at the link's rate.
    fn deadline(&self, a: &Args) -> Duration {
        let secs = match self.mbit {
            0 => 0,
            m => (a.mem + a.disk_mib) * 8 * 2 / m,
        };
        Duration::from_secs(secs.max(120))
    }
}

#[derive(Serialize, Clone, Debug)]
struct Run {
    ok: bool,
    downtime_ms: f64,
    guest_pause_ms: f64,
    total_ms: f64,
    bytes: u64,
    disk_matches: bool,
}

impl Run {
    fn failed() -> Run {
        Run {
            ok: false,
            downtime_ms: f64::NAN,
            guest_pause_ms: f64::NAN,
            total_ms: f64::NAN,
            bytes: 0,
            disk_matches: false,
        }
    }
}

const WORKLOAD: &str = "nova.workload=counter,disk";
/// The written data starts here (past the host's and the guest's blocks).
const DATA_AT: u64 = 1 << 20;

/// The source disk: host blocks, `written` MiB of non-zero data from 1 MiB, holes.
fn make_disk(path: &Path, size_mib: u64, written_mib: u64) -> anyhow::Result<()> {
    disk_with_host_blocks(path, size_mib);
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    let mut chunk = vec![0u8; 1 << 20];
    for m in 0..written_mib {
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = (i as u64 ^ m.wrapping_mul(0x9e37_79b9)) as u8 | 1;
        }
        f.write_all_at(&chunk, DATA_AT + (m << 20))?;
    }
    f.sync_all()?;
    Ok(())
}

/// A sparse empty file as large as `like`.
fn empty_like(like: &Path, path: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::create(path)?;
    f.set_len(std::fs::metadata(like)?.len())?;
    Ok(())
}

/// Whether `dst` holds what `src` does outside the guest's own blocks (which the guest
/// went on rewriting on the destination).
fn disk_matches(src: &Path, dst: &Path) -> bool {
    let (Ok(a), Ok(b)) = (std::fs::read(src), std::fs::read(dst)) else {
        return false;
    };
    // The guest's blocks: 32 of 4 KiB after the host's 16 (nova-guest-abi).
    let g = 16 * 4096..48 * 4096;
    a.len() == b.len() && a[..g.start] == b[..g.start] && a[g.end..] == b[g.end..]
}

fn wait_line(g: &Console, prefix: &str, timeout: Duration) -> anyhow::Result<Line> {
    g.try_wait_line(prefix, timeout).map_err(anyhow::Error::msg)
}

/// Ticking, and a disk pass done.
fn warm(g: &Console) -> anyhow::Result<()> {
    wait_line(g, "NOVA-TICK 100", Duration::from_secs(30))?;
    wait_line(g, "NOVA-DISK pass=2", Duration::from_secs(60))?;
    Ok(())
}

fn nova_run(a: &Args, link: &Link, dir: &Path) -> anyhow::Result<Run> {
    let (src_disk, dst_disk) = (dir.join("nova-src.raw"), dir.join("nova-dst.raw"));
    make_disk(&src_disk, a.disk_mib, a.written_mib)?;
    empty_like(&src_disk, &dst_disk)?;
    let src = VmmCmd::of(&a.vmm)
        .arg("--kernel")
        .arg(&a.guest)
        .args(["--mem-mib", &a.mem.to_string(), "--cmdline", WORKLOAD])
        .arg("--disk")
        .arg(&src_disk)
        .env("NOVA_LOG", "error")
        .realtime_console();
    let (src, sock) = link.vmm(src, false).with_api();
    let mut src = src.spawn();
    let port = free_port();
    let cred_dir = nova_tests::TempDir::new();
    let (file, peer) = nova_tests::migration::credential(cred_dir.path());
    let to = format!("tcp:{}:{port}", link.dst_ip());
    let dst = VmmCmd::of(&a.vmm)
        .args(["--incoming", &to])
        .args(["--mem-mib", &a.mem.to_string(), "--vcpus", "1"])
        .arg("--disk")
        .arg(&dst_disk)
        .arg("--incoming-credential")
        .arg(file)
        // Info: it says when it listens.
        .env("NOVA_LOG", "info")
        .realtime_console();
    let (dst, dst_sock) = link.vmm(dst, true).with_api();
    let dst = dst.spawn();
    let vmm = client(&sock);
    warm(&src.console)?;
    let t = Instant::now();
    while !dst
        .console
        .stderr()
        .contains("waiting for an incoming migration")
    {
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the destination never listened: {}", dst.console.stderr());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    let req = MigrationRequest {
        to,
        params: MigrationParams::default(),
        peer: Some(peer),
    };
    block_on(vmm.migrate(&req))?;
    let r = loop {
        std::thread::sleep(Duration::from_millis(50));
        let s = block_on(vmm.migration())?;
        if s.state.is_final() {
            break s;
        }
        if start.elapsed() > link.deadline(a) {
            let _ = block_on(vmm.cancel_migration());
            bail!("nova migration did not finish in {:?}", link.deadline(a));
        }
    };
    if r.state != MigrationState::Completed {
        bail!("nova migration failed: {r:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let v = guest_view(
        &src.console.finish(Duration::from_secs(5)),
        &dst.console.lines(),
        start,
    );
    let _ = block_on(client(&dst_sock).pause());
    let matches = disk_matches(&src_disk, &dst_disk);
    drop(dst);
    Ok(Run {
        ok: true,
        downtime_ms: r.downtime_ms,
        guest_pause_ms: v.pause_ms,
        total_ms: r.total_ms,
        bytes: r.bytes_sent,
        disk_matches: matches,
    })
}

fn qemu(a: &Args, link: &Link, disk: &Path, qmp: &Path, incoming: Option<u16>) -> Command {
    let mut c = qemu_microvm(
        &a.guest,
        a.mem,
        1,
        &format!("{WORKLOAD} nova.tsc_khz={}", host_tsc_khz()),
        QemuRam::Anonymous,
    );
    c.args([
        "-drive",
        &format!("id=d0,file={},format=raw,if=none", disk.display()),
        "-device",
        "virtio-blk-device,drive=d0",
    ]);
    c.arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()));
    if let Some(p) = incoming {
        c.args(["-incoming", &format!("tcp:{}:{p}", link.dst_ip())]);
    }
    link.qemu(c, incoming.is_some())
}

fn qemu_run(a: &Args, link: &Link, dir: &Path) -> anyhow::Result<Run> {
    let (src_disk, dst_disk) = (dir.join("qemu-src.raw"), dir.join("qemu-dst.raw"));
    make_disk(&src_disk, a.disk_mib, a.written_mib)?;
    empty_like(&src_disk, &dst_disk)?;
    let (sq, dq) = (dir.join("src.qmp"), dir.join("dst.qmp"));
    let port = free_port();
    let mut src = Console::spawn_realtime(qemu(a, link, &src_disk, &sq, None));
    let mut dst = Console::spawn_realtime(qemu(a, link, &dst_disk, &dq, Some(port)));
    let mut s = Qmp::connect(&sq)?;
    let _d = Qmp::connect(&dq)?;
    s.cmd(
        "migrate-set-capabilities",
        &Capabilities::one("block", true),
    )?;
    s.cmd(
        "migrate-set-parameters",
        &MigrateParameters {
            downtime_limit: a.qemu_downtime_ms,
            max_bandwidth: 100_000_000_000u64,
        },
    )?;
    warm(&src)?;
    let start = Instant::now();
    s.cmd(
        "migrate",
        &Migrate {
            uri: format!("tcp:{}:{port}", link.dst_ip()),
        },
    )?;
    // QEMU reports the disk's figures only while block migration is active: the last
    // ones seen (the drive's size at least: it copies all of it).
    let mut disk_bytes = 0u64;
    let info = loop {
        std::thread::sleep(Duration::from_millis(10));
        let info = s.cmd("query-migrate", &NoArgs {})?;
        for k in ["transferred", "total"] {
            disk_bytes = disk_bytes.max(info["disk"][k].as_u64().unwrap_or(0));
        }
        let status = info["status"].as_str().unwrap_or("").to_string();
        if status == "completed" || status == "failed" {
            break info;
        }
        if start.elapsed() > link.deadline(a) {
            let _ = s.cmd("migrate_cancel", &NoArgs {});
            return Ok(Run::failed());
        }
    };
    if info["status"] != "completed" {
        bail!("QEMU migration failed: {info}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let v = guest_view(&src.finish(Duration::ZERO), &dst.lines(), start);
    let bytes = info["ram"]["transferred"].as_u64().unwrap_or(0)
        + disk_bytes.max(info["disk"]["transferred"].as_u64().unwrap_or(0));
    // Stop the destination before reading its disk.
    dst.finish(Duration::ZERO);
    Ok(Run {
        ok: true,
        downtime_ms: info["downtime"].as_f64().unwrap_or(f64::NAN),
        guest_pause_ms: v.pause_ms,
        total_ms: info["total-time"].as_f64().unwrap_or(f64::NAN),
        bytes,
        disk_matches: disk_matches(&src_disk, &dst_disk),
    })
}

#[derive(Serialize)]
struct Cell {
    vmm: &'static str,
    runs: Vec<Run>,
    guest_pause_ms: Summary,
    downtime_ms: Summary,
    total_ms: Summary,
    bytes: Summary,
    completed: usize,
    disk_matched: usize,
}

fn summarize(vmm: &'static str, runs: Vec<Run>) -> Cell {
    let ok: Vec<&Run> = runs.iter().filter(|r| r.ok).collect();
    let f = |g: fn(&Run) -> f64| Summary::of(&ok.iter().map(|r| g(r)).collect::<Vec<_>>());
    Cell {
        vmm,
        guest_pause_ms: f(|r| r.guest_pause_ms),
        downtime_ms: f(|r| r.downtime_ms),
        total_ms: f(|r| r.total_ms),
        bytes: f(|r| r.bytes as f64),
        completed: ok.len(),
        disk_matched: ok.iter().filter(|r| r.disk_matches).count(),
        runs,
    }
}

/// Both VMMs on one link, and their ratios (nova-vmm / QEMU, medians).
#[derive(Serialize)]
struct LinkRows {
    link: String,
    link_mbit: u64,
    cells: Vec<Cell>,
    pause_ratio: f64,
    total_ratio: f64,
    bytes_ratio: f64,
}

#[derive(Serialize)]
struct Report {
    command: String,
    host_steal_percent: f64,
    mem_mib: u64,
    disk_mib: u64,
    written_mib: u64,
    links: Vec<LinkRows>,
}

fn measure(a: &Args, link: &Link, dir: &Path) -> LinkRows {
    let (mut nova, mut qemu) = (Vec::new(), Vec::new());
    for run in 0..a.runs {
        let n = nova_run(a, link, dir);
        let q = qemu_run(a, link, dir);
        eprintln!("{} run {run}: nova {n:?} | qemu {q:?}", link.name());
        nova.push(n.unwrap_or_else(|_| Run::failed()));
        qemu.push(q.unwrap_or_else(|_| Run::failed()));
    }
    let (n, q) = (summarize("nova-vmm", nova), summarize("qemu", qemu));
    LinkRows {
        link: link.name(),
        link_mbit: link.mbit,
        pause_ratio: n.guest_pause_ms.median / q.guest_pause_ms.median,
        total_ratio: n.total_ms.median / q.total_ms.median,
        bytes_ratio: n.bytes.median / q.bytes.median,
        cells: vec![n, q],
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let dir = std::env::temp_dir().join(format!("nova-bench-blockmig-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let steal = StealSample::now();
    let mut links = Vec::new();
    for &mbit in &a.link_mbit {
        let link = Link::new(mbit)?;
        links.push(measure(&a, &link, &dir));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let command = format!(
        "make bench-block-migration  # bench-block-migration --vmm {} --guest {} --runs {} --mem {} --disk-mib {} --written-mib {} --link-mbit {}",
        a.vmm.display(),
        a.guest.display(),
        a.runs,
        a.mem,
        a.disk_mib,
        a.written_mib,
        a.link_mbit
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let report = Report {
        command: command.clone(),
        host_steal_percent: steal.percent_since(),
        mem_mib: a.mem,
        disk_mib: a.disk_mib,
        written_mib: a.written_mib,
        links,
    };
    let mut md = String::from(
        "# Block migration: nova-vmm and QEMU microvm, a VM with a writable local disk\n\n",
    );
    md.push_str(&format!("Command: `{command}`\n\n"));
    md.push_str(&format!(
        "A {} MiB test guest running `counter,disk` (it rewrites and verifies its own 32 blocks \
         all along) on a {} MiB raw disk of which {} MiB hold data (the rest holes), live-migrated \
         over loopback TCP and over links between two network namespaces (a veth pair, both ends \
         shaped by `tc tbf`; this kernel has no netem), runs alternated. nova-vmm: defaults (its \
         disk blocks in the TLS migration stream: allocated blocks only, dirty-block rounds, \
         deltas for re-sent blocks). QEMU 7.2: the `block` migration capability (the drive \
         copied in the migration stream, then its dirty blocks), downtime-limit {} ms, bandwidth \
         unlimited. *pause*: the gap between the source's last NOVA-TICK and the destination's \
         first (1 ms ticks); bytes: memory and disk on the wire; *disk ok*: runs whose \
         destination disk matched the source's outside the guest's own blocks. QEMU's disk \
         bytes are the last figures its `query-migrate` showed while block migration ran (it \
         drops them on completion), at least the drive's size. Medians, worst in brackets. CPU \
         steal during the run: {:.0}%.\n\n",
        a.mem, a.disk_mib, a.written_mib, a.qemu_downtime_ms, report.host_steal_percent
    ));
    md.push_str(
        "| link | VMM | pause ms | downtime ms | total ms | MB on the wire | completed | disk ok |\n",
    );
    md.push_str("|---|---|---|---|---|---|---|---|\n");
    for l in &report.links {
        for c in &l.cells {
            md.push_str(&format!(
                "| {} | {} | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.0} ({:.0}) | {:.1} ({:.1}) | {}/{} | {}/{} |\n",
                l.link,
                c.vmm,
                c.guest_pause_ms.median,
                c.guest_pause_ms.max,
                c.downtime_ms.median,
                c.downtime_ms.max,
                c.total_ms.median,
                c.total_ms.max,
                c.bytes.median / 1e6,
                c.bytes.max / 1e6,
                c.completed,
                c.runs.len(),
                c.disk_matched,
                c.completed,
            ));
        }
    }
    md.push_str("\nRatios nova-vmm / QEMU (medians):\n\n| link | pause | total | bytes |\n|---|---|---|---|\n");
    for l in &report.links {
        md.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} |\n",
            l.link, l.pause_ratio, l.total_ratio, l.bytes_ratio
        ));
    }
    md.push_str(
        "\nThe issue's `hiccup` pause meter (a TSC-spinning guest workload) is not in this run: \
         it needs a new test-guest workload; the pause here is the 1 ms tick gap.\n",
    );
    write_report(&a.out, "block-migration", &report, &md)?;
    print!("{md}");
    Ok(())
}
