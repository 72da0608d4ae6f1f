//! What an incremental backup needs of a disk: the 4 MiB blocks the guest wrote since
//! the last backup checkpoint, and what that checkpoint was. It outlives the VMM in a
//! bitmap file (read at start, rewritten "in use" at once so that a crash leaves it
//! unusable rather than wrong, saved clean on exit) and travels with the VM's state in
//! snapshots and migrations. A bitmap that is missing, corrupt, in use or for another
//! disk size is "lost": the next backup reads the whole disk and says why.
//!
//! Writes made to the disk file while no VMM ran (a tool, a restore of the disk, a
//! copy over it) are in no bitmap, so the clean file also records the disk file's
//! identity at the VMM's exit ([`DiskIdentity`]: device, inode, size, modification
//! time to the nanosecond); a start that finds another identity loses the bitmap.
//! The change time is not compared: hostd changes the disk's owner before every
//! jailed start. A write within the same filesystem timestamp tick (a few ms) as the
//! VMM's exit, with the size unchanged, is the one change this cannot see.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use nova_vmm_api::BACKUP_BLOCK;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"NVBKMAP\0";
/// 2: the disk file's identity after the block size (version 1 files are lost once).
const VERSION: u32 = 2;
const FLAG_IN_USE: u32 = 1;
/// The disk identity fields hold the disk file's identity at a clean exit.
const FLAG_IDENTITY: u32 = 2;
/// Most words a bitmap file may hold (a 4 PiB disk).
const MAX_WORDS: u64 = 1 << 24;

/// A disk's backup bitmap as a snapshot or migration carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupBitmapState {
    pub disk_len: u64,
    /// The checkpoint the bits are relative to; `None`: no usable one.
    pub since: Option<String>,
    /// Why there is no usable checkpoint, when there is none.
    pub lost: Option<String>,
    pub words: Vec<u64>,
}

/// The checkpoint and bits a backup takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub since: Option<String>,
    pub lost: Option<String>,
    pub words: Vec<u64>,
}

#[derive(Debug, Default)]
struct Meta {
    since: Option<String>,
    lost: Option<String>,
    file: Option<PathBuf>,
    /// The disk file whose identity a clean save records.
    disk: Option<PathBuf>,
}

/// What says a disk file is the one a bitmap was saved with: device, inode, size and
/// modification time (ns). Any write to the file moves its modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiskIdentity {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
}

impl DiskIdentity {
    /// The identity of the file at `path` now.
    pub fn of(path: &Path) -> std::io::Result<DiskIdentity> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(path)?;
        Ok(DiskIdentity {
            dev: md.dev(),
            ino: md.ino(),
            len: md.len(),
            mtime_sec: md.mtime(),
            mtime_nsec: md.mtime_nsec() as u32,
        })
    }

    /// What differs from `saved` (for the reason a bitmap is lost).
    fn differs(&self, saved: &DiskIdentity) -> Option<String> {
        if (self.dev, self.ino) != (saved.dev, saved.ino) {
            Some("the disk file was replaced by another file".into())
        } else if self.len != saved.len {
            Some(format!(
                "the disk file's size went from {} to {} bytes",
                saved.len, self.len
            ))
        } else if (self.mtime_sec, self.mtime_nsec) != (saved.mtime_sec, saved.mtime_nsec) {
            Some("the disk file was modified".into())
        } else {
            None
        }
    }
}

/// A decoded bitmap file: the bits, and the disk's identity when it was saved clean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub state: BackupBitmapState,
    pub disk: Option<DiskIdentity>,
}

/// One bit per [`BACKUP_BLOCK`] of a disk, set by the guest's writes.
#[derive(Default)]
pub struct BackupLog {
    len: OnceLock<u64>,
    words: OnceLock<Box<[AtomicU64]>>,
    meta: Mutex<Meta>,
}

fn blocks_of(len: u64) -> u64 {
    len.div_ceil(BACKUP_BLOCK)
}

fn words_of(len: u64) -> usize {
    blocks_of(len).div_ceil(64) as usize
}

