//! A fake guest driver for the virtio unit tests: programs a real transport through its
//! registers and builds descriptor tables and rings in real guest memory, as a guest
//! kernel would, including the hostile things a guest kernel could do.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use vm_memory::bitmap::Bitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::{Interrupt, VirtioDevice, VIRTIO_RING_F_EVENT_IDX};
use super::mmio::MmioTransport;
use crate::devices::BusDevice;
use crate::memory::{create_memfd, map_memfd, GuestMemory};

pub const STATUS: u64 = 0x70;
pub const NEEDS_RESET: u32 = 0x40;
pub const DRIVER_OK: u32 = 4;
pub const FEATURES_OK: u32 = 8;

/// Where the driver put one queue, and how far it got.
pub struct DriverQueue {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    avail_idx: u16,
    next_desc: u16,
    used_seen: u16,
}

/// A guest driver in a box.
pub struct TestDriver {
    pub transport: MmioTransport,
    pub mem: GuestMemory,
    pub interrupt: Arc<Interrupt>,
    pub irq: EventFd,
    pub queues: Vec<DriverQueue>,
    pub queue_evts: Vec<EventFd>,
    _memfd: File,
}

/// Builds 64 MiB of guest memory on a memfd, as the VMM does.
pub fn guest_memory() -> (File, GuestMemory) {
    let memfd = create_memfd(64).unwrap();
    let mem = map_memfd(&memfd, 64 << 20).unwrap();
    (memfd, mem)
}

