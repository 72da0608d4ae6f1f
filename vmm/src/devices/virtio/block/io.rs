//! The virtio-blk worker: pops requests from the queue, runs reads, writes and flushes
//! on an io_uring straight into and out of guest memory, and completes them into the
//! used ring. At most one request per queue entry is in flight.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use io_uring::{opcode, types, IoUring};
use nova_vmm_api::BlockCounters;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};
use virtio_queue::{Queue, QueueOwnedT, QueueState, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::request::{self, Request, RequestKind};
use crate::devices::virtio::chain::{read_chain, write_to, Buffer};
use crate::devices::virtio::device::Interrupt;
use crate::devices::virtio::worker::{Poller, QueueWorker};
use crate::memory::{mark_dirty, GuestMemory};

/// The live counters the worker bumps; [`BlockCounters`] is their snapshot.
#[derive(Default)]
pub(crate) struct BlockCounterCells {
    pub read_requests: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_requests: AtomicU64,
    pub write_bytes: AtomicU64,
    pub flush_requests: AtomicU64,
    pub failed_requests: AtomicU64,
    pub bad_chains: AtomicU64,
}

impl BlockCounterCells {
    pub(super) fn snapshot(&self) -> BlockCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BlockCounters {
            read_requests: get(&self.read_requests),
            read_bytes: get(&self.read_bytes),
            write_requests: get(&self.write_requests),
            write_bytes: get(&self.write_bytes),
            flush_requests: get(&self.flush_requests),
            failed_requests: get(&self.failed_requests),
            bad_chains: get(&self.bad_chains),
        }
    }
}

const TOKEN_QUEUE: u64 = 0;
const TOKEN_COMPLETION: u64 = 1;
const TOKEN_STOP: u64 = 2;

/// What the device hands its worker at activation.
pub(crate) struct WorkerSetup {
    pub mem: GuestMemory,
    pub interrupt: Arc<Interrupt>,
    pub queue: Queue,
    pub queue_evt: EventFd,
    pub disk: Arc<File>,
    pub capacity_sectors: u64,
    pub read_only: bool,
    pub serial: [u8; 20],
    pub counters: Arc<BlockCounterCells>,
    /// Written blocks, for a live migration.
    pub log: Option<Arc<super::DiskLog>>,
}

/// Host iovecs over guest memory for one submitted request.
struct GuestIovecs(Vec<libc::iovec>);

// SAFETY: the pointers refer to guest memory, mapped for as long as the worker's
// `GuestMemory` lives; only the kernel dereferences them, for a request this worker
// submitted and reaps before it drops the iovecs or the memory.
unsafe impl Send for GuestIovecs {}

/// A request the kernel is working on.
struct InFlight {
    head: u16,
    kind: RequestKind,
    status: GuestAddress,
    offset: u64,
    data_len: u32,
    /// Kept alive until the completion: the kernel reads the array at any time before.
    _iovecs: GuestIovecs,
    /// Guest buffers a read fills behind vm-memory's back (to mark dirty).
    data: Vec<Buffer>,
}

/// The thread-side state of a virtio-blk device.
pub(crate) struct BlockWorker {
    setup: WorkerSetup,
    ring: IoUring,
    ring_evt: EventFd,
    /// One slot per queue entry; the slot index is the io_uring user_data.
    in_flight: Vec<Option<InFlight>>,
    free_slots: Vec<usize>,
    /// The guest corrupted the ring: nothing more is taken from it until a reset.
    broken: bool,
}

impl BlockWorker {
    pub fn new(setup: WorkerSetup) -> io::Result<Self> {
        let slots = usize::from(setup.queue.size());
        let ring = IoUring::new(u32::from(setup.queue.max_size()))?;
        let ring_evt = EventFd::new(EFD_NONBLOCK)?;
        ring.submitter().register_eventfd(ring_evt.as_raw_fd())?;
        Ok(Self {
            setup,
            ring,
            ring_evt,
            in_flight: (0..slots).map(|_| None).collect(),
            free_slots: (0..slots).rev().collect(),
            broken: false,
        })
    }

