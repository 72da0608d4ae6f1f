//! The source's side of the connections to the destination: connecting with the
//! peer timeout and securing them ([`Dial`]), reading the answers it expects (or the
//! refusal it got instead), and the flushes that end a round.

use std::io::BufReader;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::channel::{Link, LinkReader, LinkWriter};
use super::error::MigrationError;
use super::outgoing::Outgoing;
use super::protocol::{self, Message};
use super::tls::Dial;

/// Reads the next message, which must be `want` (`ok` says whether it is).
pub fn expect(
    conn: &mut BufReader<LinkReader>,
    want: &'static str,
    ok: impl Fn(&Message) -> bool,
) -> Result<Message, MigrationError> {
    check(protocol::recv(conn)?, want, ok)
}

/// [`expect`] for an answer due within the downtime: polls for it first.
pub fn expect_soon(
    conn: &mut BufReader<LinkReader>,
    want: &'static str,
    ok: impl Fn(&Message) -> bool,
) -> Result<Message, MigrationError> {
    check(
        protocol::recv_polling(conn, protocol::POLL_FOR_ANSWER)?,
        want,
        ok,
    )
}

fn check(
    m: Message,
    want: &'static str,
    ok: impl Fn(&Message) -> bool,
) -> Result<Message, MigrationError> {
    match m {
        Message::Abort(_) => Err(refusal(m, want)),
        m if ok(&m) => Ok(m),
        m => Err(refusal(m, want)),
    }
}

/// What the destination sent instead of `want`, as an error.
pub fn refusal(m: Message, want: &'static str) -> MigrationError {
    match m {
        Message::Abort(why) => MigrationError::Aborted(why),
        m => MigrationError::Unexpected(format!("{m:?}").chars().take(60).collect(), want),
    }
}

/// Connects to the destination at `addr` (`HOST:PORT`), with the peer timeout on
/// both directions, secured as `dial` says. `mig` may cut the connection from the
/// moment it exists, the TLS handshake included.
pub fn connect(addr: &str, dial: &Dial, mig: &Outgoing) -> Result<Link, MigrationError> {
    let s = connect_tcp(addr, mig)?;
    mig.watch(&s)?;
    dial.secure(s).map_err(|e| MigrationError::Secure {
        addr: addr.to_string(),
        err: e.to_string(),
    })
}

/// How long a connection may take to be accepted, in all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a connection not yet accepted looks whether the migration was cancelled.
const CONNECT_SLICE: Duration = Duration::from_millis(500);

fn connect_tcp(addr: &str, mig: &Outgoing) -> Result<TcpStream, MigrationError> {
    let err = |err| MigrationError::Connect {
        addr: addr.to_string(),
        err,
    };
    let sa = addr.to_socket_addrs().map_err(err)?.next().ok_or_else(|| {
        err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no address",
        ))
    })?;
    // In slices: a cancel (the destination's hostd went away) must not wait out a
    // connection to a dead link.
    let mut tried = Duration::ZERO;
    let s = loop {
        if mig.is_cancelled() {
            return Err(MigrationError::Cancelled);
        }
        match TcpStream::connect_timeout(&sa, CONNECT_SLICE) {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut && tried < CONNECT_TIMEOUT => {
                tried += CONNECT_SLICE;
            }
            Err(e) => return Err(err(e)),
        }
    };
    s.set_nodelay(true).map_err(err)?;
    // A destination that stops answering (hung, or the network drops everything)
    // fails the migration after PEER_TIMEOUT instead of holding the VM paused here.
    s.set_read_timeout(Some(protocol::PEER_TIMEOUT))
        .map_err(err)?;
    s.set_write_timeout(Some(protocol::PEER_TIMEOUT))
        .map_err(err)?;
    Ok(s)
}

/// Sets the socket's send buffer: how much can be in flight before a write blocks.
pub fn set_send_buffer(s: &LinkWriter, bytes: i32) {
    let s = s.socket();
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on an open socket with a pointer to a live i32.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &bytes as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
}

/// Sends `Flush` on every connection and waits for the destination's `Flushed`.
pub fn flush_all(
    conns: &mut [LinkWriter],
    reader: &mut BufReader<LinkReader>,
) -> Result<(), MigrationError> {
    for c in conns.iter_mut() {
        protocol::send(c, &Message::Flush)?;
    }
    expect(reader, "Flushed", |m| *m == Message::Flushed)?;
    Ok(())
}

/// Sends `Flush` on the data connections only: the state that follows on the control
/// connection is loaded once they all flushed, without a round trip of its own.
pub fn flush_data(conns: &mut [LinkWriter]) -> Result<(), MigrationError> {
    for c in conns.iter_mut().skip(1) {
        protocol::send(c, &Message::Flush)?;
    }
    Ok(())
}