impl BackupLog {
    /// Sizes the log for a disk of `len` bytes (the first attach's size is kept).
    pub fn attach(&self, len: u64) {
        let len = *self.len.get_or_init(|| len);
        self.words
            .get_or_init(|| (0..words_of(len)).map(|_| AtomicU64::new(0)).collect());
    }

    fn meta(&self) -> std::sync::MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the blocks of bytes `offset..offset + len` written.
    pub fn mark(&self, offset: u64, len: u64) {
        let (Some(words), Some(&disk)) = (self.words.get(), self.len.get()) else {
            return;
        };
        if len == 0 || disk == 0 {
            return;
        }
        let first = offset / BACKUP_BLOCK;
        let last = (offset.saturating_add(len) - 1) / BACKUP_BLOCK;
        for b in first..=last.min(blocks_of(disk) - 1) {
            if let Some(w) = words.get((b / 64) as usize) {
                w.fetch_or(1 << (b % 64), Ordering::Release);
            }
        }
    }

    /// Loads the bitmap file at `path` (kept as this log's file) for the disk file
    /// `disk`, then rewrites it in use. Anything unusable, or a disk file that is not
    /// the one the bitmap was saved with (changed while the VM was stopped), leaves
    /// the log "lost" with the reason.
    pub fn open_file(&self, path: &Path, disk: &Path) {
        let len = self.len.get().copied().unwrap_or(0);
        let loaded = match std::fs::read(path) {
            Ok(bytes) => decode(&bytes, len).and_then(|d| {
                let saved = d.disk.ok_or_else(|| {
                    "backup bitmap file does not record its disk file's identity".to_string()
                })?;
                let now = DiskIdentity::of(disk)
                    .map_err(|e| format!("disk file {}: {e}", disk.display()))?;
                match now.differs(&saved) {
                    Some(why) => Err(format!("{why} while its VM was stopped")),
                    None => Ok(d.state),
                }
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err("no backup bitmap file (first start, or it was removed)".to_string())
            }
            Err(e) => Err(format!("backup bitmap file unreadable: {e}")),
        };
        {
            let mut m = self.meta();
            m.file = Some(path.to_path_buf());
            m.disk = Some(disk.to_path_buf());
            match loaded {
                Ok(st) => {
                    self.or_words(&st.words);
                    m.since = st.since;
                    m.lost = None;
                }
                Err(reason) => {
                    tracing::info!(file = %path.display(), %reason, "backup bitmap lost");
                    m.since = None;
                    m.lost = Some(reason);
                }
            }
        }
        self.save(true);
    }

    fn or_words(&self, from: &[u64]) {
        if let Some(words) = self.words.get() {
            for (w, f) in words.iter().zip(from) {
                w.fetch_or(*f, Ordering::AcqRel);
            }
        }
    }

    /// The bits and their checkpoint, clearing the bits. The VM must be paused.
    pub fn take(&self) -> Taken {
        let words = match self.words.get() {
            Some(w) => w.iter().map(|w| w.swap(0, Ordering::AcqRel)).collect(),
            None => Vec::new(),
        };
        let m = self.meta();
        Taken {
            since: m.since.clone(),
            lost: m.lost.clone(),
            words,
        }
    }

    /// Starts counting from checkpoint `id` (after [`take`](Self::take)), saved in use.
    pub fn restart_at(&self, id: &str) {
        {
            let mut m = self.meta();
            m.since = Some(id.to_string());
            m.lost = None;
        }
        self.save(true);
    }

    /// Marks the log lost (a checkpoint that failed after its bits were taken).
    pub fn lose(&self, reason: &str) {
        {
            let mut m = self.meta();
            m.since = None;
            m.lost = Some(reason.to_string());
        }
        self.save(true);
    }

    /// The log as a snapshot or migration carries it (bits kept).
    pub fn state(&self) -> BackupBitmapState {
        let m = self.meta();
        BackupBitmapState {
            disk_len: self.len.get().copied().unwrap_or(0),
            since: m.since.clone(),
            lost: m.lost.clone(),
            words: self
                .words
                .get()
                .map(|w| w.iter().map(|w| w.load(Ordering::Acquire)).collect())
                .unwrap_or_default(),
        }
    }

    /// Adopts a carried log (a restored or migrated VM), saved in use.
    pub fn restore(&self, st: &BackupBitmapState) {
        let len = self.len.get().copied().unwrap_or(0);
        {
            let mut m = self.meta();
            if st.disk_len != len || st.words.len() != words_of(len) {
                m.since = None;
                m.lost = Some(format!(
                    "the carried backup bitmap is for a {} byte disk, this one has {len}",
                    st.disk_len
                ));
            } else {
                if let Some(words) = self.words.get() {
                    for (w, f) in words.iter().zip(&st.words) {
                        w.store(*f, Ordering::Release);
                    }
                }
                m.since = st.since.clone();
                m.lost = st.lost.clone();
            }
        }
        self.save(true);
    }

    /// Writes the bitmap file (if the log has one): `in_use` while the VMM runs,
    /// clean on exit, with the disk file's identity as it is now (every write of the
    /// guest completed: the VM is stopped). A failure is logged: the next start then
    /// finds it unusable.
    pub fn save(&self, in_use: bool) {
        let (path, bytes) = {
            let m = self.meta();
            let Some(path) = m.file.clone() else { return };
            let disk = match (&m.disk, in_use) {
                (Some(d), false) => match DiskIdentity::of(d) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        tracing::warn!(disk = %d.display(), "backup bitmap: disk identity: {e}");
                        None
                    }
                },
                _ => None,
            };
            let st = BackupBitmapState {
                disk_len: self.len.get().copied().unwrap_or(0),
                since: m.since.clone(),
                lost: None,
                words: self
                    .words
                    .get()
                    .map(|w| w.iter().map(|w| w.load(Ordering::Acquire)).collect())
                    .unwrap_or_default(),
            };
            (path, encode(&st, in_use, disk.as_ref()))
        };
        if let Err(e) = write_atomic(&path, &bytes) {
            tracing::warn!(file = %path.display(), "cannot save the backup bitmap: {e}");
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// `magic | version u32 | flags u32 | disk_len u64 | block_size u64 | dev u64 | ino
/// u64 | mtime_sec i64 | mtime_nsec u32 | since_len u32 | since | word count u64 |
/// words (LE) | crc32 of all before`. The identity fields are zero unless `disk` is
/// given (flag [`FLAG_IDENTITY`]); its size is `disk_len`.
pub fn encode(st: &BackupBitmapState, in_use: bool, disk: Option<&DiskIdentity>) -> Vec<u8> {
    let since = st.since.as_deref().unwrap_or("").as_bytes();
    let mut out = Vec::with_capacity(76 + since.len() + st.words.len() * 8);
    let mut flags = if in_use { FLAG_IN_USE } else { 0 };
    if disk.is_some() {
        flags |= FLAG_IDENTITY;
    }
    let id = disk.copied().unwrap_or_default();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&st.disk_len.to_le_bytes());
    out.extend_from_slice(&BACKUP_BLOCK.to_le_bytes());
    out.extend_from_slice(&id.dev.to_le_bytes());
    out.extend_from_slice(&id.ino.to_le_bytes());
    out.extend_from_slice(&id.mtime_sec.to_le_bytes());
    out.extend_from_slice(&id.mtime_nsec.to_le_bytes());
    out.extend_from_slice(&(since.len() as u32).to_le_bytes());
    out.extend_from_slice(since);
    out.extend_from_slice(&(st.words.len() as u64).to_le_bytes());
    for w in &st.words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a bitmap file for a disk of `disk_len` bytes; any problem is the reason
/// the bitmap is lost. Never panics on any input.
pub fn decode(bytes: &[u8], disk_len: u64) -> Result<Decoded, String> {
    let bad = |why: &str| Err(format!("backup bitmap file {why}"));
    if bytes.len() < 4 {
        return bad("is truncated");
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return bad("fails its checksum (torn or corrupt)");
    }
    let mut r = body;
    let mut take = |n: usize| -> Option<&[u8]> {
        if r.len() < n {
            return None;
        }
        let (a, b) = r.split_at(n);
        r = b;
        Some(a)
    };
    let u32_at = |b: Option<&[u8]>| b.map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let u64_at = |b: Option<&[u8]>| b.map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    if take(8) != Some(MAGIC.as_slice()) {
        return bad("has no NVBKMAP magic");
    }
    match u32_at(take(4)) {
        Some(VERSION) => {}
        Some(1) => return Err(
            "backup bitmap file is of version 1, which does not record its disk file's identity"
                .into(),
        ),
        Some(v) => return Err(format!("backup bitmap file has unknown version {v}")),
        None => return bad("is truncated"),
    }
    let Some(flags) = u32_at(take(4)) else {
        return bad("is truncated");
    };
    if flags & FLAG_IN_USE != 0 {
        return bad("was in use: the VMM stopped without saving it (a crash)");
    }
    let (Some(len), Some(block)) = (u64_at(take(8)), u64_at(take(8))) else {
        return bad("is truncated");
    };
    if block != BACKUP_BLOCK {
        return Err(format!(
            "backup bitmap file has {block} byte blocks, expected {BACKUP_BLOCK}"
        ));
    }
    if len != disk_len {
        return Err(format!(
            "backup bitmap file is for a {len} byte disk, the disk has {disk_len} (resized)"
        ));
    }
    let (Some(dev), Some(ino), Some(msec), Some(mnsec)) = (
        u64_at(take(8)),
        u64_at(take(8)),
        u64_at(take(8)),
        u32_at(take(4)),
    ) else {
        return bad("is truncated");
    };
    let disk = (flags & FLAG_IDENTITY != 0).then_some(DiskIdentity {
        dev,
        ino,
        len,
        mtime_sec: msec as i64,
        mtime_nsec: mnsec,
    });
    let Some(slen) = u32_at(take(4)) else {
        return bad("is truncated");
    };
    if slen as usize > nova_vmm_api::backup::MAX_CHECKPOINT_LEN {
        return bad("has an over-long checkpoint id");
    }
    let Some(since) = take(slen as usize) else {
        return bad("is truncated");
    };
    let since = match std::str::from_utf8(since) {
        Ok("") => None,
        Ok(s) if nova_vmm_api::backup::validate_checkpoint("since", s).is_ok() => {
            Some(s.to_string())
        }
        _ => return bad("has a malformed checkpoint id"),
    };
    let Some(n) = u64_at(take(8)) else {
        return bad("is truncated");
    };
    if n > MAX_WORDS || n as usize != words_of(len) {
        return bad("has a word count that does not match the disk");
    }
    let Some(raw) = take(n as usize * 8) else {
        return bad("is truncated");
    };
    if !r.is_empty() {
        return bad("has trailing bytes");
    }
    let words = raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Ok(Decoded {
        state: BackupBitmapState {
            disk_len: len,
            since,
            lost: None,
            words,
        },
        disk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn log(len: u64) -> BackupLog {
        let l = BackupLog::default();
        l.attach(len);
        l
    }

    #[test]
    fn writes_mark_4_mib_blocks_and_take_clears_them() {
        let l = log(10 * BACKUP_BLOCK + 512);
        l.mark(BACKUP_BLOCK - 512, 1024);
        l.mark(10 * BACKUP_BLOCK, 512);
        l.mark(u64::MAX - 3, 10);
        let t = l.take();
        assert_eq!(t.words, vec![0b100_0000_0011]);
        assert_eq!(l.take().words, vec![0]);
    }

    #[test]
    fn a_clean_file_is_adopted_and_rewritten_in_use_so_a_crash_loses_it() {
        let dir = std::env::temp_dir().join(format!("nova-bkmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk0.bitmap");
        let disk = dir.join("disk0.raw");
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(64 * MIB)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let l = log(64 * MIB);
        l.open_file(&path, &disk);
        assert!(l.take().lost.unwrap().contains("no backup bitmap file"));
        l.restart_at("b-1");
        l.mark(9 * MIB, 1);
        l.save(false); // a clean exit
        let again = log(64 * MIB);
        again.open_file(&path, &disk);
        let t = again.take();
        assert_eq!((t.since.as_deref(), t.lost), (Some("b-1"), None));
        assert_eq!(t.words, vec![0b100]);
        // The file now says "in use": a VMM killed here leaves it unusable.
        let crashed = log(64 * MIB);
        crashed.open_file(&path, &disk);
        let t = crashed.take();
        assert_eq!(t.since, None);
        assert!(t.lost.unwrap().contains("in use"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_disk_file_changed_or_replaced_while_its_vm_was_stopped_loses_the_bitmap() {
        use std::os::unix::fs::FileExt;
        let dir = std::env::temp_dir().join(format!("nova-bkid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (path, disk) = (dir.join("disk0.bitmap"), dir.join("disk0.raw"));
        let _ = std::fs::remove_file(&path);
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(64 * MIB)
            .unwrap();
        let stop_clean = || {
            let l = log(64 * MIB);
            l.open_file(&path, &disk);
            l.restart_at("b-1");
            l.save(false);
        };
        let start = || {
            let l = log(64 * MIB);
            l.open_file(&path, &disk);
            l.take()
        };
        // Untouched while stopped: adopted.
        stop_clean();
        assert_eq!(start().since.as_deref(), Some("b-1"));
        // Written in place (size unchanged) while stopped.
        stop_clean();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.write_all_at(b"changed", 5 * MIB).unwrap();
        drop(f);
        let t = start();
        assert_eq!(t.since, None);
        assert!(t
            .lost
            .unwrap()
            .contains("modified while its VM was stopped"));
        // Replaced by a copy (another inode) while stopped.
        stop_clean();
        let copy = dir.join("copy.raw");
        std::fs::copy(&disk, &copy).unwrap();
        std::fs::rename(&copy, &disk).unwrap();
        assert!(start().lost.unwrap().contains("replaced by another file"));
        // A version 1 file (no identity) is lost with a reason that says so.
        let mut v1 = encode(
            &BackupBitmapState {
                disk_len: 64 * MIB,
                since: Some("b".into()),
                lost: None,
                words: vec![0],
            },
            false,
            None,
        );
        v1[8] = 1;
        let n = v1.len() - 4;
        let crc = crc32fast::hash(&v1[..n]);
        v1[n..].copy_from_slice(&crc.to_le_bytes());
        assert!(decode(&v1, 64 * MIB).unwrap_err().contains("version 1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_resized_disk_or_a_carried_state_of_another_size_is_lost() {
        let st = BackupBitmapState {
            disk_len: 64 * MIB,
            since: Some("b".into()),
            lost: None,
            words: vec![1],
        };
        let e = decode(&encode(&st, false, None), 128 * MIB).unwrap_err();
        assert!(e.contains("resized"), "{e}");
        let l = log(128 * MIB);
        l.restore(&st);
        assert!(l.take().lost.unwrap().contains("64"));
        let l = log(64 * MIB);
        l.restore(&st);
        let t = l.take();
        assert_eq!((t.since.as_deref(), t.words), (Some("b"), vec![1]));
    }

    /// Mutated and random files (a fixed xorshift stream, so failures repeat): decode
    /// never panics, and what it accepts matches the disk.
    #[test]
    fn bitmap_files_fuzzed_never_panic() {
        let good = encode(
            &BackupBitmapState {
                disk_len: 300 * MIB,
                since: Some("vm-1.b-2".into()),
                lost: None,
                words: vec![0xdead_beef, 7],
            },
            false,
            Some(&DiskIdentity {
                dev: 1,
                ino: 2,
                len: 300 * MIB,
                mtime_sec: 3,
                mtime_nsec: 4,
            }),
        );
        decode(&good, 300 * MIB).unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut b = good.clone();
            for _ in 0..(next() % 4 + 1) {
                let r = next();
                let at = (r as usize >> 8) % (b.len() + 1);
                match r % 3 {
                    0 if at < b.len() => b[at] = (r >> 32) as u8,
                    1 => b.insert(at, (r >> 40) as u8),
                    _ if at < b.len() => {
                        b.remove(at);
                    }
                    _ => {}
                }
            }
            // Re-sealed half the time, so the parser behind the checksum is reached.
            if next() % 2 == 0 && b.len() >= 4 {
                let n = b.len() - 4;
                let crc = crc32fast::hash(&b[..n]);
                b[n..].copy_from_slice(&crc.to_le_bytes());
            }
            if let Ok(d) = decode(&b, 300 * MIB) {
                assert_eq!(d.state.words.len(), words_of(300 * MIB));
            }
        }
    }
}
