//! nova-vmm started as hostd starts it, for the benchmarks that time it: cgroup2's
//! `favordynmods` turned on as hostd does at start (its default), then each VMM in its
//! jail (its own uid, a mount namespace holding its files only, a PID namespace,
//! cgroups, rlimits, no_new_privs), with its seccomp filters. The code is hostd's own
//! (`nova_hostd::jail`), so the benchmarks measure what hostd runs.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nova_hostd::jail::cgroup::Cgroups;
use nova_hostd::jail::favordynmods;
use nova_hostd::jail::JailSpec;
use nova_tests::{Console, TempDir};

/// Turns cgroup2's `favordynmods` on as hostd does at start; the mode's name
/// (`already-on`, `remounted`, `mounted`, `refused`).
pub fn favor_dynmods() -> &'static str {
    favordynmods::enable(Path::new(favordynmods::OWN_MOUNT)).name()
}

/// What one jailed VMM holds.
pub struct Spec {
    /// Its uid (and gid): hostd gives each VM its own.
    pub uid: u32,
    /// Names its cgroups (`nova/<vm_id>`): unique per VMM.
    pub vm_id: String,
    /// Bound read-only (the binary, the kernel, a credential file).
    pub read_only: Vec<PathBuf>,
    /// Bound read-write and given to `uid` (the VMM's directory, with its socket).
    pub read_write: Vec<PathBuf>,
    /// Its working directory inside.
    pub workdir: PathBuf,
    pub vcpus: u8,
    pub mem_mib: u64,
}

/// A prepared jail: drop it once its VMM has exited (it removes the VM's cgroups).
pub struct Jail {
    vm_id: String,
    _root: TempDir,
}

impl Drop for Jail {
    fn drop(&mut self) {
        Cgroups::detect().remove(&self.vm_id);
    }
}

/// Starts a jailed VMM as hostd does, forked into a PID namespace of its own, its
/// console read in real time; the time counts from before the fork.
pub fn spawn(mut cmd: Command) -> anyhow::Result<Console> {
    let started = std::time::Instant::now();
    // Only the fork happens there: a thread cannot be made while that thread's
    // children go into another PID namespace (EINVAL).
    let child = nova_hostd::jail::spawn_in_new_pid_ns(|| Console::piped(&mut cmd).spawn())??;
    Ok(Console::attach(child, true, started))
}

/// Makes `cmd` (a `nova-vmm run` whose program and paths are canonical: only those
/// exist inside) enter the jail before it execs; start it with [`spawn`].
pub fn jail(cmd: &mut Command, s: Spec) -> anyhow::Result<Jail> {
    for p in &s.read_write {
        nova_hostd::jail::give(p, s.uid)?;
    }
    let canon = |v: &[PathBuf]| -> anyhow::Result<Vec<PathBuf>> {
        v.iter().map(|p| Ok(p.canonicalize()?)).collect()
    };
    let root = TempDir::new();
    let spec = JailSpec {
        vm_id: s.vm_id.clone(),
        uid: s.uid,
        root: root.join("root"),
        workdir: s.workdir.canonicalize()?,
        read_only: canon(&s.read_only)?,
        read_write: canon(&s.read_write)?,
        vcpus: s.vcpus,
        mem_mib: s.mem_mib,
        // As hostd sets it: guest RAM is a memfd, and its size counts as a file's.
        max_file_bytes: (s.mem_mib + 64) << 20,
    };
    let prepared = spec.prepare(&Cgroups::detect())?;
    // SAFETY: `enter` makes syscalls only, on data computed before the fork.
    unsafe {
        cmd.pre_exec(move || prepared.enter());
    }
    Ok(Jail {
        vm_id: s.vm_id,
        _root: root,
    })
}
