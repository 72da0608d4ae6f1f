//! nova-hostd: the per-host daemon. It owns what is host-local: one `nova-vmm` process
//! per VM and its directory under the data dir, the image cache and VM disks, the
//! host's bridge, taps and VXLAN overlay, resource accounting, and the host side of
//! live migration. It does not decide where VMs run: the controller does.

pub mod api;
