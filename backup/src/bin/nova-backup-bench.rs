//! nova-backup-bench: measures, on this machine, fixed 4 MiB vs content-defined chunking
//! and BLAKE3 vs SHA-256 hashing, and a full backup (chunk, hash, zstd, write) of a
//! realistic image into a directory store; writes docs/benchmarks/backup-chunking.{json,md}.
//! Usage: nova-backup-bench [--size-mib N] [--out-dir DIR]

use anyhow::{bail, Context, Result};
use nova_backup::chunk::chunk_id;
use nova_backup::chunker::split;
use nova_backup::{Chunking, DirBackend, HashAlgo, Store, StoreConfig};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Serialize)]
struct Row {
    name: String,
    seconds: f64,
    mib_per_s: f64,
    stored_bytes: Option<u64>,
    chunks: Option<u64>,
}

#[derive(Serialize)]
struct Report {
    command: String,
    image_mib: u64,
    image_mix: String,
    cpus: usize,
    loadavg_at_start: String,
    note: String,
    rows: Vec<Row>,
}

const MIB: usize = 1 << 20;

/// Per 16 MiB: 6 MiB of text, 4 MiB of zeros, 6 MiB of incompressible bytes.
fn image(size_mib: usize, seed: u64) -> Vec<u8> {
    let line = b"2026-12-06T21:20:00Z host-7 nova-vmm[4242]: vcpu 0 exit MMIO write 0xfee00000\n";
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(size_mib * MIB);
    while out.len() < size_mib * MIB {
        out.extend(line.iter().cycle().take(6 * MIB));
        out.extend(std::iter::repeat_n(0u8, 4 * MIB));
        out.extend((0..6 * MIB).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        }));
    }
    out.truncate(size_mib * MIB);
    out
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let mut size_mib = 256usize;
    let mut out_dir = PathBuf::from("docs/benchmarks");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--size-mib" => size_mib = args.next().context("--size-mib needs a value")?.parse()?,
            "--out-dir" => out_dir = args.next().context("--out-dir needs a value")?.into(),
            other => bail!("unknown argument {other:?} (use --size-mib N, --out-dir DIR)"),
        }
    }
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string();
    let data = image(size_mib, 1);
    let mib = size_mib as f64;
    let mut rows = Vec::new();
    let mut row = |name: &str, secs: f64, stored: Option<u64>, chunks: Option<u64>| {
        eprintln!("{name}: {secs:.3} s, {:.0} MiB/s", mib / secs);
        rows.push(Row {
            name: name.into(),
            seconds: secs,
            mib_per_s: mib / secs,
            stored_bytes: stored,
            chunks,
        });
    };

    for (name, c) in [
        ("chunking fixed 4 MiB", Chunking::DISK),
        ("chunking CDC 1/4/8 MiB", Chunking::CDC),
    ] {
        let (lens, s) = timed(|| split(c, 0, &data));
        row(name, s, None, Some(lens.len() as u64));
    }
    for (name, algo) in [
        ("hash BLAKE3", HashAlgo::Blake3),
        ("hash SHA-256", HashAlgo::Sha256),
    ] {
        let (_, s) = timed(|| {
            data.chunks(4 * MIB)
                .map(|c| chunk_id(algo, None, c).0[0])
                .fold(0u8, |a, b| a ^ b)
        });
        row(name, s, None, None);
    }

    // Full pipeline, then a second backup of the same image with 4 KiB inserted at the
    // front (a memory file or a tar stream shifts like this; a disk never does).
    let tmp = tempfile::tempdir()?;
    let first_path = tmp.path().join("image");
    std::fs::write(&first_path, &data)?;
    let mut shifted = image(1, 99)[..4096].to_vec();
    shifted.extend_from_slice(&data[..data.len() - 4096]);
    let shifted_path = tmp.path().join("shifted");
    std::fs::write(&shifted_path, &shifted)?;
    drop(shifted);
    for (label, chunking) in [("fixed", Chunking::DISK), ("CDC", Chunking::CDC)] {
        for (hlabel, hash) in [("BLAKE3", HashAlgo::Blake3), ("SHA-256", HashAlgo::Sha256)] {
            let store = Store::new(
                Box::new(DirBackend::open(
                    tmp.path().join(format!("store-{label}-{hlabel}")),
                )?),
                StoreConfig {
                    chunking,
                    hash,
                    ..Default::default()
                },
            );
            let (r, s) = timed(|| store.backup_file("image", &first_path, None, None));
            let r = r?;
            row(
                &format!("backup {label} {hlabel} first"),
                s,
                Some(r.bytes_stored),
                Some(r.chunks_new),
            );
            if hash == HashAlgo::Blake3 {
                let (r, s) = timed(|| store.backup_file("image", &shifted_path, None, None));
                let r = r?;
                row(
                    &format!("backup {label} {hlabel} after 4 KiB insert"),
                    s,
                    Some(r.bytes_stored),
                    Some(r.chunks_new),
                );
            }
        }
    }

    let report = Report {
        command: format!("cargo run --release -p nova-backup --bin nova-backup-bench -- --size-mib {size_mib}"),
        image_mib: size_mib as u64,
        image_mix: "per 16 MiB: 6 MiB log text, 4 MiB zeros, 6 MiB incompressible".into(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        loadavg_at_start: loadavg,
        note: "single-threaded; the machine is shared (2 cores, several concurrent builds), so absolute numbers are noisy; compare rows of one run".into(),
        rows,
    };
    std::fs::create_dir_all(&out_dir)?;
    std::fs::write(
        out_dir.join("backup-chunking.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let mut md = format!(
        "# Backup chunk store: chunking and hashing\n\nCommand: `{}`\n\nImage: {} MiB, {}. CPUs: {}, load average at start: {}.\n\n> {}\n\n| case | seconds | MiB/s | stored bytes | chunks |\n|---|---:|---:|---:|---:|\n",
        report.command, report.image_mib, report.image_mix, report.cpus, report.loadavg_at_start, report.note
    );
    for r in &report.rows {
        // Fixed chunking is offset arithmetic: too fast to time meaningfully.
        let (secs, rate) = if r.seconds < 0.001 {
            ("< 0.001".to_string(), "-".to_string())
        } else {
            (format!("{:.3}", r.seconds), format!("{:.0}", r.mib_per_s))
        };
        md += &format!(
            "| {} | {secs} | {rate} | {} | {} |\n",
            r.name,
            r.stored_bytes.map_or("-".into(), |b| b.to_string()),
            r.chunks.map_or("-".into(), |c| c.to_string())
        );
    }
    let find = |name: &str| report.rows.iter().find(|r| r.name == name);
    if let (Some(b3), Some(sha), Some(fx), Some(cdc)) = (
        find("hash BLAKE3"),
        find("hash SHA-256"),
        find("backup fixed BLAKE3 after 4 KiB insert"),
        find("backup CDC BLAKE3 after 4 KiB insert"),
    ) {
        md += &format!(
            "\n## Reading the table\n\n- Hashing: BLAKE3 is {:.1}x SHA-256's throughput here (one core); \
             in a whole backup zstd and the writes dominate, so the gap narrows. BLAKE3 is the default, \
             SHA-256 stays selectable.\n- Chunking: after 4 KiB inserted at the front, fixed chunks all \
             shift and {:.1}x more bytes are stored than with CDC ({} vs {} bytes). Disks never shift \
             (writes land in place, and the 4 MiB fixed chunks line up with the VMM's dirty bitmap), so \
             disks use fixed 4 MiB; CDC is the option for memory files and streams.\n",
            b3.mib_per_s / sha.mib_per_s,
            fx.stored_bytes.unwrap_or(0) as f64 / cdc.stored_bytes.unwrap_or(1).max(1) as f64,
            fx.stored_bytes.unwrap_or(0),
            cdc.stored_bytes.unwrap_or(0),
        );
    }
    std::fs::write(out_dir.join("backup-chunking.md"), md)?;
    Ok(())
}
