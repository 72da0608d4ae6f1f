//! `make bench-boot`: the test guest booted by nova-vmm (bare, and in hostd's jail) and
//! by QEMU microvm, alternated, at 256 MiB and 4 GiB on 1 vCPU: wall time from process
//! start to `NOVA-BOOTED`, and memory used beyond guest pages once booted; and the small Linux kernel
//! (`nova-linux`, ACPI on under both) from process start to its `virtio_blk` probe
//! line, the disk found through the DSDT. Writes docs/benchmarks/boot.{json,md}.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use nova_benches::{jail, rss_kib, write_report, StealSample, Summary};
use nova_tests::linux;
use nova_tests::net::NetNs;
use nova_tests::vmm::{qemu_microvm, QemuRam, VmmCmd};
use nova_tests::{Console, TempDir};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    vmm: PathBuf,
    #[arg(long)]
    guest: PathBuf,
    #[arg(long, default_value_t = 10)]
    runs: usize,
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
    /// Boots of the small Linux kernel per VMM (each takes tens of seconds on a PVM
    /// host, in KVM's emulator); 0 leaves the Linux rows out.
    #[arg(long, default_value_t = 3)]
    linux_runs: usize,
}

#[derive(Serialize)]
struct LinuxRow {
    vmm: &'static str,
    probe_ms: Summary,
    samples_probe_ms: Vec<f64>,
}

#[derive(Serialize)]
struct Row {
    mem_mib: u64,
    vmm: &'static str,
    boot_ms: Summary,
    overhead_kib: Summary,
    samples_boot_ms: Vec<f64>,
    samples_overhead_kib: Vec<f64>,
}

#[derive(Serialize)]
struct Ratio {
    mem_mib: u64,
    vmm: &'static str,
    boot_time_ratio: f64,
    memory_overhead_ratio: f64,
}

