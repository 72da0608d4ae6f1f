//! `make bench-boot`: the test guest booted by nova-vmm and by QEMU microvm, alternated,
//! at 256 MiB and 4 GiB on 1 vCPU: wall time from process start to `NOVA-BOOTED`, and
//! memory used beyond guest pages once booted. Writes docs/benchmarks/boot.{json,md}.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use nova_benches::{rss_kib, write_report, Summary};
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

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let cmdline = "nova.workload=idle";
    let mut rows = Vec::new();
    for mem in [256u64, 4096] {
        let (mut nb, mut nm, mut qb, mut qm) = (vec![], vec![], vec![], vec![]);
        for _ in 0..a.runs {
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
        for (vmm, b, m) in [("nova-vmm", nb, nm), ("qemu-microvm", qb, qm)] {
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
        "Test guest (`nova.workload=idle`), 1 vCPU, runs alternated between the two VMMs. ",
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
    for pair in rows.chunks(2) {
        let (n, q) = (&pair[0], &pair[1]);
        let bt = n.boot_ms.median / q.boot_ms.median;
        let mm = n.overhead_kib.median / q.overhead_kib.median;
        md.push_str(&format!("| {} MiB | {:.3} | {:.3} |\n", n.mem_mib, bt, mm));
        ratios.push(Ratio {
            mem_mib: n.mem_mib,
            boot_time_ratio: bt,
            memory_overhead_ratio: mm,
        });
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
