//! A virtio-mmio device's place on the VM's bus: its transport, interrupt line and
//! queue eventfds, and the device model the configuration asks for in each slot.

use std::sync::Arc;

use nova_vmm_api::config::parse_mac;
use nova_vmm_api::VmConfig;
use vmm_sys_util::eventfd::EventFd;

use super::error::{setup, VmError};
use crate::devices::virtio::{
    self, Block, BlockConfig, DiskLog, Interrupt, MmioTransport, Net, VirtioDevice,
};
use crate::devices::BusDevice;

/// A virtio-mmio device's place on the bus. The transport is rebuilt on restore,
/// after the old device is dropped (a tap can be attached by one device at a time).
pub struct VirtioSlot {
    pub(super) transport: Option<MmioTransport>,
    pub(super) interrupt: Arc<Interrupt>,
    pub(super) queue_evts: Vec<EventFd>,
}

impl BusDevice for VirtioSlot {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match &mut self.transport {
            Some(t) => t.read(offset, data),
            None => data.fill(0),
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(t) = &mut self.transport {
            t.write(offset, data);
        }
    }
}

/// Duplicates the queue eventfds for a (new) transport; the slot keeps its own.
pub(super) fn clone_evts(evts: &[EventFd]) -> Result<Vec<EventFd>, VmError> {
    evts.iter()
        .map(|e| e.try_clone().map_err(setup("eventfd")))
        .collect()
}

/// The device behind virtio slot `index`: disks first (each marking its writes in its
/// entry of `disk_logs`), then NICs.
pub(super) fn make_device(
    config: &VmConfig,
    index: usize,
    disk_logs: &[Arc<DiskLog>],
) -> Result<Box<dyn VirtioDevice>, VmError> {
    if let Some(d) = config.disks.get(index) {
        let cfg = BlockConfig {
            path: d.path.clone(),
            read_only: d.read_only,
            id: format!("disk{index}"),
        };
        let block = Block::new(cfg).map_err(|e| VmError::Device(e.to_string()))?;
        return Ok(Box::new(match disk_logs.get(index) {
            Some(log) => block.with_log(log.clone()),
            None => block,
        }));
    }
    let n = &config.nets[index - config.disks.len()];
    let cfg = virtio::NetConfig {
        tap: n.tap.clone(),
        mac: n.mac.as_deref().and_then(parse_mac),
    };
    Ok(Box::new(
        Net::new(cfg).map_err(|e| VmError::Device(e.to_string()))?,
    ))
}
