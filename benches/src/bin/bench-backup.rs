//! bench-backup: backups of a running test-guest VM through nova-hostd, side by side in
//! one run with `restic backup` of the same disk file into a local restic repository.
//! The VM has a 4 GiB raw disk of which 1 GiB is written (deterministic text, zeros and
//! incompressible data). Measured for both: the first backup, the second after 64 MiB
//! of changes, an unchanged VM's second backup (time, bytes read, bytes stored), the
//! restore (time, throughput) and a verify of everything stored (`restic check
//! --read-data`). Then, NovaCron only: SHA-256 against BLAKE3 chunk ids, content-defined
//! against fixed 4 MiB chunks, and an unencrypted store. Writes
//! docs/benchmarks/backup.{json,md}. It is over 500 lines: one linear story (set up, four
//! rounds, report) that reads best in one file.
//!
//! The 64 MiB of changes are written by the host into the disk file while the VM is
//! stopped (the test guest writes only its own checksummed blocks), and marked in the
//! disk's saved backup bitmap exactly as the VMM marks a guest write's 4 MiB blocks.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use content::Content;
use nova_benches::{kill_vmms_under, write_report};
use nova_hostd_api::{
    BackupReport, ChunkHash, ChunkingKind, DiskSpec, HostdClient, JobOp, JobRequest, JobResult,
    JobState, StoreLocation, StoreSpec, VmSpec, VmState,
};
use nova_http::blocking::block_on;
use nova_vmm::devices::virtio::block::backup_log;
use serde::{Deserialize, Serialize};

const MIB: u64 = 1 << 20;
/// The VMM's backup bitmap block (one bit per 4 MiB).
const BLOCK: u64 = nova_vmm_api::BACKUP_BLOCK;
/// The user's key for the encrypted stores (restic always encrypts).
const KEY_HEX: &str = "6e6f76612d62656e63682d6261636b75702d6b65792d33322d62797465732121";
const RESTIC_PASSWORD: &str = "nova-bench-backup";

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
    /// The disk's size, MiB.
    #[arg(long, default_value_t = 4096)]
    disk_mib: u64,
    /// How much of it is written, MiB (a multiple of 16).
    #[arg(long, default_value_t = 1024)]
    data_mib: u64,
    /// The changes before the second backup, MiB (a multiple of 16).
    #[arg(long, default_value_t = 64)]
    change_mib: u64,
    /// Where the VM, the stores and the repository live while the bench runs.
    #[arg(long, default_value = "/var/tmp")]
    work: PathBuf,
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
}

/// Deterministic disk content: log-like text, runs of zeros, incompressible bytes.
mod content {
    /// A xorshift stream: the same seed gives the same disk on every run.
    pub struct Content(u64);

    const WORDS: &[&str] = &[
        "vcpu",
        "exit",
        "mmio",
        "write",
        "read",
        "virtio-blk",
        "queue",
        "notify",
        "irq",
        "tap0",
        "rx",
        "tx",
        "dropped",
        "migration",
        "round",
        "dirty",
        "pages",
        "ok",
        "warn",
        "error",
        "timeout",
        "retry",
        "session",
        "user",
        "login",
        "GET",
        "POST",
        "/api/v1/items",
        "200",
        "404",
        "500",
        "latency_ms",
        "bytes",
        "cache",
        "hit",
        "miss",
        "checkpoint",
    ];

    impl Content {
        pub fn new(seed: u64) -> Content {
            Content(seed | 1)
        }

        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// A number below `n`.
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }

