//! The `/v1` HTTP API: the router, the shared state every handler sees, the one
//! authentication point (a middleware that also writes the audit log of every
//! mutating call), errors that name the bad field, and the OpenAPI document.

mod access;
mod hosts;
mod operations;
mod stream;
mod vms;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use utoipa::OpenApi;

pub use nova_hostd::api::types::FieldError;

use crate::auth::{self, Caller, FailedAuthLimiter};
use crate::events::Events;
use crate::model::{now_ms, AuditEntry, Role, Token, SYSTEM_TENANT};
use crate::store::{DynStore, Objects, StoreError};

/// What every handler and loop shares.
#[derive(Clone)]
pub struct AppState {
    pub store: DynStore,
    pub events: Events,
    /// Whether this controller leads (runs the reconcile loops).
    pub leading: watch::Receiver<bool>,
    pub node: String,
    /// SHA-256 of the join token hosts register with.
    pub join_hash: Arc<String>,
    pub limiter: Arc<FailedAuthLimiter>,
    pub http: reqwest::Client,
    /// Migrations under way here, for the policy's parallelism limits.
    pub slots: Arc<crate::migration::Slots>,
    /// How often hosts heartbeat, ms (told to them at registration).
    pub heartbeat_ms: u64,
}

/// An error answer: `{"error": "...", "field": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            field: None,
        }
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
    pub fn forbidden(why: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, why)
    }
    pub fn conflict(why: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, why)
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: e.to_string(),
            field: Some(e.field),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) => Self::conflict(e.to_string()),
            StoreError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, e.to_string()),
            _ => {
                tracing::error!("store: {e}");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = nova_hostd::api::types::ErrorBody {
            error: self.error,
            field: self.field,
        };
        (self.status, Json(body)).into_response()
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose errors name the field (`spec.vcpus: invalid type ...`).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.body_text()))?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body; the error names the field (`spec.vcpus: invalid type ...`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner().to_string();
        let mut field = e.path().to_string();
        // "missing field `name`": the field is in the message, its parent in the path.
        // (The path of an unknown field already ends with it.)
        if let Some(name) = inner
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            field = if field == "." {
                name.to_string()
            } else {
                format!("{field}.{name}")
            };
        }
        if field == "." {
            field = "body".into();
        }
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: format!("{field}: {inner}"),
            field: Some(field),
        }
    })
}

/// JSON with a status.
pub fn created<T: Serialize>(v: T) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

const PUBLIC: &[&str] = &["/v1/health", "/v1/openapi.json", "/v1/leader"];
const REGISTER: &str = "/v1/hosts/register";

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Authenticates every non-public request and audits every mutating one.
async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if PUBLIC.contains(&path.as_str()) {
        return next.run(req).await;
    }
    let ip: IpAddr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    if st.limiter.blocked(ip) {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed authentication attempts; try later",
        )
        .into_response();
    }
    let secret = bearer(&req).unwrap_or_default().to_string();
    let unauthorized = |st: &AppState| {
        st.limiter.failed(ip);
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or unknown API token (Authorization: Bearer ...)",
        )
        .into_response()
    };
    if secret.is_empty() || secret.len() > 256 {
        return unauthorized(&st);
    }
    let hashed = auth::hash(&secret);
    // The join token registers hosts; hostd versions that keep using it for heartbeats
    // are accepted too (the handler then checks the body names a registered host).
    let joining =
        path == REGISTER || (path.starts_with("/v1/hosts/") && path.ends_with("/heartbeat"));
    let caller = if joining && hashed == *st.join_hash {
        Caller {
            user: "join-token".into(),
            tenant: SYSTEM_TENANT.into(),
            role: Role::Host,
            host: None,
        }
    } else {
        match st.store.read::<Token>(&hashed).await {
            Ok(Some(t)) => Caller::from_token(&t),
            Ok(None) => return unauthorized(&st),
            Err(e) => return ApiError::from(e).into_response(),
        }
    };
    let method = req.method().clone();
    req.extensions_mut().insert(caller.clone());
    let resp = next.run(req).await;
    if method != Method::GET && method != Method::HEAD && !path.ends_with("/heartbeat") {
        let e = AuditEntry {
            at_ms: now_ms(),
            actor: caller.actor(),
            tenant: caller.tenant.clone(),
            method: method.to_string(),
            path,
            status: resp.status().as_u16(),
        };
        if let Err(err) = st.store.audit(&e).await {
            tracing::error!("audit log write failed: {err}");
        }
    }
    resp
}

