//! A minimal DHCPv4 client (RFC 2131): DISCOVER, OFFER, REQUEST, ACK on the chosen
//! NIC, asking for the broadcast flag so replies reach a socket with no address yet;
//! [`Lease`] is what the host is given. Replies come from the network: [`parse_reply`]
//! treats them as hostile (every length checked, nothing trusted but what it returns).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
/// Message types (option 53).
pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;
/// The fixed part of a BOOTP message, before the magic cookie.
const FIXED: usize = 236;

/// What a server gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_secs: u32,
}

/// A parsed reply: its message type, transaction id and offer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub kind: u8,
    pub xid: u32,
    pub lease: Lease,
}

/// Why a DHCP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("DHCP socket on {nic}: {err}")]
    Socket { nic: String, err: std::io::Error },
    #[error("no DHCP {what} on {nic} within {secs} s")]
    Timeout {
        nic: String,
        what: &'static str,
        secs: u64,
    },
    #[error("DHCP server {0} refused the address (NAK)")]
    Nak(Ipv4Addr),
}

/// Builds a client message of `kind` from `mac` with transaction `xid`; `requested`
/// and `server` fill options 50 and 54 (REQUEST).
pub fn request_message(
    kind: u8,
    xid: u32,
    mac: [u8; 6],
    requested: Option<Ipv4Addr>,
    server: Option<Ipv4Addr>,
) -> Vec<u8> {
    let mut m = vec![0u8; FIXED];
    m[0] = BOOTREQUEST;
    m[1] = 1; // Ethernet
    m[2] = 6;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[10] = 0x80; // broadcast flag: we cannot receive unicast before we have the address
    m[28..34].copy_from_slice(&mac);
    m.extend_from_slice(&MAGIC);
    m.extend_from_slice(&[53, 1, kind]);
    if let Some(ip) = requested {
        m.extend_from_slice(&[50, 4]);
        m.extend_from_slice(&ip.octets());
    }
    if let Some(ip) = server {
        m.extend_from_slice(&[54, 4]);
        m.extend_from_slice(&ip.octets());
    }
    m.extend_from_slice(&[55, 4, 1, 3, 51, 54]); // mask, router, lease time, server id
    m.push(255);
    m
}

fn ip4(v: &[u8]) -> Option<Ipv4Addr> {
    (v.len() == 4).then(|| Ipv4Addr::new(v[0], v[1], v[2], v[3]))
}

/// Parses a server's reply; None for anything that is not a well-formed BOOTREPLY
/// carrying a message type, an address, a server id and a contiguous netmask.
pub fn parse_reply(b: &[u8]) -> Option<Reply> {
    if b.len() < FIXED + 4 || b[0] != BOOTREPLY || b[FIXED..FIXED + 4] != MAGIC {
        return None;
    }
    let xid = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    let addr = ip4(&b[16..20])?;
    let (mut kind, mut mask, mut gateway, mut server, mut lease_secs) =
        (None, None, None, None, 0u32);
    let mut i = FIXED + 4;
    while i < b.len() {
        let code = b[i];
        if code == 255 {
            break;
        }
        if code == 0 {
            i += 1;
            continue;
        }
        let len = *b.get(i + 1)? as usize;
        let v = b.get(i + 2..i + 2 + len)?;
        match code {
            53 if len == 1 => kind = Some(v[0]),
            1 => mask = ip4(v),
            3 if len >= 4 => gateway = ip4(&v[..4]),
            54 => server = ip4(v),
            51 if len == 4 => lease_secs = u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
            _ => {}
        }
        i += 2 + len;
    }
    let kind = kind?;
    if kind == NAK {
        return Some(Reply {
            kind,
            xid,
            lease: Lease {
                addr,
                prefix: 0,
                gateway: None,
                server: server.unwrap_or(Ipv4Addr::UNSPECIFIED),
                lease_secs: 0,
            },
        });
    }
    let m = u32::from(mask.unwrap_or(Ipv4Addr::new(255, 255, 255, 0)));
    let prefix = m.leading_ones();
    if m.checked_shl(prefix).unwrap_or(0) != 0 || prefix == 0 || addr.is_unspecified() {
        return None;
    }
    Some(Reply {
        kind,
        xid,
        lease: Lease {
            addr,
            prefix: prefix as u8,
            gateway: gateway.filter(|g| !g.is_unspecified()),
            server: server?,
            lease_secs,
        },
    })
}

/// The NIC's MAC address from sysfs.
pub fn mac_of(nic: &str) -> Option<[u8; 6]> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{nic}/address")).ok()?;
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    v.try_into().ok()
}

fn socket(nic: &str) -> std::io::Result<UdpSocket> {
    // Bound to the NIC so DISCOVER leaves there and only its replies arrive.
    let s = UdpSocket::bind("0.0.0.0:68")?;
    s.set_broadcast(true)?;
    let name = nic.as_bytes();
    // SAFETY: setsockopt reads `name.len()` bytes from `name`.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s)
}

