//! A hostd restarted in the middle of migrations: each VM that was migrating is
//! settled by the side it was on (see `outgoing` and `incoming`).

use std::sync::Arc;

use nova_hostd_api::{MigrationState, VmState};

use crate::error::Error;
use crate::migration::outgoing::End;
use crate::migration::state::Migrations;
use crate::vms::exit::Ending;
use crate::vms::reattach::Adopted;
use crate::vms::record::Vm;

impl Migrations {
    /// Settles every VM the reattach found migrating.
    pub async fn recover(self: &Arc<Self>, adopted: Vec<Adopted>) {
        for a in adopted {
            if a.vm.state() == VmState::MigratingIn {
                self.recover_incoming(a).await;
                continue;
            }
            if a.pid.is_some() || self.pending(&a.vm).is_some() {
                // Its VMM runs (follow it), or is gone and the destination knows
                // whether the VM moved.
                self.resume_outgoing(a.vm);
            } else if self.last_seen_completed(&a.vm) {
                tracing::info!(
                    vm = a.vm.id,
                    "migrated out while hostd was away; letting go of it"
                );
                let _ = self.vms.release(&a.vm).await;
            } else {
                // Nothing says it moved: its VMM is gone, report how.
                a.vm.lock().rec.state = VmState::Running;
                let end = Ending {
                    code: None,
                    signal: None,
                    reaped: false,
                };
                self.vms.clone().exited(a.vm, a.gen, end).await;
            }
        }
    }
}

impl Migrations {
    /// After a hostd restart with a migration out under way: follow it to its end (if
    /// the VMM is gone already, the destination says whether the VM runs there).
    pub fn resume_outgoing(self: &Arc<Self>, vm: Arc<Vm>) {
        let Some(p) = self.pending(&vm) else {
            vm.set_state(VmState::Running);
            return;
        };
        let peer = match self.peer(&p.target) {
            Ok(peer) => peer,
            Err(e) => {
                tracing::error!(vm = vm.id, "the pending migration's target: {e}");
                vm.set_state(VmState::Running);
                return;
            }
        };
        let m = self.clone();
        tokio::spawn(async move {
            let op = vm.op.lock().await;
            // Warm and cold migrations stop or pause the guest before the stream: a
            // hostd killed then finds a VMM that was never asked to migrate (or, cold,
            // none at all). Nothing reached the destination, so the VM stays here.
            let streaming = match vm.vmm() {
                Ok(vmm) => vmm.migration().await.is_ok(),
                Err(_) => vm
                    .lock()
                    .rec
                    .migration
                    .as_ref()
                    .is_some_and(|s| s.state != MigrationState::Preparing),
            };
            let end = if streaming {
                m.follow(&vm, &peer).await
            } else {
                End::Failed(Error::Peer(
                    "hostd restarted before the stream started".into(),
                ))
            };
            m.finish_outgoing(&vm, &peer, &p, end).await;
            drop(op);
            // A cold migration had stopped the guest: boot it here again.
            if !streaming && vm.state() == VmState::Crashed {
                if let Err(e) = m.vms.start_vm(&vm.id).await {
                    tracing::error!(vm = vm.id, "booting it again after the failed move: {e}");
                }
            }
        });
    }
}
