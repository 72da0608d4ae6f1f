//! The virtio-mmio version 2 transport: the register file a driver programs, feature
//! negotiation, queue setup, device activation, reset, and the transport's saved state.
//!
//! The guest drives every register; nothing it writes may panic the VMM. Accesses of the
//! wrong width or alignment, out-of-range queue selects and writes in the wrong device
//! state are ignored (reads return zero). Its saved state is [`persist`]'s.

pub mod persist;

use std::sync::Arc;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::device::{
    ActivateContext, ActivateError, Interrupt, StateError, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};
use crate::devices::BusDevice;
use crate::memory::GuestMemory;

/// Size of the MMIO window each transport occupies (registers at 0..0x100, config after).
pub const MMIO_LEN: u64 = 0x1000;
/// "virt" in little endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// The modern (non-legacy) virtio-mmio interface.
pub const MMIO_VERSION: u32 = 2;
/// Vendor ID reported to the guest ("NOVA" would do, but any value is fine to Linux).
pub const MMIO_VENDOR_ID: u32 = 0x4e4f_5641;

pub mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

const ACKNOWLEDGE: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
const DRIVER: u32 = VIRTIO_CONFIG_S_DRIVER;
const DRIVER_OK: u32 = VIRTIO_CONFIG_S_DRIVER_OK;
const FEATURES_OK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;
const NEEDS_RESET: u32 = VIRTIO_CONFIG_S_NEEDS_RESET;
const FAILED: u32 = VIRTIO_CONFIG_S_FAILED;

/// One queue's registers as the driver programs them (the transport's view).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct QueueRegisters {
    max_size: u16,
    size: u16,
    ready: bool,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
}

impl QueueRegisters {
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            ..Default::default()
        }
    }

    /// The queue the device will serve, if the driver's setup is valid for `mem`.
    fn to_queue(self, mem: &GuestMemory, event_idx: bool) -> Result<Queue, String> {
        let mut queue = Queue::new(self.max_size).map_err(|e| format!("max size: {e:?}"))?;
        queue
            .try_set_size(self.size)
            .map_err(|_| format!("size {} is invalid", self.size))?;
        queue
            .try_set_desc_table_address(GuestAddress(self.desc_table))
            .map_err(|_| format!("descriptor table {:#x} is misaligned", self.desc_table))?;
        queue
            .try_set_avail_ring_address(GuestAddress(self.avail_ring))
            .map_err(|_| format!("driver area {:#x} is misaligned", self.avail_ring))?;
        queue
            .try_set_used_ring_address(GuestAddress(self.used_ring))
            .map_err(|_| format!("device area {:#x} is misaligned", self.used_ring))?;
        queue.set_event_idx(event_idx);
        queue.set_ready(self.ready);
        if !self.ready {
            return Err("not ready".into());
        }
        if !queue.is_valid(mem) {
            return Err("rings are not inside guest memory".into());
        }
        Ok(queue)
    }
}

/// Why a transport could not be built or restored.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("device has {queues} queues but {events} queue eventfds were given")]
    QueueEvents { queues: usize, events: usize },
    #[error("saved transport is for device type {saved}, this device is type {device}")]
    DeviceType { saved: u32, device: u32 },
    #[error("saved transport has {saved} queues, the device has {device}")]
    QueueCount { saved: usize, device: usize },
    #[error("saved queue {index} is invalid: {reason}")]
    Queue { index: usize, reason: String },
    #[error(transparent)]
    DeviceState(#[from] StateError),
    #[error("cannot activate the restored device: {0}")]
    Activate(#[from] ActivateError),
    #[error("cannot save a running device: pause it first")]
    Running,
    #[error("cannot clone a queue eventfd: {0}")]
    EventFd(std::io::Error),
}

/// A virtio device on the MMIO bus.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    interrupt: Arc<Interrupt>,
    queue_evts: Vec<EventFd>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<QueueRegisters>,
}

