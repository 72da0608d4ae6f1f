//! The backup job routes: start a job on a backup store (back up, restore, verify,
//! GC, delete) and follow it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use nova_hostd_api::{BackupJob, ErrorBody, JobRequest};

use crate::api::error::{ApiResult, JsonBody};
use crate::host::Host;

type S = State<Arc<Host>>;

/// Starts a backup job; follow it with `GET /v1/backup-jobs/{id}`.
#[utoipa::path(post, path = "/v1/backup-jobs", tag = "backups", request_body = JobRequest,
    responses((status = 202, body = BackupJob), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such VM")))]
pub async fn start_job(
    State(h): S,
    JsonBody(req): JsonBody<JobRequest>,
) -> ApiResult<(StatusCode, Json<BackupJob>)> {
    Ok((StatusCode::ACCEPTED, Json(h.backups.start(req)?)))
}

/// A backup job: its phase and progress, then its result or error.
#[utoipa::path(get, path = "/v1/backup-jobs/{id}", tag = "backups",
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = BackupJob), (status = 404, body = ErrorBody)))]
pub async fn get_job(State(h): S, Path(id): Path<String>) -> ApiResult<Json<BackupJob>> {
    Ok(Json(h.backups.get(&id)?))
}
