//! Virtio devices on the virtio-mmio (version 2) transport.
//!
//! The transport ([`mmio::MmioTransport`]) owns the register file and the queues'
//! configuration; a device ([`VirtioDevice`]) owns its backend and, once activated, a
//! worker thread that serves its queues. Everything the guest puts in a queue is
//! hostile input: chains are validated before any byte is read or written.

pub mod block;
pub mod mmio;
pub mod net;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMemory;

/// Interrupt status bit: a used buffer was added.
pub const INT_VRING: u32 = 1;
/// Interrupt status bit: the device configuration changed.
pub const INT_CONFIG: u32 = 2;

/// The device's interrupt line: the status register the guest reads and acks, and the
/// irqfd KVM injects from.
pub struct Interrupt {
    status: AtomicU32,
    irqfd: EventFd,
}

impl Interrupt {
    /// An interrupt line raised through `irqfd` (registered with KVM on the device's GSI).
    pub fn new(irqfd: EventFd) -> Self {
        Self { status: AtomicU32::new(0), irqfd }
    }

    /// Tells the guest a used buffer is ready.
    pub fn signal_used_queue(&self) {
        self.signal(INT_VRING);
    }

    /// Tells the guest the device configuration changed.
    pub fn signal_config_change(&self) {
        self.signal(INT_CONFIG);
    }

    fn signal(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        // A full eventfd counter still raises the line; nothing to recover.
        let _ = self.irqfd.write(1);
    }

    /// InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK register.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

/// What a device receives when the driver sets DRIVER_OK.
pub struct ActivateContext {
    pub mem: GuestMemory,
    pub interrupt: Arc<Interrupt>,
    /// Each queue with the eventfd the guest's QueueNotify writes signal.
    pub queues: Vec<(Queue, EventFd)>,
    pub acked_features: u64,
}