/// Sends `msg` every second until a reply of one of `kinds` with `xid` arrives.
fn exchange(
    s: &UdpSocket,
    nic: &str,
    msg: &[u8],
    xid: u32,
    kinds: &[u8],
    what: &'static str,
    timeout: Duration,
) -> Result<Reply, DhcpError> {
    let t = Instant::now();
    let sockerr = |err| DhcpError::Socket {
        nic: nic.into(),
        err,
    };
    let to = SocketAddr::from((Ipv4Addr::BROADCAST, 67));
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(sockerr)?;
    while t.elapsed() < timeout {
        s.send_to(msg, to).map_err(sockerr)?;
        let sent = Instant::now();
        let mut buf = [0u8; 1500];
        while sent.elapsed() < Duration::from_secs(1) {
            match s.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if let Some(r) = parse_reply(&buf[..n]) {
                        if r.xid == xid && kinds.contains(&r.kind) {
                            return Ok(r);
                        }
                    }
                }
                Err(_) => break,
            }
        }
    }
    Err(DhcpError::Timeout {
        nic: nic.into(),
        what,
        secs: timeout.as_secs(),
    })
}

/// Asks for a lease on `nic` (which must be up): DISCOVER, then REQUEST of the offer.
pub fn obtain(nic: &str, mac: [u8; 6], xid: u32, timeout: Duration) -> Result<Lease, DhcpError> {
    let s = socket(nic).map_err(|err| DhcpError::Socket {
        nic: nic.into(),
        err,
    })?;
    let discover = request_message(DISCOVER, xid, mac, None, None);
    let offer = exchange(&s, nic, &discover, xid, &[OFFER], "offer", timeout)?;
    let request = request_message(
        REQUEST,
        xid,
        mac,
        Some(offer.lease.addr),
        Some(offer.lease.server),
    );
    let ack = exchange(&s, nic, &request, xid, &[ACK, NAK], "ack", timeout)?;
    if ack.kind == NAK {
        return Err(DhcpError::Nak(ack.lease.server));
    }
    Ok(ack.lease)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(kind: u8, opts: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; FIXED];
        m[0] = BOOTREPLY;
        m[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        m[16..20].copy_from_slice(&[192, 0, 2, 50]);
        m.extend_from_slice(&MAGIC);
        m.extend_from_slice(&[53, 1, kind]);
        m.extend_from_slice(opts);
        m.push(255);
        m
    }

    #[test]
    fn an_offer_gives_address_prefix_gateway_and_server() {
        let r = parse_reply(&reply(
            OFFER,
            &[
                1, 4, 255, 255, 255, 0, 3, 4, 192, 0, 2, 1, 54, 4, 192, 0, 2, 1, 51, 4, 0, 0, 14,
                16,
            ],
        ))
        .unwrap();
        assert_eq!(r.kind, OFFER);
        assert_eq!(r.xid, 0x1234_5678);
        assert_eq!(
            r.lease,
            Lease {
                addr: Ipv4Addr::new(192, 0, 2, 50),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
                server: Ipv4Addr::new(192, 0, 2, 1),
                lease_secs: 3600
            }
        );
    }

    #[test]
    fn malformed_replies_are_refused() {
        let good = reply(OFFER, &[54, 4, 192, 0, 2, 1]);
        assert!(parse_reply(&good).is_some());
        for n in 0..good.len() - 1 {
            // Truncated anywhere before the end option: refused or still well-formed.
            let _ = parse_reply(&good[..n]);
        }
        assert!(parse_reply(&good[..FIXED]).is_none(), "no magic");
        assert!(parse_reply(&reply(OFFER, &[])).is_none(), "no server id");
        assert!(
            parse_reply(&reply(OFFER, &[54, 4, 192, 0, 2, 1, 1, 4, 255, 0, 255, 0])).is_none(),
            "holes in the netmask"
        );
        assert!(
            parse_reply(&reply(OFFER, &[54, 200, 1])).is_none(),
            "option past the end"
        );
        let mut request = good.clone();
        request[0] = BOOTREQUEST;
        assert!(parse_reply(&request).is_none(), "not a reply");
    }

    #[test]
    fn a_request_names_the_offer_and_asks_for_broadcast() {
        let mac = [2, 0, 0, 0, 0, 1];
        let m = request_message(
            REQUEST,
            7,
            mac,
            Some(Ipv4Addr::new(192, 0, 2, 50)),
            Some(Ipv4Addr::new(192, 0, 2, 1)),
        );
        assert_eq!(m[0], BOOTREQUEST);
        assert_eq!(m[10], 0x80);
        assert_eq!(&m[28..34], &mac);
        let opts = &m[FIXED + 4..];
        assert!(opts.windows(3).any(|w| w == [53, 1, REQUEST]));
        assert!(opts.windows(6).any(|w| w == [50, 4, 192, 0, 2, 50]));
        assert!(opts.windows(6).any(|w| w == [54, 4, 192, 0, 2, 1]));
        assert_eq!(*m.last().unwrap(), 255);
    }
}
