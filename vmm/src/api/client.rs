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
    /// Live-migrate the VM to a `nova-vmm run --incoming` destination. Progress on
    /// stderr, the result as one JSON object on stdout.
    Migrate {
        /// tcp:HOST:PORT of the destination.
        #[arg(long)]
        to: String,
        #[arg(long, value_enum, default_value = "hybrid")]
        mode: MigrateMode,
        /// Longest pause pre-copy aims for.
        #[arg(long, default_value_t = 5)]
        downtime_ms: u64,
        /// Bandwidth cap, all connections together.
        #[arg(long)]
        bandwidth_mbit: Option<u64>,
        #[arg(long, value_enum, default_value = "none")]
        compress: MigrateCompress,
        /// TCP connections carrying memory in parallel.
        #[arg(long, default_value_t = 1)]
        connections: u32,
    },
    /// Cancel a running migration (the VM keeps running here).
    MigrateCancel,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum MigrateMode {
    Precopy,
    Postcopy,
    Hybrid,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum MigrateCompress {
    None,
    Zstd,
    Lz4,
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
    let mut stream =
        UnixStream::connect(sock).with_context(|| format!("api socket {}", sock.display()))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    std::io::Write::write_all(&mut stream, req.as_bytes())?;
    Ok(http::read_response(&mut BufReader::new(stream))?)
}

fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.to_string())
}

/// Starts a migration and follows it to the end.
fn migrate(sock: &Path, body: &str) -> anyhow::Result<ExitCode> {
    let (status, resp) = request(sock, "PUT", "/v1/migration", body)?;
    if status != 200 {
        bail!("PUT /v1/migration: {status}: {}", error_message(&resp));
    }
    let mut last_phase = String::new();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (status, resp) = match request(sock, "GET", "/v1/migration", "") {
            Ok(r) => r,
            // The source VMM exits once its VM has moved; its last answer was the result.
            Err(_) => bail!("lost the source VMM before the migration reported its result"),
        };
        if status != 200 {
            bail!("GET /v1/migration: {status}: {}", error_message(&resp));
        }
        let v: serde_json::Value = serde_json::from_str(&resp)?;
        let phase = v["phase"].as_str().unwrap_or("").to_string();
        if phase != last_phase {
            eprintln!(
                "migration: {phase} (round {}, {} pages to go, {:.1} MB sent)",
                v["rounds"],
                v["remaining_pages"],
                v["bytes_sent"].as_f64().unwrap_or(0.0) / 1e6
            );
            last_phase = phase;
        }
        match v["state"].as_str() {
            Some("running") => continue,
            Some("completed") => {
                println!("{resp}");
                return Ok(ExitCode::SUCCESS);
            }
            _ => {
                println!("{resp}");
                eprintln!("migration {}: {}", v["state"], v["error"]);
                return Ok(ExitCode::from(1));
            }
        }
    }
}

/// Runs `action` against the VM at `sock`.
pub fn run(sock: &Path, action: Action) -> anyhow::Result<ExitCode> {
    let (method, path, body) = match action {
        Action::Status => ("GET", "/v1/vm", String::new()),
        Action::Pause => ("PUT", "/v1/vm/pause", String::new()),
        Action::Resume => ("PUT", "/v1/vm/resume", String::new()),
        Action::Shutdown => ("PUT", "/v1/vm/shutdown", String::new()),
        Action::Migrate {
            to,
            mode,
            downtime_ms,
            bandwidth_mbit,
            compress,
            connections,
        } => {
            let req = nova_vmm_api::MigrationRequest {
                to,
                params: nova_vmm_api::MigrationParams {
                    mode: format!("{mode:?}")
                        .to_lowercase()
                        .parse()
                        .map_err(anyhow::Error::msg)?,
                    downtime_ms,
                    bandwidth_mbit,
                    compress: format!("{compress:?}")
                        .to_lowercase()
                        .parse()
                        .map_err(anyhow::Error::msg)?,
                    connections,
                },
            };
            return migrate(sock, &serde_json::to_string(&req)?);
        }
        Action::MigrateCancel => ("DELETE", "/v1/migration", String::new()),
        Action::Snapshot(SnapshotAction::Create { path, diff }) => {
            let path = std::path::absolute(&path)?;
            (
                "PUT",
                "/v1/snapshot",
                serde_json::json!({ "path": path, "diff": diff }).to_string(),
            )
        }
    };
    let (status, body) = request(sock, method, path, &body)?;
    if !(200..300).contains(&status) {
        bail!("{method} {path}: {status}: {}", error_message(&body));
    }
    if !body.is_empty() {
        println!("{body}");
    }
    Ok(ExitCode::SUCCESS)
}
