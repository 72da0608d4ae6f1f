//! nova-vmm: one process, one VM, on /dev/kvm through the rust-vmm crates.
//!
//! Owns everything about one VM: KVM setup, guest memory, boot, vCPUs, devices, and
//! the VM's unix-socket API. It does not know about hosts or clusters (that is
//! `nova-hostd` and `nova-controller`).

pub mod api;
pub mod boot;
pub mod console;
pub mod console_log;
pub mod devices;
pub mod dirty;
pub mod kvm;
pub mod memory;
pub mod migration;
pub mod seccomp;
pub mod snapshot;
pub mod state;
pub mod uffd;
pub mod vcpu;
pub mod vm;

#[cfg(test)]
mod test_support;
