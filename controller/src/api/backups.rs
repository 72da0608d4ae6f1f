//! Backup routes: stores (system tenant), a VM's backups, restore, verify, delete,
//! prune, schedules and store GC. Another tenant's backups answer 404, never 403;
//! long work answers the operation to follow (`202`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};

use super::error::{answer, ApiJson, ApiQuery};
use super::{must_be_cluster, must_operate, page, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::backups::{self, schedule};
use crate::model::{
    Backup, BackupBody, BackupListQuery, BackupSchedule, BackupStore, ErrorBody, GcBody, ListQuery,
    Operation, Page, PruneBody, RestoreBody, Vm,
};
use crate::store::Objects;

/// The backup routes, merged into the API's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/backup-stores", get(list_stores).post(create_store))
        .route(
            "/v1/backup-stores/{name}",
            axum::routing::delete(delete_store),
        )
        .route("/v1/backup-stores/{name}/gc", post(gc_store))
        .route("/v1/vms/{id}/backups", post(backup_vm))
        .route("/v1/vms/{id}/backups/prune", post(prune_backups))
        .route(
            "/v1/vms/{id}/backup-schedule",
            get(get_backup_schedule)
                .put(put_backup_schedule)
                .delete(delete_backup_schedule),
        )
        .route("/v1/backups", get(list_backups))
        .route("/v1/backups/{id}", get(get_backup).delete(delete_backup))
        .route("/v1/backups/{id}/restore", post(restore_backup))
        .route("/v1/backups/{id}/verify", post(verify_backup))
}

async fn visible_vm(st: &AppState, c: &Caller, id: &str) -> ApiResult<Vm> {
    match st.ctx.store.read::<Vm>(id).await? {
        Some(v) if c.sees(&v.tenant) => Ok(v),
        _ => Err(ApiError::not_found("vm")),
    }
}

async fn visible(st: &AppState, c: &Caller, id: &str) -> ApiResult<Backup> {
    match st.ctx.store.read::<Backup>(id).await? {
        Some(b) if c.sees(&b.tenant) => Ok(b),
        _ => Err(ApiError::not_found("backup")),
    }
}

fn accepted(op: Operation) -> Response {
    answer(StatusCode::ACCEPTED, Some(op.revision), op)
}

/// `POST /v1/backup-stores`: a store the hosts write to (system admins).
#[utoipa::path(post, path = "/v1/backup-stores", tag = "backups", request_body = BackupStore,
    responses((status = 201, body = BackupStore), (status = 400, description = "a bad field", body = ErrorBody),
        (status = 403, description = "not the system tenant", body = ErrorBody),
        (status = 409, description = "the name is taken", body = ErrorBody)))]
pub async fn create_store(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiJson(s): ApiJson<BackupStore>,
) -> ApiResult<Response> {
    must_be_cluster(&c, true)?;
    let s = backups::create_store(&st.ctx, s).await?;
    Ok(answer(StatusCode::CREATED, None, s))
}

/// `GET /v1/backup-stores`: every store, secrets redacted.
#[utoipa::path(get, path = "/v1/backup-stores", tag = "backups",
    responses((status = 200, body = Vec<BackupStore>)))]
pub async fn list_stores(State(st): State<AppState>) -> ApiResult<Json<Vec<BackupStore>>> {
    Ok(Json(backups::stores(&st.ctx).await?))
}

/// `DELETE /v1/backup-stores/{name}`: forgets a store no backup is in.
#[utoipa::path(delete, path = "/v1/backup-stores/{name}", tag = "backups",
    params(("name" = String, Path, description = "store name")),
    responses((status = 200, body = BackupStore), (status = 403, description = "not the system tenant", body = ErrorBody),
        (status = 404, description = "no such store", body = ErrorBody),
        (status = 409, description = "backups are in it", body = ErrorBody)))]
