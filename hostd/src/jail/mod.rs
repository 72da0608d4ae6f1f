//! The jail every VMM runs in, in the manner of Firecracker's jailer: hostd prepares
//! it ([`Jailer::prepare`]) and the forked child enters it ([`Prepared::enter`]) just
//! before exec'ing `nova-vmm`:
//!
//! - its own unprivileged uid and gid, one per VM, from `--jail-ids` ([`ids`]);
//! - a mount namespace whose root (`pivot_root`) is an empty tmpfs holding only the
//!   `nova-vmm` binary, the VM's kernel and initrd (read-only), its disks, console,
//!   config, snapshots and API socket directory, and device nodes owned by the VM's
//!   uid for /dev/kvm, /dev/net/tun and /dev/userfaultfd (when the host has it), each
//!   at its host path, so that no path in a config or a request needs translating;
//! - a new UTS namespace, and a PID namespace of its own in which the VMM is
//!   pid 1 ([`spawn_in_new_pid_ns`]: hostd forks it there directly, so it is still
//!   hostd's child, reaped with its exit status and killed by its host pid; nothing
//!   sits between them). No network namespace (its taps and its migration TCP live
//!   in the host's: hostd creates the taps owned by the VM's uid there). The unique
//!   uid and the PID namespace keep the VMM from seeing, signalling or tracing other
//!   processes; /proc is not mounted;
//! - cgroup limits for CPU, memory and pids ([`cgroup`]: each controller in the v1
//!   hierarchy that has it, else in cgroup2), entered fast with the cgroup2
//!   `favordynmods` option hostd turns on at start ([`favordynmods`]);
//! - rlimits (open files, file size, no core dumps, processes) and `no_new_privs`.
//!
//! No IPC namespace: the VMM's seccomp filters refuse every System V IPC and POSIX
//! message queue syscall on every thread (`nova_vmm::seccomp::rules`), so one would
//! isolate nothing, and making it (an mqueue mount and a sysctl table per VM) was
//! ~90 us of each jailed start.
//!
//! Files hostd hands to the VMM (disks, console, config) are chowned to its uid, 0600.
//! `--no-jail` (development) runs VMMs as hostd's own user, unconfined.

pub mod cgroup;
pub mod favordynmods;
pub mod ids;

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

pub use ids::{IdRange, Jailer};

use crate::error::{Error, Result};

/// How VMMs are jailed: the flags' values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailSettings {
    /// Off with `--no-jail`.
    pub enabled: bool,
    /// The uids (and equal gids) given to VMs, one each.
    pub ids: IdRange,
    /// Turn on cgroup2's `favordynmods` at start (`--cgroup-favordynmods`).
    pub favordynmods: bool,
}

impl Default for JailSettings {
    fn default() -> Self {
        JailSettings {
            enabled: true,
            ids: IdRange::DEFAULT,
            favordynmods: true,
        }
    }
}

/// What one VMM's jail holds and may use.
#[derive(Debug, Clone, Default)]
pub struct JailSpec {
    pub vm_id: String,
    pub uid: u32,
    /// Where the jail's root is mounted (an empty directory of hostd's).
    pub root: PathBuf,
    /// The VMM's working directory inside (its VM directory: disks may be relative).
    pub workdir: PathBuf,
    /// Bound read-only (the binary, kernel, initrd, config).
    pub read_only: Vec<PathBuf>,
    /// Bound read-write (disks, console, snapshots, the socket directory); hostd
    /// chowns them to the VM's uid first.
    pub read_write: Vec<PathBuf>,
    pub vcpus: u8,
    pub mem_mib: u64,
    /// The largest file the VMM may write (its disks, a memory snapshot).
    pub max_file_bytes: u64,
}

/// A jail ready to enter: everything computed (no allocation happens after fork).
pub struct Prepared {
    uid: libc::uid_t,
    root: CString,
    workdir: CString,
    tmpfs_opts: CString,
    /// Directories to make inside the new root, parents first.
    dirs: Vec<CString>,
    /// Empty files to make as mount points.
    files: Vec<CString>,
    /// Bind mounts: host path, path inside the jail (under `root`), read-only.
    binds: Vec<(CString, CString, bool)>,
    /// Device nodes: path inside the jail, device number.
    devices: Vec<(CString, libc::dev_t)>,
    /// `cgroup.procs` of the VM's cgroups, open for writing.
    cgroup_procs: Vec<OwnedFd>,
    rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
}

