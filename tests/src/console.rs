//! A child process whose stdout is a guest's serial console, read line by line with
//! the host time each line arrived. Killed when dropped. Tests and benchmarks read
//! consoles through it alike; benchmarks have the reader stamp lines in real time
//! ([`Console::spawn_realtime`]).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One console line and when the host read it.
#[derive(Debug, Clone)]
pub struct Line {
    pub at: Instant,
    pub text: String,
    /// False for a last line cut off without its newline (the process ended mid-line).
    pub complete: bool,
}

impl Line {
    /// The value of `key=` in a `NOVA-<KEY> k=v ...` line.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.text
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    /// `field` parsed as a number.
    pub fn num(&self, key: &str) -> Option<u64> {
        self.field(key)?.parse().ok()
    }
}

#[derive(Default)]
struct Shared {
    lines: Vec<Line>,
    closed: bool,
}

/// A running guest (nova-vmm or QEMU) and its console.
pub struct Console {
    child: Option<Child>,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    stderr: Arc<Mutex<String>>,
    pub started: Instant,
}

/// Makes the calling reader thread real-time (SCHED_FIFO, lowest priority): a line is
/// stamped when it arrives, not when the scheduler next gets round to the reader. On
/// 2 cores a migration's destination spins a vCPU on one, and a starved reader stamped
/// five lines at once, inflating the measured pause for whichever VMM it hit. The
/// reader blocks in read() between lines, so it takes no CPU from the VMMs. Without
/// the privilege (not root) it stays an ordinary thread.
pub fn stamp_promptly() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sets this thread's own policy, with a valid parameter struct.
    let r = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if r != 0 {
        eprintln!(
            "console reader stays SCHED_OTHER: {}",
            std::io::Error::from_raw_os_error(r)
        );
    }
}

impl Console {
    /// Spawns `cmd` with stdout and stderr captured.
    pub fn spawn(cmd: Command) -> Console {
        Self::spawn_with(cmd, false)
    }

    /// [`Console::spawn`] with a console reader that stamps each line the moment it
    /// arrives ([`stamp_promptly`]): for benchmarks, which time the gaps between lines.
    pub fn spawn_realtime(cmd: Command) -> Console {
        Self::spawn_with(cmd, true)
    }

    fn spawn_with(mut cmd: Command, realtime: bool) -> Console {
        let started = Instant::now();
        let child = Self::piped(&mut cmd)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Self::attach(child, realtime, started)
    }

    /// `cmd` with the stdio a console reads (for [`Console::attach`]).
    pub fn piped(cmd: &mut Command) -> &mut Command {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
    }

    /// Reads the console of `child`, spawned elsewhere (from [`Console::piped`]) at
    /// `started`; `realtime` as in [`Console::spawn_realtime`].
    pub fn attach(mut child: std::process::Child, realtime: bool, started: Instant) -> Console {
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let stdout = child.stdout.take().unwrap();
        let s = shared.clone();
        std::thread::spawn(move || {
            if realtime {
                stamp_promptly();
            }
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let at = Instant::now();
                        let complete = buf.ends_with(b"\n");
                        // Only the line end goes: a cut line's trailing space is content.
                        let text = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\r', '\n'])
                            .to_string();
                        let (m, c) = &*s;
                        m.lock().unwrap().lines.push(Line { at, text, complete });
                        c.notify_all();
                    }
                }
            }
            let (m, c) = &*s;
            m.lock().unwrap().closed = true;
            c.notify_all();
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let e = stderr.clone();
        let child_err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(child_err).lines().map_while(Result::ok) {
                let mut s = e.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Console {
            child: Some(child),
            shared,
            stderr,
            started,
        }
    }

