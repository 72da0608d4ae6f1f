//! `nova-vmm-ctl` (also run as `nova-vmm ctl`): one call to a running VM's API socket
//! through the contract's typed client ([`VmmClient`]), the answer as JSON on stdout;
//! a migration is followed to its end with its progress on stderr; `console`
//! attaches the terminal to the VM's console socket (Ctrl-] leaves).
//!
//! A binary of its own, like Cloud Hypervisor's `ch-remote`: the HTTP client (tokio,
//! hyper, rustls) doubles the size of a binary, and every `nova-vmm run` would map
//! and relocate it for nothing (+1.2 MiB resident per VM, measured).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use nova_http::blocking::block_on;
use nova_vmm_api::migration::DEFAULT_DOWNTIME_MS;
use nova_vmm_api::{
    Compression, MigrationMode, MigrationParams, MigrationPeer, MigrationRequest, MigrationState,
    MigrationStatus, SnapshotRequest, StopRequest, VmmClient,
};
use serde::Serialize;

/// How long one call may take: a snapshot writes all the memory the guest touched.
const CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a migration's progress is read.
const POLL: Duration = Duration::from_millis(50);

#[derive(Parser)]
#[command(
    name = "nova-vmm-ctl",
    version,
    about = "Control a running nova-vmm through its API socket"
)]
struct Cli {
    /// The VM's API socket (`nova-vmm run --api-sock`).
    #[arg(long)]
    api_sock: PathBuf,
    #[command(subcommand)]
    action: Action,
}

/// What `ctl` can ask.
#[derive(clap::Subcommand, Debug, Clone)]
enum Action {
    /// State, KVM kind, configuration and counters.
    Status,
    /// Pause every vCPU.
    Pause,
    /// Resume paused vCPUs.
    Resume,
    /// Stop the VM; the VMM process exits.
    Shutdown,
    /// Stop the VM gracefully: press its ACPI power button and stop it after the
    /// timeout if the guest has not powered off (at once with --force). Prints how
    /// the stop began; the VMM exits when the VM has stopped.
    Stop {
        /// Stop at once instead of pressing the power button.
        #[arg(long)]
        force: bool,
        /// How long the guest has to power off, ms.
        #[arg(long, default_value_t = StopRequest::default().timeout_ms)]
        timeout_ms: u64,
    },
    /// Snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotAction),
    /// Live-migrate the VM to a `nova-vmm run --incoming` destination. Progress on
    /// stderr, the result as one JSON object on stdout.
    Migrate(MigrateArgs),
    /// Cancel a running migration (the VM keeps running here).
    MigrateCancel,
    /// Attach this terminal to the VM's serial console (its `--console-sock`):
    /// output shows here, keys go to the guest; Ctrl-] (or the end of input) leaves.
    Console,
}

/// `ctl migrate`: the fields of `PUT /v1/migration`, with the contract's defaults.
#[derive(clap::Args, Debug, Clone)]
struct MigrateArgs {
    /// tcp:HOST:PORT of the destination.
    #[arg(long)]
    to: String,
    /// precopy, postcopy or hybrid.
    #[arg(long, default_value = MigrationMode::default().as_str())]
    mode: MigrationMode,
    /// Longest pause pre-copy aims for.
    #[arg(long, default_value_t = DEFAULT_DOWNTIME_MS)]
    downtime_ms: u64,
    /// Bandwidth cap, all connections together.
    #[arg(long)]
    bandwidth_mbit: Option<u64>,
    /// none, zstd or lz4.
    #[arg(long, default_value = Compression::default().as_str())]
    compress: Compression,
    /// TCP connections carrying memory in parallel.
    #[arg(long, default_value_t = MigrationParams::default().connections)]
    connections: u32,
    /// Hex SHA-256 of the destination's certificate (its credential's `cert_sha256`).
    #[arg(long, requires = "peer_secret")]
    peer_cert_sha256: Option<String>,
    /// Hex secret of the destination's credential. Without these two the VMM must run
    /// with `--insecure` (plaintext).
    #[arg(long, requires = "peer_cert_sha256")]
    peer_secret: Option<String>,
}

impl MigrateArgs {
    fn request(self) -> MigrationRequest {
        MigrationRequest {
            to: self.to,
            params: MigrationParams {
                mode: self.mode,
                downtime_ms: self.downtime_ms,
                bandwidth_mbit: self.bandwidth_mbit,
                compress: self.compress,
                connections: self.connections,
            },
            peer: self
                .peer_cert_sha256
                .zip(self.peer_secret)
                .map(|(cert_sha256, secret)| MigrationPeer {
                    cert_sha256,
                    secret,
                }),
        }
    }
}

/// `ctl snapshot ...`
#[derive(clap::Subcommand, Debug, Clone)]
enum SnapshotAction {
    /// Pause, write state and memory to DIR, resume.
    Create {
        #[arg(long)]
        path: PathBuf,
        /// Only the pages written since this VM's previous snapshot.
        #[arg(long)]
        diff: bool,
    },
}

