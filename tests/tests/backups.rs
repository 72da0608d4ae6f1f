//! Backups of running VMs into a deduplicating chunk store, with real hostds and real
//! VMMs running the test guest's `disk` workload: a first backup reads the disk, a
//! second reads only the 4 MiB blocks the guest wrote (the VMM's bitmap, which survives
//! a VMM restart), a restore on another host is byte-identical to the disk at the
//! checkpoint and boots with the guest's blocks verified.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nova_hostd_api::{
    BackupReport, ChunkHash, ChunkingKind, JobOp, JobRequest, JobResult, JobState, StoreLocation,
    StoreSpec, VmState,
};
use nova_tests::hostd::{guest, Hostd, Opts};
use nova_tests::{require_kvm, wait_for, TempDir};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
const BOOT: Duration = Duration::from_secs(40);

fn hostd_with_root(root: &Path) -> Hostd {
    Hostd::start(Opts {
        args: vec!["--backup-root".into(), root.display().to_string()],
        ..Opts::default()
    })
}

fn dir_store(path: &Path) -> StoreSpec {
    StoreSpec {
        location: StoreLocation::Dir {
            path: path.display().to_string(),
        },
        hash: ChunkHash::Blake3,
        chunking: ChunkingKind::Fixed,
        encryption_key: None,
    }
}

/// Runs a job to its end; panics with its error if it fails.
fn run_job(h: &Hostd, store: &StoreSpec, op: JobOp) -> JobResult {
    let req = JobRequest {
        store: store.clone(),
        op,
    };
    let job = h.ok(h.api().start_backup_job(&req));
    wait_for(180, "the backup job", || {
        let j = h.ok(h.api().backup_job(&job.id));
        match j.state {
            JobState::Running => None,
            JobState::Succeeded => j.result,
            JobState::Failed => panic!("job failed: {:?}\n{}", j.error, h.stderr()),
        }
    })
}

fn backup(
    h: &Hostd,
    store: &StoreSpec,
    vm: &str,
    id: &str,
    previous: Option<&str>,
) -> BackupReport {
    match run_job(
        h,
        store,
        JobOp::Backup {
            vm_id: vm.into(),
            backup_id: id.into(),
            previous: previous.map(Into::into),
        },
    ) {
        JobResult::Backup(r) => r,
        other => panic!("not a backup report: {other:?}"),
    }
}

/// A 64 MiB disk: the host's checksummed blocks, 4 MiB of text at 8 MiB and 1 MiB of
/// incompressible data at 20 MiB; the rest holes.
fn base_disk(path: &Path) {
    nova_tests::disk_with_host_blocks(path, 64);
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let text = "the quick brown fox backs up the lazy dog\n".repeat((4 * MIB as usize) / 42 + 1);
    f.write_all_at(&text.as_bytes()[..4 * MIB as usize], 8 * MIB)
        .unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    f.write_all_at(&noise, 20 * MIB).unwrap();
}

fn sha(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    format!("{:x}", Sha256::digest(&bytes))
}

fn disk_of(h: &Hostd, vm: &str) -> PathBuf {
    h.data().join("vms").join(vm).join("disks/disk0.raw")
}

/// The `pass=` of the last `NOVA-DISK` line.
fn last_pass(h: &Hostd, vm: &str) -> Option<u64> {
    let lines = h.wait(h.api().console(vm, 2000)).ok()?.lines;
    let l = lines
        .into_iter()
        .rev()
        .find(|l| l.starts_with("NOVA-DISK"))?;
    l.split_whitespace()
        .find_map(|kv| kv.strip_prefix("pass="))?
        .parse()
        .ok()
}

fn disk_guest(id: &str, base: &Path) -> nova_hostd_api::VmSpec {
    let mut spec = guest(id, "disk");
    spec.disks = vec![nova_hostd_api::DiskSpec {
        image: Some(base.display().to_string()),
        size_mib: Some(64),
        read_only: false,
        shared_path: None,
    }];
    spec
}