/// `GET /v1/health`.
#[utoipa::path(get, path = "/v1/health", responses((status = 200, description = "ok")))]
async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /v1/leader`: this controller and whether it leads.
#[utoipa::path(get, path = "/v1/leader", responses((status = 200, description = "{node, leader, backend}")))]
async fn leader(State(st): State<AppState>) -> Json<serde_json::Value> {
    Json(
        serde_json::json!({"node": st.node, "leader": *st.leading.borrow(), "backend": st.store.backend()}),
    )
}

/// `GET /v1/whoami`.
#[utoipa::path(get, path = "/v1/whoami", responses((status = 200, description = "the caller")))]
async fn whoami(Extension(c): Extension<Caller>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"user": c.user, "tenant": c.tenant, "role": c.role, "host": c.host}))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "NovaCron controller",
        description = "The cluster API: hosts, VMs, operations, events, tenants, users, tokens, audit."
    ),
    paths(
        health,
        leader,
        whoami,
        hosts::register,
        hosts::heartbeat,
        hosts::list,
        hosts::get_host,
        hosts::cordon,
        hosts::uncordon,
        hosts::drain,
        hosts::get_policy,
        hosts::put_policy,
        hosts::rebalance,
        vms::create,
        vms::list,
        vms::get_vm,
        vms::start,
        vms::stop,
        vms::delete,
        vms::migrate,
        operations::list,
        operations::get_op,
        operations::cancel,
        access::create_tenant,
        access::list_tenants,
        access::create_user,
        access::list_users,
        access::create_token,
        access::list_tokens,
        access::delete_token,
        access::audit,
        stream::events,
    ),
    components(schemas(
        crate::model::Host,
        crate::model::Vm,
        crate::model::VmSpec,
        crate::model::Operation,
        crate::model::Tenant,
        crate::model::User,
        crate::model::Token,
        crate::model::AuditEntry,
        crate::model::Quota,
        crate::model::Role,
        crate::events::Event,
        crate::migration::policy::MigrationPolicy,
        crate::scheduler::rebalance::Move,
    ))
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn fallback() -> ApiError {
    ApiError::not_found("route")
}

/// The whole `/v1` router.
pub fn router(st: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/leader", get(leader))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/whoami", get(whoami))
        .route("/v1/hosts/register", post(hosts::register))
        .route("/v1/hosts", get(hosts::list))
        .route("/v1/hosts/{id}", get(hosts::get_host))
        .route("/v1/hosts/{id}/heartbeat", post(hosts::heartbeat))
        .route("/v1/hosts/{id}/cordon", post(hosts::cordon))
        .route("/v1/hosts/{id}/uncordon", post(hosts::uncordon))
        .route("/v1/hosts/{id}/drain", post(hosts::drain))
        .route(
            "/v1/migration-policy",
            get(hosts::get_policy).put(hosts::put_policy),
        )
        .route("/v1/rebalance", get(hosts::rebalance))
        .route("/v1/vms", get(vms::list).post(vms::create))
        .route("/v1/vms/{id}", get(vms::get_vm).delete(vms::delete))
        .route("/v1/vms/{id}/start", post(vms::start))
        .route("/v1/vms/{id}/stop", post(vms::stop))
        .route("/v1/vms/{id}/migrate", post(vms::migrate))
        .route("/v1/operations", get(operations::list))
        .route("/v1/operations/{id}", get(operations::get_op))
        .route("/v1/operations/{id}/cancel", post(operations::cancel))
        .route("/v1/events", get(stream::events))
        .route(
            "/v1/tenants",
            get(access::list_tenants).post(access::create_tenant),
        )
        .route(
            "/v1/users",
            get(access::list_users).post(access::create_user),
        )
        .route(
            "/v1/tokens",
            get(access::list_tokens).post(access::create_token),
        )
        .route(
            "/v1/tokens/{id}",
            axum::routing::delete(access::delete_token),
        )
        .route("/v1/audit", get(access::audit))
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(
            st.clone(),
            authenticate,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(st)
}

/// Checks a label key or value (also used for `k=v` affinity terms).
pub fn validate_label(field: &str, s: &str) -> Result<(), FieldError> {
    if s.is_empty() || s.len() > 63 {
        return Err(FieldError::new(field, "must be 1 to 63 characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(FieldError::new(
            field,
            format!("character {c:?} not allowed"),
        ));
    }
    Ok(())
}

/// Requires a role that may change things in the caller's tenant.
pub fn must_operate(c: &Caller) -> ApiResult<()> {
    if c.can_operate() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "this token's role cannot change anything (viewer)",
        ))
    }
}

/// Requires the cluster's own tenant (hosts, tenants, policy).
pub fn must_be_cluster(c: &Caller, mutate: bool) -> ApiResult<()> {
    if !c.is_cluster() {
        return Err(ApiError::forbidden(
            "only the system tenant manages the cluster",
        ));
    }
    if mutate {
        must_operate(c)?;
    }
    Ok(())
}
