//! virtio-blk driver: one polled 4 KiB request (read, write or flush) in flight at a time.

use crate::pvh::Config;
use crate::virtio::{self, Dma, Queue, Transport, DESC_NEXT, DESC_WRITE};
use nova_guest_abi::{BLOCK_SIZE, BLOCK_WORDS};

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const F_FLUSH: u32 = 1 << 9;
const SECTORS_PER_BLOCK: u64 = (BLOCK_SIZE / 512) as u64;

#[link_section = ".bss.noinit.blk_queue"]
static QUEUE: Dma<[u8; 4096]> = Dma::new();
/// Request header at 0, status byte at 64.
#[link_section = ".bss.noinit.blk_req"]
static REQ: Dma<[u8; 4096]> = Dma::new();
#[link_section = ".bss.noinit.blk_data"]
static DATA: Dma<[u64; BLOCK_WORDS]> = Dma::new();

const STATUS_OFF: usize = 64;

/// An initialised virtio-blk device.
pub struct Blk {
    q: Queue,
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    /// The device offers VIRTIO_BLK_F_FLUSH.
    pub flush: bool,
    /// Bytes the device must report written for the request in flight.
    expect_len: u32,
}

impl Blk {
    /// Finds and initialises the first virtio-blk device.
    pub fn init(cfg: &Config) -> Result<Blk, &'static str> {
        let t: Transport = virtio::find(cfg, virtio::ID_BLK).ok_or("no_blk_device")?;
        let feats = t.negotiate(F_FLUSH)?;
        let q = t.queue(0, &QUEUE)?;
        if q.size < 3 {
            return Err("blk_queue_too_small");
        }
        let sectors = t.config32(0) as u64 | (t.config32(4) as u64) << 32;
        t.driver_ok();
        Ok(Blk {
            q,
            sectors,
            flush: feats & F_FLUSH != 0,
            expect_len: 0,
        })
    }

    /// Capacity in blocks of [`BLOCK_SIZE`].
    pub fn blocks(&self) -> u64 {
        self.sectors / SECTORS_PER_BLOCK
    }

    /// The data buffer of the request (read result, or what a write sends).
    pub fn data(&mut self) -> &mut [u64; BLOCK_WORDS] {
        // SAFETY: only touched while no request is in flight (callers alternate
        // start/poll); `&mut self` makes the borrow exclusive.
        unsafe { &mut *DATA.ptr() }
    }

    fn start(&mut self, kind: u32, block: u64) {
        let req = REQ.ptr() as *mut u8;
        // SAFETY: REQ is ours while no request is in flight.
        unsafe {
            (req as *mut u32).write_volatile(kind);
            (req.add(4) as *mut u32).write_volatile(0);
            (req.add(8) as *mut u64).write_volatile(block * SECTORS_PER_BLOCK);
            req.add(STATUS_OFF).write_volatile(0xff);
        }
        let (req, data) = (req as u64, DATA.ptr() as u64);
        self.q.set_desc(0, req, 16, DESC_NEXT, 1);
        if kind == T_FLUSH {
            self.q
                .set_desc(1, req + STATUS_OFF as u64, 1, DESC_WRITE, 0);
            self.expect_len = 1;
        } else {
            let flags = if kind == T_IN { DESC_WRITE } else { 0 };
            self.q
                .set_desc(1, data, BLOCK_SIZE as u32, flags | DESC_NEXT, 2);
            self.q
                .set_desc(2, req + STATUS_OFF as u64, 1, DESC_WRITE, 0);
            self.expect_len = if kind == T_IN {
                BLOCK_SIZE as u32 + 1
            } else {
                1
            };
        }
        self.q.submit(0);
    }

    /// Starts reading `block` into [`Blk::data`].
    pub fn start_read(&mut self, block: u64) {
        self.start(T_IN, block);
    }

    /// Starts writing [`Blk::data`] to `block`.
    pub fn start_write(&mut self, block: u64) {
        self.start(T_OUT, block);
    }

    /// Starts a cache flush.
    pub fn start_flush(&mut self) {
        self.start(T_FLUSH, 0);
    }

    /// `None` while the request is in flight, then whether it succeeded.
    pub fn poll(&mut self) -> Option<bool> {
        let (id, len) = self.q.pop()?;
        // SAFETY: the device has returned the chain; the status byte is ours again.
        let status = unsafe { (REQ.ptr() as *const u8).add(STATUS_OFF).read_volatile() };
        // A read must report the whole block plus status; a write at most the status.
        let len_ok = if self.expect_len > 1 {
            len == self.expect_len
        } else {
            len <= 1
        };
        Some(id == 0 && len_ok && status == 0)
    }
}
