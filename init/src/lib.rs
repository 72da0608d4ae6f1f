//! nova-init: PID 1 of the NovaCron host image. It owns the machine from the kernel's
//! hand-over to power-off: mounts, modules, the network, the clock, the data
//! partition, and nova-hostd's life (start, restart with backoff, stop first at
//! shutdown), and the boot loader's A/B state (`bootenv`: boot a new slot once, make
//! it the default once its hostd registered, fall back otherwise), and where its
//! settings come from (command line, nova.conf, EC2 user-data via `imds`). It does not own VMs (hostd does) nor the cluster (the controller does).
//! The pure parts (configuration) are here for tests; the system calls are in modules
//! that only PID 1 runs.

pub mod bootenv;
pub mod config;
pub mod debug_console;
pub mod dhcp;
pub mod disk;
pub mod imds;
pub mod net;
pub mod power;
pub mod slots;
pub mod sntp;
pub mod supervise;
pub mod system;
