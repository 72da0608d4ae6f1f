//! The guest's time stamp counter across a live migration: it keeps counting real time
//! through the downtime, as it would had the VM stayed on one host, instead of
//! freezing where the source paused. This is the procedure KVM documents for moving a
//! TSC between hosts (Documentation/virt/kvm/devices/vcpu.rst, KVM_VCPU_TSC_OFFSET):
//! the source records each vCPU's TSC offset with a (host TSC, real time) pair; the
//! destination sets offsets that put every vCPU's TSC where the source's would be now.
//! Snapshots keep frozen clocks: a restore may come hours after the snapshot.

use kvm_bindings::{kvm_device_attr, KVM_VCPU_TSC_CTRL, KVM_VCPU_TSC_OFFSET};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref};
use vmm_sys_util::ioctl_iow_nr;

const KVMIO: u32 = 0xAE;
ioctl_iow_nr!(KVM_SET_DEVICE_ATTR, KVMIO, 0xe1, kvm_device_attr);
ioctl_iow_nr!(KVM_GET_DEVICE_ATTR, KVMIO, 0xe2, kvm_device_attr);

/// A host TSC reading and the real time it was read at.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockReference {
    /// CLOCK_REALTIME, in nanoseconds since the epoch.
    pub realtime_ns: u64,
    /// The host's TSC at that instant.
    pub host_tsc: u64,
}

impl ClockReference {
    /// Now, on this host.
    pub fn now() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into a live local.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        // SAFETY: rdtsc has no memory effects.
        let host_tsc = unsafe { core::arch::x86_64::_rdtsc() };
        ClockReference {
            realtime_ns: ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64,
            host_tsc,
        }
    }
}

fn attr(addr: *const u64) -> kvm_device_attr {
    kvm_device_attr {
        flags: 0,
        group: KVM_VCPU_TSC_CTRL,
        attr: KVM_VCPU_TSC_OFFSET as u64,
        addr: addr as u64,
    }
}

/// The vCPU's TSC offset (guest TSC = host TSC + offset); `None` where KVM lacks the
/// attribute (kernels before 5.16).
pub fn offset(fd: &VcpuFd) -> Option<u64> {
    let mut value = 0u64;
    let mut a = attr(std::ptr::addr_of_mut!(value));
    // SAFETY: KVM_GET_DEVICE_ATTR writes one u64 to `a.addr`, which points at `value`,
    // alive for the call.
    let r = unsafe { ioctl_with_mut_ref(fd, KVM_GET_DEVICE_ATTR(), &mut a) };
    (r == 0).then_some(value)
}

/// Sets the vCPU's TSC offset.
pub fn set_offset(fd: &VcpuFd, offset: u64) -> Result<(), kvm_ioctls::Error> {
    let a = attr(&offset);
    // SAFETY: KVM_SET_DEVICE_ATTR reads one u64 from `a.addr`, which points at
    // `offset`, alive for the call.
    let r = unsafe { ioctl_with_ref(fd, KVM_SET_DEVICE_ATTR(), &a) };
    if r != 0 {
        return Err(kvm_ioctls::Error::last());
    }
    Ok(())
}

/// The offset that makes a vCPU's TSC, which read `then.host_tsc + then_offset` at
/// `then`, read that plus the real time elapsed since, at `now` (on this host). Time
/// running backwards between hosts counts as none elapsed.
pub fn caught_up_offset(
    then: ClockReference,
    then_offset: u64,
    tsc_khz: u32,
    now: ClockReference,
) -> u64 {
    let elapsed_ns = now.realtime_ns.saturating_sub(then.realtime_ns);
    let elapsed_cycles = (elapsed_ns as u128 * tsc_khz as u128 / 1_000_000) as u64;
    then.host_tsc
        .wrapping_add(then_offset)
        .wrapping_add(elapsed_cycles)
        .wrapping_sub(now.host_tsc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_tsc_advances_by_the_real_time_between_hosts() {
        // Source: host TSC 1e9, offset -4e8, so the guest read 6e8 at t=10 s.
        let then = ClockReference {
            realtime_ns: 10_000_000_000,
            host_tsc: 1_000_000_000,
        };
        let then_offset = 0u64.wrapping_sub(400_000_000);
        // Destination 2 ms later, its own TSC at 5e9, guest TSC at 2 GHz.
        let now = ClockReference {
            realtime_ns: 10_002_000_000,
            host_tsc: 5_000_000_000,
        };
        let ofs = caught_up_offset(then, then_offset, 2_000_000, now);
        assert_eq!(now.host_tsc.wrapping_add(ofs), 600_000_000 + 4_000_000);
        // A destination clock behind the source's: no time elapsed, never backwards.
        let behind = ClockReference {
            realtime_ns: 9_000_000_000,
            ..now
        };
        let ofs = caught_up_offset(then, then_offset, 2_000_000, behind);
        assert_eq!(behind.host_tsc.wrapping_add(ofs), 600_000_000);
    }

    #[test]
    fn a_vcpu_tsc_offset_reads_back_as_set() {
        let kvm = kvm_ioctls::Kvm::new();
        if !crate::test_support::require_kvm(kvm.is_ok()) {
            return;
        }
        let kvm = kvm.unwrap();
        let vm = kvm.create_vm().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        let Some(before) = offset(&vcpu) else {
            return; // kernel without KVM_VCPU_TSC_OFFSET: migration keeps frozen clocks
        };
        set_offset(&vcpu, before.wrapping_add(12_345)).unwrap();
        let after = offset(&vcpu).unwrap();
        // PVM hosts accept the offset but run every guest on the host's own TSC.
        assert!(after == before.wrapping_add(12_345) || after == before);
    }
}
