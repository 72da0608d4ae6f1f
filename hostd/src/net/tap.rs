//! Tap devices for VM NICs: their names and their creation (TUNSETIFF with
//! TUNSETPERSIST, so the tap outlives the fd and the VMM attaches to it by name).
//!
//! A tap is named `nt` + the 12 hex digits of its NIC's MAC: 14 characters, under the
//! kernel's IFNAMSIZ limit of 15. hostd never lets two NICs on one host share a MAC
//! (create and incoming migrations check under the admission lock), so two taps
//! cannot get the same name; and a MAC is 48 bits written out whole, so unlike a hash
//! of the VM id there is nothing to collide. The bridge and VXLAN names are checked
//! not to look like one (see `is_tap_name`).

use std::os::fd::AsRawFd;

/// The tap name of the NIC with `mac`.
pub fn name(mac: [u8; 6]) -> String {
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("nt{hex}")
}

/// Whether `name` is of the form tap names take (so no other device may use it).
pub fn is_tap_name(name: &str) -> bool {
    name.len() == 14 && name.starts_with("nt") && name[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Creates persistent tap `name` (no packet info, virtio-net headers), or finds the
/// one that already exists under that name.
pub fn create(name: &str) -> std::io::Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("tap name {name:?} does not fit IFNAMSIZ"),
        ));
    }
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain data; all zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
    // SAFETY: TUNSETIFF reads and writes the ifreq we own, on an fd we own.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: TUNSETPERSIST takes an integer argument and touches no memory.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Gives tap `name` to `uid` (and the gid of the same number), so that an
/// unprivileged VMM may attach to it (TUNSETOWNER, TUNSETGROUP).
pub fn set_owner(name: &str, uid: u32) -> std::io::Result<()> {
    // _IOW('T', 204, int) and _IOW('T', 206, int).
    const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
    const TUNSETGROUP: libc::c_ulong = 0x4004_54ce;
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain data; all zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
    // SAFETY: TUNSETIFF reads and writes the ifreq we own, on an fd we own; the
    // owner ioctls take integer arguments.
    unsafe {
        if libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) < 0
            || libc::ioctl(tun.as_raw_fd(), TUNSETOWNER, uid as libc::c_ulong) < 0
            || libc::ioctl(tun.as_raw_fd(), TUNSETGROUP, uid as libc::c_ulong) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tap_names_are_the_whole_mac_and_fit_ifnamsiz() {
        let a = super::name([0x02, 0xab, 0xcd, 0, 0, 1]);
        assert_eq!(a, "nt02abcd000001");
        assert!(a.len() < libc::IFNAMSIZ);
        assert!(super::is_tap_name(&a));
        assert_ne!(a, super::name([0x02, 0xab, 0xcd, 0, 0, 2]));
        assert!(!super::is_tap_name("novabr0"));
    }
}
