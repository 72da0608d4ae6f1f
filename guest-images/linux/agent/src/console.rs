//! The console: where every line the agent prints goes (the serial port as pid 1,
//! stdout in host mode), one whole line per write so threads never interleave.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

static SINK: OnceLock<Mutex<Box<dyn Write + Send>>> = OnceLock::new();
/// The guest console's file, kept to drain it before power off.
static TTY: OnceLock<File> = OnceLock::new();

/// Set in host mode: a reader that went away ends the process.
static ON_HOST: AtomicBool = AtomicBool::new(false);

/// Sends lines to stdout (host mode).
pub fn use_stdout() {
    ON_HOST.store(true, Ordering::Relaxed);
    let _ = SINK.set(Mutex::new(Box::new(std::io::stdout())));
}

/// Opens the guest console: `/dev/ttyS0`, else `/dev/console`, else stdout. Output
/// post-processing is turned off so lines end in a bare `\n`, as the test guest's do.
pub fn open_guest_console() {
    for path in ["/dev/ttyS0", "/dev/console"] {
        let Ok(file) = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
        else {
            continue;
        };
        raw_output(&file);
        if let Ok(clone) = file.try_clone() {
            let _ = TTY.set(clone);
        }
        let _ = SINK.set(Mutex::new(Box::new(file)));
        return;
    }
    use_stdout();
}

fn raw_output(file: &File) {
    // SAFETY: termios is plain data; tcgetattr/tcsetattr only read/write it and the fd
    // is open for the duration of the calls. Failure (not a tty) leaves it untouched.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(file.as_raw_fd(), &mut t) == 0 {
            t.c_oflag &= !libc::OPOST;
            libc::tcsetattr(file.as_raw_fd(), libc::TCSANOW, &t);
        }
    }
}

/// Set once the last line (poweroff, reset) is out: nothing may follow it.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Prints one line (without its newline).
pub fn line(text: &str) {
    print(text, false);
}

/// Prints the machine's last line: later lines from other threads are dropped.
pub fn last_line(text: &str) {
    print(text, true);
}

fn print(text: &str, last: bool) {
    let sink = SINK.get_or_init(|| Mutex::new(Box::new(std::io::stdout())));
    let mut buf = Vec::with_capacity(text.len() + 1);
    buf.extend_from_slice(text.as_bytes());
    buf.push(b'\n');
    let mut out = sink.lock().unwrap_or_else(|e| e.into_inner());
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    CLOSED.store(last, Ordering::Relaxed);
    let written = out.write_all(&buf).and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe && ON_HOST.load(Ordering::Relaxed) {
            std::process::exit(0);
        }
    }
}

/// Prints `NOVA-ERROR what=<what>` followed by `extra` (` k=v` pairs, may be empty).
pub fn error(what: &str, extra: &str) {
    line(&format!(
        "{} what={what}{extra}",
        nova_guest_abi::line::ERROR
    ));
}

/// Waits until everything written to the guest console has left the serial port.
pub fn drain() {
    if let Some(tty) = TTY.get() {
        // SAFETY: tcdrain only waits on the open fd.
        unsafe { libc::tcdrain(tty.as_raw_fd()) };
    }
}
