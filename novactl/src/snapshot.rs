//! `novactl vm snapshot create|list|delete|restore` and `novactl vm snapshot
//! schedule`: a VM's cluster snapshots (memory, devices and disks) and the schedule
//! that takes and prunes them.

use clap::Subcommand;
use nova_controller_api::{
    ControllerClient, KeepPolicy, NewSnapshot, RestoreSnapshot, ScheduleBody, Snapshot,
    SnapshotSchedule,
};

use crate::dates;
use crate::output::{self, Columns, Format};

#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// Snapshot a running VM: paused once while its memory, devices and disks'
    /// copy-on-write point are taken, then resumed.
    #[command(after_long_help = "Examples:
  novactl vm snapshot create vm-7f3a0c --name before-upgrade")]
    Create {
        /// The VM's id.
        vm: String,
        /// A name for it (made from the time when absent).
        #[arg(long)]
        name: Option<String>,
    },
    /// The snapshots of one VM, or every one you may see.
    #[command(visible_alias = "ls")]
    List {
        /// The VM's id; every snapshot when absent.
        vm: Option<String>,
    },
    /// Delete a snapshot (its files on every host that holds them).
    Delete {
        /// The snapshot's id.
        id: String,
    },
    /// Restore a snapshot into its VM (stopped first), or into a new VM on any host.
    #[command(after_long_help = "Examples:
  novactl vm snapshot restore snap-1a2b3c                       # back in place
  novactl vm snapshot restore snap-1a2b3c --new-vm copy --host 9f2e...")]
    Restore {
        /// The snapshot's id.
        id: String,
        /// Restore into a new VM of this name instead of the snapshot's own VM.
        #[arg(long)]
        new_vm: Option<String>,
        /// The new VM's host (the snapshot's holder when absent).
        #[arg(long, requires = "new_vm")]
        host: Option<String>,
    },
    /// Take a snapshot every N seconds and keep some (remove with --off).
    #[command(after_long_help = "Examples:
  novactl vm snapshot schedule vm-7f3a0c --every 3600 --keep-last 3 --keep-daily 7
  novactl vm snapshot schedule vm-7f3a0c --off")]
    Schedule {
        /// The VM's id.
        vm: String,
        /// Seconds between snapshots.
        #[arg(long, required_unless_present = "off")]
        every: Option<u64>,
        /// Keep the newest N.
        #[arg(long, default_value_t = 0)]
        keep_last: u32,
        /// Keep the newest of each of the last N hours.
        #[arg(long, default_value_t = 0)]
        keep_hourly: u32,
        /// Keep the newest of each of the last N days.
        #[arg(long, default_value_t = 0)]
        keep_daily: u32,
        /// Keep the newest of each of the last N weeks.
        #[arg(long, default_value_t = 0)]
        keep_weekly: u32,
        /// Remove the schedule (its snapshots stay).
        #[arg(long, conflicts_with = "every")]
        off: bool,
    },
}

impl Columns for SnapshotSchedule {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["vm", "every", "keep", "last run"]
    }
    fn cells(&self, _wide: bool) -> Vec<String> {
        let k = self.keep;
        vec![
            self.vm_id.clone(),
            format!("{}s", self.every_secs),
            format!(
                "last {} hourly {} daily {} weekly {}",
                k.last, k.hourly, k.daily, k.weekly
            ),
            if self.last_run_ms == 0 {
                "never".into()
            } else {
                dates::ago(self.last_run_ms)
            },
        ]
    }
}

impl Columns for Snapshot {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["id", "name", "vm", "host", "paused", "size", "created"]
    }
    fn cells(&self, _wide: bool) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            self.vm_name.clone(),
            self.host.clone(),
            format!("{:.1} ms", self.paused_ms),
            format!("{} MiB", self.stored_bytes.div_ceil(1 << 20)),
            dates::ago(self.created_at_ms),
        ]
    }
}

pub async fn run(api: &ControllerClient, c: SnapshotCmd, f: Format) -> anyhow::Result<String> {
    Ok(match c {
        SnapshotCmd::Create { vm, name } => {
            output::one(f, &api.snapshot_vm(&vm, &NewSnapshot { name }).await?)?
        }
        SnapshotCmd::List { vm: Some(vm) } => output::list(f, &api.vm_snapshots(&vm).await?)?,
        SnapshotCmd::List { vm: None } => output::list(f, &api.snapshots().await?)?,
        SnapshotCmd::Delete { id } => {
            api.delete_snapshot(&id).await?;
            format!("snapshot {id} deleted\n")
        }
        SnapshotCmd::Restore { id, new_vm, host } => {
            let vm = api
                .restore_snapshot(&id, &RestoreSnapshot { new_vm, host })
                .await?;
            output::one(f, &vm)?
        }
        SnapshotCmd::Schedule { vm, off: true, .. } => {
            api.delete_snapshot_schedule(&vm).await?;
            format!("snapshot schedule of {vm} removed\n")
        }
        SnapshotCmd::Schedule {
            vm,
            every,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            off: false,
        } => {
            let body = ScheduleBody {
                every_secs: every.unwrap_or_default(),
                keep: KeepPolicy {
                    last: keep_last,
                    hourly: keep_hourly,
                    daily: keep_daily,
                    weekly: keep_weekly,
                },
            };
            output::one(f, &api.set_snapshot_schedule(&vm, &body).await?)?
        }
    })
}
