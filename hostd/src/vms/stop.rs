//! Stopping a VM (its ACPI power button, then the VMM's stop, SIGKILL when it does
//! not go), pausing and resuming it, deleting it, and releasing what it holds on
//! this host.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nova_hostd_api::{VmInfo, VmState};
use nova_vmm_api::StopRequest;

use crate::error::{Error, Result};
use crate::vms::process;
use crate::vms::record::Vm;
use crate::vms::spawn::Launch;
use crate::vms::table::Vms;

/// How long a VMM has to exit once asked to (after the guest's own timeout), before
/// SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits until the VM's VMM has exited (pid cleared), up to `t`.
pub async fn wait_exit(vm: &Vm, t: Duration) -> bool {
    let deadline = Instant::now() + t;
    loop {
        if vm.lock().rt.pid.is_none() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), vm.exited.notified()).await;
    }
}

/// Kills the VM's VMM (a stop, not a crash) and waits up to `t` for it to be gone.
pub async fn kill(vm: &Vm, t: Duration) -> bool {
    let pid = {
        let mut g = vm.lock();
        g.rt.stop_requested = true;
        g.rt.pid
    };
    if let Some(pid) = pid {
        process::signal(pid, libc::SIGKILL);
    }
    wait_exit(vm, t).await
}

impl Vms {
    /// Stops a VM: presses its ACPI power button and gives the guest `guest` to
    /// power off (the VMM stops it then), then SIGKILL if the VMM has not exited
    /// (at once when `force`). Idempotent.
    pub async fn stop_vm(
        self: &Arc<Self>,
        id: &str,
        force: bool,
        guest: Duration,
    ) -> Result<VmInfo> {
        let vm = self.get(id)?;
        let _op = vm.op.lock().await;
        self.stop_locked(&vm, force, Some(guest)).await?;
        Ok(self.vm_info(&vm).await)
    }

    /// `guest`: how long the guest has to power off at the power button; None: the
    /// VMM stops the VM at once (a delete has no use for the guest's shutdown).
    async fn stop_locked(&self, vm: &Arc<Vm>, force: bool, guest: Option<Duration>) -> Result<()> {
        let pid = {
            let mut g = vm.lock();
            if matches!(g.rec.state, VmState::MigratingOut) {
                return Err(Error::Conflict(format!(
                    "VM '{}' is migrating; cancel the migration first",
                    vm.id
                )));
            }
            g.rt.stop_requested = true;
            g.rt.pid
        };
        let Some(pid) = pid else {
            let mut g = vm.lock();
            if matches!(
                g.rec.state,
                VmState::Starting | VmState::Running | VmState::Paused
            ) {
                g.rec.state = VmState::Stopped;
                drop(g);
                let _ = vm.persist();
            }
            return Ok(());
        };
        if !force {
            let asked = match (vm.vmm(), guest) {
                (Ok(vmm), Some(guest)) => {
                    let req = StopRequest {
                        force: false,
                        timeout_ms: guest.as_millis().max(1) as u64,
                    };
                    vmm.stop(&req).await.is_ok()
                }
                (Ok(vmm), None) => vmm.shutdown().await.is_ok(),
                (Err(_), _) => false,
            };
            if asked {
                let t = guest.unwrap_or_default() + STOP_TIMEOUT;
                if wait_exit(vm, t).await {
                    return Ok(());
                }
                tracing::warn!(vm = vm.id, "did not stop in {t:?}; killing it");
            }
        }
        process::signal(pid, libc::SIGKILL);
        if wait_exit(vm, Duration::from_secs(5)).await {
            Ok(())
        } else {
            Err(Error::Vmm(format!(
                "nova-vmm pid {pid} did not exit after SIGKILL"
            )))
        }
    }

