//! Owns finding a source file's holes (SEEK_DATA / SEEK_HOLE), so that a backup with
//! fixed chunks records the holes of a sparse disk without reading their zeros.

use std::fs::File;
use std::os::fd::AsRawFd;

fn seek(f: &File, off: u64, whence: libc::c_int) -> std::io::Result<Option<u64>> {
    // SAFETY: lseek on an fd `f` keeps open; no memory involved. The file offset it
    // moves is never used: every read is positional.
    let at = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, whence) };
    if at < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(at as u64))
}

/// The data extent at or after `off`: `(start, end)` of the next data, `None` past the
/// last data. Without SEEK_DATA support (a block device, an old filesystem) the whole
/// rest of the file is data.
pub fn next_data(f: &File, off: u64, len: u64) -> std::io::Result<Option<(u64, u64)>> {
    let start = match seek(f, off, libc::SEEK_DATA) {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(None),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
            ) =>
        {
            return Ok(Some((off, len)))
        }
        Err(e) => return Err(e),
    };
    let end = seek(f, start, libc::SEEK_HOLE)?.unwrap_or(len);
    Ok(Some((start.min(len), end.min(len))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn data_extents_of_a_sparse_file_are_found_and_holes_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let f = File::create(&p).unwrap();
        let mib = 1u64 << 20;
        f.set_len(64 * mib).unwrap();
        f.write_all_at(b"x", 20 * mib).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&p).unwrap();
        let (s, e) = next_data(&f, 0, 64 * mib).unwrap().unwrap();
        assert!(s <= 20 * mib && e > 20 * mib && s >= 16 * mib, "{s} {e}");
        assert_eq!(next_data(&f, 40 * mib, 64 * mib).unwrap(), None);
    }
}
