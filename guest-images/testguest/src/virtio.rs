//! virtio-mmio (version 2) transport: device discovery, feature negotiation, and a
//! polled split virtqueue of at most 16 entries living in one 4 KiB page.

use crate::cpu::{mmio_read32, mmio_write32};
use crate::pvh::Config;
use crate::serial::Line;
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{compiler_fence, Ordering};
use nova_guest_abi::line;

const MAGIC: usize = 0x000;
const VERSION: usize = 0x004;
const DEVICE_ID: usize = 0x008;
const DEVICE_FEATURES: usize = 0x010;
const DEVICE_FEATURES_SEL: usize = 0x014;
const DRIVER_FEATURES: usize = 0x020;
const DRIVER_FEATURES_SEL: usize = 0x024;
const QUEUE_SEL: usize = 0x030;
const QUEUE_NUM_MAX: usize = 0x034;
const QUEUE_NUM: usize = 0x038;
const QUEUE_READY: usize = 0x044;
const QUEUE_NOTIFY: usize = 0x050;
const STATUS: usize = 0x070;
const QUEUE_DESC_LOW: usize = 0x080;
const QUEUE_DESC_HIGH: usize = 0x084;
const QUEUE_DRIVER_LOW: usize = 0x090;
const QUEUE_DRIVER_HIGH: usize = 0x094;
const QUEUE_DEVICE_LOW: usize = 0x0a0;
const QUEUE_DEVICE_HIGH: usize = 0x0a4;
const CONFIG: usize = 0x100;

const MMIO_MAGIC: u32 = 0x7472_6976;
const STATUS_ACK: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
/// VIRTIO_F_VERSION_1 is bit 32: bit 0 of feature word 1.
const F_VERSION_1_HI: u32 = 1;

/// Device id of virtio-net.
pub const ID_NET: u32 = 1;
/// Device id of virtio-blk.
pub const ID_BLK: u32 = 2;

/// Descriptor flag: continues in `next`.
pub const DESC_NEXT: u16 = 1;
/// Descriptor flag: device writes this buffer.
pub const DESC_WRITE: u16 = 2;

/// Entries per queue we use at most.
pub const QSIZE: usize = 16;
const AVAIL_OFF: usize = 16 * QSIZE;
const USED_OFF: usize = 2048;

/// QEMU microvm's virtio-mmio window: 24 slots of 0x200 from here.
const MICROVM_BASE: usize = 0xfeb0_0000;
const MICROVM_SLOTS: usize = 24;
/// nova-vmm's virtio-mmio window (`vm::build::VIRTIO_MMIO_BASE` and stride) and its
/// most devices.
const NOVA_BASE: usize = 0xd000_0000;
const NOVA_STRIDE: usize = 0x1000;
const NOVA_SLOTS: usize = 16;

/// Memory the device reads or writes (page-aligned, in `.noinit`; initialised by users).
#[repr(C, align(4096))]
pub struct Dma<T>(UnsafeCell<MaybeUninit<T>>);

// SAFETY: only the BSP touches DMA memory; the device is synchronised with through
// the virtqueue protocol.
unsafe impl<T> Sync for Dma<T> {}

impl<T> Dma<T> {
    /// Uninitialised DMA memory.
    pub const fn new() -> Dma<T> {
        Dma(UnsafeCell::new(MaybeUninit::uninit()))
    }

    /// Its address (identity-mapped: virtual == physical).
    pub fn ptr(&self) -> *mut T {
        self.0.get().cast()
    }
}

/// A virtio-mmio register window.
#[derive(Clone, Copy)]
pub struct Transport {
    /// Base address.
    pub base: usize,
}

impl Transport {
    fn r(&self, off: usize) -> u32 {
        // SAFETY: base is a probed virtio-mmio window below 4 GiB.
        unsafe { mmio_read32(self.base + off) }
    }

    fn w(&self, off: usize, v: u32) {
        // SAFETY: as in `r`.
        unsafe { mmio_write32(self.base + off, v) }
    }

