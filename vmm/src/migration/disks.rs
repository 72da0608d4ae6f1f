//! Disks in a live migration (block migration). The source's [`DiskSender`] sends the
//! writable disks with memory: a first pass of the allocated blocks only (holes found
//! with SEEK_DATA/SEEK_HOLE are never read, zero blocks never sent), then the blocks
//! the guest wrote, from the disks' logs, in each dirty round and in the stop-and-copy.
//! The destination's [`DiskSink`] writes them into its own disk files (sparse files
//! hostd prepared), punching holes for blocks that became zero. It is over 500 lines:
//! both ends of one wire format (blocks, zero blocks, deltas) stay side by side.
//!
//! A block sent again (the guest wrote it after it went) travels as the XOR of its
//! new data with the copy sent before, compressed, when that is smaller than the
//! block compressed as it is (as QEMU's XBZRLE does for pages): the source keeps the
//! copies it sent, up to [`DELTA_CACHE_BYTES`], and the destination XORs each delta
//! into the block its file holds.
//!
//! Read-only disks do not travel (both hosts have the same image), nor do shared ones
//! (both hosts see the same file; `--disk PATH,shared`). Disks are only read
//! on the source, so a failed migration leaves them as the guest left them.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nova_vmm_api::{BlockCounts, Compression};

use super::channel::LinkWriter;
use super::compression;
use super::error::MigrationError;
use super::pages::PageSender;
use super::protocol::{self, Message, BATCH_PAGES};
use crate::devices::virtio::block::dirty::DISK_BLOCK;
use crate::devices::virtio::DiskLog;
use crate::dirty::DirtyBitmap;
use crate::vm::Vm;

const BLOCK: usize = DISK_BLOCK as usize;

/// Most bytes of sent blocks the source keeps per migration to send deltas against.
pub const DELTA_CACHE_BYTES: usize = 64 << 20;

/// What the destination holds of the blocks sent so far, by (disk, block), as far as
/// the cache's room goes.
#[derive(Default)]
struct SentCopies(HashMap<(u32, u64), Box<[u8]>>);

impl SentCopies {
    /// Records `data` as what the destination now holds of the block (an entry it
    /// already has is replaced; a new one only while there is room).
    fn sent(&mut self, key: (u32, u64), data: &[u8]) {
        if let Some(old) = self.0.get_mut(&key) {
            old.copy_from_slice(data);
        } else if self.0.len() * BLOCK < DELTA_CACHE_BYTES {
            self.0.insert(key, data.into());
        }
    }
}

/// One disk the source sends.
struct SourceDisk {
    index: u32,
    file: Arc<File>,
    len: u64,
    log: Arc<DiskLog>,
}

/// The source's disks and what was sent of them.
pub struct DiskSender {
    disks: Vec<SourceDisk>,
    copies: Mutex<SentCopies>,
    delta: AtomicU64,
    delta_bytes: AtomicU64,
    sent: AtomicU64,
    zero: AtomicU64,
    holes: AtomicU64,
}

/// Blocks the guest wrote, per disk (in [`DiskSender`]'s order).
pub struct DirtyBlocks(Vec<DirtyBitmap>);

impl DirtyBlocks {
    /// Blocks set, all disks together.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|b| b.count() as u64).sum()
    }

    /// ORs `other` in.
    pub fn union(&mut self, other: &DirtyBlocks) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            a.union(b);
        }
    }
}

/// The next data extent of `f` at or after `off`: (start, end), or None past the last.
fn next_data(f: &File, off: u64, len: u64) -> std::io::Result<Option<(u64, u64)>> {
    if off >= len {
        return Ok(None);
    }
    // SAFETY: lseek on an fd we hold open; no memory involved. The file offset it
    // moves is never used: disk I/O is positional (pread/pwrite, io_uring).
    let start = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, libc::SEEK_DATA) };
    if start < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            // No SEEK_DATA here (a block device, an old filesystem): all of it is data.
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Some((off, len))),
            _ => Err(e),
        };
    }
    // SAFETY: as above.
    let end = unsafe { libc::lseek(f.as_raw_fd(), start, libc::SEEK_HOLE) };
    if end < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Some((start as u64, (end as u64).min(len))))
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

