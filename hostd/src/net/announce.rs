//! Announcing a VM's MAC after it arrived on this host: a RARP broadcast sent by hostd
//! out of the overlay (the VXLAN device), so the other hosts' bridges and VTEP tables
//! learn that the MAC now lives here. (It is not sent on the bridge itself: the local
//! bridge would learn the MAC on its own port; the local entry is set on the tap.)

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const ETH_P_RARP: u16 = 0x8035;

/// The 42-byte RARP request QEMU also sends ("reverse request", sender = target = MAC).
pub fn rarp_frame(mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_RARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 3]); // Ethernet, IPv4, op 3
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0; 4]);
    f.resize(60, 0); // minimum Ethernet frame without FCS
    f
}

/// Sends `count` RARP frames for `mac` out of interface `ifname`.
pub fn send_rarp(ifname: &str, mac: [u8; 6], count: u32) -> std::io::Result<()> {
    let cname = std::ffi::CString::new(ifname).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a plain socket(2) call; the fd is owned right below.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            ETH_P_RARP.to_be() as i32,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_RARP.to_be();
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let frame = rarp_frame(mac);
    for _ in 0..count {
        // SAFETY: the buffer and address outlive the call; lengths are theirs.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rarp_frame_is_a_broadcast_reverse_request_from_the_mac() {
        let mac = [2, 1, 2, 3, 4, 5];
        let f = super::rarp_frame(mac);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[0x80, 0x35]);
        assert_eq!(&f[20..22], &[0, 3]);
        assert_eq!(&f[22..28], &mac);
    }
}
