//! Building and running one VM: KVM objects, guest memory, devices, boot, vCPUs.
//!
//! [`Vm::create`] turns a [`VmConfig`] into a VM ready to run; [`Vm::start`] starts its
//! vCPUs; [`Vm::wait`] blocks until the guest powers off, resets, fails, or the API
//! stops it. The API thread holds the same `Arc<Vm>` to pause, resume and report.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_irqchip, kvm_pit_config, CpuId, KVM_CLOCK_REALTIME,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MAX_CPUID_ENTRIES,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{IoEventAddress, Kvm, VcpuFd, VmFd};

use vmm_sys_util::eventfd::EventFd;

use crate::boot::{self, EntryPoint};
use crate::config::{FieldError, VmConfig};
use crate::devices::i8042::{I8042, I8042_PORT};
use crate::devices::power::{SleepControl, SLEEP_CONTROL_ADDR};
use crate::devices::serial::{SerialDevice, COM1_IRQ, COM1_PORT};
use crate::devices::virtio::{
    self, Block, BlockConfig, Interrupt, MmioTransport, Net, TransportState, VirtioDevice, MMIO_LEN,
};
use crate::devices::{Bus, BusDevice};
use crate::kvm::{self, KvmError, KvmKind};
use crate::memory::{self, GuestMemory, MemoryError};
use crate::state::{KvmState, VmState};
use crate::vcpu::state::VcpuState;
use crate::vcpu::tsc::ClockReference;
use crate::vcpu::{self, cpuid, regs, ExitSignal, RunControl, VcpuContext, VcpuStats, VmExit};

/// First virtio-mmio device; the next ones follow every [`VIRTIO_MMIO_STRIDE`].
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_STRIDE: u64 = 0x1000;
/// GSI of the first virtio device (the serial port has 4).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Virtio devices one VM may have (GSIs 5..=20 on the 24-pin IOAPIC).
pub use nova_vmm_api::config::MAX_VIRTIO_DEVICES;
/// Where KVM puts its TSS on Intel (three pages below the BIOS area's top).
const KVM_TSS_ADDR: usize = 0xfffb_d000;

/// Why a VM could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Config(#[from] FieldError),
    #[error(transparent)]
    Kvm(#[from] KvmError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error("console {path}: {err}")]
    Console { path: String, err: std::io::Error },
    #[error("{what}: {err}")]
    Setup {
        what: &'static str,
        err: std::io::Error,
    },
    #[error("{what}: {err}")]
    KvmIoctl {
        what: &'static str,
        err: kvm_ioctls::Error,
    },
    #[error("{0}")]
    Device(String),
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |err| VmError::KvmIoctl { what, err }
}

fn setup(what: &'static str) -> impl FnOnce(std::io::Error) -> VmError {
    move |err| VmError::Setup { what, err }
}

pub use nova_vmm_api::vm::{Counters, RunState, VmInfo};

/// A virtio-mmio device's place on the bus. The transport is rebuilt on restore,
/// after the old device is dropped (a tap can be attached by one device at a time).
pub struct VirtioSlot {
    transport: Option<MmioTransport>,
    interrupt: Arc<Interrupt>,
    queue_evts: Vec<EventFd>,
}

impl BusDevice for VirtioSlot {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match &mut self.transport {
            Some(t) => t.read(offset, data),
            None => data.fill(0),
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(t) = &mut self.transport {
            t.write(offset, data);
        }
    }
}

fn clone_evts(evts: &[EventFd]) -> Result<Vec<EventFd>, VmError> {
    evts.iter()
        .map(|e| e.try_clone().map_err(setup("eventfd")))
        .collect()
}

