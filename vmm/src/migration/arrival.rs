//! When an answer reached this host: the kernel stamps what arrives on a socket
//! (`SO_TIMESTAMPNS`), and the sender reads the stamp of the destination's `Resumed`
//! without consuming it, so a thread woken late does not count its lateness as
//! downtime.

use std::time::Duration;

/// Has the kernel stamp what arrives on `conn` with its arrival time
/// (`SO_TIMESTAMPNS`), for [`wait_arrival`]. Bytes that arrived before carry no stamp,
/// and the first use in a process may take effect a little later (deferred work).
pub fn stamp_arrivals(conn: &std::net::TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from a live local.
    let r = unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Blocks until bytes wait on `conn`, reads none of them, and returns when the kernel
/// received them: an answer's arrival, even if this thread was woken late. `None` at
/// the end of the stream, or for bytes without a stamp (see [`stamp_arrivals`]).
pub fn wait_arrival(conn: &std::net::TcpStream) -> std::io::Result<Option<std::time::SystemTime>> {
    use std::os::fd::AsRawFd;
    let fd = conn.as_raw_fd();
    let mut byte = 0u8;
    let mut iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    // Room for one control message holding a timespec (u64-aligned).
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid (no name, no buffers); its fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    let n = loop {
        // SAFETY: msg points at live buffers of the lengths it states; MSG_PEEK leaves
        // the byte in the socket for the reader.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_PEEK) };
        if n >= 0 {
            break n;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    if n == 0 {
        return Ok(None);
    }
    // SAFETY: the CMSG_* walk stays within msg_controllen bytes of `control`, which
    // recvmsg filled; a SCM_TIMESTAMPNS message carries one timespec.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                let since_epoch = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
                return Ok(Some(std::time::UNIX_EPOCH + since_epoch));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::protocol::{recv, send, Message};
    use crate::test_support::connected;

    #[test]
    fn an_answer_read_late_still_tells_when_it_arrived() {
        let (mut rx, mut tx) = connected();
        stamp_arrivals(rx.get_ref()).unwrap();
        // The kernel may turn receive stamping on in deferred work: give it a moment,
        // as a migration does between its handshake and the switch.
        std::thread::sleep(Duration::from_millis(50));
        let sent = std::time::SystemTime::now();
        send(&mut tx, &Message::Ready).unwrap();
        // This side is busy (or descheduled) for a while before it looks.
        std::thread::sleep(Duration::from_millis(50));
        let arrived = wait_arrival(rx.get_ref()).unwrap().unwrap();
        let late = std::time::SystemTime::now()
            .duration_since(arrived)
            .unwrap();
        assert!(late >= Duration::from_millis(45), "{late:?}");
        assert!(arrived.duration_since(sent).unwrap() < Duration::from_millis(20));
        // Nothing was consumed: the message is still there to read.
        assert_eq!(recv(&mut rx).unwrap(), Message::Ready);
        drop(tx);
        assert_eq!(wait_arrival(rx.get_ref()).unwrap(), None);
    }
}
