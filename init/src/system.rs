//! The kernel interfaces PID 1 needs first: mounting the pseudo file systems, loading
//! modules with `finit_module`, setting the hostname, and the final `reboot(2)`.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The initramfs's list of modules, one path a line, in load order (dependencies first).
pub const MODULE_LIST: &str = "/lib/modules/nova.modules";

/// Mounts `fstype` from `source` on `target` (created), with `flags` and `data`.
/// Something already mounted there (EBUSY) is fine.
pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let _ = std::fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let (src, tgt, fs) = (c(source)?, c(target)?, c(fstype)?);
    let data = data.map(c).transpose()?;
    // SAFETY: valid NUL-terminated strings (or null data) for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ptr(),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EBUSY) {
        return Ok(());
    }
    Err(io::Error::new(
        err.kind(),
        format!("mount {fstype} {source} on {target}: {err}"),
    ))
}

/// Unmounts `target` (lazily: a process still holding a file must not stop power-off).
pub fn umount(target: &str) -> io::Result<()> {
    let t = CString::new(target).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// /dev, /proc, /sys, /run, /tmp and the cgroup2 hierarchy hostd's jail uses.
pub fn mount_base() -> io::Result<()> {
    let nosuid = libc::MS_NOSUID;
    let nodev = nosuid | libc::MS_NODEV | libc::MS_NOEXEC;
    mount("devtmpfs", "/dev", "devtmpfs", nosuid, Some("mode=0755"))?;
    mount("proc", "/proc", "proc", nodev, None)?;
    mount("sysfs", "/sys", "sysfs", nodev, None)?;
    mount(
        "tmpfs",
        "/run",
        "tmpfs",
        nosuid | libc::MS_NODEV,
        Some("mode=0755"),
    )?;
    mount(
        "tmpfs",
        "/tmp",
        "tmpfs",
        nosuid | libc::MS_NODEV,
        Some("mode=1777"),
    )?;
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        nosuid | libc::MS_NOEXEC,
        None,
    )?;
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2", nodev, None)?;
    Ok(())
}

/// Loads the module at `path` (a plain `.ko`); one already loaded is fine.
pub fn load_module(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    let params = c"";
    // SAFETY: finit_module reads the open fd and the NUL-terminated params string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EEXIST) => Ok(()),
        _ => Err(err),
    }
}

/// Loads every module the image lists, then `extra` (names, from /lib/modules/NAME.ko).
/// A module failing is logged and skipped: a driver for absent hardware must not
/// stop the host.
pub fn load_modules(extra: &[String]) -> usize {
    let mut paths: Vec<String> = std::fs::read_to_string(MODULE_LIST)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    paths.extend(extra.iter().map(|m| format!("/lib/modules/{m}.ko")));
    let mut loaded = 0;
    for p in &paths {
        match load_module(Path::new(p)) {
            Ok(()) => loaded += 1,
            Err(e) => tracing::debug!(module = %p, "not loaded: {e}"),
        }
    }
    loaded
}

/// Sets the kernel's hostname.
pub fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes Ctrl-Alt-Del send SIGINT to PID 1 instead of rebooting at once.
pub fn disable_cad() {
    // SAFETY: RB_DISABLE_CAD takes no argument.
    unsafe { libc::reboot(libc::RB_DISABLE_CAD) };
}

/// What the machine does at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    PowerOff,
    Reboot,
}

/// Syncs file systems and powers off or reboots; never returns.
pub fn halt(how: Halt) -> ! {
    // SAFETY: sync and reboot take no pointers.
    unsafe {
        libc::sync();
        libc::reboot(match how {
            Halt::PowerOff => libc::RB_POWER_OFF,
            Halt::Reboot => libc::RB_AUTOBOOT,
        });
    }
    // reboot(2) only returns on error; PID 1 must not exit (the kernel would panic).
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// `n` random bytes from the kernel, hex-encoded (tokens).
pub fn random_hex(n: usize) -> io::Result<String> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        // SAFETY: writes at most n - got bytes into buf from offset got.
        let r = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), n - got, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        got += r as usize;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
