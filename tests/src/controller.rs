//! The controller's share of the harness: start `nova-controller` (SQLite or etcd,
//! with any flags), talk to it through the typed `ControllerClient` (blocking, with
//! [`block_on`]), follow the WebSocket event stream, and pretend to be a host
//! (register, heartbeat, in hostd's contract types) where a test needs hosts that are
//! not the point. [`raw`] sends bytes as they are, for malformed input and auth edge
//! cases only. Every process is killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nova_controller_api::{ControllerClient, Event, NewTenant, NewToken, NewUser, Role};
use nova_hostd_api::{HostInfo, NetworkInfo, RegisterRequest, RegisterResponse, Resources};
use serde_json::Value;

use crate::binary;

pub use crate::etcd::{Etcd, EtcdOpts};
pub use crate::{free_port, wait_for};
pub use nova_http::blocking::block_on;

/// A raw answer: status and JSON body (`Value::Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// One HTTP/1.1 request with `body` exactly as given: for malformed input and
/// authentication edge cases, which the typed client cannot send.
pub fn raw(base: &str, token: Option<&str>, method: &str, path: &str, body: &[u8]) -> Answer {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head += "Content-Type: application/json\r\n";
    }
    if let Some(t) = token {
        head += &format!("Authorization: Bearer {t}\r\n");
    }
    head += "\r\n";
    // The server may answer (413) and close before reading a large body.
    let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(body));
    let mut resp = vec![];
    let _ = s.read_to_end(&mut resp);
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(resp.len());
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let payload = resp.get(split + 4..).unwrap_or_default();
    // Error answers are small and sent whole (no chunking to undo).
    Answer {
        status,
        body: serde_json::from_slice(payload).unwrap_or(Value::Null),
    }
}

/// The HTTP status of a failed typed call (0 when there was no answer).
pub fn status<T: std::fmt::Debug>(r: Result<T, nova_http::Error>) -> u16 {
    match r {
        Ok(v) => panic!("expected an error answer, got {v:?}"),
        Err(e) => e.status().unwrap_or(0),
    }
}

/// The status and named field of a failed typed call.
pub fn refusal<T: std::fmt::Debug>(r: Result<T, nova_http::Error>) -> (u16, Option<String>) {
    match r {
        Ok(v) => panic!("expected an error answer, got {v:?}"),
        Err(e) => (
            e.status().unwrap_or(0),
            e.body().and_then(|b| b.field.clone()),
        ),
    }
}

/// A running `nova-controller`.
pub struct Controller {
    child: Option<Child>,
    pub url: String,
    /// The first admin's token.
    pub admin: String,
    /// The join token hosts register with.
    pub join: String,
    pub node: String,
    pub dir: PathBuf,
    /// A client with the admin token.
    pub api: ControllerClient,
    /// The CA its certificate is signed by, when it serves TLS.
    pub ca: Option<PathBuf>,
}

/// Options of a controller.
#[derive(Clone)]
pub struct Opts {
    /// `sqlite:PATH` or `etcd:URL`; a SQLite file in `dir` when None.
    pub store: Option<String>,
    pub node: String,
    pub reconcile_ms: u64,
    pub down_after_ms: u64,
    pub max_failed_auth: u32,
    /// `--heartbeat-ms` told to hosts (500 ms), or none to leave it to a config file.
    pub heartbeat_ms: Option<u64>,
    pub port: Option<u16>,
    /// The address it listens on (127.0.0.1 when None): a bridge's, for hosts in
    /// network namespaces.
    pub ip: Option<String>,
    /// The network namespace it runs in (`ip netns exec`; `ip` should be an address
    /// of that namespace the harness reaches, e.g. a bridged hostd's).
    pub netns: Option<String>,
    /// More flags (`--etcd-ca`, `--config`, retention, ...).
    pub args: Vec<String>,
    /// The CA the harness's clients trust (with `--tls-cert` in `args`).
    pub ca: Option<PathBuf>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            store: None,
            node: crate::unique("ctl"),
            reconcile_ms: 200,
            down_after_ms: 3000,
            max_failed_auth: 20,
            heartbeat_ms: Some(500),
            port: None,
            ip: None,
            netns: None,
            args: vec![],
            ca: None,
        }
    }
}

/// A client of `url` with `token`.
pub fn client(url: &str, token: Option<&str>) -> ControllerClient {
    ControllerClient::new(url, token, &Default::default()).unwrap()
}

/// A client of `url` with `token`, trusting the CA in `ca` (an https controller).
pub fn client_with_ca(url: &str, token: Option<&str>, ca: Option<&Path>) -> ControllerClient {
    let opts = nova_http::ClientOptions {
        ca_file: ca.map(Path::to_path_buf),
        ..Default::default()
    };
    ControllerClient::new(url, token, &opts).unwrap()
}

