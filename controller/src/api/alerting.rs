//! Alerting routes: rules (`/v1/alert-rules`, the system tenant's), alerts
//! (`/v1/alerts`: each tenant sees its own VMs'; acknowledge, silence), silences
//! (`/v1/silences`), notification receivers (`/v1/alert-receivers`, whose secrets
//! are never shown) and dead letters (`/v1/alert-dead-letters`). The lifecycle lives
//! in `crate::alerting`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};

use super::error::{answer, ApiJson};
use super::{must_be_cluster, must_operate, ApiError, ApiResult, AppState};
use crate::alerting;
use crate::auth::Caller;
use crate::model::{
    now_ms, Alert, AlertRule, DeadLetter, ErrorBody, NewSilence, Receiver, ReceiverKind, Silence,
    SilenceBody,
};
use crate::store::{Objects, StoreError};

fn taken(e: StoreError, what: &str) -> ApiError {
    match e {
        StoreError::Conflict(_) => {
            ApiError::new(StatusCode::CONFLICT, format!("{what} exists")).with_field("id")
        }
        e => e.into(),
    }
}

/// `GET /v1/alert-rules`.
#[utoipa::path(get, path = "/v1/alert-rules", tag = "alerting",
    responses((status = 200, body = Vec<AlertRule>), (status = 403, description = "not the system tenant", body = ErrorBody)))]
pub async fn list_rules(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<AlertRule>>> {
    must_be_cluster(&c, false)?;
    Ok(Json(st.ctx.store.list_all::<AlertRule>().await?))
}

/// `POST /v1/alert-rules`.
#[utoipa::path(post, path = "/v1/alert-rules", tag = "alerting", request_body = AlertRule,
    responses((status = 201, body = AlertRule), (status = 400, description = "a bad field", body = ErrorBody),
        (status = 409, description = "the rule exists", body = ErrorBody)))]
pub async fn create_rule(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiJson(mut r): ApiJson<AlertRule>,
) -> ApiResult<Response> {
    must_be_cluster(&c, true)?;
    alerting::validate_rule(&r)?;
    r.builtin = false;
    st.ctx
        .store
        .create(&r)
        .await
        .map_err(|e| taken(e, "alert rule"))?;
    Ok(answer(StatusCode::CREATED, None, r))
}

/// `GET /v1/alert-rules/{id}`.
#[utoipa::path(get, path = "/v1/alert-rules/{id}", tag = "alerting",
    params(("id" = String, Path, description = "rule id")),
    responses((status = 200, body = AlertRule), (status = 404, description = "no such rule", body = ErrorBody)))]
pub async fn get_rule(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<AlertRule>> {
    must_be_cluster(&c, false)?;
    let r = st.ctx.store.read::<AlertRule>(&id).await?;
    Ok(Json(r.ok_or_else(|| ApiError::not_found("alert rule"))?))
}

/// `PUT /v1/alert-rules/{id}`: replaces a rule (a shipped one stays `builtin`).
#[utoipa::path(put, path = "/v1/alert-rules/{id}", tag = "alerting", request_body = AlertRule,
    params(("id" = String, Path, description = "rule id")),
    responses((status = 200, body = AlertRule), (status = 400, description = "a bad field", body = ErrorBody),
        (status = 404, description = "no such rule", body = ErrorBody)))]
pub async fn put_rule(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(new): ApiJson<AlertRule>,
) -> ApiResult<Json<AlertRule>> {
    must_be_cluster(&c, true)?;
    if new.id != id {
        return Err(nova_http::FieldError::new("id", "differs from the path's").into());
    }
    alerting::validate_rule(&new)?;
    let r = st
        .ctx
        .store
        .update::<AlertRule, _>(&id, |r| {
            let builtin = r.builtin;
            *r = new.clone();
            r.builtin = builtin;
            true
        })
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => ApiError::not_found("alert rule"),
            e => e.into(),
        })?;
    Ok(Json(r))
}

/// `DELETE /v1/alert-rules/{id}`: its alerts resolve at the next evaluation.
#[utoipa::path(delete, path = "/v1/alert-rules/{id}", tag = "alerting",
    params(("id" = String, Path, description = "rule id")),
    responses((status = 200, body = AlertRule), (status = 404, description = "no such rule", body = ErrorBody)))]
