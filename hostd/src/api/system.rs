//! The host image's routes: what it runs (`GET /v1/system`), staging a new kernel and
//! initramfs (`PUT /v1/system/staged/{file}`), and the upgrade that writes them to the
//! inactive slot and reboots into it once (`POST /v1/system/upgrade`), and powering
//! the machine off or rebooting it (`POST /v1/system/power`). The controller drives
//! these (`POST /v1/hosts/{id}/upgrade` and `/power` there).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use http_body_util::BodyExt;
use nova_hostd_api::{
    ErrorBody, FieldError, PowerAction, StagedFile, SystemInfo, SystemPower, SystemUpgradeRequest,
    SystemUpgradeStarted,
};

use crate::api::error::{ApiResult, JsonBody};
use crate::error::Error;
use crate::host::Host;
use crate::upgrade::{self, Staging};

type S = State<Arc<Host>>;

/// The host image this hostd runs on.
#[utoipa::path(get, path = "/v1/system", tag = "host",
    responses((status = 200, body = SystemInfo)))]
pub async fn system(State(h): S) -> Json<SystemInfo> {
    Json(h.system.info())
}

/// Stages one file of a new system image (the body is its bytes).
#[utoipa::path(put, path = "/v1/system/staged/{file}", tag = "host",
    params(("file" = String, Path, description = "kernel or initrd")),
    request_body(content = String, content_type = "application/octet-stream",
        description = "the file's bytes"),
    responses((status = 201, body = StagedFile), (status = 400, body = ErrorBody)))]
pub async fn stage(
    State(h): S,
    Path(file): Path<String>,
    body: Body,
) -> ApiResult<(StatusCode, Json<StagedFile>)> {
    let mut st = Staging::begin(&h.config.data_dir, &file)?;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| FieldError::new("body", format!("upload interrupted: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if let Err(e) = st.write(&data) {
                nova_http::server::drain_refused_body(&mut body).await;
                return Err(e.into());
            }
        }
    }
    let staged = tokio::task::spawn_blocking(move || st.finish())
        .await
        .map_err(|e| Error::Conflict(format!("staging task: {e}")))??;
    tracing::info!(file = %staged.file, bytes = staged.size_bytes, sha256 = %staged.sha256, "system file staged");
    Ok((StatusCode::CREATED, Json(staged)))
}

/// Writes the staged files into the inactive slot and reboots into it once; the new
/// system becomes the default only once its hostd registers with the controller.
#[utoipa::path(post, path = "/v1/system/upgrade", tag = "host",
    request_body = SystemUpgradeRequest,
    responses((status = 202, body = SystemUpgradeStarted),
        (status = 400, description = "a bad field, or a staged file's hash differs", body = ErrorBody),
        (status = 409, description = "not on the host image, or nothing staged", body = ErrorBody)))]
pub async fn upgrade(
    State(h): S,
    JsonBody(req): JsonBody<SystemUpgradeRequest>,
) -> ApiResult<(StatusCode, Json<SystemUpgradeStarted>)> {
    // Once started, the slot write and the reboot finish even if the caller goes.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let host = h.clone();
    tokio::spawn(async move {
        let r = tokio::task::spawn_blocking(move || {
            upgrade::upgrade(&host.system, &host.config.data_dir, &req)
        })
        .await;
        let ok = matches!(r, Ok(Ok(_)));
        let _ = tx.send(r);
        if ok {
            // Let the answer reach the controller first.
            tokio::time::sleep(Duration::from_millis(500)).await;
            upgrade::request_halt(PowerAction::Reboot);
        }
    });
    let started = rx
        .await
        .map_err(|e| Error::Conflict(format!("upgrade task: {e}")))?
        .map_err(|e| Error::Conflict(format!("upgrade task: {e}")))??;
    tracing::info!(version = %started.version, slot = %started.slot, "new system written: rebooting into it");
    Ok((StatusCode::ACCEPTED, Json(started)))
}

/// Powers the machine off or reboots it: nova-init (PID 1) stops hostd first, whose
/// VMs go as `vms_at_shutdown` says, then halts. Only on the host image.
#[utoipa::path(post, path = "/v1/system/power", tag = "host",
    request_body = SystemPower,
    responses((status = 202, body = SystemPower),
        (status = 400, body = ErrorBody),
        (status = 409, description = "not on the host image", body = ErrorBody)))]
pub async fn power(
    State(h): S,
    JsonBody(req): JsonBody<SystemPower>,
) -> ApiResult<(StatusCode, Json<SystemPower>)> {
    if !h.system.under_nova_init() {
        return Err(Error::Conflict(
            "this host does not run from the host image: power it off through its own OS".into(),
        )
        .into());
    }
    tracing::info!(action = ?req.action, "power request: asking nova-init");
    tokio::spawn(async move {
        // Let the answer reach the caller first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        upgrade::request_halt(req.action);
    });
    Ok((StatusCode::ACCEPTED, Json(req)))
}
