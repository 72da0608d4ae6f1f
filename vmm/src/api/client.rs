//! `nova-vmm ctl`: one request to a VM's API socket, the JSON answer on stdout.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::http;

/// What `ctl` can ask.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Action {
    /// State, KVM kind, configuration and counters.
    Status,
    /// Pause every vCPU.
    Pause,
    /// Resume paused vCPUs.
    Resume,
    /// Stop the VM; the VMM process exits.
    Shutdown,
    /// Snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotAction),
}

/// `ctl snapshot ...`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum SnapshotAction {
    /// Pause, write state and memory to DIR, resume.
    Create {
        #[arg(long)]
        path: std::path::PathBuf,
        /// Only the pages written since this VM's previous snapshot.
        #[arg(long)]
        diff: bool,
    },
}

/// Sends one request and returns (status, body).
pub fn request(sock: &Path, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = UnixStream::connect(sock).with_context(|| format!("api socket {}", sock.display()))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    std::io::Write::write_all(&mut stream, req.as_bytes())?;
    Ok(http::read_response(&mut BufReader::new(stream))?)
}

/// Runs `action` against the VM at `sock`.
pub fn run(sock: &Path, action: Action) -> anyhow::Result<ExitCode> {
    let (method, path, body) = match action {
        Action::Status => ("GET", "/v1/vm", String::new()),
        Action::Pause => ("PUT", "/v1/vm/pause", String::new()),
        Action::Resume => ("PUT", "/v1/vm/resume", String::new()),
        Action::Shutdown => ("PUT", "/v1/vm/shutdown", String::new()),
        Action::Snapshot(SnapshotAction::Create { path, diff }) => {
            let path = std::path::absolute(&path)?;
            ("PUT", "/v1/snapshot", serde_json::json!({ "path": path, "diff": diff }).to_string())
        }
    };
    let (status, body) = request(sock, method, path, &body)?;
    if !(200..300).contains(&status) {
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(body);
        bail!("{method} {path}: {status}: {msg}");
    }
    if !body.is_empty() {
        println!("{body}");
    }
    Ok(ExitCode::SUCCESS)
}
