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
            memory: false,
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
fn a_second_backup_reads_only_what_the_guest_wrote_across_vmm_restarts_and_migrations_and_restores_on_another_host(
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
    // The three chunks holding data are read; the holes are recorded unread.
    assert_eq!((f.size, f.bytes_read), (64 * MIB, 12 * MIB));
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
    for r in [&first, &second] {
        let f = &r.files[0];
        eprintln!(
            "{}: read {} B, stored {} B, {} new chunks, guest paused {:.2} ms",
            r.backup_id, f.bytes_read, f.bytes_stored, f.chunks_new, r.paused_ms
        );
    }
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

    // Live-migrated to the other host: the bitmap travels with the VM's state.
    let req = nova_hostd_api::MigrateRequest {
        to: nova_hostd_api::MigrationTarget {
            url: format!("http://{}", h2.addr),
            token: h2.token.clone(),
        },
        params: Default::default(),
        kind: nova_hostd_api::MigrationKind::Live,
    };
    h1.ok(h1.api().migrate("bk1", &req));
    wait_for(120, "the migration", || {
        let m = h1.ok(h1.api().migration("bk1"));
        match m.state {
            nova_hostd_api::MigrationState::Completed => Some(()),
            nova_hostd_api::MigrationState::Failed | nova_hostd_api::MigrationState::Cancelled => {
                panic!("migration failed: {m:?}")
            }
            _ => None,
        }
    });
    h2.wait_state("bk1", VmState::Running, BOOT);
    let fifth = backup(&h2, &store, "bk1", "bk1-5", Some("bk1-4"));
    let f = &fifth.files[0];
    assert!(
        !f.full_read,
        "the bitmap came with the migration: {fifth:?}"
    );
    assert!(f.bytes_read <= 4 * MIB, "{f:?}");

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

#[test]
fn a_disk_changed_while_its_vm_was_stopped_is_read_whole_by_the_next_backup_and_restores_byte_identical(
) {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let root = d.join("backups");
    std::fs::create_dir_all(&root).unwrap();
    let h = hostd_with_root(&root);
    let store = dir_store(&root.join("store"));
    let base = d.join("base.raw");
    base_disk(&base);
    // A guest that never writes its disk: every change below is the host's.
    let mut spec = disk_guest("st1", &base);
    spec.cmdline = Some("nova.workload=counter".into());
    h.create_vm(&spec);
    h.wait_state("st1", VmState::Running, BOOT);
    h.wait_console("st1", "NOVA-TICK", BOOT);
    let first = backup(&h, &store, "st1", "st1-1", None);
    assert!(first.files[0].full_read);

    // Stopped and started with the disk untouched: the bitmap is trusted.
    h.ok(h.api().stop("st1", false));
    h.wait_state("st1", VmState::Stopped, BOOT);
    h.ok(h.api().start("st1"));
    h.wait_state("st1", VmState::Running, BOOT);
    let second = backup(&h, &store, "st1", "st1-2", Some("st1-1"));
    let f = &second.files[0];
    assert!(!f.full_read, "nothing changed: {second:?}");
    assert_eq!(f.bytes_read, 0, "{f:?}");

    // Stopped, and 1 MiB written into the disk file behind the VMM's back (a tool on
    // the host): no bitmap has it, so the next backup must read the whole disk.
    h.ok(h.api().stop("st1", false));
    h.wait_state("st1", VmState::Stopped, BOOT);
    let disk = disk_of(&h, "st1");
    let changed: Vec<u8> = (0..MIB).map(|i| (i * 7 + 3) as u8).collect();
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(&changed, 40 * MIB).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let at_backup = sha(&disk);
    h.ok(h.api().start("st1"));
    h.wait_state("st1", VmState::Running, BOOT);
    let third = backup(&h, &store, "st1", "st1-3", Some("st1-2"));
    let f = &third.files[0];
    assert!(f.full_read, "the change while stopped is seen: {third:?}");
    assert!(
        f.full_read_reason
            .as_deref()
            .unwrap()
            .contains("modified while its VM was stopped"),
        "{f:?}"
    );
    assert_eq!(sha(&disk), at_backup, "the guest wrote nothing meanwhile");

    // Restored: byte-identical with the disk as changed, the host's write included.
    let mut spec = guest("st1-back", "counter");
    spec.start = false;
    match run_job(
        &h,
        &store,
        JobOp::Restore {
            backup_id: "st1-3".into(),
            spec: Box::new(spec),
        },
    ) {
        JobResult::Restore(r) => assert_eq!(r.vm_id, "st1-back"),
        other => panic!("{other:?}"),
    }
    let back = disk_of(&h, "st1-back");
    assert_eq!(sha(&back), at_backup, "restored byte-identical");
    let mut got = vec![0u8; MIB as usize];
    std::fs::File::open(&back)
        .unwrap()
        .read_exact_at(&mut got, 40 * MIB)
        .unwrap();
    assert!(
        got == changed,
        "the change made while stopped was backed up"
    );
}

/// Whether the guest's blocks are what a crash at one instant leaves: every block
/// whole (its checksum holds) and the passes a run of `p` then a run of `p - 1` (the
/// guest writes them in order, pass after pass).
fn one_instant(blocks: &[Result<u64, nova_guest_abi::BlockError>]) -> bool {
    let Ok(passes) = blocks.iter().cloned().collect::<Result<Vec<u64>, _>>() else {
        return false;
    };
    let first = passes[0];
    let split = passes
        .iter()
        .position(|&p| p != first)
        .unwrap_or(passes.len());
    passes[split..].iter().all(|&p| p + 1 == first)
}

#[test]
fn a_backup_copies_after_the_pause_while_the_guest_writes_and_keeps_the_point_in_time() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let root = d.join("backups");
    std::fs::create_dir_all(&root).unwrap();
    let h = hostd_with_root(&root);
    let store = dir_store(&root.join("store"));
    // 256 MiB, all of it data: the copy takes long enough for many guest passes.
    let base = d.join("base.raw");
    nova_tests::disk_with_host_blocks(&base, 256);
    {
        let f = std::fs::OpenOptions::new().write(true).open(&base).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..MIB)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for m in 4..256 {
            f.write_all_at(&noise, m * MIB).unwrap();
        }
    }
    let mut spec = disk_guest("cbw", &base);
    spec.disks[0].size_mib = Some(256);
    h.create_vm(&spec);
    h.wait_state("cbw", VmState::Running, BOOT);
    let before = wait_for(40, "a disk pass", || last_pass(&h, "cbw"));

    // The guest keeps writing its blocks (in the first 4 MiB) through the backup.
    let r = backup(&h, &store, "cbw", "cbw-1", None);
    let after = last_pass(&h, "cbw").unwrap();
    eprintln!(
        "paused {:.1} ms; guest passes {before}..{after} during the backup",
        r.paused_ms
    );
    let f = &r.files[0];
    assert!(f.full_read);
    assert_eq!(f.bytes_read, 256 * MIB);
    assert_eq!(f.holes, 0, "{f:?}");

    let mut restored = guest("cbw-restored", "disk");
    restored.start = false;
    let vm = match run_job(
        &h,
        &store,
        JobOp::Restore {
            backup_id: "cbw-1".into(),
            spec: Box::new(restored),
        },
    ) {
        JobResult::Restore(r) => r.vm_id,
        other => panic!("{other:?}"),
    };
    let disk = disk_of(&h, &vm);
    let blocks = nova_tests::guest_blocks(&disk);
    assert!(one_instant(&blocks), "{blocks:?}");
    let pass = *blocks[0].as_ref().unwrap();
    assert!(
        pass <= after + 1,
        "pass {pass} is not from the backup's time"
    );
    // Everything the guest does not write is the base image, byte for byte.
    let (got, want) = (std::fs::read(&disk).unwrap(), std::fs::read(&base).unwrap());
    let guest_area = nova_guest_abi::GUEST_BLOCKS_START as usize * nova_guest_abi::BLOCK_SIZE
        ..(nova_guest_abi::GUEST_BLOCKS_START + nova_guest_abi::GUEST_BLOCKS) as usize
            * nova_guest_abi::BLOCK_SIZE;
    assert_eq!(got.len(), want.len());
    assert!(got[..guest_area.start] == want[..guest_area.start]);
    assert!(got[guest_area.end..] == want[guest_area.end..]);
    // The restored VM boots and verifies what it finds.
    h.ok(h.api().start(&vm));
    let line = h.wait_console(&vm, "NOVA-DISK", BOOT);
    assert!(line.contains("errors=0"), "{line}");
}

