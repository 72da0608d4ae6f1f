//! The content-addressed image cache under `DATA/images/`: kernels, initrds and disk
//! images stored as `sha256-<hex>` (read-only), imported from a host path or uploaded.
//! VM disks are clones of these (see [`clone`]). A host path is confined: only a
//! regular file under one of the allowed image roots (`--image-root`, symlinks
//! resolved first) is read; without roots no host path is.

pub mod clone;

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use nova_hostd_api::{validate_image_ref, FieldError, ImageInfo};

/// The cache directory.
#[derive(Debug, Clone)]
pub struct ImageCache {
    dir: PathBuf,
    /// Canonical directories host paths may be under.
    roots: Vec<PathBuf>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ImageCache {
    pub fn new(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(dir.join("tmp")).ctx(|| format!("creating {}", dir.display()))?;
        Ok(ImageCache {
            dir,
            roots: Vec::new(),
        })
    }

    /// This cache, reading host paths only under `roots` (canonicalized here: a root
    /// that does not exist is an error).
    pub fn confined_to(mut self, roots: &[PathBuf]) -> std::io::Result<Self> {
        self.roots = roots
            .iter()
            .map(|r| {
                r.canonicalize().map_err(|e| {
                    std::io::Error::new(e.kind(), format!("--image-root {}: {e}", r.display()))
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(self)
    }

    /// The canonical form of host path `src` if it is under an allowed root; else the
    /// refusal, naming `field`.
    fn confine(&self, field: &str, src: &str) -> Result<PathBuf> {
        let outside = || {
            let roots = if self.roots.is_empty() {
                "none are allowed on this host (no --image-root)".to_string()
            } else {
                format!(
                    "allowed roots: {}",
                    self.roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            Error::from(FieldError::new(
                field,
                format!("{src} is not under an allowed image root ({roots}); use a sha256: image"),
            ))
        };
        if self.roots.is_empty() {
            return Err(outside());
        }
        let real = match Path::new(src).canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("image file {src} does not exist")))
            }
            Err(_) => return Err(outside()),
        };
        // hostd's own files (VM disks of every tenant, tokens) never, whatever the roots.
        let data_dir = self.dir.parent().and_then(|d| d.canonicalize().ok());
        if data_dir.is_some_and(|d| real.starts_with(d)) {
            return Err(Error::from(FieldError::new(
                field,
                format!("{src} is in hostd's data directory: never usable as an image"),
            )));
        }
        if self.roots.iter().any(|r| real.starts_with(r)) {
            Ok(real)
        } else {
            Err(outside())
        }
    }

    /// A shared disk's file (`shared_path`, named by `field`): its canonical path and
    /// size, when it is a regular file under an allowed root and outside hostd's data
    /// directory (as for an image path).
    pub fn shared_disk(&self, field: &str, src: &str) -> Result<(PathBuf, u64)> {
        let real = self.confine(field, src).map_err(|e| match e {
            Error::NotFound(_) => FieldError::new(field, format!("{src} does not exist")).into(),
            e => e,
        })?;
        let meta = std::fs::metadata(&real).ctx(|| format!("shared disk {}", real.display()))?;
        if !meta.is_file() {
            return Err(FieldError::new(field, format!("{src} is not a regular file")).into());
        }
        Ok((real, meta.len()))
    }

    /// The file of image `id` (`sha256:<hex>`), whether present or not.
    pub fn path_of(&self, id: &str) -> Option<PathBuf> {
        let hex = id.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join(format!("sha256-{hex}")))
    }

    fn info(&self, id: String, path: &Path) -> Result<ImageInfo> {
        let meta = std::fs::metadata(path).ctx(|| format!("image {}", path.display()))?;
        Ok(ImageInfo {
            id,
            size_bytes: meta.len(),
            allocated_bytes: clone::allocated_bytes(path).unwrap_or(0),
        })
    }

    /// Every image in the cache.
    pub fn list(&self) -> Result<Vec<ImageInfo>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)
            .ctx(|| format!("reading {}", self.dir.display()))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(hex) = name.strip_prefix("sha256-") {
                out.push(self.info(format!("sha256:{hex}"), &e.path())?);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// One image.
    pub fn get(&self, id: &str) -> Result<ImageInfo> {
        let path = self
            .path_of(id)
            .ok_or_else(|| Error::NotFound(format!("image {id}: not a sha256: id")))?;
        if !path.exists() {
            return Err(Error::NotFound(format!(
                "image {id} is not in this host's cache"
            )));
        }
        self.info(id.to_string(), &path)
    }

    /// Stores a finished temp file under its digest (keeping an existing copy).
    fn commit(&self, tmp: &Path, digest: &[u8]) -> Result<ImageInfo> {
        let id = format!("sha256:{}", hex(digest));
        let path = self.dir.join(format!("sha256-{}", hex(digest)));
        if path.exists() {
            let _ = std::fs::remove_file(tmp);
        } else {
            let mut perms = std::fs::metadata(tmp)
                .ctx(|| "image temp file".into())?
                .permissions();
            perms.set_readonly(true);
            let _ = std::fs::set_permissions(tmp, perms);
            std::fs::rename(tmp, &path).ctx(|| format!("storing {}", path.display()))?;
        }
        self.info(id, &path)
    }

    fn tmp_path(&self) -> PathBuf {
        self.dir
            .join("tmp")
            .join(format!("{:016x}", rand::random::<u64>()))
    }

    /// Imports a host file under an allowed root: sparse-copied into the cache, named
    /// by its digest; `field` names the request field in a refusal.
    pub fn import_path(&self, field: &str, src: &str) -> Result<ImageInfo> {
        validate_image_ref(field, src)?;
        if src.starts_with("sha256:") {
            return self.get(src);
        }
        let real = self.confine(field, src)?;
        let src_path = real.clone();
        let src = &*real.to_string_lossy();
        let mut f = File::open(&src_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(format!("image file {src} does not exist"))
            } else {
                Error::io(format!("opening {src}"), e)
            }
        })?;
        if !f.metadata().ctx(|| src.to_string())?.is_file() {
            return Err(FieldError::new(field, format!("{src} is not a regular file")).into());
        }
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).ctx(|| format!("reading {src}"))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let digest = h.finalize();
        let id = format!("sha256:{}", hex(&digest));
        if let Ok(info) = self.get(&id) {
            return Ok(info);
        }
        let tmp = self.tmp_path();
        clone::clone_file(&src_path, &tmp, None, true)
            .ctx(|| format!("copying {src} into the image cache"))?;
        self.commit(&tmp, &digest)
    }

    /// Starts an upload: a writer that hashes what it stores, zero blocks as holes.
    pub fn upload(&self) -> Result<Upload> {
        let path = self.tmp_path();
        let file = File::create(&path).ctx(|| format!("creating {}", path.display()))?;
        Ok(Upload {
            path,
            file,
            hash: Sha256::new(),
            len: 0,
            cache: self.clone(),
        })
    }

    /// Resolves a spec's image reference to a cached image, importing host paths.
    pub fn resolve(&self, field: &str, r: &str) -> Result<(ImageInfo, PathBuf)> {
        validate_image_ref(field, r)?;
        let info = if r.starts_with("sha256:") {
            self.get(r).map_err(|e| match e {
                Error::NotFound(m) => Error::from(FieldError::new(field, m)),
                e => e,
            })?
        } else {
            self.import_path(field, r).map_err(|e| match e {
                Error::NotFound(m) => Error::from(FieldError::new(field, m)),
                e => e,
            })?
        };
        let path = self.path_of(&info.id).unwrap_or_default();
        Ok((info, path))
    }
}

/// An image being uploaded.
pub struct Upload {
    path: PathBuf,
    file: File,
    hash: Sha256,
    len: u64,
    cache: ImageCache,
}

impl Upload {
    /// Appends a chunk.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        use std::io::{Seek, SeekFrom};
        self.hash.update(chunk);
        if chunk.iter().any(|&b| b != 0) {
            self.file
                .seek(SeekFrom::Start(self.len))
                .ctx(|| "upload".into())?;
            self.file.write_all(chunk).ctx(|| "writing upload".into())?;
        }
        self.len += chunk.len() as u64;
        Ok(())
    }

    /// Finishes: the image's id.
    pub fn finish(mut self) -> Result<ImageInfo> {
        self.file.set_len(self.len).ctx(|| "upload".into())?;
        self.file.sync_all().ctx(|| "upload".into())?;
        let digest = std::mem::take(&mut self.hash).finalize();
        self.cache.commit(&self.path, &digest)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // Gone after a commit; an abandoned upload leaves nothing behind.
        let _ = std::fs::remove_file(&self.path);
    }
}
