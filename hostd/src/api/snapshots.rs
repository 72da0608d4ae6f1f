//! The snapshot store's routes: take, list, read, delete a stored snapshot, serve its
//! files to a peer hostd, and fetch one from a peer.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use nova_hostd_api::{
    is_snapshot_file, ErrorBody, FetchSnapshot, FieldError, StoredSnapshot, StoredSnapshotList,
    TakeSnapshot,
};

use crate::api::error::{ApiResult, JsonBody};
use crate::host::Host;

type S = State<Arc<Host>>;

/// Pauses the VM, snapshots its memory, devices and writable disks (reflinks), resumes.
#[utoipa::path(post, path = "/v1/snapshots", tag = "snapshots", request_body = TakeSnapshot,
    responses((status = 201, body = StoredSnapshot), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "not running, the id is taken, or the data dir has no reflink for its disks"),
        (status = 502, body = ErrorBody)))]
pub async fn take(
    State(h): S,
    JsonBody(req): JsonBody<TakeSnapshot>,
) -> ApiResult<(StatusCode, Json<StoredSnapshot>)> {
    Ok((StatusCode::CREATED, Json(h.vms.take_stored(req).await?)))
}

/// Every stored snapshot on this host.
#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots",
    responses((status = 200, body = StoredSnapshotList)))]
pub async fn list(State(h): S) -> Json<StoredSnapshotList> {
    Json(h.vms.stored_all())
}

/// One stored snapshot.
#[utoipa::path(get, path = "/v1/snapshots/{id}", tag = "snapshots",
    params(("id" = String, Path, description = "stored snapshot id")),
    responses((status = 200, body = StoredSnapshot), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get(State(h): S, Path(id): Path<String>) -> ApiResult<Json<StoredSnapshot>> {
    Ok(Json(h.vms.stored(&id)?))
}

/// Removes a stored snapshot.
#[utoipa::path(delete, path = "/v1/snapshots/{id}", tag = "snapshots",
    params(("id" = String, Path, description = "stored snapshot id")),
    responses((status = 204, description = "deleted"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete(State(h): S, Path(id): Path<String>) -> ApiResult<StatusCode> {
    h.vms.delete_stored(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// One file of a stored snapshot (`state`, `memory`, `disk<N>.raw`, `snapshot.json`),
/// streamed, for a peer hostd's fetch.
#[utoipa::path(get, path = "/v1/snapshots/{id}/files/{file}", tag = "snapshots",
    params(("id" = String, Path, description = "stored snapshot id"),
        ("file" = String, Path, description = "state, memory, disk<N>.raw or snapshot.json")),
    responses((status = 200, description = "the file's bytes", content_type = "application/octet-stream"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn file(State(h): S, Path((id, file)): Path<(String, String)>) -> ApiResult<Response> {
    if !is_snapshot_file(&file) {
        return Err(FieldError::new("file", "not a file of a stored snapshot").into());
    }
    h.vms.stored(&id)?;
    let path = h.vms.store_dir().join(&id).join(&file);
    let f = tokio::fs::File::open(&path)
        .await
        .map_err(|_| crate::error::Error::NotFound(format!("snapshot '{id}' has no {file}")))?;
    let len = f
        .metadata()
        .await
        .map_err(|e| crate::error::Error::io(format!("reading {}", path.display()), e))?
        .len();
    let stream = futures_util::stream::unfold(f, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Copies a stored snapshot from another hostd into this host's store.
#[utoipa::path(post, path = "/v1/snapshots/{id}/fetch", tag = "snapshots", request_body = FetchSnapshot,
    params(("id" = String, Path, description = "stored snapshot id")),
    responses((status = 200, body = StoredSnapshot), (status = 400, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "the peer refused or failed")))]
pub async fn fetch(
    State(h): S,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<FetchSnapshot>,
) -> ApiResult<Json<StoredSnapshot>> {
    Ok(Json(h.vms.fetch_stored(&id, req).await?))
}
