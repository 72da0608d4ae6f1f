//! `novactl host ...`: list (`--watch`), get, cordon, uncordon, drain, upgrade (in
//! `upgrade`), power off and reboot hosts (the system tenant's business); and how a
//! host prints as a row.

use clap::Subcommand;
use nova_controller_api::{ControllerClient, Host, HostState, PowerAction, SystemPower};

use crate::output::{self, Columns, Format};
use crate::vm::ListArgs;
use crate::{dates, progress, watch};

#[derive(Subcommand)]
pub enum HostCmd {
    /// List the hosts.
    #[command(after_long_help = "Examples:
  novactl host list
  novactl host list -o wide     # with URL, KVM kind, labels, registration date
  novactl host list --watch     # redraw on every change (Ctrl-C to stop)")]
    List(ListArgs),
    /// Show one host.
    Get {
        /// The host's id.
        id: String,
    },
    /// Place no new VMs on a host (its VMs stay).
    Cordon {
        /// The host's id.
        id: String,
    },
    /// Let the scheduler place VMs on a host again.
    Uncordon {
        /// The host's id.
        id: String,
    },
    /// Cordon a host and live-migrate every VM away under the migration policy, with a
    /// progress bar until it is empty and the downtime each VM saw.
    #[command(after_long_help = "Examples:
  novactl host drain host-a             # follow it to the end
  novactl host drain host-a --no-wait   # print the operation and return
  novactl host uncordon host-a          # once it is back in service")]
    Drain {
        /// The host's id.
        id: String,
        #[command(flatten)]
        wait: progress::WaitArgs,
    },
    /// Install a host image version (the controller's --system-images) on a host: it
    /// reboots into it and keeps it only if it registers again in time, else falls back.
    #[command(after_long_help = "Examples:
  novactl host drain host-a && novactl host upgrade host-a --image 0.2.0
  novactl host upgrade host-a            # the newest version the controller holds")]
    Upgrade {
        /// The host's id.
        id: String,
        #[command(flatten)]
        args: crate::upgrade::UpgradeArgs,
    },
    /// Power a host on the host image off: its VMs first, as its `vms_at_shutdown`
    /// says (stopped, or migrated away); drain it first to move them under the policy.
    #[command(after_long_help = "Examples:
  novactl host drain host-a && novactl host poweroff host-a")]
    Poweroff {
        /// The host's id.
        id: String,
    },
    /// Reboot a host on the host image (its VMs first, as for poweroff); it joins
    /// again when it is back.
    #[command(after_long_help = "Examples:
  novactl host drain host-a && novactl host reboot host-a && novactl host uncordon host-a")]
    Reboot {
        /// The host's id.
        id: String,
    },
}

pub async fn run(api: &ControllerClient, cmd: HostCmd, f: Format) -> anyhow::Result<()> {
    let h = match cmd {
        HostCmd::List(a) if a.watch => {
            return watch::list(api, f, "host.", |api| async move { api.hosts().await }).await
        }
        HostCmd::List(_) => {
            print!("{}", output::list(f, &api.hosts().await?)?);
            return Ok(());
        }
        HostCmd::Get { id } => api.host(&id).await?,
        HostCmd::Cordon { id } => api.cordon(&id).await?,
        HostCmd::Uncordon { id } => api.uncordon(&id).await?,
        HostCmd::Drain { id, wait } => {
            let op = api.drain(&id).await?;
            return progress::run(api, op, wait, f).await;
        }
        HostCmd::Upgrade { id, args } => return crate::upgrade::host(api, &id, args, f).await,
        HostCmd::Poweroff { id } => return power(api, &id, PowerAction::Poweroff).await,
        HostCmd::Reboot { id } => return power(api, &id, PowerAction::Reboot).await,
    };
    print!("{}", output::one(f, &h)?);
    Ok(())
}

async fn power(api: &ControllerClient, id: &str, action: PowerAction) -> anyhow::Result<()> {
    api.power_host(id, &SystemPower { action }).await?;
    let what = match action {
        PowerAction::Poweroff => "powering off",
        PowerAction::Reboot => "rebooting",
    };
    println!("host {id} is {what} (its VMs first, as its vms_at_shutdown says)");
    Ok(())
}

impl Columns for Host {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec![
            "id",
            "hostname",
            "state",
            "scheduling",
            "vcpus",
            "mem_mib",
            "heartbeat",
        ];
        if wide {
            h.extend(["url", "kvm", "image", "labels", "registered_at"]);
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let scheduling = match (self.draining, self.cordoned) {
            (true, _) => "draining",
            (false, true) => "cordoned",
            (false, false) => "schedulable",
        };
        let mut c = vec![
            self.id.clone(),
            self.hostname.clone(),
            match self.state {
                HostState::Ready => "ready",
                HostState::Down => "down",
            }
            .into(),
            scheduling.into(),
            format!("{}/{}", self.allocated.vcpus, self.capacity.vcpus),
            format!("{}/{}", self.allocated.mem_mib, self.capacity.mem_mib),
            dates::ago(self.last_heartbeat_ms),
        ];
        if wide {
            c.extend([
                self.url.clone(),
                self.kvm.clone(),
                self.image_version.clone().unwrap_or_else(|| "-".into()),
                output::pairs(&self.labels),
                dates::date(self.registered_at_ms),
            ]);
        }
        c
    }
}
