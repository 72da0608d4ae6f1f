//! `novactl vm console VM`: attaches the terminal to a VM's serial console through the
//! controller's console WebSocket. On a terminal, stdin goes into raw mode (every key,
//! Ctrl-C included, goes to the guest) and is restored however the session ends;
//! Ctrl-] leaves. Piped stdin works too (scripts, tests): its end, or a Ctrl-] byte
//! in it, leaves.

use std::io::{IsTerminal, Read, Write};

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use nova_controller_api::ControllerClient;
use nova_http::websocket::Message;

/// The byte Ctrl-] sends: leaves the console, as in telnet and virsh.
pub const ESCAPE: u8 = 0x1d;

/// The terminal's settings before raw mode, put back when dropped.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    /// Raw mode on stdin when it is a terminal; None otherwise.
    fn enter() -> anyhow::Result<Option<RawMode>> {
        if !std::io::stdin().is_terminal() {
            return Ok(None);
        }
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0, checked below.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is open (is_terminal said so) and `t` is a valid termios.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return Err(std::io::Error::last_os_error()).context("reading the terminal's mode");
        }
        let saved = t;
        // SAFETY: cfmakeraw only edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut t) };
        // SAFETY: fd 0 is a terminal and `t` a valid termios.
        if unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setting raw mode");
        }
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: puts back the settings tcgetattr read from the same fd.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}

/// What the stdin reader hands the session.
enum Input {
    Bytes(Vec<u8>),
    Leave,
}

/// The bytes of `chunk` before Ctrl-], and whether it was there.
pub fn split_escape(chunk: &[u8]) -> (&[u8], bool) {
    match chunk.iter().position(|&b| b == ESCAPE) {
        Some(i) => (&chunk[..i], true),
        None => (chunk, false),
    }
}

/// Attaches until Ctrl-], the end of stdin, or the console closing.
pub async fn attach(api: &ControllerClient, id: &str) -> anyhow::Result<()> {
    let ws = api.console_ws(id).await?;
    let raw = RawMode::enter()?;
    eprint!("Connected to the console of {id}; Ctrl-] leaves.\r\n");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Input>(16);
    // A plain thread: a blocking read of stdin cannot be cancelled, and it must not
    // hold up the runtime's shutdown when the console ends first.
    std::thread::Builder::new()
        .name("console-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 1024];
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let (bytes, leave) = split_escape(&buf[..n]);
                if !bytes.is_empty() && tx.blocking_send(Input::Bytes(bytes.to_vec())).is_err() {
                    return;
                }
                if leave {
                    break;
                }
            }
            let _ = tx.blocking_send(Input::Leave);
        })?;
    let (mut up, mut down) = ws.split();
    let mut stdout = std::io::stdout();
    let ended = loop {
        tokio::select! {
            msg = down.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    stdout.write_all(&b)?;
                    stdout.flush()?;
                }
                Some(Ok(Message::Text(t))) => {
                    stdout.write_all(t.as_bytes())?;
                    stdout.flush()?;
                }
                Some(Ok(Message::Close(_))) | None => break "the console closed",
                Some(Ok(_)) => {}
                Some(Err(e)) => anyhow::bail!("console: {e}"),
            },
            inp = rx.recv() => match inp {
                Some(Input::Bytes(b)) => up.send(Message::Binary(b.into())).await?,
                Some(Input::Leave) | None => {
                    let _ = up.send(Message::Close(None)).await;
                    break "left";
                }
            },
        }
    };
    drop(raw);
    eprintln!("\r\n[{ended}]");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_close_bracket_ends_the_input_and_is_not_sent() {
        assert_eq!(split_escape(b"ls\n"), (&b"ls\n"[..], false));
        assert_eq!(split_escape(b"ab\x1dcd"), (&b"ab"[..], true));
        assert_eq!(split_escape(b"\x1d"), (&b""[..], true));
    }
}
