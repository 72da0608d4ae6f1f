//! The user's story on a directory store: back up a sparse disk, change 1 MiB, back up
//! incrementally with the dirty bitmap, restore byte-identical and sparse, prune and GC
//! only what no backup references, and find a corrupted chunk with verify.

mod fixture;

use fixture::{file_hash, noise, sparse_disk, MIB};
use nova_backup::store::chunk_key;
use nova_backup::*;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{Duration, SystemTime};

fn dir_store(root: &std::path::Path, cfg: StoreConfig) -> Store {
    Store::new(Box::new(DirBackend::open(root).unwrap()), cfg)
}

#[test]
fn incremental_backup_reads_only_dirty_chunks_and_restores_byte_identical_and_sparse() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk0.img");
    sparse_disk(&disk);
    let v1 = file_hash(&disk);
    let store = dir_store(&tmp.path().join("store"), StoreConfig::default());

    let first = store.backup_file("disk0", &disk, None, None).unwrap();
    assert!(first.full_read);
    assert_eq!(
        first.full_read_reason.as_deref(),
        Some("no previous backup")
    );
    // The 12 chunks wholly in holes are recorded without reading their zeros.
    assert_eq!(first.bytes_read, 16 * MIB);
    // 8 MiB of noise = 2 chunks, the text chunk, the chunk holding the 4 KiB block.
    assert_eq!(first.chunks_new, 4);
    assert_eq!(
        first.holes, 12,
        "all-zero chunks are recorded as holes, not stored"
    );
    let m1 = store
        .new_manifest("vm1-0001", Some(1_000), vec![first.index])
        .unwrap();
    store.put_manifest(&m1).unwrap();

    // The guest writes 1 MiB inside the second 4 MiB chunk.
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(&noise(3, MIB as usize), 5 * MIB).unwrap();
    let mut dirty = DirtyBlocks::new(4 * MIB, 64 * MIB);
    dirty.mark(5 * MIB, MIB);
    let v2 = file_hash(&disk);

    let second = store
        .backup_file("disk0", &disk, Some(&m1), Some(&dirty))
        .unwrap();
    assert!(!second.full_read, "{:?}", second.full_read_reason);
    assert_eq!(
        second.bytes_read,
        4 * MIB,
        "only the dirty 4 MiB chunk is read"
    );
    assert_eq!(second.chunks_new, 1, "only the changed chunk is stored");
    assert!(second.bytes_stored > MIB && second.bytes_stored < 5 * MIB);
    let m2 = store
        .new_manifest("vm1-0002", Some(2_000), vec![second.index])
        .unwrap();
    store.put_manifest(&m2).unwrap();

    for (m, want) in [(&m1, v1), (&m2, v2)] {
        let out = tmp.path().join(format!("restored-{}", m.backup_id));
        store
            .restore_file(&store.get_manifest(&m.backup_id).unwrap(), "disk0", &out)
            .unwrap();
        assert_eq!(
            file_hash(&out),
            want,
            "{} restores byte-identical",
            m.backup_id
        );
        let meta = std::fs::metadata(&out).unwrap();
        assert_eq!(meta.len(), 64 * MIB);
        assert!(
            meta.blocks() * 512 < 20 * MIB,
            "holes stay sparse: {} bytes allocated",
            meta.blocks() * 512
        );
    }
}

#[test]
fn lost_bitmap_falls_back_to_a_full_read_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk0.img");
    sparse_disk(&disk);
    let store = dir_store(&tmp.path().join("store"), StoreConfig::default());
    let first = store.backup_file("disk0", &disk, None, None).unwrap();
    let m1 = store.new_manifest("b1", None, vec![first.index]).unwrap();

    let again = store.backup_file("disk0", &disk, Some(&m1), None).unwrap();
    assert!(again.full_read);
    assert!(again
        .full_read_reason
        .unwrap()
        .contains("no dirty-block bitmap"));
    assert_eq!(again.bytes_read, 16 * MIB, "every chunk holding data");
    assert_eq!(
        again.chunks_new, 0,
        "unchanged data deduplicates to nothing new"
    );

    let short = DirtyBlocks::new(4 * MIB, 8 * MIB);
    let r = store
        .backup_file("disk0", &disk, Some(&m1), Some(&short))
        .unwrap();
    assert!(r.full_read_reason.unwrap().contains("does not cover"));
}