#[test]
fn a_store_directory_outside_the_backup_roots_is_refused_naming_the_field() {
    let d = TempDir::new();
    let root = d.join("backups");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("escape")).unwrap();
    let h = hostd_with_root(&root);
    let bare = Hostd::start(Opts::default());
    let gc = JobOp::Gc { grace_s: 0 };
    for (host, path) in [
        (&h, PathBuf::from("/etc/nova")),
        (&h, root.join("../outside")),
        (&h, root.join("escape/store")),
        (&bare, root.join("store")),
    ] {
        let req = JobRequest {
            store: dir_store(&path),
            op: gc.clone(),
        };
        let (status, body) = host.refused(host.api().start_backup_job(&req));
        assert_eq!(status, 400, "{path:?}: {body:?}");
        assert_eq!(
            body.field.as_deref(),
            Some("store.location.path"),
            "{path:?}: {body:?}"
        );
    }
    assert!(!Path::new("/etc/store").exists());
    // Inside the root it is made and used.
    match run_job(&h, &dir_store(&root.join("store")), gc) {
        JobResult::Gc(r) => assert_eq!(r.removed, 0),
        other => panic!("{other:?}"),
    }
    assert!(root.join("store").is_dir());
}

mod through_the_controller {
    use super::*;
    use nova_controller_api::{
        Backup, BackupBody, BackupRetention, BackupStore, GcBody, HostState, OpState, Operation,
        PruneBody, PruneResult, RestoreBody, Role, Vm,
    };
    use nova_tests::controller::{block_on, Controller};
    use nova_tests::hostd::controller_disk_guest;

