//! `novactl vm ...`: create, list (`--watch`), get (a describe view), start, stop,
//! delete and live-migrate VMs, attach to their console (`console`); and how a VM prints as a table row.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use nova_controller_api::{ControllerClient, MigrateBody, Vm};

use crate::output::{self, Columns, Format};
use crate::vm_spec::CreateArgs;
use crate::{dates, describe, progress, watch};

#[derive(Subcommand)]
pub enum VmCmd {
    /// List the VMs you may see.
    #[command(after_long_help = "Examples:
  novactl vm list
  novactl vm list -o wide          # with kernel, disks, NICs, labels, creation date
  novactl vm list --watch          # redraw on every change (Ctrl-C to stop)
  novactl vm list -o json | jq -r '.[] | select(.observed.state == \"running\") | .id'")]
    List(ListArgs),
    /// Describe one VM: spec, placement, observed state, recent operations and events.
    #[command(after_long_help = "Examples:
  novactl vm get vm-7f3a0c          # the describe view
  novactl vm get vm-7f3a0c -o yaml  # the API's object")]
    Get {
        /// The VM's id.
        id: String,
    },
    /// Create a VM; the scheduler places it and, unless --no-start, starts it.
    #[command(after_long_help = "Examples:
  # A Linux VM booting from a disk image with a 20 GiB data disk:
  novactl vm create web --kernel /srv/nova/vmlinux --cmdline 'console=ttyS0 root=/dev/vda' \\
      --image sha256:4f1c0a... --disk size=20G --mem-mib 1024 --vcpus 2 --nics 1 --label app=web
  # Two replicas never on one host:
  novactl vm create web-2 --kernel /srv/nova/vmlinux --label app=web --apart-from app=web
  # A read-only disk cloned from an image:
  novactl vm create db --kernel /srv/nova/vmlinux --disk image=/srv/images/seed.raw,ro")]
    Create(Box<CreateArgs>),
    /// Start a stopped VM.
    Start {
        /// The VM's id.
        id: String,
    },
    /// Stop a VM: its ACPI power button is pressed and the guest has a few seconds
    /// to power off before it is stopped; --force kills its VMM at once.
    #[command(after_long_help = "Examples:
  novactl vm stop vm-7f3a0c           # graceful: the guest powers off
  novactl vm stop vm-7f3a0c --force   # at once, like pulling the plug")]
    Stop {
        /// The VM's id.
        id: String,
        /// Kill the VM's VMM at once instead of asking the guest to power off.
        #[arg(long)]
        force: bool,
    },
    /// Snapshots of a VM: create, list, delete, restore, schedule.
    #[command(subcommand)]
    Snapshot(crate::snapshot::SnapshotCmd),
    /// Delete a VM: its host lets it go, then the record goes.
    Delete {
        /// The VM's id.
        id: String,
    },
    /// Attach the terminal to a VM's serial console (Ctrl-] leaves). A viewer sees
    /// the output; what it types is dropped.
    #[command(after_long_help = "Examples:
  novactl vm console vm-7f3a0c      # raw mode; Ctrl-] to leave")]
    Console {
        /// The VM's id.
        id: String,
    },
    /// Live-migrate a VM to another host under the cluster's migration policy, with a
    /// progress bar until it is done and the downtime it cost.
    #[command(after_long_help = "Examples:
  novactl vm migrate vm-7f3a0c                 # the scheduler picks the destination
  novactl vm migrate vm-7f3a0c --to host-b
  novactl vm migrate vm-7f3a0c --kind cold     # stop, move its disks, boot there
  novactl vm migrate vm-7f3a0c --no-wait       # print the operation and return
  novactl vm migrate vm-7f3a0c --cluster beta  # to the peer cluster beta (its scheduler picks)
  novactl operation wait op-1b2c3d             # follow it later")]
    Migrate {
        /// The VM's id.
        id: String,
        /// The destination host (in `--cluster` when given); the scheduler picks one
        /// when absent.
        #[arg(long, value_name = "HOST")]
        to: Option<String>,
        /// A peer cluster (id or name): a cross-cluster live migration, admitted by
        /// that cluster's policy and scheduler.
        #[arg(long, value_name = "CLUSTER")]
        cluster: Option<String>,
        /// live, warm (paused, moved with its memory and disks, resumed there) or cold
        /// (stopped, its disks moved, booted there); the migration policy's when absent.
        #[arg(long, value_parser = PossibleValuesParser::new(["live", "warm", "cold"])
            .try_map(|s| s.parse::<nova_controller_api::MigrationKind>()))]
        kind: Option<nova_controller_api::MigrationKind>,
        #[command(flatten)]
        wait: progress::WaitArgs,
    },
}

/// The flags of the list commands.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Keep the list on screen and redraw it on every change (from the event stream).
    #[arg(short, long)]
    pub watch: bool,
}

pub async fn run(api: &ControllerClient, cmd: VmCmd, f: Format) -> anyhow::Result<()> {
    let text = match cmd {
        VmCmd::List(a) if a.watch => {
            return watch::list(api, f, "vm.", |api| async move { api.vms().await }).await
        }
        VmCmd::List(_) => output::list(f, &api.vms().await?)?,
        VmCmd::Snapshot(c) => crate::snapshot::run(api, c, f).await?,
        VmCmd::Get { id } => {
            let vm = api.vm(&id).await?;
            if f.is_table() {
                describe::vm(api, &vm, f == Format::Wide).await?
            } else {
                output::one(f, &vm)?
            }
        }
        VmCmd::Create(a) => {
            let vm = api
                .create_vm_in(a.tenant.as_deref(), &a.spec(), a.idempotency_key.as_deref())
                .await?;
            output::one(f, &vm)?
        }
        VmCmd::Start { id } => output::one(f, &api.start_vm(&id).await?)?,
        VmCmd::Stop { id, force } => output::one(f, &api.stop_vm_if(&id, force, None).await?)?,
        VmCmd::Delete { id } => output::one(f, &api.delete_vm(&id).await?)?,
        VmCmd::Console { id } => return crate::console::attach(api, &id).await,
        VmCmd::Migrate {
            id,
            to,
            kind,
            cluster,
            wait,
        } => {
            let op = api
                .migrate_vm(&id, &MigrateBody { to, kind, cluster })
                .await?;
            return progress::run(api, op, wait, f).await;
        }
    };
    print!("{text}");
    Ok(())
}

impl Columns for Vm {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec![
            "id", "name", "tenant", "desired", "observed", "host", "vcpus", "mem_mib", "created",
        ];
        if wide {
            h.extend([
                "kernel",
                "disks",
                "nics",
                "labels",
                "migrating",
                "created_at",
            ]);
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let s = &self.spec;
        let mut c = vec![
            self.id.clone(),
            s.name.clone(),
            self.tenant.clone(),
            describe::desired(self.desired).into(),
            output::or_dash(self.observed.as_ref().map(|o| o.state.clone())),
            output::or_dash(self.host.clone()),
            s.vcpus.to_string(),
            s.mem_mib.to_string(),
            dates::ago(self.created_at_ms),
        ];
        if wide {
            c.extend([
                s.kernel.clone(),
                output::or_dash(Some(
                    s.disks
                        .iter()
                        .map(describe::disk)
                        .collect::<Vec<_>>()
                        .join(";"),
                )),
                s.nics.len().to_string(),
                output::pairs(&s.labels),
                output::or_dash(self.migrating.clone()),
                dates::date(self.created_at_ms),
            ]);
        }
        c
    }
}
