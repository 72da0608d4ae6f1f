//! Start a hostd: a `nova-hostd` process on a fresh data dir (optionally inside a
//! network namespace), a blocking JSON client for its API, and waits on VM states and
//! console lines. Dropping a [`Hostd`] kills it and every VMM it started (they are
//! detached from hostd on purpose, so they would outlive it), then removes its dir.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::net::{ip, NetNs};
use crate::{binary, unique, Console, TempDir};

/// How to start a hostd.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    /// Network namespace to run in (and to reach it through); root namespace if None.
    pub netns: Option<String>,
    /// Listen address; a free loopback port when None.
    pub listen: Option<SocketAddr>,
    /// More flags (`--bridge`, `--vxlan-vni`, `--cpu-overcommit`, ...).
    pub args: Vec<String>,
    /// Data dir; a fresh one under the hostd's temp dir when None.
    pub data_dir: Option<PathBuf>,
}

/// A running nova-hostd.
pub struct Hostd {
    pub opts: Opts,
    pub addr: SocketAddr,
    pub token: String,
    pub dir: TempDir,
    proc: Option<Console>,
}

pub use crate::free_port;

/// The test guest (`guest-images/out/testguest.elf`).
pub fn testguest() -> PathBuf {
    crate::guest_image("testguest.elf")
}

impl Hostd {
    /// Starts a hostd and waits until `/v1/health` answers.
    pub fn start(opts: Opts) -> Hostd {
        let dir = TempDir::new();
        let token = format!("nova-test-token-{}", crate::unique("t"));
        std::fs::write(dir.join("token"), &token).unwrap();
        let addr = opts
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let mut h = Hostd {
            opts,
            addr,
            token,
            dir,
            proc: None,
        };
        h.spawn();
        h
    }

    fn spawn(&mut self) {
        let bin = binary("nova-hostd");
        let mut cmd = match &self.opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.data())
            .arg("--token-file")
            .arg(self.dir.join("token"))
            .arg("--vmm-bin")
            .arg(binary("nova-vmm"))
            .args(&self.opts.args);
        let c = Console::spawn(cmd);
        self.proc = Some(c);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = self.try_request("GET", "/v1/health", None, None) {
                return;
            }
            let err = self.stderr();
            if err.contains("nova-hostd: listening on") && self.opts.listen.is_none() {
                // Another process took the free port first: try another.
                self.kill();
                self.addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
                return self.spawn();
            }
            if err.contains("\nnova-hostd: ") || err.starts_with("nova-hostd: ") {
                panic!("nova-hostd failed to start:\n{err}");
            }
            if Instant::now() > deadline {
                panic!(
                    "nova-hostd did not answer within 20 s; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The data dir.
    pub fn data(&self) -> PathBuf {
        self.opts
            .data_dir
            .clone()
            .unwrap_or_else(|| self.dir.join("data"))
    }

    /// hostd's log so far.
    pub fn stderr(&self) -> String {
        self.proc.as_ref().map(|p| p.stderr()).unwrap_or_default()
    }

    /// SIGKILLs hostd alone (its VMMs keep running).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            // Under `ip netns exec` the pid is hostd's own (ip execs it).
            p.kill();
        }
    }

