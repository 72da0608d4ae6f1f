//! The event stream at the command line: `--watch` on lists (the list is drawn again
//! each time an event about its kind of object arrives: no polling), and `novactl
//! events`, which prints the stream itself.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use nova_controller_api::{ControllerClient, Event};

use crate::output::{self, Columns, Format};
use crate::progress::RECONNECT_FOR;

/// Events that arrive within this long of one another are drawn once.
const SETTLE: Duration = Duration::from_millis(50);

/// Prints the list `fetch` reads, then again after every event whose kind starts with
/// `kinds` (`vm.`), until interrupted. On a terminal each drawing replaces the last;
/// on a pipe tables follow one another separated by a blank line, json is one array
/// per line and yaml one document per drawing.
pub async fn list<T, F, Fut>(
    api: &ControllerClient,
    f: Format,
    kinds: &str,
    fetch: F,
) -> anyhow::Result<()>
where
    T: Columns,
    F: Fn(ControllerClient) -> Fut,
    Fut: Future<Output = Result<Vec<T>, nova_http::Error>>,
{
    // Subscribed before the first read: no change falls between the two.
    let mut events = api.follow_events(None, RECONNECT_FOR).await?;
    let tty = std::io::stdout().is_terminal();
    let mut first = true;
    loop {
        let items = fetch(api.clone()).await?;
        let text = match f {
            Format::Table | Format::Wide => output::list(f, &items)?,
            Format::Json | Format::Yaml => output::record(f, &items)?,
        };
        let mut out = std::io::stdout().lock();
        if tty && f.is_table() {
            // Home and clear the screen, then draw.
            write!(out, "\x1b[H\x1b[2J{text}")?;
        } else if f.is_table() && !first {
            write!(out, "\n{text}")?;
        } else {
            write!(out, "{text}")?;
        }
        out.flush()?;
        drop(out);
        first = false;
        // Wait for a change to this kind of object, then for the burst to settle.
        loop {
            match events.next().await {
                Some(ev) if ev.as_ref().is_ok_and(|e| e.kind.starts_with(kinds)) => break,
                Some(ev) => drop(ev?),
                None => anyhow::bail!("the event stream ended"),
            }
        }
        while let Ok(Some(ev)) = tokio::time::timeout(SETTLE, events.next()).await {
            ev?;
        }
    }
}

/// The flags of `novactl events`.
#[derive(Args, Debug)]
#[command(after_long_help = "Examples:
  novactl events                         # new changes, as a table, until Ctrl-C
  novactl events --since 0 -o json       # the whole stored log, then new changes, a JSON line each
  novactl events --since 1234 -o json | jq -c 'select(.kind == \"vm.state\")'")]
pub struct EventsArgs {
    /// Replay the stored events after this revision first (0: all that are kept);
    /// only new ones when absent. A dropped connection resumes after the last one seen.
    #[arg(long, value_name = "REVISION")]
    pub since: Option<u64>,
}

/// Column widths of the streamed events table (rows cannot be measured in advance).
const EVENT_WIDTHS: [usize; 4] = [8, 10, 22, 20];

/// `cells` padded to [`EVENT_WIDTHS`], the last one as it is.
fn fixed(cells: Vec<String>) -> String {
    let mut s = String::new();
    for (i, c) in cells.into_iter().enumerate() {
        match EVENT_WIDTHS.get(i) {
            Some(w) => s.push_str(&format!("{c:<w$}  ")),
            None => s.push_str(&format!("{c}  ")),
        }
    }
    s.trim_end().to_string() + "\n"
}

/// `novactl events`: a table row (or a JSON line, or a YAML document) per event.
pub async fn events(api: &ControllerClient, a: EventsArgs, f: Format) -> anyhow::Result<()> {
    let mut events = api.follow_events(a.since, RECONNECT_FOR).await?;
    let wide = f == Format::Wide;
    let mut out = std::io::stdout();
    if f.is_table() {
        let headers = Event::headers(wide)
            .iter()
            .map(|h| h.to_uppercase())
            .collect();
        out.write_all(fixed(headers).as_bytes())?;
        out.flush()?;
    }
    while let Some(ev) = events.next().await {
        let ev = ev?;
        let text = if f.is_table() {
            fixed(ev.cells(wide))
        } else {
            output::record(f, &ev)?
        };
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}