pub async fn delete_rule(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<AlertRule>> {
    must_be_cluster(&c, true)?;
    let r = st
        .ctx
        .store
        .read::<AlertRule>(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("alert rule"))?;
    st.ctx.store.remove::<AlertRule>(&id).await?;
    Ok(Json(r))
}

/// `GET /v1/alerts`: the caller's tenant's alerts (every one for the system tenant),
/// active and recently resolved.
#[utoipa::path(get, path = "/v1/alerts", tag = "alerting",
    responses((status = 200, body = Vec<Alert>)))]
pub async fn list_alerts(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<Alert>>> {
    let mut v = st.ctx.store.list_all::<Alert>().await?;
    v.retain(|a| c.sees(&a.tenant));
    v.sort_by_key(|a| std::cmp::Reverse(a.since_ms));
    Ok(Json(v))
}

async fn visible_alert(st: &AppState, c: &Caller, id: &str) -> ApiResult<Alert> {
    st.ctx
        .store
        .read::<Alert>(id)
        .await?
        .filter(|a| c.sees(&a.tenant))
        .ok_or_else(|| ApiError::not_found("alert"))
}

/// `GET /v1/alerts/{id}`.
#[utoipa::path(get, path = "/v1/alerts/{id}", tag = "alerting",
    params(("id" = String, Path, description = "alert id, <rule>:<target>")),
    responses((status = 200, body = Alert), (status = 404, description = "no such alert", body = ErrorBody)))]
pub async fn get_alert(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Alert>> {
    Ok(Json(visible_alert(&st, &c, &id).await?))
}

/// `POST /v1/alerts/{id}/ack`: somebody is on it; no more notifications until it
/// resolves.
#[utoipa::path(post, path = "/v1/alerts/{id}/ack", tag = "alerting",
    params(("id" = String, Path, description = "alert id")),
    responses((status = 200, body = Alert), (status = 404, description = "no such alert", body = ErrorBody),
        (status = 409, description = "the alert is resolved", body = ErrorBody)))]
pub async fn ack_alert(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Alert>> {
    must_operate(&c)?;
    visible_alert(&st, &c, &id).await?;
    Ok(Json(alerting::acknowledge(&st.ctx, &id, &c.actor()).await?))
}

/// `POST /v1/alerts/{id}/silence`: a silence of this alert's rule and target.
#[utoipa::path(post, path = "/v1/alerts/{id}/silence", tag = "alerting", request_body = SilenceBody,
    params(("id" = String, Path, description = "alert id")),
    responses((status = 200, body = Alert), (status = 400, description = "a bad field", body = ErrorBody),
        (status = 404, description = "no such alert", body = ErrorBody),
        (status = 409, description = "the alert is resolved", body = ErrorBody)))]
pub async fn silence_alert(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<SilenceBody>,
) -> ApiResult<Json<Alert>> {
    must_operate(&c)?;
    visible_alert(&st, &c, &id).await?;
    let (a, _) = alerting::silence_alert(&st.ctx, &id, b.for_s, &c.actor()).await?;
    Ok(Json(a))
}

/// `GET /v1/silences` (the system tenant's).
#[utoipa::path(get, path = "/v1/silences", tag = "alerting",
    responses((status = 200, body = Vec<Silence>)))]
pub async fn list_silences(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<Silence>>> {
    must_be_cluster(&c, false)?;
    Ok(Json(st.ctx.store.list_all::<Silence>().await?))
}

/// `POST /v1/silences`: mutes every alert whose labels match, until it expires.
#[utoipa::path(post, path = "/v1/silences", tag = "alerting", request_body = NewSilence,
    responses((status = 201, body = Silence), (status = 400, description = "a bad field", body = ErrorBody)))]
pub async fn create_silence(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiJson(n): ApiJson<NewSilence>,
) -> ApiResult<Response> {
    must_be_cluster(&c, true)?;
    let s = alerting::new_silence(&n, &c.actor(), now_ms())?;
    st.ctx.store.create(&s).await?;
    Ok(answer(StatusCode::CREATED, None, s))
}

