//! nova-controller: the cluster's front door. It owns what should run where: the
//! stored desired state (hosts, VMs, operations, tenants, users, tokens, audit log,
//! event log), the scheduler that places VMs, the reconcile loops that drive hostd
//! towards the desired state, migrations and drains, and the `/v1` HTTP API. It does
//! not own what runs on a host (hostd does; the controller speaks to it only through
//! `nova_hostd_api::HostdClient`) nor the VM itself (nova-vmm does).
//!
//! Layers, each using only those below it: `api` (HTTP: routes, auth, errors,
//! OpenAPI) over the domain (`reconcile`, `migration`, `vms`, `hosts`, `operations`,
//! `retention`, `placement`, `idempotency`, `upgrades`, `monitoring`, `alerting`,
//! `snapshots`, `templates`, `federation`, `backups`, `cloud`), which runs in a
//! `context::Context` over `events`, `slots`, `metrics`, `scheduler`, `store`, `auth` and `model`.

pub mod model;
pub mod scheduler;
pub mod store;

pub mod alerting;
pub mod api;
pub mod auth;
pub mod backups;
pub mod cloud;
pub mod config;
pub mod console;
pub mod context;
pub mod devca;
pub mod error;
pub mod events;
pub mod federation;
pub mod history;
pub mod hostca;
pub mod hosts;
pub mod idempotency;
pub mod images;
pub mod metrics;
pub mod migration;
pub mod monitoring;
pub mod operations;
pub mod placement;
pub mod power;
pub mod reconcile;
pub mod retention;
pub mod slots;
pub mod snapshots;
pub mod templates;
pub mod upgrades;
pub mod vms;
