//! nova-durable: crash-safe replacement of small files. A write goes to a temp file
//! with a unique name beside the target (so concurrent writers never share one), is
//! fsync'd, renamed over the target, and the directory is fsync'd so the rename
//! itself survives a power cut. It owns nothing else: no formats, no locking.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of secrets (tokens, credentials, databases): the owner only.
pub const SECRET: u32 = 0o600;
/// Mode of ordinary state files.
pub const STATE: u32 = 0o644;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A temp file name beside `path` no other writer (thread or process) uses.
fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    path.with_file_name(format!(
        ".{name}.{}.{seq}.{nanos:08x}.tmp",
        std::process::id()
    ))
}

/// fsyncs directory `dir` (after a rename or create in it).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// [`write`] without the fsyncs: the old content or the new, never a mix, when the
/// writing process crashes (the page cache survives it); after a power cut the new
/// content may be missing until [`sync`] has returned. For records whose durability
/// can wait (a state that another durable one already stands for), or that are made
/// durable later, off a latency-critical path, by [`sync`].
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = temp_beside(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes what [`replace`] (or any write) left at `path` durable: fsyncs the file,
/// then its directory (the rename that put it there).
pub fn sync(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()?;
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => sync_dir(d),
        _ => sync_dir(Path::new(".")),
    }
}

/// Replaces `path` with `bytes`, created with `mode` (and set to it, whatever the
/// umask): the old content or the new, never a mix, after a crash.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = temp_beside(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have taken bits away; a secret must not have gained any.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write`] with mode 0600, creating the parent directory when missing.
pub fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        if !d.as_os_str().is_empty() {
            std::fs::create_dir_all(d)?;
        }
    }
    write(path, bytes, SECRET)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "nova-durable-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_write_replaces_the_file_and_leaves_no_temp_file() {
        let d = dir();
        let p = d.join("vm.json");
        write(&p, b"old", STATE).unwrap();
        write(&p, b"new", STATE).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "only the file itself: {names:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_secret_is_0600_even_over_a_world_readable_file() {
        let d = dir();
        let p = d.join("token");
        std::fs::write(&p, b"x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_secret(&p, b"secret").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn concurrent_writers_never_share_a_temp_file() {
        let d = dir();
        let p = d.join("state");
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        write(&p, format!("writer {i}").as_bytes(), STATE).unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.starts_with("writer "), "a whole write: {s:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }
    #[test]
    fn a_replace_is_whole_with_its_mode_and_sync_makes_it_durable() {
        let d = dir();
        let p = d.join("vm.json");
        replace(&p, b"old", SECRET).unwrap();
        replace(&p, b"new", SECRET).unwrap();
        sync(&p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "only the file itself: {names:?}");
        assert!(sync(&d.join("missing")).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
