//! The VM routes: create, list, one VM, lifecycle, console, snapshots.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use nova_hostd_api::{
    ConsoleLog, ErrorBody, FieldError, RestoreRequest, SnapshotInfo, SnapshotRequest,
    StopVmRequest, VmInfo, VmList, VmSpec, DEFAULT_STOP_TIMEOUT_MS,
};

use crate::api::error::{parse_json, ApiResult, JsonBody};
use crate::host::Host;

type S = State<Arc<Host>>;

/// A boolean query parameter: absent, `false`, `0` are false; `true`, `1`, empty true.
pub fn flag(q: &HashMap<String, String>, name: &str) -> Result<bool, FieldError> {
    match q.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(v) => Err(FieldError::new(name, format!("'{v}' is not true or false"))),
    }
}

/// The `lines` query parameter: 1 to 10,000, default 100.
pub fn lines(q: &HashMap<String, String>) -> Result<usize, FieldError> {
    match q.get("lines") {
        None => Ok(100),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| FieldError::new("lines", format!("'{v}' is not a number in 1..=10000"))),
    }
}

/// Every VM on this host, with its VMM's counters.
#[utoipa::path(get, path = "/v1/vms", tag = "vms",
    responses((status = 200, body = VmList)))]
pub async fn list_vms(State(h): S) -> Json<VmList> {
    Json(VmList {
        vms: h.vms.live_all().await.into_iter().map(|l| l.info).collect(),
    })
}

/// Creates (and by default starts) a VM.
#[utoipa::path(post, path = "/v1/vms", tag = "vms", request_body = VmSpec,
    responses(
        (status = 201, body = VmInfo),
        (status = 400, body = ErrorBody, description = "a field is wrong (named in `field`)"),
        (status = 409, body = ErrorBody, description = "it does not fit, or the id or a MAC is taken"),
        (status = 502, body = ErrorBody, description = "its VMM could not start")))]
pub async fn create_vm(
    State(h): S,
    JsonBody(spec): JsonBody<VmSpec>,
) -> ApiResult<(StatusCode, Json<VmInfo>)> {
    Ok((StatusCode::CREATED, Json(h.vms.create_vm(spec).await?)))
}

/// One VM with its VMM's counters.
#[utoipa::path(get, path = "/v1/vms/{id}", tag = "vms",
    params(("id" = String, Path, description = "VM id")),
    responses((status = 200, body = VmInfo), (status = 404, body = ErrorBody)))]
pub async fn get_vm(State(h): S, Path(id): Path<String>) -> ApiResult<Json<VmInfo>> {
    let vm = h.vms.get(&id)?;
    Ok(Json(h.vms.vm_info(&vm).await))
}

/// Stops the VM and removes its disks, taps and directory.
#[utoipa::path(delete, path = "/v1/vms/{id}", tag = "vms",
    params(("id" = String, Path, description = "VM id")),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "it is migrating")))]
pub async fn delete_vm(State(h): S, Path(id): Path<String>) -> ApiResult<StatusCode> {
    h.vms.delete_vm(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a created, stopped or crashed VM.
#[utoipa::path(post, path = "/v1/vms/{id}/start", tag = "vms",
    params(("id" = String, Path, description = "VM id")),
    responses((status = 200, body = VmInfo), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "not startable, or it does not fit")))]
pub async fn start_vm(State(h): S, Path(id): Path<String>) -> ApiResult<Json<VmInfo>> {
    Ok(Json(h.vms.start_vm(&id).await?))
}