/// `DELETE /v1/silences/{id}`: ends a silence now.
#[utoipa::path(delete, path = "/v1/silences/{id}", tag = "alerting",
    params(("id" = String, Path, description = "silence id")),
    responses((status = 200, body = Silence), (status = 404, description = "no such silence", body = ErrorBody)))]
pub async fn delete_silence(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Silence>> {
    must_be_cluster(&c, true)?;
    let s = st
        .ctx
        .store
        .read::<Silence>(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("silence"))?;
    st.ctx.store.remove::<Silence>(&id).await?;
    Ok(Json(s))
}

/// A receiver as the API shows it: without its secret.
fn shown(mut r: Receiver) -> Receiver {
    if let ReceiverKind::Webhook { secret, .. } = &mut r.channel {
        secret.clear();
    }
    r
}

/// `GET /v1/alert-receivers`.
#[utoipa::path(get, path = "/v1/alert-receivers", tag = "alerting",
    responses((status = 200, body = Vec<Receiver>)))]
pub async fn list_receivers(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<Receiver>>> {
    must_be_cluster(&c, false)?;
    let v = st.ctx.store.list_all::<Receiver>().await?;
    Ok(Json(v.into_iter().map(shown).collect()))
}

/// `POST /v1/alert-receivers`.
#[utoipa::path(post, path = "/v1/alert-receivers", tag = "alerting", request_body = Receiver,
    responses((status = 201, body = Receiver), (status = 400, description = "a bad field", body = ErrorBody),
        (status = 409, description = "the receiver exists", body = ErrorBody)))]
pub async fn create_receiver(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiJson(r): ApiJson<Receiver>,
) -> ApiResult<Response> {
    must_be_cluster(&c, true)?;
    alerting::validate_receiver(&r)?;
    st.ctx
        .store
        .create(&r)
        .await
        .map_err(|e| taken(e, "receiver"))?;
    Ok(answer(StatusCode::CREATED, None, shown(r)))
}

/// `DELETE /v1/alert-receivers/{id}`.
#[utoipa::path(delete, path = "/v1/alert-receivers/{id}", tag = "alerting",
    params(("id" = String, Path, description = "receiver id")),
    responses((status = 200, body = Receiver), (status = 404, description = "no such receiver", body = ErrorBody)))]
pub async fn delete_receiver(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Receiver>> {
    must_be_cluster(&c, true)?;
    let r = st
        .ctx
        .store
        .read::<Receiver>(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("receiver"))?;
    st.ctx.store.remove::<Receiver>(&id).await?;
    Ok(Json(shown(r)))
}

/// `GET /v1/alert-dead-letters`: notifications given up on, oldest first.
#[utoipa::path(get, path = "/v1/alert-dead-letters", tag = "alerting",
    responses((status = 200, body = Vec<DeadLetter>)))]
pub async fn dead_letters(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<DeadLetter>>> {
    must_be_cluster(&c, false)?;
    let mut v = st.ctx.store.list_all::<DeadLetter>().await?;
    v.sort_by_key(|d| d.at_ms);
    Ok(Json(v))
}

/// The alerting routes, mounted by `api::router`.
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/alert-rules", get(list_rules).post(create_rule))
        .route(
            "/v1/alert-rules/{id}",
            get(get_rule).put(put_rule).delete(delete_rule),
        )
        .route("/v1/alerts", get(list_alerts))
        .route("/v1/alerts/{id}", get(get_alert))
        .route("/v1/alerts/{id}/ack", post(ack_alert))
        .route("/v1/alerts/{id}/silence", post(silence_alert))
        .route("/v1/silences", get(list_silences).post(create_silence))
        .route("/v1/silences/{id}", axum::routing::delete(delete_silence))
        .route(
            "/v1/alert-receivers",
            get(list_receivers).post(create_receiver),
        )
        .route(
            "/v1/alert-receivers/{id}",
            axum::routing::delete(delete_receiver),
        )
        .route("/v1/alert-dead-letters", get(dead_letters))
}
