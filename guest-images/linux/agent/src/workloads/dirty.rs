//! `dirty:<MiB>:<MiB/s|max>`: passes over an anonymous buffer writing the abi's
//! `dirty_words` at the start of each page and checking the previous pass's, at a
//! bounded rate, so a migration that loses a page is caught by the guest itself.

use super::FirstPass;
use crate::console;
use nova_guest_abi::{dirty_words, line, PAGE_SIZE};
use std::time::{Duration, Instant};

/// Pages written between rate checks (256 KiB).
const CHUNK_PAGES: u64 = 64;
/// Behind schedule by more than this (the VM was paused): rebase, do not burst.
const MAX_BEHIND: Duration = Duration::from_millis(100);

/// An anonymous private mapping, unmapped on drop.
struct Buffer {
    ptr: *mut u64,
    len: usize,
}

impl Buffer {
    fn new(len: usize) -> std::io::Result<Buffer> {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Buffer {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Checks page `p` holds generation `generation - 1` (unless it is the first),
    /// then writes `generation`; returns whether the check passed.
    fn visit(&mut self, p: u64, generation: u64) -> bool {
        assert!(
            (p as usize + 1) * PAGE_SIZE <= self.len,
            "page {p} outside the buffer"
        );
        // SAFETY: the assert keeps both words inside the mapping, which is 8-aligned
        // (page-aligned) and owned by this Buffer. Volatile: the pattern is read back
        // to see what the memory holds (after a migration), not what was last written.
        unsafe {
            let w = self.ptr.add(p as usize * PAGE_SIZE / 8);
            let ok = generation == 1 || {
                let old = dirty_words(p, generation - 1);
                w.read_volatile() == old[0] && w.add(1).read_volatile() == old[1]
            };
            let new = dirty_words(p, generation);
            w.write_volatile(new[0]);
            w.add(1).write_volatile(new[1]);
            ok
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping this Buffer owns.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

// SAFETY: the Buffer owns its mapping exclusively; moving it to another thread is fine.
unsafe impl Send for Buffer {}

/// Paces page writes to a rate, forgiving pauses instead of catching up.
struct Pacer {
    pages_per_s: Option<u64>,
    start: Instant,
    pages: u64,
}

impl Pacer {
    /// Waits until `n` more pages are allowed.
    fn admit(&mut self, n: u64) {
        let Some(rate) = self.pages_per_s else { return };
        let due =
            self.start + Duration::from_nanos(self.pages.saturating_mul(1_000_000_000) / rate);
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        } else if now - due > MAX_BEHIND {
            self.start = now;
            self.pages = 0;
        }
        self.pages += n;
    }
}

/// Dirties `mib` MiB forever at `rate_mib_s` (None: as fast as possible).
pub fn run(mib: u64, rate_mib_s: Option<u64>, mut first: FirstPass) {
    let pages = mib * (1 << 20) / PAGE_SIZE as u64;
    let mut buf = match Buffer::new((mib << 20) as usize) {
        Ok(b) => b,
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(0);
            return console::error("dirty_mmap", &format!(" mib={mib} errno={errno}"));
        }
    };
    let mut pacer = Pacer {
        pages_per_s: rate_mib_s.map(|r| r * (1 << 20) / PAGE_SIZE as u64),
        start: Instant::now(),
        pages: 0,
    };
    let mut errors: u64 = 0;
    for generation in 1.. {
        let mut p = 0;
        while p < pages {
            let n = CHUNK_PAGES.min(pages - p);
            pacer.admit(n);
            for page in p..p + n {
                if !buf.visit(page, generation) {
                    errors += 1;
                }
            }
            p += n;
        }
        console::line(&format!(
            "{} pass={generation} pages={pages} errors={errors}",
            line::DIRTY
        ));
        first.passed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_left_behind_a_generation_is_an_error() {
        let mut buf = Buffer::new(4 * PAGE_SIZE).unwrap();
        for p in 0..4 {
            assert!(buf.visit(p, 1));
        }
        for p in 0..3 {
            assert!(buf.visit(p, 2));
        }
        // Page 3 still holds generation 1, so generation 3 finds it stale.
        assert!(buf.visit(0, 3));
        assert!(!buf.visit(3, 3));
    }
}
