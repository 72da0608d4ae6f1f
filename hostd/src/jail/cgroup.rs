//! Each VMM's cgroups, `nova/<vm-id>` under hostd's own cgroup in each hierarchy it
//! uses (its delegated subtree, as systemd gives a service; never above it): CPU
//! (vCPUs plus half a core for the VMM's own threads), memory (guest RAM plus
//! overhead) and pids. Each controller is used where the host has it, read from
//! `/proc/self/mountinfo`: a v1 hierarchy mounted with it (pure v1 and hybrid hosts,
//! such as the test machines), else the cgroup2 hierarchy when hostd's cgroup there
//! offers it (pure v2, or a hybrid host with controllers moved to v2). In v2 a cgroup
//! with processes cannot hand controllers to children, so when hostd sits in the
//! cgroup it was given (a systemd service) it first moves itself into `hostd/` below.

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

/// A controller hostd limits VMMs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Controller {
    Cpu,
    Memory,
    Pids,
}

impl Controller {
    pub const ALL: [Controller; 3] = [Controller::Cpu, Controller::Memory, Controller::Pids];

    /// Its name in mount options, `/proc/self/cgroup` and `cgroup.controllers`.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
        }
    }
}

/// One hierarchy hostd uses: hostd's own cgroup in it and the controllers it limits
/// there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// cgroup2 (else v1).
    pub v2: bool,
    /// hostd's own cgroup: the VMs' go under `nova/`.
    pub base: PathBuf,
    pub controllers: Vec<Controller>,
}

/// The hierarchies VMMs are limited in; none when the host offers no controller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cgroups {
    pub hierarchies: Vec<Hierarchy>,
}

/// One cgroup mount: its root inside the hierarchy, where it is, v2 or not, and its
/// super options.
struct Mount<'a> {
    root: &'a str,
    at: String,
    v2: bool,
    options: Vec<&'a str>,
}

fn mounts(mountinfo: &str) -> Vec<Mount<'_>> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let v2 = match *right.first()? {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(Mount {
                root: left.get(3)?,
                at: left.get(4)?.replace("\\040", " "),
                v2,
                options: right.get(2).map_or(vec![], |o| o.split(',').collect()),
            })
        })
        .collect()
}

/// Where cgroup `own` (a path in the hierarchy) is under mount `m`, if `m` shows it.
fn under(m: &Mount<'_>, own: &str) -> Option<PathBuf> {
    let rel = own.strip_prefix(m.root.trim_end_matches('/'))?;
    if !(rel.is_empty() || rel.starts_with('/')) {
        return None;
    }
    let rel = rel.trim_start_matches('/');
    Some(match rel {
        "" => PathBuf::from(&m.at),
        r => Path::new(&m.at).join(r),
    })
}

impl Cgroups {
    /// No limits (`--no-jail`, or a host without controllers).
    pub fn none() -> Cgroups {
        Cgroups::default()
    }

    /// Reads the host's mounts and hostd's own cgroups.
    pub fn detect() -> Cgroups {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Self::from_host(&mountinfo, &own, |d| {
            std::fs::read_to_string(d.join("cgroup.controllers")).ok()
        })
    }