/// The device behind virtio slot `index`: disks first, then NICs.
fn make_device(config: &VmConfig, index: usize) -> Result<Box<dyn VirtioDevice>, VmError> {
    if let Some(d) = config.disks.get(index) {
        let cfg = BlockConfig {
            path: d.path.clone(),
            read_only: d.read_only,
            id: format!("disk{index}"),
        };
        return Ok(Box::new(
            Block::new(cfg).map_err(|e| VmError::Device(e.to_string()))?,
        ));
    }
    let n = &config.nets[index - config.disks.len()];
    let mac = n.mac.as_deref().and_then(crate::config::parse_mac);
    let cfg = virtio::NetConfig {
        tap: n.tap.clone(),
        mac,
    };
    Ok(Box::new(
        Net::new(cfg).map_err(|e| VmError::Device(e.to_string()))?,
    ))
}

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
    pio: Bus,
    mmio: Bus,
    vcpu_stats: Vec<Arc<VcpuStats>>,
    virtio: Vec<Arc<Mutex<VirtioSlot>>>,
    vcpus: Vec<Arc<Mutex<VcpuFd>>>,
    /// Each vCPU's CPUID as this VMM last set it (see [`vcpu::state::save`]).
    cpuid: Mutex<Vec<Vec<kvm_cpuid_entry2>>>,
    msr_indices: Vec<u32>,
    vcpus_started: std::sync::atomic::AtomicBool,
    vcpus_spawned: std::sync::atomic::AtomicBool,
    /// This host's TSC rate, as KVM gives a new vCPU.
    host_tsc_khz: u32,
    /// The last snapshot taken, parent of the next diff snapshot.
    pub snapshot_base: crate::snapshot::SnapshotBase,
    dirty_logging: std::sync::atomic::AtomicBool,
    migration: Mutex<Option<Arc<crate::migration::Migration>>>,
}

/// Where guest RAM comes from.
pub enum MemorySource {
    /// A new, zeroed memfd.
    Fresh,
    /// An existing memfd (restored or received), already holding the guest's pages.
    Memfd(File),
    /// A snapshot's memory file mapped private: clones share its pages copy-on-write.
    SharedFile(File),
}

/// A saved state fits this VM only with as many of each thing as the VM has.
fn same_count(what: &str, saved: usize, here: usize) -> Result<(), VmError> {
    if saved == here {
        return Ok(());
    }
    Err(VmError::Device(format!(
        "saved state has {saved} {what}, this VM {here}"
    )))
}

fn console_out(config: &VmConfig) -> Result<Box<dyn Write + Send>, VmError> {
    match &config.console {
        None => Ok(Box::new(std::io::stdout())),
        Some(path) => {
            let f = File::options()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|err| VmError::Console {
                    path: path.display().to_string(),
                    err,
                })?;
            Ok(Box::new(f))
        }
    }
}

/// The command line the guest gets: the user's (or a Linux default) plus one
/// `virtio_mmio.device=` per device.
pub fn guest_cmdline(config: &VmConfig, virtio_devices: usize) -> String {
    let mut cmdline = config
        .cmdline
        .clone()
        .unwrap_or_else(|| "console=ttyS0 reboot=k panic=1 pci=off".to_string());
    for i in 0..virtio_devices {
        let addr = VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_STRIDE;
        let irq = VIRTIO_IRQ_BASE + i as u32;
        cmdline.push_str(&format!(" virtio_mmio.device=4K@{addr:#x}:{irq}"));
    }
    cmdline
}

impl Vm {
    /// Builds the VM described by `config` and loads its kernel, ready to [`start`](Self::start).
    pub fn create(config: VmConfig) -> Result<Vm, VmError> {
        let vm = Self::build(config, MemorySource::Fresh, None)?;
        vm.boot()?;
        Ok(vm)
    }

