//! Admission control: whether a VM fits beside what the host already runs. Pure
//! arithmetic over [`Resources`] (and the data dir's filesystem size); the caller
//! holds the VM table's lock so two requests cannot both take the last slot.

use std::path::Path;

use nova_hostd_api::Resources;

/// What the host may hand out: physical resources times the overcommit ratios.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub cpu_overcommit: f64,
    pub mem_overcommit: f64,
    /// Memory kept for the host itself and the VMMs' own overhead.
    pub mem_reserve_mib: u64,
    pub disk_overcommit: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            cpu_overcommit: 8.0,
            mem_overcommit: 1.0,
            mem_reserve_mib: 512,
            disk_overcommit: 1.0,
        }
    }
}

/// The physical facts admission needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Physical {
    pub cores: u64,
    pub mem_mib: u64,
    pub disk_mib: u64,
}

impl Policy {
    /// Total capacity of a host with `p`.
    pub fn capacity(&self, p: Physical) -> Resources {
        Resources {
            vcpus: (p.cores as f64 * self.cpu_overcommit).floor() as u64,
            mem_mib: ((p.mem_mib as f64 * self.mem_overcommit).floor() as u64)
                .saturating_sub(self.mem_reserve_mib),
            disk_mib: (p.disk_mib as f64 * self.disk_overcommit).floor() as u64,
        }
    }
}

/// (total, free) MiB of the filesystem holding `path`.
pub fn disk_mib(path: &Path) -> (u64, u64) {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return (0, 0);
    };
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return (0, 0);
    }
    let f = s.f_frsize as u64;
    ((s.f_blocks as u64 * f) >> 20, (s.f_bavail as u64 * f) >> 20)
}

/// Admits `want` beside `allocated` within `capacity`, or says every dimension that
/// does not fit, with the numbers.
pub fn admit(capacity: Resources, allocated: Resources, want: Resources) -> Result<(), String> {
    let mut misses = Vec::new();
    let mut check = |what: &str, unit: &str, cap: u64, used: u64, want: u64| {
        if want > 0 && used.saturating_add(want) > cap {
            misses.push(format!(
                "{what}: {want}{unit} requested, {}{unit} free of {cap}{unit}",
                cap.saturating_sub(used)
            ));
        }
    };
    check("vcpus", "", capacity.vcpus, allocated.vcpus, want.vcpus);
    check(
        "memory",
        " MiB",
        capacity.mem_mib,
        allocated.mem_mib,
        want.mem_mib,
    );
    check(
        "disk",
        " MiB",
        capacity.disk_mib,
        allocated.disk_mib,
        want.disk_mib,
    );
    if misses.is_empty() {
        Ok(())
    } else {
        Err(misses.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(vcpus: u64, mem_mib: u64, disk_mib: u64) -> Resources {
        Resources {
            vcpus,
            mem_mib,
            disk_mib,
        }
    }

    #[test]
    fn capacity_applies_ratios_and_reserve() {
        let p = Policy {
            cpu_overcommit: 4.0,
            mem_overcommit: 1.5,
            mem_reserve_mib: 512,
            disk_overcommit: 1.0,
        };
        assert_eq!(
            p.capacity(Physical {
                cores: 2,
                mem_mib: 2048,
                disk_mib: 100
            }),
            r(8, 2560, 100)
        );
    }

    #[test]
    fn a_vm_that_fits_is_admitted_up_to_the_last_unit() {
        admit(r(8, 1024, 10), r(6, 512, 0), r(2, 512, 10)).unwrap();
    }

    #[test]
    fn refusal_names_every_dimension_that_does_not_fit() {
        let e = admit(r(8, 1024, 10), r(7, 1000, 0), r(2, 64, 1)).unwrap_err();
        assert!(e.contains("vcpus: 2 requested, 1 free of 8"), "{e}");
        assert!(
            e.contains("memory: 64 MiB requested, 24 MiB free of 1024 MiB"),
            "{e}"
        );
        assert!(!e.contains("disk"), "{e}");
    }

    #[test]
    fn over_allocated_hosts_do_not_underflow() {
        assert!(admit(r(1, 1, 1), r(5, 5, 5), r(1, 0, 0))
            .unwrap_err()
            .contains("0 free of 1"));
    }
}
