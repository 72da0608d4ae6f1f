//! The VMs of this host and their `nova-vmm` processes, one file per part of a VM's
//! life: [`table`] (the VMs by id, admission, MACs), [`record`] (one VM, its
//! `vm.json`), [`create`], [`spawn`] (one VMM process), [`supervise`] (launch, exit,
//! restart by policy), [`exit`] (what an exit means), [`stop`] (stop, pause, delete),
//! [`snapshot`] (snapshot, restore, console), [`live`] (the VMM's counters),
//! [`reattach`] (after a hostd restart), [`process`] (detached processes, /proc),
//! [`tail`] (the end of a log).
//!
//! Each VM lives in `DATA/vms/<id>/`: `vm.json` (hostd's record: spec, state, disks,
//! NICs, last exit, migration), `vmm.json` (the `nova-vmm --config`), `vmm.pid`,
//! `run/api.sock` (`run/` is the VMM's to write), `root/` (its jail's mount point), `console.log` (written by the VMM), `vmm.log` (the VMM's stderr),
//! `disks/`, `snapshots/`. Migration uses these parts; nothing here knows about it
//! beyond leaving a migrating VM's state alone.

pub mod create;
pub mod exit;
pub mod live;
pub mod process;
pub mod reattach;
pub mod record;
pub mod snapshot;
pub mod spawn;
pub mod stop;
pub mod stored;
pub mod supervise;
pub mod table;
pub mod tail;
