//! One VM: its KVM objects, guest memory, devices and vCPUs, in the [`Vm`] every part
//! of the VMM shares (the main thread waits on it, the API thread pauses and reports
//! it, snapshots and migrations save and copy it). The VM knows nothing of who drives
//! it: snapshots, migrations and the API stand on it, never the reverse.
//!
//! Each part of its life has a module: [`build`] turns a configuration into a VM (and
//! boots a kernel into it), [`run`] starts, pauses, stops and reports it, [`persist`]
//! saves and restores its state, [`pages`] reads its memory and tracks what the guest
//! wrote, for snapshots and migrations. [`virtio_slot`] is a virtio device's place on
//! its bus; [`error`] is why any of it failed.

pub mod backup;
pub mod build;
pub mod error;
pub mod pages;
pub mod persist;
pub mod run;
pub mod virtio_slot;

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_bindings::kvm_cpuid_entry2;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use nova_vmm_api::{KvmKind, VmConfig};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::power::Ged;
use crate::devices::serial::SerialDevice;
use crate::devices::virtio::DiskLog;
use crate::devices::Bus;
use crate::memory::GuestMemory;
use crate::vcpu::{ExitSignal, RunControl, VcpuStats};
use virtio_slot::VirtioSlot;

pub use error::VmError;

/// One VM.
pub struct Vm {
    pub config: VmConfig,
    pub kind: KvmKind,
    pub mem: GuestMemory,
    pub control: Arc<RunControl>,
    pub exit: Arc<ExitSignal>,
    pub started: Instant,
    _kvm: Kvm,
    vm_fd: VmFd,
    /// The memfd behind guest RAM; None when RAM maps a snapshot file copy-on-write.
    memfd: Option<File>,
    serial: Arc<Mutex<SerialDevice>>,
    reset_evt: EventFd,
    poweroff_evt: EventFd,
    /// The generic event device: the power button a graceful stop presses.
    ged: Arc<Mutex<Ged>>,
    /// The console socket, when configured; removed with the VM.
    _console_sock: Option<crate::console::ConsoleSocket>,
    pio: Bus,
    mmio: Bus,
    vcpu_stats: Vec<Arc<VcpuStats>>,
    virtio: Vec<Arc<Mutex<VirtioSlot>>>,
    /// Each disk's written blocks and open file, for live migration (see [`pages`]).
    disk_logs: Vec<Arc<DiskLog>>,
    vcpus: Vec<Arc<Mutex<VcpuFd>>>,
    /// Each vCPU's CPUID as this VMM last set it (see [`crate::vcpu::state::save`]).
    cpuid: Mutex<Vec<Vec<kvm_cpuid_entry2>>>,
    msr_indices: Vec<u32>,
    vcpus_started: AtomicBool,
    vcpus_spawned: AtomicBool,
    /// This host's TSC rate, as KVM gives a new vCPU.
    host_tsc_khz: u32,
    /// Whether KVM logs dirty pages (see [`pages`]).
    dirty_logging: AtomicBool,
    /// The last snapshot written since dirty logging began: the parent of the next
    /// diff snapshot (see [`pages`]).
    diff_base: Mutex<Option<PathBuf>>,
}
