//! Setting the clock at boot from one SNTP server (RFC 4330, client mode): TLS to the
//! controller needs a clock that is not in 1970 on machines without a good RTC.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// Seconds from 1900 (NTP's era) to 1970 (Unix's).
const NTP_TO_UNIX: u64 = 2_208_988_800;

/// Asks `server` for the time (three tries, one second each); the Unix time it gave.
pub fn query(server: Ipv4Addr) -> std::io::Result<(u64, u32)> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut req = [0u8; 48];
    req[0] = 0x23; // LI 0, version 4, mode 3 (client)
    let mut last = std::io::Error::from(std::io::ErrorKind::TimedOut);
    for _ in 0..3 {
        sock.send_to(&req, SocketAddr::from((server, 123)))?;
        let mut buf = [0u8; 64];
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if n >= 48 && from.ip() == server => {
                let mode = buf[0] & 7;
                let secs = u32::from_be_bytes([buf[40], buf[41], buf[42], buf[43]]) as u64;
                let frac = u32::from_be_bytes([buf[44], buf[45], buf[46], buf[47]]);
                if mode != 4 || secs < NTP_TO_UNIX {
                    last =
                        std::io::Error::new(std::io::ErrorKind::InvalidData, "not a server reply");
                    continue;
                }
                let nanos = ((frac as u64 * 1_000_000_000) >> 32) as u32;
                return Ok((secs - NTP_TO_UNIX, nanos));
            }
            Ok(_) => continue,
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Sets the system clock from `server`.
pub fn set_clock(server: Ipv4Addr) -> std::io::Result<u64> {
    let (secs, nanos) = query(server)?;
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as libc::c_long,
    };
    // SAFETY: a valid timespec for the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(secs)
}
