//! nova-hostd: the per-host daemon. It owns what is host-local: one `nova-vmm` process
//! per VM and its directory under the data dir ([`vms`]), the image cache and VM disks
//! ([`images`]), the host's bridge, taps and VXLAN overlay ([`net`]), resource
//! accounting ([`admission`]), and the host side of live migration ([`migration`]).
//! It serves all of that over HTTP ([`api`]; the wire types are [`api::types`], which
//! the controller uses too). It does not decide where VMs run: the controller does.

pub mod admission;
pub mod api;
pub mod controller;
pub mod error;
pub mod host;
pub mod images;
pub mod metrics;
pub mod migration;
pub mod net;
pub mod vms;