pub async fn delete_store(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<BackupStore>> {
    must_be_cluster(&c, true)?;
    Ok(Json(backups::delete_store(&st.ctx, &name).await?))
}

/// `POST /v1/backup-stores/{name}/gc`: deletes chunks no backup references.
#[utoipa::path(post, path = "/v1/backup-stores/{name}/gc", tag = "backups", request_body = GcBody,
    params(("name" = String, Path, description = "store name")),
    responses((status = 202, body = Operation), (status = 403, description = "not the system tenant", body = ErrorBody),
        (status = 404, description = "no such store", body = ErrorBody),
        (status = 409, description = "no host is ready", body = ErrorBody)))]
pub async fn gc_store(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(b): ApiJson<GcBody>,
) -> ApiResult<Response> {
    must_be_cluster(&c, true)?;
    let op = backups::start_gc(&st.ctx, &c.tenant, &name, b.grace_s).await?;
    Ok(accepted(op))
}

/// `POST /v1/vms/{id}/backups`: backs the VM up (incremental on its last backup in
/// that store); the operation's result is the backup.
#[utoipa::path(post, path = "/v1/vms/{id}/backups", tag = "backups", request_body = BackupBody,
    params(("id" = String, Path, description = "VM id")),
    responses((status = 202, body = Operation), (status = 400, description = "a bad field (no such store)", body = ErrorBody),
        (status = 404, description = "no such VM in your tenant", body = ErrorBody),
        (status = 409, description = "not placed, or a backup of it is running", body = ErrorBody)))]
pub async fn backup_vm(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<BackupBody>,
) -> ApiResult<Response> {
    must_operate(&c)?;
    let vm = visible_vm(&st, &c, &id).await?;
    Ok(accepted(backups::start_backup(&st.ctx, &vm, &b).await?))
}

/// `POST /v1/vms/{id}/backups/prune`: deletes the VM's backups the retention drops.
#[utoipa::path(post, path = "/v1/vms/{id}/backups/prune", tag = "backups", request_body = PruneBody,
    params(("id" = String, Path, description = "VM id")),
    responses((status = 202, body = Operation), (status = 400, description = "a retention that keeps nothing", body = ErrorBody),
        (status = 404, description = "no such VM in your tenant", body = ErrorBody)))]
pub async fn prune_backups(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<PruneBody>,
) -> ApiResult<Response> {
    must_operate(&c)?;
    let vm = visible_vm(&st, &c, &id).await?;
    Ok(accepted(
        backups::start_prune(&st.ctx, &vm.tenant, &vm.id, b.retention).await?,
    ))
}

/// `PUT /v1/vms/{id}/backup-schedule`: a backup every `every_s`, then the retention.
#[utoipa::path(put, path = "/v1/vms/{id}/backup-schedule", tag = "backups", request_body = BackupSchedule,
    params(("id" = String, Path, description = "VM id")),
    responses((status = 200, body = BackupSchedule), (status = 400, description = "a bad field", body = ErrorBody),
        (status = 404, description = "no such VM in your tenant", body = ErrorBody)))]
pub async fn put_backup_schedule(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(s): ApiJson<BackupSchedule>,
) -> ApiResult<Json<BackupSchedule>> {
    must_operate(&c)?;
    let vm = visible_vm(&st, &c, &id).await?;
    Ok(Json(schedule::set(&st.ctx, &vm, s).await?))
}

/// `GET /v1/vms/{id}/backup-schedule`.
#[utoipa::path(get, path = "/v1/vms/{id}/backup-schedule", tag = "backups",
    params(("id" = String, Path, description = "VM id")),
    responses((status = 200, body = BackupSchedule), (status = 404, description = "no such VM or schedule", body = ErrorBody)))]
pub async fn get_backup_schedule(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<BackupSchedule>> {
    let vm = visible_vm(&st, &c, &id).await?;
    Ok(Json(schedule::get(&st.ctx, &vm.id).await?))
}

/// `DELETE /v1/vms/{id}/backup-schedule`.
#[utoipa::path(delete, path = "/v1/vms/{id}/backup-schedule", tag = "backups",
    params(("id" = String, Path, description = "VM id")),
    responses((status = 200, body = BackupSchedule), (status = 404, description = "no such VM or schedule", body = ErrorBody)))]
