//! Each VMM's cgroup, `nova/<vm-id>` under hostd's own cgroup (its delegated
//! subtree, as systemd gives a service; never above it): CPU (vCPUs plus half a core for the VMM's own
//! threads), memory (guest RAM plus overhead) and pids. cgroup v2 when
//! `/sys/fs/cgroup` is a cgroup2 mount; else the v1 `cpu`, `memory` and `pids`
//! hierarchies (hybrid hosts, such as the test machines, have their controllers there).

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The VMM's memory beyond guest RAM: its own heap, stacks, queues, page cache.
pub const OVERHEAD_MIB: u64 = 256;
/// CPU period, microseconds.
const PERIOD_US: u64 = 100_000;

/// The pids a VMM may have: its vCPUs, API connections (33), devices, migration.
pub fn pids_max(vcpus: u8) -> u64 {
    u64::from(vcpus) + 96
}

/// The CPU quota per period: one period per vCPU and half of one for the VMM.
pub fn cpu_quota_us(vcpus: u8) -> u64 {
    u64::from(vcpus) * PERIOD_US + PERIOD_US / 2
}

/// The memory limit.
pub fn memory_bytes(mem_mib: u64) -> u64 {
    (mem_mib + OVERHEAD_MIB) << 20
}

/// This process's cgroup in the hierarchy of `controller` ("" for v2's unified
/// one), from `/proc/self/cgroup` lines such as `4:memory:/system.slice/x`.
pub fn own_path<'a>(proc_cgroup: &'a str, controller: &str) -> &'a str {
    proc_cgroup
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            let hit = if controller.is_empty() {
                ctrls.is_empty()
            } else {
                ctrls.split(',').any(|c| c == controller)
            };
            hit.then_some(path)
        })
        .next()
        .unwrap_or("/")
}

/// Which cgroup interface the host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    V2(PathBuf),
    /// The mount points of the cpu, memory and pids hierarchies.
    V1 {
        cpu: PathBuf,
        memory: PathBuf,
        pids: PathBuf,
    },
    /// None usable (then the jail has no cgroup limits, and says so once).
    None,
}

impl Cgroups {
    /// Looks under `/sys/fs/cgroup`.
    pub fn detect() -> Cgroups {
        Self::detect_at(Path::new("/sys/fs/cgroup"))
    }

    pub fn detect_at(base: &Path) -> Cgroups {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        if base.join("cgroup.controllers").exists() {
            return Cgroups::V2(base.join(own_path(&own, "").trim_start_matches('/')));
        }
        let at = |c: &str| base.join(c).join(own_path(&own, c).trim_start_matches('/'));
        let (cpu, memory, pids) = (at("cpu"), at("memory"), at("pids"));
        if cpu.join("cpu.cfs_quota_us").exists()
            && memory.join("memory.limit_in_bytes").exists()
            && pids.join("cgroup.procs").exists()
        {
            return Cgroups::V1 { cpu, memory, pids };
        }
        Cgroups::None
    }

    /// The VM's cgroup directories.
    pub fn dirs(&self, vm_id: &str) -> Vec<PathBuf> {
        let under = |p: &Path| p.join("nova").join(vm_id);
        match self {
            Cgroups::V2(base) => vec![under(base)],
            Cgroups::V1 { cpu, memory, pids } => vec![under(cpu), under(memory), under(pids)],
            Cgroups::None => vec![],
        }
    }

    /// Makes the VM's cgroups with their limits; returns their `cgroup.procs`, open
    /// for the child to write itself into.
    pub fn create(&self, vm_id: &str, vcpus: u8, mem_mib: u64) -> Result<Vec<OwnedFd>> {
        let write = |p: PathBuf, v: String| {
            std::fs::write(&p, v).map_err(|e| Error::io(format!("cgroup {}", p.display()), e))
        };
        let mkdir = |p: &Path| {
            std::fs::create_dir_all(p).map_err(|e| Error::io(format!("cgroup {}", p.display()), e))
        };
        let quota = cpu_quota_us(vcpus);
        let mem = memory_bytes(mem_mib);
        let pids = pids_max(vcpus);
        match self {
            Cgroups::V2(base) => {
                let nova = base.join("nova");
                mkdir(&nova)?;
                for p in [
                    base.join("cgroup.subtree_control"),
                    nova.join("cgroup.subtree_control"),
                ] {
                    write(p, "+cpu +memory +pids".into())?;
                }
            }
            Cgroups::V1 { .. } | Cgroups::None => {}
        }
        let dirs = self.dirs(vm_id);
        for d in &dirs {
            mkdir(d)?;
        }
        match self {
            Cgroups::V2(_) => {
                let d = &dirs[0];
                write(d.join("cpu.max"), format!("{quota} {PERIOD_US}"))?;
                write(d.join("memory.max"), mem.to_string())?;
                write(d.join("pids.max"), pids.to_string())?;
            }
            Cgroups::V1 { .. } => {
                write(dirs[0].join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
                write(dirs[0].join("cpu.cfs_quota_us"), quota.to_string())?;
                write(dirs[1].join("memory.limit_in_bytes"), mem.to_string())?;
                write(dirs[2].join("pids.max"), pids.to_string())?;
            }
            Cgroups::None => {}
        }
        dirs.iter()
            .map(|d| {
                let p = d.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map(OwnedFd::from)
                    .map_err(|e| Error::io(format!("cgroup {}", p.display()), e))
            })
            .collect()
    }

    /// Removes the VM's cgroups (once its VMM is gone; a busy one stays).
    pub fn remove(&self, vm_id: &str) {
        for d in self.dirs(vm_id) {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_grow_with_the_vm() {
        assert_eq!(cpu_quota_us(2), 250_000);
        assert_eq!(memory_bytes(128), 384 << 20);
        assert!(pids_max(4) > pids_max(1));
    }

    #[test]
    fn vm_cgroups_go_under_hostds_own() {
        let own = "9:name=systemd:/\n4:memory:/svc/a\n1:cpu,cpuacct:/svc/b\n0::/u\n";
        assert_eq!(own_path(own, "memory"), "/svc/a");
        assert_eq!(own_path(own, "cpu"), "/svc/b");
        assert_eq!(own_path(own, ""), "/u");
        assert_eq!(own_path(own, "pids"), "/");
    }

    #[test]
    fn an_empty_directory_has_no_cgroups() {
        assert_eq!(Cgroups::detect_at(Path::new("/nonexistent")), Cgroups::None);
    }
}
