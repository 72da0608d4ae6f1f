//! The cluster's migration policy (get, replace, patch: admins of the system tenant)
//! and the rebalancer's proposals.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};

use super::error::{answer, ApiJson, IfMatch};
use super::{must_be_cluster, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::migration::policy;
use crate::model::{ErrorBody, MigrationPolicy, MigrationPolicyPatch, Move};
use crate::scheduler::rebalance;

fn must_admin(c: &Caller) -> ApiResult<()> {
    must_be_cluster(c, true)?;
    if c.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only admins change the migration policy",
        ))
    }
}

/// `GET /v1/migration-policy`.
#[utoipa::path(get, path = "/v1/migration-policy", tag = "migration",
    responses((status = 200, body = MigrationPolicy)))]
pub async fn get_policy(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Response> {
    must_be_cluster(&c, false)?;
    let p = policy::load(&st.ctx).await?;
    Ok(answer(StatusCode::OK, Some(p.revision), p))
}

/// `PUT /v1/migration-policy`: replaces the whole policy.
#[utoipa::path(put, path = "/v1/migration-policy", tag = "migration", request_body = MigrationPolicy,
    params(("If-Match" = Option<String>, Header, description = "the policy's revision")),
    responses((status = 200, body = MigrationPolicy),
        (status = 400, description = "a bad field", body = ErrorBody),
        (status = 412, description = "the policy changed since that revision", body = ErrorBody)))]
pub async fn put_policy(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    IfMatch(rev): IfMatch,
    ApiJson(p): ApiJson<MigrationPolicy>,
) -> ApiResult<Response> {
    must_admin(&c)?;
    let p = policy::replace(&st.ctx, &p, rev).await?;
    Ok(answer(StatusCode::OK, Some(p.revision), p))
}

/// `PATCH /v1/migration-policy`: changes only the fields the body names (a JSON merge
/// patch; `null` clears `params.bandwidth_mbit`).
#[utoipa::path(patch, path = "/v1/migration-policy", tag = "migration", request_body = MigrationPolicyPatch,
    params(("If-Match" = Option<String>, Header, description = "the policy's revision")),
    responses((status = 200, body = MigrationPolicy),
        (status = 400, description = "a bad field", body = ErrorBody),
        (status = 412, description = "the policy changed since that revision", body = ErrorBody)))]
pub async fn patch_policy(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    IfMatch(rev): IfMatch,
    ApiJson(patch): ApiJson<MigrationPolicyPatch>,
) -> ApiResult<Response> {
    must_admin(&c)?;
    let p = policy::patch(&st.ctx, &patch, rev).await?;
    Ok(answer(StatusCode::OK, Some(p.revision), p))
}

/// `GET /v1/rebalance`: live migrations the rebalancer proposes now.
#[utoipa::path(get, path = "/v1/rebalance", tag = "migration",
    responses((status = 200, body = Vec<Move>), (status = 403, description = "not the system tenant", body = ErrorBody)))]
pub async fn rebalance(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<Move>>> {
    must_be_cluster(&c, false)?;
    let (views, _) = crate::placement::host_views(&st.ctx).await?;
    Ok(Json(rebalance::propose(&views, 0.25, 16)))
}