#[test]
fn a_second_backup_reads_only_what_the_guest_wrote_even_across_a_vmm_restart_and_restores_on_another_host(
) {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let root = d.join("backups");
    std::fs::create_dir_all(&root).unwrap();
    let (h1, h2) = (hostd_with_root(&root), hostd_with_root(&root));
    let store = dir_store(&root.join("store"));
    let base = d.join("base.raw");
    base_disk(&base);
    h1.create_vm(&disk_guest("bk1", &base));
    h1.wait_state("bk1", VmState::Running, BOOT);
    wait_for(40, "a disk pass", || last_pass(&h1, "bk1"));

    let first = backup(&h1, &store, "bk1", "bk1-1", None);
    let f = &first.files[0];
    assert!(f.full_read, "{first:?}");
    assert_eq!(f.full_read_reason.as_deref(), Some("no previous backup"));
    assert_eq!((f.size, f.bytes_read), (64 * MIB, 64 * MIB));
    // Chunk 0 (host and guest blocks), one of text, one of noise; 13 holes.
    assert_eq!((f.chunks_new, f.holes), (3, 13), "{f:?}");

    // The guest rewrites its blocks (all in the first 4 MiB) pass after pass.
    let seen = last_pass(&h1, "bk1").unwrap();
    wait_for(40, "another disk pass", || {
        last_pass(&h1, "bk1").filter(|p| *p > seen)
    });
    // Paused around the backup, so the disk on the host is the checkpoint's.
    h1.ok(h1.api().pause("bk1"));
    let second = backup(&h1, &store, "bk1", "bk1-2", Some("bk1-1"));
    let at_checkpoint = sha(&disk_of(&h1, "bk1"));
    let generations = nova_tests::guest_blocks(&disk_of(&h1, "bk1"));
    h1.ok(h1.api().resume("bk1"));
    let f = &second.files[0];
    assert!(!f.full_read, "{second:?}");
    assert_eq!(
        f.bytes_read,
        4 * MIB,
        "only the written 4 MiB block is read"
    );
    assert_eq!(f.chunks_new, 1, "{f:?}");
    assert!(second.paused_ms > 0.0);

    // Stopped and started again: the VMM saved its bitmap and reads it back.
    h1.ok(h1.api().stop("bk1", false));
    h1.wait_state("bk1", VmState::Stopped, BOOT);
    h1.ok(h1.api().start("bk1"));
    h1.wait_state("bk1", VmState::Running, BOOT);
    wait_for(40, "a disk pass after the restart", || {
        last_pass(&h1, "bk1")
    });
    let third = backup(&h1, &store, "bk1", "bk1-3", Some("bk1-2"));
    let f = &third.files[0];
    assert!(
        !f.full_read,
        "the bitmap survived the VMM restart: {third:?}"
    );
    assert_eq!(f.bytes_read, 4 * MIB);

    // A bitmap relative to another backup is not trusted: a full read, saying why.
    let fourth = backup(&h1, &store, "bk1", "bk1-4", Some("bk1-2"));
    let f = &fourth.files[0];
    assert!(f.full_read);
    assert!(
        f.full_read_reason.as_deref().unwrap().contains("bk1-3"),
        "{f:?}"
    );

    // Restored on the other host: byte-identical with the disk at the checkpoint.
    let mut spec = guest("restored", "disk");
    spec.start = false;
    let restored = match run_job(
        &h2,
        &store,
        JobOp::Restore {
            backup_id: "bk1-2".into(),
            spec: Box::new(spec),
        },
    ) {
        JobResult::Restore(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(restored.vm_id, "restored");
    let disk = disk_of(&h2, "restored");
    assert_eq!(sha(&disk), at_checkpoint, "restored byte-identical");
    assert_eq!(nova_tests::guest_blocks(&disk), generations);
    assert!(generations.iter().all(|g| g.is_ok()), "{generations:?}");
    let allocated = std::fs::metadata(&disk).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.blocks() * 512
    });
    assert!(
        allocated.unwrap() < 16 * MIB,
        "the restored disk stays sparse"
    );
    // It boots there and its guest finds the host's blocks and verifies its own.
    h2.ok(h2.api().start("restored"));
    let line = h2.wait_console("restored", "NOVA-DISK", BOOT);
    assert!(
        line.contains("host_ok=16") && line.contains("errors=0"),
        "{line}"
    );
}
