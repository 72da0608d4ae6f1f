//! Federation routes: this cluster's keys (`/.well-known/jwks.json`, public: only
//! public keys), identity and peers (system admins), the handshake (this cluster's
//! admin token, presented by the joining peer), what peers ask of each other (their
//! own cluster tokens), federated tokens, global placement, and `?scope=federation`
//! on the lists (`/v1/vms`, `/v1/hosts`, `/v1/alerts`, `/v1/capacity`). Also the
//! second way in: a federated token (JWT) instead of an API token, verified here and
//! mapped through the issuing peer's trust policy. The federated lists are in
//! [`lists`]; cross-cluster migration (admission, commit, abort and the source
//! hostd's gateway) in [`migrations`].

mod lists;
mod migrations;

pub use lists::scope;
pub use migrations::is_gateway;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use std::net::{IpAddr, SocketAddr};

use super::error::ApiJson;
use super::{must_be_cluster, must_operate, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::error::Error;
use crate::federation::view;
use crate::federation::{self as fed, Presenter};
use crate::model::{
    now_ms, AuditEntry, ClusterIdentity, ClusterSummary, ErrorBody, FederatedToken, FederationView,
    GlobalPlacement, GlobalVmSpec, Hello, IdentityPatch, JoinRequest, Jwks, LeftPeer,
    NewFederatedToken, Peer, PeerPolicy, PeerStatus, Revocation, Revoked,
};
use crate::store::Objects;

/// The federation routes, mounted by `api::router`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/federation", get(show))
        .route(
            "/v1/federation/identity",
            axum::routing::patch(set_identity),
        )
        .route("/v1/federation/keys/rotate", post(rotate))
        .route("/v1/federation/peers", post(join))
        .route("/v1/federation/peers/{id}", axum::routing::delete(leave))
        .route("/v1/federation/peers/{id}/policy", put(set_policy))
        .route("/v1/federation/handshake", post(handshake))
        .route("/v1/federation/leave", post(peer_leaves))
        .route("/v1/federation/summary", get(summary))
        .route("/v1/federation/tokens", post(issue))
        .route("/v1/federation/tokens/{jti}", axum::routing::delete(revoke))
        .route(
            "/v1/federation/revocations",
            get(revocations).post(peer_revokes),
        )
        .route("/v1/federation/vms", post(create_vm))
        .merge(migrations::routes())
}

/// Who presented a federated token, when the caller did.
type Presented = Option<Extension<Presenter>>;

/// Only callers of this cluster (its API tokens, or tokens it issued itself).
fn must_be_local(p: &Presented) -> ApiResult<()> {
    match p {
        None => Ok(()),
        Some(Extension(Presenter::Local(_))) => Ok(()),
        Some(_) => Err(ApiError::forbidden(
            "a peer's token cannot do this here: use a token of this cluster",
        )),
    }
}

/// Only a system admin of this cluster.
fn must_be_local_admin(c: &Caller, p: &Presented) -> ApiResult<()> {
    must_be_local(p)?;
    must_be_cluster(c, true)?;
    if !c.is_admin() {
        return Err(ApiError::forbidden(
            "only the system tenant's admins manage the federation",
        ));
    }
    Ok(())
}

/// The peer cluster speaking for itself, or an error.
fn peer_cluster(p: &Presented) -> ApiResult<String> {
    match p {
        Some(Extension(Presenter::PeerCluster { peer, .. })) => Ok(peer.clone()),
        _ => Err(ApiError::forbidden(
            "only a peer cluster's own token may call this",
        )),
    }
}

/// `GET /.well-known/jwks.json`: the public keys this cluster signs tokens with.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "federation", operation_id = "federation_jwks", security(()),
    responses((status = 200, body = Jwks)))]
pub async fn jwks(State(st): State<AppState>) -> ApiResult<Json<Jwks>> {
    let me = fed::local(&st.ctx).await?;
    Ok(Json(fed::identity(&me).jwks))
}

