//! Host image routes: `GET /v1/system-images` (the versions of the controller's
//! `--system-images`), `POST /v1/hosts/{id}/upgrade` (install one on a host) and
//! `POST /v1/hosts/{id}/power` (power it off or reboot it); system operators. The work
//! is the domain's (`crate::upgrades`, `crate::power`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};

use super::error::{answer, ApiJson};
use super::{must_be_cluster, ApiResult, AppState};
use crate::auth::Caller;
use crate::model::ErrorBody;
use nova_controller_api::{HostUpgrade, HostUpgradeRequest, SystemImages, SystemPower};

/// `GET /v1/system-images`: the host image versions hosts may upgrade to, newest first.
#[utoipa::path(get, path = "/v1/system-images", tag = "hosts",
    responses((status = 200, body = SystemImages),
        (status = 409, description = "no --system-images", body = ErrorBody)))]
pub async fn system_images(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<SystemImages>> {
    must_be_cluster(&c, false)?;
    let images = crate::upgrades::images(&st.ctx)?;
    Ok(Json(SystemImages { images }))
}

/// `POST /v1/hosts/{id}/upgrade`: streams the version's kernel and initramfs to the
/// host, which writes them to its inactive slot and reboots into it once (it stays
/// there only if its hostd registers again in time). Drain the host first.
#[utoipa::path(post, path = "/v1/hosts/{id}/upgrade", tag = "hosts",
    request_body = HostUpgradeRequest,
    params(("id" = String, Path, description = "host id")),
    responses((status = 202, body = HostUpgrade),
        (status = 400, description = "no such version (field `image`)", body = ErrorBody),
        (status = 404, description = "no such host", body = ErrorBody),
        (status = 409, description = "not Ready, not on the host image, or no --system-images", body = ErrorBody),
        (status = 502, description = "the host's hostd refused", body = ErrorBody)))]
pub async fn upgrade_host(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<HostUpgradeRequest>,
) -> ApiResult<Response> {
    must_be_cluster(&c, true)?;
    let up = crate::upgrades::upgrade(&st.ctx, &id, &req).await?;
    Ok(answer(StatusCode::ACCEPTED, None, up))
}

/// `POST /v1/hosts/{id}/power`: powers a host on the host image off or reboots it; its
/// VMs go first, as the host's `vms_at_shutdown` says (drain it first to move them
/// under the migration policy).
#[utoipa::path(post, path = "/v1/hosts/{id}/power", tag = "hosts",
    request_body = SystemPower,
    params(("id" = String, Path, description = "host id")),
    responses((status = 202, body = SystemPower),
        (status = 400, body = ErrorBody),
        (status = 404, description = "no such host", body = ErrorBody),
        (status = 409, description = "not on the host image", body = ErrorBody),
        (status = 502, description = "the host's hostd refused or is unreachable", body = ErrorBody)))]
pub async fn power_host(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SystemPower>,
) -> ApiResult<Response> {
    must_be_cluster(&c, true)?;
    let done = crate::power::power(&st.ctx, &id, &req).await?;
    Ok(answer(StatusCode::ACCEPTED, None, done))
}
