//! Making a VM disk from a base image: FICLONE (reflink, shares every block until
//! written) where the filesystem has it, else a sparse copy that copies only the
//! base's data extents (SEEK_DATA/SEEK_HOLE) so holes stay holes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use nova_hostd_api::CloneMethod;

/// FICLONE = _IOW(0x94, 9, int).
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Tries a reflink of `src` into the new, empty file `dst`.
fn reflink(src: &File, dst: &File) -> std::io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its argument and touches no memory of ours.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reflinks `src` into the new file `dst` (FICLONE only: fails where the filesystem
/// cannot share blocks, rather than copying).
pub fn reflink_file(src: &Path, dst: &Path) -> std::io::Result<()> {
    let s = File::open(src)?;
    let d = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)?;
    let r = reflink(&s, &d);
    if r.is_err() {
        let _ = std::fs::remove_file(dst);
    }
    r
}

/// The next data extent at or after `off`: (start, end), or None past the last one.
fn next_data(f: &File, off: u64, len: u64) -> std::io::Result<Option<(u64, u64)>> {
    if off >= len {
        return Ok(None);
    }
    // SAFETY: lseek on an fd we own; no memory involved.
    let start = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, libc::SEEK_DATA) };
    if start < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    // SAFETY: as above.
    let end = unsafe { libc::lseek(f.as_raw_fd(), start, libc::SEEK_HOLE) };
    if end < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Some((start as u64, (end as u64).min(len))))
}

/// Copies the data extents of `src` into `dst` (same length), skipping holes and
/// all-zero blocks.
pub fn sparse_copy(src: &mut File, dst: &mut File) -> std::io::Result<()> {
    let len = src.metadata()?.len();
    dst.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while let Some((start, end)) = next_data(src, off, len)? {
        src.seek(SeekFrom::Start(start))?;
        let mut pos = start;
        while pos < end {
            let n = ((end - pos) as usize).min(buf.len());
            src.read_exact(&mut buf[..n])?;
            // Zero 4 KiB blocks inside data extents are skipped too.
            for (i, block) in buf[..n].chunks(4096).enumerate() {
                if block.iter().any(|&b| b != 0) {
                    dst.seek(SeekFrom::Start(pos + (i * 4096) as u64))?;
                    dst.write_all(block)?;
                }
            }
            pos += n as u64;
        }
        off = end;
    }
    dst.sync_all()
}

/// Clones `src` to the new file `dst` (reflink, else sparse copy), then grows it to
/// `size` if that is larger. `allow_reflink = false` forces the copy.
pub fn clone_file(
    src: &Path,
    dst: &Path,
    size: Option<u64>,
    allow_reflink: bool,
) -> std::io::Result<CloneMethod> {
    let mut s = File::open(src)?;
    let mut d = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dst)?;
    let result = (|| {
        let method = match allow_reflink.then(|| reflink(&s, &d)) {
            Some(Ok(())) => CloneMethod::Reflink,
            Some(Err(e)) => {
                tracing::debug!(
                    "FICLONE {} -> {}: {e}; sparse copy instead",
                    src.display(),
                    dst.display()
                );
                sparse_copy(&mut s, &mut d)?;
                CloneMethod::SparseCopy
            }
            None => {
                sparse_copy(&mut s, &mut d)?;
                CloneMethod::SparseCopy
            }
        };
        if let Some(size) = size {
            if size > d.metadata()?.len() {
                d.set_len(size)?;
            }
        }
        Ok(method)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(dst);
    }
    result
}

/// Bytes allocated on disk for `path` (st_blocks x 512).
pub fn allocated_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_keeps_holes_and_data() {
        let dir = std::env::temp_dir().join(format!("hostd-clone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("base");
        let mut f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(10 << 20)).unwrap();
        f.write_all(&[7u8; 8192]).unwrap();
        f.write_all(&[0u8; 8192]).unwrap(); // explicit zeroes: skipped in the copy
        f.write_all(b"tail").unwrap();
        drop(f);
        let dst = dir.join("clone");
        let m = clone_file(&src, &dst, Some(128 << 20), false).unwrap();
        assert_eq!(m, CloneMethod::SparseCopy);
        let (a, b) = (std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert_eq!(b.len(), 128 << 20);
        assert_eq!(&a[..], &b[..a.len()]);
        assert!(
            allocated_bytes(&dst).unwrap() <= 64 << 10,
            "clone is not sparse"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
