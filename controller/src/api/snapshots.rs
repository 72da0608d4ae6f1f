//! Snapshot routes: take, list, get, delete, restore a VM's snapshots, and its
//! snapshot schedule. Another tenant's snapshots and VMs answer 404.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::error::{parse_optional_json, ApiJson};
use super::{must_operate, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::model::{
    ErrorBody, NewSnapshot, RestoreSnapshot, ScheduleBody, Snapshot, SnapshotSchedule, Vm,
    MAX_KEEP, MAX_SCHEDULE_SECS, MIN_SCHEDULE_SECS,
};
use crate::store::Objects;

/// The routes.
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/vms/{id}/snapshots", get(list_vm_snapshots).post(take))
        .route(
            "/v1/vms/{id}/snapshot-schedule",
            get(get_snapshot_schedule)
                .put(put_snapshot_schedule)
                .delete(delete_snapshot_schedule),
        )
        .route("/v1/snapshots", get(list_snapshots))
        .route(
            "/v1/snapshots/{id}",
            get(get_snapshot).delete(delete_snapshot),
        )
        .route("/v1/snapshots/{id}/restore", post(restore))
}

async fn visible_vm(st: &AppState, c: &Caller, id: &str) -> ApiResult<Vm> {
    match st.ctx.store.read::<Vm>(id).await? {
        Some(v) if c.sees(&v.tenant) => Ok(v),
        _ => Err(ApiError::not_found("vm")),
    }
}

/// `POST /v1/vms/{id}/snapshots`: pause, snapshot memory, devices and disks, resume.
#[utoipa::path(post, path = "/v1/vms/{id}/snapshots", tag = "snapshots",
    params(("id" = String, Path, description = "VM id")),
    request_body(content = Option<NewSnapshot>, description = "optional"),
    responses((status = 201, body = Snapshot), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "not running or placed, or its host cannot take a copy-on-write point of its disks", body = ErrorBody),
        (status = 502, body = ErrorBody)))]
pub async fn take(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Snapshot>)> {
    must_operate(&c)?;
    let body: NewSnapshot = parse_optional_json(&body)?;
    let vm = visible_vm(&st, &c, &id).await?;
    let s = crate::snapshots::take(&st.ctx, &vm, body.name, false).await?;
    Ok((StatusCode::CREATED, Json(s)))
}

/// `GET /v1/vms/{id}/snapshots`: the VM's snapshots, newest first.
#[utoipa::path(get, path = "/v1/vms/{id}/snapshots", tag = "snapshots",
    params(("id" = String, Path, description = "VM id")),
    responses((status = 200, body = Vec<Snapshot>), (status = 404, body = ErrorBody)))]
pub async fn list_vm_snapshots(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<Snapshot>>> {
    let vm = visible_vm(&st, &c, &id).await?;
    Ok(Json(
        crate::snapshots::list(&st.ctx, |s| s.vm_id == vm.id).await?,
    ))
}

/// `GET /v1/snapshots`: every snapshot the caller's tenant owns (all, for the system
/// tenant), newest first.
#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots",
    responses((status = 200, body = Vec<Snapshot>)))]
pub async fn list_snapshots(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<Snapshot>>> {
    Ok(Json(
        crate::snapshots::list(&st.ctx, |s| c.sees(&s.tenant)).await?,
    ))
}

/// `GET /v1/snapshots/{id}`.
#[utoipa::path(get, path = "/v1/snapshots/{id}", tag = "snapshots",
    params(("id" = String, Path, description = "snapshot id")),
    responses((status = 200, body = Snapshot), (status = 404, body = ErrorBody)))]
pub async fn get_snapshot(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Snapshot>> {
    Ok(Json(
        crate::snapshots::visible(&st.ctx, &id, |t| c.sees(t)).await?,
    ))
}

/// `DELETE /v1/snapshots/{id}`: its files on every host, then its record.
#[utoipa::path(delete, path = "/v1/snapshots/{id}", tag = "snapshots",
    params(("id" = String, Path, description = "snapshot id")),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody)))]
