//! nova-logging: the one logging setup of nova-vmm, nova-hostd and nova-controller.
//! Logs go to stderr as text or JSON lines (`--log-format`), filtered by `NOVA_LOG`
//! (a `tracing` filter: `info`, `nova_hostd=debug,warn`); colours only on a terminal,
//! so a log file never holds ANSI codes. An API server logs one access line per
//! request with [`access`].

use std::io::IsTerminal;
use std::time::Duration;

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`).
    Json,
}

/// The `--log-format` flag, for each binary's arguments (`#[command(flatten)]`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// Log lines as text or JSON; the filter is the NOVA_LOG environment variable
    /// (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// The filter `NOVA_LOG` asks for, or `default` when it is unset or unreadable (then
/// the reason is the first line logged).
fn filter(default: &str) -> (tracing_subscriber::EnvFilter, Option<String>) {
    match std::env::var("NOVA_LOG") {
        Ok(v) if !v.is_empty() => match tracing_subscriber::EnvFilter::try_new(&v) {
            Ok(f) => (f, None),
            Err(e) => (
                tracing_subscriber::EnvFilter::new(default),
                Some(format!(
                    "NOVA_LOG={v:?} is not a filter ({e}); using {default:?}"
                )),
            ),
        },
        _ => (tracing_subscriber::EnvFilter::new(default), None),
    }
}

/// Installs the process's logger: stderr, `format`, `NOVA_LOG` or `default_filter`.
/// A second call does nothing.
pub fn init(format: LogFormat, default_filter: &str) {
    let (filter, complaint) = filter(default_filter);
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let installed = match format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
            .is_ok(),
    };
    if let (true, Some(c)) = (installed, complaint) {
        tracing::warn!("{c}");
    }
}

/// Logs one served request (target `access`): method, path, status, time taken and
/// who asked (a user id, `host:<id>`, or `-`).
pub fn access(method: &str, path: &str, status: u16, took: Duration, who: &str) {
    tracing::info!(
        target: "access",
        method,
        path,
        status,
        ms = took.as_secs_f64() * 1e3,
        who,
        "{method} {path} {status}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_nova_log_falls_back_and_says_why() {
        std::env::set_var("NOVA_LOG", "nova_hostd=bogus=level");
        let (_, why) = filter("info");
        assert!(why.unwrap().contains("NOVA_LOG"));
        std::env::set_var("NOVA_LOG", "nova_hostd=debug,warn");
        let (f, why) = filter("info");
        assert!(why.is_none());
        assert!(f.to_string().contains("nova_hostd=debug"));
        std::env::remove_var("NOVA_LOG");
    }
}