    fn hostd_for(c: &Controller, root: &Path) -> Hostd {
        let join = c.dir.join("join.token");
        Hostd::start(Opts {
            args: vec![
                "--controller".into(),
                c.url.clone(),
                "--join-token-file".into(),
                join.display().to_string(),
                "--bridge".into(),
                nova_tests::unique("nbr"),
                "--backup-root".into(),
                root.display().to_string(),
            ],
            ..Opts::default()
        })
    }

    fn wait_op(c: &Controller, op: &Operation) -> Operation {
        wait_for(240, &format!("operation {}", op.id), || {
            let o = block_on(c.api.operation(&op.id)).ok()?;
            o.state.is_final().then_some(o)
        })
    }

    fn backup_ok(c: &Controller, vm: &str) -> Backup {
        let body = BackupBody {
            store: "shared".into(),
            full: false,
            memory: false,
        };
        let op = wait_op(c, &block_on(c.api.backup_vm(vm, &body)).unwrap());
        assert_eq!(op.state, OpState::Succeeded, "{op:?}");
        serde_json::from_value(op.result).unwrap()
    }

    /// Runs novactl as the admin; its stdout (it must succeed).
    fn novactl(c: &Controller, args: &[&str]) -> String {
        let out = std::process::Command::new(nova_tests::binary("novactl"))
            .args(args)
            .env("NOVA_URL", &c.url)
            .env("NOVA_TOKEN", &c.admin)
            .env("HOME", c.dir.as_path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "novactl {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    fn last_pass(c: &Controller, id: &str) -> Option<u64> {
        let lines = block_on(c.api.console(id, 500)).ok()?.lines;
        let l = lines
            .into_iter()
            .rev()
            .find(|l| l.starts_with("NOVA-DISK"))?;
        l.split_whitespace()
            .find_map(|kv| kv.strip_prefix("pass="))?
            .parse()
            .ok()
    }

    /// A controller with two ready hosts sharing the backup store `shared` (a
    /// directory under `d`).
    fn two_hosts_and_a_store(d: &TempDir) -> (Controller, [Hostd; 2]) {
        let root = d.join("backups");
        std::fs::create_dir_all(&root).unwrap();
        let c = Controller::sqlite(d.path());
        let hosts = [hostd_for(&c, &root), hostd_for(&c, &root)];
        wait_for(30, "two ready hosts", || {
            let hosts = block_on(c.api.hosts()).ok()?;
            (hosts.iter().filter(|h| h.state == HostState::Ready).count() == 2).then_some(())
        });
        let store = BackupStore {
            name: "shared".into(),
            location: StoreLocation::Dir {
                path: root.join("store").display().to_string(),
            },
            hash: ChunkHash::Blake3,
            chunking: ChunkingKind::Fixed,
            encryption_key: None,
            created_at_ms: 0,
        };
        block_on(c.api.create_backup_store(&store)).unwrap();
        (c, hosts)
    }

    /// A VM named `src` running `workload` on a 64 MiB disk made from [`base_disk`],
    /// once its disk workload has done a pass: the VM and its host.
    fn disk_vm_running(c: &Controller, d: &TempDir, workload: &str) -> (Vm, String) {
        let base = d.join("base.raw");
        base_disk(&base);
        let spec = controller_disk_guest("src", workload, &base, 64);
        let vm = block_on(c.api.create_vm(&spec, None)).unwrap();
        let host = wait_for(60, "the VM running", || {
            let v = block_on(c.api.vm(&vm.id)).ok()?;
            (v.observed.as_ref()?.state == "running").then_some(v.host?)
        });
        wait_for(40, "a disk pass", || last_pass(c, &vm.id));
        (vm, host)
    }

    /// The ready host that is not `than`.
    fn other_host(c: &Controller, than: &str) -> String {
        let hosts = block_on(c.api.hosts()).unwrap();
        hosts.into_iter().find(|h| h.id != than).unwrap().id
    }

    /// The `NOVA-TICK` sequence numbers in the last `n` console lines of VM `id`.
    fn ticks(c: &Controller, id: &str, n: u32) -> Vec<u64> {
        let lines = block_on(c.api.console(id, n)).map(|l| l.lines);
        lines
            .unwrap_or_default()
            .iter()
            .filter_map(|l| l.strip_prefix("NOVA-TICK ")?.trim().parse().ok())
            .collect()
    }

    #[test]
    fn a_backup_with_memory_restores_on_another_host_with_its_guest_counting_on_from_the_backup() {
        if !require_kvm() {
            return;
        }
        let d = TempDir::new();
        let (c, _hosts) = two_hosts_and_a_store(&d);
        let (vm, src_host) = disk_vm_running(&c, &d, "counter,disk");

        // Taken through novactl's `--memory`: the guest's memory and state are in it.
        let before = *ticks(&c, &vm.id, 100).last().unwrap();
        let out = novactl(
            &c,
            &["backup", "create", &vm.id, "--store", "shared", "--memory"],
        );
        let after = *ticks(&c, &vm.id, 100).last().unwrap();
        assert!(out.contains("with the guest's memory"), "{out}");
        let b = block_on(c.api.backups(Some(&vm.id)))
            .unwrap()
            .items
            .remove(0);
        assert!(b.memory, "{b:?}");
        let files: Vec<&str> = b
            .report
            .as_ref()
            .unwrap()
            .files
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(files, ["disk0", "state", "memory"]);
        // Without it, a backup holds the disks only.
        let disks_only = backup_ok(&c, &vm.id);
        assert!(!disks_only.memory);
        assert_eq!(disks_only.report.unwrap().files.len(), 1);

        // Restored on the other host, the guest does not boot: it counts on from
        // where the backup paused it, and its disk workload finds its blocks whole.
        let other = other_host(&c, &src_host);
        let body = RestoreBody {
            name: "resumed".into(),
            host: Some(other.clone()),
            start: true,
        };
        let op = wait_op(&c, &block_on(c.api.restore_backup(&b.id, &body)).unwrap());
        assert_eq!(op.state, OpState::Succeeded, "{op:?}");
        let resumed: Vm = serde_json::from_value(op.result).unwrap();
        assert_eq!(resumed.host.as_deref(), Some(other.as_str()));
        let first = wait_for(30, "the resumed guest's ticks", || {
            ticks(&c, &resumed.id, 10_000).first().copied()
        });
        assert!(
            before < first && first <= after + 1,
            "the resumed guest's first tick {first}: the backup began after tick {before} and ended by {after}"
        );
        let console = block_on(c.api.console(&resumed.id, 10_000)).unwrap().lines;
        assert!(
            !console.iter().any(|l| l.starts_with("NOVA-BOOTED")),
            "the resumed guest booted again"
        );
        let line = wait_for(60, "the resumed guest's disk pass", || {
            let lines = block_on(c.api.console(&resumed.id, 10_000)).ok()?.lines;
            lines.into_iter().find(|l| l.starts_with("NOVA-DISK"))
        });
        assert!(line.contains("errors=0"), "{line}");

        // A stopped VM has no memory to back up: refused, naming why.
        let body = BackupBody {
            store: "shared".into(),
            full: false,
            memory: true,
        };
        block_on(c.api.stop_vm(&resumed.id)).unwrap();
        wait_for(60, "the resumed VM stopped", || {
            let v = block_on(c.api.vm(&resumed.id)).ok()?;
            (v.observed.as_ref()?.state == "stopped").then_some(())
        });
        let op = wait_op(&c, &block_on(c.api.backup_vm(&resumed.id, &body)).unwrap());
        assert_eq!(op.state, OpState::Failed, "{op:?}");
        assert!(op.message.contains("no memory to back up"), "{op:?}");
    }

    #[test]
    fn backups_restore_on_another_host_retention_and_gc_keep_what_they_should_verify_finds_damage_and_tenants_are_apart(
    ) {
        if !require_kvm() {
            return;
        }
        let d = TempDir::new();
        let (c, _hosts) = two_hosts_and_a_store(&d);
        let (vm, src_host) = disk_vm_running(&c, &d, "disk");

        let b1 = backup_ok(&c, &vm.id);
        let r1 = b1.report.clone().unwrap();
        assert!(r1.files[0].full_read && b1.previous.is_none(), "{b1:?}");
        let seen = last_pass(&c, &vm.id).unwrap();
        wait_for(40, "another disk pass", || {
            last_pass(&c, &vm.id).filter(|p| *p > seen)
        });
        let b2 = backup_ok(&c, &vm.id);
        let r2 = b2.report.clone().unwrap();
        assert_eq!(b2.previous.as_deref(), Some(b1.id.as_str()));
        assert!(!r2.files[0].full_read, "{r2:?}");
        assert_eq!(r2.bytes_read, 4 * MIB, "only the block the guest wrote");

        // Restored on the other host, it boots and its guest verifies its disk.
        let other = other_host(&c, &src_host);
        let body = RestoreBody {
            name: "restored".into(),
            host: Some(other.clone()),
            start: true,
        };
        let op = wait_op(&c, &block_on(c.api.restore_backup(&b2.id, &body)).unwrap());
        assert_eq!(op.state, OpState::Succeeded, "{op:?}");
        let restored: Vm = serde_json::from_value(op.result).unwrap();
        assert_eq!(restored.host.as_deref(), Some(other.as_str()));
        let line = wait_for(60, "the restored guest's disk pass", || {
            let lines = block_on(c.api.console(&restored.id, 500)).ok()?.lines;
            lines.into_iter().find(|l| l.starts_with("NOVA-DISK"))
        });
        assert!(
            line.contains("host_ok=16") && line.contains("errors=0"),
            "{line}"
        );

        // Another tenant sees none of it.
        let t = c.token_for("other", "eve", Role::Admin);
        let eve = c.as_(&t);
        assert!(block_on(eve.backups(None)).unwrap().items.is_empty());
        for id in [&b1.id, &b2.id] {
            let e = block_on(eve.backup(id)).unwrap_err();
            assert_eq!(e.status(), Some(404), "{e}");
            let e = block_on(eve.restore_backup(id, &body)).unwrap_err();
            assert!(matches!(e.status(), Some(403 | 404)), "{e}");
        }
        assert_eq!(
            block_on(c.api.backups(Some(&vm.id))).unwrap().items.len(),
            2
        );

        // novactl: the list, and a verify summed up.
        let list = novactl(&c, &["backup", "list", "--vm", &vm.id]);
        assert!(list.contains(&b1.id) && list.contains(&b2.id), "{list}");
        let out = novactl(&c, &["backup", "verify", &b2.id]);
        assert!(out.contains("none damaged"), "{out}");

        // `--full` reads all of the disk's data (its 3 chunks holding data; holes are
        // not read) although the bitmap would do with its one written block.
        let out = novactl(
            &c,
            &["backup", "create", &vm.id, "--store", "shared", "--full"],
        );
        assert!(
            out.contains("full read") && out.contains("read 12.0 MiB"),
            "{out}"
        );
        // Retention keeps the last two; GC then removes only chunks of the pruned ones.
        let b3 = backup_ok(&c, &vm.id);
        let prune = PruneBody {
            retention: BackupRetention {
                keep_last: 2,
                ..Default::default()
            },
        };
        let op = wait_op(&c, &block_on(c.api.prune_backups(&vm.id, &prune)).unwrap());
        let pr: PruneResult = serde_json::from_value(op.result).unwrap();
        // Made in order b1, b2, the full one, b3: the last two stay.
        let mut deleted = pr.deleted.clone();
        deleted.sort();
        let mut want = vec![b1.id.clone(), b2.id.clone()];
        want.sort();
        assert_eq!(deleted, want, "{pr:?}");
        let left: Vec<String> = block_on(c.api.backups(Some(&vm.id)))
            .unwrap()
            .items
            .into_iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(left.len(), 2);
        assert!(left.contains(&b3.id) && pr.kept.iter().all(|k| left.contains(k)));
        let op = wait_op(
            &c,
            &block_on(c.api.gc_backup_store("shared", &GcBody { grace_s: 0 })).unwrap(),
        );
        assert_eq!(op.state, OpState::Succeeded, "{op:?}");
        let gc: nova_controller_api::GcReport = serde_json::from_value(op.result).unwrap();
        assert!(gc.removed >= 2, "b1's and b2's own first chunks go: {gc:?}");
        for id in &left {
            let op = wait_op(&c, &block_on(c.api.verify_backup(id)).unwrap());
            assert_eq!(op.state, OpState::Succeeded, "{op:?}");
            assert!(
                !block_on(c.api.backup(id)).unwrap().damaged,
                "GC kept what {id} needs"
            );
        }
        // And a kept backup still restores (stopped: its disk is what counts here).
        let body = RestoreBody {
            name: "after-gc".into(),
            host: None,
            start: false,
        };
        let op = wait_op(&c, &block_on(c.api.restore_backup(&b3.id, &body)).unwrap());
        assert_eq!(op.state, OpState::Succeeded, "{op:?}");

        // A flipped byte in a stored chunk: verify finds it and marks the backup.
        // The chunk of b3's disk at 20 MiB: the incompressible data every backup shares.
        let store_dir = d.join("backups").join("store");
        let key = format!("manifests/{}.json", b3.id);
        let m = nova_backup::Manifest::decode(&key, &std::fs::read(store_dir.join(&key)).unwrap())
            .unwrap();
        let id = m.files[0]
            .chunks
            .iter()
            .find(|p| p.offset == 20 * MIB)
            .and_then(|p| p.id)
            .unwrap();
        let chunk = store_dir.join(nova_backup::store::chunk_key(&id));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .open(&chunk)
            .unwrap();
        let mut byte = [0u8; 1];
        let at = std::fs::metadata(&chunk).unwrap().len() / 2;
        f.read_exact_at(&mut byte, at).unwrap();
        f.write_all_at(&[byte[0] ^ 0x55], at).unwrap();
        let op = wait_op(&c, &block_on(c.api.verify_backup(&b3.id)).unwrap());
        assert_eq!(op.state, OpState::Succeeded, "{op:?}");
        let b3v = block_on(c.api.backup(&b3.id)).unwrap();
        assert!(b3v.damaged && b3v.damaged_chunks.len() == 1, "{b3v:?}");
        assert!(chunk.ends_with(&b3v.damaged_chunks[0].chunk), "{chunk:?}");
        let body = RestoreBody {
            name: "from-damaged".into(),
            host: None,
            start: true,
        };
        let e = block_on(c.api.restore_backup(&b3.id, &body)).unwrap_err();
        assert_eq!(e.status(), Some(409), "{e}");
    }

    /// A controller, a hostd and a VM with 128 MiB of disk data whose backup has
    /// started on the host (its job recorded): (dir, controller, hostd, its port, VM id,
    /// the backup's operation, the backup).
    fn a_backup_under_way() -> (TempDir, Controller, Hostd, u16, String, Operation, Backup) {
        let d = TempDir::new();
        let root = d.join("backups");
        std::fs::create_dir_all(&root).unwrap();
        let c = Controller::sqlite(d.path());
        let port: u16 = c.url.rsplit(':').next().unwrap().parse().unwrap();
        let h = hostd_for(&c, &root);
        wait_for(30, "a ready host", || {
            let hosts = block_on(c.api.hosts()).ok()?;
            hosts
                .iter()
                .any(|h| h.state == HostState::Ready)
                .then_some(())
        });
        let store = BackupStore {
            name: "shared".into(),
            location: StoreLocation::Dir {
                path: root.join("store").display().to_string(),
            },
            hash: ChunkHash::Blake3,
            chunking: ChunkingKind::Fixed,
            encryption_key: None,
            created_at_ms: 0,
        };
        block_on(c.api.create_backup_store(&store)).unwrap();
        // 128 MiB of data: the backup outlasts the controller.
        let base = d.join("base.raw");
        nova_tests::disk_with_host_blocks(&base, 128);
        {
            let f = std::fs::OpenOptions::new().write(true).open(&base).unwrap();
            let mut x = 0x2545_f491_4f6c_dd1du64;
            for m in 4..128u64 {
                let noise: Vec<u8> = (0..MIB)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                f.write_all_at(&noise, m * MIB).unwrap();
            }
        }
        let spec = controller_disk_guest("long", "disk", &base, 128);
        let vm = block_on(c.api.create_vm(&spec, None)).unwrap();
        wait_for(120, "the VM running", || {
            let v = block_on(c.api.vm(&vm.id)).ok()?;
            (v.observed.as_ref()?.state == "running").then_some(())
        });
        let body = BackupBody {
            store: "shared".into(),
            full: false,
            memory: false,
        };
        let op = block_on(c.api.backup_vm(&vm.id, &body)).unwrap();
        let running = wait_for(60, "the backup's host job", || {
            let b = block_on(c.api.backups(Some(&vm.id))).ok()?.items.pop()?;
            b.job.is_some().then_some(b)
        });
        (d, c, h, port, vm.id, op, running)
    }

    fn restarted(d: &TempDir, port: u16) -> Controller {
        Controller::start(
            d.path(),
            nova_tests::controller::Opts {
                port: Some(port),
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_backup_running_when_the_controller_is_killed_is_followed_to_its_end_by_the_restarted_controller(
    ) {
        if !require_kvm() {
            return;
        }
        let (d, mut c, _h, port, vm, op, running) = a_backup_under_way();
        c.kill();
        assert_eq!(running.state, nova_controller_api::BackupState::Running);
        let c = restarted(&d, port);
        let done = wait_op(&c, &op);
        assert_eq!(done.state, OpState::Succeeded, "{done:?}\n{}", c.log());
        assert!(
            c.log().contains("resuming a backup left running"),
            "the restarted controller followed it: {}",
            c.log()
        );
        let b = block_on(c.api.backup(&running.id)).unwrap();
        assert_eq!(b.state, nova_controller_api::BackupState::Completed);
        assert_eq!(b.report.as_ref().unwrap().bytes_read, 128 * MIB, "{b:?}");
        // The next backup is incremental on it: the VMM's bitmap counts from it.
        let next = backup_ok(&c, &vm);
        assert_eq!(next.previous.as_deref(), Some(b.id.as_str()));
        assert!(!next.report.unwrap().files[0].full_read);
    }

    #[test]
    fn a_backup_whose_host_forgot_its_job_while_the_controller_was_down_fails_naming_why() {
        if !require_kvm() {
            return;
        }
        let (d, mut c, mut h, port, vm, op, running) = a_backup_under_way();
        c.kill();
        // hostd's jobs live in memory: restarted, it no longer knows this one.
        h.restart();
        let c = restarted(&d, port);
        let done = wait_op(&c, &op);
        assert_eq!(done.state, OpState::Failed, "{done:?}");
        assert!(done.message.contains("no longer knows"), "{done:?}");
        let b = block_on(c.api.backup(&running.id)).unwrap();
        assert_eq!(b.state, nova_controller_api::BackupState::Failed);
        // The next backup is not incremental on the failed one, and works.
        wait_for(60, "the host ready again", || {
            let hosts = block_on(c.api.hosts()).ok()?;
            hosts
                .iter()
                .any(|h| h.state == HostState::Ready)
                .then_some(())
        });
        // The VMM finishes the abandoned checkpoint's copy first; until then another
        // checkpoint is refused, saying so.
        let body = BackupBody {
            store: "shared".into(),
            full: false,
            memory: false,
        };
        let next = wait_for(120, "a backup after the abandoned one's copy", || {
            let op = wait_op(&c, &block_on(c.api.backup_vm(&vm, &body)).unwrap());
            if op.state == OpState::Succeeded {
                return Some(serde_json::from_value::<Backup>(op.result).unwrap());
            }
            assert!(op.message.contains("already being taken"), "{op:?}");
            std::thread::sleep(std::time::Duration::from_millis(500));
            None
        });
        assert_eq!(next.previous, None);
        assert!(next.report.unwrap().files[0].full_read);
    }

    #[test]
    fn a_schedule_backs_a_vm_up_every_interval_and_keeps_what_its_retention_keeps() {
        if !require_kvm() {
            return;
        }
        let d = TempDir::new();
        let root = d.join("backups");
        std::fs::create_dir_all(&root).unwrap();
        let c = Controller::sqlite(d.path());
        let _h = hostd_for(&c, &root);
        wait_for(30, "a ready host", || {
            let hosts = block_on(c.api.hosts()).ok()?;
            (hosts.iter().any(|h| h.state == HostState::Ready)).then_some(())
        });
        let out = novactl(
            &c,
            &[
                "backup",
                "store-create",
                "shared",
                "--dir",
                &root.join("store").display().to_string(),
            ],
        );
        assert!(out.contains("shared"), "{out}");
        let base = d.join("base.raw");
        base_disk(&base);
        let spec = controller_disk_guest("sched", "disk", &base, 64);
        let vm = block_on(c.api.create_vm(&spec, None)).unwrap();
        wait_for(60, "the VM running", || {
            let v = block_on(c.api.vm(&vm.id)).ok()?;
            (v.observed.as_ref()?.state == "running").then_some(())
        });
        let bad = nova_controller_api::BackupSchedule {
            store: "shared".into(),
            every_s: 1,
            retention: BackupRetention::default(),
            memory: false,
            vm_id: String::new(),
            tenant: String::new(),
            last_run_ms: 0,
            revision: 0,
        };
        let e = block_on(c.api.set_backup_schedule(&vm.id, &bad)).unwrap_err();
        assert_eq!(e.status(), Some(400), "a retention keeping nothing: {e}");
        let every = nova_controller_api::BackupSchedule {
            retention: BackupRetention {
                keep_last: 2,
                ..Default::default()
            },
            memory: true,
            ..bad
        };
        block_on(c.api.set_backup_schedule(&vm.id, &every)).unwrap();
        // Each run is a backup then a prune: after the fourth backup started, two stay.
        let mut seen = std::collections::BTreeSet::new();
        wait_for(120, "four scheduled backups", || {
            let page = block_on(c.api.backups(Some(&vm.id))).ok()?;
            assert!(
                page.items.len() <= 3,
                "retention is applied: {:?}",
                page.items.len()
            );
            seen.extend(page.items.into_iter().map(|b| b.id));
            (seen.len() >= 4).then_some(())
        });
        block_on(c.api.delete_backup_schedule(&vm.id)).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        let done: Vec<Backup> = block_on(c.api.backups(Some(&vm.id))).unwrap().items;
        let all_final = |b: &Backup| b.state != nova_controller_api::BackupState::Running;
        wait_for(30, "the last run to end", || {
            let items = block_on(c.api.backups(Some(&vm.id))).ok()?.items;
            items.iter().all(all_final).then_some(())
        });
        assert!(done.len() <= 3, "{done:?}");
        // Later backups are incremental on earlier ones, and hold the guest's memory
        // as the schedule says.
        let last = done.iter().max_by_key(|b| b.created_at_ms).unwrap();
        assert!(last.previous.is_some(), "{last:?}");
        let completed: Vec<&Backup> = done.iter().filter(|b| b.report.is_some()).collect();
        assert!(!completed.is_empty(), "{done:?}");
        for b in completed {
            let files: Vec<&str> = b
                .report
                .iter()
                .flat_map(|r| &r.files)
                .map(|f| f.name.as_str())
                .collect();
            assert!(b.memory && files == ["disk0", "state", "memory"], "{b:?}");
        }
    }
}
