//! Building a VM: KVM objects, guest memory, the devices on its buses and its vCPUs
//! (with their CPUID), from a [`VmConfig`]; then, for a fresh VM, loading its kernel
//! and boot structures. A restored or incoming VM is built the same way with its
//! memory from elsewhere ([`MemorySource`]) and its state loaded by [`super::persist`].

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_bindings::{kvm_pit_config, CpuId, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::IoEventAddress;
use nova_vmm_api::VmConfig;
use vmm_sys_util::eventfd::EventFd;

use super::error::{ioctl, same_count, setup, VmError};
use super::virtio_slot::{clone_evts, make_device, VirtioSlot};
use super::Vm;
use crate::boot::{self, EntryPoint};
use crate::console::{ConsoleHub, Tee};
use crate::devices::bus::BusRangeError;
use crate::devices::i8042::{I8042, I8042_PORT};
use crate::devices::power::{
    Ged, SleepControl, GED_ADDR, GED_GSI, GED_LEN, SLEEP_CONTROL_ADDR, SLEEP_REGS_LEN,
};
use crate::devices::serial::{SerialDevice, COM1_IRQ, COM1_PORT};
use crate::devices::virtio::{self, DiskLog, Interrupt, MmioTransport, MMIO_LEN};
use crate::devices::Bus;
use crate::kvm;
use crate::memory;
use crate::vcpu::state::VcpuState;
use crate::vcpu::{cpuid, regs, ExitSignal, RunControl, VcpuStats};

/// First virtio-mmio device; the next ones follow every [`VIRTIO_MMIO_STRIDE`].
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_STRIDE: u64 = 0x1000;
/// GSI of the first virtio device (the serial port has 4); a VM has at most
/// [`nova_vmm_api::config::MAX_VIRTIO_DEVICES`] (GSIs 5..=20 on the 24-pin IOAPIC).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Where KVM puts its TSS on Intel (three pages below the BIOS area's top).
const KVM_TSS_ADDR: usize = 0xfffb_d000;

/// Where guest RAM comes from.
pub enum MemorySource {
    /// A new, zeroed memfd.
    Fresh,
    /// An existing memfd (restored or received), already holding the guest's pages.
    Memfd(File),
    /// A snapshot's memory file mapped private: clones share its pages copy-on-write.
    SharedFile(File),
}

fn console_out(config: &VmConfig) -> Result<Box<dyn Write + Send>, VmError> {
    match &config.console {
        None => Ok(Box::new(std::io::stdout())),
        Some(path) => {
            let max = config
                .console_max_bytes
                .unwrap_or(crate::console_log::DEFAULT_MAX_BYTES);
            let log = crate::console_log::RotatingLog::open(path, max).map_err(|err| {
                VmError::Console {
                    path: path.display().to_string(),
                    err,
                }
            })?;
            Ok(Box::new(log))
        }
    }
}

/// The command line the guest gets: the user's (or a Linux default), plus one
/// `virtio_mmio.device=` per device when the VM has no ACPI tables (with them, the
/// DSDT names every device and the command line names none).
pub fn guest_cmdline(config: &VmConfig, virtio_devices: usize) -> String {
    let mut cmdline = config
        .cmdline
        .clone()
        .unwrap_or_else(|| "console=ttyS0 reboot=k panic=1 pci=off".to_string());
    if config.acpi {
        return cmdline;
    }
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
        // What this host supports, asked on a helper thread while this one creates the
        // VM, registers its memory and builds its devices: KVM_GET_SUPPORTED_CPUID costs
        // ~0.4 ms on a PVM host, and registering a 4 GiB guest ~1.5 ms (KVM allocates
        // its per-page metadata), so a fresh boot waits for the longer, not the sum.
        let supported = match saved {
            Some(_) => None,
            None => Some(cpuid::spawn_supported().map_err(setup("a thread"))?),
        };
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
        let hub = config
            .console_sock
            .as_ref()
            .map(|_| Arc::new(ConsoleHub::default()));
        let out = match &hub {
            Some(hub) => Box::new(Tee {
                out: console_out(&config)?,
                hub: hub.clone(),
            }),
            None => console_out(&config)?,
        };
        let serial = Arc::new(Mutex::new(SerialDevice::new(serial_irq, out)));
        let console_sock = match (&config.console_sock, hub) {
            (Some(path), Some(hub)) => Some(
                crate::console::serve(path, hub, serial.clone()).map_err(|err| {
                    VmError::Console {
                        path: path.display().to_string(),
                        err,
                    }
                })?,
            ),
            _ => None,
        };
        let bus_err = |e: BusRangeError| VmError::Device(e.to_string());
        pio.insert(serial.clone(), COM1_PORT, 8).map_err(bus_err)?;
        let reset = reset_evt.try_clone().map_err(setup("eventfd"))?;
        pio.insert(Arc::new(Mutex::new(I8042::new(reset))), I8042_PORT, 5)
            .map_err(bus_err)?;
        let off = poweroff_evt.try_clone().map_err(setup("eventfd"))?;
        mmio.insert(
            Arc::new(Mutex::new(SleepControl::new(off))),
            SLEEP_CONTROL_ADDR,
            SLEEP_REGS_LEN,
        )
        .map_err(bus_err)?;
        let ged_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(setup("eventfd"))?;
        vm_fd
            .register_irqfd(&ged_irq, GED_GSI)
            .map_err(ioctl("KVM_IRQFD (GED)"))?;
        let ged = Arc::new(Mutex::new(Ged::new(ged_irq)));
        mmio.insert(ged.clone(), GED_ADDR, GED_LEN)
            .map_err(bus_err)?;

        let disk_logs: Vec<Arc<DiskLog>> = config.disks.iter().map(|_| Arc::default()).collect();
        let mut virtio = Vec::new();
        for i in 0..config.disks.len() + config.nets.len() {
            let base = VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_STRIDE;
            let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(setup("eventfd"))?;
            vm_fd
                .register_irqfd(&irqfd, VIRTIO_IRQ_BASE + i as u32)
                .map_err(ioctl("KVM_IRQFD (virtio)"))?;
            let interrupt = Arc::new(Interrupt::new(irqfd));
            let device = make_device(&config, i, &disk_logs)?;
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
        let cpuid_from = match (saved, supported) {
            (Some(saved), _) => CpuidFrom::Saved(saved),
            (None, Some(helper)) => CpuidFrom::Host(
                helper
                    .join()
                    .map_err(|_| VmError::Device("the CPUID thread panicked".into()))?
                    .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?,
            ),
            (None, None) => CpuidFrom::Host(
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
            crate::vcpu::state::saveable_msrs(&kvm, &probe)
                .map_err(|e| VmError::Device(e.to_string()))?
        };

        let vm = Vm {
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
            ged,
            _console_sock: console_sock,
            pio,
            mmio,
            vcpu_stats,
            virtio,
            disk_logs,
            vcpus,
            cpuid: Mutex::new(cpuids),
            msr_indices,
            vcpus_started: Default::default(),
            vcpus_spawned: Default::default(),
            host_tsc_khz: tsc_khz,
            dirty_logging: Default::default(),
            diff_base: Mutex::new(None),
        };
        vm.open_backup_bitmaps();
        Ok(vm)
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
        // The MP table always (guests without ACPI read it); ACPI tables unless off.
        boot::mptable::write_mptable(mem, config.vcpus)?;
        let rsdp = if config.acpi {
            Some(boot::acpi::write(mem, &self.acpi_layout())?)
        } else {
            None
        };
        regs::write_tables(mem, kernel.entry).map_err(boot::BootError::GuestMemory)?;
        match kernel.entry {
            EntryPoint::Pvh(_) => boot::pvh::write_start_info(mem, mem_bytes, initrd, rsdp)?,
            EntryPoint::Linux64(_) => boot::linux::write_zero_page(
                mem,
                mem_bytes,
                kernel.setup_header,
                cmdline.len(),
                initrd,
                rsdp,
            )?,
        }
        let bsp = self.vcpus[0].lock().unwrap_or_else(|e| e.into_inner());
        regs::setup_boot_vcpu(&bsp, kernel.entry).map_err(ioctl("boot vCPU registers"))?;
        Ok(())
    }

    /// What the ACPI tables describe: the vCPUs and every device on the buses.
    pub fn acpi_layout(&self) -> boot::acpi::Layout {
        boot::acpi::Layout {
            vcpus: self.config.vcpus,
            virtio: (0..self.virtio.len())
                .map(|i| boot::acpi::MmioDevice {
                    base: VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_STRIDE,
                    len: MMIO_LEN,
                    gsi: VIRTIO_IRQ_BASE + i as u32,
                })
                .collect(),
            serial_port: COM1_PORT as u16,
            serial_gsi: COM1_IRQ,
            ged_addr: GED_ADDR,
            ged_gsi: GED_GSI,
            sleep_control_addr: SLEEP_CONTROL_ADDR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_names_devices_only_without_acpi() {
        let mut config = VmConfig::new("k".into());
        config.cmdline = Some("console=ttyS0".into());
        assert!(config.acpi, "ACPI is on by default");
        assert_eq!(guest_cmdline(&config, 2), "console=ttyS0");
        config.acpi = false;
        assert_eq!(
            guest_cmdline(&config, 2),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 \
             virtio_mmio.device=4K@0xd0001000:6"
        );
    }
}
