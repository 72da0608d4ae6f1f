//! Owns the storage backend contract (put/get/list/delete of named objects) and the
//! directory backend: atomic writes (temp + fsync + rename), 0600 files, every key
//! validated and confined under the root before it becomes a path.

use crate::error::{BackupError, Result};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// One stored object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key, e.g. `chunks/ab12/ab12…`.
    pub key: String,
    /// Stored size in bytes.
    pub size: u64,
    /// Last modification (GC's grace period is measured from it).
    pub modified: SystemTime,
}

/// Where chunks and manifests live. Keys are `/`-separated `[a-z0-9._-]` segments.
pub trait Backend: Send + Sync {
    /// Stores `data` under `key`, atomically replacing any previous object.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Reads an object; [`BackupError::NotFound`] if absent.
    fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// Whether an object exists.
    fn exists(&self, key: &str) -> Result<bool>;
    /// Lists objects whose key starts with `prefix` (a directory-like prefix ending in `/`).
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Deletes an object; deleting an absent object is not an error.
    fn delete(&self, key: &str) -> Result<()>;
    /// Sets an object's modification time to now, so GC's grace period protects a chunk
    /// a running backup reuses but has not yet referenced from a stored manifest.
    fn touch(&self, key: &str) -> Result<()>;
}

/// Refuses keys that could escape the root or name something unexpected.
pub fn validate_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(BackupError::InvalidKey(key.chars().take(140).collect()))
    }
}

/// A backup store in a directory (local, or on a path the hosts share).
#[derive(Debug)]
pub struct DirBackend {
    root: PathBuf,
    tmp_seq: AtomicU64,
}

impl DirBackend {
    /// Opens (creating with mode 0700 if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)
            .map_err(|e| BackupError::io(format!("creating {}", root.display()), e))?;
        let root = root
            .canonicalize()
            .map_err(|e| BackupError::io(format!("resolving {}", root.display()), e))?;
        Ok(DirBackend {
            root,
            tmp_seq: AtomicU64::new(0),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The key's path, refused if a symlink planted in the store would lead outside the root.
    fn path(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        let path = self.root.join(key);
        let escapes = |p: &Path| p.canonicalize().is_ok_and(|c| !c.starts_with(&self.root));
        let is_link = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        if is_link || path.parent().is_some_and(escapes) {
            return Err(BackupError::InvalidKey(format!(
                "{key} (a symlink leads outside the store)"
            )));
        }
        Ok(path)
    }
}

fn create_dirs(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| BackupError::io(format!("creating {}", dir.display()), e))
}

use std::os::unix::fs::DirBuilderExt;

impl Backend for DirBackend {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        create_dirs(&dir)?;
        // Checked again now that the directories exist.
        let path = self.path(key)?;
        // Hosts sharing the store may have equal pids: a random part keeps temp names apart.
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let mut salt = [0u8; 8];
        getrandom::getrandom(&mut salt).map_err(|e| {
            BackupError::io("reading random bytes", std::io::Error::other(e.to_string()))
        })?;
        let tmp = dir.join(format!(
            ".tmp-{}-{seq}-{}",
            std::process::id(),
            hex::encode(salt)
        ));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            BackupError::io(format!("writing {}", path.display()), e)
        })
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path(key)?;
        fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BackupError::NotFound(key.to_string()),
            _ => BackupError::io(format!("reading {}", path.display()), e),
        })
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key)?;
        Ok(path.is_file())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let base = prefix.trim_end_matches('/');
        validate_key(base)?;
        let mut out = Vec::new();
        let mut stack = vec![(self.root.join(base), base.to_string())];
        while let Some((dir, key)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(BackupError::io(format!("listing {}", dir.display()), e)),
            };
            for entry in entries {
                let entry =
                    entry.map_err(|e| BackupError::io(format!("listing {}", dir.display()), e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(".tmp-") {
                    continue;
                }
                let meta = entry
                    .metadata()
                    .map_err(|e| BackupError::io(format!("stat {name}"), e))?;
                let child = format!("{key}/{name}");
                if meta.is_dir() {
                    stack.push((entry.path(), child));
                } else if meta.is_file() && validate_key(&child).is_ok() {
                    out.push(ObjectInfo {
                        key: child,
                        size: meta.len(),
                        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(BackupError::io(format!("deleting {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }

    fn touch(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => BackupError::NotFound(key.to_string()),
                _ => BackupError::io(format!("opening {}", path.display()), e),
            })?;
        f.set_modified(SystemTime::now())
            .map_err(|e| BackupError::io(format!("touching {}", path.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_that_escape_the_root_are_refused() {
        for k in ["../x", "a/../../x", "/etc/passwd", "a//b", "A", "a/./b", ""] {
            assert!(validate_key(k).is_err(), "{k:?}");
        }
        validate_key("chunks/ab/abcdef").unwrap();
    }

    #[test]
    fn directory_objects_are_private_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let b = DirBackend::open(dir.path()).unwrap();
        b.put("chunks/ab/x1", b"hello").unwrap();
        let mode = fs::metadata(dir.path().join("chunks/ab/x1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(b.get("chunks/ab/x1").unwrap(), b"hello");
        assert_eq!(b.list("chunks/").unwrap()[0].key, "chunks/ab/x1");
        b.delete("chunks/ab/x1").unwrap();
        assert!(matches!(
            b.get("chunks/ab/x1"),
            Err(BackupError::NotFound(_))
        ));
        assert!(b.get("../../etc/passwd").is_err());
    }

    #[test]
    fn symlinks_planted_in_the_store_cannot_lead_outside_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let b = DirBackend::open(dir.path().join("store")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("store/chunks")).unwrap();
        let err = b.put("chunks/secret", b"x").unwrap_err();
        assert!(matches!(err, BackupError::InvalidKey(_)), "{err}");
        assert!(b.get("chunks/secret").is_err());
        assert_eq!(std::fs::read(outside.path().join("secret")).unwrap(), b"s");
        std::fs::create_dir(dir.path().join("store/manifests")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            dir.path().join("store/manifests/x.json"),
        )
        .unwrap();
        assert!(matches!(
            b.get("manifests/x.json"),
            Err(BackupError::InvalidKey(_))
        ));
    }
}
