//! The debug console: only when the kernel command line asks (`nova.debug_console=
//! ttyS1`), a line-oriented console on that serial line with a few read-only
//! commands built in (the image has no shell): `help`, `version`, `ps`, `mounts`,
//! `ls PATH`, `cat PATH`, `net`, and `reboot`/`poweroff` (a clean stop). Input is
//! whatever the other end of the line types: each line is answered, never trusted.

use std::io::{BufRead, BufReader, Write};

/// Largest file `cat` prints.
const MAX_CAT: u64 = 64 << 10;

/// What a command asks of PID 1 beyond its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Reboot,
    PowerOff,
}

/// One input line, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Empty,
    Help,
    Version,
    Ps,
    Mounts,
    Net,
    Ls(String),
    Cat(String),
    Reboot,
    PowerOff,
    Unknown(String),
}

/// Reads a line (hostile: whatever the other end typed).
pub fn parse(line: &str) -> Command {
    let mut words = line.split_whitespace();
    let cmd = words.next().unwrap_or("");
    let arg = words.next().map(str::to_string);
    match (cmd, arg) {
        ("", _) => Command::Empty,
        ("help", _) => Command::Help,
        ("version", _) => Command::Version,
        ("ps", _) => Command::Ps,
        ("mounts", _) => Command::Mounts,
        ("net", _) => Command::Net,
        ("ls", Some(p)) => Command::Ls(p),
        ("cat", Some(p)) => Command::Cat(p),
        ("reboot", _) => Command::Reboot,
        ("poweroff", _) => Command::PowerOff,
        (c, _) => Command::Unknown(c.chars().take(64).collect()),
    }
}

/// The answer to one input line.
pub fn answer(line: &str) -> (String, Action) {
    let text = match parse(line) {
        Command::Empty => String::new(),
        Command::Help => {
            "commands: help, version, ps, mounts, ls PATH, cat PATH, net, reboot, poweroff\n".into()
        }
        Command::Version => format!(
            "image {} nova-init {}\n",
            std::fs::read_to_string("/etc/nova-version")
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|_| "-".into()),
            env!("CARGO_PKG_VERSION")
        ),
        Command::Ps => ps(),
        Command::Mounts => read("/proc/mounts"),
        Command::Net => read("/proc/net/fib_trie"),
        Command::Ls(p) => match std::fs::read_dir(&p) {
            Ok(rd) => {
                let mut names: Vec<String> = rd
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                names.join("\n") + "\n"
            }
            Err(e) => format!("ls {p}: {e}\n"),
        },
        Command::Cat(p) => read(&p),
        Command::Reboot => return ("rebooting\n".into(), Action::Reboot),
        Command::PowerOff => return ("powering off\n".into(), Action::PowerOff),
        Command::Unknown(c) => format!("{c}: unknown command (help lists them)\n"),
    };
    (text, Action::None)
}

/// At most [`MAX_CAT`] bytes of `p` (a device like /dev/zero never ends).
fn read(p: &str) -> String {
    use std::io::Read;
    let mut b = vec![];
    match std::fs::File::open(p).and_then(|f| f.take(MAX_CAT).read_to_end(&mut b)) {
        Ok(_) => {
            let mut s = String::from_utf8_lossy(&b).into_owned();
            if !s.ends_with('\n') {
                s.push('\n');
            }
            s
        }
        Err(e) => format!("{p}: {e}\n"),
    }
}

fn ps() -> String {
    let mut rows: Vec<(u32, String)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            Some((pid, comm.trim().to_string()))
        })
        .collect();
    rows.sort();
    rows.iter().map(|(p, c)| format!("{p:>6} {c}\n")).collect()
}

/// Serves the console on `/dev/{tty}` (a thread), or says there is none.
pub fn start(tty: Option<&str>) {
    let Some(tty) = tty else {
        tracing::info!(
            "no debug console (nova.debug_console=TTY on the kernel command line enables one)"
        );
        return;
    };
    let dev = format!("/dev/{tty}");
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
    {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("debug console {dev}: {e}");
            return;
        }
    };
    tracing::warn!(dev = %dev, "debug console on {dev} (nova.debug_console): anyone on that line reads the host");
    std::thread::spawn(move || {
        let Ok(mut out) = f.try_clone() else { return };
        let mut input = BufReader::new(f);
        let _ = write!(
            out,
            "NovaCron debug console (help lists the commands)\nnova# "
        );
        let mut line = String::new();
        loop {
            line.clear();
            match input.read_line(&mut line) {
                Ok(0) => std::thread::sleep(std::time::Duration::from_millis(200)),
                Ok(_) => {
                    let (text, action) = answer(line.trim_end_matches(['\r', '\n']));
                    let _ = write!(out, "{text}nova# ");
                    let sig = match action {
                        Action::None => continue,
                        Action::Reboot => libc::SIGUSR1,
                        Action::PowerOff => libc::SIGTERM,
                    };
                    // SAFETY: kill(2) on our own pid with a valid signal.
                    unsafe { libc::kill(libc::getpid(), sig) };
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_answer_and_unknown_ones_say_so() {
        assert!(answer("help").0.starts_with("commands:"));
        assert!(answer("version").0.starts_with("image "));
        assert!(answer("ps").0.contains(&std::process::id().to_string()));
        assert!(answer("ls /proc/self").0.contains("comm"));
        assert!(answer("cat /nonexistent").0.contains("No such file"));
        assert_eq!(answer("reboot").1, Action::Reboot);
        assert_eq!(answer("poweroff").1, Action::PowerOff);
        assert!(answer("sh -c x").0.contains("unknown command"));
        assert_eq!(answer("   ").0, "");
        assert_eq!(answer("cat /dev/zero").0.len(), MAX_CAT as usize + 1);
        assert_eq!(parse("ls  /data  extra"), Command::Ls("/data".into()));
    }
}