    fn in_flight_count(&self) -> usize {
        self.in_flight.len() - self.free_slots.len()
    }

    /// Takes every available request (while slots are free) and submits it.
    fn process_queue(&mut self) {
        while !self.broken {
            if let Err(err) = self.setup.queue.disable_notification(&self.setup.mem) {
                return self.ring_broken(&format!("{err:?}"));
            }
            while !self.free_slots.is_empty() {
                let head = match self.setup.queue.iter(&self.setup.mem) {
                    Ok(mut avail) => match avail.next() {
                        Some(chain) => chain.head_index(),
                        None => break,
                    },
                    Err(err) => return self.ring_broken(&format!("{err:?}")),
                };
                self.start_request(head);
            }
            if self.free_slots.is_empty() {
                // Completions free slots and call us again.
                break;
            }
            match self.setup.queue.enable_notification(&self.setup.mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(err) => return self.ring_broken(&format!("{err:?}")),
            }
        }
        if let Err(err) = self.ring.submit() {
            tracing::error!("virtio-blk: io_uring submit failed: {err}");
        }
    }

    fn start_request(&mut self, head: u16) {
        let s = &self.setup;
        let desc_table = GuestAddress(s.queue.desc_table());
        let chain = match read_chain(&s.mem, desc_table, s.queue.size(), head) {
            Ok(chain) => chain,
            Err(bad) => {
                tracing::debug!("virtio-blk: bad chain at {head}: {}", bad.error);
                s.counters.bad_chains.fetch_add(1, Ordering::Relaxed);
                return self.complete(head, bad.status, VIRTIO_BLK_S_IOERR as u8, 1);
            }
        };
        let request = match request::parse(&s.mem, &chain, s.capacity_sectors, s.read_only) {
            Ok(request) => request,
            Err(refusal) => {
                tracing::debug!("virtio-blk: request {head} refused: {}", refusal.reason);
                s.counters.failed_requests.fetch_add(1, Ordering::Relaxed);
                return self.complete(head, refusal.status_addr, refusal.status, 1);
            }
        };
        match request.kind {
            RequestKind::GetId => {
                let n = request.data_len.min(20) as usize;
                let written = write_to(&s.mem, &request.data, 0, &s.serial[..n]);
                let used = written as u32 + 1;
                self.complete(head, Some(request.status), VIRTIO_BLK_S_OK as u8, used);
            }
            RequestKind::Read | RequestKind::Write if request.data_len == 0 => {
                self.complete(head, Some(request.status), VIRTIO_BLK_S_OK as u8, 1);
            }
            RequestKind::Read | RequestKind::Write | RequestKind::Flush => self.submit(request),
        }
    }

