//! The destination's door: accepts connections on the `--incoming` listener and lets
//! in only those that pass [`Listen`] (TLS with this migration's credential) and then
//! open with a migration message. Each connection is examined on a thread of its own
//! within [`HANDSHAKE_TIMEOUT`], so a silent, slow or hostile one holds up no other
//! and never disturbs the wait; at most [`MAX_PENDING`] are examined at once (more
//! are closed at once). The door closes (the listener with it) once the migration
//! has all its connections.

use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::channel::{LinkReader, LinkWriter};
use super::error::MigrationError;
use super::protocol::{self, Message};
use super::tls::Listen;
use crate::seccomp::{spawn_filtered, ThreadKind};

/// How long a new connection has to complete its TLS handshake, prove the secret and
/// send its first message before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections examined at once.
pub const MAX_PENDING: usize = 32;

/// A connection let in, with its first message.
pub struct Arrival {
    pub reader: BufReader<LinkReader>,
    pub writer: LinkWriter,
    pub first: Message,
    pub peer: SocketAddr,
}

/// The open door: arrivals come out of [`Gate::next`].
pub struct Gate {
    arrivals: mpsc::Receiver<Arrival>,
    stop: Arc<AtomicBool>,
}

impl Gate {
    /// Starts accepting on `listener`, admitting as `listen` says.
    pub fn open(listener: TcpListener, listen: Listen) -> Result<Gate, MigrationError> {
        listener
            .set_nonblocking(true)
            .map_err(MigrationError::Memory)?;
        let (tx, arrivals) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        spawn_filtered(ThreadKind::Migration, "migration-accept", None, move || {
            accept_loop(listener, listen, tx, &stopped)
        })
        .map_err(MigrationError::Memory)?;
        Ok(Gate { arrivals, stop })
    }

    /// The next connection let in, waiting until `deadline` (for ever without one);
    /// `None` once it has passed.
    pub fn next(&self, deadline: Option<Instant>) -> Result<Option<Arrival>, MigrationError> {
        let r = match deadline {
            None => self.arrivals.recv().map_err(|_| ()),
            Some(d) => match self
                .arrivals
                .recv_timeout(d.saturating_duration_since(Instant::now()))
            {
                Ok(a) => Ok(a),
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(()),
            },
        };
        r.map(Some)
            .map_err(|_| MigrationError::Vm("the migration listener failed".into()))
    }
}

impl Drop for Gate {
    /// Closes the door: the listener goes, and nobody else gets in.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(
    listener: TcpListener,
    listen: Listen,
    tx: mpsc::Sender<Arrival>,
    stop: &AtomicBool,
) {
    let pending = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        let (conn, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(e) => {
                tracing::error!("migration listener: {e}");
                return;
            }
        };
        if pending.load(Ordering::SeqCst) >= MAX_PENDING {
            tracing::warn!("dropped a connection from {peer}: {MAX_PENDING} are being examined");
            continue;
        }
        pending.fetch_add(1, Ordering::SeqCst);
        let (listen, tx, pending) = (listen.clone(), tx.clone(), pending.clone());
        let examined = spawn_filtered(
            ThreadKind::Migration,
            "migration-admit",
            Some(256 << 10),
            move || {
                match admit(conn, &listen) {
                    Ok((reader, writer, first)) => {
                        let _ = tx.send(Arrival {
                            reader,
                            writer,
                            first,
                            peer,
                        });
                    }
                    Err(e) => tracing::warn!(
                        "dropped a connection from {peer} that is not this migration's: {e}"
                    ),
                }
                pending.fetch_sub(1, Ordering::SeqCst);
            },
        );
        if let Err(e) = examined {
            tracing::warn!("dropped a connection from {peer}: {e}");
        }
    }
}

/// Secures `conn` and reads its first message, all within [`HANDSHAKE_TIMEOUT`].
fn admit(
    conn: TcpStream,
    listen: &Listen,
) -> Result<(BufReader<LinkReader>, LinkWriter, Message), MigrationError> {
    conn.set_nonblocking(false)
        .map_err(MigrationError::Memory)?;
    conn.set_nodelay(true).map_err(MigrationError::Memory)?;
    conn.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(MigrationError::Memory)?;
    conn.set_write_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(MigrationError::Memory)?;
    let started = Instant::now();
    let link = listen.accept(conn).map_err(|e| MigrationError::Secure {
        addr: "the migration listener".into(),
        err: e.to_string(),
    })?;
    // What is left of the handshake's time for the first message.
    let left = HANDSHAKE_TIMEOUT
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    link.reader
        .socket()
        .set_read_timeout(Some(left))
        .map_err(MigrationError::Memory)?;
    let mut reader = BufReader::new(link.reader);
    let first = protocol::recv(&mut reader)?;
    Ok((reader, link.writer, first))
}
