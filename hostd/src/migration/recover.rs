//! A hostd restarted in the middle of migrations: each VM that was migrating is
//! settled by the side it was on (see `outgoing` and `incoming`).

use std::sync::Arc;

use nova_hostd_api::VmState;

use crate::migration::state::Migrations;
use crate::vms::exit::Ending;
use crate::vms::reattach::Adopted;

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
