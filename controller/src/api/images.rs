//! Image routes: `POST /v1/images` (an upload, streamed to a 0600 spool file and
//! capped by `--max-image-mib`, then handed to every ready host; the spool also
//! carries images through a cross-cluster migration's gateway), `POST
//! /v1/images/import` (system admins: a host path), `GET /v1/images`.

use std::io::Write;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use http_body_util::BodyExt;
use nova_http::FieldError;
use sha2::{Digest, Sha256};

use super::error::{answer, ApiJson};
use super::{must_operate, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::model::{ClusterImage, ClusterImages, ErrorBody, ImportImage};

/// A spool file removed when dropped.
pub(super) struct Spool(std::path::PathBuf);

impl Spool {
    pub(super) fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Streams an upload's `body` into a 0600 spool file, refusing more than `max` bytes
/// (413, field `body`); the file and the image id its bytes hash to (`sha256:<hex>`).
pub(super) async fn spool(body: Body, max: u64) -> ApiResult<(Spool, String)> {
    let spool = Spool(std::env::temp_dir().join(format!(
        "nova-image-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    )));
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&spool.0)
            .map_err(|e| ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?
    };
    let mut hash = Sha256::new();
    let mut body = body;
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| FieldError::new("body", format!("upload interrupted: {e}")))?;
        if let Ok(data) = frame.into_data() {
            len += data.len() as u64;
            if len > max {
                nova_http::server::drain_refused_body(&mut body).await;
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body: larger than --max-image-mib ({} MiB)", max >> 20),
                )
                .with_field("body"));
            }
            hash.update(&data);
            f.write_all(&data)
                .map_err(|e| ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
        }
    }
    Ok((spool, format!("sha256:{}", hex::encode(hash.finalize()))))
}

/// `POST /v1/images`: the body is the image's bytes.
#[utoipa::path(post, path = "/v1/images", tag = "images",
    request_body(content = String, content_type = "application/octet-stream", description = "the image's bytes"),
    responses((status = 201, body = ClusterImage),
        (status = 400, description = "interrupted", body = ErrorBody),
        (status = 409, description = "no host is ready", body = ErrorBody),
        (status = 413, description = "larger than --max-image-mib (field `body`)", body = ErrorBody)))]
pub async fn upload_image(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    body: Body,
) -> ApiResult<Response> {
    must_operate(&c)?;
    let (spool, _) = spool(body, st.ctx.settings.max_image_mib << 20).await?;
    let img = crate::images::distribute(&st.ctx, spool.path()).await?;
    Ok(answer(StatusCode::CREATED, None, img))
}

/// `POST /v1/images/import` (system admins).
#[utoipa::path(post, path = "/v1/images/import", tag = "images", request_body = ImportImage,
    responses((status = 201, body = ClusterImage),
        (status = 400, description = "a path outside the hosts' image roots (field `path`)", body = ErrorBody),
        (status = 403, description = "not a system admin", body = ErrorBody)))]
pub async fn import_image(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiJson(b): ApiJson<ImportImage>,
) -> ApiResult<Response> {
    if !(c.is_cluster() && c.is_admin()) {
        return Err(ApiError::forbidden("only system admins import host paths").with_field("path"));
    }
    let img = crate::images::import(&st.ctx, &b.path).await?;
    Ok(answer(StatusCode::CREATED, None, img))
}

/// `GET /v1/images`.
#[utoipa::path(get, path = "/v1/images", tag = "images",
    responses((status = 200, body = ClusterImages)))]
pub async fn list_images(State(st): State<AppState>) -> ApiResult<Json<ClusterImages>> {
    Ok(Json(ClusterImages {
        images: crate::images::list(&st.ctx).await?,
    }))
}
