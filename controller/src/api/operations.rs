//! Operation routes: list, get (progress and results), cancel.

use axum::extract::{Path, State};
use axum::{Extension, Json};

use super::{must_operate, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::model::{now_ms, Operation};
use crate::store::Objects;

/// `GET /v1/operations`.
#[utoipa::path(get, path = "/v1/operations", responses((status = 200, body = [Operation])))]
pub async fn list(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<Operation>>> {
    Ok(Json(
        st.store
            .list_all::<Operation>()
            .await?
            .into_iter()
            .filter(|o| c.sees(&o.tenant))
            .collect(),
    ))
}

/// `GET /v1/operations/{id}`.
#[utoipa::path(get, path = "/v1/operations/{id}", responses((status = 200, body = Operation)))]
pub async fn get_op(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Operation>> {
    match st.store.read::<Operation>(&id).await? {
        Some(o) if c.sees(&o.tenant) => Ok(Json(o)),
        _ => Err(ApiError::not_found("operation")),
    }
}

/// `POST /v1/operations/{id}/cancel`: asks the operation to stop; a migration not yet
/// switched over leaves its VM on the source.
#[utoipa::path(post, path = "/v1/operations/{id}/cancel", responses((status = 200, body = Operation)))]
pub async fn cancel(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Operation>> {
    must_operate(&c)?;
    match st.store.read::<Operation>(&id).await? {
        Some(o) if c.sees(&o.tenant) => {}
        _ => return Err(ApiError::not_found("operation")),
    }
    let o = st
        .store
        .update::<Operation, _>(&id, |o| {
            if o.state.is_final() {
                return false;
            }
            o.cancel_requested = true;
            o.updated_at_ms = now_ms();
            true
        })
        .await?;
    st.events.publish(
        "operation.cancel_requested",
        &o.tenant,
        &id,
        serde_json::json!({}),
    );
    Ok(Json(o))
}
