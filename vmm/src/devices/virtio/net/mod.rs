//! virtio-net over a tap interface: the device model (features, MAC, config space,
//! state, counters). Frames move between the queues and the tap in [`io`].

mod io;
mod tap;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use nova_vmm_api::DeviceCounters;
use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP};
use virtio_queue::QueueState;

use super::device::{
    read_config_bytes, ActivateContext, ActivateError, StateError, VirtioDevice,
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};
use super::persist::{DeviceState, NetState};
use super::worker::WorkerSlot;
pub use io::MAX_FRAME_LEN;
use io::{NetCounterCells, NetWorker};
use tap::Tap;
pub use tap::{NetError, VNET_HDR_LEN};

/// Size of the rx and tx queues.
pub const QUEUE_SIZE: u16 = 256;
/// The rx queue's index.
pub const RX_QUEUE: usize = 0;
/// The tx queue's index.
pub const TX_QUEUE: usize = 1;

/// A network interface as the VM's configuration describes it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// An existing tap interface.
    pub tap: String,
    /// The guest's MAC address; generated (52:54:00:xx:xx:xx) if absent.
    #[serde(default)]
    pub mac: Option<[u8; 6]>,
}

/// A virtio-net device on a tap.
pub struct Net {
    tap: Arc<Tap>,
    mac: [u8; 6],
    counters: Arc<NetCounterCells>,
    worker: WorkerSlot<NetWorker>,
}

impl Net {
    /// Attaches to the tap and picks the MAC.
    pub fn new(config: NetConfig) -> Result<Self, NetError> {
        let tap = Tap::open(&config.tap)?;
        let mac = config.mac.unwrap_or_else(generate_mac);
        Ok(Self {
            tap: Arc::new(tap),
            mac,
            counters: Arc::default(),
            worker: WorkerSlot::Inactive,
        })
    }

    /// The MAC address the guest sees.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn thread_name(&self) -> String {
        format!("virtio-net-{}", self.tap.name())
    }

    fn config_space(&self) -> [u8; 8] {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac);
        config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        config
    }

    fn new_worker(&self, ctx: ActivateContext) -> Result<NetWorker, ActivateError> {
        let got = ctx.queues.len();
        let mut queues = ctx.queues.into_iter();
        let (Some(rx), Some(tx), None) = (queues.next(), queues.next(), queues.next()) else {
            return Err(ActivateError::QueueCount { expected: 2, got });
        };
        Ok(NetWorker::new(
            ctx.mem,
            ctx.interrupt,
            rx,
            tx,
            self.tap.clone(),
            self.counters.clone(),
        ))
    }
}

/// A random locally administered unicast MAC in QEMU's customary 52:54:00 range.
fn generate_mac() -> [u8; 6] {
    let mut random = [0u8; 3];
    // SAFETY: getrandom writes at most `random.len()` bytes into the valid buffer.
    let n = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    if n != random.len() as isize {
        // No entropy source: still differ between VMs on one host.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mixed = nanos ^ std::process::id().rotate_left(12);
        random.copy_from_slice(&mixed.to_le_bytes()[..3]);
    }
    [0x52, 0x54, 0x00, random[0], random[1], random[2]]
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_EVENT_IDX
            | 1 << VIRTIO_NET_F_MAC
            | 1 << VIRTIO_NET_F_STATUS
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space(), offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        // The MAC is read-only in virtio 1.0 (no VIRTIO_NET_F_CTRL_MAC_ADDR).
        tracing::debug!(
            "virtio-net {}: config write at {offset:#x} ignored",
            self.tap.name()
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
        DeviceState::Net(NetState {
            tap: self.tap.name().to_string(),
            mac: self.mac,
        })
    }

    fn restore_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::Net(saved) = state else {
            return Err(StateError::WrongDevice {
                saved: state.kind(),
                device: "net",
            });
        };
        if self.worker.is_activated() {
            return Err(StateError::Mismatch(
                "cannot change the MAC of an active device".into(),
            ));
        }
        self.mac = saved.mac;
        Ok(())
    }

    fn counters(&self) -> DeviceCounters {
        DeviceCounters::Net(self.counters.snapshot())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.worker.reset();
    }
}
