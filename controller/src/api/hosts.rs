//! Host routes: register (join token -> the host's own credentials), heartbeat, list,
//! get, cordon, uncordon, drain. The register and heartbeat bodies are hostd's
//! contract (`nova_hostd_api`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use nova_hostd_api::{
    Heartbeat, HostCertificate, HostKeyRequest, RegisterRequest, RegisterResponse,
};

use super::error::{answer, ApiJson, ApiQuery, IfMatch};
use super::{must_be_cluster, page, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::hosts::Enrolment;
use crate::model::{
    CreatedJoinToken, ErrorBody, ForgottenHost, Host, ListQuery, NewJoinToken, Operation, Page,
    Role, MAX_JOIN_TOKEN_TTL_S,
};
use crate::store::Objects;

/// What a host shows through the API (its hostd token blanked).
fn shown(mut h: Host) -> Host {
    h.hostd_token = String::new();
    h
}

/// `POST /v1/hosts/register` with the join token: records the host and answers its own
/// credentials (the token is shown once).
#[utoipa::path(post, path = "/v1/hosts/register", tag = "hosts", request_body = RegisterRequest,
    responses((status = 201, body = RegisterResponse),
        (status = 400, description = "a bad field", body = ErrorBody),
        (status = 401, description = "no such (or a used or expired) join token", body = ErrorBody),
        (status = 403, description = "a known host id without that host's token", body = ErrorBody)))]
pub async fn register(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    by: Option<Extension<Enrolment>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(r): ApiJson<RegisterRequest>,
) -> ApiResult<Response> {
    let Some(Extension(by)) = by else {
        return Err(ApiError::forbidden(
            "registering a host needs a join token, that host's own token or a system admin's",
        ));
    };
    let _ = &c;
    let creds = crate::hosts::register(&st.ctx, &by, &r, peer.ip()).await?;
    if let Enrolment::JoinToken(hash) = &by {
        // A cloud host the burst policy launched joins with a token of its own.
        crate::cloud::burst::joined(&st.ctx, hash, &r.host_id).await?;
    }
    Ok(answer(StatusCode::CREATED, None, creds))
}

/// `POST /v1/hosts/{id}/heartbeat` with the host's own token.
#[utoipa::path(post, path = "/v1/hosts/{id}/heartbeat", tag = "hosts", request_body = Heartbeat,
    params(("id" = String, Path, description = "host id")),
    responses((status = 204, description = "recorded"),
        (status = 403, description = "another host's credentials", body = ErrorBody),
        (status = 404, description = "not registered", body = ErrorBody)))]
