//! The transport's saved state: its registers, each queue's position and its device's
//! state, and rebuilding a transport from them (snapshot restore, migration).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::{MmioTransport, QueueRegisters, TransportError};
use crate::devices::virtio::device::{Interrupt, VirtioDevice};
use crate::devices::virtio::persist::DeviceState;
use crate::memory::GuestMemory;

/// A queue's saved state: [`virtio_queue::QueueState`] with serde.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SavedQueue {
    pub max_size: u16,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx_enabled: bool,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

impl From<QueueState> for SavedQueue {
    fn from(q: QueueState) -> Self {
        Self {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl From<SavedQueue> for QueueState {
    fn from(q: SavedQueue) -> Self {
        Self {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

/// Everything a transport and its device need to carry on elsewhere (guest memory aside).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TransportState {
    pub device_type: u32,
    pub status: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub queues: Vec<SavedQueue>,
    pub interrupt_status: u32,
    pub needs_reset: bool,
    /// Whether the device was serving its queues (restore re-activates it).
    pub activated: bool,
    pub device: DeviceState,
}

impl MmioTransport {
    /// Rebuilds a transport from `state`; a device that was activated is activated again
    /// with its queues where they were, but left paused: call [`Self::resume`] when the
    /// VM resumes.
    pub fn restore(
        state: &TransportState,
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        interrupt: Arc<Interrupt>,
        queue_evts: Vec<EventFd>,
    ) -> Result<Self, TransportError> {
        let mut transport = Self::new(device, mem, interrupt, queue_evts)?;
        let device_type = transport.device.device_type();
        if state.device_type != device_type {
            return Err(TransportError::DeviceType {
                saved: state.device_type,
                device: device_type,
            });
        }
        if state.queues.len() != transport.queues.len() {
            return Err(TransportError::QueueCount {
                saved: state.queues.len(),
                device: transport.queues.len(),
            });
        }
        for (index, (saved, regs)) in state.queues.iter().zip(&transport.queues).enumerate() {
            if saved.max_size != regs.max_size {
                let reason = format!(
                    "max size {} but the device offers {}",
                    saved.max_size, regs.max_size
                );
                return Err(TransportError::Queue { index, reason });
            }
        }
        transport.device.restore_state(&state.device)?;
        transport.status = state.status;
        transport.device_features_sel = state.device_features_sel;
        transport.driver_features_sel = state.driver_features_sel;
        transport.driver_features = state.driver_features;
        transport.queue_sel = state.queue_sel;
        for (regs, saved) in transport.queues.iter_mut().zip(&state.queues) {
            *regs = QueueRegisters {
                max_size: saved.max_size,
                size: saved.size,
                ready: saved.ready,
                desc_table: saved.desc_table,
                avail_ring: saved.avail_ring,
                used_ring: saved.used_ring,
            };
        }
        if state.activated {
            let mut queues = Vec::with_capacity(state.queues.len());
            for (index, saved) in state.queues.iter().enumerate() {
                let queue = Queue::try_from(QueueState::from(*saved)).map_err(|e| {
                    TransportError::Queue {
                        index,
                        reason: format!("{e:?}"),
                    }
                })?;
                if !queue.is_valid(&transport.mem) {
                    let reason = "rings are not inside guest memory".to_string();
                    return Err(TransportError::Queue { index, reason });
                }
                let evt = transport.queue_evts[index]
                    .try_clone()
                    .map_err(TransportError::EventFd)?;
                queues.push((queue, evt));
            }
            let ctx = transport.activate_context(queues);
            transport.device.activate_paused(ctx)?;
        }
        transport
            .interrupt
            .restore_status(state.interrupt_status, state.needs_reset);
        Ok(transport)
    }

    /// The transport's and device's state; the device must be paused (or not activated).
    pub fn state(&self) -> Result<TransportState, TransportError> {
        let activated = self.device.is_activated();
        let queues = if activated {
            let states = self.device.queue_states().ok_or(TransportError::Running)?;
            states.into_iter().map(SavedQueue::from).collect()
        } else {
            self.queues
                .iter()
                .map(|r| SavedQueue {
                    max_size: r.max_size,
                    size: r.size,
                    ready: r.ready,
                    desc_table: r.desc_table,
                    avail_ring: r.avail_ring,
                    used_ring: r.used_ring,
                    ..Default::default()
                })
                .collect()
        };
        Ok(TransportState {
            device_type: self.device.device_type(),
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            queues,
            interrupt_status: self.interrupt.status(),
            needs_reset: self.interrupt.needs_reset(),
            activated,
            device: self.device.state(),
        })
    }
}