    /// Kills hostd and starts it again on the same data dir.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The pid of hostd.
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map(|p| p.pid()).unwrap_or(0)
    }

    /// One request; Err on a connection failure.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> std::io::Result<(u16, Value)> {
        let addr = self.addr;
        let req = {
            let body = body.unwrap_or("");
            let auth = token
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            format!(
                "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        };
        let raw = match &self.opts.netns {
            None => exchange(addr, req.as_bytes())?,
            Some(ns) => in_netns(ns, move || exchange(addr, req.as_bytes()))?,
        };
        parse(&raw)
    }

    /// One request with the host's token; panics on connection errors.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let t = self.token.clone();
        self.try_request(method, path, body, Some(&t))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\nhostd stderr:\n{}", self.stderr()))
    }

    /// GET, requiring 200.
    pub fn get(&self, path: &str) -> Value {
        let (s, v) = self.request("GET", path, None);
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    /// POST JSON, requiring a 2xx.
    pub fn post(&self, path: &str, body: &Value) -> Value {
        let (s, v) = self.request("POST", path, Some(&body.to_string()));
        assert!(
            (200..300).contains(&s),
            "POST {path} {body}: {s} {v}\nhostd stderr:\n{}",
            self.stderr()
        );
        v
    }

    /// Creates a VM from `spec` (JSON), requiring success.
    pub fn create_vm(&self, spec: Value) -> Value {
        self.post("/v1/vms", &spec)
    }

    /// Waits until VM `id` is in `state`.
    pub fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (s, v) = self.request("GET", &format!("/v1/vms/{id}"), None);
            if s == 200 && v["state"] == state {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "VM {id} not {state} after {timeout:?}: {s} {v}\nhostd stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the VM's console has a line starting with `prefix`; returns it.
    pub fn wait_console(&self, id: &str, prefix: &str, timeout: Duration) -> String {
        self.wait_console_any(id, &[prefix], timeout)
    }

    /// Waits until the VM's console has a line starting with any of `prefixes`.
    pub fn wait_console_any(&self, id: &str, prefixes: &[&str], timeout: Duration) -> String {
        let prefix = prefixes;
        let deadline = Instant::now() + timeout;
        loop {
            let (s, v) = self.request("GET", &format!("/v1/vms/{id}/console?lines=10000"), None);
            if s == 200 {
                if let Some(l) = v["lines"].as_array().and_then(|ls| {
                    ls.iter()
                        .filter_map(|l| l.as_str())
                        .find(|l| prefix.iter().any(|p| l.starts_with(p)))
                        .map(str::to_owned)
                }) {
                    return l;
                }
            }
            if Instant::now() > deadline {
                panic!("no console line {prefix:?} from VM {id} after {timeout:?}: {v}\nhostd stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pids of the VMMs hostd's data dir records.
    pub fn vmm_pids(&self) -> Vec<u32> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.data().join("vms")) {
            for e in rd.flatten() {
                if let Some(pid) = std::fs::read_to_string(e.path().join("vmm.pid"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    out.push(pid);
                }
            }
        }
        out
    }
}

/// Two hosts (namespaces) joined by veth, each with a hostd on the overlay.
pub struct TwoHosts {
    pub a: Hostd,
    pub b: Hostd,
    pub ns_a: NetNs,
    pub ns_b: NetNs,
}

fn host_opts(ns: &NetNs, me: u8, peer: u8, dev: &str) -> Opts {
    let addr = format!("198.51.100.{me}");
    Opts {
        netns: Some(ns.name.clone()),
        listen: Some(format!("{addr}:7070").parse().unwrap()),
        args: [
            "--bridge",
            "novabr0",
            "--host-cidr",
            &format!("203.0.113.{me}/24"),
            "--advertise-ip",
            &addr,
            "--vxlan-vni",
            "42",
            "--vxlan-dev",
            dev,
            "--vxlan-peer",
            &format!("198.51.100.{peer}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        data_dir: None,
    }
}

impl TwoHosts {
    /// Makes the namespaces and the veth, and starts both hostd.
    #[allow(clippy::new_without_default)]
    pub fn new() -> TwoHosts {
        let (ns_a, ns_b) = (NetNs::new(), NetNs::new());
        let (va, vb) = (unique("nva"), unique("nvb"));
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &ns_a.name]);
        ip(&["link", "set", &vb, "netns", &ns_b.name]);
        for (ns, dev, a) in [
            (&ns_a, &va, "198.51.100.1/24"),
            (&ns_b, &vb, "198.51.100.2/24"),
        ] {
            ip(&["-n", &ns.name, "addr", "add", a, "dev", dev]);
            ip(&["-n", &ns.name, "link", "set", dev, "up"]);
        }
        let a = Hostd::start(host_opts(&ns_a, 1, 2, &va));
        let b = Hostd::start(host_opts(&ns_b, 2, 1, &vb));
        TwoHosts { a, b, ns_a, ns_b }
    }
}

/// `ping` from inside `ns`; true when a reply came.
pub fn ping(ns: &NetNs, addr: &str, count: u32) -> bool {
    let out = ns.run(&[
        "ping",
        "-c",
        &count.to_string(),
        "-i",
        "0.2",
        "-W",
        "2",
        addr,
    ]);
    out.status.success()
}

/// One HTTP/1.1 request to any server on this namespace (`Connection: close`).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> std::io::Result<(u16, Value)> {
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    parse(&exchange(addr, req.as_bytes())?)
}

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

impl Drop for Hostd {
    fn drop(&mut self) {
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

fn exchange(addr: SocketAddr, req: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(req)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Runs `f` on a thread that has entered network namespace `ns` (sockets it makes
/// live there).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this thread only, with an fd we hold open.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| std::io::Error::other("netns thread panicked"))?
}

fn parse(raw: &[u8]) -> std::io::Result<(u16, Value)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no headers"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("status"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let mut body = raw[end + 4..].to_vec();
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16)
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[eol + 4 + n..];
        }
        body = out;
    }
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    Ok((status, v))
}
