//! Host routes: register (join token -> the host's own credentials), heartbeat,
//! list, cordon, drain; the cluster's migration policy and rebalance proposals.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Json};
use nova_hostd::api::types::{validate_id, Heartbeat, RegisterRequest};

use super::{created, must_be_cluster, ApiError, ApiJson, ApiResult, AppState, FieldError};
use crate::auth::{self, Caller};
use crate::migration::policy::MigrationPolicy;
use crate::model::{now_ms, Host, HostState, Operation, Role, Token, SYSTEM_TENANT};
use crate::scheduler::rebalance::{self, Move};
use crate::store::{Expect, Objects};

/// What a host shows through the API (its hostd token blanked).
fn shown(mut h: Host) -> Host {
    h.hostd_token = String::new();
    h
}

/// `POST /v1/hosts/register` with the join token: records the host and answers its own
/// credentials `{host_id, token, heartbeat_interval_ms}` (the token is shown once).
#[utoipa::path(post, path = "/v1/hosts/register", request_body(content = Object, description = "nova_hostd RegisterRequest"),
    responses((status = 201, description = "{host_id, token, heartbeat_interval_ms}")))]
pub async fn register(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiJson(r): ApiJson<RegisterRequest>,
) -> ApiResult<Response> {
    if c.user != "join-token" && !(c.is_cluster() && c.is_admin()) {
        return Err(ApiError::forbidden(
            "registering a host needs the join token",
        ));
    }
    validate_id("host_id", &r.host_id)?;
    if !r.url.starts_with("http://") || r.url.len() > 512 || r.url.contains(char::is_whitespace) {
        return Err(FieldError::new("url", "must be http://HOST:PORT").into());
    }
    if r.token.is_empty() || r.token.len() > 4096 {
        return Err(FieldError::new("token", "must be 1 to 4096 characters").into());
    }
    let now = now_ms();
    let host = Host {
        id: r.host_id.clone(),
        hostname: r.hostname.clone(),
        url: r.url.clone(),
        hostd_token: r.token.clone(),
        labels: Default::default(),
        state: HostState::Ready,
        cordoned: false,
        draining: false,
        capacity: crate::model::resources_from_hostd(r.info.capacity),
        allocated: crate::model::resources_from_hostd(r.info.allocated),
        kvm: r.info.kvm.clone(),
        registered_at_ms: now,
        last_heartbeat_ms: now,
    };
    // A host registering again (restart, new token) keeps its labels and cordon.
    if st.store.create(&host).await.is_err() {
        st.store
            .update::<Host, _>(&r.host_id, |h| {
                h.url = r.url.clone();
                h.hostd_token = r.token.clone();
                h.hostname = r.hostname.clone();
                h.capacity = crate::model::resources_from_hostd(r.info.capacity);
                h.allocated = crate::model::resources_from_hostd(r.info.allocated);
                h.kvm = r.info.kvm.clone();
                h.state = HostState::Ready;
                h.last_heartbeat_ms = now;
                true
            })
            .await?;
    }
    // The host's own credentials: may heartbeat for this host, nothing else.
    let secret = auth::new_secret();
    let hash = auth::hash(&secret);
    let token = Token {
        id: hash[..16].to_string(),
        hash,
        user: format!("host:{}", r.host_id),
        tenant: SYSTEM_TENANT.into(),
        role: Role::Host,
        host: Some(r.host_id.clone()),
        created_at_ms: now,
    };
    st.store.create(&token).await?;
    st.events.publish(
        "host.registered",
        SYSTEM_TENANT,
        &r.host_id,
        serde_json::json!({"url": r.url}),
    );
    Ok(created(
        serde_json::json!({"host_id": r.host_id, "token": secret, "heartbeat_interval_ms": st.heartbeat_ms}),
    ))
}

/// `POST /v1/hosts/{id}/heartbeat` with the host's own token.
#[utoipa::path(post, path = "/v1/hosts/{id}/heartbeat", request_body(content = Object, description = "nova_hostd Heartbeat"),
    responses((status = 200, description = "ok")))]
