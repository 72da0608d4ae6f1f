//! The VM's HTTP/1.1 JSON API on a unix socket, and its client (`nova-vmm ctl`).
//!
//! Routes: `GET /v1/vm`, `PUT /v1/vm/pause`, `PUT /v1/vm/resume`, `PUT /v1/vm/shutdown`.
//! Errors are `{"error": "<message>"}` with a 4xx/5xx status.

pub mod client;
pub mod http;

use std::io::BufReader;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HttpError, Request, Response};

use crate::vm::Vm;

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

/// Binds `path` and serves `vm` on a thread of its own.
pub fn serve(path: &Path, vm: Arc<Vm>) -> Result<ApiServer, ApiError> {
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
    std::thread::Builder::new()
        .name("api".into())
        .stack_size(256 << 10)
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let vm = vm.clone();
                let _ = std::thread::Builder::new()
                    .name("api-conn".into())
                    .stack_size(256 << 10)
                    .spawn(move || serve_connection(conn, &vm));
            }
        })
        .map_err(err)?;
    Ok(ApiServer {
        path: path.to_owned(),
    })
}

fn serve_connection(conn: UnixStream, vm: &Arc<Vm>) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let (resp, close) = match http::read_request(&mut reader) {
            Ok(req) => (route(vm, &req), req.close),
            Err(HttpError::Closed) | Err(HttpError::Io(_)) => return,
            Err(e @ HttpError::TooLarge) => (Response::error(413, e), true),
            Err(e) => (Response::error(400, e), true),
        };
        if http::write_response(&mut writer, &resp).is_err() {
            return;
        }
        if resp.delivers_migration_result {
            // Only now: the source process exits once the result is read.
            if let Some(m) = vm.migration() {
                m.result_read
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        if close {
            return;
        }
    }
}

/// Maps one request to the VM.
fn start_migration(vm: &Arc<Vm>, body: &[u8]) -> Response {
    use crate::migration::{Migration, MigrationRequest, State};
    let req: MigrationRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Response::error(400, format!("migration request: {e}")),
    };
    if let Err(e) = req.validate() {
        return Response::error(400, e);
    }
    let mig = Arc::new(Migration::new(req.params.mode));
    {
        let mut slot = vm.migration_slot();
        if slot
            .as_ref()
            .is_some_and(|m| m.snapshot().state == State::Running)
        {
            return Response::error(409, "a migration is already running");
        }
        *slot = Some(mig.clone());
    }
    let (vm2, m2) = (vm.clone(), mig.clone());
    let spawned = std::thread::Builder::new()
        .name("migration".into())
        .spawn(move || crate::migration::sender::run(vm2, req, m2));
    if let Err(e) = spawned {
        return Response::error(500, format!("cannot start the migration thread: {e}"));
    }
    Response::json(200, &mig.snapshot())
}

/// Maps one request to the VM.
pub fn route(vm: &Arc<Vm>, req: &Request) -> Response {
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
        ("PUT", "/v1/snapshot") => {
            let req: nova_vmm_api::SnapshotRequest = match serde_json::from_slice(&req.body) {
                Ok(r) => r,
                Err(e) => return Response::error(400, format!("snapshot request: {e}")),
            };
            match crate::snapshot::create(vm, &req.path, req.diff) {
                Ok(report) => Response::json(200, &report),
                Err(e @ crate::snapshot::SnapshotError::NoBase) => Response::error(409, e),
                Err(e) => Response::error(500, e),
            }
        }
        ("PUT", "/v1/migration") => start_migration(vm, &req.body),
        ("GET", "/v1/migration") => match vm.migration() {
            Some(m) => {
                let status = m.snapshot();
                let mut resp = Response::json(200, &status);
                resp.delivers_migration_result = status.state != crate::migration::State::Running;
                resp
            }
            None => Response::error(404, "no migration has been started"),
        },
        ("DELETE", "/v1/migration") => match vm.migration() {
            Some(m) => {
                m.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
                Response::json(200, &m.snapshot())
            }
            None => Response::error(404, "no migration has been started"),
        },
        (
            _,
            "/v1/vm" | "/v1/vm/pause" | "/v1/vm/resume" | "/v1/vm/shutdown" | "/v1/snapshot"
            | "/v1/migration",
        ) => Response::error(
            405,
            format!("{} is not allowed on {}", req.method, req.path),
        ),
        _ => Response::error(404, format!("no such resource: {}", req.path)),
    }
}
