//! Backup checkpoints of a VM's disks: a crash-consistent point taken in a short pause
//! (every completed write is in its disk and marked; the bitmaps restart; the blocks a
//! backup must read are then copied to a sparse staging file per disk while the guest
//! runs, copy-before-write), and the bitmaps' files opened at start and saved clean on
//! exit.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

use nova_vmm_api::{CheckpointReport, CheckpointRequest, DiskCheckpoint, BACKUP_BLOCK};

use super::error::VmError;
use super::Vm;

impl Vm {
    /// Opens each disk's backup bitmap file, when its configuration names one. After
    /// the devices are built (the logs know their disks' sizes).
    pub(super) fn open_backup_bitmaps(&self) {
        for (d, log) in self.config.disks.iter().zip(&self.disk_logs) {
            if let Some(path) = &d.backup_bitmap {
                log.backup.open_file(path, &d.path);
            }
        }
    }

    /// Saves each disk's backup bitmap clean, for the next start. Pauses the devices
    /// first, so every completed write is marked. Call once the VM has stopped.
    pub fn save_backup_bitmaps(&self) {
        if self.disk_logs.is_empty() {
            return;
        }
        self.pause();
        for log in &self.disk_logs {
            log.backup.save(false);
        }
    }

    /// Takes a backup checkpoint: pause, take each disk's bits, restart its bitmap at
    /// `req.checkpoint`, start copying the blocks to read before the guest overwrites
    /// them, run `in_pause` (the caller's: the guest's memory, when the backup holds
    /// it), resume (if it ran); then copy the blocks to a sparse staging file per disk
    /// while the guest runs. The pause copies no disk data.
    pub fn backup_checkpoint(
        &self,
        req: &CheckpointRequest,
        in_pause: impl FnOnce(&Vm) -> Result<(), String>,
    ) -> Result<CheckpointReport, VmError> {
        let io = |what: String| move |e: std::io::Error| VmError::Device(format!("{what}: {e}"));
        std::fs::create_dir_all(&req.staging_dir)
            .map_err(io(format!("creating {}", req.staging_dir.display())))?;
        let was_running = !self.control.is_paused();
        let t = Instant::now();
        self.pause();
        let mut disks = Vec::with_capacity(self.disk_logs.len());
        let mut failed = None;
        for (i, log) in self.disk_logs.iter().enumerate() {
            let taken = log.backup.take();
            let staged = req.staging_dir.join(format!("disk{i}.img"));
            let shared = self.config.disks.get(i).is_some_and(|d| d.shared);
            let full_reason = if req.full {
                None
            } else if shared {
                Some("a shared disk is written by other hosts too".to_string())
            } else if taken.since.is_none() {
                Some(
                    taken
                        .lost
                        .clone()
                        .unwrap_or_else(|| "no backup checkpoint yet".into()),
                )
            } else if taken.since != req.previous {
                Some(format!(
                    "the bitmap is since checkpoint {:?}, the previous backup is {:?}",
                    taken.since.as_deref().unwrap_or(""),
                    req.previous.as_deref().unwrap_or("none")
                ))
            } else {
                None
            };
            let full = req.full || full_reason.is_some();
            let begun = match log.file() {
                Some(src) => begin_copy(&src, log.len(), &staged, full, &taken.words)
                    .map(|(dest, pending)| log.cbw.begin(src, log.len(), dest, pending)),
                None => Err(std::io::Error::other("the disk is not attached")),
            };
            match begun {
                Ok(()) => {
                    log.backup.restart_at(&req.checkpoint);
                    disks.push(DiskCheckpoint {
                        index: i as u32,
                        size: log.len(),
                        staged,
                        full,
                        full_reason,
                        block_size: BACKUP_BLOCK,
                        dirty_blocks: taken.words.iter().map(|w| w.count_ones() as u64).sum(),
                        dirty_words: taken.words,
                        bytes_copied: 0,
                    });
                }
                Err(e) => {
                    // The bits are gone with the failed checkpoint: the next backup reads all.
                    failed = Some(format!("staging disk {i} into {}: {e}", staged.display()));
                    break;
                }
            }
        }
        // The guest's memory and state at the same instant (written in the pause:
        // unlike the disks, memory has no copy-before-write).
        if failed.is_none() {
            failed = in_pause(self).err();
        }
        if was_running {
            self.resume();
        }
        let paused_ms = t.elapsed().as_secs_f64() * 1000.0;
        // The guest runs; blocks it is about to overwrite are copied by its writes.
        let mut copied_for_writes = 0;
        for (log, d) in self.disk_logs.iter().zip(&mut disks) {
            while failed.is_none() && log.cbw.copy_next() {}
            match log.cbw.finish() {
                Ok(done) => {
                    d.bytes_copied = done.bytes_copied;
                    copied_for_writes += done.copied_for_writes;
                }
                Err(e) => {
                    failed.get_or_insert(format!("staging disk {}: {e}", d.index));
                }
            }
        }
        if let Some(e) = failed {
            for log in &self.disk_logs {
                log.backup
                    .lose(&format!("checkpoint {} failed", req.checkpoint));
            }
            return Err(VmError::Device(e));
        }
        let copy_ms = t.elapsed().as_secs_f64() * 1000.0 - paused_ms;
        tracing::info!(
            checkpoint = %req.checkpoint,
            paused_ms,
            copy_ms,
            copied_for_writes,
            "backup checkpoint"
        );
        Ok(CheckpointReport {
            checkpoint: req.checkpoint.clone(),
            disks,
            paused_ms,
        })
    }
}

