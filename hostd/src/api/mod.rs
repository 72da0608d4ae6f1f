//! hostd's HTTP API (axum): the router, the token check in front of it, the JSON body
//! extractor that names bad fields, and one small handler per route, each a call
//! into the part of the daemon that owns the state. Routes: [`openapi::ROUTES`].

pub mod auth;
pub mod client;
pub mod openapi;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::host::Host;
use types::*;

/// Largest JSON request body.
const MAX_JSON: usize = 1 << 20;

type S = State<Arc<Host>>;

/// An error answer: status from the error kind, `{"error", "field"}` body.
pub fn error_response(e: &Error) -> Response {
    let (status, field) = match e {
        Error::Invalid(f) => (StatusCode::BAD_REQUEST, Some(f.field.clone())),
        Error::NotFound(_) => (StatusCode::NOT_FOUND, None),
        Error::Conflict(_) | Error::NoCapacity(_) => (StatusCode::CONFLICT, None),
        Error::Vmm(_) | Error::Peer(_) => (StatusCode::BAD_GATEWAY, None),
        Error::Net(_) | Error::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, None),
    };
    if status.is_server_error() {
        tracing::warn!("{e}");
    }
    (
        status,
        Json(ErrorBody {
            error: e.to_string(),
            field,
        }),
    )
        .into_response()
}

/// A handler's error.
pub struct ApiError(Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(&self.0)
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose errors name the field (`disks[0].size_mib`, or the unknown one).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, St: Send + Sync> FromRequest<St> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &St) -> Result<Self, ApiError> {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_JSON)
            .await
            .map_err(|_| {
                FieldError::new(
                    "body",
                    format!("unreadable or larger than {MAX_JSON} bytes"),
                )
            })?;
        parse_json(&bytes).map(JsonBody).map_err(ApiError::from)
    }
}

/// Parses `bytes` as `T`, naming the failing field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FieldError> {
    // Every request body is an object (serde would also take a struct as an array).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(FieldError::new("body", "must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // An unknown field's path already ends with its name; a missing field's
        // path is its parent's.
        let field = if let Some(rest) = msg.strip_prefix("missing field `") {
            let name = rest.split('`').next().unwrap_or("");
            if path == "." {
                name.to_string()
            } else {
                format!("{path}.{name}")
            }
        } else if path == "." {
            "body".to_string()
        } else {
            path
        };
        FieldError::new(field, msg)
    })
}

async fn require_token(State(host): S, req: Request, next: Next) -> Response {
    let h = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !auth::authorized(h, &host.config.token) {
        let body = ErrorBody {
            error: "missing or invalid bearer token".into(),
            field: None,
        };
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(body),
        )
            .into_response();
    }
    next.run(req).await
}

async fn no_route(req: Request) -> Response {
    let body = ErrorBody {
        error: format!("no route {} {}", req.method(), req.uri().path()),
        field: None,
    };
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// The whole API.
pub fn router(host: Arc<Host>) -> Router {
    let authed = Router::new()
        .route(
            "/v1/openapi.json",
            get(|| async { Json(openapi::document()) }),
        )
        .route("/v1/host", get(host_info))
        .route("/v1/vms", get(list_vms).post(create_vm))
        .route("/v1/vms/{id}", get(get_vm).delete(delete_vm))
        .route("/v1/vms/{id}/start", post(start_vm))
        .route("/v1/vms/{id}/stop", post(stop_vm))
        .route("/v1/vms/{id}/pause", post(pause_vm))
        .route("/v1/vms/{id}/resume", post(resume_vm))
        .route("/v1/vms/{id}/console", get(console))
        .route("/v1/vms/{id}/snapshot", post(snapshot))
        .route("/v1/vms/{id}/restore", post(restore))
        .route("/v1/vms/{id}/migrate", post(migrate))
        .route(
            "/v1/vms/{id}/migration",
            get(migration_status).delete(cancel_migration),
        )
        .route("/v1/migrations", get(list_migrations))
        .route("/v1/migrations/incoming", post(incoming))
        .route(
            "/v1/migrations/incoming/{mid}/complete",
            post(incoming_complete),
        )
        .route("/v1/migrations/incoming/{mid}/abort", post(incoming_abort))
        .route(
            "/v1/images",
            get(list_images).post(import_image).put(upload_image),
        )
        .route("/v1/images/{image}", get(get_image))
        .route("/v1/network", get(network))
        .route("/v1/network/peers", post(add_peer))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(host.clone(), require_token));
    Router::new()
        .route("/v1/health", get(health))
        .merge(authed)
        .fallback(no_route)
        .with_state(host)
}