/// `GET /v1/federation`: this cluster's identity and its peers with their cached
/// summaries.
#[utoipa::path(get, path = "/v1/federation", tag = "federation", operation_id = "federation_show",
    responses((status = 200, body = FederationView)))]
pub async fn show(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<FederationView>> {
    must_be_cluster(&c, false)?;
    let me = fed::local(&st.ctx).await?;
    let peers = fed::peers(&st.ctx)
        .await?
        .into_iter()
        .map(|peer| {
            let seen = st.federation.seen(&peer.cluster_id);
            PeerStatus {
                peer,
                summary: seen.summary,
                last_seen_ms: seen.last_seen_ms,
                error: seen.error,
            }
        })
        .collect();
    Ok(Json(FederationView {
        cluster: fed::identity(&me),
        peers,
    }))
}

/// `PATCH /v1/federation/identity`.
#[utoipa::path(patch, path = "/v1/federation/identity", tag = "federation", operation_id = "federation_set_identity", request_body = IdentityPatch,
    responses((status = 200, body = ClusterIdentity), (status = 400, description = "a bad field", body = ErrorBody)))]
pub async fn set_identity(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    p: Presented,
    ApiJson(patch): ApiJson<IdentityPatch>,
) -> ApiResult<Json<ClusterIdentity>> {
    must_be_local_admin(&c, &p)?;
    Ok(Json(fed::set_identity(&st.ctx, &patch).await?))
}

/// `POST /v1/federation/keys/rotate`.
#[utoipa::path(post, path = "/v1/federation/keys/rotate", tag = "federation", operation_id = "federation_rotate",
    responses((status = 200, body = ClusterIdentity)))]
pub async fn rotate(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    p: Presented,
) -> ApiResult<Json<ClusterIdentity>> {
    must_be_local_admin(&c, &p)?;
    Ok(Json(fed::rotate(&st.ctx).await?))
}

/// `POST /v1/federation/peers`: peers with another cluster.
#[utoipa::path(post, path = "/v1/federation/peers", tag = "federation", operation_id = "federation_join", request_body = JoinRequest,
    responses((status = 201, body = Peer), (status = 400, description = "a bad field", body = ErrorBody),
        (status = 409, description = "the peer could not be reached or refused the handshake (field named)", body = ErrorBody)))]
pub async fn join(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    p: Presented,
    ApiJson(j): ApiJson<JoinRequest>,
) -> ApiResult<Response> {
    must_be_local_admin(&c, &p)?;
    let peer = fed::join(&st.ctx, &st.federation, &j).await?;
    Ok((StatusCode::CREATED, Json(peer)).into_response())
}

/// `DELETE /v1/federation/peers/{id}`.
#[utoipa::path(delete, path = "/v1/federation/peers/{id}", tag = "federation", operation_id = "federation_leave",
    params(("id" = String, Path, description = "peer id or name")),
    responses((status = 200, body = LeftPeer), (status = 404, description = "no such peer", body = ErrorBody)))]
pub async fn leave(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    p: Presented,
    Path(id): Path<String>,
) -> ApiResult<Json<LeftPeer>> {
    must_be_local_admin(&c, &p)?;
    Ok(Json(fed::leave(&st.ctx, &st.federation, &id).await?))
}

/// `PUT /v1/federation/peers/{id}/policy`.
#[utoipa::path(put, path = "/v1/federation/peers/{id}/policy", tag = "federation", operation_id = "federation_set_policy", request_body = PeerPolicy,
    params(("id" = String, Path, description = "peer id or name")),
    responses((status = 200, body = Peer), (status = 400, description = "a bad field", body = ErrorBody),
        (status = 404, description = "no such peer", body = ErrorBody)))]
pub async fn set_policy(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    p: Presented,
    Path(id): Path<String>,
    ApiJson(policy): ApiJson<PeerPolicy>,
) -> ApiResult<Json<Peer>> {
    must_be_local_admin(&c, &p)?;
    Ok(Json(fed::set_policy(&st.ctx, &id, &policy).await?))
}

