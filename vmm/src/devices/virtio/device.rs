//! What every virtio device is to its transport: the [`VirtioDevice`] trait (features,
//! config space, queues, activation, pause and resume, saved state, counters), the
//! interrupt line it raises, and what it gets when the driver activates it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use nova_vmm_api::DeviceCounters;
use virtio_queue::{Queue, QueueState};
use vmm_sys_util::eventfd::EventFd;

use super::persist::DeviceState;
use crate::memory::GuestMemory;

/// Interrupt status bit: a used buffer was added.
pub const INT_VRING: u32 = 1;
/// Interrupt status bit: the device configuration changed.
pub const INT_CONFIG: u32 = 2;

/// Feature bit every device offers: the modern (1.0+) interface.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
/// Feature bit: the used_event / avail_event notification suppression.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// The device's interrupt line: the status register the guest reads and acks, and the
/// irqfd KVM injects from. Also carries DEVICE_NEEDS_RESET, which a worker raises
/// when the guest corrupted a ring.
pub struct Interrupt {
    status: AtomicU32,
    irqfd: EventFd,
    needs_reset: AtomicBool,
}

impl Interrupt {
    /// An interrupt line raised through `irqfd` (registered with KVM on the device's GSI).
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            irqfd,
            needs_reset: AtomicBool::new(false),
        }
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

    /// Restores InterruptStatus and DEVICE_NEEDS_RESET from a snapshot, re-raising the
    /// line if bits are pending (the edge the guest saw before the snapshot is gone).
    pub fn restore_status(&self, bits: u32, needs_reset: bool) {
        self.needs_reset.store(needs_reset, Ordering::SeqCst);
        self.status
            .store(bits & (INT_VRING | INT_CONFIG), Ordering::SeqCst);
        if bits != 0 {
            let _ = self.irqfd.write(1);
        }
    }

    /// The device cannot go on without a reset (the guest broke a ring, or activation
    /// failed): sets DEVICE_NEEDS_RESET and tells the guest through a config interrupt.
    pub fn signal_needs_reset(&self) {
        self.needs_reset.store(true, Ordering::SeqCst);
        self.signal_config_change();
    }

    /// Whether DEVICE_NEEDS_RESET is set.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    /// The driver reset the device: status bits and DEVICE_NEEDS_RESET are cleared.
    pub(super) fn reset(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
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

/// Why a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("device expects {expected} queues, got {got}")]
    QueueCount { expected: usize, got: usize },
    #[error("device is already activated")]
    AlreadyActive,
    #[error("cannot start the device's worker thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot set up the device's backend: {0}")]
    Backend(std::io::Error),
}

/// Why saved device state cannot be applied to this device.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("saved state is for a {saved} device, this is a {device} device")]
    WrongDevice {
        saved: &'static str,
        device: &'static str,
    },
    #[error("{0}")]
    Mismatch(String),
}

/// A virtio device model behind a transport.
///
/// Lifecycle: created (backend opened) -> `activate` (worker thread serving the queues)
/// -> `pause`/`resume` (snapshot, migration) -> `reset` (back to created). After
/// `pause` or `reset` return, the device writes no guest memory.
pub trait VirtioDevice: Send {
    /// Virtio device ID (`VIRTIO_ID_BLOCK`, `VIRTIO_ID_NET`).
    fn device_type(&self) -> u32;
    /// The largest size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver (always including `VIRTIO_F_VERSION_1`).
    fn avail_features(&self) -> u64;
    /// Reads the device configuration space; bytes beyond it read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space (read-only fields are ignored).
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts serving the queues on a worker thread.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// Takes the queues as `activate` does but leaves the device paused (restore).
    fn activate_paused(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// Whether the device was activated and not reset since.
    fn is_activated(&self) -> bool;
    /// Stops and joins the worker (in-flight requests completed first), drops the queues.
    fn reset(&mut self);
    /// Completes in-flight requests into the used ring, then stops the worker.
    fn pause(&mut self);
    /// Restarts the worker of a paused device; a no-op otherwise.
    fn resume(&mut self) -> Result<(), ActivateError>;
    /// The queues' positions while paused; `None` if running or not activated.
    fn queue_states(&self) -> Option<Vec<QueueState>>;
    /// Device-specific state for snapshots and migration.
    fn state(&self) -> DeviceState;
    /// Applies saved device-specific state (before activation).
    fn restore_state(&mut self, state: &DeviceState) -> Result<(), StateError>;
    /// Counters for metrics.
    fn counters(&self) -> DeviceCounters;
}

/// Copies `data.len()` bytes of `config` at `offset` into `data`; what lies outside
/// `config` reads as zero.
pub(super) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}
