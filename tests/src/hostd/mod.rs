//! Start a hostd: a `nova-hostd` process on a fresh data dir (optionally inside a
//! network namespace), its typed client (`HostdClient`, called from the test's thread
//! in the hostd's namespace), and waits on VM states and console lines. Dropping a
//! [`Hostd`] kills it and every VMM it started (they are detached from hostd on
//! purpose, so they would outlive it), then removes its dir.
//!
//! Raw HTTP ([`Hostd::raw`], [`Hostd::request`], [`http`]) is only for what a typed
//! client cannot send: malformed input, missing tokens (and other tiers' tests that
//! read hostd's answers loosely).

mod cluster;
mod exposition;
mod joined;
mod raw;
mod specs;
mod teardown;

pub use joined::{hostd_for, wait_hosts_ready};

pub use specs::{controller_disk_guest, guest, testguest};
pub use teardown::{is_vmm, kill_vmms_under};

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nova_hostd_api::{HostdClient, VmInfo, VmSpec, VmState};
use nova_http::blocking::block_on;
use serde_json::Value;

use crate::net::{ip, NetNs};
use crate::{binary, unique, wait_for, Console, TempDir};

pub use crate::free_port;
pub use cluster::Bridged;
pub use exposition::{Exposition, Sample};
pub use raw::http;

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
    /// Environment variables for hostd (`NOVA_LOG`).
    pub env: Vec<(String, String)>,
    /// A command hostd runs under, which must exec it with the arguments after its
    /// own (`unshare -m sh -c '...; exec "$@"' sh`); none when empty. Not with `netns`.
    pub wrap: Vec<String>,
    /// The CA hostd's certificate is verified with: hostd serves https (its own
    /// `--tls-cert` in `args`, or one the controller issues), no `--insecure-http`.
    pub tls_ca: Option<PathBuf>,
}

/// A running nova-hostd.
pub struct Hostd {
    pub opts: Opts,
    pub addr: SocketAddr,
    pub token: String,
    pub dir: TempDir,
    api: HostdClient,
    proc: Option<Console>,
}

/// A VM state named either way.
pub trait AsState {
    fn as_state(&self) -> VmState;
}

impl AsState for VmState {
    fn as_state(&self) -> VmState {
        *self
    }
}

impl AsState for &str {
    fn as_state(&self) -> VmState {
        serde_json::from_value(Value::String(self.to_string()))
            .unwrap_or_else(|_| panic!("{self:?} is not a VM state"))
    }
}