/// `POST /v1/federation/handshake`: a cluster joining this one, presenting this
/// cluster's admin token.
#[utoipa::path(post, path = "/v1/federation/handshake", tag = "federation", operation_id = "federation_handshake", request_body = Hello,
    responses((status = 200, body = Hello), (status = 400, description = "a bad field", body = ErrorBody)))]
pub async fn handshake(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    p: Presented,
    ApiJson(h): ApiJson<Hello>,
) -> ApiResult<Json<Hello>> {
    must_be_local_admin(&c, &p)?;
    Ok(Json(fed::handshake(&st.ctx, &st.federation, &h).await?))
}

/// `POST /v1/federation/leave`: a peer leaves.
#[utoipa::path(post, path = "/v1/federation/leave", tag = "federation", operation_id = "federation_peer_leaves",
    responses((status = 200, description = "forgotten")))]
pub async fn peer_leaves(State(st): State<AppState>, p: Presented) -> ApiResult<Json<()>> {
    let peer = peer_cluster(&p)?;
    fed::forget(&st.ctx, &st.federation, &peer).await?;
    Ok(Json(()))
}

/// `GET /v1/federation/summary`: for peers and this cluster's system tenant.
#[utoipa::path(get, path = "/v1/federation/summary", tag = "federation", operation_id = "federation_summary",
    responses((status = 200, body = ClusterSummary)))]
pub async fn summary(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    p: Presented,
) -> ApiResult<Json<ClusterSummary>> {
    if peer_cluster(&p).is_err() {
        must_be_local(&p)?;
        must_be_cluster(&c, false)?;
    }
    let me = fed::local(&st.ctx).await?;
    Ok(Json(view::summary(&st.ctx, &me).await?))
}

/// `POST /v1/federation/tokens`: a federated token for the caller.
#[utoipa::path(post, path = "/v1/federation/tokens", tag = "federation", operation_id = "federation_issue", request_body = NewFederatedToken,
    responses((status = 201, body = FederatedToken), (status = 400, description = "a bad field", body = ErrorBody)))]
pub async fn issue(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    p: Presented,
    ApiJson(req): ApiJson<NewFederatedToken>,
) -> ApiResult<Response> {
    must_be_local(&p)?;
    let t: FederatedToken = fed::issue(&st.ctx, &c, &req).await?;
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

/// `DELETE /v1/federation/tokens/{jti}`: revokes it here and tells the peers.
#[utoipa::path(delete, path = "/v1/federation/tokens/{jti}", tag = "federation", operation_id = "federation_revoke",
    params(("jti" = String, Path, description = "the token's id")),
    responses((status = 200, body = Revoked), (status = 404, description = "no such token of yours", body = ErrorBody)))]
pub async fn revoke(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    p: Presented,
    Path(jti): Path<String>,
) -> ApiResult<Json<Revoked>> {
    must_be_local(&p)?;
    Ok(Json(fed::revoke(&st.ctx, &st.federation, &c, &jti).await?))
}

/// `GET /v1/federation/revocations`: this cluster's revoked, unexpired tokens.
#[utoipa::path(get, path = "/v1/federation/revocations", tag = "federation", operation_id = "federation_revocations",
    responses((status = 200, body = Vec<Revocation>)))]
pub async fn revocations(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    p: Presented,
) -> ApiResult<Json<Vec<Revocation>>> {
    if peer_cluster(&p).is_err() {
        must_be_local(&p)?;
        must_be_cluster(&c, false)?;
    }
    Ok(Json(fed::revocations(&st.ctx).await?))
}

/// `POST /v1/federation/revocations`: a peer tells of a token it revoked.
#[utoipa::path(post, path = "/v1/federation/revocations", tag = "federation", operation_id = "federation_peer_revokes", request_body = Revocation,
    responses((status = 200, body = Revocation), (status = 400, description = "a bad field", body = ErrorBody)))]
pub async fn peer_revokes(
    State(st): State<AppState>,
    p: Presented,
    ApiJson(r): ApiJson<Revocation>,
) -> ApiResult<Json<Revocation>> {
    let peer = peer_cluster(&p)?;
    fed::record_revocation(&st.ctx, &peer, &r).await?;
    Ok(Json(r))
}

