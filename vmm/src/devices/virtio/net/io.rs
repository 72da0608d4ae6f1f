//! The virtio-net worker: tx chains are gathered into one bounded frame and written
//! to the tap; frames read from the tap are copied into rx chains. A frame read while
//! the guest has no rx buffer waits (the tap is not polled) until the guest posts one.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nova_vmm_api::NetCounters;
use virtio_queue::{Queue, QueueOwnedT, QueueState, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::tap::{Tap, VNET_HDR_LEN};
use crate::devices::virtio::chain::{read_chain, read_from, write_to, ValidChain};
use crate::devices::virtio::device::Interrupt;
use crate::devices::virtio::worker::{Poller, QueueWorker};
use crate::memory::GuestMemory;

#[derive(Default)]
pub(crate) struct NetCounterCells {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub rx_dropped: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_dropped: AtomicU64,
    pub bad_chains: AtomicU64,
}

impl NetCounterCells {
    pub(super) fn snapshot(&self) -> NetCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetCounters {
            rx_packets: get(&self.rx_packets),
            rx_bytes: get(&self.rx_bytes),
            rx_dropped: get(&self.rx_dropped),
            tx_packets: get(&self.tx_packets),
            tx_bytes: get(&self.tx_bytes),
            tx_dropped: get(&self.tx_dropped),
            bad_chains: get(&self.bad_chains),
        }
    }
}

/// Largest frame (without the virtio-net header) either way: 64 KiB.
pub const MAX_FRAME_LEN: usize = 64 << 10;

/// Frames moved per wake-up and direction, so that neither a flood from the tap nor a
/// busy guest starves the other direction or a stop request.
const BATCH: usize = 256;

const TOKEN_RX_QUEUE: u64 = 0;
const TOKEN_TX_QUEUE: u64 = 1;
const TOKEN_TAP: u64 = 2;
const TOKEN_STOP: u64 = 3;

/// What the guest offered next on a queue.
enum Offered {
    Nothing,
    Chain(ValidChain),
    /// A chain that failed validation, by its head index.
    Malformed(u16),
}

/// One of the device's queues with its kick eventfd.
struct NetQueue {
    queue: Queue,
    kick: EventFd,
}

/// The thread-side state of a virtio-net device.
pub(crate) struct NetWorker {
    mem: GuestMemory,
    interrupt: Arc<Interrupt>,
    rx: NetQueue,
    tx: NetQueue,
    tap: Arc<Tap>,
    counters: Arc<NetCounterCells>,
    /// A frame from the tap, header included; `rx_len` bytes of it are valid.
    rx_frame: Vec<u8>,
    rx_len: Option<usize>,
    tx_frame: Vec<u8>,
    /// Whether the tap is in the epoll set (not while a frame waits for a buffer).
    tap_polled: bool,
    /// The guest corrupted a ring: nothing more is taken from it until a reset.
    broken: bool,
}

impl NetWorker {
    pub fn new(
        mem: GuestMemory,
        interrupt: Arc<Interrupt>,
        rx: (Queue, EventFd),
        tx: (Queue, EventFd),
        tap: Arc<Tap>,
        counters: Arc<NetCounterCells>,
    ) -> Self {
        Self {
            mem,
            interrupt,
            rx: NetQueue {
                queue: rx.0,
                kick: rx.1,
            },
            tx: NetQueue {
                queue: tx.0,
                kick: tx.1,
            },
            tap,
            counters,
            rx_frame: vec![0; VNET_HDR_LEN + MAX_FRAME_LEN],
            rx_len: None,
            tx_frame: vec![0; VNET_HDR_LEN + MAX_FRAME_LEN],
            tap_polled: false,
            broken: false,
        }
    }

    fn ring_broken(&mut self, reason: &str) {
        if !self.broken {
            tracing::warn!("virtio-net: guest corrupted a queue ({reason}); device needs reset");
            self.broken = true;
            self.interrupt.signal_needs_reset();
        }
    }

    /// The next chain the guest offers on `queue`, validated; `Err` when the ring
    /// itself is corrupt.
    fn pop(mem: &GuestMemory, queue: &mut Queue) -> Result<Offered, String> {
        let head = match queue.iter(mem) {
            Ok(mut avail) => match avail.next() {
                Some(chain) => chain.head_index(),
                None => return Ok(Offered::Nothing),
            },
            Err(err) => return Err(format!("{err:?}")),
        };
        let desc_table = GuestAddress(queue.desc_table());
        match read_chain(mem, desc_table, queue.size(), head) {
            Ok(chain) => Ok(Offered::Chain(chain)),
            Err(bad) => {
                tracing::debug!("virtio-net: bad chain at {head}: {}", bad.error);
                Ok(Offered::Malformed(head))
            }
        }
    }

