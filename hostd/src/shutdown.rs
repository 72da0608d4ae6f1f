//! What hostd does with its VMs when it is told to stop (`--vms-at-exit`): keep them
//! running (the default: restarting or upgrading hostd never touches a VM), stop them
//! (the host image's power-off: every guest gets its ACPI power button, all at once,
//! and is killed after the stop timeout), or migrate them away first (hostd asks the
//! controller to drain this host with its own credential, waits until it runs no VM,
//! then stops whatever is left).

use std::sync::Arc;
use std::time::{Duration, Instant};

use nova_hostd_api::{VmState, DEFAULT_STOP_TIMEOUT_MS};

use crate::host::Host;

/// `--vms-at-exit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum VmsAtExit {
    #[default]
    Keep,
    Stop,
    Migrate,
}

/// How long a drain may take before what is left is stopped.
pub const MIGRATE_WAIT: Duration = Duration::from_secs(240);

fn running(host: &Host) -> Vec<String> {
    host.vms
        .all()
        .iter()
        .filter(|v| {
            matches!(
                v.state(),
                VmState::Starting | VmState::Running | VmState::Paused | VmState::MigratingOut
            )
        })
        .map(|v| v.id.clone())
        .collect()
}

/// Stops every VM still running, all at once.
async fn stop_all(host: &Arc<Host>) {
    let ids = running(host);
    tracing::info!(vms = ids.len(), "stopping every VM before the host stops");
    let guest = Duration::from_millis(DEFAULT_STOP_TIMEOUT_MS);
    let stops = ids.into_iter().map(|id| {
        let h = host.clone();
        tokio::spawn(async move {
            match h.vms.stop_vm(&id, false, guest).await {
                Ok(vm) => {
                    tracing::info!(vm = %id, state = ?vm.state, "VM stopped for the host's stop")
                }
                Err(e) => tracing::warn!(vm = %id, "stopping it for the host's stop: {e}"),
            }
        })
    });
    for s in stops.collect::<Vec<_>>() {
        let _ = s.await;
    }
}

/// Applies `policy` as hostd stops; `controller` is the client to drain with (for
/// `migrate`: without one, VMs are stopped).
pub async fn run(host: &Arc<Host>, policy: VmsAtExit, controller: Option<nova_http::Client>) {
    match policy {
        VmsAtExit::Keep => {}
        VmsAtExit::Stop => stop_all(host).await,
        VmsAtExit::Migrate => {
            if running(host).is_empty() {
                return;
            }
            match crate::controller::own_client(host, controller.as_ref()) {
                Some(c) => {
                    let path = format!("/v1/hosts/{}/drain", host.host_id);
                    match c.post::<_, serde::de::IgnoredAny>(&path, &()).await {
                        Ok(_) => {
                            tracing::info!("asked the controller to drain this host");
                            let t = Instant::now();
                            while !running(host).is_empty() && t.elapsed() < MIGRATE_WAIT {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                        Err(e) => tracing::warn!("asking the controller to drain this host: {e}"),
                    }
                }
                None => tracing::warn!("no controller credential to drain with"),
            }
            stop_all(host).await;
        }
    }
}
