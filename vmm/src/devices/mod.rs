//! Device models the guest reaches through port I/O and MMIO exits.
//!
//! Every device implements [`BusDevice`] and is placed on a [`Bus`] (one for port I/O,
//! one for MMIO) by the VM builder. Devices own their register state; they never see
//! KVM or the vCPU.

pub mod bus;
pub mod i8042;
pub mod power;
pub mod serial;
pub mod virtio;

pub use bus::{Bus, BusDevice};