/// Runs `f` with the calling thread in network namespace `ns` (sockets made meanwhile
/// live there), then puts the thread back where it was.
pub fn in_namespace<T>(ns: Option<&str>, f: impl FnOnce() -> T) -> T {
    let Some(ns) = ns else { return f() };
    use std::os::fd::AsRawFd;
    let here = std::fs::File::open("/proc/thread-self/ns/net").expect("own netns");
    let there = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns file");
    // SAFETY: setns on this thread only, with fds we hold open.
    assert_eq!(
        unsafe { libc::setns(there.as_raw_fd(), libc::CLONE_NEWNET) },
        0,
        "setns {ns}"
    );
    let out = f();
    // SAFETY: as above, back to the namespace the thread came from.
    assert_eq!(
        unsafe { libc::setns(here.as_raw_fd(), libc::CLONE_NEWNET) },
        0,
        "setns back"
    );
    out
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
        let api = client(addr, &token, opts.tls_ca.as_deref());
        let mut h = Hostd {
            opts,
            addr,
            api,
            token,
            dir,
            proc: None,
        };
        h.spawn();
        h
    }

    fn spawn(&mut self) {
        let bin = binary("nova-hostd");
        let mut cmd = match (&self.opts.netns, self.opts.wrap.split_first()) {
            (Some(ns), _) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            (None, Some((program, args))) => {
                let mut c = Command::new(program);
                c.args(args).arg(&bin);
                c
            }
            (None, None) => Command::new(&bin),
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
        let has = |f: &str| self.opts.args.iter().any(|a| a == f);
        // Unless the test says otherwise: plaintext, and any host path but hostd's own.
        if !has("--tls-cert") && !has("--insecure-http") && self.opts.tls_ca.is_none() {
            cmd.arg("--insecure-http");
        }
        if !has("--image-root") {
            cmd.args(["--image-root", "/"]);
        }
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        let c = Console::spawn(cmd);
        self.proc = Some(c);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.wait(self.api.health()).is_ok() {
                return;
            }
            let err = self.stderr();
            if err.contains("nova-hostd: listening on") && self.opts.listen.is_none() {
                // Another process took the free port first: try another.
                self.kill();
                self.addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
                self.api = client(self.addr, &self.token, self.opts.tls_ca.as_deref());
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

    /// The typed client of this hostd (use it through [`Hostd::ok`] or
    /// [`Hostd::wait`], which call from the hostd's network namespace).
    pub fn api(&self) -> &HostdClient {
        &self.api
    }

    /// Runs a call of [`Hostd::api`] to its end.
    pub fn wait<T>(&self, f: impl Future<Output = T>) -> T {
        in_namespace(self.opts.netns.as_deref(), || block_on(f))
    }

    /// Runs a call of [`Hostd::api`], requiring success.
    pub fn ok<T>(&self, f: impl Future<Output = Result<T, nova_http::Error>>) -> T {
        self.wait(f)
            .unwrap_or_else(|e| panic!("{e}\nhostd stderr:\n{}", self.stderr()))
    }

    /// Runs a call of [`Hostd::api`] that must fail; its status and error body.
    pub fn refused<T: std::fmt::Debug>(
        &self,
        f: impl Future<Output = Result<T, nova_http::Error>>,
    ) -> (u16, nova_hostd_api::ErrorBody) {
        match self.wait(f) {
            Ok(v) => panic!("expected a refusal, got {v:?}"),
            Err(nova_http::Error::Status { status, body, .. }) => (status, body),
            Err(e) => panic!("expected an error answer, got {e}"),
        }
    }

    /// Creates a VM, requiring success.
    pub fn create_vm(&self, spec: &VmSpec) -> VmInfo {
        self.ok(self.api.create(spec))
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
        self.api = client(self.addr, &self.token, self.opts.tls_ca.as_deref());
        self.spawn();
    }

    /// The pid of hostd.
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map(|p| p.pid()).unwrap_or(0)
    }

    /// One raw request (for malformed input and missing tokens); Err on a connection
    /// failure.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> std::io::Result<(u16, Value)> {
        let addr = self.addr;
        in_namespace(self.opts.netns.as_deref(), || {
            http(addr, method, path, body, token)
        })
    }

    /// One raw request with the host's token; panics on connection errors.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let t = self.token.clone();
        self.raw(method, path, body, Some(&t))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\nhostd stderr:\n{}", self.stderr()))
    }

    /// Any GET as loose JSON, requiring 200 (for other tiers' tests).
    pub fn get(&self, path: &str) -> Value {
        let (s, v) = self.request("GET", path, None);
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    /// Waits until VM `id` is in `state`.
    pub fn wait_state(&self, id: &str, state: impl AsState, timeout: Duration) -> VmInfo {
        let state = state.as_state();
        let deadline = Instant::now() + timeout;
        loop {
            let vm = self.wait(self.api.vm(id));
            if let Ok(vm) = &vm {
                if vm.state == state {
                    return vm.clone();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "VM {id} not {state:?} after {timeout:?}: {vm:?}\nhostd stderr:\n{}",
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
        let what = format!("a console line {prefixes:?} from VM {id}");
        wait_for(timeout.as_secs().max(1), &what, || {
            let c = self.wait(self.api.console(id, 10_000)).ok()?;
            c.lines
                .into_iter()
                .find(|l| prefixes.iter().any(|p| l.starts_with(p)))
        })
    }

    /// The console log's size now (it grows while the guest runs).
    pub fn console_bytes(&self, id: &str) -> u64 {
        self.ok(self.api.console(id, 1)).bytes
    }

    /// Ids of the VMs on this host.
    pub fn vm_ids(&self) -> Vec<String> {
        self.ok(self.api.vms())
            .vms
            .into_iter()
            .map(|v| v.id)
            .collect()
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

fn client(addr: SocketAddr, token: &str, tls_ca: Option<&Path>) -> HostdClient {
    let opts = nova_http::ClientOptions {
        timeout: Duration::from_secs(60),
        ca_file: tls_ca.map(Path::to_path_buf),
        ..Default::default()
    };
    let scheme = if tls_ca.is_some() { "https" } else { "http" };
    HostdClient::new(&format!("{scheme}://{addr}"), token, &opts).expect("hostd client")
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
        ..Opts::default()
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
