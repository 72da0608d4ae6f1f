//! The controller's share of the harness: start `nova-controller` (SQLite or etcd)
//! and a real etcd, talk to the `/v1` API over plain HTTP/1.1, follow the WebSocket
//! event stream, and pretend to be a host (register, heartbeat) where a test needs
//! hosts that are not the point. Every process is killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::binary;

pub use crate::etcd::Etcd;
pub use crate::{free_port, wait_for};

/// An answer: status and JSON body (`Value::Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The `field` of an error answer.
    pub fn field(&self) -> Option<&str> {
        self.body.get("field").and_then(Value::as_str)
    }
}

fn dechunk(b: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    let mut rest = b;
    while let Some(p) = rest.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&rest[..p]).unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if n == 0 || rest.len() < p + 2 + n {
            break;
        }
        out.extend_from_slice(&rest[p + 2..p + 2 + n]);
        rest = &rest[(p + 4 + n).min(rest.len())..];
    }
    out
}

/// One HTTP/1.1 request with raw bytes as the body.
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
    let mut payload = resp.get(split + 4..).unwrap_or_default().to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        payload = dechunk(&payload);
    }
    Answer {
        status,
        body: serde_json::from_slice(&payload).unwrap_or(Value::Null),
    }
}

/// One JSON request.
pub fn call(
    base: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Answer {
    let b = body.map(|b| b.to_string()).unwrap_or_default();
    raw(base, token, method, path, b.as_bytes())
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
    pub port: Option<u16>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            store: None,
            node: crate::unique("ctl"),
            reconcile_ms: 200,
            down_after_ms: 3000,
            max_failed_auth: 20,
            port: None,
        }
    }
}

impl Controller {
    /// A controller on a new SQLite file.
    pub fn sqlite(dir: &Path) -> Controller {
        Self::start(dir, Opts::default())
    }