        /// `len` bytes of log lines: a timestamp, a host, a level and a few words and
        /// numbers (compresses like real logs, 3-6x, not like one repeated line).
        pub fn text(&mut self, len: usize) -> Vec<u8> {
            let mut out = Vec::with_capacity(len + 256);
            let mut t = 1_765_000_000_000u64 + self.below(1 << 30);
            while out.len() < len {
                t += self.below(5000);
                let line = format!(
                    "{}.{:03} host-{} nova[{}]: {} {} {} {}={} {}={}\n",
                    t / 1000,
                    t % 1000,
                    self.below(16),
                    1000 + self.below(9000),
                    ["INFO", "DEBUG", "WARN", "ERROR"][self.below(4) as usize],
                    WORDS[self.below(WORDS.len() as u64) as usize],
                    WORDS[self.below(WORDS.len() as u64) as usize],
                    WORDS[self.below(WORDS.len() as u64) as usize],
                    self.below(100_000),
                    WORDS[self.below(WORDS.len() as u64) as usize],
                    self.next() % 0xffff_ffff,
                );
                out.extend_from_slice(line.as_bytes());
            }
            out.truncate(len);
            out
        }

        /// `len` incompressible bytes.
        pub fn noise(&mut self, len: usize) -> Vec<u8> {
            let mut out = Vec::with_capacity(len + 8);
            while out.len() < len {
                out.extend_from_slice(&self.next().to_le_bytes());
            }
            out.truncate(len);
            out
        }

        /// 16 MiB as a region of the disk: text, then zeros, then noise, in sizes that
        /// vary region to region (4 KiB multiples).
        pub fn region(&mut self) -> Vec<u8> {
            const R: usize = 16 << 20;
            let page = 4096usize;
            let text = (4 << 20) + self.below(4 << 8) as usize * page;
            let zeros = (2 << 20) + self.below(4 << 8) as usize * page;
            let mut out = self.text(text);
            out.resize(text + zeros, 0);
            let rest = R - out.len();
            out.extend(self.noise(rest));
            out
        }
    }
}

struct Hostd {
    child: Child,
    dir: PathBuf,
    api: HostdClient,
}

impl Hostd {
    fn start(args: &Args, dir: &Path, images: &Path, backups: &Path) -> anyhow::Result<Hostd> {
        let token = format!("bench-token-{}", std::process::id());
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("token"), &token)?;
        let addr = format!("127.0.0.1:{}", nova_tests::free_port());
        let log = std::fs::File::create(dir.join("hostd.log"))?;
        let child = Command::new(&args.hostd)
            .args(["--listen", &addr, "--insecure-http"])
            .arg("--token-file")
            .arg(dir.join("token"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--vmm-bin")
            .arg(&args.vmm)
            .arg("--image-root")
            .arg(
                args.guest
                    .canonicalize()?
                    .parent()
                    .unwrap_or(Path::new("/")),
            )
            .arg("--image-root")
            .arg(images)
            .arg("--backup-root")
            .arg(backups)
            .env("NOVA_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", args.hostd.display()))?;
        let opts = nova_http::ClientOptions {
            timeout: Duration::from_secs(600),
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

    fn vm_dir(&self, id: &str) -> PathBuf {
        self.dir.join("data/vms").join(id)
    }

    /// Runs a job to its end: its result and seconds from the request to the end.
    fn job(&self, store: &StoreSpec, op: JobOp) -> anyhow::Result<(JobResult, f64)> {
        let t = Instant::now();
        let req = JobRequest {
            store: store.clone(),
            op,
        };
        let job = block_on(self.api.start_backup_job(&req))?;
        loop {
            let j = block_on(self.api.backup_job(&job.id))?;
            match j.state {
                JobState::Running => std::thread::sleep(Duration::from_millis(10)),
                JobState::Succeeded => {
                    let secs = t.elapsed().as_secs_f64();
                    return Ok((j.result.context("a job without a result")?, secs));
                }
                JobState::Failed => bail!("backup job failed: {:?}", j.error),
            }
        }
    }

    fn backup(
        &self,
        store: &StoreSpec,
        vm: &str,
        id: &str,
        previous: Option<&str>,
    ) -> anyhow::Result<(BackupReport, f64)> {
        let (r, secs) = self.job(
            store,
            JobOp::Backup {
                vm_id: vm.into(),
                backup_id: id.into(),
                previous: previous.map(Into::into),
                memory: false,
            },
        )?;
        match r {
            JobResult::Backup(b) => Ok((b, secs)),
            other => bail!("not a backup report: {other:?}"),
        }
    }

    fn wait_state(&self, id: &str, want: VmState) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = block_on(self.api.vm(id))?.state;
            if s == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("VM {id} is {s:?}, not {want:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Hostd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_vmms_under(&self.dir);
    }
}

fn store(path: &Path, hash: ChunkHash, chunking: ChunkingKind, encrypted: bool) -> StoreSpec {
    StoreSpec {
        location: StoreLocation::Dir {
            path: path.display().to_string(),
        },
        hash,
        chunking,
        encryption_key: encrypted.then(|| KEY_HEX.to_string()),
    }
}

/// Bytes of every file under `dir` (apparent sizes: what the store holds).
fn dir_bytes(dir: &Path) -> u64 {
    let mut sum = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            sum += dir_bytes(&e.path());
        } else {
            sum += m.len();
        }
    }
    sum
}