    /// The hierarchies from `/proc/self/mountinfo`, `/proc/self/cgroup` and the
    /// `cgroup.controllers` of a v2 cgroup (None: no such directory).
    pub fn from_host(
        mountinfo: &str,
        proc_cgroup: &str,
        controllers_at: impl Fn(&Path) -> Option<String>,
    ) -> Cgroups {
        let all = mounts(mountinfo);
        let mut out: Vec<Hierarchy> = Vec::new();
        let mut add = |v2: bool, base: PathBuf, c: Controller| match out
            .iter_mut()
            .find(|h| h.base == base)
        {
            Some(h) => h.controllers.push(c),
            None => out.push(Hierarchy {
                v2,
                base,
                controllers: vec![c],
            }),
        };
        let mut rest = Vec::new();
        for c in Controller::ALL {
            let own = own_path(proc_cgroup, c.name());
            let v1 = all
                .iter()
                .filter(|m| !m.v2 && m.options.contains(&c.name()))
                .find_map(|m| under(m, own));
            match v1 {
                Some(base) => add(false, base, c),
                None => rest.push(c),
            }
        }
        if !rest.is_empty() {
            let own = own_path(proc_cgroup, "");
            let v2 = all
                .iter()
                .filter(|m| m.v2)
                .filter_map(|m| under(m, own))
                .find_map(|base| Some((controllers_at(&base)?, base)));
            if let Some((offered, base)) = v2 {
                let offered: Vec<&str> = offered.split_whitespace().collect();
                for c in rest {
                    if offered.contains(&c.name()) {
                        add(true, base.clone(), c);
                    }
                }
            }
        }
        Cgroups { hierarchies: out }
    }

    /// The controllers no hierarchy offers.
    pub fn missing(&self) -> Vec<Controller> {
        Controller::ALL
            .into_iter()
            .filter(|c| !self.hierarchies.iter().any(|h| h.controllers.contains(c)))
            .collect()
    }

    /// The VM's cgroup directories.
    pub fn dirs(&self, vm_id: &str) -> Vec<PathBuf> {
        self.hierarchies
            .iter()
            .map(|h| h.base.join("nova").join(vm_id))
            .collect()
    }

    /// Makes the VM's cgroups with their limits; returns their `cgroup.procs`, open
    /// for the child to write itself into.
    pub fn create(&self, vm_id: &str, vcpus: u8, mem_mib: u64) -> Result<Vec<OwnedFd>> {
        let mut procs = Vec::new();
        for h in &self.hierarchies {
            let nova = h.base.join("nova");
            if h.v2 {
                hand_down(&h.base, &h.controllers)?;
                mkdir(&nova)?;
                write(
                    &nova.join("cgroup.subtree_control"),
                    &enable(&h.controllers),
                )?;
            }
            let d = nova.join(vm_id);
            mkdir(&d)?;
            for c in &h.controllers {
                for (file, v) in limits(*c, h.v2, vcpus, mem_mib) {
                    write(&d.join(file), &v)?;
                }
            }
            let p = d.join("cgroup.procs");
            let fd = OpenOptions::new()
                .write(true)
                .open(&p)
                .map(OwnedFd::from)
                .map_err(|e| Error::io(format!("cgroup {}", p.display()), e))?;
            procs.push(fd);
        }
        Ok(procs)
    }

