//! nova-hostd: the per-host daemon. It owns what is host-local: one `nova-vmm` process
//! per VM and its directory under the data dir ([`vms`]), the image cache and VM disks
//! ([`images`]), the host's bridge, taps and VXLAN overlay ([`net`]), resource
//! accounting ([`admission`]), the host side of live migration ([`migration`]) and
//! backup jobs on backup stores ([`backup`], with `nova-backup`).
//! [`host`] wires them together; [`api`] serves them over HTTP (the wire types are
//! the contract crate `nova-hostd-api`'s; hostd reaches VMMs with `nova-vmm-api`'s
//! client, other hosts with `HostdClient`, the controller with [`controller`]);
//! [`certificate`] is its serving certificate when the controller issues it;
//! [`config`] is its flags and config file; [`jail`] confines each VMM; [`upgrade`] writes a new host image into
//! the inactive A/B slot; [`shutdown`] stops or migrates VMs away when hostd stops. It does not decide where VMs run: the
//! controller does.

pub mod admission;
pub mod api;
pub mod backup;
pub mod certificate;
pub mod config;
pub mod controller;
pub mod error;
pub mod host;
pub mod images;
pub mod jail;
pub mod metrics;
pub mod migration;
pub mod net;
pub mod nocloud;
pub mod shutdown;
pub mod upgrade;
pub mod vms;
