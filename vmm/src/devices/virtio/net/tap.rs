//! An existing tap interface opened through /dev/net/tun: non-blocking, a 12-byte
//! virtio-net header on every frame, no offloads.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// Why a network interface cannot be attached.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("tap {tap}: {reason}")]
    Tap { tap: String, reason: String },
}

/// Length of the virtio-net header (`virtio_net_hdr_v1`) on every frame.
pub const VNET_HDR_LEN: usize = 12;

/// A tap interface attached to this process.
pub(crate) struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to the tap `name`, which must exist (hostd or the operator creates it).
    pub fn open(name: &str) -> Result<Self, NetError> {
        let err = |reason: String| NetError::Tap {
            tap: name.to_string(),
            reason,
        };
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('/') {
            return Err(err("not a valid interface name".into()));
        }
        // Refuse to create a tap (TUNSETIFF would) or to take a tun (layer 3) device.
        match std::fs::read_to_string(format!("/sys/class/net/{name}/tun_flags")) {
            Ok(flags) => {
                let flags =
                    i64::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
                if flags & i64::from(libc::IFF_TAP) == 0 {
                    return Err(err("is a tun (layer 3) device, not a tap".into()));
                }
            }
            Err(_) if std::path::Path::new("/sys/class/net").exists() => {
                return Err(err("no such tap interface".into()));
            }
            // In hostd's jail there is no /sys: the interface must exist (and, the
            // VMM being unprivileged there, TUNSETIFF cannot create one anyway).
            Err(_) => {
                let c = std::ffi::CString::new(name)
                    .map_err(|_| err("not a valid interface name".into()))?;
                // SAFETY: if_nametoindex reads the NUL-terminated name we own.
                if unsafe { libc::if_nametoindex(c.as_ptr()) } == 0 {
                    return Err(err("no such tap interface".into()));
                }
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| err(format!("/dev/net/tun: {e}")))?;

        // SAFETY: ifreq is plain old data; all zeroes is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as _;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `ifr` is; the fd is ours.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
            return Err(err(io::Error::last_os_error().to_string()));
        }
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) } < 0 {
            return Err(err(format!(
                "TUNSETVNETHDRSZ: {}",
                io::Error::last_os_error()
            )));
        }
        // No checksum or segmentation offloads: the kernel hands us complete frames.
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is passed.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETOFFLOAD, 0 as libc::c_ulong) } < 0 {
            return Err(err(format!(
                "TUNSETOFFLOAD: {}",
                io::Error::last_os_error()
            )));
        }
        Ok(Self {
            file,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (header included); `WouldBlock` when there is none.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one frame (header included).
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<usize> {
        (&self.file).write(frame)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