/// Stops the VM: presses its ACPI power button and gives the guest `timeout_ms`
/// (default 5 s) to power off, then stops it; SIGKILL at once with `force` (in the
/// body or the query).
#[utoipa::path(post, path = "/v1/vms/{id}/stop", tag = "vms",
    params(("id" = String, Path, description = "VM id"),
        ("force" = Option<bool>, Query, description = "SIGKILL the VMM at once")),
    request_body(content = Option<StopVmRequest>, description = "optional"),
    responses((status = 200, body = VmInfo), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop_vm(
    State(h): S,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> ApiResult<Json<VmInfo>> {
    let force = flag(&q, "force")?;
    // No body, or `null` (what a body-less typed POST sends), is the default.
    let text = body.trim_ascii();
    let req: StopVmRequest = if text.is_empty() || text == b"null" {
        StopVmRequest::default()
    } else {
        parse_json(text)?
    };
    req.validate()?;
    let timeout =
        std::time::Duration::from_millis(req.timeout_ms.unwrap_or(DEFAULT_STOP_TIMEOUT_MS));
    Ok(Json(h.vms.stop_vm(&id, force || req.force, timeout).await?))
}

/// Pauses every vCPU.
#[utoipa::path(post, path = "/v1/vms/{id}/pause", tag = "vms",
    params(("id" = String, Path, description = "VM id")),
    responses((status = 200, body = VmInfo), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn pause_vm(State(h): S, Path(id): Path<String>) -> ApiResult<Json<VmInfo>> {
    Ok(Json(h.vms.pause_resume(&id, true).await?))
}

/// Resumes a paused VM.
#[utoipa::path(post, path = "/v1/vms/{id}/resume", tag = "vms",
    params(("id" = String, Path, description = "VM id")),
    responses((status = 200, body = VmInfo), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn resume_vm(State(h): S, Path(id): Path<String>) -> ApiResult<Json<VmInfo>> {
    Ok(Json(h.vms.pause_resume(&id, false).await?))
}

/// The console's last lines.
#[utoipa::path(get, path = "/v1/vms/{id}/console", tag = "vms",
    params(("id" = String, Path, description = "VM id"),
        ("lines" = Option<usize>, Query, description = "how many lines, 1 to 10000 (default 100)")),
    responses((status = 200, body = ConsoleLog), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn console(
    State(h): S,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<ConsoleLog>> {
    Ok(Json(h.vms.console(&id, lines(&q)?)?))
}

/// The VM's serial console, live, as a WebSocket: binary messages both ways, the
/// guest's output (from a 64 KiB backlog on) to the client and the client's bytes
/// to the guest. Ends when either side closes or the VMM exits.
#[utoipa::path(get, path = "/v1/vms/{id}/console/ws", tag = "vms",
    params(("id" = String, Path, description = "VM id")),
    responses((status = 101, description = "switching to the WebSocket"),
        (status = 400, body = ErrorBody, description = "not a WebSocket upgrade"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the VM is not running")))]
pub async fn console_ws(
    State(h): S,
    Path(id): Path<String>,
    ws: Result<
        axum::extract::ws::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> ApiResult<axum::response::Response> {
    // A plain GET gets the API's JSON error, not axum's text.
    let ws = ws.map_err(|e| nova_http::FieldError::new("connection", e.body_text()))?;
    let vm = h.vms.get(&id)?;
    let sock = vm.console_sock();
    let stream = tokio::net::UnixStream::connect(&sock).await.map_err(|e| {
        crate::error::Error::Conflict(format!("VM '{id}' has no live console ({e})"))
    })?;
    Ok(ws.on_upgrade(move |socket| bridge(socket, stream)))
}

/// Copies the console socket to the WebSocket and back until either ends.
async fn bridge(socket: axum::extract::ws::WebSocket, stream: tokio::net::UnixStream) {
    use axum::extract::ws::Message;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut rd, mut wr) = stream.into_split();
    let (mut tx, mut rx) = socket.split();
    let out = async {
        let mut buf = vec![0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let msg = Message::Binary(buf[..n].to_vec().into());
                    if tx.send(msg).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    };
    let inp = async {
        while let Some(Ok(msg)) = rx.next().await {
            let bytes = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = out => {}
        _ = inp => {}
    }
}

/// Snapshots the VM into `DATA/vms/<id>/snapshots/<name>`.
#[utoipa::path(post, path = "/v1/vms/{id}/snapshot", tag = "vms", request_body = SnapshotRequest,
    params(("id" = String, Path, description = "VM id")),
    responses((status = 201, body = SnapshotInfo), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 502, body = ErrorBody)))]
pub async fn snapshot(
    State(h): S,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<SnapshotRequest>,
) -> ApiResult<(StatusCode, Json<SnapshotInfo>)> {
    Ok((
        StatusCode::CREATED,
        Json(h.vms.snapshot_vm(&id, req).await?),
    ))
}

/// Starts a stopped VM from one of its snapshots.
#[utoipa::path(post, path = "/v1/vms/{id}/restore", tag = "vms", request_body = RestoreRequest,
    params(("id" = String, Path, description = "VM id")),
    responses((status = 200, body = VmInfo), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 502, body = ErrorBody)))]
pub async fn restore(
    State(h): S,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RestoreRequest>,
) -> ApiResult<Json<VmInfo>> {
    Ok(Json(h.vms.restore_vm(&id, req).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(k: &str, v: &str) -> HashMap<String, String> {
        [(k.to_string(), v.to_string())].into_iter().collect()
    }

    #[test]
    fn query_flags_and_line_counts_name_the_parameter() {
        assert!(flag(&q("force", "1"), "force").unwrap());
        assert!(flag(&q("force", ""), "force").unwrap());
        assert!(!flag(&HashMap::new(), "force").unwrap());
        assert_eq!(
            flag(&q("force", "maybe"), "force").unwrap_err().field,
            "force"
        );
        assert_eq!(lines(&HashMap::new()).unwrap(), 100);
        assert_eq!(lines(&q("lines", "7")).unwrap(), 7);
        for bad in ["0", "-1", "x", "10001"] {
            assert_eq!(lines(&q("lines", bad)).unwrap_err().field, "lines");
        }
    }
}