    fn submit(&mut self, request: Request) {
        let Some(slot) = self.free_slots.pop() else {
            // process_queue only starts requests while a slot is free.
            return self.complete(
                request.head,
                Some(request.status),
                VIRTIO_BLK_S_IOERR as u8,
                1,
            );
        };
        let Some(iovecs) = host_iovecs(&self.setup.mem, &request.data) else {
            self.free_slots.push(slot);
            return self.complete(
                request.head,
                Some(request.status),
                VIRTIO_BLK_S_IOERR as u8,
                1,
            );
        };
        if request.kind == RequestKind::Write {
            // A backup checkpoint's copy: the old block goes to its staging file first.
            if let Some(log) = &self.setup.log {
                log.cbw
                    .before_write(request.offset, u64::from(request.data_len));
            }
        }
        let fd = types::Fd(self.setup.disk.as_raw_fd());
        let count = iovecs.0.len() as u32;
        let entry = match request.kind {
            RequestKind::Read => opcode::Readv::new(fd, iovecs.0.as_ptr(), count)
                .offset(request.offset)
                .build(),
            RequestKind::Write => opcode::Writev::new(fd, iovecs.0.as_ptr(), count)
                .offset(request.offset)
                .build(),
            _ => opcode::Fsync::new(fd).build(),
        }
        .user_data(slot as u64);
        self.in_flight[slot] = Some(InFlight {
            head: request.head,
            kind: request.kind,
            status: request.status,
            offset: request.offset,
            data_len: request.data_len,
            _iovecs: iovecs,
            data: request.data,
        });
        // SAFETY: the iovec array and the guest buffers it points to stay valid until the
        // completion for `slot` is reaped: the array lives in `self.in_flight[slot]`, the
        // buffers in guest memory that `self.setup.mem` keeps mapped, and the fd is kept
        // open by `self.setup.disk`; the worker never returns with requests in flight.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            // The ring has as many entries as the queue, so this is not expected.
            let request = self.in_flight[slot].take();
            self.free_slots.push(slot);
            if let Some(r) = request {
                self.complete(r.head, Some(r.status), VIRTIO_BLK_S_IOERR as u8, 1);
            }
        }
    }

    /// Completes every request the kernel finished.
    fn reap(&mut self) {
        let done: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (slot, result) in done {
            let Some(request) = self.in_flight.get_mut(slot as usize).and_then(Option::take) else {
                continue;
            };
            self.free_slots.push(slot as usize);
            let counters = &self.setup.counters;
            let ok = match request.kind {
                RequestKind::Flush => result == 0,
                _ => u32::try_from(result).is_ok_and(|n| n == request.data_len),
            };
            let mut used = 1;
            match request.kind {
                RequestKind::Read => {
                    // Even a failed read may have written part of the buffers.
                    for b in &request.data {
                        mark_dirty(&self.setup.mem, b.addr, b.len as usize);
                    }
                    counters.read_requests.fetch_add(1, Ordering::Relaxed);
                    if ok {
                        counters
                            .read_bytes
                            .fetch_add(u64::from(request.data_len), Ordering::Relaxed);
                        used += request.data_len;
                    }
                }
                RequestKind::Write => {
                    // Even a failed write may have changed part of the range.
                    if let Some(log) = &self.setup.log {
                        log.mark(request.offset, u64::from(request.data_len));
                    }
                    counters.write_requests.fetch_add(1, Ordering::Relaxed);
                    if ok {
                        counters
                            .write_bytes
                            .fetch_add(u64::from(request.data_len), Ordering::Relaxed);
                    }
                }
                _ => {
                    counters.flush_requests.fetch_add(1, Ordering::Relaxed);
                }
            }
            let status = if ok {
                VIRTIO_BLK_S_OK
            } else {
                tracing::warn!(
                    "virtio-blk {}: {:?} failed: {}",
                    String::from_utf8_lossy(&self.setup.serial).trim_end_matches('\0'),
                    request.kind,
                    if result < 0 {
                        io::Error::from_raw_os_error(-result).to_string()
                    } else {
                        format!("short transfer {result} of {}", request.data_len)
                    }
                );
                counters.failed_requests.fetch_add(1, Ordering::Relaxed);
                VIRTIO_BLK_S_IOERR
            };
            self.complete(request.head, Some(request.status), status as u8, used);
        }
    }

    /// Puts `head` in the used ring, with `status` written if there is a place for it
    /// (otherwise with used length 0).
    fn complete(&mut self, head: u16, status_addr: Option<GuestAddress>, status: u8, used: u32) {
        let mem = &self.setup.mem;
        let used = match status_addr {
            Some(addr) if mem.write_obj(status, addr).is_ok() => used,
            _ => 0,
        };
        if let Err(err) = self.setup.queue.add_used(mem, head, used) {
            self.ring_broken(&format!("cannot complete descriptor {head}: {err:?}"));
        }
    }

    fn notify_guest(&mut self) {
        match self.setup.queue.needs_notification(&self.setup.mem) {
            Ok(true) => self.setup.interrupt.signal_used_queue(),
            Ok(false) => {}
            // Interrupting spuriously is harmless; missing one would hang the guest.
            Err(_) => self.setup.interrupt.signal_used_queue(),
        }
    }

    fn ring_broken(&mut self, reason: &str) {
        if !self.broken {
            tracing::warn!("virtio-blk: guest corrupted its queue ({reason}); device needs reset");
            self.broken = true;
            self.setup.interrupt.signal_needs_reset();
        }
    }

    /// Waits for every in-flight request and completes it.
    fn drain(&mut self) {
        while self.in_flight_count() > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    tracing::error!("virtio-blk: io_uring wait failed while draining: {err}");
                    break;
                }
            }
            self.reap();
        }
        self.notify_guest();
    }
}

