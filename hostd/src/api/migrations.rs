//! The migration routes: start, follow and cancel a VM's migration out; the list;
//! and the hostd-to-hostd calls of the destination side.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use nova_hostd_api::{
    ErrorBody, IncomingOutcome, IncomingReady, IncomingRequest, MigrateRequest, MigrationList,
    MigrationStatus,
};

use crate::api::error::{ApiResult, JsonBody};
use crate::host::Host;

type S = State<Arc<Host>>;

/// Live-migrates the VM to another hostd; follow it with `GET .../migration`.
#[utoipa::path(post, path = "/v1/vms/{id}/migrate", tag = "migrations", request_body = MigrateRequest,
    params(("id" = String, Path, description = "VM id")),
    responses((status = 202, body = MigrationStatus), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "not running, or it has writable disks")))]
pub async fn migrate(
    State(h): S,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<MigrateRequest>,
) -> ApiResult<(StatusCode, Json<MigrationStatus>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(h.migrations.migrate_out(&id, req).await?),
    ))
}

/// The VM's current or last migration here.
#[utoipa::path(get, path = "/v1/vms/{id}/migration", tag = "migrations",
    params(("id" = String, Path, description = "VM id")),
    responses((status = 200, body = MigrationStatus), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn migration_status(
    State(h): S,
    Path(id): Path<String>,
) -> ApiResult<Json<MigrationStatus>> {
    Ok(Json(h.migrations.of_vm(&id)?))
}

/// Cancels the VM's outgoing migration (it stays here).
#[utoipa::path(delete, path = "/v1/vms/{id}/migration", tag = "migrations",
    params(("id" = String, Path, description = "VM id")),
    responses((status = 202, description = "the VMM was told to cancel"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 502, body = ErrorBody)))]
pub async fn cancel_migration(State(h): S, Path(id): Path<String>) -> ApiResult<StatusCode> {
    h.migrations.cancel(&id).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Migrations under way and finished, newest first.
#[utoipa::path(get, path = "/v1/migrations", tag = "migrations",
    responses((status = 200, body = MigrationList)))]
pub async fn list_migrations(State(h): S) -> Json<MigrationList> {
    Json(h.migrations.list())
}

/// (hostd to hostd) Prepares to receive a VM.
#[utoipa::path(post, path = "/v1/migrations/incoming", tag = "migrations", request_body = IncomingRequest,
    responses((status = 201, body = IncomingReady), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "it does not fit, or an image is missing"),
        (status = 502, body = ErrorBody)))]
pub async fn incoming(
    State(h): S,
    JsonBody(req): JsonBody<IncomingRequest>,
) -> ApiResult<(StatusCode, Json<IncomingReady>)> {
    Ok((
        StatusCode::CREATED,
        Json(h.migrations.prepare_incoming(req).await?),
    ))
}

/// (hostd to hostd) The source saw the switch: the VM is this host's.
#[utoipa::path(post, path = "/v1/migrations/incoming/{mid}/complete", tag = "migrations",
    request_body = IncomingOutcome,
    params(("mid" = String, Path, description = "migration id")),
    responses((status = 204, description = "taken over"), (status = 404, body = ErrorBody)))]
pub async fn incoming_complete(
    State(h): S,
    Path(mid): Path<String>,
    JsonBody(o): JsonBody<IncomingOutcome>,
) -> ApiResult<StatusCode> {
    h.migrations.complete_incoming(&mid, o).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// (hostd to hostd) The migration failed: remove everything made for it here.
#[utoipa::path(post, path = "/v1/migrations/incoming/{mid}/abort", tag = "migrations",
    request_body = IncomingOutcome,
    params(("mid" = String, Path, description = "migration id")),
    responses((status = 204, description = "cleaned up"), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "it completed already")))]
pub async fn incoming_abort(
    State(h): S,
    Path(mid): Path<String>,
    JsonBody(o): JsonBody<IncomingOutcome>,
) -> ApiResult<StatusCode> {
    h.migrations.abort_incoming(&mid, o).await?;
    Ok(StatusCode::NO_CONTENT)
}