impl Controller {
    /// A controller on a new SQLite file.
    pub fn sqlite(dir: &Path) -> Controller {
        Self::start(dir, Opts::default())
    }

    /// Starts one with `o`; state files (tokens, database) live in `dir`.
    pub fn start(dir: &Path, o: Opts) -> Controller {
        Self::try_start(dir, o).unwrap_or_else(|why| panic!("{why}"))
    }

    /// Starts one with `o`, or says why it exited (its log) instead of serving.
    pub fn try_start(dir: &Path, o: Opts) -> Result<Controller, String> {
        let port = o.port.unwrap_or_else(free_port);
        let ip = o.ip.clone().unwrap_or_else(|| "127.0.0.1".into());
        let store = o
            .store
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", dir.join("controller.db").display()));
        let logfile = dir.join(format!("{}.log", o.node));
        let log = std::fs::File::create(&logfile).unwrap();
        let mut cmd = match &o.netns {
            // `ip` execs the controller: the child's pid is the controller's own.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary("nova-controller"));
                c
            }
            None => Command::new(binary("nova-controller")),
        };
        let child = cmd
            .arg("--listen")
            .arg(format!("{ip}:{port}"))
            .arg("--store")
            .arg(&store)
            .arg("--admin-token-file")
            .arg(dir.join("admin.token"))
            .arg("--join-token-file")
            .arg(dir.join("join.token"))
            .args(["--node", &o.node])
            .args(["--reconcile-interval-ms", &o.reconcile_ms.to_string()])
            .args(["--down-after-ms", &o.down_after_ms.to_string()])
            .args(
                o.heartbeat_ms
                    .map(|h| vec!["--heartbeat-ms".to_string(), h.to_string()])
                    .unwrap_or_default(),
            )
            .args(["--max-failed-auth", &o.max_failed_auth.to_string()])
            // Plaintext unless the test serves TLS itself (the raw helpers speak HTTP).
            .args(
                (!o.args
                    .iter()
                    .any(|a| a == "--tls-cert" || a == "--insecure-http"))
                .then_some("--insecure-http"),
            )
            .args(&o.args)
            .env("NOVA_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start nova-controller");
        let tls = o.args.iter().any(|a| a == "--tls-cert");
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://{ip}:{port}");
        let mut c = Controller {
            child: Some(child),
            url: url.clone(),
            admin: String::new(),
            join: String::new(),
            node: o.node,
            dir: dir.into(),
            api: client_with_ca(&url, None, o.ca.as_deref()),
            ca: o.ca.clone(),
        };
        let anonymous = client_with_ca(&url, None, o.ca.as_deref());
        let t = Instant::now();
        loop {
            if let Some(Ok(Some(st))) = c.child.as_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(&logfile).unwrap_or_default();
                c.child = None;
                return Err(format!("nova-controller exited {st}: {log}"));
            }
            if block_on(anonymous.health()).is_ok() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the controller did not answer /v1/health in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        c.admin = read("admin.token");
        c.join = read("join.token");
        c.api = client_with_ca(&url, Some(&c.admin), o.ca.as_deref());
        Ok(c)
    }

    /// A client of this controller with `token`.
    pub fn as_(&self, token: &str) -> ControllerClient {
        self.api.with_token(token).unwrap()
    }

    /// A client of this controller with no token.
    pub fn anonymous(&self) -> ControllerClient {
        client_with_ca(&self.url, None, self.ca.as_deref())
    }

    /// Creates tenant (if needed), user and token; answers the token's secret.
    pub fn token_for(&self, tenant: &str, user: &str, role: Role) -> String {
        let t = block_on(self.api.create_tenant(&NewTenant {
            id: tenant.into(),
            quota: None,
        }));
        assert!(
            t.is_ok() || t.as_ref().err().and_then(|e| e.status()) == Some(409),
            "{t:?}"
        );
        block_on(self.api.create_user(&NewUser {
            id: user.into(),
            role,
            tenant: Some(tenant.into()),
        }))
        .unwrap();
        block_on(self.api.create_token(&NewToken {
            user: user.into(),
            role: None,
        }))
        .unwrap()
        .token
    }

    /// Whether this controller leads now.
    pub fn leads(&self) -> bool {
        self.child.is_some() && block_on(self.anonymous().leader()).is_ok_and(|l| l.leader)
    }

    /// Kills the process (SIGKILL: no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the process with SIGTERM (a clean shutdown) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling a child process this harness started and still owns.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// The controller's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.node))).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What hostd reports about a host of `vcpus`/`mem_mib` (registration, heartbeats).
