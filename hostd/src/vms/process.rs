//! `nova-vmm` processes: started detached from hostd (their own session, stdio on
//! files, never on pipes to hostd) so that hostd can die, restart or be upgraded
//! without taking a VM down; and found again from their pid files.

use std::path::Path;
use std::process::Stdio;

use crate::error::{IoContext, Result};

/// A VMM hostd started: its pid and a handle to reap it.
pub struct Spawned {
    pub pid: u32,
    pub child: tokio::process::Child,
}

/// Starts `vmm_bin run <args>` in the VM's directory, stderr appended to `log`.
/// With `jail`, the child is forked into a PID namespace of its own and enters the
/// jail before exec (see [`crate::jail`]).
pub fn spawn(
    vmm_bin: &Path,
    args: &[String],
    dir: &Path,
    log: &Path,
    jail: Option<crate::jail::Prepared>,
) -> Result<Spawned> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .ctx(|| format!("opening {}", log.display()))?;
    let mut cmd = tokio::process::Command::new(vmm_bin);
    cmd.arg("run")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    cmd.env("NO_COLOR", "1");
    let jailed = jail.is_some();
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent;
    // `Prepared::enter` makes syscalls only, on data computed before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(j) = &jail {
                j.enter()?;
            }
            Ok(())
        });
    }
    let child = if jailed {
        crate::jail::spawn_in_new_pid_ns(|| cmd.spawn())
            .ctx(|| "a PID namespace for the VMM".to_string())?
    } else {
        cmd.spawn()
    }
    .ctx(|| format!("starting {}", vmm_bin.display()))?;
    let pid = child.id().unwrap_or(0);
    Ok(Spawned { pid, child })
}

/// Whether `pid` is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}

/// Whether `pid` is a nova-vmm whose command line names `marker` (its VM directory).
pub fn is_our_vmm(pid: u32, marker: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let exe_ok = args.first().is_some_and(|a| a.ends_with("nova-vmm"));
    // Under the directory: `/vms/a/` must not match `/vms/ab/`.
    let m = format!("{}/", marker.to_string_lossy());
    exe_ok && args.iter().any(|a| a.contains(&m))
}

/// The real uid of process `pid`.
pub fn uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) -> bool {
    if pid == 0 {
        return false;
    }
    // SAFETY: kill(2) on a pid we supervise; no memory involved.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// What the host sees of a VMM process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// User and system CPU time.
    pub cpu_ms: u64,
    /// Resident memory of the process itself (anonymous and file pages).
    pub rss_bytes: u64,
    /// Resident guest memory: guest RAM is a memfd, so it shows as shared memory.
    pub guest_bytes: u64,
}

/// What the host sees of VMM `pid`.
pub fn stats(pid: u32) -> Option<Stats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    Some(Stats {
        cpu_ms: ticks * 1000 / hz,
        rss_bytes: (kib("RssAnon:") + kib("RssFile:")) * 1024,
        guest_bytes: kib("RssShmem:") * 1024,
    })
}

/// Reads a pid file.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&p| p > 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_is_alive_and_not_a_vmm() {
        let me = std::process::id();
        assert!(super::alive(me));
        assert!(!super::is_our_vmm(me, std::path::Path::new("/nonexistent")));
        assert!(!super::alive(0x7fff_fff0));
        assert!(super::stats(me).unwrap().rss_bytes > 0);
    }
}
