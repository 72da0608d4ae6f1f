//! The harness for the agent's host-mode tests: runs the built binary, collects its
//! stdout lines with arrival times, and cleans up the process and temp files.
#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A running `nova-agent` in host mode; killed on drop.
pub struct Agent {
    child: Child,
    lines: Receiver<(Instant, String)>,
    /// Every line received so far, for failure messages.
    pub seen: Vec<String>,
}

impl Agent {
    /// Starts the agent with `args` (e.g. `["--cmdline", "nova.workload=counter"]`).
    pub fn start(args: &[&str]) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nova-agent"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nova-agent");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Agent {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line and when it arrived, or None after `timeout` or at end of output.
    pub fn next_line(&mut self, timeout: Duration) -> Option<(Instant, String)> {
        let got = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(got.1.clone());
        Some(got)
    }

    /// Reads lines until one starts with `prefix`; panics after `timeout`.
    pub fn wait_for(&mut self, prefix: &str, timeout: Duration) -> (Instant, String) {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((t, l)) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return (t, l);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no '{prefix}' within {timeout:?}; saw {:?}", self.tail())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("agent ended without '{prefix}'; saw {:?}", self.tail())
                }
            }
        }
    }

    /// Every line until the output ends (the agent exited); panics after `timeout`.
    pub fn rest(&mut self, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((_, l)) => {
                    self.seen.push(l.clone());
                    out.push(l);
                }
                Err(RecvTimeoutError::Disconnected) => return out,
                Err(RecvTimeoutError::Timeout) => panic!("agent still printing after {timeout:?}"),
            }
        }
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < end,
                "agent did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn tail(&self) -> &[String] {
        &self.seen[self.seen.len().saturating_sub(20)..]
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file in the temp dir, unique to this process and call, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(tag: &str) -> TempFile {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempFile(std::env::temp_dir().join(format!("nova-agent-{tag}-{}-{n}", std::process::id())))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The value of `key=` in a `NOVA-...` line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .skip(1)
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// The numeric value of `key=` in a line; panics if absent.
pub fn num(line: &str, key: &str) -> u64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {key}= in '{line}'"))
}

pub const SECS: fn(u64) -> Duration = Duration::from_secs;
