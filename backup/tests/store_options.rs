//! Each store option has its effect shown: encryption (the store holds no plaintext and
//! no plaintext hashes; a wrong or missing key is refused by name), SHA-256 chunk ids,
//! and content-defined chunking (survives an insertion that shifts every fixed chunk).

mod fixture;

use fixture::{file_hash, files_under, noise, sparse_disk, text, MIB};
use nova_backup::chunk::chunk_id;
use nova_backup::*;
use std::os::unix::fs::FileExt;

fn dir_store(root: &std::path::Path, cfg: StoreConfig) -> Store {
    Store::new(Box::new(DirBackend::open(root).unwrap()), cfg)
}

#[test]
fn encrypted_store_contains_no_plaintext_and_needs_the_users_key() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk0.img");
    sparse_disk(&disk);
    let plain = std::fs::read(&disk).unwrap();
    let root = tmp.path().join("store");
    let key = CryptKey::from_master(&[42u8; 32]);
    let cfg = StoreConfig {
        key: Some(key.clone()),
        ..Default::default()
    };
    let store = dir_store(&root, cfg);
    let r = store.backup_file("disk0", &disk, None, None).unwrap();
    let m = store.new_manifest("enc1", None, vec![r.index]).unwrap();
    store.put_manifest(&m).unwrap();
    assert_eq!(m.key_fingerprint.as_deref(), Some(key.fingerprint()));

    // No 32-byte window of the incompressible data, no text line, no plaintext chunk hash.
    let probes: Vec<&[u8]> = vec![
        &plain[..32],
        &plain[3 * MIB as usize..3 * MIB as usize + 32],
        b"quick brown fox",
    ];
    let plain_hashes: Vec<String> = plain
        .chunks(4 * MIB as usize)
        .map(|c| blake3::hash(c).to_hex().to_string())
        .collect();
    for f in files_under(&root) {
        let bytes = std::fs::read(&f).unwrap();
        for p in &probes {
            assert!(
                !bytes.windows(p.len()).any(|w| w == *p),
                "{} holds plaintext",
                f.display()
            );
        }
        let name = f.to_string_lossy().into_owned();
        let text_view = String::from_utf8_lossy(&bytes);
        for h in &plain_hashes {
            assert!(
                !name.contains(h.as_str()) && !text_view.contains(h.as_str()),
                "{name} reveals a plaintext hash"
            );
        }
    }

    let out = tmp.path().join("restored");
    store.restore_file(&m, "disk0", &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), plain);
    assert!(store.verify("enc1").unwrap().damaged.is_empty());

    let wrong = dir_store(
        &root,
        StoreConfig {
            key: Some(CryptKey::from_master(&[1u8; 32])),
            ..Default::default()
        },
    );
    let err = wrong
        .restore_file(&m, "disk0", &tmp.path().join("o2"))
        .unwrap_err();
    assert!(matches!(err, BackupError::KeyMismatch(_)), "{err}");
    let none = dir_store(&root, StoreConfig::default());
    let err = none.verify("enc1").unwrap_err();
    assert!(err.to_string().contains("encryption key mismatch"), "{err}");
}

#[test]
fn sha256_option_names_chunks_by_their_sha256() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk0.img");
    sparse_disk(&disk);
    let plain = std::fs::read(&disk).unwrap();
    let store = dir_store(
        &tmp.path().join("store"),
        StoreConfig {
            hash: HashAlgo::Sha256,
            ..Default::default()
        },
    );
    let r = store.backup_file("disk0", &disk, None, None).unwrap();
    let first = r.index.chunks[0].id.unwrap();
    assert_eq!(
        first,
        chunk_id(HashAlgo::Sha256, None, &plain[..4 * MIB as usize])
    );
    let digest: [u8; 32] = sha2::Sha256::digest(&plain[..4 * MIB as usize]).into();
    assert_eq!(first.0, digest);
    let m = store.new_manifest("s1", None, vec![r.index]).unwrap();
    store.put_manifest(&m).unwrap();
    assert_eq!(store.get_manifest("s1").unwrap().hash, HashAlgo::Sha256);
    let out = tmp.path().join("restored");
    store.restore_file(&m, "disk0", &out).unwrap();
    assert_eq!(file_hash(&out), file_hash(&disk));
}

use sha2::Digest;

/// A memory-file-like image: text and noise, no holes, 24 MiB.
fn memory_image(prefix: &[u8]) -> Vec<u8> {
    let mut v = prefix.to_vec();
    for i in 0..6u64 {
        v.extend(noise(100 + i, 3 * MIB as usize));
        v.extend(text(MIB as usize));
    }
    v
}

#[test]
fn cdc_chunking_deduplicates_after_an_insertion_that_shifts_fixed_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    std::fs::write(&a, memory_image(b"")).unwrap();
    std::fs::write(&b, memory_image(b"a few inserted bytes")).unwrap();
    let mut stored = Vec::new();
    for chunking in [Chunking::DISK, Chunking::CDC] {
        let store = dir_store(
            &tmp.path().join(format!("{chunking:?}")),
            StoreConfig {
                chunking,
                ..Default::default()
            },
        );
        let first = store.backup_file("mem", &a, None, None).unwrap();
        let second = store.backup_file("mem", &b, None, None).unwrap();
        let m = store.new_manifest("c1", None, vec![second.index]).unwrap();
        let out = tmp.path().join(format!("restored-{}", stored.len()));
        store.restore_file(&m, "mem", &out).unwrap();
        assert_eq!(file_hash(&out), file_hash(&b));
        stored.push((first.bytes_stored, second.bytes_stored));
    }
    let (fixed, cdc) = (stored[0].1, stored[1].1);
    // 18 MiB of the image is incompressible: a full re-store is at least that.
    assert!(
        fixed > 17 * MIB,
        "every fixed chunk shifted, all stored again: {fixed}"
    );
    assert!(
        cdc * 3 < fixed,
        "CDC re-synchronises and stores little: {cdc} vs fixed {fixed}"
    );
}

#[test]
fn cdc_incremental_with_a_dirty_bitmap_restores_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("mem");
    std::fs::write(&path, memory_image(b"")).unwrap();
    let store = dir_store(
        &tmp.path().join("store"),
        StoreConfig {
            chunking: Chunking::CDC,
            ..Default::default()
        },
    );
    let first = store.backup_file("mem", &path, None, None).unwrap();
    let m1 = store.new_manifest("m1", None, vec![first.index]).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&noise(77, 64 * 1024), 13 * MIB).unwrap();
    let mut dirty = DirtyBlocks::new(4 * MIB, 24 * MIB);
    dirty.mark(13 * MIB, 64 * 1024);
    let second = store
        .backup_file("mem", &path, Some(&m1), Some(&dirty))
        .unwrap();
    assert!(!second.full_read);
    assert!(
        second.bytes_read <= 16 * MIB,
        "reads only the CDC chunks over the dirty block: {}",
        second.bytes_read
    );
    let m2 = store.new_manifest("m2", None, vec![second.index]).unwrap();
    let out = tmp.path().join("restored");
    store.restore_file(&m2, "mem", &out).unwrap();
    assert_eq!(file_hash(&out), file_hash(&path));
}
