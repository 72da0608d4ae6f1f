//! The VM's HTTP/1.1 JSON API on a unix socket, serving `nova-vmm-api`'s contract:
//! `GET /v1/vm`, `PUT /v1/vm/pause|resume|shutdown|stop`, `PUT /v1/snapshot`,
//! `PUT|GET|DELETE /v1/migration`, `PUT /v1/backup/checkpoint`. Errors are `nova_http::ErrorBody` with a 4xx/5xx
//! status; every request leaves one access line in the log.
//!
//! The server is std-only on purpose (no async runtime in the VMM's process: its
//! memory budget is a few MiB and this is its only server); [`http`] reads requests
//! and writes answers, this module maps them onto the VM, its snapshots and its
//! migration. Bounded ([`ApiLimits`]): a connection cap (503 past it) and idle,
//! header and body timeouts (408), so no client can pin threads or descriptors.

pub mod http;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nova_vmm_api::{
    CheckpointRequest, MigrationRequest, MigrationState, SnapshotRequest, StopReport, StopRequest,
};

use crate::migration::outgoing::Slot;
use crate::migration::sender::{self, StartError};
use crate::seccomp::{self, ThreadKind};
use crate::snapshot::{self, SnapshotError};
use crate::vm::Vm;
use http::{HttpError, Request, Response};

/// The API server; removes its socket when dropped.
pub struct ApiServer {
    path: PathBuf,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
#[error("api socket {path}: {err}")]
pub struct ApiError {
    path: String,
    err: std::io::Error,
}

/// What the API serves: the VM, and the record of its migration.
struct Served {
    vm: Arc<Vm>,
    migrations: Arc<Slot>,
    /// One backup checkpoint at a time (each pauses and resumes the VM).
    checkpoint: std::sync::Mutex<()>,
}

/// The API's bounds: a client can hold at most a connection slot for `idle` between
/// requests, `header` to send a request's head and `body` its body (then 408); past
/// `max_connections` open connections, a new one is answered 503 and closed. One
/// thread per open connection, so at most `max_connections` + 1 threads.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    pub max_connections: usize,
    pub idle: Duration,
    pub header: Duration,
    pub body: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_connections: 32,
            idle: Duration::from_secs(10),
            header: Duration::from_secs(5),
            body: Duration::from_secs(10),
        }
    }
}

/// Binds `path` and serves `vm` (and its `migrations`) on a thread of its own.
pub fn serve(path: &Path, vm: Arc<Vm>, migrations: Arc<Slot>) -> Result<ApiServer, ApiError> {
    serve_with(path, vm, migrations, ApiLimits::default())
}

/// [`serve`] within `limits`.
pub fn serve_with(
    path: &Path,
    vm: Arc<Vm>,
    migrations: Arc<Slot>,
    limits: ApiLimits,
) -> Result<ApiServer, ApiError> {
    let err = |err| ApiError {
        path: path.display().to_string(),
        err,
    };
    if path.exists() {
        // A socket left by a dead VMM; a live one would still be answering.
        if UnixStream::connect(path).is_ok() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "in use by a running VMM",
            )));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    let served = Arc::new(Served {
        vm,
        migrations,
        checkpoint: Default::default(),
    });
    let open = Arc::new(AtomicUsize::new(0));
    seccomp::spawn_filtered(ThreadKind::Api, "api", Some(256 << 10), move || {
        for conn in listener.incoming().flatten() {
            accept(conn, &served, &open, limits);
        }
    })
    .map_err(err)?;
    Ok(ApiServer {
        path: path.to_owned(),
    })
}

