//! hostd starting again: every VM record read back, the VMMs still running taken
//! back (the pid file's process, if it is a nova-vmm naming the VM's directory, and
//! its API), the ones that died while hostd was away reported and restarted by
//! policy. VMs that were migrating are handed back to the caller: only the migration
//! knows what to do with them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nova_hostd_api::VmState;
use nova_vmm_api::RunState;

use crate::vms::exit::Ending;
use crate::vms::process;
use crate::vms::record::{is_active, Vm};
use crate::vms::table::Vms;

/// A VM that was migrating when hostd stopped, with what is left of its VMM.
pub struct Adopted {
    pub vm: Arc<Vm>,
    /// The supervision generation given to the VMM found (or to its absence).
    pub gen: u64,
    /// The VMM still running, if any (already watched).
    pub pid: Option<u32>,
    /// What that VMM's API said, if it answered.
    pub run: Option<RunState>,
}

/// The state a VM not migrating has once its VMM is found again.
pub fn state_after_reattach(run: Option<RunState>) -> VmState {
    match run {
        Some(RunState::Paused) => VmState::Paused,
        _ => VmState::Running,
    }
}

impl Vms {
    /// A VM whose record is unreadable: its VMM, if one still runs, is left running
    /// (never killed, never restarted from a guessed spec) and named in the report.
    fn note_unknown_vmm(&self, vm: &Arc<crate::vms::record::Vm>) {
        let Some(pid) = process::read_pid(&vm.pid_file())
            .filter(|&p| process::alive(p) && process::is_our_vmm(p, &vm.dir))
        else {
            return;
        };
        let mut g = vm.lock();
        g.rt.pid = Some(pid);
        if let Some(e) = g.rec.exit.as_mut() {
            e.reason.push_str(&format!(
                "; its VMM (pid {pid}) is still running, left alone"
            ));
        }
        tracing::warn!(vm = vm.id, pid, "VMM of an unreadable record left running");
    }

    /// Reads every VM record, takes back the VMMs still running, reports the ones
    /// gone; returns the VMs that were migrating.
    pub async fn reattach_all(self: &Arc<Self>) -> Vec<Adopted> {
        let mut migrating = Vec::new();
        for (id, rec) in self.load_records() {
            let state = rec.state;
            let vm = self.adopt(&id, rec);
            if state == VmState::Unknown {
                self.note_unknown_vmm(&vm);
                continue;
            }
            if !is_active(state) {
                continue;
            }
            let pid = process::read_pid(&vm.pid_file())
                .filter(|&p| process::alive(p) && process::is_our_vmm(p, &vm.dir));
            let gen = {
                let mut g = vm.lock();
                g.rt.generation += 1;
                g.rt.pid = pid;
                g.rt.generation
            };
            let mut run = None;
            if let Some(pid) = pid {
                if let Ok(vmm) = vm.vmm() {
                    if let Ok(info) = vmm.info().await {
                        let mut g = vm.lock();
                        g.rt.kvm = Some(info.kvm);
                        g.rt.started =
                            Instant::now().checked_sub(Duration::from_millis(info.uptime_ms));
                        run = Some(info.state);
                    }
                }
                if let Some(uid) = process::uid(pid) {
                    self.jailer.keep(&id, uid);
                }
                tracing::info!(vm = id, pid, "reattached");
                self.watch_pid(vm.clone(), gen, pid);
            }
            if matches!(state, VmState::MigratingIn | VmState::MigratingOut) {
                migrating.push(Adopted { vm, gen, pid, run });
            } else if pid.is_some() {
                vm.set_state(state_after_reattach(run));
            } else {
                let end = Ending {
                    code: None,
                    signal: None,
                    reaped: false,
                };
                self.clone().exited(vm, gen, end).await;
            }
        }
        migrating
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_paused_vm_stays_paused_across_a_hostd_restart() {
        use super::*;
        assert_eq!(
            state_after_reattach(Some(RunState::Paused)),
            VmState::Paused
        );
        assert_eq!(
            state_after_reattach(Some(RunState::Running)),
            VmState::Running
        );
        // A VMM alive whose API did not answer yet is taken as running.
        assert_eq!(state_after_reattach(None), VmState::Running);
    }
}
