//! Finding the parts of guest RAM that hold data: a memfd's holes are pages the
//! guest never touched, so `SEEK_DATA`/`SEEK_HOLE` skip them without reading.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use crate::memory::PAGE_SIZE;
use crate::vm::Vm;

/// The `[start, end)` byte ranges of `file` that hold data (not holes).
pub fn data_ranges(file: &File) -> std::io::Result<Vec<(u64, u64)>> {
    let len = file.metadata()?.len();
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on an owned, open descriptor.
        let start = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if start < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // no data past pos
            }
            return Err(e);
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        if end < 0 {
            return Err(std::io::Error::last_os_error());
        }
        out.push((start as u64, end as u64));
        pos = end;
    }
    Ok(out)
}

/// Pages of guest RAM the guest (or the VMM) ever touched.
pub fn touched_pages(vm: &Vm) -> std::io::Result<Vec<usize>> {
    let ranges = match vm.memfd() {
        Some(memfd) => data_ranges(memfd)?,
        // RAM mapped from a snapshot file: any page may differ from zero.
        None => vec![(0, vm.config.mem_mib << 20)],
    };
    Ok(ranges
        .into_iter()
        .flat_map(|(s, e)| (s as usize / PAGE_SIZE)..(e as usize).div_ceil(PAGE_SIZE))
        .collect())
}

/// Copies the data ranges of `src` to the same offsets of `dst`.
pub fn copy_data(src: &File, dst: &File) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    for (start, end) in data_ranges(src)? {
        let mut off = start;
        while off < end {
            let n = ((end - off) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], off)?;
            dst.write_all_at(&buf[..n], off)?;
            off += n as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_skipped_and_data_found() {
        let f = crate::memory::create_memfd(64).unwrap();
        f.write_all_at(&[1u8; 4096], 0x10_0000).unwrap();
        f.write_all_at(&[2u8; 8192], 0x20_0000).unwrap();
        let r = data_ranges(&f).unwrap();
        assert_eq!(r, vec![(0x10_0000, 0x10_1000), (0x20_0000, 0x20_2000)]);
        let g = crate::memory::create_memfd(64).unwrap();
        copy_data(&f, &g).unwrap();
        let mut b = [0u8; 2];
        g.read_exact_at(&mut b, 0x20_1fff).unwrap();
        assert_eq!(b[0], 2);
        assert_eq!(data_ranges(&g).unwrap(), r);
    }
}