    /// Removes the VM's cgroups (once its VMM is gone; a busy one stays).
    pub fn remove(&self, vm_id: &str) {
        for d in self.dirs(vm_id) {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn write(p: &Path, v: &str) -> Result<()> {
    std::fs::write(p, v).map_err(|e| Error::io(format!("cgroup {}", p.display()), e))
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::io(format!("cgroup {}", p.display()), e))
}

/// `+cpu +memory +pids` for `cs`.
fn enable(cs: &[Controller]) -> String {
    cs.iter()
        .map(|c| format!("+{}", c.name()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Lets `base`'s children have `cs` (cgroup2). A cgroup holding processes cannot
/// (EBUSY), unless it is the root: then hostd moves itself into `base/hostd` first.
fn hand_down(base: &Path, cs: &[Controller]) -> Result<()> {
    let control = base.join("cgroup.subtree_control");
    match std::fs::write(&control, enable(cs)) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            let leaf = base.join("hostd");
            mkdir(&leaf)?;
            // "0": this whole process.
            write(&leaf.join("cgroup.procs"), "0")?;
            tracing::info!(cgroup = %leaf.display(), "hostd moved into a leaf cgroup to hand controllers to its VMs'");
            write(&control, &enable(cs))
        }
        r => r.map_err(|e| Error::io(format!("cgroup {}", control.display()), e)),
    }
}

/// The files that limit controller `c` and their values.
fn limits(c: Controller, v2: bool, vcpus: u8, mem_mib: u64) -> Vec<(&'static str, String)> {
    let quota = cpu_quota_us(vcpus);
    match (c, v2) {
        (Controller::Cpu, true) => vec![("cpu.max", format!("{quota} {PERIOD_US}"))],
        (Controller::Cpu, false) => vec![
            ("cpu.cfs_period_us", PERIOD_US.to_string()),
            ("cpu.cfs_quota_us", quota.to_string()),
        ],
        (Controller::Memory, true) => vec![("memory.max", memory_bytes(mem_mib).to_string())],
        (Controller::Memory, false) => {
            vec![("memory.limit_in_bytes", memory_bytes(mem_mib).to_string())]
        }
        (Controller::Pids, _) => vec![("pids.max", pids_max(vcpus).to_string())],
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

    const V1_PROCS: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/svc/m\n1:cpu,cpuacct:/\n0::/\n";
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,favordynmods
";

    fn v1(base: &str, cs: &[Controller]) -> Hierarchy {
        Hierarchy {
            v2: false,
            base: PathBuf::from(base),
            controllers: cs.to_vec(),
        }
    }

    #[test]
    fn a_hybrid_host_limits_in_its_v1_hierarchies_under_hostds_cgroups() {
        // The unified hierarchy offers nothing: every controller is bound to v1.
        let c = Cgroups::from_host(HYBRID, V1_PROCS, |_| Some(String::new()));
        assert_eq!(
            c.hierarchies,
            [
                v1("/sys/fs/cgroup/cpu,cpuacct", &[Controller::Cpu]),
                v1("/sys/fs/cgroup/memory/svc/m", &[Controller::Memory]),
                v1("/sys/fs/cgroup/pids", &[Controller::Pids]),
            ]
        );
        assert!(c.missing().is_empty());
        assert_eq!(
            c.dirs("a")[1],
            Path::new("/sys/fs/cgroup/memory/svc/m/nova/a")
        );
    }

    #[test]
    fn a_pure_v2_host_limits_everything_in_hostds_own_cgroup() {
        let mi = "30 23 0:27 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        let own = "0::/system.slice/nova-hostd.service\n";
        let c = Cgroups::from_host(mi, own, |d| {
            assert_eq!(
                d,
                Path::new("/sys/fs/cgroup/system.slice/nova-hostd.service")
            );
            Some("cpuset cpu io memory pids\n".into())
        });
        assert_eq!(
            c.hierarchies,
            [Hierarchy {
                v2: true,
                base: PathBuf::from("/sys/fs/cgroup/system.slice/nova-hostd.service"),
                controllers: Controller::ALL.to_vec(),
            }]
        );
        // A delegation without cpu: the others still apply, cpu is reported missing.
        let c = Cgroups::from_host(mi, own, |_| Some("memory pids".into()));
        assert_eq!(c.missing(), [Controller::Cpu]);
    }

    #[test]
    fn a_hybrid_host_with_pids_on_v2_uses_both() {
        let mi: String = HYBRID
            .lines()
            .filter(|l| !l.contains("rw,pids"))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = Cgroups::from_host(&mi, V1_PROCS, |_| Some("pids".into()));
        assert_eq!(c.hierarchies.len(), 3);
        assert_eq!(
            c.hierarchies[2],
            Hierarchy {
                v2: true,
                base: PathBuf::from("/sys/fs/cgroup/unified"),
                controllers: vec![Controller::Pids],
            }
        );
    }

    #[test]
    fn a_host_without_cgroup_mounts_has_no_limits() {
        let c = Cgroups::from_host("", V1_PROCS, |_| None);
        assert_eq!(c, Cgroups::none());
        assert_eq!(c.missing().len(), 3);
        // A mount whose root does not hold hostd's cgroup (another container's).
        let mi = "32 31 0:29 /other /c rw - cgroup cgroup rw,cpu\n";
        assert!(Cgroups::from_host(mi, V1_PROCS, |_| None)
            .hierarchies
            .is_empty());
    }
}