    /// A cold migration's first step: the guest is asked to stop (killed after
    /// `guest`), then a fresh VMM boots the VM paused, never run, for the migration to
    /// move as it is. The VM keeps its state (migrating out). The caller holds `vm.op`.
    pub async fn reboot_paused(self: &Arc<Self>, vm: &Arc<Vm>, guest: Duration) -> Result<()> {
        let state = vm.state();
        let pid = {
            let mut g = vm.lock();
            g.rt.stop_requested = true;
            g.rt.pid
        };
        if let Some(pid) = pid {
            let req = StopRequest {
                force: false,
                timeout_ms: guest.as_millis().max(1) as u64,
            };
            let asked = match vm.vmm() {
                Ok(vmm) => vmm.stop(&req).await.is_ok(),
                Err(_) => false,
            };
            if !(asked && wait_exit(vm, guest + STOP_TIMEOUT).await) {
                process::signal(pid, libc::SIGKILL);
                if !wait_exit(vm, Duration::from_secs(5)).await {
                    return Err(Error::Vmm(format!(
                        "nova-vmm pid {pid} did not exit after SIGKILL"
                    )));
                }
            }
        }
        {
            let mut g = vm.lock();
            g.rt.stop_requested = false;
            g.rec.state = state;
        }
        vm.persist()?;
        self.launch(vm, Launch::BootPaused).await
    }

    /// Stops the VM, removes its taps, disks and directory.
    pub async fn delete_vm(self: &Arc<Self>, id: &str) -> Result<()> {
        let vm = self.get(id)?;
        let _op = vm.op.lock().await;
        self.stop_locked(&vm, false, None).await?;
        self.release(&vm).await
    }

    /// Removes what the VM holds on this host (taps, directory) and forgets it.
    pub async fn release(&self, vm: &Arc<Vm>) -> Result<()> {
        let taps: Vec<String> = vm.lock().rec.nics.iter().map(|n| n.tap.clone()).collect();
        for t in taps {
            if let Err(e) = self.net.delete_tap(&t).await {
                tracing::warn!(vm = vm.id, "deleting tap {t}: {e}");
            }
        }
        vm.lock().rt.generation += 1; // any supervisor left is stale now
        self.remove(&vm.id)?;
        self.jailer.release(&vm.id);
        tracing::info!(vm = vm.id, "deleted");
        Ok(())
    }

    /// Pauses or resumes (passthrough to the VMM).
    pub async fn pause_resume(self: &Arc<Self>, id: &str, pause: bool) -> Result<VmInfo> {
        let vm = self.get(id)?;
        let _op = vm.op.lock().await;
        let state = vm.state();
        if !matches!(state, VmState::Running | VmState::Paused) {
            return Err(Error::Conflict(
                format!("VM '{id}' is not running ({state:?})").to_lowercase(),
            ));
        }
        let vmm = vm.vmm()?;
        if pause {
            vmm.pause().await
        } else {
            vmm.resume().await
        }
        .map_err(Error::vmm)?;
        vm.set_state(if pause {
            VmState::Paused
        } else {
            VmState::Running
        });
        Ok(self.vm_info(&vm).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vms::record::test_record;
    use crate::vms::table::testing;

    #[tokio::test]
    async fn stopping_a_vm_without_a_vmm_just_marks_it_stopped() {
        let (vms, dir) = testing::vms("stop");
        vms.insert("a", test_record(VmState::Running)).unwrap();
        let info = vms
            .stop_vm("a", false, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(info.state, VmState::Stopped);
        assert!(vms.get("a").unwrap().lock().rt.stop_requested);
        // Stopping again is fine; deleting removes its directory.
        vms.stop_vm("a", true, Duration::from_secs(1))
            .await
            .unwrap();
        vms.delete_vm("a").await.unwrap();
        assert!(!dir.join("vms/a").exists());
        assert!(matches!(vms.get("a"), Err(Error::NotFound(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_migrating_vm_is_not_stopped_and_a_stopped_one_not_paused() {
        let (vms, dir) = testing::vms("stop-migrating");
        vms.insert("m", test_record(VmState::MigratingOut)).unwrap();
        assert!(
            matches!(vms.stop_vm("m", true, Duration::from_secs(1)).await, Err(Error::Conflict(m)) if m.contains("cancel"))
        );
        vms.insert("s", test_record(VmState::Stopped)).unwrap();
        assert!(matches!(
            vms.pause_resume("s", true).await,
            Err(Error::Conflict(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
