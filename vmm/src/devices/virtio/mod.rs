//! Virtio devices on the virtio-mmio (version 2) transport.
//!
//! The transport ([`mmio::MmioTransport`]) owns the register file and the queues'
//! configuration; a device ([`device::VirtioDevice`]: [`block`], [`net`]) owns its
//! backend and, once activated, a [`worker`] thread that serves its queues. Saved
//! state: the devices' in [`persist`], the transport's in `mmio::persist`. Everything the guest puts in a queue is hostile input: chains are
//! validated ([`chain`]) before any byte is read or written.
//!
//! This module only names its parts: they import each other by their own paths, never
//! through the re-exports below (which are for the VM that assembles them).

pub mod block;
mod chain;
pub mod device;
pub mod mmio;
pub mod net;
pub mod persist;
pub mod replay;
#[cfg(test)]
mod test_driver;
mod worker;

pub use block::{Block, BlockError, DiskLog};
pub use device::{Interrupt, VirtioDevice};
pub use mmio::persist::TransportState;
pub use mmio::{MmioTransport, TransportError, MMIO_LEN};
pub use net::{Net, NetConfig, NetError};
pub use persist::{BlockConfig, BlockState, NetState};
