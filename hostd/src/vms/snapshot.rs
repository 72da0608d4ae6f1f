//! Snapshots of a running VM into its directory (`snapshots/<name>`, written by the
//! VMM), a stopped VM started again from one of them (or from a stored snapshot,
//! see `stored`), and the console's tail.

use std::sync::Arc;

use nova_hostd_api::{ConsoleLog, RestoreRequest, SnapshotInfo, SnapshotRequest, VmInfo, VmState};

use crate::error::{Error, Result};
use crate::vms::record::now_ms;
use crate::vms::spawn::Launch;
use crate::vms::table::Vms;
use crate::vms::tail::tail_lines;

impl Vms {
    /// Asks the VMM for a snapshot into `DATA/vms/<id>/snapshots/<name>`.
    pub async fn snapshot_vm(&self, id: &str, req: SnapshotRequest) -> Result<SnapshotInfo> {
        req.validate()?;
        let vm = self.get(id)?;
        let _op = vm.op.lock().await;
        if !matches!(vm.state(), VmState::Running | VmState::Paused) {
            return Err(Error::Conflict(format!("VM '{id}' is not running")));
        }
        let dir = vm.dir.join("snapshots").join(&req.name);
        if dir.exists() {
            return Err(Error::Conflict(format!("snapshot '{}' exists", req.name)));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        if self.settings.jail.enabled {
            crate::jail::give(&dir, self.jailer.uid_for(id)?)?;
        }
        let vmm_req = nova_vmm_api::SnapshotRequest {
            path: dir.clone(),
            diff: req.diff,
        };
        if let Err(e) = vm.vmm()?.snapshot(&vmm_req).await {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Error::vmm(e));
        }
        Ok(SnapshotInfo {
            vm_id: id.to_string(),
            name: req.name,
            path: dir.to_string_lossy().into_owned(),
            diff: req.diff,
            created_at_ms: now_ms(),
        })
    }

    /// Starts a created, stopped or crashed VM from one of its snapshots.
    pub async fn restore_vm(self: &Arc<Self>, id: &str, req: RestoreRequest) -> Result<VmInfo> {
        req.validate()?;
        let vm = self.get(id)?;
        if req.stored {
            return self
                .restore_stored(&vm, &req.snapshot, req.lazy, req.clone)
                .await;
        }
        let dir = vm.dir.join("snapshots").join(&req.snapshot);
        if !dir.is_dir() {
            return Err(Error::NotFound(format!(
                "VM '{id}' has no snapshot '{}'",
                req.snapshot
            )));
        }
        let _op = vm.op.lock().await;
        self.admit_start(&vm, ": stop it before restoring").await?;
        self.launch(
            &vm,
            Launch::Restore {
                dir,
                lazy: req.lazy,
                clone: false,
            },
        )
        .await?;
        Ok(self.vm_info(&vm).await)
    }

    /// The last `lines` lines of the VM's console.
    pub fn console(&self, id: &str, lines: usize) -> Result<ConsoleLog> {
        let vm = self.get(id)?;
        let (lines, bytes) = tail_lines(&vm.console_log(), lines);
        Ok(ConsoleLog { lines, bytes })
    }
}