#[derive(Serialize)]
struct Report {
    command: String,
    /// How cgroup2's favordynmods was found or set, as hostd does at start.
    cgroup_favordynmods: &'static str,
    rows: Vec<Row>,
    ratios: Vec<Ratio>,
    linux_rows: Vec<LinuxRow>,
    /// nova-vmm's median over QEMU's, to the `virtio_blk` probe.
    linux_probe_ratio: Option<f64>,
    /// /proc/loadavg when the runs started and when they ended (other work on the
    /// machine spreads millisecond timings for every VMM alike).
    loadavg_start: String,
    loadavg_end: String,
    /// CPU time the hypervisor under this machine gave to others during the runs.
    host_steal_percent: f64,
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The small kernel booted once under `vmm` (nova-vmm: the binary at `nova`) with a
/// fresh root disk and a NIC on a tap: ms from the process start to `virtio_blk
/// virtioN: [vda]`.
fn linux_once(vmm: linux::Vmm, nova: &Path) -> anyhow::Result<f64> {
    let dir = TempDir::new();
    let disk = linux::root_disk(&dir);
    let ns = NetNs::new();
    ns.add_tap("btap0", &format!("{}/24", linux::HOST_IP));
    let vm = match vmm {
        linux::Vmm::Nova => linux::spawn_nova(linux::nova_cmd_of(nova, &disk, "btap0"), &ns),
        linux::Vmm::Qemu => linux::boot(vmm, &disk, &ns, "btap0"),
    };
    let (_, probe) = vm
        .console
        .try_wait_for_from(0, Duration::from_secs(300), |l| {
            l.text.contains("virtio_blk virtio") && l.text.contains("[vda]")
        })
        .map_err(anyhow::Error::msg)?;
    Ok(probe
        .at
        .saturating_duration_since(vm.console.started)
        .as_secs_f64()
        * 1000.0)
}

/// A booting guest (just spawned) timed to its marker; returns (ms from the process
/// start to NOVA-BOOTED, KiB beyond guest pages after settling).
fn boot_once(mut guest: Console) -> anyhow::Result<(f64, f64)> {
    let booted = guest
        .try_wait_line("NOVA-BOOTED", Duration::from_secs(30))
        .map_err(anyhow::Error::msg)?;
    let elapsed = booted.at.saturating_duration_since(guest.started);
    // Let the guest settle (idle: it halts) before reading memory.
    std::thread::sleep(Duration::from_millis(300));
    let (own, _guest) = rss_kib(guest.pid())?;
    guest.kill();
    Ok((elapsed.as_secs_f64() * 1000.0, own as f64))
}

/// The uid of the benchmark's jailed VMMs (the last of hostd's default range).
const BENCH_UID: u32 = 399_999;

/// nova-vmm started as hostd starts it: in its jail (own uid, a mount namespace
/// holding its files only, cgroups, rlimits, no_new_privs), seccomp on. `dir` is the
/// VMM's run directory. The jail is dropped after the VMM.
fn jailed(
    a: &Args,
    dir: &Path,
    vm_id: &str,
    mem: u64,
    cmdline: &str,
) -> anyhow::Result<(Console, jail::Jail)> {
    let (vmm, guest) = (a.vmm.canonicalize()?, a.guest.canonicalize()?);
    let mut cmd = std::process::Command::new(&vmm);
    cmd.arg("run")
        .arg("--kernel")
        .arg(&guest)
        .args(["--vcpus", "1", "--mem-mib", &mem.to_string()])
        .args(["--cmdline", cmdline])
        .env("NOVA_LOG", "error")
        .current_dir(dir);
    let j = jail::jail(
        &mut cmd,
        jail::Spec {
            uid: BENCH_UID,
            vm_id: vm_id.to_string(),
            read_only: vec![vmm, guest],
            read_write: vec![dir.to_path_buf()],
            workdir: dir.to_path_buf(),
            vcpus: 1,
            mem_mib: mem,
        },
    )?;
    Ok((jail::spawn(cmd)?, j))
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    // As hostd does at start: fast cgroup attach for the jailed VMMs.
    let favordynmods = jail::favor_dynmods();
    let loadavg_start = loadavg();
    let steal = StealSample::now();
    let cmdline = "nova.workload=idle";
    let mut rows = Vec::new();
    for mem in [256u64, 4096] {
        let (mut nb, mut nm, mut qb, mut qm) = (vec![], vec![], vec![], vec![]);
        let (mut jb, mut jm) = (vec![], vec![]);
        for run in 0..a.runs {
            let dir = TempDir::new();
            let vm_id = format!("bench-boot-{}-{mem}-{run}", std::process::id());
            let (console, jail) = jailed(&a, dir.path(), &vm_id, mem, cmdline)?;
            let booted = boot_once(console);
            drop(jail);
            let (b, m) = booted?;
            jb.push(b);
            jm.push(m);
            let nova = VmmCmd::of(&a.vmm)
                .arg("--kernel")
                .arg(&a.guest)
                .args(["--vcpus", "1", "--mem-mib", &mem.to_string()])
                .args(["--cmdline", cmdline])
                .env("NOVA_LOG", "error")
                .realtime_console()
                .spawn();
            let (b, m) = boot_once(nova.console)?;
            nb.push(b);
            nm.push(m);
            let qemu = qemu_microvm(&a.guest, mem, 1, cmdline, QemuRam::Memfd);
            let (b, m) = boot_once(Console::spawn_realtime(qemu))?;
            qb.push(b);
            qm.push(m);
        }
        for (vmm, b, m) in [
            ("nova-vmm", nb, nm),
            ("nova-vmm jailed", jb, jm),
            ("qemu-microvm", qb, qm),
        ] {
            rows.push(Row {
                mem_mib: mem,
                vmm,
                boot_ms: Summary::of(&b),
                overhead_kib: Summary::of(&m),
                samples_boot_ms: b,
                samples_overhead_kib: m,
            });
        }
    }
    let (mut ln, mut lq) = (vec![], vec![]);
    for _ in 0..a.linux_runs {
        ln.push(linux_once(linux::Vmm::Nova, &a.vmm)?);
        lq.push(linux_once(linux::Vmm::Qemu, &a.vmm)?);
    }
    let linux_rows: Vec<LinuxRow> = if a.linux_runs == 0 {
        Vec::new()
    } else {
        [("nova-vmm", ln), ("qemu-microvm", lq)]
            .into_iter()
            .map(|(vmm, v)| LinuxRow {
                vmm,
                probe_ms: Summary::of(&v),
                samples_probe_ms: v,
            })
            .collect()
    };
    let linux_probe_ratio = (linux_rows.len() == 2)
        .then(|| linux_rows[0].probe_ms.median / linux_rows[1].probe_ms.median);
    let loadavg_end = loadavg();
    let host_steal_percent = steal.percent_since();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let command = format!(
        "make bench-boot  # bench-boot --vmm {} --guest {} --runs {} --linux-runs {}",
        a.vmm.display(),
        a.guest.display(),
        a.runs,
        a.linux_runs
    );
    let mut md =
        String::from("# Boot: process start to `NOVA-BOOTED`, and memory beyond guest pages\n\n");
    md.push_str(&format!("Command: `{command}`\n\n"));
    md.push_str(
        "Test guest (`nova.workload=idle`), 1 vCPU, runs alternated between the VMMs. \
         `nova-vmm` runs bare with its seccomp filters; `nova-vmm jailed` as hostd starts it \
         (own uid, a mount namespace holding its files only, a PID namespace, cgroup limits, rlimits, \
         no_new_privs, seccomp filters), entering the jail included in its time. ",
    );
    md.push_str(&format!(
        "cgroup2 `favordynmods`: {favordynmods} (set as hostd does at start, \
         `--cgroup-favordynmods`; without it, a jailed VMM's first cgroup attach waits for \
         an RCU grace period, about 13 ms here). "
    ));
    md.push_str(&format!(
        "Machine load (`/proc/loadavg`, 1/5/15-minute averages on {cores} cores shared with other \
         builds and tests): {loadavg_start} when the runs started, {loadavg_end} when they ended; \
         CPU steal {host_steal_percent:.1}%. Every cell alternates the VMMs run by run, so load \
         spreads all three alike; the medians are the figures to compare. "
    ));
    md.push_str("QEMU: `qemu-system-x86_64 -M microvm -enable-kvm -cpu host,-arch-capabilities`, guest RAM in a memfd ");
    md.push_str("like nova-vmm's, so memory beyond guest pages is RssAnon + RssFile of the process 300 ms after boot.\n\n");
    md.push_str("| memory | VMM | boot median ms | min | max | beyond-guest median MiB | min | max |\n|---|---|---|---|---|---|---|---|\n");
    for r in &rows {
        md.push_str(&format!(
            "| {} MiB | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            r.mem_mib,
            r.vmm,
            r.boot_ms.median,
            r.boot_ms.min,
            r.boot_ms.max,
            r.overhead_kib.median / 1024.0,
            r.overhead_kib.min / 1024.0,
            r.overhead_kib.max / 1024.0
        ));
    }
    md.push_str(
        "\n| memory | boot time nova/QEMU | memory beyond guest nova/QEMU |\n|---|---|---|\n",
    );
    let mut ratios = Vec::new();
    for group in rows.chunks(3) {
        let q = &group[2];
        for n in &group[..2] {
            let bt = n.boot_ms.median / q.boot_ms.median;
            let mm = n.overhead_kib.median / q.overhead_kib.median;
            md.push_str(&format!(
                "| {} MiB, {} | {:.3} | {:.3} |\n",
                n.mem_mib, n.vmm, bt, mm
            ));
            ratios.push(Ratio {
                mem_mib: n.mem_mib,
                vmm: n.vmm,
                boot_time_ratio: bt,
                memory_overhead_ratio: mm,
            });
        }
    }
    if let Some(ratio) = linux_probe_ratio {
        md.push_str("\n## Linux: process start to the `virtio_blk` probe\n\n");
        md.push_str(&format!(
            "The small kernel (`guest-images/out/nova-linux`, Debian's linux-source 6.1), 1 vCPU, \
             {} MiB, a fresh ext4 root disk and a NIC on a tap; ACPI on under both VMMs, the \
             command line names no device (`{}`). QEMU: `-M microvm,acpi=on,pcie=off,rtc=off,\
             auto-kernel-cmdline=off`. Time from the process start to the kernel's `virtio_blk \
             virtioN: [vda]` line. On a PVM host the kernel runs in KVM's instruction emulator: \
             this compares the VMMs' machine descriptions and device paths, not raw speed.\n\n",
            linux::MEM_MIB,
            linux::cmdline()
        ));
        md.push_str("| VMM | probe median ms | min | max | runs |\n|---|---|---|---|---|\n");
        for r in &linux_rows {
            md.push_str(&format!(
                "| {} | {:.0} | {:.0} | {:.0} | {} |\n",
                r.vmm,
                r.probe_ms.median,
                r.probe_ms.min,
                r.probe_ms.max,
                r.samples_probe_ms.len()
            ));
        }
        md.push_str(&format!("\nnova/QEMU, to the probe: {ratio:.3}\n"));
    }
    let report = Report {
        command,
        cgroup_favordynmods: favordynmods,
        rows,
        ratios,
        linux_rows,
        linux_probe_ratio,
        loadavg_start,
        loadavg_end,
        host_steal_percent,
    };
    write_report(&a.out, "boot", &report, &md)?;
    print!("{md}");
    Ok(())
}
