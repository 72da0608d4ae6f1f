//! The host's routes: health, facts, images, network, metrics and this API's own
//! OpenAPI document.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http_body_util::BodyExt;
use nova_hostd_api::{
    validate_image_ref, ErrorBody, FieldError, Health, HostInfo, ImageImportRequest, ImageInfo,
    ImageList, NetworkInfo, PeerRequest,
};

use crate::api::error::{ApiResult, JsonBody};
use crate::error::Error;
use crate::host::Host;

type S = State<Arc<Host>>;

/// Liveness and the host's id (no token needed).
#[utoipa::path(get, path = "/v1/health", tag = "host", security(()),
    responses((status = 200, body = Health)))]
pub async fn health(State(h): S) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        host_id: h.host_id.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "host",
    responses((status = 200, description = "the OpenAPI 3.1 document of this API",
        content_type = "application/json")))]
pub async fn openapi(Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>) -> Response {
    Json(doc.as_ref().clone()).into_response()
}

/// Host facts, capacity and what is allocated.
#[utoipa::path(get, path = "/v1/host", tag = "host",
    responses((status = 200, body = HostInfo)))]
pub async fn host_info(State(h): S) -> Json<HostInfo> {
    Json(h.info())
}

/// The image cache.
#[utoipa::path(get, path = "/v1/images", tag = "images",
    responses((status = 200, body = ImageList), (status = 500, body = ErrorBody)))]
pub async fn list_images(State(h): S) -> ApiResult<Json<ImageList>> {
    Ok(Json(ImageList {
        images: h.images.list()?,
    }))
}

/// Imports a file already on the host into the cache.
#[utoipa::path(post, path = "/v1/images", tag = "images", request_body = ImageImportRequest,
    responses((status = 201, body = ImageInfo), (status = 400, body = ErrorBody)))]
pub async fn import_image(
    State(h): S,
    JsonBody(req): JsonBody<ImageImportRequest>,
) -> ApiResult<(StatusCode, Json<ImageInfo>)> {
    let images = h.images.clone();
    let info = tokio::task::spawn_blocking(move || images.import_path("path", &req.path))
        .await
        .map_err(|e| Error::Conflict(format!("import task: {e}")))??;
    Ok((StatusCode::CREATED, Json(info)))
}

/// Uploads an image (the request body is its bytes).
#[utoipa::path(put, path = "/v1/images", tag = "images",
    request_body(content = String, content_type = "application/octet-stream",
        description = "the image's bytes"),
    responses((status = 201, body = ImageInfo), (status = 400, body = ErrorBody)))]
pub async fn upload_image(State(h): S, body: Body) -> ApiResult<(StatusCode, Json<ImageInfo>)> {
    let mut up = h.images.upload()?;
    let mut body = body;
    let max = h.config.max_image_bytes;
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| FieldError::new("body", format!("upload interrupted: {e}")))?;
        if let Ok(data) = frame.into_data() {
            len += data.len() as u64;
            if len > max {
                nova_http::server::drain_refused_body(&mut body).await;
                return Err(FieldError::new(
                    "body",
                    format!(
                        "larger than this host's --max-image-mib ({} MiB)",
                        max >> 20
                    ),
                )
                .into());
            }
            up.write(&data)?;
        }
    }
    let info = tokio::task::spawn_blocking(move || up.finish())
        .await
        .map_err(|e| Error::Conflict(format!("upload task: {e}")))??;
    Ok((StatusCode::CREATED, Json(info)))
}

/// One image.
#[utoipa::path(get, path = "/v1/images/{image}", tag = "images",
    params(("image" = String, Path, description = "sha256:<hex>")),
    responses((status = 200, body = ImageInfo), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_image(State(h): S, Path(image): Path<String>) -> ApiResult<Json<ImageInfo>> {
    validate_image_ref("image", &image)?;
    Ok(Json(h.images.get(&image)?))
}

/// The bridge and the VXLAN overlay.
#[utoipa::path(get, path = "/v1/network", tag = "network",
    responses((status = 200, body = NetworkInfo)))]
pub async fn network(State(h): S) -> Json<NetworkInfo> {
    Json(h.net.info())
}

/// Adds a VXLAN peer host.
#[utoipa::path(post, path = "/v1/network/peers", tag = "network", request_body = PeerRequest,
    responses((status = 200, body = NetworkInfo), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "no overlay on this host"),
        (status = 500, body = ErrorBody)))]
pub async fn add_peer(
    State(h): S,
    JsonBody(req): JsonBody<PeerRequest>,
) -> ApiResult<Json<NetworkInfo>> {
    h.net.add_peer(req.address).await?;
    Ok(Json(h.net.info()))
}

/// Prometheus metrics of the host and every VM (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "host",
    responses((status = 200, description = "the exposition", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(h): S) -> Response {
    let vms = h.vms.live_all().await;
    let text = crate::metrics::render(&h.info(), &vms, &h.migrations.metrics, &h.vms.jailer.attach);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}
