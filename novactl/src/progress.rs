//! Following a long operation (a live migration, a drain) to its end: a progress bar
//! on a terminal (a line per change otherwise), driven by the operation's events on
//! the event stream, then its result with the downtime each VM saw.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use nova_controller_api::{ControllerClient, MigrationResult, OpState, Operation};

use crate::output::{self, Format};

/// How long a follower keeps trying to reopen a dropped event stream (a controller
/// restarting) before it gives up.
pub const RECONNECT_FOR: Duration = Duration::from_secs(30);

/// `--wait` / `--no-wait`.
#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Follow the operation to its end with a progress bar (the default).
    #[arg(long, overrides_with = "no_wait")]
    pub wait: bool,
    /// Print the operation and return at once (follow it with `operation wait`).
    #[arg(long)]
    pub no_wait: bool,
}

/// Prints `op` (`--no-wait`) or follows it to its end and prints its result; an
/// operation that did not succeed is an error.
pub async fn run(
    api: &ControllerClient,
    op: Operation,
    w: WaitArgs,
    f: Format,
) -> anyhow::Result<()> {
    if w.no_wait && !w.wait {
        print!("{}", output::one(f, &op)?);
        return Ok(());
    }
    let done = follow(api, op, f).await?;
    print!("{}", result(f, &done)?);
    if done.state != OpState::Succeeded {
        bail!(
            "{} {} {}: {}",
            done.kind,
            done.target,
            state(done.state),
            done.message
        );
    }
    Ok(())
}

/// Follows `op` until it is final, showing its progress when `f` is for people.
pub async fn follow(api: &ControllerClient, op: Operation, f: Format) -> anyhow::Result<Operation> {
    let show = Show::new(f, &op);
    // Subscribed first, then read: an end between the two is in the stream or the read.
    let mut events = api.follow_events(Some(op.revision), RECONNECT_FOR).await?;
    let mut cur = api.operation(&op.id).await?;
    show.update(&cur);
    while !cur.state.is_final() {
        let Some(ev) = events.next().await else {
            bail!("the event stream ended before operation {} did", op.id);
        };
        let ev = ev?;
        if ev.id != op.id || !ev.kind.starts_with("operation.") {
            continue;
        }
        // Progress and end events carry the whole operation; others (a cancel
        // request) do not.
        if let Ok(o) = serde_json::from_value::<Operation>(ev.data) {
            cur = o;
            show.update(&cur);
        }
    }
    show.finish(&cur);
    Ok(cur)
}

/// An operation's state as a word.
pub fn state(s: OpState) -> &'static str {
    match s {
        OpState::Pending => "pending",
        OpState::Running => "running",
        OpState::Succeeded => "succeeded",
        OpState::Failed => "failed",
        OpState::Cancelled => "cancelled",
    }
}

/// Where the progress goes: a bar on a terminal, lines on a pipe, nothing for json/yaml.
struct Show {
    bar: Option<ProgressBar>,
    lines: bool,
    last: std::cell::RefCell<String>,
}

impl Show {
    fn new(f: Format, op: &Operation) -> Show {
        let people = f.is_table();
        let bar = (people && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(100);
            b.set_style(
                ProgressStyle::with_template("{spinner} {prefix} [{bar:40}] {pos:>3}% {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_prefix(format!("{} {}", op.kind, op.target));
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Show {
            lines: people && bar.is_none(),
            bar,
            last: Default::default(),
        }
    }

    fn update(&self, op: &Operation) {
        if let Some(b) = &self.bar {
            b.set_position(op.progress.into());
            b.set_message(op.message.clone());
        } else if self.lines {
            let line = format!(
                "{} {}: {:>3}% {} {}",
                op.kind,
                op.target,
                op.progress,
                state(op.state),
                op.message
            );
            if *self.last.borrow() != line {
                eprintln!("{line}");
                *self.last.borrow_mut() = line;
            }
        }
    }

    fn finish(&self, op: &Operation) {
        match &self.bar {
            Some(b) => {
                b.set_position(op.progress.into());
                b.finish_with_message(format!("{}: {}", state(op.state), op.message));
            }
            None => self.update(op),
        }
    }
}

/// The result of a finished operation: for people, each moved VM with its downtime;
/// for scripts, the operation itself.
fn result(f: Format, op: &Operation) -> anyhow::Result<String> {
    if !f.is_table() {
        return output::data(f, op);
    }
    if op.state != OpState::Succeeded {
        return Ok(String::new());
    }
    let mut out = String::new();
    if op.kind == "migrate" {
        let r: MigrationResult = serde_json::from_value(op.result.clone())?;
        out.push_str(&moved(&op.target, &r));
    } else if let Ok(per_vm) =
        serde_json::from_value::<BTreeMap<String, MigrationResult>>(op.result.clone())
    {
        if per_vm.is_empty() {
            out.push_str(&format!("{} {}: nothing to move\n", op.kind, op.target));
        }
        for (vm, r) in per_vm {
            out.push_str(&moved(&vm, &r));
        }
    }
    Ok(out)
}

/// One VM's move: where from, where to, the downtime it saw.
fn moved(vm: &str, r: &MigrationResult) -> String {
    if let Some(e) = &r.error {
        return format!("{vm}: not moved: {e}\n");
    }
    if r.to.is_empty() {
        return format!(
            "{vm}: stopped, let go by {} (placed again on start)\n",
            r.from
        );
    }
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
    let mut s = format!(
        "{vm}: {} -> {}: downtime {}, total {}",
        r.from,
        r.to,
        ms(r.downtime_ms),
        ms(r.total_ms)
    );
    if let Some(b) = r.bytes {
        s.push_str(&format!(", {:.1} MiB", b as f64 / (1 << 20) as f64));
    }
    if let Some(n) = r.rounds {
        s.push_str(&format!(" in {n} rounds"));
    }
    if let Some(m) = r.mode {
        s.push_str(&format!(" ({})", m.as_str()));
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_says_where_and_how_long_the_vm_paused() {
        let r = MigrationResult {
            from: "a".into(),
            to: "b".into(),
            downtime_ms: Some(0.4213),
            total_ms: Some(152.0),
            bytes: Some(3 << 20),
            rounds: Some(4),
            ..Default::default()
        };
        assert_eq!(
            moved("vm-1", &r),
            "vm-1: a -> b: downtime 0.42 ms, total 152.00 ms, 3.0 MiB in 4 rounds\n"
        );
    }
}
