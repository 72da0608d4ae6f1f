//! Monitoring routes: the metric history (`/v1/metrics/query`, `/v1/metrics/names`),
//! Prometheus HTTP service discovery (`/v1/metrics/targets`) and the proxy it points
//! Prometheus at for each host (`/v1/metrics/hosts/{id}`), so Prometheus needs one
//! system-tenant viewer token and never a host's token. Tenants see only their VMs'
//! series; host and controller series are the system tenant's.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::error::ApiQuery;
use super::{must_be_cluster, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::model::{
    now_ms, Capacity, CapacityQuery, ErrorBody, Host, MetricQuery, QueryAnswer, SdTargetGroup,
    Series,
};
use crate::monitoring::tsdb::resample;
use crate::store::Objects;

/// Points one answer may hold at most (all series together).
const MAX_POINTS: usize = 1_000_000;

/// `GET /v1/metrics/query`: one metric's history, a series per host or VM.
#[utoipa::path(get, path = "/v1/metrics/query", tag = "monitoring", params(MetricQuery),
    responses((status = 200, body = QueryAnswer), (status = 400, description = "a bad parameter", body = ErrorBody)))]
pub async fn query(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiQuery(q): ApiQuery<MetricQuery>,
) -> ApiResult<Json<QueryAnswer>> {
    let field = |f: &str, why: &str| ApiError::from(nova_http::FieldError::new(f, why));
    if q.metric.is_empty() || q.metric.len() > 128 {
        return Err(field("metric", "1 to 128 characters"));
    }
    let now = now_ms() / 1000;
    let end = q.end_ms.map(|e| e / 1000).unwrap_or(now);
    let start = q
        .start_ms
        .map(|s| s / 1000)
        .unwrap_or(end.saturating_sub(3600));
    if start > end {
        return Err(field("start_ms", "after end_ms"));
    }
    if end - start > 400 * 86_400 {
        return Err(field("start_ms", "the range is at most 400 days"));
    }
    if q.step_s == Some(0) {
        return Err(field("step_s", "must be at least 1"));
    }
    let db = st.ctx.monitoring.db.clone();
    let interval = st.ctx.monitoring.settings.scrape_interval.as_secs().max(1);
    let (_, tier_step) = db.tier_for(start, now);
    let resolution = if tier_step == 0 { interval } else { tier_step };
    let step = q.step_s.unwrap_or(resolution);
    let metric = q.metric.clone();
    let target = q.target.clone();
    let caller = c.clone();
    let found = tokio::task::spawn_blocking(move || {
        db.query(&metric, target.as_deref(), start, end, now, &|t| {
            caller.sees(t)
        })
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut total = 0;
    let mut series = vec![];
    for f in found.1 {
        let pts = if step > resolution {
            resample(&f.points, step)
        } else {
            f.points
        };
        total += pts.len();
        if total > MAX_POINTS {
            return Err(field(
                "step_s",
                "too many points: ask for a larger step or a shorter range",
            ));
        }
        series.push(Series {
            metric: f.key.metric,
            target: f.key.target,
            points: pts.into_iter().map(|(t, v)| (t * 1000, v)).collect(),
        });
    }
    Ok(Json(QueryAnswer {
        step_s: step.max(resolution),
        resolution_s: resolution,
        series,
    }))
}

/// `GET /v1/metrics/names`: the metrics the history holds (those the caller can see
/// series of, and every one for the system tenant).
#[utoipa::path(get, path = "/v1/metrics/names", tag = "monitoring",
    responses((status = 200, body = Vec<String>)))]
pub async fn names(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> Json<Vec<String>> {
    let mut m = st.ctx.monitoring.db.metrics();
    if !c.is_cluster() {
        m.retain(|n| n.starts_with("vm."));
    }
    Json(m)
}

/// `GET /v1/metrics/targets`: Prometheus HTTP service discovery (`http_sd_configs`):
/// this controller's own `/metrics`, and each host's through this controller.
#[utoipa::path(get, path = "/v1/metrics/targets", tag = "monitoring",
    responses((status = 200, body = Vec<SdTargetGroup>), (status = 403, description = "not a system-tenant token", body = ErrorBody)))]
pub async fn targets(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<SdTargetGroup>>> {
    must_be_cluster(&c, false)?;
    // Where Prometheus reached us is where it reaches the targets.
    let me = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.len() <= 255 && !h.contains(['/', ' ', '@']))
        .ok_or_else(|| nova_http::FieldError::new("Host", "the request names no usable Host"))?
        .to_string();
    let group = |path: String, job: &str, extra: (&str, &str)| SdTargetGroup {
        targets: vec![me.clone()],
        labels: [
            ("__metrics_path__".to_string(), path),
            ("job".to_string(), job.to_string()),
            (extra.0.to_string(), extra.1.to_string()),
        ]
        .into_iter()
        .collect(),
    };
    let mut out = vec![group(
        "/metrics".into(),
        "nova-controller",
        ("node", &st.ctx.node),
    )];
    for h in st.ctx.store.list_all::<Host>().await? {
        out.push(group(
            format!("/v1/metrics/hosts/{}", h.id),
            "nova-hostd",
            ("host", &h.id),
        ));
    }
    Ok(Json(out))
}

/// `GET /v1/metrics/hosts/{id}`: the host's hostd `/metrics`, as it is.
#[utoipa::path(get, path = "/v1/metrics/hosts/{id}", tag = "monitoring",
    params(("id" = String, Path, description = "host id")),
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text"),
        (status = 404, description = "no such host", body = ErrorBody),
        (status = 502, description = "the host did not answer", body = ErrorBody)))]
pub async fn host_metrics(
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
    let text = st
        .ctx
        .hostd(&h)?
        .metrics()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("host {id}: {e}")))?;
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(r)
}

/// `GET /v1/capacity`: per host and for the cluster, allocated and used vCPUs,
/// memory and disk, their trends over the history, the days until full, and how
/// many VMs of a size fit now and in 30 days (the system tenant's).
#[utoipa::path(get, path = "/v1/capacity", tag = "monitoring", params(CapacityQuery),
    responses((status = 200, body = Capacity), (status = 400, description = "a bad parameter", body = ErrorBody),
        (status = 403, description = "not a system-tenant token", body = ErrorBody)))]
pub async fn capacity(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiQuery(q): ApiQuery<CapacityQuery>,
) -> ApiResult<Json<Capacity>> {
    must_be_cluster(&c, false)?;
    let field = |f: &str, why: &str| ApiError::from(nova_http::FieldError::new(f, why));
    let vcpus = q.vcpus.unwrap_or(1);
    let mem = q.mem_mib.unwrap_or(512);
    let window = q.window_s.unwrap_or(7 * 86_400);
    if !(1..=1024).contains(&vcpus) {
        return Err(field("vcpus", "1 to 1024"));
    }
    if !(1..=16 * 1048576).contains(&mem) {
        return Err(field("mem_mib", "1 to 16777216"));
    }
    if !(60..=365 * 86_400).contains(&window) {
        return Err(field("window_s", "60 s to a year"));
    }
    let cap =
        crate::monitoring::capacity::capacity(&st.ctx, vcpus, mem, window, now_ms() / 1000).await?;
    Ok(Json(cap))
}

/// The monitoring routes, mounted by `api::router`.
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/v1/metrics/query", get(query))
        .route("/v1/metrics/names", get(names))
        .route("/v1/metrics/targets", get(targets))
        .route("/v1/metrics/hosts/{id}", get(host_metrics))
        .route("/v1/capacity", get(capacity))
}
