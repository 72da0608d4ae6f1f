//! Copy-before-write for a backup checkpoint: the blocks a backup must read are
//! copied to its staging file after the guest has resumed, and a guest write that
//! reaches a block not copied yet first copies the block's old content. So the pause
//! only marks the point in time (no data is copied in it), and the staged copy is the
//! disk exactly as it was at that point. The staged file is sparse: all-zero blocks
//! stay holes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nova_vmm_api::BACKUP_BLOCK;

/// One disk's copy in progress.
struct Copy {
    src: Arc<File>,
    dest: File,
    len: u64,
    /// Blocks still to copy, one bit each.
    pending: Vec<u64>,
    /// The lowest block that may still be pending (the background copy's cursor).
    cursor: u64,
    buf: Vec<u8>,
    bytes_copied: u64,
    /// Blocks copied because the guest was about to write them.
    copied_for_writes: u64,
    error: Option<String>,
}

impl Copy {
    fn is_pending(&self, b: u64) -> bool {
        self.pending
            .get((b / 64) as usize)
            .is_some_and(|w| w & (1 << (b % 64)) != 0)
    }

    /// Copies block `b` (if pending) and clears it; a failure is kept for the end.
    fn copy(&mut self, b: u64) {
        if !self.is_pending(b) {
            return;
        }
        self.pending[(b / 64) as usize] &= !(1 << (b % 64));
        if self.error.is_some() {
            return;
        }
        let off = b * BACKUP_BLOCK;
        let n = BACKUP_BLOCK.min(self.len.saturating_sub(off)) as usize;
        let buf = &mut self.buf[..n];
        let res = self.src.read_exact_at(buf, off).and_then(|()| {
            if buf.iter().any(|&x| x != 0) {
                self.dest.write_all_at(buf, off)?;
                self.bytes_copied += n as u64;
            }
            Ok(())
        });
        if let Err(e) = res {
            self.error = Some(format!("copying block {b}: {e}"));
        }
    }
}

/// What a finished copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyDone {
    /// Bytes written to the staging file (all-zero blocks are not).
    pub bytes_copied: u64,
    /// Blocks the guest's writes reached before the background copy did.
    pub copied_for_writes: u64,
}

/// A disk's copy-before-write state: idle, or copying for one checkpoint.
#[derive(Default)]
pub struct CopyBeforeWrite {
    /// Whether a copy runs: the write path's lock-free check.
    active: AtomicBool,
    copy: Mutex<Option<Copy>>,
}

impl CopyBeforeWrite {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Copy>> {
        self.copy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts preserving the blocks set in `pending` of `src` (`len` bytes) into
    /// `dest`. Call with the disk's writes drained (the VM paused).
    pub fn begin(&self, src: Arc<File>, len: u64, dest: File, pending: Vec<u64>) {
        *self.lock() = Some(Copy {
            src,
            dest,
            len,
            pending,
            cursor: 0,
            buf: vec![0; BACKUP_BLOCK as usize],
            bytes_copied: 0,
            copied_for_writes: 0,
            error: None,
        });
        self.active.store(true, Ordering::Release);
    }

    /// Called before a guest write of bytes `offset..offset + len` is submitted:
    /// copies the blocks it touches that the backup has not copied yet. The write
    /// waits for at most these blocks' copy.
    pub fn before_write(&self, offset: u64, len: u64) {
        if len == 0 || !self.active.load(Ordering::Acquire) {
            return;
        }
        let mut g = self.lock();
        let Some(c) = g.as_mut() else { return };
        if c.len == 0 {
            return;
        }
        let first = offset / BACKUP_BLOCK;
        let last =
            ((offset.saturating_add(len) - 1) / BACKUP_BLOCK).min((c.len - 1) / BACKUP_BLOCK);
        for b in first..=last {
            if c.is_pending(b) {
                c.copy(b);
                c.copied_for_writes += 1;
            }
        }
    }

    /// Copies the next pending block, in disk order; false once none is left.
    pub fn copy_next(&self) -> bool {
        let mut g = self.lock();
        let Some(c) = g.as_mut() else { return false };
        let blocks = c.len.div_ceil(BACKUP_BLOCK);
        while c.cursor < blocks {
            let b = c.cursor;
            c.cursor += 1;
            if c.is_pending(b) {
                c.copy(b);
                return true;
            }
        }
        false
    }

    /// Ends the copy (every block copied, or given up): the staged file is synced.
    pub fn finish(&self) -> Result<CopyDone, String> {
        let c = self.lock().take();
        self.active.store(false, Ordering::Release);
        let c = c.ok_or_else(|| "no copy in progress".to_string())?;
        if let Some(e) = c.error {
            return Err(e);
        }
        if c.pending.iter().any(|&w| w != 0) {
            return Err("the copy ended with blocks left".into());
        }
        c.dest
            .sync_all()
            .map_err(|e| format!("syncing the staged copy: {e}"))?;
        Ok(CopyDone {
            bytes_copied: c.bytes_copied,
            copied_for_writes: c.copied_for_writes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &std::path::Path, len: u64) -> File {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        f.set_len(len).unwrap();
        f
    }

    #[test]
    fn a_guest_write_during_the_copy_finds_the_old_block_staged_and_the_staged_copy_is_the_point_in_time(
    ) {
        let dir = std::env::temp_dir().join(format!("nova-cbw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let len = 4 * BACKUP_BLOCK;
        let src = Arc::new(file(&dir.join("disk"), len));
        for b in 0..4 {
            src.write_all_at(&[b as u8 + 1; 4096], b * BACKUP_BLOCK + 8192)
                .unwrap();
        }
        let at_checkpoint = std::fs::read(dir.join("disk")).unwrap();
        let cbw = CopyBeforeWrite::default();
        // Blocks 0, 2 and 3 are to be backed up; block 1 is not (unchanged).
        cbw.begin(
            src.clone(),
            len,
            file(&dir.join("staged"), len),
            vec![0b1101],
        );
        assert!(cbw.copy_next(), "block 0");
        // The guest writes into block 3 (pending), block 0 (copied) and block 1 (not
        // part of the backup): only block 3 is copied first.
        for b in [3, 0, 1] {
            cbw.before_write(b * BACKUP_BLOCK + 8192, 4096);
            src.write_all_at(&[0xee; 4096], b * BACKUP_BLOCK + 8192)
                .unwrap();
        }
        while cbw.copy_next() {}
        let done = cbw.finish().unwrap();
        assert_eq!(done.copied_for_writes, 1);
        assert_eq!(done.bytes_copied, 3 * BACKUP_BLOCK);
        let staged = std::fs::read(dir.join("staged")).unwrap();
        for b in [0usize, 2, 3] {
            let r = b * BACKUP_BLOCK as usize..(b + 1) * BACKUP_BLOCK as usize;
            assert_eq!(staged[r.clone()], at_checkpoint[r], "block {b}");
        }
        assert!(staged[BACKUP_BLOCK as usize..2 * BACKUP_BLOCK as usize]
            .iter()
            .all(|&x| x == 0));
        // Idle again: writes pass straight through.
        cbw.before_write(0, 4096);
        assert!(cbw.finish().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
