//! The same story on an S3-compatible object store: a real moto server (PyPI `moto[server]`)
//! reached through the `object_store` crate. Backup, incremental backup, restore,
//! a corrupted object found by verify, GC of unreferenced chunks only.

mod fixture;

use fixture::{file_hash, noise, sparse_disk, start_moto, MIB};
use nova_backup::store::chunk_key;
use nova_backup::*;
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime};

#[test]
fn s3_store_backs_up_incrementally_restores_verifies_and_collects_garbage() {
    let Some(moto) = start_moto("novabackups") else {
        return;
    };
    let backend = S3Backend::new(&S3Config {
        endpoint: Some(moto.endpoint.clone()),
        bucket: "novabackups".into(),
        region: "us-east-1".into(),
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        allow_http: true,
    })
    .unwrap();
    let store = Store::new(Box::new(backend), StoreConfig::default());
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk0.img");
    sparse_disk(&disk);

    let first = store.backup_file("disk0", &disk, None, None).unwrap();
    assert_eq!(first.chunks_new, 4);
    let m1 = store
        .new_manifest("s3-0001", Some(1_000), vec![first.index])
        .unwrap();
    store.put_manifest(&m1).unwrap();

    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(&noise(5, MIB as usize), 2 * MIB).unwrap();
    let mut dirty = DirtyBlocks::new(4 * MIB, 64 * MIB);
    dirty.mark(2 * MIB, MIB);
    let second = store
        .backup_file("disk0", &disk, Some(&m1), Some(&dirty))
        .unwrap();
    assert!(!second.full_read);
    assert_eq!((second.bytes_read, second.chunks_new), (4 * MIB, 1));
    let m2 = store
        .new_manifest("s3-0002", Some(2_000), vec![second.index])
        .unwrap();
    store.put_manifest(&m2).unwrap();
    assert_eq!(store.list_backups().unwrap().len(), 2);

    let out = tmp.path().join("restored");
    store
        .restore_file(&store.get_manifest("s3-0002").unwrap(), "disk0", &out)
        .unwrap();
    assert_eq!(file_hash(&out), file_hash(&disk));

    // Someone overwrites a chunk object in the bucket.
    let victim = *m2.chunk_ids().last().unwrap();
    let mut bytes = store.backend().get(&chunk_key(&victim)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    store.backend().put(&chunk_key(&victim), &bytes).unwrap();
    let report = store.verify("s3-0002").unwrap();
    assert_eq!(
        report.damaged.keys().copied().collect::<Vec<_>>(),
        vec![victim]
    );
    assert!(store.get_manifest("s3-0002").unwrap().is_damaged());

    store
        .prune(&RetentionPolicy {
            keep_last: 1,
            ..Default::default()
        })
        .unwrap();
    let gc = store
        .gc(Duration::ZERO, SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    assert_eq!((gc.referenced, gc.removed), (4, 1));
    for id in m2.chunk_ids() {
        assert!(
            store.backend().exists(&chunk_key(id)).unwrap(),
            "referenced chunk {id} kept"
        );
    }
}