pub fn host_info(id: &str, vcpus: u64, mem_mib: u64) -> HostInfo {
    HostInfo {
        image_version: None,
        host_id: id.into(),
        hostname: id.into(),
        version: "test".into(),
        cores: vcpus,
        mem_mib,
        disk_total_mib: 100_000,
        disk_free_mib: 100_000,
        kvm: "none".into(),
        cpu_overcommit: 1.0,
        mem_overcommit: 1.0,
        capacity: Resources {
            vcpus,
            mem_mib,
            disk_mib: 100_000,
        },
        allocated: Resources::default(),
        vms: 0,
        network: NetworkInfo {
            bridge: "novabr0".into(),
            host_cidr: None,
            vxlan: None,
        },
    }
}

/// Registers a pretend host (the test plays hostd) whose API is at `url`, presenting
/// `token` (the join token, usually); answers the host's own credentials.
pub fn register_with(
    c: &Controller,
    token: &str,
    id: &str,
    url: &str,
    vcpus: u64,
    mem_mib: u64,
) -> Result<RegisterResponse, nova_http::Error> {
    let rq = RegisterRequest {
        host_id: id.into(),
        hostname: id.into(),
        url: url.into(),
        token: "hostd-secret".into(),
        info: host_info(id, vcpus, mem_mib),
        tls_key: None,
    };
    block_on(c.as_(token).http().post("/v1/hosts/register", &rq))
}

/// Registers a pretend host with the join token; answers its own token.
pub fn register_host(c: &Controller, id: &str, url: &str, vcpus: u64, mem_mib: u64) -> String {
    register_with(c, &c.join, id, url, vcpus, mem_mib)
        .unwrap_or_else(|e| panic!("register {id}: {e}"))
        .token
}

/// One heartbeat of a pretend host.
pub fn heartbeat(
    c: &Controller,
    id: &str,
    token: &str,
    vcpus: u64,
    mem_mib: u64,
) -> Result<(), nova_http::Error> {
    let hb = nova_hostd_api::Heartbeat {
        host_id: id.into(),
        info: host_info(id, vcpus, mem_mib),
        vms: vec![],
    };
    block_on(
        c.as_(token)
            .http()
            .post(&format!("/v1/hosts/{id}/heartbeat"), &hb),
    )
}

/// A subscriber of `/v1/events`.
pub struct EventStream {
    ws: tungstenite::WebSocket<TcpStream>,
    /// The revision of the last event read.
    pub last: u64,
}

impl EventStream {
    /// Subscribes to new events.
    pub fn open(base: &str, token: &str) -> EventStream {
        Self::since(base, token, None).unwrap_or_else(|s| panic!("event stream refused: {s}"))
    }

    /// Subscribes from revision `since` on (new events only when None); the HTTP
    /// status when the controller refuses.
    pub fn since(base: &str, token: &str, since: Option<u64>) -> Result<EventStream, u16> {
        use tungstenite::client::IntoClientRequest;
        let addr = base.trim_start_matches("http://");
        let q = since.map(|s| format!("?since={s}")).unwrap_or_default();
        let mut rq = format!("ws://{addr}/v1/events{q}")
            .into_client_request()
            .unwrap();
        if !token.is_empty() {
            rq.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let s = TcpStream::connect(addr).unwrap();
        match tungstenite::client(rq, s) {
            Ok((ws, _)) => Ok(EventStream {
                ws,
                last: since.unwrap_or(0),
            }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                Err(r.status().as_u16())
            }
            Err(e) => panic!("event stream handshake: {e}"),
        }
    }

    /// The next event, or None after `timeout` (or when the stream closed).
    pub fn next(&mut self, timeout: Duration) -> Option<Event> {
        self.ws.get_mut().set_read_timeout(Some(timeout)).unwrap();
        loop {
            match self.ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    let e: Event = serde_json::from_str(&t).expect("an Event");
                    self.last = e.revision;
                    return Some(e);
                }
                Ok(tungstenite::Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Reads events until one of `kind` about `id` arrives (or panics after `secs`).
    pub fn until(&mut self, kind: &str, id: &str, secs: u64) -> Event {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            if let Some(e) = self.next(Duration::from_millis(500)) {
                if e.kind == kind && e.id == id {
                    return e;
                }
            }
        }
        panic!("no {kind} event for {id} within {secs} s");
    }
}

/// An image id no host has: for stories where the VM never boots.
pub const NO_IMAGE: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// A VM that is placed but never started (its kernel is [`NO_IMAGE`]).
pub fn stopped_spec(name: &str) -> nova_controller_api::VmSpec {
    nova_controller_api::VmSpec {
        start: false,
        ..nova_controller_api::VmSpec::new(name, NO_IMAGE)
    }
}
