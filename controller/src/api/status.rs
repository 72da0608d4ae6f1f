//! The controller itself: health, leadership, who the caller is, and its Prometheus
//! metrics (which need a system-tenant token: a viewer token of the system tenant is
//! the metrics reader's credential).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::{must_be_cluster, ApiResult, AppState};
use crate::auth::Caller;
use crate::model::{ErrorBody, Health, Leader, Whoami};

/// `GET /v1/health`.
#[utoipa::path(get, path = "/v1/health", tag = "controller", security(()),
    responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// `GET /v1/leader`: this controller and whether it leads.
#[utoipa::path(get, path = "/v1/leader", tag = "controller", security(()),
    responses((status = 200, body = Leader)))]
pub async fn leader(State(st): State<AppState>) -> Json<Leader> {
    Json(Leader {
        node: st.ctx.node.clone(),
        leader: st.ctx.leads(),
        backend: st.ctx.store.backend().into(),
    })
}

/// `GET /v1/whoami`: the caller as its token says.
#[utoipa::path(get, path = "/v1/whoami", tag = "controller",
    responses((status = 200, body = Whoami)))]
pub async fn whoami(Extension(c): Extension<Caller>) -> Json<Whoami> {
    Json(Whoami {
        user: c.user,
        tenant: c.tenant,
        role: c.role,
        host: c.host,
    })
}

/// `GET /metrics`: Prometheus metrics (OpenMetrics text). Needs a token of the system
/// tenant (a viewer is enough).
#[utoipa::path(get, path = "/metrics", tag = "controller",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text"),
        (status = 403, description = "not a system-tenant token", body = ErrorBody)))]
pub async fn metrics(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Response> {
    must_be_cluster(&c, false)?;
    let mut r = st.ctx.metrics.encode().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(r)
}