#[test]
fn prune_then_gc_removes_only_chunks_no_backup_references() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk0.img");
    sparse_disk(&disk);
    let store = dir_store(&tmp.path().join("store"), StoreConfig::default());
    let first = store.backup_file("disk0", &disk, None, None).unwrap();
    let m1 = store
        .new_manifest("b1", Some(1_000), vec![first.index])
        .unwrap();
    store.put_manifest(&m1).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .write_all_at(&noise(9, MIB as usize), 0)
        .unwrap();
    let mut dirty = DirtyBlocks::new(4 * MIB, 64 * MIB);
    dirty.mark(0, MIB);
    let second = store
        .backup_file("disk0", &disk, Some(&m1), Some(&dirty))
        .unwrap();
    let m2 = store
        .new_manifest("b2", Some(2_000), vec![second.index])
        .unwrap();
    store.put_manifest(&m2).unwrap();
    let v2 = file_hash(&disk);

    // Both backups referenced: nothing to collect.
    let gc = store.gc(Duration::ZERO, SystemTime::now()).unwrap();
    assert_eq!((gc.referenced, gc.removed), (5, 0));

    let removed = store
        .prune(&RetentionPolicy {
            keep_last: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(removed, vec!["b1".to_string()]);
    // Within the grace period the orphan stays (a backup in progress may be about to use it).
    let gc = store
        .gc(Duration::from_secs(3600), SystemTime::now())
        .unwrap();
    assert_eq!((gc.removed, gc.kept_in_grace), (0, 1));
    let gc = store.gc(Duration::ZERO, SystemTime::now()).unwrap();
    assert_eq!((gc.referenced, gc.removed), (4, 1));
    let only_b1 = m1
        .chunk_ids()
        .find(|id| !m2.chunk_ids().any(|x| x == *id))
        .unwrap();
    assert!(!store.backend().exists(&chunk_key(only_b1)).unwrap());

    let out = tmp.path().join("restored");
    store.restore_file(&m2, "disk0", &out).unwrap();
    assert_eq!(
        file_hash(&out),
        v2,
        "the kept backup still restores after GC"
    );
}

#[test]
fn verify_finds_a_corrupted_chunk_and_marks_only_that_backup_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk0.img");
    sparse_disk(&disk);
    let root = tmp.path().join("store");
    let store = dir_store(&root, StoreConfig::default());
    let r = store.backup_file("disk0", &disk, None, None).unwrap();
    let m = store.new_manifest("b1", None, vec![r.index]).unwrap();
    store.put_manifest(&m).unwrap();
    assert!(store.verify("b1").unwrap().damaged.is_empty());
    assert!(!store.get_manifest("b1").unwrap().is_damaged());

    let victim = *m.chunk_ids().nth(2).unwrap();
    let path = root.join(chunk_key(&victim));
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();

    let report = store.verify("b1").unwrap();
    assert_eq!(
        report.damaged.keys().copied().collect::<Vec<_>>(),
        vec![victim]
    );
    assert!(
        store.get_manifest("b1").unwrap().is_damaged(),
        "the manifest is marked damaged"
    );
    let err = store
        .restore_file(&m, "disk0", &tmp.path().join("out"))
        .unwrap_err();
    assert!(err.to_string().contains(&victim.to_hex()), "{err}");

    std::fs::remove_file(&path).unwrap();
    assert_eq!(store.verify("b1").unwrap().damaged[&victim], "missing");
}

#[test]
fn malformed_manifest_is_rejected_with_a_clear_error_and_gc_refuses_to_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk0.img");
    sparse_disk(&disk);
    let root = tmp.path().join("store");
    let store = dir_store(&root, StoreConfig::default());
    let r = store.backup_file("disk0", &disk, None, None).unwrap();
    store
        .put_manifest(&store.new_manifest("good", None, vec![r.index]).unwrap())
        .unwrap();
    store
        .backend()
        .put("manifests/evil.json", br#"{"format":1,"backup_id":"../x"}"#)
        .unwrap();

    let err = store.get_manifest("evil").unwrap_err().to_string();
    assert!(
        err.contains("malformed manifest manifests/evil.json"),
        "{err}"
    );
    let err = store.gc(Duration::ZERO, SystemTime::now()).unwrap_err();
    assert!(
        matches!(err, BackupError::MalformedManifest { .. }),
        "{err}"
    );
    assert_eq!(
        store.backend().list("chunks/").unwrap().len(),
        4,
        "nothing swept"
    );
    assert!(
        store.get_manifest("../etc").is_err(),
        "ids are checked before becoming keys"
    );
}

#[test]
fn an_object_that_is_not_a_chunk_is_reported_by_verify_and_refused_by_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk0.img");
    sparse_disk(&disk);
    let store = dir_store(&tmp.path().join("store"), StoreConfig::default());
    let r = store.backup_file("disk0", &disk, None, None).unwrap();
    let m = store.new_manifest("b1", None, vec![r.index]).unwrap();
    store.put_manifest(&m).unwrap();
    let victim = *m.chunk_ids().next().unwrap();
    store
        .backend()
        .put(&chunk_key(&victim), b"garbage, not a chunk")
        .unwrap();

    let report = store.verify("b1").unwrap();
    assert!(report.damaged[&victim].contains("bad magic"), "{report:?}");
    let err = store
        .restore_file(&m, "disk0", &tmp.path().join("out"))
        .unwrap_err();
    assert!(matches!(err, BackupError::MalformedChunk { .. }), "{err}");
}