/// Counts an open connection while it lives.
struct ConnSlot(Arc<AtomicUsize>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Gives `conn` a thread of its own, or a 503 when all slots are taken.
fn accept(conn: UnixStream, served: &Arc<Served>, open: &Arc<AtomicUsize>, limits: ApiLimits) {
    let busy = |mut conn: UnixStream| {
        let _ = conn.set_write_timeout(Some(Duration::from_millis(100)));
        let resp = Response::error(503, "too many open API connections");
        let _ = http::write_response(&mut conn, &resp);
        nova_logging::access("-", "-", 503, Duration::ZERO, "-");
    };
    if open.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
        open.fetch_sub(1, Ordering::AcqRel);
        return busy(conn);
    }
    let slot = ConnSlot(open.clone());
    let Ok(spare) = conn.try_clone() else {
        return;
    };
    let served = served.clone();
    let started = seccomp::spawn_filtered(ThreadKind::Api, "api-conn", Some(256 << 10), {
        move || {
            let _slot = slot;
            serve_connection(conn, &served, limits)
        }
    });
    if started.is_err() {
        busy(spare);
    }
}

/// A connection's reads, each bounded by the current phase's deadline.
struct Timed {
    conn: UnixStream,
    deadline: Instant,
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.conn.set_read_timeout(Some(left))?;
        self.conn.read(buf)
    }
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

fn serve_connection(conn: UnixStream, served: &Served, limits: ApiLimits) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let _ = writer.set_write_timeout(Some(limits.body));
    let mut reader = BufReader::new(Timed {
        conn,
        deadline: Instant::now() + limits.idle,
    });
    let timeout = |writer: &mut UnixStream, what: &str| {
        let resp = Response::error(
            408,
            format!("no complete request within the {what} timeout"),
        );
        let _ = http::write_response(writer, &resp);
        nova_logging::access("-", "-", 408, Duration::ZERO, "-");
    };
    loop {
        reader.get_mut().deadline = Instant::now() + limits.idle;
        match reader.fill_buf() {
            Ok([]) => return,
            Ok(_) => {}
            Err(e) if timed_out(&e) => return timeout(&mut writer, "idle"),
            Err(_) => return,
        }
        let t = Instant::now();
        reader.get_mut().deadline = t + limits.header;
        let body_limit = limits.body;
        let read = http::read_request_with(&mut reader, |r| {
            r.deadline = Instant::now() + body_limit;
        });
        let (resp, close, method, path) = match read {
            Ok(req) => (route(served, &req), req.close, req.method, req.path),
            Err(HttpError::Io(e)) if timed_out(&e) => {
                return timeout(&mut writer, "header or body");
            }
            Err(HttpError::Closed) | Err(HttpError::Io(_)) => return,
            Err(e @ HttpError::TooLarge) => (Response::error(413, e), true, "-".into(), "-".into()),
            Err(e) => (Response::error(400, e), true, "-".into(), "-".into()),
        };
        // Logged before the answer goes out: a guest told to power off (ACPI) may end
        // the process as soon as the caller has its answer.
        nova_logging::access(&method, &path, resp.status, t.elapsed(), "-");
        let written = http::write_response(&mut writer, &resp);
        if resp.stops_vm {
            served.vm.shutdown();
        }
        if written.is_err() {
            return;
        }
        if resp.delivers_migration_result {
            // Only now: the source process exits once the result is read.
            if let Some(m) = served.migrations.latest() {
                m.mark_result_read();
            }
        }
        if close {
            return;
        }
    }
}