    /// A byte of the device-specific config space.
    pub fn config8(&self, off: usize) -> u8 {
        // SAFETY: as in `r`; config space allows byte access.
        unsafe { ((self.base + CONFIG + off) as *const u8).read_volatile() }
    }

    /// A 32-bit word of the device-specific config space.
    pub fn config32(&self, off: usize) -> u32 {
        self.r(CONFIG + off)
    }

    /// Resets the device and negotiates VERSION_1 plus `want` (feature word 0).
    /// Returns the accepted word-0 features.
    pub fn negotiate(&self, want: u32) -> Result<u32, &'static str> {
        self.w(STATUS, 0);
        let mut spins = 0;
        while self.r(STATUS) != 0 && spins < 10_000 {
            spins += 1;
        }
        self.w(STATUS, STATUS_ACK);
        self.w(STATUS, STATUS_ACK | STATUS_DRIVER);
        self.w(DEVICE_FEATURES_SEL, 1);
        if self.r(DEVICE_FEATURES) & F_VERSION_1_HI == 0 {
            return Err("virtio_no_version_1");
        }
        self.w(DEVICE_FEATURES_SEL, 0);
        let accepted = self.r(DEVICE_FEATURES) & want;
        self.w(DRIVER_FEATURES_SEL, 0);
        self.w(DRIVER_FEATURES, accepted);
        self.w(DRIVER_FEATURES_SEL, 1);
        self.w(DRIVER_FEATURES, F_VERSION_1_HI);
        self.w(STATUS, STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK);
        if self.r(STATUS) & STATUS_FEATURES_OK == 0 {
            return Err("virtio_features_refused");
        }
        Ok(accepted)
    }

    /// Sets up queue `index` in `page` (a zeroed-here 4 KiB DMA page).
    pub fn queue(&self, index: u32, page: &'static Dma<[u8; 4096]>) -> Result<Queue, &'static str> {
        self.w(QUEUE_SEL, index);
        let max = self.r(QUEUE_NUM_MAX);
        if max == 0 {
            return Err("virtio_no_queue");
        }
        let mut size = QSIZE as u32;
        while size > max {
            size /= 2;
        }
        let p = page.ptr() as *mut u8;
        // SAFETY: the page is ours and not yet given to the device.
        unsafe { core::ptr::write_bytes(p, 0, 4096) };
        let addr = p as u64;
        self.w(QUEUE_NUM, size);
        self.w(QUEUE_DESC_LOW, addr as u32);
        self.w(QUEUE_DESC_HIGH, (addr >> 32) as u32);
        self.w(QUEUE_DRIVER_LOW, (addr + AVAIL_OFF as u64) as u32);
        self.w(QUEUE_DRIVER_HIGH, ((addr + AVAIL_OFF as u64) >> 32) as u32);
        self.w(QUEUE_DEVICE_LOW, (addr + USED_OFF as u64) as u32);
        self.w(QUEUE_DEVICE_HIGH, ((addr + USED_OFF as u64) >> 32) as u32);
        self.w(QUEUE_READY, 1);
        Ok(Queue {
            page: p,
            size: size as u16,
            next_avail: 0,
            last_used: 0,
            notify: self.base + QUEUE_NOTIFY,
            index,
            broken: false,
        })
    }

    /// Sets DRIVER_OK: the device is live.
    pub fn driver_ok(&self) {
        self.w(
            STATUS,
            STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
    }
}

/// Finds the first virtio-mmio device with `device_id`: the `virtio_mmio.device=`
/// entries in order, else nova-vmm's window (with ACPI on, nova-vmm names its
/// devices in the DSDT only, which this guest does not read), else QEMU microvm's
/// window from its top slot down.
pub fn find(cfg: &Config, device_id: u32) -> Option<Transport> {
    let named = cfg.nmmio > 0;
    let probe = |base: usize| -> Option<Transport> {
        let t = Transport { base };
        if t.r(MAGIC) != MMIO_MAGIC {
            if named {
                // The VMM named a device that is not there: say so.
                Line::new(line::ERROR)
                    .s(" what=virtio_bad_magic")
                    .kx("addr", base as u64)
                    .emit();
            }
            return None;
        }
        if t.r(DEVICE_ID) != device_id {
            return None;
        }
        match t.r(VERSION) {
            2 => Some(t),
            1 => {
                Line::new(line::ERROR)
                    .s(" what=virtio_legacy")
                    .kx("addr", base as u64)
                    .emit();
                None
            }
            v => {
                Line::new(line::ERROR)
                    .s(" what=virtio_version")
                    .kv("version", v as u64)
                    .emit();
                None
            }
        }
    };
    if named {
        return cfg.mmio().iter().find_map(|d| probe(d.addr as usize));
    }
    // nova-vmm's slots are packed from the first: the first without the magic ends them.
    for i in 0..NOVA_SLOTS {
        let base = NOVA_BASE + NOVA_STRIDE * i;
        if (Transport { base }).r(MAGIC) != MMIO_MAGIC {
            break;
        }
        if let Some(t) = probe(base) {
            return Some(t);
        }
    }
    (0..MICROVM_SLOTS)
        .rev()
        .find_map(|i| probe(MICROVM_BASE + 0x200 * i))
}

/// A polled split virtqueue.
pub struct Queue {
    page: *mut u8,
    /// Entries (a power of two, at most [`QSIZE`]).
    pub size: u16,
    next_avail: u16,
    last_used: u16,
    notify: usize,
    index: u32,
    broken: bool,
}

impl Queue {
    /// Writes descriptor `i`.
    pub fn set_desc(&mut self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        if i >= self.size {
            return;
        }
        // SAFETY: descriptor i < size lies in the queue page.
        unsafe {
            let d = self.page.add(16 * i as usize);
            (d as *mut u64).write_volatile(addr);
            (d.add(8) as *mut u32).write_volatile(len);
            (d.add(12) as *mut u16).write_volatile(flags);
            (d.add(14) as *mut u16).write_volatile(next);
        }
    }

    /// Makes the chain starting at `head` available and notifies the device.
    pub fn submit(&mut self, head: u16) {
        let slot = (self.next_avail & (self.size - 1)) as usize;
        self.next_avail = self.next_avail.wrapping_add(1);
        // SAFETY: the avail ring (flags, idx, ring[size]) lies in the queue page.
        unsafe {
            (self.page.add(AVAIL_OFF + 4 + 2 * slot) as *mut u16).write_volatile(head);
            compiler_fence(Ordering::SeqCst);
            (self.page.add(AVAIL_OFF + 2) as *mut u16).write_volatile(self.next_avail);
            compiler_fence(Ordering::SeqCst);
            mmio_write32(self.notify, self.index);
        }
    }

    /// Takes the next used element: `(id, len)`, id unchecked (callers validate).
    pub fn pop(&mut self) -> Option<(u32, u32)> {
        // SAFETY: the used ring (flags, idx, ring[size]) lies in the queue page.
        unsafe {
            let idx = (self.page.add(USED_OFF + 2) as *const u16).read_volatile();
            if idx == self.last_used {
                return None;
            }
            if idx.wrapping_sub(self.last_used) > self.size {
                // More completions than buffers: the device is broken. Say so once
                // and stop consuming from this queue.
                if !self.broken {
                    self.broken = true;
                    Line::new(line::ERROR)
                        .s(" what=virtio_used_idx")
                        .kv("queue", self.index as u64)
                        .emit();
                }
                return None;
            }
            compiler_fence(Ordering::SeqCst);
            let slot = (self.last_used & (self.size - 1)) as usize;
            let e = self.page.add(USED_OFF + 4 + 8 * slot);
            let id = (e as *const u32).read_volatile();
            let len = (e.add(4) as *const u32).read_volatile();
            self.last_used = self.last_used.wrapping_add(1);
            Some((id, len))
        }
    }
}
