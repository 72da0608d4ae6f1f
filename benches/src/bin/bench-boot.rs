//! `make bench-boot`: the test guest booted by nova-vmm and by QEMU microvm, alternated,
//! at 256 MiB and 4 GiB on 1 vCPU: wall time from process start to `NOVA-BOOTED`, and
//! memory used beyond guest pages once booted. nova-vmm three ways: as hostd starts
//! it (in hostd's jail, seccomp on), bare with seccomp on, and bare with
//! `--no-seccomp`. Writes docs/benchmarks/boot.{json,md}.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use nova_benches::{rss_kib, write_report, Summary};
use nova_hostd::jail::{cgroup::Cgroups, JailSpec};
use nova_tests::vmm::{qemu_microvm, QemuRam, VmmCmd};
use nova_tests::Console;
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
    rows: Vec<Row>,
    ratios: Vec<Ratio>,
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

/// nova-vmm started as hostd starts it: in its jail (uid, mount namespace with its
/// files only, cgroups, rlimits), seccomp on.
fn jailed(a: &Args, mem: u64, cmdline: &str, n: usize) -> anyhow::Result<Console> {
    use std::os::unix::process::CommandExt;
    let dir = std::env::temp_dir().join(format!("nova-bench-jail-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let vmm = a.vmm.canonicalize()?;
    let spec = JailSpec {
        vm_id: format!("bench-{}-{n}", std::process::id()),
        uid: BENCH_UID,
        root: dir.join("root"),
        workdir: dir.clone(),
        read_only: vec![vmm.clone(), a.guest.canonicalize()?],
        read_write: vec![],
        vcpus: 1,
        mem_mib: mem,
        max_file_bytes: 1 << 30,
    };
    let prepared = spec.prepare(&Cgroups::detect())?;
    let mut cmd = std::process::Command::new(&vmm);
    cmd.arg("run")
        .arg("--kernel")
        .arg(a.guest.canonicalize()?)
        .args(["--vcpus", "1", "--mem-mib", &mem.to_string()])
        .args(["--cmdline", cmdline])
        .env("NOVA_LOG", "error")
        .current_dir(&dir);
    // SAFETY: `enter` makes syscalls only, on data computed before the fork.
    unsafe {
        cmd.pre_exec(move || prepared.enter());
    }
    Ok(Console::spawn_realtime(cmd))
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let cmdline = "nova.workload=idle";
    let mut rows = Vec::new();
    let mut n = 0;
    for mem in [256u64, 4096] {
        let (mut jb, mut jm, mut nb, mut nm) = (vec![], vec![], vec![], vec![]);
        let (mut ub, mut um, mut qb, mut qm) = (vec![], vec![], vec![], vec![]);
        for _ in 0..a.runs {
            n += 1;
            let (b, m) = boot_once(jailed(&a, mem, cmdline, n)?)?;
            jb.push(b);
            jm.push(m);
            for (flags, bs, ms) in [
                (&[][..], &mut nb, &mut nm),
                (&["--no-seccomp"][..], &mut ub, &mut um),
            ] {
                let nova = VmmCmd::of(&a.vmm)
                    .arg("--kernel")
                    .arg(&a.guest)
                    .args(["--vcpus", "1", "--mem-mib", &mem.to_string()])
                    .args(["--cmdline", cmdline])
                    .args(flags)
                    .env("NOVA_LOG", "error")
                    .realtime_console()
                    .spawn();
                let (b, m) = boot_once(nova.console)?;
                bs.push(b);
                ms.push(m);
            }
            let qemu = qemu_microvm(&a.guest, mem, 1, cmdline, QemuRam::Memfd);
            let (b, m) = boot_once(Console::spawn_realtime(qemu))?;
            qb.push(b);
            qm.push(m);
        }
        for (vmm, b, m) in [
            ("nova-vmm jailed + seccomp", jb, jm),
            ("nova-vmm seccomp", nb, nm),
            ("nova-vmm --no-seccomp", ub, um),
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
    let command = format!(
        "make bench-boot  # bench-boot --vmm {} --guest {} --runs {}",
        a.vmm.display(),
        a.guest.display(),
        a.runs
    );
    let mut md =
        String::from("# Boot: process start to `NOVA-BOOTED`, and memory beyond guest pages\n\n");
    md.push_str(&format!("Command: `{command}`\n\n"));
    md.push_str(
        "Test guest (`nova.workload=idle`), 1 vCPU, runs alternated between the VMMs. \
         nova-vmm as hostd starts it (its jail: own uid, mount namespace holding its files \
         only, cgroups, rlimits, no_new_privs; seccomp filters on), bare with its seccomp \
         filters, and bare with `--no-seccomp`; the jailed time includes entering the jail. ",
    );
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
    for group in rows.chunks(4) {
        let q = &group[3];
        for n in &group[..3] {
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
    let report = Report {
        command,
        rows,
        ratios,
    };
    write_report(&a.out, "boot", &report, &md)?;
    print!("{md}");
    Ok(())
}