/// Maps one request onto the VM.
fn route(served: &Served, req: &Request) -> Response {
    let vm = &served.vm;
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/v1/vm") => Response::json(200, &vm.info()),
        ("PUT", "/v1/vm/pause") => {
            vm.pause();
            Response::json(200, &vm.info())
        }
        ("PUT", "/v1/vm/resume") => {
            vm.resume();
            Response::json(200, &vm.info())
        }
        ("PUT", "/v1/vm/shutdown") => {
            vm.shutdown();
            Response::no_content()
        }
        ("PUT", "/v1/vm/stop") => stop(vm, &req.body),
        ("PUT", "/v1/snapshot") => take_snapshot(vm, &req.body),
        ("PUT", "/v1/migration") => start_migration(served, &req.body),
        ("PUT", "/v1/backup/checkpoint") => backup_checkpoint(served, &req.body),
        ("GET", "/v1/migration") => match served.migrations.latest() {
            Some(m) => {
                let status = m.status();
                let mut resp = Response::json(200, &status);
                resp.delivers_migration_result = status.state != MigrationState::Running;
                resp
            }
            None => Response::error(404, "no migration has been started"),
        },
        ("DELETE", "/v1/migration") => match served.migrations.latest() {
            Some(m) => {
                m.cancel();
                Response::json(200, &m.status())
            }
            None => Response::error(404, "no migration has been started"),
        },
        (
            _,
            "/v1/vm"
            | "/v1/vm/pause"
            | "/v1/vm/resume"
            | "/v1/vm/shutdown"
            | "/v1/vm/stop"
            | "/v1/snapshot"
            | "/v1/migration"
            | "/v1/backup/checkpoint",
        ) => Response::error(
            405,
            format!("{} is not allowed on {}", req.method, req.path),
        ),
        _ => Response::error(404, format!("no such resource: {}", req.path)),
    }
}

fn stop(vm: &Vm, body: &[u8]) -> Response {
    let req: StopRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StopRequest::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return Response::error(400, format!("stop request: {e}")),
        }
    };
    if let Err(e) = req.validate() {
        return Response::bad_field(e);
    }
    if vm.stops_at_once(req.force) {
        // Stopped by the connection once this answer is written: stopping here could
        // end the process before the answer leaves.
        let mut resp = Response::json(
            202,
            &StopReport {
                power_button: false,
                timeout_ms: req.timeout_ms,
            },
        );
        resp.stops_vm = true;
        return resp;
    }
    let power_button = vm.stop(req.force, Duration::from_millis(req.timeout_ms));
    Response::json(
        202,
        &StopReport {
            power_button,
            timeout_ms: req.timeout_ms,
        },
    )
}

fn take_snapshot(vm: &Vm, body: &[u8]) -> Response {
    let req: SnapshotRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Response::error(400, format!("snapshot request: {e}")),
    };
    if let Err(e) = req.validate() {
        return Response::bad_field(e);
    }
    match snapshot::create(vm, &req.path, req.diff) {
        Ok(report) => Response::json(200, &report),
        Err(e @ SnapshotError::NoBase) => Response::error(409, e),
        Err(e) => Response::error(500, e),
    }
}

fn backup_checkpoint(served: &Served, body: &[u8]) -> Response {
    let req: CheckpointRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Response::error(400, format!("checkpoint request: {e}")),
    };
    if let Err(e) = req.validate() {
        return Response::bad_field(e);
    }
    let Ok(_one) = served.checkpoint.try_lock() else {
        return Response::error(409, "a backup checkpoint is already being taken");
    };
    // A migration pauses and resumes the VM itself: the two must not interleave.
    if let Some(m) = served.migrations.latest() {
        if m.status().state == MigrationState::Running {
            return Response::error(409, "a migration is running; checkpoint after it");
        }
    }
    // The guest's memory, when asked, is written in the checkpoint's pause.
    let memory = |vm: &crate::vm::Vm| match &req.memory_dir {
        Some(dir) => snapshot::write_detached(vm, dir)
            .map(drop)
            .map_err(|e| format!("writing memory into {}: {e}", dir.display())),
        None => Ok(()),
    };
    match served.vm.backup_checkpoint(&req, memory) {
        Ok(report) => Response::json(200, &report),
        Err(e) => Response::error(500, e),
    }
}

fn start_migration(served: &Served, body: &[u8]) -> Response {
    let req: MigrationRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Response::error(400, format!("migration request: {e}")),
    };
    match sender::start(served.vm.clone(), &served.migrations, req) {
        Ok(status) => Response::json(200, &status),
        Err(StartError::Invalid(e)) => Response::bad_field(e),
        Err(e @ StartError::Busy) => Response::error(409, e),
        Err(e @ StartError::Thread(_)) => Response::error(500, e),
    }
}
