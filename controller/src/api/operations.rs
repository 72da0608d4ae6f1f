//! Operation routes: list, get (progress and results), cancel.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};

use super::error::{answer, ApiQuery, IfMatch};
use super::{must_operate, page, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::model::{ErrorBody, Operation, Page, TenantListQuery};
use crate::store::Objects;

async fn visible(st: &AppState, c: &Caller, id: &str) -> ApiResult<Operation> {
    match st.ctx.store.read::<Operation>(id).await? {
        Some(o) if c.sees(&o.tenant) => Ok(o),
        _ => Err(ApiError::not_found("operation")),
    }
}

/// `GET /v1/operations`.
#[utoipa::path(get, path = "/v1/operations", tag = "operations", params(TenantListQuery),
    responses((status = 200, body = Page<Operation>), (status = 400, description = "a bad parameter", body = ErrorBody)))]
pub async fn list_operations(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiQuery(q): ApiQuery<TenantListQuery>,
) -> ApiResult<Json<Page<Operation>>> {
    let only = q.tenant.clone();
    let p = page::<Operation>(&st, &q.page(), move |o| {
        c.sees(&o.tenant) && only.as_ref().is_none_or(|t| *t == o.tenant)
    })
    .await?;
    Ok(Json(p))
}

/// `GET /v1/operations/{id}`.
#[utoipa::path(get, path = "/v1/operations/{id}", tag = "operations",
    params(("id" = String, Path, description = "operation id")),
    responses((status = 200, body = Operation), (status = 404, description = "no such operation in your tenant", body = ErrorBody)))]
pub async fn get_operation(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let o = visible(&st, &c, &id).await?;
    Ok(answer(StatusCode::OK, Some(o.revision), o))
}

/// `POST /v1/operations/{id}/cancel`: asks the operation to stop; a migration not yet
/// switched over leaves its VM on the source.
#[utoipa::path(post, path = "/v1/operations/{id}/cancel", tag = "operations",
    params(("id" = String, Path, description = "operation id"),
        ("If-Match" = Option<String>, Header, description = "the operation's revision")),
    responses((status = 200, body = Operation), (status = 404, description = "no such operation in your tenant", body = ErrorBody),
        (status = 412, description = "the operation changed since that revision", body = ErrorBody)))]
pub async fn cancel_operation(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    IfMatch(rev): IfMatch,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    must_operate(&c)?;
    visible(&st, &c, &id).await?;
    let o = crate::operations::cancel(&st.ctx, &id, rev).await?;
    Ok(answer(StatusCode::OK, Some(o.revision), o))
}
