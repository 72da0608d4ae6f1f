//! A vCPU's complete architectural state as KVM holds it, for snapshots and
//! migration: saved from a paused vCPU, restored into a fresh one.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs,
};
use kvm_ioctls::{Kvm, VcpuFd};

/// IA32_ARCH_CAPABILITIES: listed by KVM but refused on PVM hosts.
const MSR_ARCH_CAPABILITIES: u32 = 0x10a;

/// Everything KVM keeps for one vCPU; a saved state carries it as KVM's own bytes.
#[derive(Default)]
pub struct VcpuState {
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub msrs: Vec<kvm_msr_entry>,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    /// x87, SSE and AVX state (the legacy region is what KVM_GET_FPU would give).
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debugregs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub mp_state: kvm_mp_state,
    pub events: kvm_vcpu_events,
    pub tsc_khz: u32,
    /// Guest TSC = host TSC + this offset (where KVM tells), for a migration to carry
    /// the TSC on in real time (see [`super::tsc`]).
    pub tsc_offset: Option<u64>,
}

/// A vCPU state operation that failed, with the ioctl that failed.
#[derive(Debug, thiserror::Error)]
#[error("vCPU state: {what}: {err}")]
pub struct StateError {
    pub what: &'static str,
    pub err: kvm_ioctls::Error,
}

fn e(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> StateError {
    move |err| StateError { what, err }
}

/// The MSRs this host lets us save and restore: KVM's list minus those it refuses.
pub fn saveable_msrs(kvm: &Kvm, probe: &VcpuFd) -> Result<Vec<u32>, StateError> {
    let list = kvm
        .get_msr_index_list()
        .map_err(e("KVM_GET_MSR_INDEX_LIST"))?;
    let mut indices: Vec<u32> = list
        .as_slice()
        .iter()
        .copied()
        .filter(|i| *i != MSR_ARCH_CAPABILITIES)
        .collect();
    // KVM_GET_MSRS stops at the first MSR it cannot read; drop those until all read.
    loop {
        let entries: Vec<_> = indices
            .iter()
            .map(|i| kvm_msr_entry {
                index: *i,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).expect("MSR list within KVM's limit");
        let n = probe.get_msrs(&mut msrs).map_err(e("KVM_GET_MSRS"))?;
        if n >= indices.len() {
            return Ok(indices);
        }
        indices.remove(n);
    }
}

/// Saves a paused vCPU's state.
/// `cpuid` is what the VMM last set on this vCPU: KVM_GET_CPUID2 would cost an ioctl
/// in a migration's downtime, and adds bits KVM derives from registers the state
/// carries anyway (OSXSAVE from CR4, APIC from the APIC base).
pub fn save(
    fd: &VcpuFd,
    msr_indices: &[u32],
    cpuid: &[kvm_cpuid_entry2],
) -> Result<VcpuState, StateError> {
    // mp_state first: KVM_GET_MP_STATE flushes pending APIC events into the state.
    let mp_state = fd.get_mp_state().map_err(e("KVM_GET_MP_STATE"))?;
    let regs = fd.get_regs().map_err(e("KVM_GET_REGS"))?;
    let sregs = fd.get_sregs().map_err(e("KVM_GET_SREGS"))?;
    let xsave = fd.get_xsave().map_err(e("KVM_GET_XSAVE"))?;
    let xcrs = fd.get_xcrs().map_err(e("KVM_GET_XCRS"))?;
    let debugregs = fd.get_debug_regs().map_err(e("KVM_GET_DEBUGREGS"))?;
    let lapic = fd.get_lapic().map_err(e("KVM_GET_LAPIC"))?;
    let events = fd.get_vcpu_events().map_err(e("KVM_GET_VCPU_EVENTS"))?;
    let entries: Vec<_> = msr_indices
        .iter()
        .map(|i| kvm_msr_entry {
            index: *i,
            ..Default::default()
        })
        .collect();
    let mut msrs = Msrs::from_entries(&entries).expect("MSR list within KVM's limit");
    let n = fd.get_msrs(&mut msrs).map_err(e("KVM_GET_MSRS"))?;
    let tsc_khz = fd.get_tsc_khz().unwrap_or(0);
    Ok(VcpuState {
        cpuid: cpuid.to_vec(),
        msrs: msrs.as_slice()[..n].to_vec(),
        regs,
        sregs,
        xsave,
        xcrs,
        debugregs,
        lapic,
        mp_state,
        events,
        tsc_khz,
        tsc_offset: super::tsc::offset(fd),
    })
}

/// Restores `state` into a fresh vCPU whose CPUID the VMM set to `cpuid`.
pub fn restore(
    fd: &VcpuFd,
    state: &VcpuState,
    cpuid: &[kvm_cpuid_entry2],
) -> Result<(), StateError> {
    // Skipped when unchanged (a VM rebuilt from the same configuration on the same
    // kind of host): KVM_SET_CPUID2 resets the vCPU's MMU context, the slowest ioctl here.
    if state.cpuid != cpuid {
        let entries = CpuId::from_entries(&state.cpuid).map_err(|_| StateError {
            what: "CPUID entries",
            err: kvm_ioctls::Error::new(libc::EINVAL),
        })?;
        fd.set_cpuid2(&entries).map_err(e("KVM_SET_CPUID2"))?;
    }
    if state.tsc_khz != 0 && fd.get_tsc_khz().ok() != Some(state.tsc_khz) {
        // Different host frequency: scale the guest's TSC where KVM can.
        fd.set_tsc_khz(state.tsc_khz)
            .map_err(e("KVM_SET_TSC_KHZ"))?;
    }
    fd.set_sregs(&state.sregs).map_err(e("KVM_SET_SREGS"))?;
    fd.set_regs(&state.regs).map_err(e("KVM_SET_REGS"))?;
    // SAFETY: the xsave area was produced by KVM_GET_XSAVE of the same struct size.
    unsafe { fd.set_xsave(&state.xsave) }.map_err(e("KVM_SET_XSAVE"))?;
    fd.set_xcrs(&state.xcrs).map_err(e("KVM_SET_XCRS"))?;
    fd.set_debug_regs(&state.debugregs)
        .map_err(e("KVM_SET_DEBUGREGS"))?;
    fd.set_lapic(&state.lapic).map_err(e("KVM_SET_LAPIC"))?;
    let msrs = Msrs::from_entries(&state.msrs).map_err(|_| StateError {
        what: "MSR entries",
        err: kvm_ioctls::Error::new(libc::EINVAL),
    })?;
    let n = fd.set_msrs(&msrs).map_err(e("KVM_SET_MSRS"))?;
    if n != state.msrs.len() {
        return Err(StateError {
            what: "KVM_SET_MSRS (partial)",
            err: kvm_ioctls::Error::new(libc::EINVAL),
        });
    }
    fd.set_mp_state(state.mp_state)
        .map_err(e("KVM_SET_MP_STATE"))?;
    fd.set_vcpu_events(&state.events)
        .map_err(e("KVM_SET_VCPU_EVENTS"))?;
    Ok(())
}