fn print(answer: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(answer)?);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli.api_sock, cli.action) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nova-vmm-ctl: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `ctl console`: the terminal attached to a console socket.
mod console {
    use std::io::{IsTerminal, Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::path::Path;

    use anyhow::Context;

    /// The byte Ctrl-] sends: leave.
    const ESCAPE: u8 = 0x1d;

    /// The terminal in raw mode (keys go to the guest as typed) until dropped.
    struct RawTerminal {
        saved: libc::termios,
    }

    impl RawTerminal {
        /// None when stdin is no terminal (a pipe: nothing to set).
        fn enable() -> Option<RawTerminal> {
            let stdin = std::io::stdin();
            if !stdin.is_terminal() {
                return None;
            }
            let fd = stdin.as_raw_fd();
            // SAFETY: termios is plain data; tcgetattr fills it for a valid fd.
            let mut saved: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: fd is stdin, `saved` a valid termios to fill.
            if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
                return None;
            }
            let mut raw = saved;
            // SAFETY: cfmakeraw only edits the termios it is given.
            unsafe { libc::cfmakeraw(&mut raw) };
            // SAFETY: fd is stdin and `raw` a termios derived from its own.
            if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
                return None;
            }
            Some(RawTerminal { saved })
        }
    }

    impl Drop for RawTerminal {
        fn drop(&mut self) {
            // SAFETY: restores stdin's own saved settings.
            unsafe { libc::tcsetattr(std::io::stdin().as_raw_fd(), libc::TCSANOW, &self.saved) };
        }
    }

    /// Copies the socket to stdout and stdin to the socket until Ctrl-], the end of
    /// input, or the VMM closing the socket.
    pub fn attach(path: &Path) -> anyhow::Result<()> {
        let sock = UnixStream::connect(path)
            .with_context(|| format!("console socket {}", path.display()))?;
        let mut from_vm = sock.try_clone()?;
        let mut to_vm = sock;
        eprint!("attached to {}; Ctrl-] to leave\r\n", path.display());
        let raw = RawTerminal::enable();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let out_done = done_tx.clone();
        std::thread::spawn(move || {
            let mut stdout = std::io::stdout();
            let mut buf = [0u8; 4096];
            while let Ok(n) = from_vm.read(&mut buf) {
                if n == 0
                    || stdout
                        .write_all(&buf[..n])
                        .and_then(|_| stdout.flush())
                        .is_err()
                {
                    break;
                }
            }
            let _ = out_done.send(());
        });
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 256];
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let keys = &buf[..n];
                let end = keys.iter().position(|&b| b == ESCAPE);
                if to_vm.write_all(&keys[..end.unwrap_or(n)]).is_err() || end.is_some() {
                    break;
                }
            }
            let _ = done_tx.send(());
        });
        let _ = done_rx.recv();
        drop(raw);
        eprintln!("\r\nleft the console");
        Ok(())
    }
}

/// Runs `action` against the VM at `sock`.
fn run(sock: &Path, action: Action) -> anyhow::Result<ExitCode> {
    let vmm = VmmClient::new(sock, CALL_TIMEOUT)?;
    let on_sock = || format!("api socket {}", sock.display());
    match action {
        Action::Status => print(&block_on(vmm.info()).with_context(on_sock)?)?,
        Action::Pause => print(&block_on(vmm.pause()).with_context(on_sock)?)?,
        Action::Resume => print(&block_on(vmm.resume()).with_context(on_sock)?)?,
        Action::Shutdown => block_on(vmm.shutdown()).with_context(on_sock)?,
        Action::Stop { force, timeout_ms } => {
            let req = StopRequest { force, timeout_ms };
            print(&block_on(vmm.stop(&req)).with_context(on_sock)?)?
        }
        Action::Snapshot(SnapshotAction::Create { path, diff }) => {
            let req = SnapshotRequest {
                path: std::path::absolute(&path)?,
                diff,
            };
            print(&block_on(vmm.snapshot(&req)).with_context(on_sock)?)?
        }
        Action::MigrateCancel => print(&block_on(vmm.cancel_migration()).with_context(on_sock)?)?,
        Action::Console => {
            let info = block_on(vmm.info()).with_context(on_sock)?;
            let path = info
                .config
                .console_sock
                .context("the VM has no console socket (nova-vmm run --console-sock)")?;
            console::attach(&path)?;
        }
        Action::Migrate(args) => {
            block_on(vmm.migrate(&args.request())).with_context(on_sock)?;
            return follow(&vmm);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows a started migration to its end: each new phase on stderr, the final status
/// on stdout; success only if it completed.
fn follow(vmm: &VmmClient) -> anyhow::Result<ExitCode> {
    let mut last_phase = String::new();
    let status: MigrationStatus = loop {
        std::thread::sleep(POLL);
        let s = match block_on(vmm.migration()) {
            Ok(s) => s,
            Err(e) if e.is_unreachable() => {
                // The source VMM exits once its VM has moved, after answering with the
                // result; gone before that, it took the result with it.
                bail!("lost the source VMM before the migration reported its result: {e}")
            }
            Err(e) => return Err(e.into()),
        };
        if s.phase != last_phase {
            eprintln!(
                "migration: {} (round {}, {} pages to go, {:.1} MB sent)",
                s.phase,
                s.rounds,
                s.remaining_pages,
                s.bytes_sent as f64 / 1e6
            );
            last_phase.clone_from(&s.phase);
        }
        if s.state.is_final() {
            break s;
        }
    };
    print(&status)?;
    if status.state == MigrationState::Completed {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "migration {}: {}",
        status.state.as_str(),
        status.error.as_deref().unwrap_or("no reason given")
    );
    Ok(ExitCode::from(1))
}
