//! Running one backup to its end (starting its host job and recording the job's id, or
//! following a recorded job) and recording its result; and the set of backups this
//! controller process follows, which tells recovery which running ones were left behind.

use nova_hostd_api::{JobOp, JobResult};

use super::jobs;
use crate::context::Context;
use crate::model::{Backup, BackupState, BackupStore, Host, OpState};
use crate::operations::{failed, Outcome};
use crate::store::Objects;

/// Runs backup `b` to its end: starts its job on `host` (when `store` is given) and
/// records the job's id, or follows the job it records (a restarted controller), then
/// records the result. The caller has put it in [`following`]; it is taken out at the end.
pub async fn run_backup(
    ctx: &Context,
    b: &Backup,
    store: Option<&BackupStore>,
    host: &str,
    op_id: &str,
) -> Outcome {
    let res = async {
        let host = ctx.store.must_read::<Host>(host).await.map_err(failed)?;
        let job = match (store, &b.job) {
            (Some(store), _) => {
                let op = JobOp::Backup {
                    vm_id: b.vm_id.clone(),
                    backup_id: b.id.clone(),
                    previous: b.previous.clone(),
                    memory: b.memory,
                };
                let job = jobs::start(ctx, &host, store, op).await.map_err(failed)?;
                ctx.store
                    .update::<Backup, _>(&b.id, |r| {
                        r.job = Some(job.clone());
                        true
                    })
                    .await
                    .map_err(failed)?;
                job
            }
            (None, Some(job)) => job.clone(),
            (None, None) => {
                return Err(failed(
                    "the controller restarted before the host's backup job was recorded",
                ))
            }
        };
        jobs::follow(ctx, &host, &job, op_id).await.map_err(failed)
    }
    .await;
    following().remove(&b.id);
    let (state, report, error) = match res {
        Ok(JobResult::Backup(r)) => (BackupState::Completed, Some(r), None),
        Ok(other) => (
            BackupState::Failed,
            None,
            Some(format!("unexpected job result {other:?}")),
        ),
        Err((_, e)) => (BackupState::Failed, None, Some(e)),
    };
    let done = ctx
        .store
        .update::<Backup, _>(&b.id, |r| {
            r.state = state;
            r.report = report.clone();
            r.error = error.clone();
            true
        })
        .await
        .map_err(failed)?;
    let kind = if state == BackupState::Completed {
        "backup.completed"
    } else {
        "backup.failed"
    };
    ctx.events
        .publish(kind, &done.tenant, &done.id, crate::events::data(&done))
        .await;
    match error {
        None => Ok(crate::events::data(&done)),
        Some(e) => Err((OpState::Failed, e)),
    }
}

/// Backups this controller process follows (the rest of the running ones were left by
/// a controller that stopped).
pub fn following() -> std::sync::MutexGuard<'static, std::collections::HashSet<String>> {
    static FOLLOWING: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    FOLLOWING
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}
