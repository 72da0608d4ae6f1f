//! Cloud bursting routes: the burst policy (get, replace: admins of the system tenant)
//! and the burst hosts the controller launched, with their estimated cost.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Json, Router};

use super::error::{answer, ApiJson, IfMatch};
use super::{must_be_cluster, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::cloud::{burst, policy};
use crate::model::{BurstHosts, BurstPolicy, ErrorBody};

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/cloud/burst-policy",
            get(get_burst_policy).put(put_burst_policy),
        )
        .route("/v1/cloud/burst-hosts", get(burst_hosts))
}

/// `GET /v1/cloud/burst-policy`.
#[utoipa::path(get, path = "/v1/cloud/burst-policy", tag = "cloud",
    responses((status = 200, body = BurstPolicy),
        (status = 403, description = "not the system tenant", body = ErrorBody)))]
pub async fn get_burst_policy(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Response> {
    must_be_cluster(&c, false)?;
    let p = policy::load(&st.ctx).await?;
    Ok(answer(StatusCode::OK, Some(p.revision), p))
}

/// `PUT /v1/cloud/burst-policy`: replaces the whole policy (admins).
#[utoipa::path(put, path = "/v1/cloud/burst-policy", tag = "cloud", request_body = BurstPolicy,
    params(("If-Match" = Option<String>, Header, description = "the policy's revision")),
    responses((status = 200, body = BurstPolicy),
        (status = 400, description = "a bad field (or `enabled` without a provider)", body = ErrorBody),
        (status = 412, description = "the policy changed since that revision", body = ErrorBody)))]
pub async fn put_burst_policy(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    IfMatch(rev): IfMatch,
    ApiJson(p): ApiJson<BurstPolicy>,
) -> ApiResult<Response> {
    must_be_cluster(&c, true)?;
    if !c.is_admin() {
        return Err(ApiError::forbidden("only admins change the burst policy"));
    }
    let p = policy::replace(&st.ctx, &p, rev).await?;
    Ok(answer(StatusCode::OK, Some(p.revision), p))
}

/// `GET /v1/cloud/burst-hosts`: every burst host launched (terminated ones for a
/// week), with hours and cost so far.
#[utoipa::path(get, path = "/v1/cloud/burst-hosts", tag = "cloud",
    responses((status = 200, body = BurstHosts),
        (status = 403, description = "not the system tenant", body = ErrorBody)))]
pub async fn burst_hosts(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<BurstHosts>> {
    must_be_cluster(&c, false)?;
    Ok(Json(burst::list(&st.ctx).await?))
}
