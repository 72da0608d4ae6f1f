//! virtio-blk over a raw disk file: the device model (features, config space, state,
//! counters). Requests are decoded in [`request`] and executed by the io_uring worker
//! in [`io`], which marks written blocks in the disk's [`dirty`] log for migration
//! (and, through it, in its [`backup_log`] for incremental backups).

pub mod backup_log;
pub mod copy_before_write;
pub mod dirty;
mod io;
mod request;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use nova_vmm_api::DeviceCounters;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_ID_BYTES,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::QueueState;

use super::device::{
    read_config_bytes, ActivateContext, ActivateError, StateError, VirtioDevice,
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};
use super::persist::{BlockConfig, BlockState, DeviceState};
use super::worker::WorkerSlot;
pub use dirty::DiskLog;
pub(crate) use io::replay_request;
use io::{BlockCounterCells, BlockWorker};
pub use request::SECTOR_SIZE;

/// Size of the single request queue.
pub const QUEUE_SIZE: u16 = 256;

/// Why a disk cannot be attached.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("disk {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("disk {path}: size {size} bytes is not a multiple of 512")]
    Size { path: PathBuf, size: u64 },
    #[error("disk {path}: id {id:?} is longer than 20 bytes")]
    Id { path: PathBuf, id: String },
}

/// A virtio-blk device backed by a raw file.
pub struct Block {
    config: BlockConfig,
    disk: Arc<File>,
    capacity_sectors: u64,
    serial: [u8; VIRTIO_BLK_ID_BYTES as usize],
    config_space: Vec<u8>,
    counters: Arc<BlockCounterCells>,
    worker: WorkerSlot<BlockWorker>,
    /// Where written blocks are marked for a live migration.
    log: Option<Arc<DiskLog>>,
}

impl Block {
    /// Opens the disk (read-only if asked) and sizes it.
    pub fn new(config: BlockConfig) -> Result<Self, BlockError> {
        let open_err = |source| BlockError::Open {
            path: config.path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(!config.read_only)
            .open(&config.path)
            .map_err(open_err)?;
        // Seeking works for block devices too, whose metadata length is 0.
        let size = file.seek(SeekFrom::End(0)).map_err(open_err)?;
        if !size.is_multiple_of(SECTOR_SIZE) {
            return Err(BlockError::Size {
                path: config.path.clone(),
                size,
            });
        }
        let id_bytes = config.id.as_bytes();
        if id_bytes.len() > VIRTIO_BLK_ID_BYTES as usize {
            return Err(BlockError::Id {
                path: config.path.clone(),
                id: config.id.clone(),
            });
        }
        let mut serial = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        serial[..id_bytes.len()].copy_from_slice(id_bytes);
        let capacity_sectors = size / SECTOR_SIZE;
        Ok(Self {
            config_space: config_space(capacity_sectors),
            config,
            disk: Arc::new(file),
            capacity_sectors,
            serial,
            counters: Arc::default(),
            worker: WorkerSlot::Inactive,
            log: None,
        })
    }

    /// Marks the guest's writes in `log` (the VM's, which outlives this device), and
    /// gives it the open disk.
    pub fn with_log(mut self, log: Arc<DiskLog>) -> Self {
        log.attach(self.disk.clone(), self.capacity_sectors * SECTOR_SIZE);
        self.log = Some(log);
        self
    }

    /// Disk size in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    fn thread_name(&self) -> String {
        format!("virtio-blk-{}", self.config.id)
    }

    fn new_worker(&self, ctx: ActivateContext) -> Result<BlockWorker, ActivateError> {
        let got = ctx.queues.len();
        let Some((queue, queue_evt)) = ctx.queues.into_iter().next().filter(|_| got == 1) else {
            return Err(ActivateError::QueueCount { expected: 1, got });
        };
        BlockWorker::new(io::WorkerSetup {
            mem: ctx.mem,
            interrupt: ctx.interrupt,
            queue,
            queue_evt,
            disk: self.disk.clone(),
            capacity_sectors: self.capacity_sectors,
            read_only: self.config.read_only,
            serial: self.serial,
            counters: self.counters.clone(),
            log: self.log.clone(),
        })
        .map_err(ActivateError::Backend)
    }
}

/// `struct virtio_blk_config` up to `blk_size`: capacity, seg_max and block size.
fn config_space(capacity_sectors: u64) -> Vec<u8> {
    let mut config = vec![0u8; 24];
    config[0..8].copy_from_slice(&capacity_sectors.to_le_bytes());
    // seg_max: a chain also holds the header and the status.
    config[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
    config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
    config
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        let ro = if self.config.read_only {
            1 << VIRTIO_BLK_F_RO
        } else {
            0
        };
        VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_EVENT_IDX
            | 1 << VIRTIO_BLK_F_FLUSH
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_BLK_SIZE
            | ro
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        tracing::debug!(
            "virtio-blk {}: config write at {offset:#x} ignored",
            self.config.id
        );
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if self.worker.is_activated() {
            return Err(ActivateError::AlreadyActive);
        }
        let worker = self.new_worker(ctx)?;
        self.worker.start(&self.thread_name(), worker)
    }

    fn activate_paused(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if self.worker.is_activated() {
            return Err(ActivateError::AlreadyActive);
        }
        let worker = self.new_worker(ctx)?;
        self.worker.park(worker)
    }

    fn is_activated(&self) -> bool {
        self.worker.is_activated()
    }

    fn reset(&mut self) {
        self.worker.reset();
    }

    fn pause(&mut self) {
        self.worker.pause();
    }

    fn resume(&mut self) -> Result<(), ActivateError> {
        let name = self.thread_name();
        self.worker.resume(&name)
    }

    fn queue_states(&self) -> Option<Vec<QueueState>> {
        self.worker.queue_states()
    }

    fn state(&self) -> DeviceState {
        DeviceState::Block(BlockState {
            config: self.config.clone(),
            capacity_sectors: self.capacity_sectors,
        })
    }

    fn restore_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::Block(saved) = state else {
            return Err(StateError::WrongDevice {
                saved: state.kind(),
                device: "block",
            });
        };
        let path = self.config.path.display();
        if saved.capacity_sectors != self.capacity_sectors {
            return Err(StateError::Mismatch(format!(
                "disk {path}: {} sectors, but the guest was using a disk of {} sectors",
                self.capacity_sectors, saved.capacity_sectors
            )));
        }
        if saved.config.read_only != self.config.read_only {
            return Err(StateError::Mismatch(format!(
                "disk {path}: read_only is {}, but the guest negotiated read_only {}",
                self.config.read_only, saved.config.read_only
            )));
        }
        Ok(())
    }

    fn counters(&self) -> DeviceCounters {
        DeviceCounters::Block(self.counters.snapshot())
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.worker.reset();
    }
}
