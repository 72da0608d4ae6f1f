//! Owns the S3-compatible backend: the [`Backend`] contract over the `object_store`
//! crate's Amazon S3 client (any S3 API: AWS, MinIO, Ceph RGW, moto), run on a private
//! tokio runtime so callers stay synchronous.

use crate::backend::{validate_key, Backend, ObjectInfo};
use crate::error::{BackupError, Result};
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutPayload};
use std::time::SystemTime;

/// Where and how to reach an S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`; `None` for AWS itself.
    pub endpoint: Option<String>,
    /// Bucket name (must exist).
    pub bucket: String,
    /// Region (any value for most non-AWS servers).
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Allow plain HTTP endpoints (test servers, private networks).
    pub allow_http: bool,
}

/// A backup store in an S3 bucket.
#[derive(Debug)]
pub struct S3Backend {
    store: AmazonS3,
    rt: tokio::runtime::Runtime,
}

fn s3_err(key: &str, e: object_store::Error) -> BackupError {
    match e {
        object_store::Error::NotFound { .. } => BackupError::NotFound(key.to_string()),
        other => BackupError::ObjectStore(format!("{key}: {other}")),
    }
}

impl S3Backend {
    /// Builds the client; nothing is contacted until the first request.
    pub fn new(cfg: &S3Config) -> Result<Self> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_access_key_id(&cfg.access_key_id)
            .with_secret_access_key(&cfg.secret_access_key)
            .with_allow_http(cfg.allow_http);
        if let Some(ep) = &cfg.endpoint {
            b = b.with_endpoint(ep).with_virtual_hosted_style_request(false);
        }
        let store = b.build().map_err(|e| {
            BackupError::ObjectStore(format!("configuring bucket {}: {e}", cfg.bucket))
        })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BackupError::io("starting the S3 client runtime", e))?;
        Ok(S3Backend { store, rt })
    }

    fn path(key: &str) -> Result<ObjPath> {
        validate_key(key)?;
        Ok(ObjPath::from(key))
    }
}

impl Backend for S3Backend {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let p = Self::path(key)?;
        let payload = PutPayload::from(bytes::Bytes::copy_from_slice(data));
        self.rt
            .block_on(self.store.put(&p, payload))
            .map_err(|e| s3_err(key, e))?;
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let p = Self::path(key)?;
        self.rt.block_on(async {
            let r = self.store.get(&p).await.map_err(|e| s3_err(key, e))?;
            r.bytes()
                .await
                .map(|b| b.to_vec())
                .map_err(|e| s3_err(key, e))
        })
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let p = Self::path(key)?;
        match self.rt.block_on(self.store.head(&p)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(s3_err(key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let base = prefix.trim_end_matches('/');
        let p = Self::path(base)?;
        self.rt.block_on(async {
            let mut stream = self.store.list(Some(&p));
            let mut out = Vec::new();
            while let Some(meta) = stream.next().await {
                let meta = meta.map_err(|e| s3_err(prefix, e))?;
                let key = meta.location.to_string();
                if validate_key(&key).is_ok() {
                    out.push(ObjectInfo {
                        key,
                        size: meta.size,
                        modified: SystemTime::from(meta.last_modified),
                    });
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        let p = Self::path(key)?;
        match self.rt.block_on(self.store.delete(&p)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_err(key, e)),
        }
    }

    fn touch(&self, key: &str) -> Result<()> {
        // S3 refuses to copy an object onto itself unchanged: copy it aside and rename it
        // back, both server-side, so the key always exists and gets a new LastModified.
        let p = Self::path(key)?;
        let aside = Self::path(&format!("{key}.touch"))?;
        self.rt.block_on(async {
            self.store
                .copy(&p, &aside)
                .await
                .map_err(|e| s3_err(key, e))?;
            self.store
                .rename(&aside, &p)
                .await
                .map_err(|e| s3_err(key, e))
        })
    }
}