#[test]
fn a_chunk_reused_by_a_new_backup_is_protected_by_the_gc_grace_period() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk0.img");
    sparse_disk(&disk);
    let root = tmp.path().join("store");
    let store = dir_store(&root, StoreConfig::default());
    let r = store.backup_file("disk0", &disk, None, None).unwrap();
    let m1 = store
        .new_manifest("b1", Some(1_000), vec![r.index])
        .unwrap();
    store.put_manifest(&m1).unwrap();
    // The chunks are a day old, and the backup that made them is pruned.
    let day_ago = SystemTime::now() - Duration::from_secs(86_400);
    for id in m1.chunk_ids() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(root.join(chunk_key(id)))
            .unwrap();
        f.set_modified(day_ago).unwrap();
    }
    store.prune(&RetentionPolicy::default()).unwrap();

    // A new backup starts, reuses every chunk, and GC runs before its manifest is stored.
    let again = store.backup_file("disk0", &disk, None, None).unwrap();
    assert_eq!((again.chunks_new, again.chunks_reused), (0, 4));
    let gc = store
        .gc(Duration::from_secs(3600), SystemTime::now())
        .unwrap();
    assert_eq!(
        (gc.removed, gc.kept_in_grace),
        (0, 4),
        "reused chunks were touched"
    );
    let m2 = store.new_manifest("b2", None, vec![again.index]).unwrap();
    store.put_manifest(&m2).unwrap();
    let out = tmp.path().join("restored");
    store.restore_file(&m2, "disk0", &out).unwrap();
    assert_eq!(file_hash(&out), file_hash(&disk));

    // A chunk missing from the store is re-read by an incremental backup, not referenced.
    let gone = *m2.chunk_ids().next().unwrap();
    store.backend().delete(&chunk_key(&gone)).unwrap();
    let dirty = DirtyBlocks::new(4 * MIB, 64 * MIB);
    let inc = store
        .backup_file("disk0", &disk, Some(&m2), Some(&dirty))
        .unwrap();
    assert!(!inc.full_read);
    assert_eq!((inc.bytes_read, inc.chunks_new), (4 * MIB, 1));
    assert!(store.backend().exists(&chunk_key(&gone)).unwrap());
}

#[test]
fn strict_incremental_fails_on_a_missing_previous_chunk_and_counts_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk0.img");
    sparse_disk(&disk);
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let store = dir_store(&tmp.path().join("store"), StoreConfig::default())
        .strict_incremental()
        .with_progress(progress.clone());
    let first = store.backup_file("disk0", &disk, None, None).unwrap();
    assert_eq!(
        progress.load(std::sync::atomic::Ordering::Relaxed),
        64 * MIB,
        "progress counts the bytes covered: read, or holes skipped"
    );
    let m1 = store.new_manifest("b1", None, vec![first.index]).unwrap();
    store.put_manifest(&m1).unwrap();
    let dirty = DirtyBlocks::new(4 * MIB, 64 * MIB);
    assert_eq!(
        store.incremental_refused("disk0", 64 * MIB, Some(&m1), Some(&dirty)),
        None
    );
    assert!(store
        .incremental_refused("disk0", 64 * MIB, Some(&m1), None)
        .unwrap()
        .contains("no dirty-block bitmap"));
    // A clean chunk of the previous backup vanishes: a staged source has only holes
    // there, so the backup must fail rather than store zeros.
    let gone = m1.chunk_ids().next().copied().unwrap();
    std::fs::remove_file(tmp.path().join("store").join(chunk_key(&gone))).unwrap();
    let e = store
        .backup_file("disk0", &disk, Some(&m1), Some(&dirty))
        .unwrap_err()
        .to_string();
    assert!(e.contains("take a full backup") && e.contains("b1"), "{e}");
    // Without strict, the same backup re-reads the piece.
    let lax = dir_store(&tmp.path().join("store"), StoreConfig::default());
    let r = lax
        .backup_file("disk0", &disk, Some(&m1), Some(&dirty))
        .unwrap();
    assert!(r.bytes_read > 0 && !r.full_read);
    store.delete_backup("b1").unwrap();
    assert!(store.list_backups().unwrap().is_empty());
}

#[test]
fn a_backup_reads_regular_files_only_never_a_symlink_or_fifo_put_in_its_place() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("another-tenants-disk.img");
    std::fs::write(&secret, b"not yours").unwrap();
    let store = Store::new(
        Box::new(DirBackend::open(tmp.path().join("store")).unwrap()),
        StoreConfig::default(),
    );
    // A staging directory a jailed VMM controls: its `disk0.img` made a symlink.
    let link = tmp.path().join("disk0.img");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let e = store.backup_file("disk0", &link, None, None).unwrap_err();
    assert!(e.to_string().contains("not followed if a symlink"), "{e}");
    // A FIFO (which would block a reader) is refused as not a regular file.
    let fifo = tmp.path().join("memory");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let e = store.backup_file("memory", &fifo, None, None).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    // The file itself is read.
    assert!(store.backup_file("disk0", &secret, None, None).is_ok());
}