pub async fn heartbeat(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(hb): ApiJson<Heartbeat>,
) -> ApiResult<StatusCode> {
    let own = c.role == Role::Host && c.host.as_deref() == Some(id.as_str());
    if !own || hb.host_id != id {
        return Err(ApiError::forbidden(
            "a host heartbeats for itself only, with its own token",
        ));
    }
    crate::hosts::heartbeat(&st.ctx, &id, &hb).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/hosts/{id}/certificate` with the host's own token: a new serving
/// certificate for the host's new key (renewal before the old one expires).
#[utoipa::path(post, path = "/v1/hosts/{id}/certificate", tag = "hosts", request_body = HostKeyRequest,
    params(("id" = String, Path, description = "host id")),
    responses((status = 200, body = HostCertificate),
        (status = 400, description = "a key that does not prove itself for this host, or a URL that is not the address it asks from", body = ErrorBody),
        (status = 403, description = "not this host's own token", body = ErrorBody),
        (status = 409, description = "this controller issues no host certificates", body = ErrorBody)))]
pub async fn renew_certificate(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(key): ApiJson<HostKeyRequest>,
) -> ApiResult<Json<HostCertificate>> {
    if !(c.role == Role::Host && c.host.as_deref() == Some(id.as_str())) {
        return Err(ApiError::forbidden(
            "a host renews its own certificate only, with its own token",
        ));
    }
    Ok(Json(
        crate::hosts::renew_certificate(&st.ctx, &id, &key, peer.ip()).await?,
    ))
}

/// `GET /v1/hosts`.
#[utoipa::path(get, path = "/v1/hosts", tag = "hosts", params(ListQuery),
    responses((status = 200, body = Page<Host>), (status = 400, description = "a bad parameter", body = ErrorBody)))]
pub async fn list_hosts(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<Host>>> {
    must_be_cluster(&c, false)?;
    let mut p = page::<Host>(&st, &q, |_| true).await?;
    p.items = p.items.into_iter().map(shown).collect();
    Ok(Json(p))
}

/// `GET /v1/hosts/{id}`.
#[utoipa::path(get, path = "/v1/hosts/{id}", tag = "hosts",
    params(("id" = String, Path, description = "host id")),
    responses((status = 200, body = Host), (status = 404, description = "no such host", body = ErrorBody)))]
pub async fn get_host(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    must_be_cluster(&c, false)?;
    let h = st
        .ctx
        .store
        .read::<Host>(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("host"))?;
    Ok(answer(StatusCode::OK, Some(h.revision), shown(h)))
}

async fn set_cordon(
    st: &AppState,
    c: &Caller,
    id: &str,
    on: bool,
    rev: Option<u64>,
) -> ApiResult<Response> {
    must_be_cluster(c, true)?;
    let h = crate::hosts::set_cordon(&st.ctx, id, on, rev).await?;
    Ok(answer(StatusCode::OK, Some(h.revision), shown(h)))
}

/// `POST /v1/hosts/{id}/cordon`: no new VMs land there.
#[utoipa::path(post, path = "/v1/hosts/{id}/cordon", tag = "hosts",
    params(("id" = String, Path, description = "host id"),
        ("If-Match" = Option<String>, Header, description = "the host's revision")),
    responses((status = 200, body = Host), (status = 404, description = "no such host", body = ErrorBody),
        (status = 412, description = "the host changed since that revision", body = ErrorBody)))]
pub async fn cordon(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    IfMatch(rev): IfMatch,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    set_cordon(&st, &c, &id, true, rev).await
}

/// `POST /v1/hosts/{id}/uncordon`.
#[utoipa::path(post, path = "/v1/hosts/{id}/uncordon", tag = "hosts",
    params(("id" = String, Path, description = "host id"),
        ("If-Match" = Option<String>, Header, description = "the host's revision")),
    responses((status = 200, body = Host), (status = 404, description = "no such host", body = ErrorBody),
        (status = 412, description = "the host changed since that revision", body = ErrorBody)))]
pub async fn uncordon(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    IfMatch(rev): IfMatch,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    set_cordon(&st, &c, &id, false, rev).await
}

/// `POST /v1/hosts/{id}/drain`: cordons the host and live-migrates every VM away,
/// within the migration policy; answers the operation to follow. System operators,
/// or the host itself with its own token (as it powers off).
#[utoipa::path(post, path = "/v1/hosts/{id}/drain", tag = "hosts",
    params(("id" = String, Path, description = "host id"),
        ("If-Match" = Option<String>, Header, description = "the host's revision"),
        ("Idempotency-Key" = Option<String>, Header, description = "a retry with this key answers the first drain")),
    responses((status = 202, body = Operation), (status = 404, description = "no such host", body = ErrorBody),
        (status = 412, description = "the host changed since that revision", body = ErrorBody)))]
pub async fn drain(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    IfMatch(rev): IfMatch,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    // A host may drain itself (hostd --vms-at-exit migrate, as its machine stops).
    let itself = c.role == Role::Host && c.host.as_deref() == Some(id.as_str());
    if !itself {
        must_be_cluster(&c, true)?;
    }
    let op = crate::migration::drain::start(&st.ctx, &id, rev).await?;
    Ok(answer(StatusCode::ACCEPTED, Some(op.revision), op))
}

/// `POST /v1/join-tokens` (system admins): a join token for one new host, expiring.
#[utoipa::path(post, path = "/v1/join-tokens", tag = "hosts", request_body = NewJoinToken,
    responses((status = 201, body = CreatedJoinToken),
        (status = 400, description = "a bad field", body = ErrorBody),
        (status = 403, description = "not a system admin", body = ErrorBody)))]
pub async fn create_join_token(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiJson(b): ApiJson<NewJoinToken>,
) -> ApiResult<Response> {
    if !(c.is_cluster() && c.is_admin()) {
        return Err(ApiError::forbidden("only system admins issue join tokens"));
    }
    let ttl = b.ttl_s.unwrap_or(3600);
    if !(1..=MAX_JOIN_TOKEN_TTL_S).contains(&ttl) {
        return Err(nova_http::FieldError::new(
            "ttl_s",
            format!("{ttl} is out of range 1..={MAX_JOIN_TOKEN_TTL_S}"),
        )
        .into());
    }
    let (token, t) = crate::hosts::issue_join_token(&st.ctx, ttl, &c.actor()).await?;
    let body = CreatedJoinToken {
        id: t.id,
        token,
        expires_at_ms: t.expires_at_ms,
    };
    Ok(answer(StatusCode::CREATED, None, body))
}

/// `DELETE /v1/hosts/{id}` (system admins): forgets the host and revokes its tokens.
#[utoipa::path(delete, path = "/v1/hosts/{id}", tag = "hosts",
    params(("id" = String, Path, description = "host id")),
    responses((status = 200, body = ForgottenHost),
        (status = 403, description = "not a system admin", body = ErrorBody),
        (status = 404, description = "no such host", body = ErrorBody)))]
pub async fn forget_host(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<ForgottenHost>> {
    if !(c.is_cluster() && c.is_admin()) {
        return Err(ApiError::forbidden("only system admins forget hosts"));
    }
    let n = crate::hosts::forget(&st.ctx, &id).await?;
    Ok(Json(ForgottenHost {
        forgotten: id,
        tokens_revoked: n,
    }))
}