impl DiskSender {
    /// The writable disks of `vm`.
    pub fn new(vm: &Vm) -> Self {
        let disks = vm
            .config
            .disks
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.read_only && !d.shared)
            .filter_map(|(i, _)| {
                let log = vm.disk_log(i)?.clone();
                Some(SourceDisk {
                    index: i as u32,
                    file: log.file()?,
                    len: log.len(),
                    log,
                })
            })
            .collect();
        DiskSender {
            disks,
            copies: Mutex::new(SentCopies::default()),
            delta: AtomicU64::new(0),
            delta_bytes: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            zero: AtomicU64::new(0),
            holes: AtomicU64::new(0),
        }
    }

    /// Whether there is any disk to send.
    pub fn is_empty(&self) -> bool {
        self.disks.is_empty()
    }

    /// The figures so far.
    pub fn counts(&self) -> BlockCounts {
        BlockCounts {
            disks: self.disks.len() as u32,
            sent: self.sent.load(Ordering::Relaxed),
            zero: self.zero.load(Ordering::Relaxed),
            hole_bytes: self.holes.load(Ordering::Relaxed),
            delta: self.delta.load(Ordering::Relaxed),
            delta_bytes: self.delta_bytes.load(Ordering::Relaxed),
        }
    }

    /// No blocks of any disk.
    pub fn none(&self) -> DirtyBlocks {
        DirtyBlocks(
            self.disks
                .iter()
                .map(|d| DirtyBitmap::new(d.log.blocks()))
                .collect(),
        )
    }

    /// The blocks written since the last collection (from now on, writes are logged
    /// for the next one).
    pub fn collect(&self) -> DirtyBlocks {
        DirtyBlocks(self.disks.iter().map(|d| d.log.collect()).collect())
    }

    /// First pass: every allocated, non-zero block of every disk. The logs are
    /// cleared first, so that whatever the guest writes meanwhile goes in a round.
    pub fn first_pass(
        &self,
        ctx: &PageSender,
        conn: &mut LinkWriter,
    ) -> Result<(), MigrationError> {
        drop(self.collect());
        for d in &self.disks {
            let mut batch = Batch::new(d, true);
            let mut off = 0;
            let mut data_bytes = 0;
            while let Some((start, end)) = next_data(&d.file, off, d.len).map_err(disk_err(d))? {
                // Whole blocks: an extent starting inside a block starts at that block.
                let first = start / DISK_BLOCK;
                let last = end.div_ceil(DISK_BLOCK);
                for b in first..last {
                    batch.add(self, ctx, conn, b)?;
                }
                data_bytes += (last - first) * DISK_BLOCK;
                off = last * DISK_BLOCK;
            }
            batch.flush(self, ctx, conn)?;
            self.holes.fetch_add(
                d.len.saturating_sub(data_bytes.min(d.len)),
                Ordering::Relaxed,
            );
        }
        Ok(())
    }

    /// Sends the blocks of `dirty` (zero ones as `ZeroBlocks`).
    pub fn send_dirty(
        &self,
        ctx: &PageSender,
        conn: &mut LinkWriter,
        dirty: &DirtyBlocks,
    ) -> Result<(), MigrationError> {
        for (d, bits) in self.disks.iter().zip(&dirty.0) {
            let mut batch = Batch::new(d, false);
            for b in bits.iter() {
                batch.add(self, ctx, conn, b as u64)?;
            }
            batch.flush(self, ctx, conn)?;
        }
        Ok(())
    }
}

fn disk_err(d: &SourceDisk) -> impl Fn(std::io::Error) -> MigrationError + '_ {
    move |e| MigrationError::Vm(format!("disk {}: {e}", d.index))
}

/// Blocks of one disk collected into frames.
struct Batch<'a> {
    disk: &'a SourceDisk,
    first_pass: bool,
    indices: Vec<u64>,
    data: Vec<u8>,
    zeros: Vec<u64>,
    /// Blocks sent before (and still in the cache): their data, and its XOR with the
    /// copy sent then.
    again: Vec<u64>,
    again_data: Vec<u8>,
    again_xor: Vec<u8>,
}

impl<'a> Batch<'a> {
    fn new(disk: &'a SourceDisk, first_pass: bool) -> Self {
        Batch {
            disk,
            first_pass,
            indices: Vec::with_capacity(BATCH_PAGES),
            data: Vec::with_capacity(BATCH_PAGES * BLOCK),
            zeros: Vec::new(),
            again: Vec::new(),
            again_data: Vec::new(),
            again_xor: Vec::new(),
        }
    }