    fn add_used(&mut self, rx: bool, head: u16, len: u32) -> bool {
        let queue = if rx {
            &mut self.rx.queue
        } else {
            &mut self.tx.queue
        };
        match queue.add_used(&self.mem, head, len) {
            Ok(()) => true,
            Err(err) => {
                self.ring_broken(&format!("cannot complete descriptor {head}: {err:?}"));
                false
            }
        }
    }

    /// Sends the frames the guest queued (a batch; the rest on the next wake-up).
    fn process_tx(&mut self) {
        let mut budget = BATCH;
        while !self.broken {
            if let Err(err) = self.tx.queue.disable_notification(&self.mem) {
                return self.ring_broken(&format!("{err:?}"));
            }
            loop {
                if budget == 0 {
                    // Come back after the other events: a kick to ourselves.
                    let _ = self.tx.kick.write(1);
                    return;
                }
                budget -= 1;
                let head = match Self::pop(&self.mem, &mut self.tx.queue) {
                    Ok(Offered::Nothing) => break,
                    Ok(Offered::Chain(chain)) => {
                        self.send_frame(&chain);
                        chain.head
                    }
                    Err(reason) => return self.ring_broken(&reason),
                    Ok(Offered::Malformed(head)) => {
                        self.counters.bad_chains.fetch_add(1, Ordering::Relaxed);
                        self.counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
                        head
                    }
                };
                // The device writes nothing into a tx chain.
                if !self.add_used(false, head, 0) {
                    return;
                }
            }
            match self.tx.queue.enable_notification(&self.mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(err) => return self.ring_broken(&format!("{err:?}")),
            }
        }
    }

