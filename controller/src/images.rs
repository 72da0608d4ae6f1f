//! Images of the cluster: the hosts' content-addressed caches (`sha256:<hex>`) seen
//! as one. An upload is handed to every ready host; an admin's import asks every
//! ready host to import one of its own files (each confines the path to its
//! `--image-root`s). The controller keeps no image bytes: a VM names an image by id
//! and the host it lands on has it.

use std::collections::BTreeMap;
use std::path::Path;

use nova_hostd_api::{ImageImportRequest, ImageInfo};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{ClusterImage, Host, HostState};
use crate::store::Objects;

async fn ready_hosts(ctx: &Context) -> Result<Vec<Host>> {
    Ok(ctx
        .store
        .list_all::<Host>()
        .await?
        .into_iter()
        .filter(|h| h.state == HostState::Ready)
        .collect())
}

/// What every host answered: the image if they agree on it; the first refusal when
/// none took it (a bad field stays a bad field).
fn gather(
    answers: Vec<(String, std::result::Result<ImageInfo, nova_http::Error>)>,
) -> Result<ClusterImage> {
    let mut image: Option<ClusterImage> = None;
    let mut refusal = None;
    for (host, a) in answers {
        match a {
            Ok(info) => {
                let i = image.get_or_insert_with(|| ClusterImage {
                    id: info.id.clone(),
                    size_bytes: info.size_bytes,
                    hosts: vec![],
                });
                if i.id == info.id {
                    i.hosts.push(host);
                }
            }
            Err(e) => {
                tracing::warn!(host, "image: {e}");
                refusal.get_or_insert(e);
            }
        }
    }
    match (image, refusal) {
        (Some(i), _) => Ok(i),
        (None, Some(e)) => match e.body().and_then(|b| b.field.clone()) {
            Some(field) => Err(nova_http::FieldError::new(
                field,
                e.body().map(|b| b.error.clone()).unwrap_or_default(),
            )
            .into()),
            None => Err(e.into()),
        },
        (None, None) => Err(Error::conflict("no host is ready to take the image")),
    }
}

/// Hands the file at `file` (an upload, already size-checked) to every ready host.
pub async fn distribute(ctx: &Context, file: &Path) -> Result<ClusterImage> {
    let mut answers = vec![];
    for h in ready_hosts(ctx).await? {
        let a = ctx.hostd(&h)?.upload_image(file).await;
        answers.push((h.id, a));
    }
    gather(answers)
}

/// Asks every ready host to import host path `path` into its cache.
pub async fn import(ctx: &Context, path: &str) -> Result<ClusterImage> {
    let mut answers = vec![];
    for h in ready_hosts(ctx).await? {
        let rq = ImageImportRequest { path: path.into() };
        let a = ctx.hostd(&h)?.import_image(&rq).await;
        answers.push((h.id, a));
    }
    gather(answers)
}

/// Every image of every ready host's cache.
pub async fn list(ctx: &Context) -> Result<Vec<ClusterImage>> {
    let mut all: BTreeMap<String, ClusterImage> = BTreeMap::new();
    for h in ready_hosts(ctx).await? {
        let imgs = match ctx.hostd(&h)?.images().await {
            Ok(l) => l.images,
            Err(e) => {
                tracing::warn!(host = h.id, "listing images: {e}");
                continue;
            }
        };
        for i in imgs {
            all.entry(i.id.clone())
                .or_insert_with(|| ClusterImage {
                    id: i.id.clone(),
                    size_bytes: i.size_bytes,
                    hosts: vec![],
                })
                .hosts
                .push(h.id.clone());
        }
    }
    Ok(all.into_values().collect())
}