    /// Waits for the first line (from the start) matching `pred`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Line) -> bool) -> Line {
        self.wait_for_from(0, timeout, pred).1
    }

    /// Waits for a line matching `pred` at index >= `from`; returns (index, line).
    pub fn wait_for_from(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Line) -> bool,
    ) -> (usize, Line) {
        self.try_wait_for_from(from, timeout, pred)
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// [`Console::wait_for_from`] that says why instead of panicking (for benchmarks,
    /// which record a failed run and go on).
    pub fn try_wait_for_from(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Line) -> bool,
    ) -> Result<(usize, Line), String> {
        let deadline = Instant::now() + timeout;
        let (m, c) = &*self.shared;
        let mut s = m.lock().unwrap();
        loop {
            if let Some((i, l)) = s.lines.iter().enumerate().skip(from).find(|(_, l)| pred(l)) {
                return Ok((i, l.clone()));
            }
            let now = Instant::now();
            if s.closed || now >= deadline {
                let tail: Vec<_> = s
                    .lines
                    .iter()
                    .rev()
                    .take(20)
                    .rev()
                    .map(|l| l.text.clone())
                    .collect();
                drop(s);
                return Err(format!(
                    "no matching console line after {:?} (process {}).\nlast lines:\n{}\nstderr:\n{}",
                    timeout,
                    if self.is_closed() { "exited" } else { "running" },
                    tail.join("\n"),
                    self.stderr()
                ));
            }
            s = c.wait_timeout(s, deadline - now).unwrap().0;
        }
    }

    /// Waits for a line starting with `prefix`, saying why if none came.
    pub fn try_wait_line(&self, prefix: &str, timeout: Duration) -> Result<Line, String> {
        self.try_wait_for_from(0, timeout, |l| l.text.starts_with(prefix))
            .map(|(_, l)| l)
    }

    /// Waits for a line starting with `prefix`.
    pub fn wait_line(&self, prefix: &str, timeout: Duration) -> Line {
        self.wait_for(timeout, |l| l.text.starts_with(prefix))
    }

    /// Waits until the `counter` workload has ticked `n` more times: the guest runs.
    pub fn wait_more_ticks(&self, n: u64, timeout: Duration) -> Line {
        let last = crate::vmm::ticks(&self.lines()).last().map_or(0, |t| t.0);
        self.wait_line(&format!("NOVA-TICK {}", last + n), timeout)
    }

    /// Waits until no line has arrived for `quiet` (at most 10 s), and returns how
    /// many lines there are: what a paused or stopped guest printed has all arrived.
    pub fn quiet_for(&self, quiet: Duration) -> usize {
        let give_up = Instant::now() + Duration::from_secs(10);
        let mut seen = self.lines().len();
        let mut since = Instant::now();
        while since.elapsed() < quiet && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(10));
            let now = self.lines().len();
            if now != seen {
                (seen, since) = (now, Instant::now());
            }
        }
        seen
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<Line> {
        self.shared.0.lock().unwrap().lines.clone()
    }

    fn is_closed(&self) -> bool {
        self.shared.0.lock().unwrap().closed
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                // Let the readers drain the pipes.
                let (m, c) = &*self.shared;
                let s = m.lock().unwrap();
                let _ = c
                    .wait_timeout_while(s, Duration::from_secs(2), |s| !s.closed)
                    .unwrap();
                std::thread::sleep(Duration::from_millis(20));
                return st;
            }
            if Instant::now() >= deadline {
                panic!(
                    "process still running after {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every line of a process that is done: waits up to `grace` for it to exit by
    /// itself, kills it if it has not, and returns every line once its stdout closed
    /// (a last line cut off without its newline included).
    pub fn finish(&mut self, grace: Duration) -> Vec<Line> {
        let deadline = Instant::now() + grace;
        if let Some(child) = self.child.as_mut() {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.kill();
        let (m, c) = &*self.shared;
        let s = m.lock().unwrap();
        let s = c
            .wait_timeout_while(s, Duration::from_secs(2), |s| !s.closed)
            .unwrap()
            .0;
        s.lines.clone()
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGKILL.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::stamp_promptly;

    #[test]
    fn console_readers_run_real_time_when_root() {
        let policy = std::thread::spawn(|| {
            stamp_promptly();
            // SAFETY: queries the calling thread's own policy.
            unsafe { libc::sched_getscheduler(0) }
        })
        .join()
        .unwrap();
        // SAFETY: no arguments, no memory.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(policy, libc::SCHED_FIFO);
        } else {
            assert_eq!(policy, libc::SCHED_OTHER);
        }
    }
}