    fn send_frame(&mut self, chain: &ValidChain) {
        let len = chain.readable_len as usize;
        let well_formed = chain.writable.is_empty()
            && (VNET_HDR_LEN..=VNET_HDR_LEN + MAX_FRAME_LEN).contains(&len);
        if !well_formed {
            tracing::debug!("virtio-net: tx chain of {len} bytes dropped");
            self.counters.bad_chains.fetch_add(1, Ordering::Relaxed);
            self.counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let frame = &mut self.tx_frame[..len];
        if !read_from(&self.mem, &chain.readable, 0, frame) {
            self.counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // No offloads were negotiated: whatever the guest put in the header (checksum or
        // segmentation requests) is not passed on to the host.
        frame[..VNET_HDR_LEN].fill(0);
        match self.tap.write_frame(frame) {
            Ok(_) => {
                self.counters.tx_packets.fetch_add(1, Ordering::Relaxed);
                let bytes = (len - VNET_HDR_LEN) as u64;
                self.counters.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Err(err) => {
                tracing::debug!("virtio-net: tap {} refused a frame: {err}", self.tap.name());
                self.counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Moves frames from the tap into rx buffers until one side runs dry (or a batch is
    /// done: the tap stays readable and wakes us again).
    fn process_rx(&mut self) {
        let mut budget = BATCH;
        while !self.broken {
            let frame_len = match self.rx_len {
                Some(len) => len,
                None if budget == 0 => return,
                None => match self.tap.read_frame(&mut self.rx_frame) {
                    Ok(n) if n < VNET_HDR_LEN => {
                        budget -= 1;
                        continue;
                    }
                    Ok(n) => {
                        budget -= 1;
                        self.rx_len = Some(n);
                        n
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => {
                        tracing::warn!("virtio-net: tap {} read failed: {err}", self.tap.name());
                        return;
                    }
                },
            };
            let chain = match Self::pop(&self.mem, &mut self.rx.queue) {
                Ok(Offered::Nothing) => {
                    // No buffer: ask for a kick when there is one, unless one came meanwhile.
                    match self.rx.queue.enable_notification(&self.mem) {
                        Ok(true) => continue,
                        Ok(false) => return,
                        Err(err) => return self.ring_broken(&format!("{err:?}")),
                    }
                }
                Ok(chain) => chain,
                Err(reason) => return self.ring_broken(&reason),
            };
            let (head, used) = match chain {
                Offered::Chain(chain) if chain.readable.is_empty() => {
                    if (chain.writable_len as usize) < frame_len {
                        // A good buffer, too small for this frame (a NIC drops oversized
                        // frames too): the frame goes, the buffer stays for the next one.
                        tracing::debug!(
                            "virtio-net: {frame_len}-byte frame dropped, rx buffer holds {}",
                            chain.writable_len
                        );
                        self.counters.rx_dropped.fetch_add(1, Ordering::Relaxed);
                        self.rx_len = None;
                        self.rx.queue.go_to_previous_position();
                        continue;
                    }
                    (chain.head, self.receive_frame(&chain, frame_len))
                }
                Offered::Chain(chain) => (chain.head, 0),
                Offered::Malformed(head) => (head, 0),
                Offered::Nothing => continue,
            };
            if used == 0 {
                // A chain that cannot take a frame goes back empty; the frame waits for
                // the next one.
                self.counters.bad_chains.fetch_add(1, Ordering::Relaxed);
            } else {
                self.rx_len = None;
            }
            if !self.add_used(true, head, used) {
                return;
            }
        }
    }

    /// Writes the waiting frame into `chain` (big enough); returns the used length.
    fn receive_frame(&mut self, chain: &ValidChain, frame_len: usize) -> u32 {
        let frame = &mut self.rx_frame[..frame_len];
        // A plain frame: no offload flags, one buffer (no VIRTIO_NET_F_MRG_RXBUF).
        frame[..VNET_HDR_LEN].fill(0);
        frame[10..12].copy_from_slice(&1u16.to_le_bytes());
        // Through vm-memory: the dirty bitmap records the pages.
        if write_to(&self.mem, &chain.writable, 0, frame) != frame_len {
            return 0;
        }
        self.counters.rx_packets.fetch_add(1, Ordering::Relaxed);
        let bytes = (frame_len - VNET_HDR_LEN) as u64;
        self.counters.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
        frame_len as u32
    }

    /// Polls the tap only while a frame read from it has somewhere to go.
    fn update_tap_polling(&mut self, poller: &Poller) {
        let want = self.rx_len.is_none() && !self.broken;
        if want == self.tap_polled {
            return;
        }
        let result = if want {
            poller.add(self.tap.as_ref(), TOKEN_TAP)
        } else {
            poller.remove(self.tap.as_ref())
        };
        match result {
            Ok(()) => self.tap_polled = want,
            Err(err) => {
                tracing::error!("virtio-net: cannot (un)poll tap {}: {err}", self.tap.name())
            }
        }
    }

    fn notify_guest(&mut self) {
        let rx = self.rx.queue.needs_notification(&self.mem).unwrap_or(true);
        let tx = self.tx.queue.needs_notification(&self.mem).unwrap_or(true);
        if rx || tx {
            self.interrupt.signal_used_queue();
        }
    }
}

impl QueueWorker for NetWorker {
    fn run(&mut self, stop: &EventFd) {
        let mut poller = match Poller::new() {
            Ok(p) => p,
            Err(err) => {
                tracing::error!("virtio-net: cannot create epoll: {err}");
                self.interrupt.signal_needs_reset();
                return;
            }
        };
        let registered = poller
            .add(&self.rx.kick, TOKEN_RX_QUEUE)
            .and_then(|_| poller.add(&self.tx.kick, TOKEN_TX_QUEUE))
            .and_then(|_| poller.add(stop, TOKEN_STOP));
        if let Err(err) = registered {
            tracing::error!("virtio-net: cannot poll the queues: {err}");
            self.interrupt.signal_needs_reset();
            return;
        }
        self.tap_polled = false;
        // Work may have been queued while paused or before a restore.
        self.process_tx();
        self.process_rx();
        self.update_tap_polling(&poller);
        self.notify_guest();
        loop {
            let tokens = match poller.wait() {
                Ok(tokens) => tokens,
                Err(err) => {
                    tracing::error!("virtio-net: epoll failed: {err}");
                    self.interrupt.signal_needs_reset();
                    return;
                }
            };
            for token in tokens {
                match token {
                    TOKEN_RX_QUEUE => {
                        let _ = self.rx.kick.read();
                        self.process_rx();
                    }
                    TOKEN_TX_QUEUE => {
                        let _ = self.tx.kick.read();
                        self.process_tx();
                    }
                    TOKEN_TAP => self.process_rx(),
                    _ => {
                        let _ = stop.read();
                        // Nothing is in flight: tx is synchronous, a waiting rx frame
                        // stays in `rx_frame` until the worker runs again.
                        self.notify_guest();
                        return;
                    }
                }
            }
            self.update_tap_polling(&poller);
            self.notify_guest();
        }
    }

    fn queue_states(&self) -> Vec<QueueState> {
        vec![self.rx.queue.state(), self.tx.queue.state()]
    }
}