pub async fn delete_snapshot(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    must_operate(&c)?;
    let s = crate::snapshots::visible(&st.ctx, &id, |t| c.sees(t)).await?;
    crate::snapshots::delete(&st.ctx, &s).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/snapshots/{id}/restore`: into its VM (stopped first), or into a new VM
/// (`new_vm`) on any host (`host`).
#[utoipa::path(post, path = "/v1/snapshots/{id}/restore", tag = "snapshots",
    params(("id" = String, Path, description = "snapshot id")),
    request_body(content = Option<RestoreSnapshot>, description = "optional: in place when empty"),
    responses((status = 200, body = Vm), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 502, body = ErrorBody)))]
pub async fn restore(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Vm>> {
    must_operate(&c)?;
    let body: RestoreSnapshot = parse_optional_json(&body)?;
    let s = crate::snapshots::visible(&st.ctx, &id, |t| c.sees(t)).await?;
    let vm = match body.new_vm {
        Some(name) => {
            let mut spec = s.spec.clone();
            spec.name = name;
            crate::snapshots::restore::into_new_vm(
                &st.ctx,
                &s.tenant,
                &s,
                spec,
                body.host.as_deref(),
                false,
            )
            .await?
        }
        None if body.host.is_some() => {
            return Err(nova_http::FieldError::new(
                "host",
                "a restore in place runs on the VM's host; name new_vm to restore elsewhere",
            )
            .into())
        }
        None => crate::snapshots::restore::in_place(&st.ctx, &s).await?,
    };
    Ok(Json(vm))
}

/// `PUT /v1/vms/{id}/snapshot-schedule`: take one every `every_secs`, keep by `keep`.
#[utoipa::path(put, path = "/v1/vms/{id}/snapshot-schedule", tag = "snapshots",
    params(("id" = String, Path, description = "VM id")), request_body = ScheduleBody,
    responses((status = 200, body = SnapshotSchedule), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn put_snapshot_schedule(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ScheduleBody>,
) -> ApiResult<Json<SnapshotSchedule>> {
    must_operate(&c)?;
    let vm = visible_vm(&st, &c, &id).await?;
    if !(MIN_SCHEDULE_SECS..=MAX_SCHEDULE_SECS).contains(&body.every_secs) {
        return Err(nova_http::FieldError::new(
            "every_secs",
            format!("must be {MIN_SCHEDULE_SECS} to {MAX_SCHEDULE_SECS}"),
        )
        .into());
    }
    let k = body.keep;
    for (name, n) in [
        ("last", k.last),
        ("hourly", k.hourly),
        ("daily", k.daily),
        ("weekly", k.weekly),
    ] {
        if n > MAX_KEEP {
            return Err(nova_http::FieldError::new(
                format!("keep.{name}"),
                format!("at most {MAX_KEEP}"),
            )
            .into());
        }
    }
    let s = SnapshotSchedule {
        vm_id: vm.id.clone(),
        tenant: vm.tenant.clone(),
        every_secs: body.every_secs,
        keep: body.keep,
        last_run_ms: 0,
        last_error: None,
    };
    st.ctx
        .store
        .put(
            &format!("snapshot-schedules/{}", vm.id),
            serde_json::to_vec(&s)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
            crate::store::Expect::Any,
        )
        .await?;
    Ok(Json(s))
}

/// `GET /v1/vms/{id}/snapshot-schedule`.
#[utoipa::path(get, path = "/v1/vms/{id}/snapshot-schedule", tag = "snapshots",
    params(("id" = String, Path, description = "VM id")),
    responses((status = 200, body = SnapshotSchedule), (status = 404, body = ErrorBody)))]
pub async fn get_snapshot_schedule(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<SnapshotSchedule>> {
    let vm = visible_vm(&st, &c, &id).await?;
    let s = st
        .ctx
        .store
        .read::<SnapshotSchedule>(&vm.id)
        .await?
        .ok_or_else(|| ApiError::not_found("snapshot schedule"))?;
    Ok(Json(s))
}

/// `DELETE /v1/vms/{id}/snapshot-schedule` (its snapshots stay).
#[utoipa::path(delete, path = "/v1/vms/{id}/snapshot-schedule", tag = "snapshots",
    params(("id" = String, Path, description = "VM id")),
    responses((status = 204, description = "removed"), (status = 404, body = ErrorBody)))]
pub async fn delete_snapshot_schedule(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    must_operate(&c)?;
    let vm = visible_vm(&st, &c, &id).await?;
    if !st.ctx.store.remove::<SnapshotSchedule>(&vm.id).await? {
        return Err(ApiError::not_found("snapshot schedule"));
    }
    Ok(StatusCode::NO_CONTENT)
}
