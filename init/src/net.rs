//! The host's network at boot: loopback up, the chosen NIC up with its IPv4 address
//! and default route, by the classic `SIOCSIF*`/`SIOCADDRT` ioctls (no netlink
//! library, no `ip` binary on the image). hostd builds its bridge and VXLAN itself.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// `struct rtentry` of <net/route.h> (not in the libc crate for glibc).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn inet_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned by the OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name '{name}'"),
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

fn sockaddr_in(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes); both plain data.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl<T>(fd: &OwnedFd, req: libc::c_ulong, arg: &mut T, what: &str) -> io::Result<()> {
    // SAFETY: `arg` is the structure `req` expects (ifreq or rtentry), valid for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// Brings interface `name` up.
pub fn link_up(name: &str) -> io::Result<()> {
    let fd = inet_socket()?;
    let mut r = ifreq(name)?;
    ioctl(&fd, libc::SIOCGIFFLAGS, &mut r, &format!("flags of {name}"))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(
        &fd,
        libc::SIOCSIFFLAGS,
        &mut r,
        &format!("bringing {name} up"),
    )
}

/// Gives `name` address `addr`/`prefix`.
pub fn set_address(name: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let fd = inet_socket()?;
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ioctl(
        &fd,
        libc::SIOCSIFADDR,
        &mut r,
        &format!("address of {name}"),
    )?;
    let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0));
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_netmask = sockaddr_in(mask);
    ioctl(
        &fd,
        libc::SIOCSIFNETMASK,
        &mut r,
        &format!("netmask of {name}"),
    )
}

/// Adds the default route via `gw` on `name`.
pub fn add_default_route(name: &str, gw: Ipv4Addr) -> io::Result<()> {
    let fd = inet_socket()?;
    let mut dev = std::ffi::CString::new(name)
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?
        .into_bytes_with_nul();
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr_in(gw),
        rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_flags: (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: dev.as_mut_ptr().cast(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    ioctl(
        &fd,
        libc::SIOCADDRT,
        &mut rt,
        &format!("default route via {gw}"),
    )
}

/// The Ethernet NICs the kernel has (not loopback, bridges or other virtual devices),
/// sorted by name.
pub fn ethernet_nics() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let p = e.path();
                    let ether =
                        std::fs::read_to_string(p.join("type")).is_ok_and(|t| t.trim() == "1");
                    let physical = p.join("device").exists();
                    ether && physical
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The NIC to configure: `wanted`, or the first Ethernet NIC, waiting up to `timeout`
/// for drivers to probe.
pub fn choose_nic(wanted: Option<&str>, timeout: Duration) -> Option<String> {
    let t = Instant::now();
    loop {
        let nics = ethernet_nics();
        let pick = match wanted {
            Some(w) => std::path::Path::new("/sys/class/net")
                .join(w)
                .exists()
                .then(|| w.to_string()),
            None => nics.into_iter().next(),
        };
        if pick.is_some() || t.elapsed() >= timeout {
            return pick;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