/// A host path (anything but a `sha256:` image) is for system admins only, here
/// as on `POST /v1/vms`.
fn host_paths_for_admins(c: &Caller, g: &GlobalVmSpec) -> ApiResult<()> {
    if c.is_cluster() && c.is_admin() {
        return Ok(());
    }
    let s = &g.spec;
    let mut refs = vec![("spec.kernel".to_string(), Some(&s.kernel))];
    refs.push(("spec.initrd".into(), s.initrd.as_ref()));
    for (i, d) in s.disks.iter().enumerate() {
        refs.push((format!("spec.disks[{i}].image"), d.image.as_ref()));
    }
    for (field, r) in refs {
        if r.is_some_and(|r| !r.starts_with("sha256:")) {
            return Err(ApiError::forbidden(&format!(
                "{field}: a host path, which only system admins may name"
            ))
            .with_field(&field));
        }
    }
    Ok(())
}

/// `POST /v1/federation/vms`: the federation scheduler picks a cluster.
#[utoipa::path(post, path = "/v1/federation/vms", tag = "federation", operation_id = "federation_create_vm", request_body = GlobalVmSpec,
    responses((status = 201, body = GlobalPlacement), (status = 400, description = "a bad field", body = ErrorBody),
        (status = 409, description = "no cluster took the VM (each named with why)", body = ErrorBody)))]
pub async fn create_vm(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    p: Presented,
    ApiJson(g): ApiJson<GlobalVmSpec>,
) -> ApiResult<Response> {
    must_be_local(&p)?;
    must_operate(&c)?;
    host_paths_for_admins(&c, &g)?;
    let placed: GlobalPlacement =
        fed::placement::place(&st.ctx, &st.federation, &c, &c.tenant, &g).await?;
    Ok((StatusCode::CREATED, Json(placed)).into_response())
}

/// Authenticates a request bearing a federated token (called by `authenticate` for
/// a JWT bearer) and audits it when it changes something.
pub async fn authenticate_jwt(st: AppState, mut req: Request, next: Next, token: &str) -> Response {
    let ip: IpAddr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let presenter = match fed::verify(&st.ctx, &st.federation, token).await {
        Ok(p) => p,
        Err(Error::Unauthorized(why)) => {
            if st.limiter.blocked(ip) {
                return ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed authentication attempts; try later",
                )
                .into_response();
            }
            st.limiter.failed(ip);
            return ApiError::new(StatusCode::UNAUTHORIZED, why).into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let caller = presenter.caller().clone();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    req.extensions_mut().insert(caller.clone());
    req.extensions_mut().insert(presenter);
    let mut resp = next.run(req).await;
    if method != Method::GET && method != Method::HEAD {
        let e = AuditEntry {
            id: String::new(),
            at_ms: now_ms(),
            actor: caller.actor(),
            tenant: caller.tenant.clone(),
            method: method.to_string(),
            path,
            status: resp.status().as_u16(),
        };
        if let Err(err) = st.ctx.store.audit(&e).await {
            tracing::error!("audit log write failed: {err}");
        }
    }
    resp.extensions_mut().insert(caller);
    resp
}

/// The bearer credential of a request, when it is a federated token.
pub fn federated_bearer(req: &Request) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let t = v.strip_prefix("Bearer ")?.trim();
    fed::keys::is_jwt(t).then(|| t.to_string())
}

/// The federation's part of the OpenAPI document (merged by `openapi::document`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        jwks, show, set_identity, rotate, join, leave, set_policy, handshake, peer_leaves,
        summary, issue, revoke, revocations, peer_revokes, create_vm,
        migrations::admit, migrations::show, migrations::commit, migrations::abort,
    ),
    tags((name = "federation", description = "peer clusters, federated tokens, global placement; \
        `?scope=federation` on GET /v1/vms, /v1/hosts, /v1/alerts and /v1/capacity answers a \
        FederatedList of every cluster's items")),
    components(schemas(crate::model::FederatedClaims))
)]
pub struct FederationDoc;