impl TestDriver {
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        let (memfd, mem) = guest_memory();
        Self::with_memory(device, memfd, mem)
    }

    pub fn with_memory(device: Box<dyn VirtioDevice>, memfd: File, mem: GuestMemory) -> Self {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let interrupt = Arc::new(Interrupt::new(irq.try_clone().unwrap()));
        let n = device.queue_max_sizes().len();
        let queue_evts: Vec<_> = (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let clones = queue_evts.iter().map(|e| e.try_clone().unwrap()).collect();
        let transport = MmioTransport::new(device, mem.clone(), interrupt.clone(), clones).unwrap();
        let queues = (0..n as u64)
            .map(|i| {
                let base = 0x10000 + i * 0x10000;
                DriverQueue {
                    size: 0,
                    desc: base,
                    avail: base + 0x4000,
                    used: base + 0x8000,
                    avail_idx: 0,
                    next_desc: 0,
                    used_seen: 0,
                }
            })
            .collect();
        Self {
            transport,
            mem,
            interrupt,
            irq,
            queues,
            queue_evts,
            _memfd: memfd,
        }
    }

    pub fn read_reg(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.transport.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    pub fn write_reg(&mut self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    pub fn status(&mut self) -> u32 {
        self.read_reg(STATUS)
    }

    /// Offered features, both halves.
    pub fn device_features(&mut self) -> u64 {
        self.write_reg(0x14, 0);
        let low = self.read_reg(0x10);
        self.write_reg(0x14, 1);
        let high = self.read_reg(0x10);
        u64::from(low) | u64::from(high) << 32
    }

    /// Resets and negotiates `features`; returns the status after FEATURES_OK.
    pub fn negotiate(&mut self, features: u64) -> u32 {
        self.write_reg(STATUS, 0);
        self.write_reg(STATUS, 1);
        self.write_reg(STATUS, 1 | 2);
        self.write_reg(0x24, 0);
        self.write_reg(0x20, features as u32);
        self.write_reg(0x24, 1);
        self.write_reg(0x20, (features >> 32) as u32);
        self.write_reg(STATUS, 1 | 2 | FEATURES_OK);
        self.status()
    }

    /// Programs queue `q` with `size` entries at its default place.
    pub fn setup_queue(&mut self, q: usize, size: u16) {
        let (desc, avail, used) = (
            self.queues[q].desc,
            self.queues[q].avail,
            self.queues[q].used,
        );
        self.write_reg(0x30, q as u32);
        self.write_reg(0x38, u32::from(size));
        self.write_reg(0x80, desc as u32);
        self.write_reg(0x84, (desc >> 32) as u32);
        self.write_reg(0x90, avail as u32);
        self.write_reg(0x94, (avail >> 32) as u32);
        self.write_reg(0xa0, used as u32);
        self.write_reg(0xa4, (used >> 32) as u32);
        self.write_reg(0x44, 1);
        let queue = &mut self.queues[q];
        queue.size = size;
        queue.avail_idx = 0;
        queue.next_desc = 0;
        queue.used_seen = 0;
        // A fresh ring: zero idx fields, as a driver allocating zeroed memory would.
        self.mem.write_obj(0u32, GuestAddress(avail)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(used)).unwrap();
    }

    /// Full initialisation, every offered feature but EVENT_IDX acked, queues of `size`.
    pub fn start(&mut self, size: u16) {
        let features = self.device_features() & !VIRTIO_RING_F_EVENT_IDX;
        self.start_with(features, size);
    }

    pub fn start_with(&mut self, features: u64, size: u16) {
        let status = self.negotiate(features);
        assert_eq!(
            status & FEATURES_OK,
            FEATURES_OK,
            "features {features:#x} refused"
        );
        for q in 0..self.queues.len() {
            self.setup_queue(q, size);
        }
        self.write_reg(STATUS, 1 | 2 | FEATURES_OK | DRIVER_OK);
        assert_eq!(self.status() & (DRIVER_OK | NEEDS_RESET), DRIVER_OK);
    }

    /// Writes descriptor `index` of queue `q` as is.
    pub fn write_desc(&self, q: usize, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let desc = Descriptor::new(addr, len, flags, next);
        let at = self.queues[q].desc + u64::from(index) * 16;
        self.mem.write_obj(desc, GuestAddress(at)).unwrap();
    }

    /// Offers `head` in the avail ring of queue `q`.
    pub fn push_avail(&mut self, q: usize, head: u16) {
        let queue = &mut self.queues[q];
        let slot = queue.avail + 4 + u64::from(queue.avail_idx % queue.size) * 2;
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        queue.avail_idx = queue.avail_idx.wrapping_add(1);
        let idx = queue.avail_idx;
        let at = GuestAddress(queue.avail + 2);
        self.mem.store(idx, at, Ordering::Release).unwrap();
    }

    /// Sets the avail ring's idx to anything (ring corruption).
    pub fn set_avail_idx(&mut self, q: usize, idx: u16) {
        self.mem
            .store(
                idx,
                GuestAddress(self.queues[q].avail + 2),
                Ordering::Release,
            )
            .unwrap();
    }

    /// Writes a chain of `(addr, len, device_writable)` buffers and offers it; returns the head.
    pub fn add_chain(&mut self, q: usize, buffers: &[(u64, u32, bool)]) -> u16 {
        let size = self.queues[q].size;
        let head = self.queues[q].next_desc;
        for (i, &(addr, len, writable)) in buffers.iter().enumerate() {
            let index = (head + i as u16) % size;
            let last = i + 1 == buffers.len();
            let mut flags = if writable {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            self.write_desc(q, index, addr, len, flags, (index + 1) % size);
        }
        self.queues[q].next_desc = (head + buffers.len() as u16) % size;
        self.push_avail(q, head);
        head
    }

    /// The descriptor index the next `add_chain` on queue `q` starts at.
    pub fn next_head(&self, q: usize) -> u16 {
        self.queues[q].next_desc
    }

    /// QueueNotify through the register (the path without an ioeventfd).
    pub fn kick(&mut self, q: usize) {
        self.write_reg(0x50, q as u32);
    }

    /// The used ring's idx as the device last published it.
    pub fn used_idx(&self, q: usize) -> u16 {
        self.mem
            .load(GuestAddress(self.queues[q].used + 2), Ordering::Acquire)
            .unwrap()
    }

    /// Waits for the next used element of queue `q`: `(id, len)`.
    pub fn wait_used(&mut self, q: usize) -> (u32, u32) {
        self.try_wait_used(q, Duration::from_secs(5))
            .expect("device did not complete a request")
    }

    pub fn try_wait_used(&mut self, q: usize, timeout: Duration) -> Option<(u32, u32)> {
        let deadline = Instant::now() + timeout;
        while self.used_idx(q) == self.queues[q].used_seen {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let queue = &mut self.queues[q];
        let at = queue.used + 4 + u64::from(queue.used_seen % queue.size) * 8;
        queue.used_seen = queue.used_seen.wrapping_add(1);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        Some((id, len))
    }

    /// Waits until the status register satisfies `f`.
    pub fn wait_status(&mut self, f: impl Fn(u32) -> bool) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = self.status();
            if f(status) || Instant::now() > deadline {
                return status;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn byte(&self, addr: u64) -> u8 {
        self.mem.read_obj(GuestAddress(addr)).unwrap()
    }

    /// Forgets every dirty bit, as a migration round does after copying.
    pub fn clear_dirty(&self) {
        for region in self.mem.iter() {
            std::ops::Deref::deref(region).bitmap().reset();
        }
    }

    pub fn is_dirty(&self, addr: u64) -> bool {
        let region = self.mem.find_region(GuestAddress(addr)).unwrap();
        region
            .bitmap()
            .dirty_at((addr - region.start_addr().0) as usize)
    }
}

/// A file under the temp dir, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(tag: &str, bytes: &[u8]) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("nova-virtio-{tag}-{}-{n}.img", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }

    pub fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
