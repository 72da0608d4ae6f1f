//! userfaultfd, the few ioctls we use: register guest RAM for missing-page faults,
//! read fault events, and resolve them by copying or zero-filling a page. Serves lazy
//! snapshot restore and post-copy migration.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};

const UFFD_API: u64 = 0xaa;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}
#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}
#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}
#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}
#[repr(C)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

const fn iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (0xaa << 8) | nr
}
const UFFDIO_API: u64 = iowr(0x3f, std::mem::size_of::<UffdioApi>());
const UFFDIO_REGISTER: u64 = iowr(0x00, std::mem::size_of::<UffdioRegister>());
const UFFDIO_COPY: u64 = iowr(0x03, std::mem::size_of::<UffdioCopy>());
const UFFDIO_ZEROPAGE: u64 = iowr(0x04, std::mem::size_of::<UffdioZeropage>());

/// A userfaultfd.
pub struct Uffd {
    file: File,
}

/// `USERFAULTFD_IOC_NEW`: `_IO(0xAA, 0x00)` on `/dev/userfaultfd`.
const USERFAULTFD_IOC_NEW: u64 = 0xAA00;

/// `/dev/userfaultfd`, opened at start ([`open_device`]) so that the threads that
/// make userfaultfds later (migration, restore) need not open files.
static DEVICE: std::sync::OnceLock<Option<File>> = std::sync::OnceLock::new();

/// Opens `/dev/userfaultfd` now, if the host (or the jail) has it: call on the main
/// thread before other threads start.
pub fn open_device() {
    DEVICE.get_or_init(|| File::open("/dev/userfaultfd").ok());
}

/// A userfaultfd from `/dev/userfaultfd` (its file mode decides who may have one).
fn from_device() -> std::io::Result<i32> {
    let opened;
    let dev = match DEVICE.get() {
        Some(Some(f)) => f,
        _ => {
            opened = File::open("/dev/userfaultfd")?;
            &opened
        }
    };
    // SAFETY: USERFAULTFD_IOC_NEW takes its flags by value and returns a new fd.
    let fd = unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW as _, libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// A missing-page fault at a host address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub addr: u64,
}

impl Uffd {
    /// Opens a userfaultfd (blocking reads) and negotiates the API. An unprivileged
    /// VMM (hostd's jail) is refused the syscall where `vm.unprivileged_userfaultfd`
    /// is 0, as on most distributions; it then asks `/dev/userfaultfd`, which its
    /// jail gives it (Linux 6.1+), for one that also reports KVM's faults.
    pub fn new() -> std::io::Result<Uffd> {
        // SAFETY: plain syscall; the result is checked.
        let mut fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) } as i32;
        if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
            fd = from_device()?;
        }
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, owned descriptor.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: 0,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API takes a pointer to a live uffdio_api.
        if unsafe { libc::ioctl(file.as_raw_fd(), UFFDIO_API as _, &mut api) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Uffd { file })
    }

    /// Reports missing-page faults in `[start, start+len)` (host addresses).
    pub fn register(&self, start: u64, len: u64) -> std::io::Result<()> {
        let mut reg = UffdioRegister {
            range: UffdioRange { start, len },
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER takes a pointer to a live uffdio_register.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), UFFDIO_REGISTER as _, &mut reg) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Blocks for the next page fault; None for other events.
    pub fn next_fault(&self) -> std::io::Result<Option<Fault>> {
        let mut msg = [0u8; 32];
        (&self.file).read_exact(&mut msg)?;
        if msg[0] != UFFD_EVENT_PAGEFAULT {
            return Ok(None);
        }
        Ok(Some(Fault {
            addr: u64::from_le_bytes(msg[16..24].try_into().unwrap()),
        }))
    }

    /// Fills the page at `dst` (page-aligned host address) with `data` and wakes the
    /// faulting threads. A page already present is not an error.
    pub fn copy(&self, dst: u64, data: &[u8]) -> std::io::Result<()> {
        let mut c = UffdioCopy {
            dst,
            src: data.as_ptr() as u64,
            len: data.len() as u64,
            mode: 0,
            copy: 0,
        };
        // SAFETY: src points to `len` readable bytes; dst lies in a registered range.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), UFFDIO_COPY as _, &mut c) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Maps a zero page at `dst` and wakes the faulting threads.
    pub fn zero(&self, dst: u64, len: u64) -> std::io::Result<()> {
        let mut z = UffdioZeropage {
            range: UffdioRange { start: dst, len },
            mode: 0,
            zeropage: 0,
        };
        // SAFETY: UFFDIO_ZEROPAGE takes a pointer to a live uffdio_zeropage.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), UFFDIO_ZEROPAGE as _, &mut z) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The descriptor, for poll.
    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_on_registered_memfd_memory_is_served_by_copy() {
        let Ok(uffd) = Uffd::new() else {
            assert!(
                !crate::test_support::strict(),
                "userfaultfd unavailable under NOVA_REQUIRE_KVM=1"
            );
            eprintln!("*** SKIPPED: userfaultfd unavailable ***");
            return;
        };
        let fd = crate::memory::create_memfd(64).unwrap();
        let mem = crate::memory::map_memfd(&fd, 64 << 20).unwrap();
        use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
        let host = mem.iter().next().unwrap().as_ptr() as u64;
        uffd.register(host, 64 << 20).unwrap();
        let served = std::thread::scope(|s| {
            let server = s.spawn(|| {
                let f = uffd.next_fault().unwrap().unwrap();
                let page = f.addr & !0xfff;
                uffd.copy(page, &[0x5a; 4096]).unwrap();
                page - host
            });
            let v: u8 = mem.read_obj(GuestAddress(0x3000 + 7)).unwrap();
            assert_eq!(v, 0x5a);
            server.join().unwrap()
        });
        assert_eq!(served, 0x3000);
    }
}