    /// Reads block `b` into the batch (or notes it zero), sending full batches.
    fn add(
        &mut self,
        s: &DiskSender,
        ctx: &PageSender,
        conn: &mut LinkWriter,
        b: u64,
    ) -> Result<(), MigrationError> {
        let d = self.disk;
        let off = b * DISK_BLOCK;
        if off >= d.len {
            return Ok(());
        }
        let at = self.data.len();
        self.data.resize(at + BLOCK, 0);
        // A partial last block reads short and stays zero-padded.
        let n = ((d.len - off) as usize).min(BLOCK);
        d.file
            .read_exact_at(&mut self.data[at..at + n], off)
            .map_err(disk_err(d))?;
        let key = (d.index, b);
        let mut copies = s.copies.lock().unwrap_or_else(|e| e.into_inner());
        if is_zero(&self.data[at..]) {
            self.data.truncate(at);
            s.zero.fetch_add(1, Ordering::Relaxed);
            copies.0.remove(&key);
            if !self.first_pass {
                self.zeros.push(b);
            }
        } else {
            s.sent.fetch_add(1, Ordering::Relaxed);
            let block = &self.data[at..];
            match copies.0.get(&key) {
                Some(old) => {
                    self.again.push(b);
                    self.again_data.extend_from_slice(block);
                    self.again_xor
                        .extend(block.iter().zip(old.iter()).map(|(a, b)| a ^ b));
                    copies.sent(key, block);
                    self.data.truncate(at);
                }
                None => {
                    copies.sent(key, block);
                    self.indices.push(b);
                }
            }
        }
        drop(copies);
        if self.indices.len() == BATCH_PAGES
            || self.again.len() == BATCH_PAGES
            || self.zeros.len() >= 4 * BATCH_PAGES
        {
            self.flush(s, ctx, conn)?;
        }
        Ok(())
    }

    fn flush(
        &mut self,
        s: &DiskSender,
        ctx: &PageSender,
        conn: &mut LinkWriter,
    ) -> Result<(), MigrationError> {
        if !self.again.is_empty() {
            // The deltas when they encode smaller than the blocks as they are.
            let c = match ctx.compression {
                Compression::None => Compression::Zstd,
                c => c,
            };
            let delta = compression::compress(c, &self.again_xor);
            let plain = compression::compress(ctx.compression, &self.again_data);
            let frame = if delta.len() < plain.len() {
                s.delta
                    .fetch_add(self.again.len() as u64, Ordering::Relaxed);
                s.delta_bytes
                    .fetch_add(delta.len() as u64, Ordering::Relaxed);
                protocol::block_deltas_frame(self.disk.index, &self.again, c, &delta)
            } else {
                protocol::blocks_frame(self.disk.index, &self.again, ctx.compression, &plain)
            };
            ctx.send_frame(conn, &frame)?;
            self.again.clear();
            self.again_data.clear();
            self.again_xor.clear();
        }
        if !self.indices.is_empty() {
            let payload = compression::compress(ctx.compression, &self.data);
            ctx.send_frame(
                conn,
                &protocol::blocks_frame(self.disk.index, &self.indices, ctx.compression, &payload),
            )?;
            self.indices.clear();
            self.data.clear();
        }
        if !self.zeros.is_empty() {
            let m = Message::ZeroBlocks {
                disk: self.disk.index,
                indices: std::mem::take(&mut self.zeros),
            };
            ctx.send_frame(conn, &m.encode())?;
        }
        ctx.check_cancel()
    }
}

/// One disk the destination writes.
struct SinkDisk {
    file: Arc<File>,
    len: u64,
    /// Written since the last sync.
    unsynced: AtomicBool,
}

/// The destination's disks, by their place in the configuration (`None`: read-only,
/// never written by a migration).
pub struct DiskSink {
    disks: Vec<Option<SinkDisk>>,
}