impl MmioTransport {
    /// Wraps `device`; `queue_evts[i]` is what a QueueNotify of queue `i` signals (the VM
    /// builder also registers it as an ioeventfd on `base + 0x50` with datamatch `i`).
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        interrupt: Arc<Interrupt>,
        queue_evts: Vec<EventFd>,
    ) -> Result<Self, TransportError> {
        let queues: Vec<_> = device
            .queue_max_sizes()
            .iter()
            .map(|&max| QueueRegisters::new(max))
            .collect();
        if queues.len() != queue_evts.len() {
            return Err(TransportError::QueueEvents {
                queues: queues.len(),
                events: queue_evts.len(),
            });
        }
        Ok(Self {
            device,
            mem,
            interrupt,
            queue_evts,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
        })
    }

    /// Drains in-flight requests and stops the device's worker (snapshot, migration).
    pub fn pause(&mut self) {
        self.device.pause();
    }

    /// Restarts a paused device.
    pub fn resume(&mut self) -> Result<(), ActivateError> {
        self.device.resume()
    }

    /// The device behind this transport (counters, state).
    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    /// The device status register as the driver reads it.
    pub fn status(&self) -> u32 {
        let needs_reset = if self.interrupt.needs_reset() {
            NEEDS_RESET
        } else {
            0
        };
        self.status | needs_reset
    }

    fn selected_queue(&mut self) -> Option<&mut QueueRegisters> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_register(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            reg::MAGIC_VALUE => MMIO_MAGIC,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => MMIO_VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.avail_features() as u32,
                1 => (self.device.avail_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size)),
            reg::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status(),
            // No shared memory regions: a length of all ones says so.
            reg::SHM_LEN_LOW..=reg::SHM_BASE_HIGH => u32::MAX,
            reg::CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => self.write_driver_features(value),
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NOTIFY => self.notify(value),
            reg::INTERRUPT_ACK => self.interrupt.ack(value),
            reg::STATUS => self.write_status(value),
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => self.write_queue_register(offset, value),
            _ => tracing::debug!("virtio-mmio: write to read-only or unknown register {offset:#x}"),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        // Features are negotiated between DRIVER and FEATURES_OK only.
        if self.status & DRIVER == 0 || self.status & FEATURES_OK != 0 {
            tracing::warn!(
                "virtio-mmio: driver features written in status {:#x}",
                self.status
            );
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value),
            1 => {
                self.driver_features =
                    (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
            }
            _ => {}
        }
    }

    fn write_queue_register(&mut self, offset: u64, value: u32) {
        // Queues are configured after FEATURES_OK and before DRIVER_OK.
        if self.status & FEATURES_OK == 0 || self.status & DRIVER_OK != 0 {
            tracing::warn!(
                "virtio-mmio: queue register written in status {:#x}",
                self.status
            );
            return;
        }
        let Some(queue) = self.selected_queue() else {
            return;
        };
        let set_low = |v: &mut u64| *v = (*v & !0xffff_ffff) | u64::from(value);
        let set_high = |v: &mut u64| *v = (*v & 0xffff_ffff) | (u64::from(value) << 32);
        match offset {
            // Validated (power of two, <= max) at activation, where it can fail cleanly.
            reg::QUEUE_NUM => queue.size = value.try_into().unwrap_or(0),
            reg::QUEUE_READY => queue.ready = value == 1,
            reg::QUEUE_DESC_LOW => set_low(&mut queue.desc_table),
            reg::QUEUE_DESC_HIGH => set_high(&mut queue.desc_table),
            reg::QUEUE_DRIVER_LOW => set_low(&mut queue.avail_ring),
            reg::QUEUE_DRIVER_HIGH => set_high(&mut queue.avail_ring),
            reg::QUEUE_DEVICE_LOW => set_low(&mut queue.used_ring),
            reg::QUEUE_DEVICE_HIGH => set_high(&mut queue.used_ring),
            _ => {}
        }
    }

    /// QueueNotify reached us (no ioeventfd registered): pass it on to the worker.
    fn notify(&mut self, queue: u32) {
        if let Some(evt) = self.queue_evts.get(queue as usize) {
            if let Err(err) = evt.write(1) {
                tracing::warn!("virtio-mmio: cannot signal queue {queue}: {err}");
            }
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // The driver only adds bits (until a reset); NEEDS_RESET is the device's to set.
        let value = value & !NEEDS_RESET;
        if value & self.status != self.status {
            tracing::warn!(
                "virtio-mmio: status {value:#x} clears bits of {:#x}",
                self.status
            );
            return;
        }
        let added = value & !self.status;
        let mut value = value;
        if added & FEATURES_OK != 0 && !self.features_acceptable() {
            tracing::warn!(
                "virtio-mmio: driver features {:#x} refused (offered {:#x})",
                self.driver_features,
                self.device.avail_features()
            );
            value &= !FEATURES_OK;
        }
        if added & DRIVER_OK != 0 {
            if let Err(reason) = self.activate() {
                tracing::error!(
                    "virtio-mmio: device type {} cannot start: {reason}",
                    self.device.device_type()
                );
                value &= !DRIVER_OK;
                self.interrupt.signal_needs_reset();
            }
        }
        if added & FAILED != 0 {
            tracing::warn!(
                "virtio-mmio: driver gave up on device type {}",
                self.device.device_type()
            );
        }
        self.status = value & (ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | FAILED);
    }

    fn features_acceptable(&self) -> bool {
        let offered = self.device.avail_features();
        self.status & DRIVER != 0
            && self.driver_features & !offered == 0
            && self.driver_features & VIRTIO_F_VERSION_1 != 0
    }

    fn activate(&mut self) -> Result<(), String> {
        if self.status & FEATURES_OK == 0 {
            return Err("DRIVER_OK without FEATURES_OK".into());
        }
        if self.device.is_activated() {
            return Err("already activated".into());
        }
        let event_idx = self.driver_features & VIRTIO_RING_F_EVENT_IDX != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (index, regs) in self.queues.iter().enumerate() {
            let queue = regs
                .to_queue(&self.mem, event_idx)
                .map_err(|e| format!("queue {index}: {e}"))?;
            let evt = self.queue_evts[index]
                .try_clone()
                .map_err(|e| e.to_string())?;
            queues.push((queue, evt));
        }
        let ctx = self.activate_context(queues);
        self.device.activate(ctx).map_err(|e| e.to_string())
    }

    /// What the device gets when it is activated (or restored activated) with `queues`.
    fn activate_context(&self, queues: Vec<(Queue, EventFd)>) -> ActivateContext {
        ActivateContext {
            mem: self.mem.clone(),
            interrupt: self.interrupt.clone(),
            queues,
            acked_features: self.driver_features,
        }
    }

    fn reset(&mut self) {
        self.device.reset();
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        for queue in &mut self.queues {
            *queue = QueueRegisters::new(queue.max_size);
        }
        self.interrupt.reset();
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_register(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            self.device.write_config(offset - reg::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        if !offset.is_multiple_of(4) {
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests;
