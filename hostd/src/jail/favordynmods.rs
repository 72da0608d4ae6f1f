//! How fast the kernel moves a task into a cgroup: the cgroup2 `favordynmods` mount
//! option (`--cgroup-favordynmods`, on by default when hostd jails VMMs).
//!
//! Every jailed VMM writes itself into its cgroups before exec. Without the option, the
//! first such write takes the global cgroup threadgroup rwsem for writing, which waits
//! for an RCU grace period: about 13 ms here, most of a jailed VMM's start. With it, the
//! rwsem stays in its slow-reader mode (and kernels from 6.18 lock per thread group),
//! so the write costs about 0.3 ms; forks and exits get slightly slower, the trade the
//! kernel documents. The option belongs to the cgroup2 root but the rwsem it switches
//! serves every hierarchy, v1 ones included, so hostd turns it on wherever cgroup2 is:
//!
//! - already on (a cgroup2 mount shows `favordynmods`): nothing to do;
//! - a cgroup2 mount without it (pure v2 at `/sys/fs/cgroup`, hybrid at
//!   `/sys/fs/cgroup/unified`): remounted with it, keeping its other options (a
//!   remount sets the root's options to exactly those given) and its mount flags;
//! - no cgroup2 mount (pure v1): a cgroup2 mounted at [`OWN_MOUNT`] with it (no
//!   controller moves: they stay bound to their v1 hierarchies).
//!
//! The result is read back from `/proc/self/mountinfo`: in a cgroup namespace other
//! than the host's the kernel ignores the option. A refusal is a warning naming the
//! flag, never a failure: VMMs then start more slowly, with the same jail.

use std::ffi::CString;
use std::path::{Path, PathBuf};

/// The flag that turns this off.
pub const FLAG: &str = "--cgroup-favordynmods";
/// Where hostd mounts a cgroup2 of its own on a host that has none.
pub const OWN_MOUNT: &str = "/run/nova/cgroup2";
/// The option.
const OPTION: &str = "favordynmods";

/// What hostd found or did at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Not asked for (`--cgroup-favordynmods=false`, or `--no-jail`): the mounts are
    /// left as they were.
    Off,
    /// Already on when hostd started: the cgroup2 mount at `at` shows it.
    AlreadyOn { at: PathBuf },
    /// hostd remounted the cgroup2 at `at` with it.
    Remounted { at: PathBuf },
    /// hostd mounted a cgroup2 at `at` with it (the host had none).
    Mounted { at: PathBuf },
    /// Asked for, but the kernel refused or ignored it.
    Refused { reason: String },
}

impl Mode {
    /// Whether cgroup attaches are fast now.
    pub fn active(&self) -> bool {
        matches!(
            self,
            Mode::AlreadyOn { .. } | Mode::Remounted { .. } | Mode::Mounted { .. }
        )
    }

    /// Its name in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::AlreadyOn { .. } => "already-on",
            Mode::Remounted { .. } => "remounted",
            Mode::Mounted { .. } => "mounted",
            Mode::Refused { .. } => "refused",
        }
    }

    /// Every name [`Mode::name`] gives (the metric has one series per name).
    pub const NAMES: [&'static str; 5] = ["off", "already-on", "remounted", "mounted", "refused"];
}

/// One cgroup2 mount of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2Mount {
    pub at: PathBuf,
    /// Per-mount options (`rw,nosuid,nodev,noexec,relatime`).
    pub mount_options: Vec<String>,
    /// The root's options (`rw,nsdelegate,memory_recursiveprot`): the same on every
    /// cgroup2 mount, there being one cgroup2 root.
    pub super_options: Vec<String>,
}

impl Cgroup2Mount {
    pub fn favors_dynmods(&self) -> bool {
        self.super_options.iter().any(|o| o == OPTION)
    }

    /// The data string of a remount adding the option: the root's options but `rw`
    /// and `ro` (mount flags, not cgroup2's), plus `favordynmods`.
    pub fn remount_data(&self) -> String {
        let mut v: Vec<&str> = self
            .super_options
            .iter()
            .map(String::as_str)
            .filter(|o| *o != "rw" && *o != "ro" && !o.is_empty())
            .collect();
        if !v.contains(&OPTION) {
            v.push(OPTION);
        }
        v.join(",")
    }

    /// The mount flags a remount must repeat: a remount resets those it is not given.
    pub fn remount_flags(&self) -> libc::c_ulong {
        let mut f = libc::MS_REMOUNT;
        for o in &self.mount_options {
            f |= match o.as_str() {
                "ro" => libc::MS_RDONLY,
                "nosuid" => libc::MS_NOSUID,
                "nodev" => libc::MS_NODEV,
                "noexec" => libc::MS_NOEXEC,
                "noatime" => libc::MS_NOATIME,
                "nodiratime" => libc::MS_NODIRATIME,
                "relatime" => libc::MS_RELATIME,
                "strictatime" => libc::MS_STRICTATIME,
                _ => 0,
            };
        }
        f
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup2 mounts in `mountinfo` (the text of `/proc/self/mountinfo`).
pub fn cgroup2_mounts(mountinfo: &str) -> Vec<Cgroup2Mount> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            if right.first() != Some(&"cgroup2") || left.len() < 6 {
                return None;
            }
            let split = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
            Some(Cgroup2Mount {
                at: PathBuf::from(unescape(left[4])),
                mount_options: split(left[5]),
                super_options: split(right.get(2).copied().unwrap_or("")),
            })
        })
        .collect()
}