pub async fn delete_backup_schedule(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<BackupSchedule>> {
    must_operate(&c)?;
    let vm = visible_vm(&st, &c, &id).await?;
    Ok(Json(schedule::remove(&st.ctx, &vm.id).await?))
}

/// `GET /v1/backups[?vm=]`: your tenant's backups (every tenant's for the system
/// tenant), a page at a time.
#[utoipa::path(get, path = "/v1/backups", tag = "backups", params(BackupListQuery),
    responses((status = 200, body = Page<Backup>), (status = 400, description = "a bad parameter", body = ErrorBody)))]
pub async fn list_backups(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiQuery(q): ApiQuery<BackupListQuery>,
) -> ApiResult<Json<Page<Backup>>> {
    let page_q = ListQuery {
        limit: q.limit,
        continue_token: q.continue_token.clone(),
    };
    let vm = q.vm.clone();
    let p = page::<Backup>(&st, &page_q, move |b| {
        c.sees(&b.tenant) && vm.as_ref().is_none_or(|v| *v == b.vm_id)
    })
    .await?;
    Ok(Json(p))
}

/// `GET /v1/backups/{id}`.
#[utoipa::path(get, path = "/v1/backups/{id}", tag = "backups",
    params(("id" = String, Path, description = "backup id")),
    responses((status = 200, body = Backup), (status = 404, description = "no such backup in your tenant", body = ErrorBody)))]
pub async fn get_backup(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let b = visible(&st, &c, &id).await?;
    Ok(answer(StatusCode::OK, Some(b.revision), b))
}

/// `DELETE /v1/backups/{id}`: deletes it from its store (chunks go at the next GC).
#[utoipa::path(delete, path = "/v1/backups/{id}", tag = "backups",
    params(("id" = String, Path, description = "backup id")),
    responses((status = 202, body = Operation), (status = 404, description = "no such backup in your tenant", body = ErrorBody),
        (status = 409, description = "still being written", body = ErrorBody)))]
pub async fn delete_backup(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    must_operate(&c)?;
    let b = visible(&st, &c, &id).await?;
    Ok(accepted(backups::start_delete(&st.ctx, &b).await?))
}

/// `POST /v1/backups/{id}/restore`: a new VM from the backup, on `host` (system
/// tenant) or the first ready one; the operation's result is the VM.
#[utoipa::path(post, path = "/v1/backups/{id}/restore", tag = "backups", request_body = RestoreBody,
    params(("id" = String, Path, description = "backup id")),
    responses((status = 202, body = Operation), (status = 400, description = "a bad field (no such host)", body = ErrorBody),
        (status = 403, description = "a host named by another tenant than the system's", body = ErrorBody),
        (status = 404, description = "no such backup in your tenant", body = ErrorBody),
        (status = 409, description = "not complete, damaged, or the name is taken", body = ErrorBody)))]
pub async fn restore_backup(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RestoreBody>,
) -> ApiResult<Response> {
    must_operate(&c)?;
    let b = visible(&st, &c, &id).await?;
    if body.host.is_some() && !c.is_cluster() {
        return Err(ApiError::forbidden("only the system tenant chooses hosts").with_field("host"));
    }
    Ok(accepted(
        backups::start_restore(&st.ctx, &b, &b.tenant, &body).await?,
    ))
}

/// `POST /v1/backups/{id}/verify`: re-hashes every chunk; damage is recorded on the
/// backup (`damaged`, `damaged_chunks`).
#[utoipa::path(post, path = "/v1/backups/{id}/verify", tag = "backups",
    params(("id" = String, Path, description = "backup id")),
    responses((status = 202, body = Operation), (status = 404, description = "no such backup in your tenant", body = ErrorBody),
        (status = 409, description = "not complete", body = ErrorBody)))]
pub async fn verify_backup(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    must_operate(&c)?;
    let b = visible(&st, &c, &id).await?;
    Ok(accepted(backups::start_verify(&st.ctx, &b).await?))
}