/// The devices a VMM may open, when the host has them.
const DEVICES: &[&str] = &["/dev/kvm", "/dev/net/tun", "/dev/userfaultfd", "/dev/null"];
/// Open files per VMM: API connections (32), disks, taps, eventfds, migration.
pub const MAX_OPEN_FILES: u64 = 4096;

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::Conflict(format!("path {} has a NUL byte", p.display())))
}

/// `root` + `p` (an absolute path).
fn inside(root: &Path, p: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in p.components() {
        if let Component::Normal(n) = c {
            out.push(n);
        }
    }
    out
}

/// Every ancestor of `p` below `/`, parents first.
fn ancestors(p: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = p
        .ancestors()
        .skip(1)
        .filter(|a| a.parent().is_some())
        .map(Path::to_path_buf)
        .collect();
    v.reverse();
    v
}

impl JailSpec {
    /// Computes the jail: mount points, binds, device nodes, cgroups, rlimits.
    /// Paths must exist; each is bound at its canonical host path.
    pub fn prepare(&self, cgroups: &cgroup::Cgroups) -> Result<Prepared> {
        let io = |what: String| move |e| Error::io(what, e);
        std::fs::create_dir_all(&self.root)
            .map_err(io(format!("creating {}", self.root.display())))?;
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut files = Vec::new();
        let mut binds = Vec::new();
        let add_dir = |dirs: &mut Vec<PathBuf>, d: &Path| {
            if !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_path_buf());
            }
        };
        let all = self
            .read_only
            .iter()
            .map(|p| (p, true))
            .chain(self.read_write.iter().map(|p| (p, false)));
        for (p, ro) in all {
            let real = p
                .canonicalize()
                .map_err(io(format!("jail: {}", p.display())))?;
            for a in ancestors(&real) {
                add_dir(&mut dirs, &a);
            }
            let md = std::fs::metadata(&real).map_err(io(format!("jail: {}", real.display())))?;
            if md.is_dir() {
                add_dir(&mut dirs, &real);
            } else {
                files.push(real.clone());
            }
            binds.push((real.clone(), inside(&self.root, &real), ro));
        }
        // The working directory exists inside even when nothing under it is bound.
        for a in ancestors(&self.workdir) {
            add_dir(&mut dirs, &a);
        }
        add_dir(&mut dirs, &self.workdir);
        add_dir(&mut dirs, Path::new("/dev"));
        add_dir(&mut dirs, Path::new("/dev/net"));
        let mut devices = Vec::new();
        for d in DEVICES {
            if let Ok(md) = std::fs::metadata(d) {
                devices.push((cstr(&inside(&self.root, Path::new(d)))?, md.rdev()));
            }
        }
        let procs = cgroups.create(&self.vm_id, self.vcpus, self.mem_mib)?;
        let pids = cgroup::pids_max(self.vcpus);
        Ok(Prepared {
            uid: self.uid,
            root: cstr(&self.root)?,
            workdir: cstr(&self.workdir)?,
            tmpfs_opts: CString::new("size=1m,nr_inodes=4096,mode=0755").expect("no NUL"),
            dirs: dirs
                .iter()
                .map(|d| cstr(&inside(&self.root, d)))
                .collect::<Result<_>>()?,
            files: files
                .iter()
                .map(|f| cstr(&inside(&self.root, f)))
                .collect::<Result<_>>()?,
            binds: binds
                .iter()
                .map(|(s, d, ro)| Ok((cstr(s)?, cstr(d)?, *ro)))
                .collect::<Result<_>>()?,
            devices,
            cgroup_procs: procs,
            rlimits: vec![
                (libc::RLIMIT_NOFILE, MAX_OPEN_FILES),
                (libc::RLIMIT_FSIZE, self.max_file_bytes),
                (libc::RLIMIT_CORE, 0),
                (libc::RLIMIT_NPROC, pids),
            ],
        })
    }
}

