//! The console socket: a unix socket (mode 0600, so only the VMM's user attaches)
//! where any number of clients attach to the guest's serial console. Each client
//! gets the last [`BACKLOG`] bytes, then everything the guest writes; bytes a
//! client sends go to the UART's receive FIFO. The console file (or stdout) keeps
//! every byte whether or not anyone is attached; a client too slow to keep up is
//! dropped rather than holding up the guest.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::devices::serial::SerialDevice;
use crate::seccomp::ThreadKind;

/// Bytes of recent output a client gets when it attaches.
pub const BACKLOG: usize = 64 << 10;

/// Attached clients and the recent output.
#[derive(Default)]
pub struct ConsoleHub {
    clients: Mutex<Vec<UnixStream>>,
    backlog: Mutex<VecDeque<u8>>,
}

impl ConsoleHub {
    /// Sends `bytes` to every client (dropping any that cannot take them now) and
    /// keeps them in the backlog.
    pub fn broadcast(&self, bytes: &[u8]) {
        {
            let mut b = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
            b.extend(bytes);
            let over = b.len().saturating_sub(BACKLOG);
            b.drain(..over);
        }
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain_mut(|c| c.write_all(bytes).is_ok());
    }

    fn attach(&self, mut client: UnixStream) -> std::io::Result<()> {
        // The backlog and the registration under one lock order: no byte is missed
        // or repeated between them.
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let backlog: Vec<u8> = self
            .backlog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        // A client that does not read its backlog is not waited for long: every
        // other attach waits behind it.
        client.set_write_timeout(Some(Duration::from_secs(1)))?;
        client.write_all(&backlog)?;
        client.set_nonblocking(true)?;
        clients.push(client);
        Ok(())
    }
}

/// The guest's output on its way to the console file: also to the hub's clients.
pub struct Tee {
    pub out: Box<dyn Write + Send>,
    pub hub: Arc<ConsoleHub>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hub.broadcast(buf);
        self.out.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The socket; removed when dropped.
pub struct ConsoleSocket {
    path: PathBuf,
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` (0600) and attaches its clients to `hub`, their input to `serial`.
pub fn serve(
    path: &Path,
    hub: Arc<ConsoleHub>,
    serial: Arc<Mutex<SerialDevice>>,
) -> std::io::Result<ConsoleSocket> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "in use by a running VMM",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    // Its threads serve a unix socket as the API's do, under the API's filter.
    crate::seccomp::spawn_filtered(ThreadKind::Api, "console", Some(128 << 10), move || {
        for conn in listener.incoming().flatten() {
            let Ok(reader) = conn.try_clone() else {
                continue;
            };
            if hub.attach(conn).is_err() {
                continue;
            }
            let serial = serial.clone();
            let _ = crate::seccomp::spawn_filtered(
                ThreadKind::Api,
                "console-in",
                Some(64 << 10),
                move || feed(reader, &serial),
            );
        }
    })?;
    Ok(ConsoleSocket {
        path: path.to_owned(),
    })
}

/// Copies a client's bytes into the UART's receive FIFO, waiting while it is full.
fn feed(mut client: UnixStream, serial: &Mutex<SerialDevice>) {
    // The hub's clone is non-blocking; this one reads blocking.
    if client.set_nonblocking(false).is_err() {
        return;
    }
    let mut buf = [0u8; 256];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let taken = serial.lock().unwrap_or_else(|e| e.into_inner()).input(rest);
            rest = &rest[taken..];
            if !rest.is_empty() {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}
