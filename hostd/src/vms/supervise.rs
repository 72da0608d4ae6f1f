//! Keeping a VMM: launch it (spawn, watch, wait until its API answers), notice its
//! exit (as its parent, or by polling its pid after a reattach), and start it again
//! when the VM's restart policy says so.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nova_hostd_api::{ExitInfo, Resources, VmInfo, VmState};

use crate::error::{Error, Result};
use crate::vms::exit::{self, Ending};
use crate::vms::process;
use crate::vms::record::{now_ms, Vm};
use crate::vms::spawn::Launch;
use crate::vms::table::Vms;
use crate::vms::tail::tail_lines;

/// How long a VMM gets to answer on its API socket after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

impl Vms {
    /// Makes the taps, starts the VMM detached and supervises it; for a boot or a
    /// restore, waits until its API answers. The caller holds `vm.op` and set the state.
    pub async fn launch(self: &Arc<Self>, vm: &Arc<Vm>, launch: Launch) -> Result<()> {
        let result = self.launch_inner(vm, &launch).await;
        if let Err(e) = &result {
            let mut g = vm.lock();
            if g.rt.pid.is_none() && matches!(g.rec.state, VmState::Starting) {
                g.rec.state = VmState::Crashed;
                g.rec.exit.get_or_insert_with(|| ExitInfo {
                    code: None,
                    signal: None,
                    reason: format!("start failed: {e}"),
                    console_tail: Vec::new(),
                    log_tail: Vec::new(),
                    at_ms: now_ms(),
                });
                drop(g);
                let _ = vm.persist();
            }
        }
        result
    }

    async fn launch_inner(self: &Arc<Self>, vm: &Arc<Vm>, launch: &Launch) -> Result<()> {
        let (gen, mut child) = self.spawn_vmm(vm, launch).await?;
        let (vms, vm2) = (self.clone(), vm.clone());
        tokio::spawn(async move {
            let (code, signal) = match child.wait().await {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    (s.code(), s.signal())
                }
                Err(_) => (None, None),
            };
            let end = Ending {
                code,
                signal,
                reaped: true,
            };
            vms.exited(vm2, gen, end).await;
        });
        if matches!(
            launch,
            Launch::Boot | Launch::BootPaused | Launch::Restore { .. }
        ) {
            // `starting` (written by `admit_start` or the create, not yet durable)
            // becomes durable while the VMM starts, and before the VM is reported
            // running: after a power cut it says the VM was active, so it is restarted
            // by its policy, as a durable `running` would say. `running` itself then
            // needs no fsync of its own: for recovery the two are the same.
            let v = vm.clone();
            let sync = tokio::task::spawn_blocking(move || v.sync_record());
            let (ready, synced) = tokio::join!(self.wait_ready(vm, gen), sync);
            match synced {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(vm = vm.id, "persisting state: {e}"),
                Err(e) => tracing::warn!(vm = vm.id, "persisting state: {e}"),
            }
            ready?;
            let mut g = vm.lock();
            if g.rt.generation == gen && g.rt.pid.is_some() && g.rec.state == VmState::Starting {
                g.rec.state = VmState::Running;
                drop(g);
                let _ = vm.persist_soon();
            }
        }
        Ok(())
    }

    /// Waits until the VMM of generation `gen` answers `GET /v1/vm`.
    pub async fn wait_ready(&self, vm: &Vm, gen: u64) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            {
                let g = vm.lock();
                if g.rt.generation == gen && g.rt.pid.is_none() && g.rec.state == VmState::Stopped {
                    // It ran and the guest already powered off: started all right.
                    return Ok(());
                }
                if g.rt.generation != gen || g.rt.pid.is_none() {
                    let reason = g
                        .rec
                        .exit
                        .as_ref()
                        .map(|e| e.reason.clone())
                        .unwrap_or_default();
                    let log = tail_lines(&vm.vmm_log(), 3).0.join(" | ");
                    return Err(Error::Vmm(format!(
                        "nova-vmm exited while starting: {reason}: {log}"
                    )));
                }
            }
            let vmm = vm.vmm()?;
            if let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(1), vmm.info()).await {
                vm.lock().rt.kvm = Some(info.kvm);
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Vmm(format!(
                    "the VMM's API did not answer within {READY_TIMEOUT:?}"
                )));
            }
            // Short: a restored VMM answers within a few milliseconds.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A VMM exited: record it, and restart the VM when its policy says so. (A boxed
    /// future: the restart's own supervisor ends up here again.)
    pub fn exited(
        self: Arc<Self>,
        vm: Arc<Vm>,
        gen: u64,
        end: Ending,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let Some(delay) = exit::record(&vm, gen, end) else {
                return;
            };
            tokio::time::sleep(delay).await;
            {
                let mut g = vm.lock();
                if g.rt.stop_requested || g.rt.generation != gen || !self.contains(&vm.id) {
                    return;
                }
                g.rec.restarts += 1;
            }
            tracing::info!(vm = vm.id, "restarting under its restart policy");
            if let Err(e) = self.start_vm(&vm.id).await {
                tracing::error!(vm = vm.id, "restart failed: {e}");
            }
        })
    }

    /// Watches a VMM hostd is not the parent of (after a reattach) until it exits.
    pub fn watch_pid(self: &Arc<Self>, vm: Arc<Vm>, gen: u64, pid: u32) {
        let vms = self.clone();
        tokio::spawn(async move {
            while process::alive(pid) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if vm.lock().rt.generation != gen {
                    return;
                }
            }
            let end = Ending {
                code: None,
                signal: None,
                reaped: false,
            };
            vms.exited(vm, gen, end).await;
        });
    }

    /// Admits a stopped VM's vCPUs and memory and marks it `starting`. The caller
    /// holds `vm.op`.
    pub async fn admit_start(&self, vm: &Vm, why_not: &str) -> Result<()> {
        let _adm = self.admission.lock().await;
        let state = vm.state();
        if !matches!(
            state,
            VmState::Created | VmState::Stopped | VmState::Crashed
        ) {
            return Err(Error::Conflict(
                format!("VM '{}' is {state:?}{why_not}", vm.id).to_lowercase(),
            ));
        }
        let spec = vm.lock().rec.spec.clone();
        self.admit(Resources {
            vcpus: spec.vcpus as u64,
            mem_mib: spec.mem_mib,
            disk_mib: 0,
        })?;
        // Durable once the launch has synced it (see `launch_inner`); not under the
        // admission lock, which every other VM's start and create waits for.
        vm.lock().rec.state = VmState::Starting;
        if let Err(e) = vm.persist_soon() {
            tracing::warn!(vm = vm.id, "persisting state: {e}");
        }
        Ok(())
    }

    /// Starts a created, stopped or crashed VM.
    pub async fn start_vm(self: &Arc<Self>, id: &str) -> Result<VmInfo> {
        let vm = self.get(id)?;
        let _op = vm.op.lock().await;
        self.admit_start(&vm, ", not startable").await?;
        self.launch(&vm, Launch::Boot).await?;
        Ok(self.vm_info(&vm).await)
    }
}
