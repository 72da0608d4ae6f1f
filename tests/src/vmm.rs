//! Booting guests under nova-vmm (and QEMU, the reference), and talking to their API.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{binary, guest_image, Console, TempDir};

/// A nova-vmm command line being built, with a private directory for its files.
pub struct VmmCmd {
    pub cmd: Command,
    pub dir: TempDir,
}

impl VmmCmd {
    /// `nova-vmm run --kernel testguest.elf --cmdline "nova.workload=<workload> <extra>"`.
    pub fn testguest(workload: &str) -> Self {
        let mut c = Self::raw();
        c.cmd.arg("--kernel").arg(guest_image("testguest.elf"));
        c.cmd
            .args(["--cmdline", &format!("nova.workload={workload}")]);
        c
    }

    /// `nova-vmm run` with nothing else.
    pub fn raw() -> Self {
        let mut cmd = Command::new(binary("nova-vmm"));
        cmd.arg("run");
        cmd.env("NOVA_LOG", "info");
        VmmCmd {
            cmd,
            dir: TempDir::new(),
        }
    }

    /// The same, run inside network namespace `ns`.
    pub fn in_netns(self, ns: &crate::net::NetNs) -> Self {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
            .arg(self.cmd.get_program())
            .args(self.cmd.get_args());
        for (k, v) in self.cmd.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        VmmCmd { cmd, dir: self.dir }
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, a: I) -> Self {
        self.cmd.args(a);
        self
    }

    /// Adds `--api-sock` in the private directory and returns its path.
    pub fn with_api(mut self) -> (Self, PathBuf) {
        let sock = self.dir.join("api.sock");
        self.cmd.arg("--api-sock").arg(&sock);
        (self, sock)
    }

    /// Starts it; the console is its stdout.
    pub fn spawn(self) -> Vm {
        let console = Console::spawn(self.cmd);
        Vm {
            console,
            _dir: self.dir,
        }
    }
}

/// A running VMM and the directory its files live in.
pub struct Vm {
    pub console: Console,
    _dir: TempDir,
}

impl Vm {
    pub fn booted(&self) -> crate::Line {
        self.console
            .wait_line("NOVA-BOOTED", Duration::from_secs(20))
    }
}

/// One HTTP request to a VMM's API socket: (status, body as JSON or null).
pub fn api(sock: &Path, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = wait_for_socket(sock);
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut b = vec![0u8; len];
    r.read_exact(&mut b).unwrap();
    (
        status,
        serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null),
    )
}

/// Connects to `sock`, waiting up to 10 s for the VMM to create it.
pub fn wait_for_socket(sock: &Path) -> UnixStream {
    for _ in 0..1000 {
        if let Ok(s) = UnixStream::connect(sock) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("API socket {} never answered", sock.display());
}

/// `nova-vmm ctl --api-sock SOCK <args>`: (exit status, stdout, stderr).
pub fn ctl(sock: &Path, args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let out = Command::new(binary("nova-vmm"))
        .arg("ctl")
        .arg("--api-sock")
        .arg(sock)
        .args(args)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// QEMU microvm booting the test guest: same guest, virtio-mmio devices, serial on
/// stdout; run inside network namespace `netns` when given.
pub fn qemu_testguest(netns: Option<&str>, mem_mib: u64, append: &str, extra: &[&str]) -> Console {
    let mut c = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "qemu-system-x86_64"]);
            c
        }
        None => Command::new("qemu-system-x86_64"),
    };
    c.args([
        "-M",
        "microvm,x-option-roms=off,rtc=off",
        "-enable-kvm",
        "-cpu",
        "host,-arch-capabilities",
    ])
    .args([
        "-m",
        &format!("{mem_mib}M"),
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
    ])
    .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
    .args(["-global", "virtio-mmio.force-legacy=false", "-kernel"])
    .arg(guest_image("testguest.elf"))
    .args([
        "-append",
        &format!("{append} nova.tsc_khz={}", crate::host_tsc_khz()),
    ])
    .args(extra);
    Console::spawn(c)
}

/// NOVA-TICK sequence numbers in `lines`, with arrival times.
pub fn ticks(lines: &[crate::Line]) -> Vec<(u64, std::time::Instant)> {
    lines
        .iter()
        .filter_map(|l| {
            l.text
                .strip_prefix("NOVA-TICK ")
                .and_then(|s| s.trim().parse().ok())
                .map(|n| (n, l.at))
        })
        .collect()
}