/// Creates the sparse staging file `dest` of `len` bytes and says which blocks of
/// `src` go into it: every block holding data (`all`), or the blocks set in `words`.
/// Metadata only (SEEK_DATA): it runs while the guest is paused.
fn begin_copy(
    src: &File,
    len: u64,
    dest: &Path,
    all: bool,
    words: &[u64],
) -> std::io::Result<(File, Vec<u64>)> {
    let _ = std::fs::remove_file(dest);
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)?;
    out.set_len(len)?;
    let blocks = len.div_ceil(BACKUP_BLOCK);
    let mut pending = vec![0u64; blocks.div_ceil(64) as usize];
    if all {
        let mut b = 0;
        while b < blocks {
            match next_data(src, b * BACKUP_BLOCK)? {
                None => break,
                Some(off) => {
                    b = b.max(off / BACKUP_BLOCK);
                    if b < blocks {
                        pending[(b / 64) as usize] |= 1 << (b % 64);
                    }
                    b += 1;
                }
            }
        }
    } else {
        for (p, w) in pending.iter_mut().zip(words) {
            *p = *w;
        }
        if let Some(last) = pending.last_mut() {
            // Bits past the disk's end mean nothing.
            if !blocks.is_multiple_of(64) {
                *last &= (1u64 << (blocks % 64)) - 1;
            }
        }
    }
    Ok((out, pending))
}

/// The first data offset of `f` at or after `off`, or None past the last data.
fn next_data(f: &File, off: u64) -> std::io::Result<Option<u64>> {
    // SAFETY: lseek on an fd we hold open; no memory involved. The file offset it
    // moves is never used: disk I/O is positional.
    let at = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, libc::SEEK_DATA) };
    if at < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            // No SEEK_DATA (a block device): all of it is data.
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Some(off)),
            _ => Err(e),
        };
    }
    Ok(Some(at as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::block::copy_before_write::CopyBeforeWrite;
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    fn staged(src: &Arc<File>, len: u64, dest: &Path, all: bool, words: &[u64]) -> u64 {
        let (out, pending) = begin_copy(src, len, dest, all, words).unwrap();
        let cbw = CopyBeforeWrite::default();
        cbw.begin(src.clone(), len, out, pending);
        while cbw.copy_next() {}
        cbw.finish().unwrap().bytes_copied
    }

    #[test]
    fn staging_copies_dirty_or_allocated_blocks_and_leaves_the_rest_holes() {
        let dir = std::env::temp_dir().join(format!("nova-stage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src_path = dir.join("src");
        let len = 5 * BACKUP_BLOCK + 4096;
        let src = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&src_path)
            .unwrap();
        src.set_len(len).unwrap();
        src.write_all_at(b"one", BACKUP_BLOCK + 10).unwrap();
        src.write_all_at(b"tail", 5 * BACKUP_BLOCK + 100).unwrap();
        let src = Arc::new(src);
        let dest = dir.join("all");
        let n = staged(&src, len, &dest, true, &[]);
        assert_eq!(n, BACKUP_BLOCK + 4096);
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(&src_path).unwrap()
        );
        let dest = dir.join("dirty");
        // Bits past the disk's end are ignored.
        let n = staged(&src, len, &dest, false, &[0b100000 | 1 << 40]);
        assert_eq!(n, 4096, "only block 5");
        let got = std::fs::read(&dest).unwrap();
        assert_eq!(&got[5 * BACKUP_BLOCK as usize + 100..][..4], b"tail");
        assert!(got[..5 * BACKUP_BLOCK as usize].iter().all(|&b| b == 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
