//! nova-hostd's life under PID 1: start it, restart it with exponential backoff when
//! it exits (reset after it ran a while), reap every orphan the kernel hands to PID 1,
//! and on a stop request (SIGTERM/SIGPWR: power off; SIGINT from Ctrl-Alt-Del, SIGUSR1:
//! reboot) stop hostd first, then everything else, then halt. All signals are blocked
//! and taken with `sigtimedwait`, so there are no async signal handlers.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::system::Halt;

/// The first restart delay, its cap, and how long a run must last to reset it.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How long hostd gets to stop before SIGKILL (stopping its VMs: their stop timeout
/// and a margin; migrating them away: hostd's wait for the drain and a margin), and
/// everything else after it.
pub const HOSTD_STOP_GRACE: Duration = Duration::from_secs(20);
pub const HOSTD_MIGRATE_GRACE: Duration = Duration::from_secs(270);
pub const REST_STOP_GRACE: Duration = Duration::from_secs(5);

/// Restart delays: doubling from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], back to the
/// minimum after a run of [`STABLE_AFTER`].
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The delay before the next start, given how long the last run lasted.
    pub fn after_exit(&mut self, ran: Duration) -> Duration {
        if ran >= STABLE_AFTER {
            self.next = BACKOFF_MIN;
        }
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d
    }
}

/// Maps a signal to what PID 1 does: None keeps running.
pub fn stop_request(sig: libc::c_int) -> Option<Halt> {
    match sig {
        libc::SIGTERM | libc::SIGPWR | libc::SIGUSR2 => Some(Halt::PowerOff),
        libc::SIGINT | libc::SIGUSR1 => Some(Halt::Reboot),
        _ => None,
    }
}

/// Blocks every signal in the calling thread (call before starting threads, which
/// inherit the mask); children get an empty mask from `Command`.
pub fn block_all_signals() {
    // SAFETY: sigset operations on a local set; pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits up to `timeout` for a signal; the signal number.
fn wait_signal(timeout: Duration) -> Option<libc::c_int> {
    // SAFETY: local sigset and timespec, valid for the call.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        let s = libc::sigtimedwait(&set, std::ptr::null_mut(), &ts);
        (s > 0).then_some(s)
    }
}

/// Reaps every exited child; the pids and statuses reaped.
fn reap() -> Vec<(libc::pid_t, libc::c_int)> {
    let mut out = vec![];
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return out;
        }
        out.push((pid, status));
    }
}

fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {status}")
    }
}

/// Sends `sig` to `pid` (ignoring a process already gone).
fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) with plain integers.
    unsafe { libc::kill(pid, sig) };
}

/// Waits until `done()` or `grace` passes, reaping (and noting) children meanwhile.
fn wait_reaping(grace: Duration, mut on_reap: impl FnMut(libc::pid_t), done: impl Fn() -> bool) {
    let t = Instant::now();
    while !done() && t.elapsed() < grace {
        let _ = wait_signal(Duration::from_millis(100));
        for (pid, _) in reap() {
            on_reap(pid);
        }
    }
}

/// Whether PID 1 has any child left.
fn has_children() -> bool {
    // SAFETY: waitid with WNOHANG|WNOWAIT only peeks; siginfo is local.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        ) == 0
    }
}

/// Waits for a stop request, reaping meanwhile (nothing to supervise: the boot failed).
pub fn wait_for_stop() -> Halt {
    loop {
        if let Some(h) = wait_signal(Duration::from_secs(3600)).and_then(stop_request) {
            tracing::info!("stop requested: {h:?}");
            return h;
        }
        reap();
    }
}

/// Runs `make_cmd()` (hostd) for ever, restarting it with backoff, until a stop
/// request; then stops it (SIGTERM, SIGKILL after the grace), stops every other
/// process, and answers how to halt.
pub fn run(mut make_cmd: impl FnMut() -> Command, hostd_grace: Duration) -> Halt {
    let mut backoff = Backoff::default();
    let mut child: Option<(Child, Instant)> = None;
    let mut start_at = Some(Instant::now());
    let halt = loop {
        if let Some(at) = start_at {
            if Instant::now() >= at {
                start_at = None;
                match make_cmd().spawn() {
                    Ok(c) => {
                        tracing::info!(pid = c.id(), "nova-hostd started");
                        child = Some((c, Instant::now()));
                    }
                    Err(e) => {
                        let d = backoff.after_exit(Duration::ZERO);
                        tracing::error!("starting nova-hostd: {e}; again in {d:?}");
                        start_at = Some(Instant::now() + d);
                    }
                }
            }
        }
        let timeout = start_at
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600))
            .max(Duration::from_millis(1));
        if let Some(sig) = wait_signal(timeout) {
            if let Some(h) = stop_request(sig) {
                tracing::info!(signal = sig, "stop requested: {h:?}");
                break h;
            }
        }
        for (pid, status) in reap() {
            if let Some((c, started)) = &child {
                if c.id() as libc::pid_t == pid {
                    let d = backoff.after_exit(started.elapsed());
                    tracing::warn!(
                        "nova-hostd exited ({}); restarting in {d:?}",
                        describe(status)
                    );
                    child = None;
                    start_at = Some(Instant::now() + d);
                }
            }
        }
    };
    if let Some((c, _)) = child.take() {
        let pid = c.id() as libc::pid_t;
        tracing::info!(pid, "stopping nova-hostd");
        signal(pid, libc::SIGTERM);
        let gone = std::cell::Cell::new(false);
        wait_reaping(
            hostd_grace,
            |p| gone.set(gone.get() || p == pid),
            || gone.get(),
        );
        if !gone.get() {
            tracing::warn!("nova-hostd did not stop in {hostd_grace:?}: killing it");
            signal(pid, libc::SIGKILL);
        }
        tracing::info!("nova-hostd stopped");
    }
    // What hostd left (VMMs keep running across a hostd stop, by design).
    signal(-1, libc::SIGTERM);
    wait_reaping(REST_STOP_GRACE, |_| {}, || !has_children());
    signal(-1, libc::SIGKILL);
    wait_reaping(Duration::from_secs(1), |_| {}, || !has_children());
    halt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_stable_run() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(10);
        let got: Vec<u64> = (0..7).map(|_| b.after_exit(quick).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.after_exit(STABLE_AFTER), BACKOFF_MIN);
        assert_eq!(b.after_exit(quick), Duration::from_secs(2));
    }

    #[test]
    fn power_signals_power_off_and_ctrl_alt_del_reboots() {
        assert_eq!(stop_request(libc::SIGTERM), Some(Halt::PowerOff));
        assert_eq!(stop_request(libc::SIGPWR), Some(Halt::PowerOff));
        assert_eq!(stop_request(libc::SIGINT), Some(Halt::Reboot));
        assert_eq!(stop_request(libc::SIGCHLD), None);
        assert_eq!(stop_request(libc::SIGHUP), None);
    }
}
