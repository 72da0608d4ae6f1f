//! Saving and restoring a VM's state: vCPUs, KVM's in-kernel devices and clock, the
//! serial port and the virtio transports (everything but guest memory), and moving the
//! guest's clocks on after a migration.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, KVM_CLOCK_REALTIME, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};

use super::error::{ioctl, same_count, VmError};
use super::virtio_slot::{clone_evts, make_device};
use super::Vm;
use crate::devices::virtio::{MmioTransport, TransportState};
use crate::state::{KvmState, VmState};
use crate::vcpu;
use crate::vcpu::tsc::ClockReference;

impl Vm {
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
            backup_bitmaps: self.disk_logs.iter().map(|l| l.backup.state()).collect(),
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
            backup_bitmaps: self.disk_logs.iter().map(|l| l.backup.state()).collect(),
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
            let device = make_device(&self.config, i, &self.disk_logs)?;
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
        // A snapshot's disks may not be the ones it was taken with: what changed since
        // the last backup is unknown. A migration adopts the carried bitmaps instead.
        for log in &self.disk_logs {
            log.backup
                .lose("restored from a snapshot: its disk's changes are not tracked");
        }
        Ok(())
    }

    /// Adopts the backup bitmaps a migration carried (after
    /// [`restore_state`](Self::restore_state)): the disks arrived with the same stream.
    pub fn adopt_backup_bitmaps(&self, state: &VmState) {
        for (i, log) in self.disk_logs.iter().enumerate() {
            match state.backup_bitmaps.get(i) {
                Some(b) => log.backup.restore(b),
                None => log.backup.lose("the migration carried no backup bitmap"),
            }
        }
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
}

#[cfg(test)]
mod tests {
    use nova_vmm_api::VmConfig;

    use crate::vm::build::MemorySource;
    use crate::vm::Vm;

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
