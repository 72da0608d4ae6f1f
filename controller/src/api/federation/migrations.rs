//! Cross-cluster live migration routes of the destination cluster: a peer's user
//! asks it to admit a VM (`POST /v1/federation/migrations`, mapped by this cluster's
//! trust policy), the peer cluster tells how it ended (`.../commit`, `.../abort`),
//! and the gateway through which the source hostd prepares the destination host
//! (`/v1/federation/migrations/{id}/hostd/...`: the hostd routes a migration calls,
//! authenticated by that migration's own token, not by the API's middleware, and
//! audited here). The source side starts from `POST /v1/vms/{id}/migrate` with a
//! `cluster`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use nova_hostd_api::{Health, ImageInfo, IncomingOutcome, IncomingReady, IncomingRequest, VmInfo};

use super::super::error::ApiJson;
use super::super::{ApiError, ApiResult, AppState};
use super::{must_be_local_admin, peer_cluster, Presented};
use crate::auth::Caller;
use crate::error::Error;
use crate::federation::gateway::Gateway;
use crate::federation::incoming;
use crate::federation::Presenter;
use crate::model::{
    now_ms, Admitted, AuditEntry, ErrorBody, IncomingMigration, IncomingVm, MigrationEnd,
};
use crate::store::Objects;

/// Where every migration's gateway starts.
const GATEWAY: &str = "/v1/federation/migrations/{id}/hostd";

/// Whether `path` is a migration gateway's (authenticated by its own token).
pub fn is_gateway(path: &str) -> bool {
    path.strip_prefix("/v1/federation/migrations/")
        .and_then(|r| r.split_once('/'))
        .is_some_and(|(_, rest)| rest.starts_with("hostd/"))
}

/// The routes, mounted by `federation::routes`.
pub fn routes() -> Router<AppState> {
    let g = |p: &str| format!("{GATEWAY}{p}");
    Router::new()
        .route("/v1/federation/migrations", post(admit))
        .route("/v1/federation/migrations/{id}", get(show))
        .route("/v1/federation/migrations/{id}/commit", post(commit))
        .route("/v1/federation/migrations/{id}/abort", post(abort))
        .route(&g("/v1/health"), get(gw_health))
        .route(&g("/v1/images"), put(gw_upload))
        .route(&g("/v1/images/{image}"), get(gw_image))
        .route(&g("/v1/vms/{vm}"), get(gw_vm))
        .route(&g("/v1/migrations/incoming"), post(gw_prepare))
        .route(
            &g("/v1/migrations/incoming/{hm}/complete"),
            post(gw_complete),
        )
        .route(&g("/v1/migrations/incoming/{hm}/abort"), post(gw_abort))
}

/// `POST /v1/federation/migrations`: a peer's user asks this cluster to admit a VM.
#[utoipa::path(post, path = "/v1/federation/migrations", tag = "federation", operation_id = "federation_admit_migration", request_body = IncomingVm,
    responses((status = 201, body = Admitted), (status = 400, description = "a bad field", body = ErrorBody),
        (status = 403, description = "this cluster's trust policy does not let the caller create VMs", body = ErrorBody),
        (status = 409, description = "no host has room, the name is taken, or the quota is full", body = ErrorBody)))]
pub async fn admit(
    State(st): State<AppState>,
    p: Presented,
    ApiJson(v): ApiJson<IncomingVm>,
) -> ApiResult<Response> {
    let Some(Extension(Presenter::PeerUser { peer, caller })) = p else {
        return Err(ApiError::forbidden(
            "only a peer cluster's user (a federated token this cluster's policy honours) \
             migrates a VM here",
        ));
    };
    let a = incoming::admit(&st.ctx, &peer, &caller, &v).await?;
    Ok((StatusCode::CREATED, Json(a)).into_response())
}

/// `GET /v1/federation/migrations/{id}`: an incoming migration (this cluster's
/// system admins, or the peer it comes from).
#[utoipa::path(get, path = "/v1/federation/migrations/{id}", tag = "federation", operation_id = "federation_incoming_migration",
    params(("id" = String, Path, description = "migration id")),
    responses((status = 200, body = IncomingMigration),
        (status = 403, description = "neither a system admin here nor the peer it comes from", body = ErrorBody),
        (status = 404, description = "no such migration", body = ErrorBody)))]
pub async fn show(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    p: Presented,
    Path(id): Path<String>,
) -> ApiResult<Json<IncomingMigration>> {
    let peer = match peer_cluster(&p) {
        Ok(peer) => Some(peer),
        Err(_) => {
            must_be_local_admin(&c, &p)?;
            None
        }
    };
    Ok(Json(incoming::show(&st.ctx, peer.as_deref(), &id).await?))
}

