//! What every request passes through, outermost first: the access line and latency
//! metric (`access`), authentication and the audit log (`authenticate`), and
//! `Idempotency-Key` on creating calls (`idempotent`).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
use crate::auth::{self, Caller};
use crate::hosts::{self, Enrolment};
use crate::idempotency::{self, Answer, Begin};
use crate::model::{now_ms, AuditEntry, Role, Token, IDEMPOTENCY_KEY, SYSTEM_TENANT};
use crate::store::Objects;

/// Routes anyone may call.
const PUBLIC: &[&str] = &[
    "/v1/health",
    "/v1/openapi.json",
    "/v1/leader",
    // Public keys only: what peers and relying parties verify tokens with.
    "/.well-known/jwks.json",
];
const REGISTER: &str = "/v1/hosts/register";
/// Largest request body (also what an idempotent call buffers).
pub const MAX_BODY: usize = 1 << 20;

/// Logs one access line per request (naming the caller) and observes its latency
/// under its route template.
pub async fn access(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    let took = started.elapsed();
    let status = resp.status().as_u16();
    let who = resp
        .extensions()
        .get::<Caller>()
        .map(Caller::actor)
        .unwrap_or_else(|| "-".into());
    nova_logging::access(&method, &path, status, took, &who);
    st.ctx.metrics.request(&method, &route, status, took);
    resp
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Authenticates every non-public request and audits every mutating one.
pub async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if PUBLIC.contains(&path.as_str()) {
        return next.run(req).await;
    }
    // A migration's gateway checks that migration's own token (and audits) itself.
    if super::federation::is_gateway(&path) {
        return next.run(req).await;
    }
    let ip: IpAddr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let secret = bearer(&req).unwrap_or_default().to_string();
    // Only a failed authentication counts, and a locked-out address is refused only
    // when its credential fails too: a valid token always gets through, so a flood of
    // bad tokens from a host's address never silences that host's heartbeats.
    let unauthorized = |st: &AppState| {
        if st.limiter.blocked(ip) {
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed authentication attempts; try later",
            )
            .into_response();
        }
        st.limiter.failed(ip);
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or unknown API token (Authorization: Bearer ...)",
        )
        .into_response()
    };
    if let Some(jwt) = super::federation::federated_bearer(&req) {
        return super::federation::authenticate_jwt(st, req, next, &jwt).await;
    }
    if secret.is_empty() || secret.len() > 256 {
        return unauthorized(&st);
    }
    let hashed = auth::hash(&secret);
    // A join token registers a new host and does nothing else: not a heartbeat, not a
    // re-registration of a known host id (`hosts::register` checks that).
    let joining = path == REGISTER;
    let join_caller = |user: String| Caller {
        user,
        tenant: SYSTEM_TENANT.into(),
        role: Role::Host,
        host: None,
    };
    let bootstrap_valid = st.join_expires_at_ms.is_none_or(|t| now_ms() < t);
    let caller = if joining && hashed == *st.join_hash && bootstrap_valid {
        req.extensions_mut().insert(Enrolment::Bootstrap);
        join_caller("join-token".into())
    } else {
        match st.ctx.store.read::<Token>(&hashed).await {
            Ok(Some(t)) => {
                let c = Caller::from_token(&t);
                req.extensions_mut().insert(auth::TokenHash(t.hash.clone()));
                if joining {
                    match (&c.host, c.is_cluster() && c.is_admin()) {
                        (Some(h), _) => {
                            req.extensions_mut().insert(Enrolment::Host(h.clone()));
                        }
                        (None, true) => {
                            req.extensions_mut().insert(Enrolment::Admin);
                        }
                        _ => {}
                    }
                }
                c
            }
            Ok(None) if joining => match hosts::find_join_token(&st.ctx, &hashed).await {
                Ok(Some(j)) => {
                    req.extensions_mut().insert(Enrolment::JoinToken(hashed));
                    join_caller(format!("join-token:{}", j.id))
                }
                Ok(None) => return unauthorized(&st),
                Err(e) => return ApiError::from(e).into_response(),
            },
            Ok(None) => return unauthorized(&st),
            Err(e) => return ApiError::from(e).into_response(),
        }
    };
    let method = req.method().clone();
    req.extensions_mut().insert(caller.clone());
    let mut resp = next.run(req).await;
    if method != Method::GET && method != Method::HEAD && !path.ends_with("/heartbeat") {
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

/// The routes whose `POST` creates something, by template.
const CREATING: &[&str] = &[
    "/v1/vms",
    "/v1/tenants",
    "/v1/users",
    "/v1/vms/{id}/migrate",
    "/v1/hosts/{id}/drain",
];

fn key_error(why: &str) -> Response {
    ApiError::new(StatusCode::BAD_REQUEST, format!("{IDEMPOTENCY_KEY}: {why}"))
        .with_field(IDEMPOTENCY_KEY)
        .into_response()
}

/// `Idempotency-Key` on creating calls: a retry answers what the first call answered.
pub async fn idempotent(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(IDEMPOTENCY_KEY).cloned() else {
        return next.run(req).await;
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    if route == "/v1/tokens" {
        return key_error("not accepted here: a token's secret is shown once and never stored");
    }
    if !CREATING.contains(&route.as_str()) {
        return next.run(req).await;
    }
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            k.to_string()
        }
        _ => return key_error("must be 1 to 255 visible ASCII characters"),
    };
    let Some(caller) = req.extensions().get::<Caller>().map(Caller::actor) else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response()
        }
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    let request = idempotency::request_hash(parts.method.as_str(), path, &body);
    let store = &st.ctx.store;
    let ttl = st.ctx.settings.retention.idempotency_ttl;
    match idempotency::begin(store, ttl, &caller, &key, &request).await {
        Err(e) => ApiError::from(e).into_response(),
        Ok(Begin::Replay(a)) => {
            let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK);
            let mut r = (status, a.body).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert("idempotent-replayed", HeaderValue::from_static("true"));
            r
        }
        Ok(Begin::Mismatch) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{IDEMPOTENCY_KEY}: this key was used for another request"),
        )
        .with_field(IDEMPOTENCY_KEY)
        .into_response(),
        Ok(Begin::InProgress) => ApiError::new(
            StatusCode::CONFLICT,
            format!("{IDEMPOTENCY_KEY}: the first request with this key is still being answered"),
        )
        .with_field(IDEMPOTENCY_KEY)
        .into_response(),
        Ok(Begin::First) => {
            let resp = next.run(Request::from_parts(parts, Body::from(body))).await;
            if !resp.status().is_success() {
                if let Err(e) = idempotency::abandon(store, &caller, &key).await {
                    tracing::warn!("idempotency key: {e}");
                }
                return resp;
            }
            let (parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let answer = Answer {
                status: parts.status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            };
            if let Err(e) = idempotency::complete(store, &caller, &key, &request, answer).await {
                tracing::warn!("idempotency key: {e}");
            }
            Response::from_parts(parts, Body::from(bytes))
        }
    }
}