async fn health(State(h): S) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        host_id: h.host_id.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

async fn host_info(State(h): S) -> Json<HostInfo> {
    Json(h.info())
}

async fn list_vms(State(h): S) -> Json<VmList> {
    Json(VmList {
        vms: h.vm_infos().await,
    })
}

async fn create_vm(
    State(h): S,
    JsonBody(spec): JsonBody<VmSpec>,
) -> ApiResult<(StatusCode, Json<VmInfo>)> {
    Ok((StatusCode::CREATED, Json(h.create_vm(spec).await?)))
}

async fn get_vm(State(h): S, Path(id): Path<String>) -> ApiResult<Json<VmInfo>> {
    let vm = h.vms.get(&id)?;
    Ok(Json(h.vm_info(&vm).await))
}

async fn delete_vm(State(h): S, Path(id): Path<String>) -> ApiResult<StatusCode> {
    h.delete_vm(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start_vm(State(h): S, Path(id): Path<String>) -> ApiResult<Json<VmInfo>> {
    Ok(Json(h.start_vm(&id).await?))
}

fn flag(q: &HashMap<String, String>, name: &str) -> Result<bool, FieldError> {
    match q.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(v) => Err(FieldError::new(name, format!("'{v}' is not true or false"))),
    }
}

async fn stop_vm(
    State(h): S,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<VmInfo>> {
    let force = flag(&q, "force")?;
    Ok(Json(h.stop_vm(&id, force).await?))
}

async fn pause_vm(State(h): S, Path(id): Path<String>) -> ApiResult<Json<VmInfo>> {
    Ok(Json(h.pause_resume(&id, true).await?))
}

async fn resume_vm(State(h): S, Path(id): Path<String>) -> ApiResult<Json<VmInfo>> {
    Ok(Json(h.pause_resume(&id, false).await?))
}

async fn console(
    State(h): S,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<ConsoleLog>> {
    let lines = match q.get("lines") {
        None => 100,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                FieldError::new("lines", format!("'{v}' is not a number in 1..=10000"))
            })?,
    };
    Ok(Json(h.console(&id, lines)?))
}

async fn snapshot(
    State(h): S,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<SnapshotRequest>,
) -> ApiResult<(StatusCode, Json<SnapshotInfo>)> {
    Ok((StatusCode::CREATED, Json(h.snapshot_vm(&id, req).await?)))
}

async fn restore(
    State(h): S,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RestoreRequest>,
) -> ApiResult<Json<VmInfo>> {
    Ok(Json(h.restore_vm(&id, req).await?))
}

async fn migrate(
    State(h): S,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<MigrateRequest>,
) -> ApiResult<(StatusCode, Json<MigrationStatus>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(crate::migration::migrate_out(h, &id, req).await?),
    ))
}

async fn migration_status(State(h): S, Path(id): Path<String>) -> ApiResult<Json<MigrationStatus>> {
    validate_id("id", &id)?;
    if let Ok(vm) = h.vms.get(&id) {
        if let Some(m) = vm.lock().rec.migration.clone() {
            return Ok(Json(m));
        }
    }
    // A VM that left this host: its last migration from the log.
    let log = h.migration_log.lock().unwrap_or_else(|e| e.into_inner());
    let m = log
        .values()
        .filter(|m| m.vm_id == id)
        .max_by_key(|m| m.started_at_ms)
        .cloned();
    m.map(Json)
        .ok_or_else(|| Error::NotFound(format!("no migration of VM '{id}' on this host")).into())
}

