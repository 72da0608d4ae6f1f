//! The one guest launcher, for tests and benchmarks: nova-vmm (and QEMU microvm, the
//! reference and the benchmarks' peer) booting a guest whose console is read line by
//! line; and the VMM's API reached through the contract's client ([`client`]).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nova_vmm_api::VmmClient;

use crate::{binary, guest_image, Console, TempDir};

/// A nova-vmm command line being built, with a private directory for its files.
pub struct VmmCmd {
    pub cmd: Command,
    pub dir: TempDir,
    realtime: bool,
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
        Self::of(&binary("nova-vmm"))
    }

    /// `PROGRAM run` with nothing else: a nova-vmm binary named by path (the
    /// benchmarks measure the one they are given).
    pub fn of(program: &Path) -> Self {
        let mut cmd = Command::new(program);
        cmd.arg("run");
        cmd.env("NOVA_LOG", "info");
        VmmCmd {
            cmd,
            dir: TempDir::new(),
            realtime: false,
        }
    }

    /// The same, run inside network namespace `ns`.
    pub fn in_netns(self, ns: &crate::net::NetNs) -> Self {
        VmmCmd {
            cmd: in_netns(&self.cmd, &ns.name),
            ..self
        }
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, a: I) -> Self {
        self.cmd.args(a);
        self
    }

    /// Sets an environment variable of the VMM (`NOVA_LOG`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Adds `--api-sock` in the private directory and returns its path.
    pub fn with_api(mut self) -> (Self, PathBuf) {
        let sock = self.dir.join("api.sock");
        self.cmd.arg("--api-sock").arg(&sock);
        (self, sock)
    }

    /// Has the console read by a real-time thread ([`Console::spawn_realtime`]).
    pub fn realtime_console(mut self) -> Self {
        self.realtime = true;
        self
    }

    /// Starts it; the console is its stdout.
    pub fn spawn(self) -> Vm {
        let console = match self.realtime {
            true => Console::spawn_realtime(self.cmd),
            false => Console::spawn(self.cmd),
        };
        Vm {
            console,
            _dir: self.dir,
        }
    }
}

/// `cmd` run inside network namespace `ns` (`ip netns exec`), with its environment.
fn in_netns(cmd: &Command, ns: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c
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

/// The API of the VMM serving `sock`, through the contract's client (call it with
/// `nova_http::blocking::block_on`), once the socket answers: a VMM creates it
/// shortly after it starts.
pub fn client(sock: &Path) -> VmmClient {
    wait_for_socket(sock);
    VmmClient::new(sock, Duration::from_secs(30)).expect("a client of the VMM's socket")
}

/// Sends `request` as it is (bytes no client would send: tests of malformed input)
/// and returns the answer's status and body.
pub fn raw_request(sock: &Path, request: &[u8]) -> (u16, Vec<u8>) {
    let mut s = wait_for_socket(sock);
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text}"));
    let body = match answer.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => answer[end + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
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

/// How QEMU backs guest RAM.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum QemuRam {
    /// A memfd, like nova-vmm's: memory figures compare like with like.
    Memfd,
    /// QEMU's default anonymous RAM: its fastest migration (on a memfd it reads every
    /// never-touched page through the mapping, which allocates it: 1 GiB takes seconds).
    Anonymous,
}

/// QEMU microvm with KVM booting `kernel` (`-kernel`, PVH ELF) with `append` as its
/// command line: virtio-mmio devices (modern), serial on stdout, no reboot.
pub fn qemu_microvm(kernel: &Path, mem_mib: u64, vcpus: u8, append: &str, ram: QemuRam) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-M", "microvm,x-option-roms=off,rtc=off"]);
    if ram == QemuRam::Memfd {
        c.args(["-machine", "memory-backend=mem"]).args([
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem_mib}M"),
        ]);
    }
    c.args(["-enable-kvm", "-cpu", "host,-arch-capabilities"])
        .args(["-m", &format!("{mem_mib}M"), "-smp", &vcpus.to_string()])
        .args(["-nodefaults", "-no-user-config", "-no-reboot"])
        .args(["-display", "none", "-serial", "stdio"])
        .args(["-global", "virtio-mmio.force-legacy=false"])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", append]);
    c
}

/// QEMU microvm booting the test guest (1 vCPU, with the host's TSC rate on its command
/// line, which QEMU does not publish), with `extra` arguments (devices); run inside
/// network namespace `netns` when given.
pub fn qemu_testguest(netns: Option<&str>, mem_mib: u64, append: &str, extra: &[&str]) -> Console {
    let append = format!("{append} nova.tsc_khz={}", crate::host_tsc_khz());
    let mut c = qemu_microvm(
        &guest_image("testguest.elf"),
        mem_mib,
        1,
        &append,
        QemuRam::Anonymous,
    );
    c.args(extra);
    Console::spawn(match netns {
        Some(ns) => in_netns(&c, ns),
        None => c,
    })
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