    /// Builds KVM objects, guest memory, devices and vCPUs (with CPUID), but loads
    /// nothing: [`boot`](Self::boot) a kernel or [`restore_state`](Self::restore_state).
    /// `saved`: the vCPU states the VM will be restored from, when known now. Their
    /// CPUID is set as saved (KVM checks it), instead of being derived from what this
    /// host supports: KVM_GET_SUPPORTED_CPUID costs ~0.5 ms on a PVM host, where each
    /// host CPUID instruction traps. And the boot-time registers are left to the restore.
    pub fn build(
        config: VmConfig,
        source: MemorySource,
        saved: Option<&[VcpuState]>,
    ) -> Result<Vm, VmError> {
        config.validate()?;
        if let Some(saved) = saved {
            same_count("vCPUs", saved.len(), config.vcpus as usize)?;
        }
        let kind = kvm::detect_kind();
        let kvm = kvm::open()?;
        let vm_fd = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        let mem_bytes = config.mem_mib << 20;
        let (memfd, mem) = match source {
            MemorySource::Fresh => {
                let memfd = memory::create_memfd(config.mem_mib)?;
                let mem = memory::map_memfd(&memfd, mem_bytes)?;
                (Some(memfd), mem)
            }
            MemorySource::Memfd(memfd) => {
                let mem = memory::map_memfd(&memfd, mem_bytes)?;
                (Some(memfd), mem)
            }
            MemorySource::SharedFile(file) => (None, memory::map_file_private(&file, mem_bytes)?),
        };
        // Memory before the irqchip: once the irqchip exists, every memslot change
        // waits out an SRCU grace period, which costs milliseconds on PVM hosts.
        crate::dirty::set_slots(&vm_fd, &mem, 0).map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
        vm_fd
            .set_tss_address(KVM_TSS_ADDR)
            .map_err(ioctl("KVM_SET_TSS_ADDR"))?;
        vm_fd
            .create_irq_chip()
            .map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm_fd.create_pit2(pit).map_err(ioctl("KVM_CREATE_PIT2"))?;

        let exit = Arc::new(ExitSignal::new().map_err(setup("eventfd"))?);
        let reset_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(setup("eventfd"))?;
        let poweroff_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(setup("eventfd"))?;
        let mut pio = Bus::default();
        let mut mmio = Bus::default();

        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(setup("eventfd"))?;
        vm_fd
            .register_irqfd(&serial_irq, COM1_IRQ)
            .map_err(ioctl("KVM_IRQFD (serial)"))?;
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            serial_irq,
            console_out(&config)?,
        )));
        let bus_err = |e: crate::devices::bus::BusRangeError| VmError::Device(e.to_string());
        pio.insert(serial.clone(), COM1_PORT, 8).map_err(bus_err)?;
        let reset = reset_evt.try_clone().map_err(setup("eventfd"))?;
        pio.insert(Arc::new(Mutex::new(I8042::new(reset))), I8042_PORT, 5)
            .map_err(bus_err)?;
        let off = poweroff_evt.try_clone().map_err(setup("eventfd"))?;
        mmio.insert(
            Arc::new(Mutex::new(SleepControl::new(off))),
            SLEEP_CONTROL_ADDR,
            1,
        )
        .map_err(bus_err)?;

        let mut virtio = Vec::new();
        for i in 0..config.disks.len() + config.nets.len() {
            let base = VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_STRIDE;
            let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(setup("eventfd"))?;
            vm_fd
                .register_irqfd(&irqfd, VIRTIO_IRQ_BASE + i as u32)
                .map_err(ioctl("KVM_IRQFD (virtio)"))?;
            let interrupt = Arc::new(Interrupt::new(irqfd));
            let device = make_device(&config, i)?;
            let mut queue_evts = Vec::new();
            for q in 0..device.queue_max_sizes().len() {
                let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(setup("eventfd"))?;
                let addr = IoEventAddress::Mmio(base + virtio::mmio::reg::QUEUE_NOTIFY);
                vm_fd
                    .register_ioevent(&evt, &addr, q as u32)
                    .map_err(ioctl("KVM_IOEVENTFD"))?;
                queue_evts.push(evt);
            }
            let transport = MmioTransport::new(
                device,
                mem.clone(),
                interrupt.clone(),
                clone_evts(&queue_evts)?,
            )
            .map_err(|e| VmError::Device(e.to_string()))?;
            let slot = Arc::new(Mutex::new(VirtioSlot {
                transport: Some(transport),
                interrupt,
                queue_evts,
            }));
            mmio.insert(slot.clone(), base, MMIO_LEN).map_err(bus_err)?;
            virtio.push(slot);
        }

        enum CpuidFrom<'a> {
            Saved(&'a [VcpuState]),
            Host(CpuId),
        }
        let cpuid_from = match saved {
            Some(saved) => CpuidFrom::Saved(saved),
            None => CpuidFrom::Host(
                kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
                    .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?,
            ),
        };
        let mut vcpus = Vec::with_capacity(config.vcpus as usize);
        let mut vcpu_stats = Vec::with_capacity(config.vcpus as usize);
        let mut tsc_khz = 0;
        let mut cpuids = Vec::with_capacity(config.vcpus as usize);
        for i in 0..config.vcpus {
            let fd = vm_fd
                .create_vcpu(i as u64)
                .map_err(ioctl("KVM_CREATE_VCPU"))?;
            if i == 0 {
                tsc_khz = fd.get_tsc_khz().unwrap_or(0);
            }
            let entries = match &cpuid_from {
                CpuidFrom::Saved(saved) => {
                    CpuId::from_entries(&saved[i as usize].cpuid).map_err(|_| {
                        VmError::Device(format!("saved state: vCPU {i}: too many CPUID entries"))
                    })?
                }
                CpuidFrom::Host(supported) => cpuid::for_vcpu(supported, i, config.vcpus, tsc_khz),
            };
            fd.set_cpuid2(&entries).map_err(ioctl("KVM_SET_CPUID2"))?;
            cpuids.push(entries.as_slice().to_vec());
            if saved.is_none() {
                regs::setup_common(&fd).map_err(ioctl("vCPU registers"))?;
            }
            vcpus.push(Arc::new(Mutex::new(fd)));
            vcpu_stats.push(Arc::new(VcpuStats::default()));
        }
        let msr_indices = {
            let probe = vcpus[0].lock().unwrap_or_else(|e| e.into_inner());
            vcpu::state::saveable_msrs(&kvm, &probe).map_err(|e| VmError::Device(e.to_string()))?
        };

        Ok(Vm {
            config,
            kind,
            mem,
            control: Arc::new(RunControl::default()),
            exit,
            started: Instant::now(),
            _kvm: kvm,
            vm_fd,
            memfd,
            serial,
            reset_evt,
            poweroff_evt,
            pio,
            mmio,
            vcpu_stats,
            virtio,
            vcpus,
            cpuid: Mutex::new(cpuids),
            msr_indices,
            vcpus_started: Default::default(),
            vcpus_spawned: Default::default(),
            host_tsc_khz: tsc_khz,
            snapshot_base: Default::default(),
            dirty_logging: Default::default(),
            migration: Mutex::new(None),
        })
    }

    /// Loads the kernel (and initrd), writes the boot structures and sets the boot
    /// vCPU's entry registers.
    fn boot(&self) -> Result<(), VmError> {
        let (config, mem) = (&self.config, &self.mem);
        let mem_bytes = config.mem_mib << 20;
        let kernel = boot::load_kernel(mem, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(path) => {
                let limit = boot::linux::initrd_limit(kernel.setup_header.as_ref());
                Some(boot::load_initrd(
                    mem,
                    path,
                    mem_bytes,
                    kernel.kernel_end,
                    limit,
                )?)
            }
            None => None,
        };
        let cmdline = guest_cmdline(config, self.virtio.len());
        boot::write_cmdline(mem, &cmdline)?;
        boot::mptable::write_mptable(mem, config.vcpus)?;
        regs::write_tables(mem, kernel.entry).map_err(boot::BootError::GuestMemory)?;
        match kernel.entry {
            EntryPoint::Pvh(_) => boot::pvh::write_start_info(mem, mem_bytes, initrd)?,
            EntryPoint::Linux64(_) => boot::linux::write_zero_page(
                mem,
                mem_bytes,
                kernel.setup_header,
                cmdline.len(),
                initrd,
            )?,
        }
        let bsp = self.vcpus[0].lock().unwrap_or_else(|e| e.into_inner());
        regs::setup_boot_vcpu(&bsp, kernel.entry).map_err(ioctl("boot vCPU registers"))?;
        Ok(())
    }

    /// Starts one thread per vCPU, each parked until [`start`](Self::start): a VM
    /// about to run (a migration's destination before the switch) has its threads
    /// ready, and starting it is a wake-up, not a thread creation.
    pub fn spawn_vcpus(&self) -> Result<(), VmError> {
        if self.vcpus_spawned.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.control.pause();
        self.spawn_vcpu_threads()
    }

    /// Runs the vCPUs, spawning their threads unless [`spawn_vcpus`](Self::spawn_vcpus)
    /// did. Later calls do nothing.
    pub fn start(&self) -> Result<(), VmError> {
        if self.vcpus_started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        if self.vcpus_spawned.swap(true, Ordering::SeqCst) {
            // Parked by spawn_vcpus; restored devices come back paused too.
            self.resume();
            return Ok(());
        }
        self.resume_devices();
        self.spawn_vcpu_threads()
    }

    fn spawn_vcpu_threads(&self) -> Result<(), VmError> {
        for (i, fd) in self.vcpus.iter().enumerate() {
            let ctx = VcpuContext {
                pio: self.pio.clone(),
                mmio: self.mmio.clone(),
                control: self.control.clone(),
                exit: self.exit.clone(),
                stats: self.vcpu_stats[i].clone(),
            };
            vcpu::spawn(i as u8, fd.clone(), ctx).map_err(setup("spawning a vCPU thread"))?;
        }
        Ok(())
    }

    /// Blocks until the VM must stop, stops the vCPUs, and says why.
    pub fn wait(&self) -> VmExit {
        let fds = [
            self.exit.evt.as_raw_fd(),
            self.reset_evt.as_raw_fd(),
            self.poweroff_evt.as_raw_fd(),
        ];
        let reason = loop {
            let mut pfds: Vec<libc::pollfd> = fds
                .iter()
                .map(|fd| libc::pollfd {
                    fd: *fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let period = crate::devices::serial::FLUSH_PERIOD.as_millis() as libc::c_int;
            // SAFETY: pfds is a valid array of pollfd of the given length.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, period) };
            if n <= 0 {
                // Quiet for a period: a line the guest left unended goes out now.
                self.flush_console();
                continue;
            }
            if pfds[1].revents != 0 {
                break VmExit::Reset;
            }
            if pfds[2].revents != 0 {
                break VmExit::Poweroff;
            }
            if pfds[0].revents != 0 {
                let _ = self.exit.evt.read();
                if let Some(r) = self.exit.reason() {
                    break r;
                }
            }
        };
        self.control.stop();
        self.flush_console();
        reason
    }

    /// Writes out console bytes the guest has not ended a line with.
    fn flush_console(&self) {
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush();
    }

    /// Asks the VM to stop (the API's shutdown).
    pub fn shutdown(&self) {
        self.exit.send(VmExit::Shutdown);
    }

    /// State, configuration and counters.
    pub fn info(&self) -> VmInfo {
        let sum = |f: fn(&VcpuStats) -> u64| self.vcpu_stats.iter().map(|s| f(s)).sum();
        VmInfo {
            state: if self.control.is_paused() {
                RunState::Paused
            } else {
                RunState::Running
            },
            kvm: self.kind,
            pid: std::process::id(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            config: self.config.clone(),
            counters: Counters {
                vcpu_exits: sum(|s| s.exits.load(Ordering::Relaxed)),
                io_exits: sum(|s| s.io_exits.load(Ordering::Relaxed)),
                mmio_exits: sum(|s| s.mmio_exits.load(Ordering::Relaxed)),
                console_bytes: self
                    .serial
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .bytes_out(),
                devices: self
                    .virtio
                    .iter()
                    .filter_map(|s| {
                        s.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .transport
                            .as_ref()
                            .map(|t| t.device().counters())
                    })
                    .collect(),
            },
        }
    }

    /// Pauses the vCPUs and drains the devices: afterwards nothing writes guest memory.
    pub fn pause(&self) {
        self.control.pause();
        // What the guest wrote before the pause is out before anything that follows
        // it: a snapshot, or the destination's console after a migration.
        self.flush_console();
        for slot in &self.virtio {
            if let Some(t) = &mut slot.lock().unwrap_or_else(|e| e.into_inner()).transport {
                t.pause();
            }
        }
    }

    /// Lets the vCPUs and devices run again.
    pub fn resume(&self) {
        self.resume_devices();
        self.control.resume();
    }

    fn resume_devices(&self) {
        for (i, slot) in self.virtio.iter().enumerate() {
            if let Some(t) = &mut slot.lock().unwrap_or_else(|e| e.into_inner()).transport {
                if let Err(e) = t.resume() {
                    tracing::error!("virtio device {i} cannot resume: {e}");
                }
            }
        }
    }

    /// A state of this VM's shape (its vCPUs, CPUID entries, MSRs and devices) with
    /// nothing saved in it, for warming the encoder before a pause: its first pass
    /// through code and fresh heap pages cost ~30 us of page faults, which a
    /// stop-and-copy would otherwise pay while the guest waits.
    pub fn state_shape(&self) -> VmState {
        let cpuid = self.cpuid.lock().unwrap_or_else(|e| e.into_inner());
        let vcpus = cpuid
            .iter()
            .map(|entries| vcpu::state::VcpuState {
                cpuid: entries.clone(),
                msrs: vec![Default::default(); self.msr_indices.len()],
                ..Default::default()
            })
            .collect();
        VmState {
            config: self.config.clone(),
            vcpus,
            kvm: KvmState::default(),
            serial: self
                .serial
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .state()
                .into(),
            virtio: vec![serde_json::Value::Null; self.virtio.len()],
        }
    }

    /// Saves everything but memory. The VM must be paused (or not yet started).
    pub fn save_state(&self) -> Result<VmState, VmError> {
        let mut vcpus = Vec::with_capacity(self.vcpus.len());
        let cpuid = self.cpuid.lock().unwrap_or_else(|e| e.into_inner());
        for (fd, cpuid) in self.vcpus.iter().zip(cpuid.iter()) {
            let fd = fd.lock().unwrap_or_else(|e| e.into_inner());
            vcpus.push(
                vcpu::state::save(&fd, &self.msr_indices, cpuid)
                    .map_err(|e| VmError::Device(e.to_string()))?,
            );
        }
        drop(cpuid);
        let chip = |id| -> Result<kvm_irqchip, VmError> {
            let mut c = kvm_irqchip {
                chip_id: id,
                ..Default::default()
            };
            self.vm_fd
                .get_irqchip(&mut c)
                .map_err(ioctl("KVM_GET_IRQCHIP"))?;
            Ok(c)
        };
        let kvm = KvmState {
            pic_master: chip(KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: chip(KVM_IRQCHIP_IOAPIC)?,
            pit: self.vm_fd.get_pit2().map_err(ioctl("KVM_GET_PIT2"))?,
            clock: self.vm_fd.get_clock().map_err(ioctl("KVM_GET_CLOCK"))?,
            clock_ref: ClockReference::now(),
        };
        let serial = self
            .serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state()
            .into();
        let mut virtio = Vec::with_capacity(self.virtio.len());
        for (i, slot) in self.virtio.iter().enumerate() {
            let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            let Some(t) = &slot.transport else {
                return Err(VmError::Device(format!("virtio device {i} is missing")));
            };
            let state = t
                .state()
                .map_err(|e| VmError::Device(format!("virtio device {i}: {e}")))?;
            virtio.push(serde_json::to_value(state).map_err(|e| VmError::Device(e.to_string()))?);
        }
        Ok(VmState {
            config: self.config.clone(),
            vcpus,
            kvm,
            serial,
            virtio,
        })
    }

    /// Loads a saved state into a VM built (not booted) from the same configuration.
    pub fn restore_state(&self, state: &VmState) -> Result<(), VmError> {
        same_count("vCPUs", state.vcpus.len(), self.vcpus.len())?;
        for chip in [
            &state.kvm.pic_master,
            &state.kvm.pic_slave,
            &state.kvm.ioapic,
        ] {
            self.vm_fd
                .set_irqchip(chip)
                .map_err(ioctl("KVM_SET_IRQCHIP"))?;
        }
        self.vm_fd
            .set_pit2(&state.kvm.pit)
            .map_err(ioctl("KVM_SET_PIT2"))?;
        let mut clock = state.kvm.clock;
        // Only the clock value is restorable; KVM rejects flags it set itself.
        clock.flags = 0;
        self.vm_fd
            .set_clock(&clock)
            .map_err(ioctl("KVM_SET_CLOCK"))?;
        let mut cpuid = self.cpuid.lock().unwrap_or_else(|e| e.into_inner());
        for ((fd, vs), cpuid) in self.vcpus.iter().zip(&state.vcpus).zip(cpuid.iter_mut()) {
            let fd = fd.lock().unwrap_or_else(|e| e.into_inner());
            vcpu::state::restore(&fd, vs, cpuid).map_err(|e| VmError::Device(e.to_string()))?;
            cpuid.clone_from(&vs.cpuid);
        }
        drop(cpuid);
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .restore(&(&state.serial).into())
            .map_err(|e| VmError::Device(format!("serial: {e}")))?;
        same_count("virtio devices", state.virtio.len(), self.virtio.len())?;
        for (i, (slot, saved)) in self.virtio.iter().zip(&state.virtio).enumerate() {
            let saved: TransportState = serde_json::from_value(saved.clone())
                .map_err(|e| VmError::Device(format!("virtio device {i} state: {e}")))?;
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.transport = None; // release the backend (tap) before reopening it
            let device = make_device(&self.config, i)?;
            let t = MmioTransport::restore(
                &saved,
                device,
                self.mem.clone(),
                slot.interrupt.clone(),
                clone_evts(&slot.queue_evts)?,
            )
            .map_err(|e| VmError::Device(format!("virtio device {i}: {e}")))?;
            slot.transport = Some(t);
        }
        Ok(())
    }

    /// Moves the guest's clocks on by the real time since `state` was saved, for a VM
    /// that arrived by live migration (after [`restore_state`](Self::restore_state)):
    /// kvmclock through KVM_CLOCK_REALTIME, each vCPU's TSC through its offset, so
    /// the guest's time stays right without a jump for NTP to correct. The TSC stays
    /// as saved where KVM cannot set offsets or this host's TSC runs at another rate.
    pub fn catch_up_clocks(&self, state: &VmState) -> Result<(), VmError> {
        let saved = state.kvm.clock_ref;
        let clock = kvm_clock_data {
            clock: state.kvm.clock.clock,
            flags: KVM_CLOCK_REALTIME,
            realtime: saved.realtime_ns,
            ..Default::default()
        };
        self.vm_fd
            .set_clock(&clock)
            .map_err(ioctl("KVM_SET_CLOCK (realtime)"))?;
        let now = ClockReference::now();
        for (fd, vs) in self.vcpus.iter().zip(&state.vcpus) {
            let Some(then_offset) = vs.tsc_offset else {
                continue;
            };
            if vs.tsc_khz == 0 || vs.tsc_khz != self.host_tsc_khz {
                tracing::info!(
                    "guest TSC at {} kHz, host at {} kHz: the TSC resumes where it paused",
                    vs.tsc_khz,
                    self.host_tsc_khz
                );
                continue;
            }
            let offset = vcpu::tsc::caught_up_offset(saved, then_offset, vs.tsc_khz, now);
            let fd = fd.lock().unwrap_or_else(|e| e.into_inner());
            vcpu::tsc::set_offset(&fd, offset).map_err(ioctl("KVM_VCPU_TSC_OFFSET"))?;
        }
        Ok(())
    }

    /// Pages written since the last call (all of RAM on the first call, which also
    /// turns dirty logging on).
    pub fn collect_dirty(&self) -> Result<crate::dirty::DirtyBitmap, VmError> {
        if !self.dirty_logging.swap(true, Ordering::SeqCst) {
            crate::dirty::start(&self.vm_fd, &self.mem).map_err(ioctl("enabling dirty logging"))?;
            return Ok(crate::dirty::DirtyBitmap::full(crate::dirty::ram_pages(
                &self.mem,
            )));
        }
        crate::dirty::collect(&self.vm_fd, &self.mem).map_err(ioctl("KVM_GET_DIRTY_LOG"))
    }

    /// Restarts dirty logging: the next [`collect_dirty`](Self::collect_dirty) reports all of RAM.
    pub fn reset_dirty(&self) {
        if self.dirty_logging.swap(false, Ordering::SeqCst) {
            let _ = crate::dirty::stop(&self.vm_fd, &self.mem);
        }
    }

    /// Copies RAM page `page` into `buf` (one page).
    pub fn read_page(&self, page: usize, buf: &mut [u8]) -> std::io::Result<()> {
        use vm_memory::Bytes;
        let gpa = crate::dirty::page_gpa(&self.mem, page).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "page beyond RAM")
        })?;
        self.mem.read_slice(buf, gpa).map_err(std::io::Error::other)
    }

    /// The latest migration, running or finished.
    pub fn migration(&self) -> Option<Arc<crate::migration::Migration>> {
        self.migration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The migration slot, for starting one.
    pub fn migration_slot(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<Arc<crate::migration::Migration>>> {
        self.migration.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The memfd behind guest RAM, when there is one.
    pub fn memfd(&self) -> Option<&File> {
        self.memfd.as_ref()
    }

    /// The KVM VM, for device setup that needs irqfds and ioeventfds.
    pub fn vm_fd(&self) -> &VmFd {
        &self.vm_fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_of_the_vms_shape_encodes_to_the_size_of_a_saved_one() {
        if !crate::test_support::require_kvm(std::path::Path::new("/dev/kvm").exists()) {
            return;
        }
        let guest = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../guest-images/out/testguest.elf"
        );
        let mut config = VmConfig::new(guest.into());
        config.mem_mib = 64;
        config.vcpus = 2;
        let vm = Vm::build(config, MemorySource::Fresh, None).unwrap();
        // Same shape, same bytes to encode: the warm-up touches what the pause will.
        let shape = crate::state::encode(&vm.state_shape());
        let saved = crate::state::encode(&vm.save_state().unwrap());
        assert_eq!(shape.len(), saved.len());
    }
}
