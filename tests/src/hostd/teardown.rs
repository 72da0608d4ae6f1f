//! What dropping a [`Hostd`] does: a failed test first shows what hostd and each
//! VMM said last, then hostd and every VMM it started are killed and the taps of its
//! VMs removed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::Hostd;

/// Whether `pid` is a live nova-vmm.
pub fn is_vmm(pid: u32) -> bool {
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false);
    alive
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("nova-vmm"))
}

/// Kills every nova-vmm whose command line names a path under `dir`.
pub fn kill_vmms_under(dir: &Path) {
    // Paths under the dir (a sibling dir may share its name as a prefix).
    let needle = format!("{}/", dir.to_string_lossy());
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let exe = c.split(|&b| b == 0).next().unwrap_or_default().to_vec();
            let c = String::from_utf8_lossy(&c);
            if String::from_utf8_lossy(&exe).ends_with("nova-vmm") && c.contains(&needle) {
                // SAFETY: kill(2) on a VMM this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Hostd {
    fn drop(&mut self) {
        // A failed test shows what hostd and each VMM said last: on CI that is all
        // there is to go on once the temporary directory is gone.
        if std::thread::panicking() {
            eprintln!(
                "--- hostd {} log (tail) ---\n{}",
                self.addr,
                tail(&self.stderr(), 80)
            );
            if let Ok(rd) = std::fs::read_dir(self.data().join("vms")) {
                for e in rd.flatten() {
                    let log = std::fs::read_to_string(e.path().join("vmm.log")).unwrap_or_default();
                    eprintln!(
                        "--- VMM log of {} (tail) ---\n{}",
                        e.file_name().to_string_lossy(),
                        tail(&log, 30)
                    );
                }
            }
        }
        self.kill();
        kill_vmms_under(self.dir.path());
        kill_vmms_under(&self.data());
        // Taps left by VMs still defined (namespaces clean themselves up).
        if self.opts.netns.is_none() {
            if let Ok(rd) = std::fs::read_dir(self.data().join("vms")) {
                for e in rd.flatten() {
                    if let Ok(rec) = std::fs::read(e.path().join("vm.json")) {
                        if let Ok(v) = serde_json::from_slice::<Value>(&rec) {
                            for n in v["nics"].as_array().cloned().unwrap_or_default() {
                                if let Some(t) = n["tap"].as_str() {
                                    let _ = Command::new("ip").args(["link", "del", t]).output();
                                }
                            }
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