    /// Starts one with `o`; state files (tokens, database) live in `dir`.
    pub fn start(dir: &Path, o: Opts) -> Controller {
        let port = o.port.unwrap_or_else(free_port);
        let store = o
            .store
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", dir.join("controller.db").display()));
        let log = std::fs::File::create(dir.join(format!("{}.log", o.node))).unwrap();
        let child = Command::new(binary("nova-controller"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--store")
            .arg(&store)
            .arg("--admin-token-file")
            .arg(dir.join("admin.token"))
            .arg("--join-token-file")
            .arg(dir.join("join.token"))
            .args(["--node", &o.node])
            .args(["--reconcile-interval-ms", &o.reconcile_ms.to_string()])
            .args(["--down-after-ms", &o.down_after_ms.to_string()])
            .args(["--heartbeat-ms", "500"])
            .args(["--max-failed-auth", &o.max_failed_auth.to_string()])
            .env("NOVA_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start nova-controller");
        let url = format!("http://127.0.0.1:{port}");
        let mut c = Controller {
            child: Some(child),
            url: url.clone(),
            admin: String::new(),
            join: String::new(),
            node: o.node,
            dir: dir.into(),
        };
        wait_for(30, "the controller to answer /v1/health", || {
            if let Some(ch) = c.child.as_mut() {
                if let Ok(Some(st)) = ch.try_wait() {
                    panic!(
                        "nova-controller exited {st}: {}",
                        std::fs::read_to_string(dir.join(format!("{}.log", c.node)))
                            .unwrap_or_default()
                    );
                }
            }
            TcpStream::connect(url.trim_start_matches("http://"))
                .ok()
                .map(|_| ())
                .filter(|_| call(&url, None, "GET", "/v1/health", None).status == 200)
        });
        c.admin = std::fs::read_to_string(dir.join("admin.token"))
            .unwrap_or_default()
            .trim()
            .to_string();
        c.join = std::fs::read_to_string(dir.join("join.token"))
            .unwrap_or_default()
            .trim()
            .to_string();
        c
    }

    /// A request with the admin token.
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        call(&self.url, Some(&self.admin), method, path, body)
    }

    /// A request with `token`.
    pub fn as_(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Answer {
        call(&self.url, Some(token), method, path, body)
    }

    /// Creates tenant (if needed), user and token; answers the token's secret.
    pub fn token_for(&self, tenant: &str, user: &str, role: &str) -> String {
        let t = self.admin("POST", "/v1/tenants", Some(json!({"id": tenant})));
        assert!(t.status == 201 || t.status == 409, "{t:?}");
        let u = self.admin(
            "POST",
            "/v1/users",
            Some(json!({"id": user, "role": role, "tenant": tenant})),
        );
        assert_eq!(u.status, 201, "{u:?}");
        let k = self.admin("POST", "/v1/tokens", Some(json!({"user": user})));
        assert_eq!(k.status, 201, "{k:?}");
        k.body["token"].as_str().unwrap().to_string()
    }

    /// Kills the process (SIGKILL: no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
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

/// The body hostd sends to register (and in heartbeats): a host of `vcpus`/`mem_mib`.
pub fn host_info(id: &str, vcpus: u64, mem_mib: u64) -> Value {
    json!({
        "host_id": id, "hostname": id, "version": "test", "cores": vcpus, "mem_mib": mem_mib,
        "disk_total_mib": 100000, "disk_free_mib": 100000, "kvm": "none", "cpu_overcommit": 1.0, "mem_overcommit": 1.0,
        "capacity": {"vcpus": vcpus, "mem_mib": mem_mib, "disk_mib": 100000},
        "allocated": {"vcpus": 0, "mem_mib": 0, "disk_mib": 0}, "vms": 0,
        "network": {"bridge": "novabr0", "host_cidr": null, "vxlan": null}
    })
}

/// Registers a pretend host (the test plays hostd) whose API is at `url`; answers its
/// own token.
pub fn register_host(c: &Controller, id: &str, url: &str, vcpus: u64, mem_mib: u64) -> String {
    let a = call(
        &c.url,
        Some(&c.join),
        "POST",
        "/v1/hosts/register",
        Some(
            json!({"host_id": id, "hostname": id, "url": url, "token": "hostd-secret", "info": host_info(id, vcpus, mem_mib)}),
        ),
    );
    assert_eq!(a.status, 201, "register {id}: {a:?}");
    a.body["token"].as_str().unwrap().to_string()
}

/// One heartbeat of a pretend host.
pub fn heartbeat(c: &Controller, id: &str, token: &str, vcpus: u64, mem_mib: u64) -> Answer {
    call(
        &c.url,
        Some(token),
        "POST",
        &format!("/v1/hosts/{id}/heartbeat"),
        Some(json!({"host_id": id, "info": host_info(id, vcpus, mem_mib), "vms": []})),
    )
}

/// A subscriber of `/v1/events` (a minimal WebSocket client: text frames only).
pub struct EventStream {
    s: TcpStream,
}

impl EventStream {
    pub fn open(base: &str, token: &str) -> EventStream {
        let addr = base.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        let req = format!(
            "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut head = vec![];
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "event stream refused: {head}"
        );
        EventStream { s }
    }

    /// The next event, or None after `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<Value> {
        self.s.set_read_timeout(Some(timeout)).unwrap();
        loop {
            let mut h = [0u8; 2];
            self.s.read_exact(&mut h).ok()?;
            let op = h[0] & 0x0f;
            let mut len = (h[1] & 0x7f) as u64;
            if len == 126 {
                let mut l = [0u8; 2];
                self.s.read_exact(&mut l).ok()?;
                len = u16::from_be_bytes(l) as u64;
            } else if len == 127 {
                let mut l = [0u8; 8];
                self.s.read_exact(&mut l).ok()?;
                len = u64::from_be_bytes(l);
            }
            let mut payload = vec![0u8; len as usize];
            self.s.read_exact(&mut payload).ok()?;
            match op {
                1 => return serde_json::from_slice(&payload).ok(),
                8 => return None,
                _ => continue,
            }
        }
    }

    /// Reads events until one of `kind` about `id` arrives (or panics after `secs`).
    pub fn until(&mut self, kind: &str, id: &str, secs: u64) -> Value {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            if let Some(e) = self.next(Duration::from_millis(500)) {
                if e["kind"] == kind && e["id"] == id {
                    return e;
                }
            }
        }
        panic!("no {kind} event for {id} within {secs} s");
    }
}