fn read_mounts() -> Vec<Cgroup2Mount> {
    cgroup2_mounts(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

fn mount(
    src: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: &str,
) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |s: &[u8]| {
        CString::new(s).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (src, target, data) = (
        c(src.as_bytes())?,
        c(target.as_os_str().as_bytes())?,
        c(data.as_bytes())?,
    );
    let fstype = fstype.map(|f| c(f.as_bytes())).transpose()?;
    // SAFETY: mount(2) on NUL-terminated strings that live across the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether the cgroup2 mount at `at` shows the option now.
fn shows_option(at: &Path) -> bool {
    read_mounts()
        .iter()
        .any(|m| m.at == at && m.favors_dynmods())
}

/// Turns the option on (see the module's comment), mounting at `own_mount` when the
/// host has no cgroup2; logs what it found or did.
pub fn enable(own_mount: &Path) -> Mode {
    let mode = enable_quietly(own_mount);
    match &mode {
        Mode::Refused { reason } => tracing::warn!(
            "cgroup favordynmods could not be turned on ({reason}): each jailed VMM start \
             waits for an RCU grace period (~13 ms) in its cgroup attach; turn the attempt \
             off with {FLAG}=false"
        ),
        Mode::AlreadyOn { at } | Mode::Remounted { at } | Mode::Mounted { at } => {
            tracing::info!(mode = mode.name(), at = %at.display(), "cgroup favordynmods on: fast cgroup attach for jailed VMMs")
        }
        Mode::Off => {}
    }
    mode
}

fn enable_quietly(own_mount: &Path) -> Mode {
    let mounts = read_mounts();
    if let Some(m) = mounts.iter().find(|m| m.favors_dynmods()) {
        return Mode::AlreadyOn { at: m.at.clone() };
    }
    let ignored = |at: &Path| Mode::Refused {
        reason: format!(
            "the kernel accepted the option at {} but does not show it (a cgroup namespace \
             other than the host's?)",
            at.display()
        ),
    };
    if let Some(m) = mounts.first() {
        return match mount("none", &m.at, None, m.remount_flags(), &m.remount_data()) {
            Err(e) => Mode::Refused {
                reason: format!("remounting {}: {e}", m.at.display()),
            },
            Ok(()) if shows_option(&m.at) => Mode::Remounted { at: m.at.clone() },
            Ok(()) => ignored(&m.at),
        };
    }
    if let Err(e) = std::fs::create_dir_all(own_mount) {
        return Mode::Refused {
            reason: format!("creating {}: {e}", own_mount.display()),
        };
    }
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    match mount("cgroup2", own_mount, Some("cgroup2"), flags, OPTION) {
        Err(e) => Mode::Refused {
            reason: format!("mounting cgroup2 at {}: {e}", own_mount.display()),
        },
        Ok(()) if shows_option(own_mount) => Mode::Mounted {
            at: own_mount.to_path_buf(),
        },
        Ok(()) => ignored(own_mount),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
";
    const V2_ON: &str = "\
30 23 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,favordynmods,memory_recursiveprot
88 30 0:27 / /my\\040dir ro,relatime - cgroup2 none rw,nsdelegate,favordynmods,memory_recursiveprot
";

    #[test]
    fn cgroup2_mounts_are_found_with_both_kinds_of_options() {
        let m = cgroup2_mounts(HYBRID);
        assert_eq!(m.len(), 1, "v1 and tmpfs mounts are not cgroup2");
        assert_eq!(m[0].at, Path::new("/sys/fs/cgroup/unified"));
        assert!(!m[0].favors_dynmods());
        let m = cgroup2_mounts(V2_ON);
        assert_eq!(m.len(), 2);
        assert!(m[0].favors_dynmods(), "optional fields before the dash");
        assert_eq!(m[1].at, Path::new("/my dir"), "escapes undone");
        assert!(cgroup2_mounts("").is_empty());
    }

    #[test]
    fn a_remount_keeps_the_roots_other_options_and_the_mount_flags() {
        let m = &cgroup2_mounts(HYBRID)[0];
        assert_eq!(m.remount_data(), "nsdelegate,favordynmods");
        let f = m.remount_flags();
        for flag in [
            libc::MS_REMOUNT,
            libc::MS_NOSUID,
            libc::MS_NODEV,
            libc::MS_NOEXEC,
            libc::MS_RELATIME,
        ] {
            assert_eq!(f & flag, flag, "{flag:#x}");
        }
        assert_eq!(f & libc::MS_RDONLY, 0);
        let ro = &cgroup2_mounts(V2_ON)[1];
        assert_eq!(ro.remount_flags() & libc::MS_RDONLY, libc::MS_RDONLY);
        assert_eq!(
            ro.remount_data(),
            "nsdelegate,favordynmods,memory_recursiveprot",
            "not added twice"
        );
    }

    #[test]
    fn only_the_mounted_modes_are_active() {
        assert!(!Mode::Off.active());
        assert!(!Mode::Refused { reason: "x".into() }.active());
        let at = PathBuf::from("/x");
        assert!(Mode::Remounted { at: at.clone() }.active());
        for m in [
            Mode::Off,
            Mode::AlreadyOn { at: at.clone() },
            Mode::Mounted { at },
        ] {
            assert!(Mode::NAMES.contains(&m.name()));
        }
    }
}