impl DiskSink {
    /// The writable disks of the destination's `vm`.
    pub fn new(vm: &Vm) -> Self {
        let disks = vm
            .config
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let log = vm.disk_log(i).filter(|_| !d.read_only && !d.shared)?;
                Some(SinkDisk {
                    file: log.file()?,
                    len: log.len(),
                    unsynced: AtomicBool::new(false),
                })
            })
            .collect();
        DiskSink { disks }
    }

    fn disk(&self, disk: u32) -> Result<&SinkDisk, MigrationError> {
        self.disks
            .get(disk as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                MigrationError::Unexpected(format!("blocks of disk {disk}"), "a writable disk")
            })
    }

    fn check(d: &SinkDisk, disk: u32, b: u64) -> Result<(), MigrationError> {
        if b.checked_mul(DISK_BLOCK).is_none_or(|off| off >= d.len) {
            return Err(MigrationError::Unexpected(
                format!("block {b} of disk {disk}"),
                "a block inside the disk",
            ));
        }
        Ok(())
    }

    /// Writes a `Blocks` message's data (every index checked before anything is
    /// decompressed or written).
    pub fn blocks(
        &self,
        disk: u32,
        indices: &[u64],
        c: Compression,
        data: &[u8],
    ) -> Result<(), MigrationError> {
        let d = self.disk(disk)?;
        for b in indices {
            Self::check(d, disk, *b)?;
        }
        let data = compression::decompress(c, data, indices.len() * BLOCK)?;
        if data.len() != indices.len() * BLOCK {
            return Err(MigrationError::Unexpected(
                format!("{} bytes for {} blocks", data.len(), indices.len()),
                "4096 bytes a block",
            ));
        }
        for (i, b) in indices.iter().enumerate() {
            let off = b * DISK_BLOCK;
            let n = ((d.len - off) as usize).min(BLOCK);
            d.file
                .write_all_at(&data[i * BLOCK..i * BLOCK + n], off)
                .map_err(|e| MigrationError::Vm(format!("writing disk {disk}: {e}")))?;
        }
        d.unsynced.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Applies a `BlockDeltas` message: XORs each delta into the block the file holds
    /// (every index checked, and the data's size, before anything is written).
    pub fn block_deltas(
        &self,
        disk: u32,
        indices: &[u64],
        c: Compression,
        data: &[u8],
    ) -> Result<(), MigrationError> {
        let d = self.disk(disk)?;
        for b in indices {
            Self::check(d, disk, *b)?;
        }
        let data = compression::decompress(c, data, indices.len() * BLOCK)?;
        if data.len() != indices.len() * BLOCK {
            return Err(MigrationError::Unexpected(
                format!("{} bytes for {} block deltas", data.len(), indices.len()),
                "4096 bytes a block",
            ));
        }
        let mut block = [0u8; BLOCK];
        for (i, b) in indices.iter().enumerate() {
            let off = b * DISK_BLOCK;
            let n = ((d.len - off) as usize).min(BLOCK);
            d.file
                .read_exact_at(&mut block[..n], off)
                .map_err(|e| MigrationError::Vm(format!("reading disk {disk}: {e}")))?;
            for (x, y) in block[..n].iter_mut().zip(&data[i * BLOCK..]) {
                *x ^= y;
            }
            d.file
                .write_all_at(&block[..n], off)
                .map_err(|e| MigrationError::Vm(format!("writing disk {disk}: {e}")))?;
        }
        d.unsynced.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Makes blocks zero: holes where the filesystem can punch them, zeros written
    /// where it cannot.
    pub fn zero_blocks(&self, disk: u32, indices: &[u64]) -> Result<(), MigrationError> {
        let d = self.disk(disk)?;
        for b in indices {
            Self::check(d, disk, *b)?;
        }
        for b in indices {
            let off = b * DISK_BLOCK;
            let n = (d.len - off).min(DISK_BLOCK);
            // SAFETY: fallocate on a disk fd we hold, range checked above.
            let r = unsafe {
                libc::fallocate(
                    d.file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    off as i64,
                    n as i64,
                )
            };
            if r < 0 {
                d.file
                    .write_all_at(&[0u8; BLOCK][..n as usize], off)
                    .map_err(|e| MigrationError::Vm(format!("writing disk {disk}: {e}")))?;
            }
        }
        d.unsynced.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Puts what was written on stable storage: the guest's flushes on the source
    /// promised it, and the source's copy is removed once this side runs the VM.
    pub fn sync(&self) -> Result<(), MigrationError> {
        for (i, d) in self.disks.iter().enumerate() {
            let Some(d) = d else { continue };
            if d.unsynced.swap(false, Ordering::Relaxed) {
                d.file
                    .sync_data()
                    .map_err(|e| MigrationError::Vm(format!("syncing disk {i}: {e}")))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_extents_skip_holes_and_end_at_the_file_end() {
        let dir = std::env::temp_dir().join(format!("nova-disks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.raw");
        let f = File::create(&path).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[1u8; 4096], 8 << 20).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&path).unwrap();
        let (start, end) = next_data(&f, 0, 64 << 20).unwrap().unwrap();
        assert!(start <= 8 << 20 && end > 8 << 20 && end - start < 4 << 20);
        assert_eq!(next_data(&f, end.max(16 << 20), 64 << 20).unwrap(), None);
        assert_eq!(next_data(&f, 64 << 20, 64 << 20).unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
