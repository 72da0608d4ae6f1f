//! nova-controller: the cluster's front door. It owns what should run where: the
//! stored desired state (hosts, VMs, operations, tenants, users, tokens, audit log),
//! the scheduler that places VMs, the reconcile loops that drive hostd towards the
//! desired state, migrations and drains, and the `/v1` HTTP API. It does not own what
//! runs on a host (hostd does) nor the VM itself (nova-vmm does).

pub mod model;
pub mod scheduler;
pub mod store;

pub mod api;
pub mod auth;
pub mod events;
pub mod hostd;
pub mod migration;
pub mod reconcile;
#[cfg(test)]
mod testing;
