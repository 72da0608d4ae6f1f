//! What a live migration needs of a disk: its open file and the blocks the guest wrote
//! since the last collection. The worker marks every write's blocks when the write
//! completes (the data is in the file by then), so a block read by the migration after
//! a collection either has the write or is marked for the next round. The log outlives
//! the device: a restore rebuilds the device, not the VM's log. The same writes mark
//! the disk's [`BackupLog`] (blocks changed since the last backup).

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::backup_log::BackupLog;
use super::copy_before_write::CopyBeforeWrite;
use crate::dirty::DirtyBitmap;

/// Size of one tracked disk block (the unit the migration sends).
pub const DISK_BLOCK: u64 = 4096;

/// One bit per [`DISK_BLOCK`] of a disk, set by the guest's writes.
#[derive(Default)]
pub struct DiskLog {
    /// Disk size in bytes, fixed by the first device attached.
    len: OnceLock<u64>,
    words: OnceLock<Box<[AtomicU64]>>,
    /// The disk as the device opened it (reopened on restore).
    file: Mutex<Option<Arc<File>>>,
    /// Blocks written since the last backup checkpoint.
    pub backup: BackupLog,
    /// A running checkpoint's copy of the blocks the guest is about to overwrite.
    pub cbw: CopyBeforeWrite,
}

impl DiskLog {
    /// Binds the log to a device's open disk of `len` bytes. The size is the first
    /// device's; a restore reattaches the same disk.
    pub fn attach(&self, file: Arc<File>, len: u64) {
        let len = *self.len.get_or_init(|| len);
        self.backup.attach(len);
        self.words.get_or_init(|| {
            (0..Self::blocks_of(len).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect()
        });
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
    }

    fn blocks_of(len: u64) -> usize {
        len.div_ceil(DISK_BLOCK) as usize
    }

    /// The disk's size in bytes (0 before a device attached).
    pub fn len(&self) -> u64 {
        self.len.get().copied().unwrap_or(0)
    }

    /// Whether no device attached yet (or the disk is empty).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Blocks of the disk.
    pub fn blocks(&self) -> usize {
        Self::blocks_of(self.len())
    }

    /// The disk file, once a device attached.
    pub fn file(&self) -> Option<Arc<File>> {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Marks the blocks of bytes `offset..offset + len` written.
    pub fn mark(&self, offset: u64, len: u64) {
        self.backup.mark(offset, len);
        let Some(words) = self.words.get() else {
            return;
        };
        if len == 0 {
            return;
        }
        let blocks = self.blocks() as u64;
        let first = offset / DISK_BLOCK;
        let last = ((offset.saturating_add(len) - 1) / DISK_BLOCK).min(blocks.saturating_sub(1));
        for b in first..=last {
            let b = b as usize;
            if let Some(w) = words.get(b / 64) {
                w.fetch_or(1 << (b % 64), Ordering::Release);
            }
        }
    }

    /// The blocks written since the last call, and clears them.
    pub fn collect(&self) -> DirtyBitmap {
        let blocks = self.blocks();
        let words = match self.words.get() {
            Some(w) => w.iter().map(|w| w.swap(0, Ordering::AcqRel)).collect(),
            None => Vec::new(),
        };
        DirtyBitmap::from_words(words, blocks).unwrap_or_else(|| DirtyBitmap::new(blocks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(len: u64) -> DiskLog {
        let l = DiskLog::default();
        l.attach(Arc::new(tempfile_stub()), len);
        l
    }

    fn tempfile_stub() -> File {
        File::open("/dev/null").unwrap()
    }

    #[test]
    fn a_write_marks_every_block_it_touches_and_collect_clears_them() {
        let l = log(10 * DISK_BLOCK + 512);
        assert_eq!(l.blocks(), 11, "a partial last block counts");
        l.mark(DISK_BLOCK - 512, 1024); // straddles blocks 0 and 1
        l.mark(10 * DISK_BLOCK, 512);
        l.mark(3 * DISK_BLOCK, 0);
        let d = l.collect();
        assert_eq!(d.iter().collect::<Vec<_>>(), vec![0, 1, 10]);
        assert_eq!(l.collect().count(), 0, "collected once");
    }

    #[test]
    fn writes_past_the_end_and_before_attach_are_ignored() {
        let l = DiskLog::default();
        l.mark(0, 4096);
        assert_eq!(l.collect().count(), 0);
        let l = log(2 * DISK_BLOCK);
        l.mark(u64::MAX - 10, 100);
        l.mark(5 * DISK_BLOCK, 10);
        assert_eq!(l.collect().count(), 0);
        // A second attach (a restore) keeps the first size.
        l.attach(Arc::new(tempfile_stub()), 99 * DISK_BLOCK);
        assert_eq!(l.blocks(), 2);
    }
}