/// Drops `path`'s pages (a file, or every file under a directory) from the page
/// cache, so that each measurement reads from the disk, not from the previous one's
/// cache. Only these files: the rest of the (shared) machine keeps its cache.
fn drop_cache(path: &Path) {
    let Ok(m) = std::fs::metadata(path) else {
        return;
    };
    if m.is_dir() {
        for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
            drop_cache(&e.path());
        }
        return;
    }
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.sync_all();
        // SAFETY: posix_fadvise on an fd we hold open; no memory involved.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

/// Writes the base disk: `data_mib` of 16 MiB regions spread evenly over `disk_mib`.
fn make_base(path: &Path, disk_mib: u64, data_mib: u64) -> anyhow::Result<()> {
    let f = std::fs::File::create(path)?;
    f.set_len(disk_mib * MIB)?;
    let regions = data_mib / 16;
    let stride = disk_mib * MIB / regions.max(1);
    let mut c = Content::new(0x6e6f_7661_6372_6f6e);
    for r in 0..regions {
        f.write_all_at(&c.region(), r * stride)?;
    }
    f.sync_all()?;
    Ok(())
}

/// The changes: `change_mib` in 16 MiB extents at 4 KiB-aligned offsets (content of
/// the same mix), written into the stopped VM's disk file; returns the extents.
fn write_changes(path: &Path, disk_mib: u64, change_mib: u64) -> anyhow::Result<Vec<(u64, u64)>> {
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    let mut c = Content::new(0x6368_616e_6765_7321);
    let mut extents = Vec::new();
    for _ in 0..change_mib / 16 {
        let off = c.below((disk_mib - 16) * MIB / 4096) * 4096;
        f.write_all_at(&c.region(), off)?;
        extents.push((off, 16 * MIB));
    }
    f.sync_all()?;
    Ok(extents)
}

/// Marks `extents` in the disk's saved (clean) backup bitmap, as the VMM marks the 4
/// MiB blocks of a guest write, and records the disk file's identity after the
/// writes, as the VMM's clean exit would (else the next start finds the disk changed
/// while stopped and the backup reads it all).
fn mark_bitmap(
    bitmap: &Path,
    disk: &Path,
    disk_len: u64,
    extents: &[(u64, u64)],
) -> anyhow::Result<u64> {
    let bytes = std::fs::read(bitmap).with_context(|| format!("reading {}", bitmap.display()))?;
    let mut st = backup_log::decode(&bytes, disk_len)
        .map_err(|e| anyhow::anyhow!("the stopped VM's bitmap is not usable: {e}"))?
        .state;
    for &(off, len) in extents {
        for b in off / BLOCK..=(off + len - 1) / BLOCK {
            st.words[(b / 64) as usize] |= 1 << (b % 64);
        }
    }
    let id = backup_log::DiskIdentity::of(disk)?;
    std::fs::write(bitmap, backup_log::encode(&st, false, Some(&id)))?;
    Ok(st.words.iter().map(|w| w.count_ones() as u64).sum())
}