async fn cancel_migration(State(h): S, Path(id): Path<String>) -> ApiResult<StatusCode> {
    crate::migration::cancel(&h, &id).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn list_migrations(State(h): S) -> Json<serde_json::Value> {
    let mut all: Vec<MigrationStatus> = h
        .migration_log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    for vm in h.vms.all() {
        if let Some(m) = vm.lock().rec.migration.clone() {
            if !all.iter().any(|x| x.id == m.id) {
                all.push(m);
            }
        }
    }
    all.sort_by_key(|m| m.started_at_ms);
    Json(serde_json::json!({ "migrations": all }))
}

async fn incoming(
    State(h): S,
    JsonBody(req): JsonBody<IncomingRequest>,
) -> ApiResult<(StatusCode, Json<IncomingReady>)> {
    Ok((
        StatusCode::CREATED,
        Json(crate::migration::prepare_incoming(h, req).await?),
    ))
}

async fn incoming_complete(
    State(h): S,
    Path(mid): Path<String>,
    JsonBody(o): JsonBody<IncomingOutcome>,
) -> ApiResult<StatusCode> {
    crate::migration::complete_incoming(h, &mid, o).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn incoming_abort(
    State(h): S,
    Path(mid): Path<String>,
    JsonBody(o): JsonBody<IncomingOutcome>,
) -> ApiResult<StatusCode> {
    crate::migration::abort_incoming(h, &mid, o).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_images(State(h): S) -> ApiResult<Json<ImageList>> {
    Ok(Json(ImageList {
        images: h.images.list()?,
    }))
}

async fn import_image(
    State(h): S,
    JsonBody(req): JsonBody<ImageImportRequest>,
) -> ApiResult<(StatusCode, Json<ImageInfo>)> {
    let images = h.images.clone();
    let info = tokio::task::spawn_blocking(move || images.import_path(&req.path))
        .await
        .map_err(|e| Error::Conflict(format!("import task: {e}")))??;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn upload_image(State(h): S, body: Body) -> ApiResult<(StatusCode, Json<ImageInfo>)> {
    let mut up = h.images.upload()?;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| FieldError::new("body", format!("upload interrupted: {e}")))?;
        if let Ok(data) = frame.into_data() {
            let data: Bytes = data;
            up.write(&data)?;
        }
    }
    let info = tokio::task::spawn_blocking(move || up.finish())
        .await
        .map_err(|e| Error::Conflict(format!("upload task: {e}")))??;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn get_image(State(h): S, Path(image): Path<String>) -> ApiResult<Json<ImageInfo>> {
    validate_image_ref("image", &image)?;
    Ok(Json(h.images.get(&image)?))
}

async fn network(State(h): S) -> Json<NetworkInfo> {
    Json(h.net.info())
}

async fn add_peer(
    State(h): S,
    JsonBody(req): JsonBody<PeerRequest>,
) -> ApiResult<Json<NetworkInfo>> {
    h.net.add_peer(req.address).await?;
    Ok(Json(h.net.info()))
}

async fn metrics(State(h): S) -> Response {
    let vms = h.vm_infos().await;
    let mig = h
        .migrations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let text = crate::metrics::render(&h.info(), &vms, &mig);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<VmSpec>(br#"{"name":"a","kernel":"/k","cpus":1}"#).unwrap_err();
        assert_eq!(e.field, "cpus");
        let e =
            parse_json::<VmSpec>(br#"{"name":"a","kernel":"/k","disks":[{"size_mib":1,"x":2}]}"#)
                .unwrap_err();
        assert_eq!(e.field, "disks[0].x");
        let e = parse_json::<VmSpec>(br#"{"name":"a"}"#).unwrap_err();
        assert_eq!(e.field, "kernel");
        let e = parse_json::<VmSpec>(br#"{"name":"a","kernel":"/k","vcpus":-1}"#).unwrap_err();
        assert_eq!(e.field, "vcpus");
        let e = parse_json::<VmSpec>(b"not json").unwrap_err();
        assert_eq!(e.field, "body");
    }
}
