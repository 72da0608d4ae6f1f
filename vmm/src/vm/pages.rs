//! Guest memory as snapshots and migrations copy it: page reads, KVM's dirty log
//! (the pages written since the last collection), and the snapshot that the next
//! diff snapshot builds on. Snapshots and migrations collect from the one dirty log:
//! a migration resets it, and that forgets the diff base.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::error::{ioctl, VmError};
use super::Vm;
use crate::dirty::{self, DirtyBitmap};

impl Vm {
    /// Pages written since the last call (all of RAM on the first call, which also
    /// turns dirty logging on).
    pub fn collect_dirty(&self) -> Result<DirtyBitmap, VmError> {
        if !self.dirty_logging.swap(true, Ordering::SeqCst) {
            dirty::start(&self.vm_fd, &self.mem).map_err(ioctl("enabling dirty logging"))?;
            return Ok(DirtyBitmap::full(dirty::ram_pages(&self.mem)));
        }
        dirty::collect(&self.vm_fd, &self.mem).map_err(ioctl("KVM_GET_DIRTY_LOG"))
    }

    /// Restarts dirty logging: the next [`collect_dirty`](Self::collect_dirty) reports
    /// all of RAM, and no diff snapshot can build on an earlier snapshot.
    pub fn reset_dirty(&self) {
        self.set_diff_base(None);
        if self.dirty_logging.swap(false, Ordering::SeqCst) {
            let _ = dirty::stop(&self.vm_fd, &self.mem);
        }
    }

    /// Copies RAM page `page` into `buf` (one page).
    pub fn read_page(&self, page: usize, buf: &mut [u8]) -> std::io::Result<()> {
        use vm_memory::Bytes;
        let gpa = dirty::page_gpa(&self.mem, page).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "page beyond RAM")
        })?;
        self.mem.read_slice(buf, gpa).map_err(std::io::Error::other)
    }

    /// Disk `index`'s log of written blocks (and its open file), for live migration.
    pub fn disk_log(
        &self,
        index: usize,
    ) -> Option<&std::sync::Arc<crate::devices::virtio::DiskLog>> {
        self.disk_logs.get(index)
    }

    /// The memfd behind guest RAM, when there is one.
    pub fn memfd(&self) -> Option<&File> {
        self.memfd.as_ref()
    }

    /// The snapshot the next diff snapshot builds on, if the dirty log has been
    /// collected only by snapshots since it was written.
    pub fn diff_base(&self) -> Option<PathBuf> {
        self.diff_base
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records `dir` as the snapshot the next diff builds on.
    pub fn set_diff_base(&self, dir: Option<PathBuf>) {
        *self.diff_base.lock().unwrap_or_else(|e| e.into_inner()) = dir;
    }
}
