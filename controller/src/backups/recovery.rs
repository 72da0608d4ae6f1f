//! Backups left running by a controller that stopped (a restart, a crash, a lost
//! leadership): the leader follows each one's host job to its end, or fails it with
//! the reason when its job was never recorded or its host has forgotten it.

use super::running::{following, run_backup};
use crate::context::Context;
use crate::error::Result;
use crate::model::{Backup, BackupState};
use crate::operations;
use crate::store::Objects;

/// The leader's recovery of backups left running by a controller that stopped (a
/// restart, a crash, a lost leadership): each one's host job is followed to its end,
/// and one whose job was never recorded (or that its host has forgotten) fails with
/// the reason. Checked every few seconds while this controller leads.
pub async fn run(ctx: Context) {
    loop {
        if ctx.leads() {
            if let Err(e) = recover_once(&ctx).await {
                tracing::warn!("backup recovery: {e}");
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

async fn recover_once(ctx: &Context) -> Result<()> {
    for b in ctx.store.list_all::<Backup>().await? {
        if b.state != BackupState::Running || following().contains(&b.id) {
            continue;
        }
        tracing::info!(backup = b.id, job = ?b.job, "resuming a backup left running");
        let op_id = b.operation.clone().unwrap_or_default();
        let host = b.host.clone().unwrap_or_default();
        following().insert(b.id.clone());
        let ctx2 = ctx.clone();
        tokio::spawn(async move {
            let outcome = run_backup(&ctx2, &b, None, &host, &op_id).await;
            if !op_id.is_empty() {
                operations::finish(&ctx2, &op_id, &outcome).await;
            }
        });
    }
    Ok(())
}
