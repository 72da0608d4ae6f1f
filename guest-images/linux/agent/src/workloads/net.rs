//! `net`: gives the guest's first interface the `nova.ip` address (the kernel then
//! answers ARP and ICMP echo itself) and runs a UDP echo server.

use super::Env;
use crate::cmdline::IpConfig;
use crate::console;
use nova_guest_abi::line;
use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// How long a guest waits for its interface to be probed.
const PROBE_WAIT: Duration = Duration::from_secs(5);
const NO_MAC: &str = "00:00:00:00:00:00";

/// Configures the interface (guest) or reads its MAC (host), then echoes forever.
pub fn run(env: &Env, ip: Option<IpConfig>) {
    if let Err(body) = serve(env, ip) {
        console::line(&format!("{} {body}", line::ERROR));
    }
}

fn serve(env: &Env, ip: Option<IpConfig>) -> Result<(), String> {
    let (shown_ip, mac, bind) = if env.pid1 {
        let ip = ip.ok_or("what=net_needs_nova.ip")?;
        let mac = if env.net_config {
            let ifname = first_interface(PROBE_WAIT).ok_or("what=no_net_interface")?;
            configure(&ifname, ip)
                .map_err(|e| format!("what=net_config dev={ifname} error=\"{e}\""))?;
            mac_of(&ifname)
        } else {
            NO_MAC.to_string()
        };
        (ip.addr, mac, Ipv4Addr::UNSPECIFIED)
    } else {
        // A host's interfaces are never touched: at most, the MAC is read.
        let mac = match env
            .net_config
            .then(|| first_interface(Duration::ZERO))
            .flatten()
        {
            Some(ifname) => mac_of(&ifname),
            None => NO_MAC.to_string(),
        };
        (
            ip.map_or(Ipv4Addr::LOCALHOST, |i| i.addr),
            mac,
            Ipv4Addr::LOCALHOST,
        )
    };
    let sock = UdpSocket::bind((bind, env.udp_port)).map_err(|e| {
        format!(
            "what=udp_bind port={} errno={}",
            env.udp_port,
            e.raw_os_error().unwrap_or(0)
        )
    })?;
    console::line(&format!("{} ip={shown_ip} mac={mac} ready=1", line::NET));
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                let _ = sock.send_to(&buf[..n], from);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(format!(
                    "what=udp_recv errno={}",
                    e.raw_os_error().unwrap_or(0)
                ))
            }
        }
    }
}

/// The first non-loopback interface by name, waiting up to `wait` for one to appear.
fn first_interface(wait: Duration) -> Option<String> {
    let find = || {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n != "lo")
            .collect();
        names.sort();
        names.into_iter().next()
    };
    let step = Duration::from_millis(10);
    let mut waited = Duration::ZERO;
    loop {
        if let Some(n) = find() {
            return Some(n);
        }
        if waited >= wait {
            return None;
        }
        std::thread::sleep(step);
        waited += step;
    }
}

fn mac_of(ifname: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| NO_MAC.to_string())
}

/// Sets address and netmask and brings `ifname` (and loopback) up.
fn configure(ifname: &str, ip: IpConfig) -> io::Result<()> {
    // SAFETY: socket() takes no pointers; the fd is owned right after.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    set_addr(&sock, ifname, libc::SIOCSIFADDR, ip.addr)?;
    set_addr(&sock, ifname, libc::SIOCSIFNETMASK, ip.netmask())?;
    set_up(&sock, "lo")?;
    set_up(&sock, ifname)
}

fn ifreq(ifname: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain data (a name and a union of plain data).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if ifname.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(req)
}

fn ioctl(
    sock: &OwnedFd,
    request: libc::Ioctl,
    req: &mut libc::ifreq,
    what: &str,
) -> io::Result<()> {
    // SAFETY: the SIOC[GS]IF* requests read/write one ifreq through the valid pointer.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut libc::ifreq) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

fn set_addr(sock: &OwnedFd, ifname: &str, request: libc::Ioctl, addr: Ipv4Addr) -> io::Result<()> {
    let mut req = ifreq(ifname)?;
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in fits in (and is laid out for) the union's sockaddr member.
    unsafe {
        std::ptr::write(
            (&mut req.ifr_ifru.ifru_addr as *mut libc::sockaddr).cast(),
            sin,
        )
    };
    let what = if request == libc::SIOCSIFADDR {
        "SIOCSIFADDR"
    } else {
        "SIOCSIFNETMASK"
    };
    ioctl(sock, request, &mut req, what)
}

fn set_up(sock: &OwnedFd, ifname: &str) -> io::Result<()> {
    let mut req = ifreq(ifname)?;
    ioctl(sock, libc::SIOCGIFFLAGS, &mut req, "SIOCGIFFLAGS")?;
    // SAFETY: SIOCGIFFLAGS just filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(sock, libc::SIOCSIFFLAGS, &mut req, "SIOCSIFFLAGS")
}