/// What the worker does with one validated chain up to the disk I/O (see
/// `virtio::replay`): decoded, mapped to host iovecs, GET_ID answered; the status
/// byte written as the completion would. (accepted, used length).
pub(crate) fn replay_request(
    mem: &GuestMemory,
    chain: &crate::devices::virtio::chain::ValidChain,
    capacity_sectors: u64,
    read_only: bool,
) -> (bool, u32) {
    use vm_memory::Bytes;
    match request::parse(mem, chain, capacity_sectors, read_only) {
        Ok(r) => {
            let mapped = host_iovecs(mem, &r.data).is_some();
            let used = match r.kind {
                RequestKind::GetId => {
                    let serial = [b'n'; 20];
                    let n = r.data_len.min(20) as usize;
                    write_to(mem, &r.data, 0, &serial[..n]) as u32 + 1
                }
                _ => 1,
            };
            let _ = mem.write_obj(VIRTIO_BLK_S_OK as u8, r.status);
            (mapped, used)
        }
        Err(refusal) => {
            if let Some(a) = refusal.status_addr {
                let _ = mem.write_obj(refusal.status, a);
            }
            (false, 1)
        }
    }
}

/// Host iovecs covering `buffers` (validated guest ranges).
fn host_iovecs(mem: &GuestMemory, buffers: &[Buffer]) -> Option<GuestIovecs> {
    let mut iovecs = Vec::with_capacity(buffers.len());
    for b in buffers {
        for slice in GuestMemoryBackend::get_slices(mem, b.addr, b.len as usize) {
            let slice = slice.ok()?;
            iovecs.push(libc::iovec {
                iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                iov_len: slice.len(),
            });
        }
    }
    (iovecs.len() <= libc::UIO_MAXIOV as usize).then_some(GuestIovecs(iovecs))
}

impl QueueWorker for BlockWorker {
    fn run(&mut self, stop: &EventFd) {
        let mut poller = match Poller::new() {
            Ok(p) => p,
            Err(err) => {
                tracing::error!("virtio-blk: cannot create epoll: {err}");
                self.setup.interrupt.signal_needs_reset();
                return;
            }
        };
        let registered = poller
            .add(&self.setup.queue_evt, TOKEN_QUEUE)
            .and_then(|_| poller.add(&self.ring_evt, TOKEN_COMPLETION))
            .and_then(|_| poller.add(stop, TOKEN_STOP));
        if let Err(err) = registered {
            tracing::error!("virtio-blk: cannot poll the queue: {err}");
            self.setup.interrupt.signal_needs_reset();
            return;
        }
        // Requests may have arrived while paused or before a restore: look now.
        self.process_queue();
        self.notify_guest();
        loop {
            let tokens = match poller.wait() {
                Ok(tokens) => tokens,
                Err(err) => {
                    tracing::error!("virtio-blk: epoll failed: {err}");
                    self.setup.interrupt.signal_needs_reset();
                    self.drain();
                    return;
                }
            };
            for token in tokens {
                match token {
                    TOKEN_QUEUE => {
                        let _ = self.setup.queue_evt.read();
                        self.process_queue();
                    }
                    TOKEN_COMPLETION => {
                        let _ = self.ring_evt.read();
                        self.reap();
                        self.process_queue();
                    }
                    _ => {
                        let _ = stop.read();
                        self.drain();
                        return;
                    }
                }
            }
            self.notify_guest();
        }
    }

    fn queue_states(&self) -> Vec<QueueState> {
        vec![self.setup.queue.state()]
    }
}