/// The summary line of `restic backup --json`.
#[derive(Deserialize)]
struct ResticSummary {
    message_type: String,
    #[serde(default)]
    data_added: u64,
    #[serde(default)]
    files_changed: u64,
    #[serde(default)]
    files_new: u64,
}

struct Restic {
    repo: PathBuf,
    cache: PathBuf,
}

impl Restic {
    fn cmd(&self) -> Command {
        let mut c = Command::new("restic");
        c.arg("--repo")
            .arg(&self.repo)
            .arg("--cache-dir")
            .arg(&self.cache)
            .env("RESTIC_PASSWORD", RESTIC_PASSWORD)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<(String, f64)> {
        let t = Instant::now();
        let out = self.cmd().args(args).output().context("running restic")?;
        let secs = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "restic {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok((String::from_utf8_lossy(&out.stdout).into_owned(), secs))
    }

    /// `restic backup` of one file: (seconds, the summary).
    fn backup(&self, file: &Path) -> anyhow::Result<(f64, ResticSummary)> {
        let f = file.to_string_lossy();
        let (out, secs) = self.run(&["backup", "--json", &f])?;
        let summary = out
            .lines()
            .filter_map(|l| serde_json::from_str::<ResticSummary>(l).ok())
            .find(|s| s.message_type == "summary")
            .context("restic printed no summary")?;
        Ok((secs, summary))
    }
}

fn restic_version() -> String {
    Command::new("restic")
        .arg("version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

/// Whether two files have the same bytes (`cmp`).
fn same_bytes(a: &Path, b: &Path) -> anyhow::Result<bool> {
    Ok(Command::new("cmp")
        .arg("-s")
        .arg(a)
        .arg(b)
        .status()
        .context("running cmp")?
        .success())
}

#[derive(Serialize, Clone)]
struct Row {
    /// `first`, `second`, `unchanged`, `restore`, `verify`, or a variant's name.
    case: String,
    system: String,
    seconds: f64,
    /// Bytes the backup read from the disk (restic: the file, whole, when it changed).
    bytes_read: Option<u64>,
    /// Growth of the store (or repository) on disk.
    bytes_stored: Option<u64>,
    /// The guest's pause for the checkpoint (NovaCron).
    paused_ms: Option<f64>,
    /// Throughput over the disk's size (restore).
    mib_per_s: Option<f64>,
    note: String,
}

#[derive(Serialize)]
struct Target {
    target: String,
    measured: String,
    met: bool,
}

#[derive(Serialize)]
struct Report {
    command: String,
    restic: String,
    disk_mib: u64,
    data_mib: u64,
    change_mib: u64,
    content: String,
    changes: String,
    cpus: usize,
    loadavg_at_start: String,
    rows: Vec<Row>,
    targets: Vec<Target>,
}

fn row(case: &str, system: &str, seconds: f64) -> Row {
    Row {
        case: case.into(),
        system: system.into(),
        seconds,
        bytes_read: None,
        bytes_stored: None,
        paused_ms: None,
        mib_per_s: None,
        note: String::new(),
    }
}

fn nova_row(case: &str, system: &str, r: &BackupReport, secs: f64, stored: u64) -> Row {
    let f = &r.files[0];
    Row {
        bytes_read: Some(r.bytes_read),
        bytes_stored: Some(stored),
        paused_ms: Some(r.paused_ms),
        note: match (&f.full_read_reason, f.full_read) {
            (Some(why), true) => format!("read all: {why}"),
            _ => format!("incremental: {} chunks new", f.chunks_new),
        },
        ..row(case, system, secs)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cmdline = std::env::args().collect::<Vec<_>>().join(" ");
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string();
    let work = args
        .work
        .join(format!("nova-bench-backup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let result = run(&args, &work);
    kill_vmms_under(&work);
    let _ = std::fs::remove_dir_all(&work);
    let (rows, targets) = result?;
    let report = Report {
        command: "make bench-backup".into(),
        restic: restic_version(),
        disk_mib: args.disk_mib,
        data_mib: args.data_mib,
        change_mib: args.change_mib,
        content: "per 16 MiB region (spread evenly over the disk): 4-8 MiB of log lines, 2-6 MiB of zeros, the rest incompressible".into(),
        changes: format!(
            "{} MiB in 16 MiB extents at random 4 KiB-aligned offsets, same mix, written into the disk file while the VM is stopped and marked in its saved backup bitmap as the VMM marks guest writes",
            args.change_mib
        ),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        loadavg_at_start: loadavg,
        rows,
        targets,
    };
    eprintln!("{cmdline}");
    let md = markdown(&report);
    write_report(&args.out, "backup", &report, &md)?;
    print!("{md}");
    Ok(())
}

fn run(args: &Args, work: &Path) -> anyhow::Result<(Vec<Row>, Vec<Target>)> {
    let images = work.join("images");
    let backups = work.join("backups");
    std::fs::create_dir_all(&images)?;
    std::fs::create_dir_all(&backups)?;
    let base = images.join("base.raw");
    eprintln!("writing the {} MiB base disk", args.disk_mib);
    make_base(&base, args.disk_mib, args.data_mib)?;
    let h = Hostd::start(args, &work.join("hostd"), &images, &backups)?;
    let vm = "bk";
    block_on(h.api.create(&VmSpec {
        id: Some(vm.into()),
        name: vm.into(),
        vcpus: 1,
        mem_mib: 64,
        kernel: args.guest.canonicalize()?.to_string_lossy().into_owned(),
        initrd: None,
        cmdline: Some("nova.workload=counter".into()),
        disks: vec![DiskSpec {
            image: Some(base.display().to_string()),
            size_mib: Some(args.disk_mib),
            read_only: false,
            shared_path: None,
        }],
        nics: Vec::new(),
        restart: Default::default(),
        start: true,
        cloud_init: None,
    }))?;
    h.wait_state(vm, VmState::Running)?;
    // hostd copied it into its image cache: the disk space goes to the stores.
    std::fs::remove_file(&base)?;
    let disk = h.vm_dir(vm).join("disks/disk0.raw");
    let bitmap = h.vm_dir(vm).join("run/disk0.bitmap");
    let disk_len = std::fs::metadata(&disk)?.len();
    let restic = Restic {
        repo: work.join("restic-repo"),
        cache: work.join("restic-cache"),
    };
    restic.run(&["init"])?;
    restic.run(&["--quiet", "snapshots"])?;

    let main = store(
        &backups.join("main"),
        ChunkHash::Blake3,
        ChunkingKind::Fixed,
        true,
    );
    let variants = [
        (
            "SHA-256 ids",
            store(
                &backups.join("sha256"),
                ChunkHash::Sha256,
                ChunkingKind::Fixed,
                true,
            ),
        ),
        (
            "CDC chunks",
            store(
                &backups.join("cdc"),
                ChunkHash::Blake3,
                ChunkingKind::Cdc,
                true,
            ),
        ),
        (
            "unencrypted",
            store(
                &backups.join("plain"),
                ChunkHash::Blake3,
                ChunkingKind::Fixed,
                false,
            ),
        ),
    ];
    let path_of = |s: &StoreSpec| match &s.location {
        StoreLocation::Dir { path } => PathBuf::from(path),
        StoreLocation::S3 { .. } => unreachable!("directory stores only"),
    };
    let mut rows = Vec::new();
    let nova = "NovaCron (hostd)";
    let nova_backup = |rows: &mut Vec<Row>,
                       case: &str,
                       system: &str,
                       s: &StoreSpec,
                       id: &str,
                       prev: Option<&str>|
     -> anyhow::Result<BackupReport> {
        drop_cache(&disk);
        let before = dir_bytes(&path_of(s));
        let (r, secs) = h.backup(s, vm, id, prev)?;
        let stored = dir_bytes(&path_of(s)) - before;
        eprintln!(
            "{system} {case}: {secs:.2} s, read {} MiB, stored {:.1} MiB, paused {:.0} ms",
            r.bytes_read / MIB,
            stored as f64 / MIB as f64,
            r.paused_ms
        );
        rows.push(nova_row(case, system, &r, secs, stored));
        Ok(r)
    };
    let restic_backup = |rows: &mut Vec<Row>, case: &str| -> anyhow::Result<()> {
        drop_cache(&disk);
        let before = dir_bytes(&restic.repo);
        let (secs, s) = restic.backup(&disk)?;
        let stored = dir_bytes(&restic.repo) - before;
        let changed = s.files_changed + s.files_new > 0;
        eprintln!(
            "restic {case}: {secs:.2} s, stored {:.1} MiB",
            stored as f64 / MIB as f64
        );
        rows.push(Row {
            bytes_read: Some(if changed { disk_len } else { 0 }),
            bytes_stored: Some(stored),
            note: format!(
                "{}; {} B of new data",
                if changed {
                    "the file changed: read whole"
                } else {
                    "the file is unchanged (size, mtime): not read"
                },
                s.data_added
            ),
            ..row(case, "restic", secs)
        });
        Ok(())
    };

    // Round 1: the first backup. The variants go first so that the main store's
    // checkpoint is the last one, the one the VMM's bitmap counts from.
    for (name, s) in &variants {
        nova_backup(&mut rows, "first", name, s, "v-1", None)?;
    }
    nova_backup(&mut rows, "first", nova, &main, "b-1", None)?;
    restic_backup(&mut rows, "first")?;

    // Round 2: 64 MiB of changes, written while the VM is stopped.
    block_on(h.api.stop(vm, false))?;
    h.wait_state(vm, VmState::Stopped)?;
    let extents = write_changes(&disk, args.disk_mib, args.change_mib)?;
    let marked = mark_bitmap(&bitmap, &disk, disk_len, &extents)?;
    eprintln!(
        "{} MiB changed in {} extents, {marked} blocks of 4 MiB marked",
        args.change_mib,
        extents.len()
    );
    block_on(h.api.start(vm))?;
    h.wait_state(vm, VmState::Running)?;
    nova_backup(&mut rows, "second", nova, &main, "b-2", Some("b-1"))?;
    restic_backup(&mut rows, "second")?;
    // Round 3: nothing changed since b-2.
    nova_backup(&mut rows, "unchanged", nova, &main, "b-3", Some("b-2"))?;
    restic_backup(&mut rows, "unchanged")?;
    // Last (its checkpoint restarts the bitmap the main store's chain follows): CDC
    // cannot follow the 4 MiB bitmap, its second backup reads everything.
    let (name, cdc) = &variants[1];
    nova_backup(&mut rows, "second", name, cdc, "v-2", Some("v-1"))?;

    // Restore the second backup on this host (a new VM, not started); restic
    // restores the file into a directory.
    let restored_vm = "bk-restored";
    drop_cache(&backups);
    let mut spec = block_on(h.api.vm(vm))?.spec;
    spec.id = Some(restored_vm.into());
    spec.name = restored_vm.into();
    spec.start = false;
    let (r, secs) = h.job(
        &main,
        JobOp::Restore {
            backup_id: "b-2".into(),
            spec: Box::new(spec),
        },
    )?;
    let JobResult::Restore(rr) = r else {
        bail!("not a restore report")
    };
    let ours = h.vm_dir(&rr.vm_id).join("disks/disk0.raw");
    rows.push(Row {
        mib_per_s: Some(disk_len as f64 / MIB as f64 / secs),
        note: format!(
            "{} B written; sparse where the disk had holes",
            rr.bytes_written
        ),
        ..row("restore", nova, secs)
    });
    if !same_bytes(&disk, &ours)? {
        bail!("NovaCron's restore differs from the disk");
    }
    block_on(h.api.delete(&rr.vm_id))?;
    drop_cache(&restic.repo);
    let target = work.join("restic-restore");
    let (_, rsecs) = restic.run(&["restore", "latest", "--target", &target.to_string_lossy()])?;
    let theirs = target.join(disk.strip_prefix("/").unwrap_or(&disk));
    rows.push(Row {
        mib_per_s: Some(disk_len as f64 / MIB as f64 / rsecs),
        note: "restic restore latest --target DIR".into(),
        ..row("restore", "restic", rsecs)
    });
    eprintln!("restore: {secs:.2} s, restic {rsecs:.2} s");
    if !same_bytes(&disk, &theirs)? {
        bail!("restic's restore differs from the disk");
    }
    std::fs::remove_dir_all(&target)?;

    // Verify: re-read and re-hash every chunk.
    drop_cache(&backups);
    let (r, secs) = h.job(
        &main,
        JobOp::Verify {
            backup_id: "b-2".into(),
        },
    )?;
    let JobResult::Verify(v) = r else {
        bail!("not a verify report")
    };
    if !v.damaged.is_empty() {
        bail!("verify found damage: {:?}", v.damaged);
    }
    rows.push(Row {
        note: format!(
            "{} chunks of the backup re-read and re-hashed",
            v.chunks_checked
        ),
        ..row("verify", nova, secs)
    });
    drop_cache(&restic.repo);
    let (_, rsecs) = restic.run(&["check", "--read-data"])?;
    rows.push(Row {
        note: "restic check --read-data (every pack of the repository)".into(),
        ..row("verify", "restic", rsecs)
    });
    eprintln!("verify: {secs:.2} s, restic {rsecs:.2} s");

    let targets = targets(&rows);
    Ok((rows, targets))
}

fn find<'a>(rows: &'a [Row], case: &str, system: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.case == case && r.system == system)
}

fn targets(rows: &[Row]) -> Vec<Target> {
    let nova = "NovaCron (hostd)";
    let mut out = Vec::new();
    let mib = |b: Option<u64>| b.unwrap_or(u64::MAX) as f64 / MIB as f64;
    if let (Some(n), Some(r)) = (find(rows, "first", nova), find(rows, "first", "restic")) {
        out.push(Target {
            target: "first backup no slower than restic".into(),
            measured: format!("{:.2} s vs {:.2} s", n.seconds, r.seconds),
            met: n.seconds <= r.seconds,
        });
    }
    if let Some(n) = find(rows, "second", nova) {
        out.push(Target {
            target: "second backup reads < 100 MiB".into(),
            measured: format!("{:.1} MiB", mib(n.bytes_read)),
            met: mib(n.bytes_read) < 100.0,
        });
        out.push(Target {
            target: "second backup stores < 70 MiB".into(),
            measured: format!("{:.1} MiB", mib(n.bytes_stored)),
            met: mib(n.bytes_stored) < 70.0,
        });
    }
    if let Some(n) = find(rows, "unchanged", nova) {
        out.push(Target {
            target: "unchanged VM's backup stores < 1 MiB".into(),
            measured: format!("{:.3} MiB", mib(n.bytes_stored)),
            met: mib(n.bytes_stored) < 1.0,
        });
    }
    if let (Some(n), Some(r)) = (find(rows, "restore", nova), find(rows, "restore", "restic")) {
        let (a, b) = (n.mib_per_s.unwrap_or(0.0), r.mib_per_s.unwrap_or(0.0));
        out.push(Target {
            target: "restore throughput >= restic's".into(),
            measured: format!("{a:.0} MiB/s vs {b:.0} MiB/s"),
            met: a >= b,
        });
    }
    out
}

fn markdown(r: &Report) -> String {
    let nova = "NovaCron (hostd)";
    let mib =
        |b: Option<u64>| b.map_or("-".to_string(), |b| format!("{:.1}", b as f64 / MIB as f64));
    let mut md = format!(
        "# Backups: NovaCron against restic\n\nCommand: `{}` (release build; `bench-backup` in `benches/`).\n\n\
         A running test-guest VM with a {} MiB raw disk, {} MiB of it written ({}). \
         NovaCron backs it up through hostd (`POST /v1/backup-jobs`: a VMM checkpoint, then \
         chunks into a directory store: fixed 4 MiB chunks, BLAKE3 ids, zstd level 1, \
         encrypted with a user key), {} backs up the same disk file into a local repository \
         (always encrypted; zstd `auto`). Changes before the second backup: {}. \
         Each measurement starts with the files it reads dropped from the page cache. \
         CPUs: {}, load average at start: {} (a shared machine: compare columns of one run).\n\n",
        r.command, r.disk_mib, r.data_mib, r.content, r.restic, r.changes, r.cpus, r.loadavg_at_start
    );
    md += "| | NovaCron s | restic s | restic/NovaCron time | NovaCron read MiB | restic read MiB | NovaCron stored MiB | restic stored MiB | guest paused ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for case in ["first", "second", "unchanged", "restore", "verify"] {
        let (Some(n), Some(rs)) = (find(&r.rows, case, nova), find(&r.rows, case, "restic")) else {
            continue;
        };
        md += &format!(
            "| {case} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} |\n",
            n.seconds,
            rs.seconds,
            rs.seconds / n.seconds,
            mib(n.bytes_read),
            mib(rs.bytes_read),
            mib(n.bytes_stored),
            mib(rs.bytes_stored),
            n.paused_ms.map_or("-".into(), |p| format!("{p:.0}")),
        );
    }
    md += "\nA ratio above 1 means NovaCron took less time.\n\n";
    if let (Some(n), Some(rs)) = (
        find(&r.rows, "restore", nova),
        find(&r.rows, "restore", "restic"),
    ) {
        md += &format!(
            "Restore throughput over the {} MiB disk: NovaCron {:.0} MiB/s, restic {:.0} MiB/s ({:.2}x). Both restored files were compared byte for byte with the disk.\n\n",
            r.disk_mib,
            n.mib_per_s.unwrap_or(0.0),
            rs.mib_per_s.unwrap_or(0.0),
            n.mib_per_s.unwrap_or(0.0) / rs.mib_per_s.unwrap_or(f64::NAN)
        );
    }
    md += "## Targets (issue 15)\n\n| target | measured | met |\n|---|---|---|\n";
    for t in &r.targets {
        md += &format!(
            "| {} | {} | {} |\n",
            t.target,
            t.measured,
            if t.met { "yes" } else { "**no**" }
        );
    }
    md += "\n## Chunk ids, chunking and encryption (NovaCron, same run)\n\n| store | case | s | read MiB | stored MiB | guest paused ms | |\n|---|---|---:|---:|---:|---:|---|\n";
    for row in r.rows.iter().filter(|x| x.system != "restic") {
        if matches!(row.case.as_str(), "restore" | "verify") {
            continue;
        }
        md += &format!(
            "| {} | {} | {:.2} | {} | {} | {} | {} |\n",
            row.system,
            row.case,
            row.seconds,
            mib(row.bytes_read),
            mib(row.bytes_stored),
            row.paused_ms.map_or("-".into(), |p| format!("{p:.0}")),
            row.note
        );
    }
    md += "\nAll rows: `backup.json`. The chunk store alone (no VM, no hostd: chunking and \
           hashing throughput, CDC after an insertion) is measured by `nova-backup-bench`: \
           `backup-chunking.md`.\n";
    md
}
