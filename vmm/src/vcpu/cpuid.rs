//! The CPUID a vCPU sees: what KVM supports, minus what this host refuses, plus
//! topology and the hypervisor leaves that publish the TSC frequency.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 1;
const LEAF_EXT_FEATURES: u32 = 7;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_HYPERVISOR: u32 = 0x4000_0000;
/// VMware's timing leaf, also used by Cloud Hypervisor: EAX = TSC kHz, EBX = LAPIC bus kHz.
pub const LEAF_TIMING: u32 = 0x4000_0010;

const ECX_HYPERVISOR: u32 = 1 << 31;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
/// IA32_ARCH_CAPABILITIES enumeration: writing that MSR is refused on PVM hosts.
const EDX7_ARCH_CAPABILITIES: u32 = 1 << 29;
/// Bus frequency we tell the guest its LAPIC timer runs at (KVM emulates 1 GHz).
const LAPIC_BUS_KHZ: u32 = 1_000_000;

/// Asks KVM what this host supports (`KVM_GET_SUPPORTED_CPUID`) on a short-lived
/// thread of its own, so the caller can build the VM meanwhile; join it for the answer.
/// The thread runs under the filters of the thread that started it (main's, the only
/// one that builds VMs) and makes one open and one ioctl.
pub fn spawn_supported(
) -> std::io::Result<std::thread::JoinHandle<Result<CpuId, kvm_ioctls::Error>>> {
    std::thread::Builder::new()
        .name("cpuid".into())
        .stack_size(256 << 10)
        .spawn(|| {
            crate::seccomp::inherit(crate::seccomp::ThreadKind::Main);
            kvm_ioctls::Kvm::new()?.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        })
}

/// Adjusts KVM's supported CPUID for vCPU `index` of `count`, on a TSC of `tsc_khz`.
pub fn for_vcpu(supported: &CpuId, index: u8, count: u8, tsc_khz: u32) -> CpuId {
    let mut entries: Vec<kvm_cpuid_entry2> = supported.as_slice().to_vec();
    for e in entries.iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | ((index as u32) << 24) | ((count as u32) << 16);
                e.ecx |= ECX_HYPERVISOR;
                e.ecx &= !ECX_TSC_DEADLINE;
                // HTT: more than one logical processor in the package.
                if count > 1 {
                    e.edx |= 1 << 28;
                }
            }
            LEAF_EXT_FEATURES if e.index == 0 => e.edx &= !EDX7_ARCH_CAPABILITIES,
            LEAF_TOPOLOGY => {
                e.edx = index as u32;
                // Level 0: SMT, one thread per core; level 1: cores in the package.
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 0x100;
                    }
                    1 => {
                        e.eax = 32 - (count as u32).saturating_sub(1).leading_zeros();
                        e.ebx = count as u32;
                        e.ecx = 0x201;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            LEAF_HYPERVISOR => e.eax = e.eax.max(LEAF_TIMING),
            _ => {}
        }
    }
    entries.retain(|e| e.function != LEAF_TIMING);
    if tsc_khz != 0 {
        entries.push(kvm_cpuid_entry2 {
            function: LEAF_TIMING,
            eax: tsc_khz,
            ebx: LAPIC_BUS_KHZ,
            ..Default::default()
        });
    }
    CpuId::from_entries(&entries).expect("CPUID entries within KVM_MAX_CPUID_ENTRIES")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supported() -> CpuId {
        CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 0x4000_0000,
                eax: 0x4000_0001,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xff00_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 7,
                edx: u32::MAX,
                ..Default::default()
            },
        ])
        .unwrap()
    }

    fn leaf(c: &CpuId, f: u32) -> kvm_cpuid_entry2 {
        *c.as_slice().iter().find(|e| e.function == f).unwrap()
    }

    #[test]
    fn each_vcpu_sees_its_own_apic_id_and_the_count() {
        let c = for_vcpu(&supported(), 3, 4, 2_000_000);
        assert_eq!(leaf(&c, 1).ebx >> 24, 3);
        assert_eq!((leaf(&c, 1).ebx >> 16) & 0xff, 4);
        assert_ne!(leaf(&c, 1).ecx & ECX_HYPERVISOR, 0);
    }

    #[test]
    fn tsc_frequency_is_published_in_the_timing_leaf() {
        let c = for_vcpu(&supported(), 0, 1, 2_100_000);
        assert_eq!(leaf(&c, LEAF_TIMING).eax, 2_100_000);
        assert!(leaf(&c, LEAF_HYPERVISOR).eax >= LEAF_TIMING);
    }

    #[test]
    fn arch_capabilities_are_hidden_because_the_host_refuses_the_msr() {
        let c = for_vcpu(&supported(), 0, 1, 0);
        assert_eq!(leaf(&c, 7).edx & EDX7_ARCH_CAPABILITIES, 0);
    }
}