/// `POST /v1/federation/migrations/{id}/commit`: the source saw the switch.
#[utoipa::path(post, path = "/v1/federation/migrations/{id}/commit", tag = "federation", operation_id = "federation_commit_migration", request_body = MigrationEnd,
    params(("id" = String, Path, description = "migration id")),
    responses((status = 200, body = IncomingMigration), (status = 400, description = "a bad field", body = ErrorBody),
        (status = 403, description = "only the peer cluster it comes from", body = ErrorBody),
        (status = 404, description = "no such migration of this peer", body = ErrorBody),
        (status = 409, description = "it was dropped here", body = ErrorBody)))]
pub async fn commit(
    State(st): State<AppState>,
    p: Presented,
    Path(id): Path<String>,
    ApiJson(e): ApiJson<MigrationEnd>,
) -> ApiResult<Json<IncomingMigration>> {
    let peer = peer_cluster(&p)?;
    Ok(Json(incoming::commit(&st.ctx, &peer, &id, &e).await?))
}

/// `POST /v1/federation/migrations/{id}/abort`: nothing moved; drop it here.
#[utoipa::path(post, path = "/v1/federation/migrations/{id}/abort", tag = "federation", operation_id = "federation_abort_migration", request_body = MigrationEnd,
    params(("id" = String, Path, description = "migration id")),
    responses((status = 200, body = IncomingMigration), (status = 400, description = "a bad field", body = ErrorBody),
        (status = 403, description = "only the peer cluster it comes from", body = ErrorBody),
        (status = 404, description = "no such migration of this peer", body = ErrorBody),
        (status = 409, description = "the VM runs here already", body = ErrorBody)))]
pub async fn abort(
    State(st): State<AppState>,
    p: Presented,
    Path(id): Path<String>,
    ApiJson(e): ApiJson<MigrationEnd>,
) -> ApiResult<Json<IncomingMigration>> {
    let peer = peer_cluster(&p)?;
    Ok(Json(incoming::abort(&st.ctx, &peer, &id, &e).await?))
}

/// A destination hostd's answer passed back as it was (status and message), so the
/// source hostd reads the host's own refusal; the gateway's own errors as the API's.
fn passed(e: Error) -> ApiError {
    match &e {
        Error::Hostd(h) => match (h.status(), h.body()) {
            (Some(s), Some(b)) => {
                let status = StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY);
                let mut a = ApiError::new(status, b.error.clone());
                if let Some(f) = &b.field {
                    a = a.with_field(f);
                }
                a
            }
            _ => ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the destination host does not answer: {h}"),
            ),
        },
        _ => ApiError::from(e),
    }
}

fn bearer(h: &HeaderMap) -> &str {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default()
}

/// The caller's address and bearer token.
fn credential(req: &Request) -> (IpAddr, String) {
    let ip: IpAddr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    (ip, bearer(req.headers()).to_string())
}

/// The gateway of migration `id` for a caller at `ip` presenting `token`, or the
/// refusal (counted against the address like any failed authentication).
async fn open_gateway(
    st: &AppState,
    id: &str,
    ip: IpAddr,
    token: &str,
) -> Result<Gateway, Response> {
    if st.limiter.blocked(ip) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed authentication attempts; try later",
        )
        .into_response());
    }
    if token.is_empty() || token.len() > 256 {
        st.limiter.failed(ip);
        return Err(
            ApiError::new(StatusCode::UNAUTHORIZED, "missing bearer token").into_response(),
        );
    }
    match Gateway::open(&st.ctx, id, token).await {
        Ok(g) => Ok(g),
        Err(Error::Unauthorized(why)) => {
            st.limiter.failed(ip);
            Err(ApiError::new(StatusCode::UNAUTHORIZED, why).into_response())
        }
        Err(e) => Err(passed(e).into_response()),
    }
}

/// Records a mutating gateway call in the audit log.
async fn audit(st: &AppState, g: &Gateway, method: &Method, path: &str, status: StatusCode) {
    let e = AuditEntry {
        id: String::new(),
        at_ms: now_ms(),
        actor: g.actor(),
        tenant: g.tenant().to_string(),
        method: method.to_string(),
        path: path.to_string(),
        status: status.as_u16(),
    };
    if let Err(err) = st.ctx.store.audit(&e).await {
        tracing::error!("audit log write failed: {err}");
    }
}

