//! `novactl operation ...` (`op`): list (`--watch`), get, wait for and cancel the
//! long-running operations (live migrations, drains); and how one prints as a row.

use clap::Subcommand;
use nova_controller_api::{ControllerClient, MigrationResult, Operation};

use crate::output::{self, Columns, Format};
use crate::vm::ListArgs;
use crate::{dates, progress, watch};

#[derive(Subcommand)]
pub enum OpCmd {
    /// List the operations you may see.
    #[command(after_long_help = "Examples:
  novactl operation list
  novactl op list --watch       # redraw on every change (Ctrl-C to stop)")]
    List(ListArgs),
    /// Show one operation.
    Get {
        /// The operation's id.
        id: String,
    },
    /// Follow an operation to its end with a progress bar, then print its result.
    Wait {
        /// The operation's id.
        id: String,
    },
    /// Ask an operation to stop (a migration not yet switched over leaves its VM on
    /// its source).
    Cancel {
        /// The operation's id.
        id: String,
    },
}

pub async fn run(api: &ControllerClient, cmd: OpCmd, f: Format) -> anyhow::Result<()> {
    let op = match cmd {
        OpCmd::List(a) if a.watch => {
            return watch::list(
                api,
                f,
                "operation.",
                |api| async move { api.operations().await },
            )
            .await
        }
        OpCmd::List(_) => {
            print!("{}", output::list(f, &api.operations().await?)?);
            return Ok(());
        }
        OpCmd::Get { id } => api.operation(&id).await?,
        OpCmd::Wait { id } => {
            let op = api.operation(&id).await?;
            let wait = progress::WaitArgs {
                wait: true,
                no_wait: false,
            };
            return progress::run(api, op, wait, f).await;
        }
        OpCmd::Cancel { id } => api.cancel_operation(&id).await?,
    };
    print!("{}", output::one(f, &op)?);
    Ok(())
}

impl Columns for Operation {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec![
            "id", "kind", "target", "state", "progress", "message", "created",
        ];
        if wide {
            h.extend(["tenant", "downtime_ms", "created_at", "updated_at"]);
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let mut c = vec![
            self.id.clone(),
            self.kind.clone(),
            self.target.clone(),
            progress::state(self.state).into(),
            format!("{}%", self.progress),
            output::or_dash(Some(self.message.clone())),
            dates::ago(self.created_at_ms),
        ];
        if wide {
            let downtime = serde_json::from_value::<MigrationResult>(self.result.clone())
                .ok()
                .and_then(|r| r.downtime_ms);
            c.extend([
                self.tenant.clone(),
                output::or_dash(downtime.map(|d| format!("{d:.2}"))),
                dates::date(self.created_at_ms),
                dates::date(self.updated_at_ms),
            ]);
        }
        c
    }
}
