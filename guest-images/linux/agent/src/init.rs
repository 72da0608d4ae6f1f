//! Pid-1 duties: mounting /dev, /proc and /sys, quieting the kernel's console, loading
//! the modules the initramfs lists, and powering off or resetting the machine.

use crate::{cmdline, console};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

/// The initramfs's list of modules to load, one absolute path a line, in load order.
pub const MODULE_LIST: &str = "/lib/modules/nova.modules";

/// `finit_module` flag: the file is compressed and the kernel should decompress it.
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// Mounts devtmpfs on /dev, the first thing pid 1 needs to open the serial port.
pub fn mount_dev() -> io::Result<()> {
    mount("devtmpfs", "/dev", "devtmpfs")
}

/// Mounts /proc and /sys.
pub fn mount_proc_sys() -> io::Result<()> {
    mount("proc", "/proc", "proc")?;
    mount("sysfs", "/sys", "sysfs")
}

fn mount(source: &str, target: &str, fstype: &str) -> io::Result<()> {
    let _ = std::fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).expect("no NUL in mount arguments");
    let (source_c, target_c, fstype_c) = (c(source), c(target), c(fstype));
    // SAFETY: all pointers are valid NUL-terminated strings for the call; no data.
    let rc = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            libc::MS_NOSUID,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    // Already mounted (the kernel's CONFIG_DEVTMPFS_MOUNT) is fine.
    if err.raw_os_error() == Some(libc::EBUSY) {
        return Ok(());
    }
    Err(io::Error::new(
        err.kind(),
        format!("mount {fstype} on {target}: {err}"),
    ))
}

/// Keeps the kernel's own messages (module loading, device probing) off the console,
/// where they would mix with the agent's lines, unless `loglevel=` asks otherwise.
pub fn quiet_kernel_console(cmdline: &str) {
    if cmdline::words(cmdline)
        .iter()
        .any(|w| w.starts_with("loglevel="))
    {
        return;
    }
    // SAFETY: SYSLOG_ACTION_CONSOLE_LEVEL (8) takes no buffer.
    unsafe { libc::klogctl(8, std::ptr::null_mut(), 1) };
}

/// Loads every module in [`MODULE_LIST`], giving each the parameters the command
/// line names for it. A module already loaded is fine; others failing are reported
/// and skipped, so the workloads that do not need them still run.
pub fn load_modules(cmdline: &str) {
    let list = match std::fs::read_to_string(MODULE_LIST) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => return console::error("module_list", &format!(" error=\"{e}\"")),
    };
    for path in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Err(e) = load_module(Path::new(path), cmdline) {
            console::error(
                "module",
                &format!(" path={path} errno={}", e.raw_os_error().unwrap_or(0)),
            );
        }
    }
}

fn load_module(path: &Path, cmdline: &str) -> io::Result<()> {
    let file = File::open(path)?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let name = file_name.split(".ko").next().unwrap_or(file_name);
    let params = CString::new(cmdline::module_params(cmdline, name))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = if file_name.ends_with(".ko") {
        0
    } else {
        MODULE_INIT_COMPRESSED_FILE
    };
    // SAFETY: finit_module reads the open fd and the NUL-terminated params string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EEXIST) => Ok(()),
        _ => Err(err),
    }
}

/// Waits up to `timeout` for `path` to appear (devices probe after their module loads).
pub fn wait_for(path: &Path, timeout: Duration) -> bool {
    let step = Duration::from_millis(10);
    let mut waited = Duration::ZERO;
    while !path.exists() {
        if waited >= timeout {
            return false;
        }
        std::thread::sleep(step);
        waited += step;
    }
    true
}

/// Flushes filesystems and the console, then powers the machine off.
pub fn power_off() -> ! {
    reboot(libc::RB_POWER_OFF)
}

/// Flushes filesystems and the console, then resets the machine.
pub fn reset() -> ! {
    reboot(libc::RB_AUTOBOOT)
}

fn reboot(how: libc::c_int) -> ! {
    console::drain();
    // SAFETY: sync and reboot take no pointers; reboot returns only on failure.
    let rc = unsafe {
        libc::sync();
        libc::reboot(how)
    };
    let _ = rc;
    console::error(
        "reboot",
        &format!(
            " errno={}",
            io::Error::last_os_error().raw_os_error().unwrap_or(0)
        ),
    );
    sleep_forever()
}

/// Pid 1 must never exit (the kernel panics): this is where it ends up instead.
pub fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