/// Reads a typed JSON body of a gateway call, naming the bad field.
async fn body<T: serde::de::DeserializeOwned>(req: Request) -> Result<T, Response> {
    use axum::extract::FromRequest;
    ApiJson::<T>::from_request(req, &())
        .await
        .map(|ApiJson(t)| t)
        .map_err(IntoResponse::into_response)
}

fn answer<T: serde::Serialize>(status: StatusCode, r: Result<T, Error>) -> Response {
    match r {
        Ok(t) => (status, Json(t)).into_response(),
        Err(e) => passed(e).into_response(),
    }
}

async fn gw_health(State(st): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    let (ip, token) = credential(&req);
    match open_gateway(&st, &id, ip, &token).await {
        Ok(g) => answer::<Health>(StatusCode::OK, g.health().await),
        Err(r) => r,
    }
}

async fn gw_image(
    State(st): State<AppState>,
    Path((id, image)): Path<(String, String)>,
    req: Request,
) -> Response {
    let (ip, token) = credential(&req);
    match open_gateway(&st, &id, ip, &token).await {
        Ok(g) => answer::<ImageInfo>(StatusCode::OK, g.image(&image).await),
        Err(r) => r,
    }
}

/// An image the admitted VM boots from, carried to the destination host (spooled
/// here and hashed, so that nothing else is passed on).
async fn gw_upload(State(st): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    let (ip, token) = credential(&req);
    let g = match open_gateway(&st, &id, ip, &token).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let path = req.uri().path().to_string();
    let max = st.ctx.settings.max_image_mib << 20;
    let r = match super::super::images::spool(req.into_body(), max).await {
        Ok((spool, image)) => {
            answer::<ImageInfo>(StatusCode::CREATED, g.upload(&image, spool.path()).await)
        }
        Err(e) => e.into_response(),
    };
    audit(&st, &g, &Method::PUT, &path, r.status()).await;
    r
}

async fn gw_vm(
    State(st): State<AppState>,
    Path((id, vm)): Path<(String, String)>,
    req: Request,
) -> Response {
    let (ip, token) = credential(&req);
    match open_gateway(&st, &id, ip, &token).await {
        Ok(g) => answer::<VmInfo>(StatusCode::OK, g.vm(&vm).await),
        Err(r) => r,
    }
}

async fn gw_prepare(State(st): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    let (ip, token) = credential(&req);
    let g = match open_gateway(&st, &id, ip, &token).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let path = req.uri().path().to_string();
    let r = match body::<IncomingRequest>(req).await {
        Ok(rq) => answer::<IncomingReady>(StatusCode::CREATED, g.prepare(&st.ctx, &rq).await),
        Err(r) => r,
    };
    audit(&st, &g, &Method::POST, &path, r.status()).await;
    r
}

async fn gw_complete(
    State(st): State<AppState>,
    Path((id, hm)): Path<(String, String)>,
    req: Request,
) -> Response {
    gw_end(st, id, hm, req, false).await
}

async fn gw_abort(
    State(st): State<AppState>,
    Path((id, hm)): Path<(String, String)>,
    req: Request,
) -> Response {
    gw_end(st, id, hm, req, true).await
}

/// The end of an incoming migration, completed or aborted: the same gateway check,
/// body and audit either way.
async fn gw_end(st: AppState, id: String, hm: String, req: Request, abort: bool) -> Response {
    let (ip, token) = credential(&req);
    let g = match open_gateway(&st, &id, ip, &token).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let path = req.uri().path().to_string();
    let r = match body::<IncomingOutcome>(req).await {
        Ok(o) => {
            let ended = if abort {
                g.abort(&st.ctx, &hm, &o).await
            } else {
                g.complete(&st.ctx, &hm, &o).await
            };
            match ended {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(e) => passed(e).into_response(),
            }
        }
        Err(r) => r,
    };
    audit(&st, &g, &Method::POST, &path, r.status()).await;
    r
}

#[cfg(test)]
mod tests {
    use super::is_gateway;

    #[test]
    fn only_a_migrations_hostd_paths_are_its_gateway() {
        assert!(is_gateway(
            "/v1/federation/migrations/xmig-1/hostd/v1/health"
        ));
        assert!(is_gateway(
            "/v1/federation/migrations/xmig-1/hostd/v1/migrations/incoming"
        ));
        assert!(!is_gateway("/v1/federation/migrations"));
        assert!(!is_gateway("/v1/federation/migrations/xmig-1"));
        assert!(!is_gateway("/v1/federation/migrations/xmig-1/commit"));
        assert!(!is_gateway(
            "/v1/federation/migrations/xmig-1/hostdx/v1/health"
        ));
        assert!(!is_gateway("/v1/vms/xmig-1/hostd/v1/health"));
    }
}