/// Turns -1 into the errno.
fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Prepared {
    /// Enters the jail: called in the forked child before exec. Makes syscalls only
    /// (no allocation, no locks), as a child of a multi-threaded parent must.
    pub fn enter(&self) -> std::io::Result<()> {
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY: every call below is a plain syscall on NUL-terminated strings owned
        // by `self` (alive until exec) or on fds it owns; none touches other memory.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
            check(libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                self.root.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID,
                self.tmpfs_opts.as_ptr().cast(),
            ))?;
            for d in &self.dirs {
                if libc::mkdir(d.as_ptr(), 0o755) < 0
                    && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for f in &self.files {
                let fd = libc::open(
                    f.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o600,
                );
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            for (path, dev) in &self.devices {
                check(libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, *dev))?;
                check(libc::chown(path.as_ptr(), self.uid, self.uid))?;
            }
            for (src, dst, ro) in &self.binds {
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
                let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
                if *ro {
                    flags |= libc::MS_RDONLY;
                }
                check(libc::mount(
                    null,
                    dst.as_ptr(),
                    null,
                    flags,
                    std::ptr::null(),
                ))?;
            }
            for fd in &self.cgroup_procs {
                // "0": the writing process itself, in cgroup v1 and v2 alike.
                if libc::write(fd.as_raw_fd(), c"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            check(libc::chdir(self.root.as_ptr()))?;
            check(
                libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
            )?;
            // The old root now sits under the new one: detach it.
            check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
            check(libc::chdir(c"/".as_ptr()))?;
            check(libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID,
                std::ptr::null(),
            ))?;
            check(libc::chdir(self.workdir.as_ptr()))?;
            for (res, v) in &self.rlimits {
                let lim = libc::rlimit {
                    rlim_cur: *v,
                    rlim_max: *v,
                };
                check(libc::setrlimit(*res, &lim))?;
            }
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(self.uid, self.uid, self.uid))?;
            check(libc::setresuid(self.uid, self.uid, self.uid))?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        }
        Ok(())
    }
}

/// Runs `spawn` (which forks the VMM) on a short-lived thread whose children go into
/// a new PID namespace: the child is pid 1 there and still hostd's own child. The
/// thread ends with it, so no thread of hostd's keeps the setting. Inside a Tokio
/// runtime, `spawn` runs in its context (tokio's `Command` needs it).
pub fn spawn_in_new_pid_ns<T: Send>(spawn: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    let rt = tokio::runtime::Handle::try_current().ok();
    std::thread::scope(|s| {
        s.spawn(|| {
            let _rt = rt.as_ref().map(|h| h.enter());
            // SAFETY: unshare(2) changes where this thread's children go; no memory.
            check(unsafe { libc::unshare(libc::CLONE_NEWPID) })?;
            Ok(spawn())
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread panicked")))
    })
}

/// Makes tap `name` attachable by `uid` (taps live in the host's network namespace).
pub async fn set_tap_owner(name: &str, uid: u32) -> Result<()> {
    let n = name.to_string();
    tokio::task::spawn_blocking(move || crate::net::tap::set_owner(&n, uid))
        .await
        .map_err(|e| Error::Net(e.to_string()))?
        .map_err(|e| Error::Net(format!("giving tap {name} to uid {uid}: {e}")))
}

/// Gives `dir` and what is in it, two levels deep (snapshots and their files), to
/// `uid`. Symlinks (which a VMM could plant) are neither followed nor changed.
pub fn give_tree(dir: &Path, uid: u32) -> Result<()> {
    give(dir, uid)?;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.file_type().is_symlink() {
            continue;
        }
        give(&p, uid)?;
        if md.is_dir() {
            for f in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                let fp = f.path();
                if std::fs::symlink_metadata(&fp).is_ok_and(|m| m.is_file()) {
                    give(&fp, uid)?;
                }
            }
        }
    }
    Ok(())
}

/// Gives `path` to the VM's uid, readable and writable by it alone (0600 for files,
/// 0700 for directories).
pub fn give(path: &Path, uid: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let md =
        std::fs::metadata(path).map_err(|e| Error::io(format!("jail: {}", path.display()), e))?;
    std::os::unix::fs::chown(path, Some(uid), Some(uid))
        .map_err(|e| Error::io(format!("chown {}", path.display()), e))?;
    let mode = if md.is_dir() { 0o700 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_land_under_the_root_with_their_parents_first() {
        let root = Path::new("/data/vms/a/root");
        assert_eq!(
            inside(root, Path::new("/data/images/k")),
            Path::new("/data/vms/a/root/data/images/k")
        );
        assert_eq!(
            ancestors(Path::new("/a/b/c")),
            vec![PathBuf::from("/a"), PathBuf::from("/a/b")]
        );
    }
}