pub async fn heartbeat(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(hb): ApiJson<Heartbeat>,
) -> ApiResult<Json<serde_json::Value>> {
    let own = c.role == Role::Host && c.host.as_deref() == Some(id.as_str());
    if !(own || c.user == "join-token") || hb.host_id != id {
        return Err(ApiError::forbidden(
            "a host heartbeats for itself only, with its own token",
        ));
    }
    let mut came_back = false;
    st.store
        .update::<Host, _>(&id, |h| {
            came_back = h.state == HostState::Down;
            h.state = HostState::Ready;
            h.last_heartbeat_ms = now_ms();
            h.capacity = crate::model::resources_from_hostd(hb.info.capacity);
            h.allocated = crate::model::resources_from_hostd(hb.info.allocated);
            true
        })
        .await?;
    if came_back {
        st.events
            .publish("host.ready", SYSTEM_TENANT, &id, serde_json::json!({}));
    }
    crate::reconcile::observe_heartbeat(&st, &id, &hb.vms).await?;
    Ok(Json(serde_json::json!({"ok": true})))
}

/// `GET /v1/hosts`.
#[utoipa::path(get, path = "/v1/hosts", responses((status = 200, body = [Host])))]
pub async fn list(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<Host>>> {
    must_be_cluster(&c, false)?;
    Ok(Json(
        st.store
            .list_all::<Host>()
            .await?
            .into_iter()
            .map(shown)
            .collect(),
    ))
}

/// `GET /v1/hosts/{id}`.
#[utoipa::path(get, path = "/v1/hosts/{id}", responses((status = 200, body = Host)))]
pub async fn get_host(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Host>> {
    must_be_cluster(&c, false)?;
    let h = st
        .store
        .read::<Host>(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("host"))?;
    Ok(Json(shown(h)))
}

async fn set_cordon(st: &AppState, c: &Caller, id: &str, on: bool) -> ApiResult<Json<Host>> {
    must_be_cluster(c, true)?;
    let h = st
        .store
        .update::<Host, _>(id, |h| {
            h.cordoned = on;
            if !on {
                h.draining = false;
            }
            true
        })
        .await
        .map_err(|_| ApiError::not_found("host"))?;
    st.events.publish(
        if on {
            "host.cordoned"
        } else {
            "host.uncordoned"
        },
        SYSTEM_TENANT,
        id,
        serde_json::json!({}),
    );
    Ok(Json(shown(h)))
}

/// `POST /v1/hosts/{id}/cordon`: no new VMs land there.
#[utoipa::path(post, path = "/v1/hosts/{id}/cordon", responses((status = 200, body = Host)))]
pub async fn cordon(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Host>> {
    set_cordon(&st, &c, &id, true).await
}

/// `POST /v1/hosts/{id}/uncordon`.
#[utoipa::path(post, path = "/v1/hosts/{id}/uncordon", responses((status = 200, body = Host)))]
pub async fn uncordon(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Host>> {
    set_cordon(&st, &c, &id, false).await
}

/// `POST /v1/hosts/{id}/drain`: cordons the host and live-migrates every VM away,
/// within the migration policy; answers the operation to follow.
#[utoipa::path(post, path = "/v1/hosts/{id}/drain", responses((status = 202, body = Operation)))]
pub async fn drain(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    must_be_cluster(&c, true)?;
    st.store
        .read::<Host>(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("host"))?;
    let op = crate::migration::drain::start(&st, &id).await?;
    Ok(axum::response::IntoResponse::into_response((
        axum::http::StatusCode::ACCEPTED,
        Json(op),
    )))
}

/// `GET /v1/migration-policy`.
#[utoipa::path(get, path = "/v1/migration-policy", responses((status = 200, body = MigrationPolicy)))]
pub async fn get_policy(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<MigrationPolicy>> {
    must_be_cluster(&c, false)?;
    Ok(Json(crate::migration::load_policy(&st).await?))
}

/// `PUT /v1/migration-policy`.
#[utoipa::path(put, path = "/v1/migration-policy", request_body = MigrationPolicy, responses((status = 200, body = MigrationPolicy)))]
pub async fn put_policy(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiJson(p): ApiJson<MigrationPolicy>,
) -> ApiResult<Json<MigrationPolicy>> {
    must_be_cluster(&c, true)?;
    if !c.is_admin() {
        return Err(ApiError::forbidden(
            "only admins change the migration policy",
        ));
    }
    p.validate()?;
    let bytes = serde_json::to_vec(&p)
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    st.store
        .put(MigrationPolicy::KEY, bytes, Expect::Any)
        .await?;
    Ok(Json(p))
}

/// `GET /v1/rebalance`: live migrations the rebalancer proposes now.
#[utoipa::path(get, path = "/v1/rebalance", responses((status = 200, body = [Move])))]
pub async fn rebalance(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<Move>>> {
    must_be_cluster(&c, false)?;
    let (views, _) = crate::reconcile::host_views(&st).await?;
    Ok(Json(rebalance::propose(&views, 0.25, 16)))
}
