//! Running one backup job on a host and following it: the job's phase and progress
//! become the operation's message and percentage; its end, the result or the error.

use std::time::Duration;

use nova_hostd_api::{JobOp, JobRequest, JobResult, JobState, StoreSpec};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{BackupStore, Host, HostState, OpState};
use crate::operations;
use crate::store::Objects;

/// How often a job is polled.
const POLL: Duration = Duration::from_millis(250);
/// A host that stops answering about its job for this long has lost it.
const LOST_AFTER: Duration = Duration::from_secs(60);

/// The hostd form of a store.
pub fn store_spec(s: &BackupStore) -> StoreSpec {
    StoreSpec {
        location: s.location.clone(),
        hash: s.hash,
        chunking: s.chunking,
        encryption_key: s.encryption_key.clone(),
    }
}

/// Host `want` if it is ready (refused with the field otherwise), or the first ready
/// host that is not cordoned.
pub async fn ready_host(ctx: &Context, want: Option<&str>) -> Result<Host> {
    let hosts = ctx.store.list_all::<Host>().await?;
    match want {
        Some(id) => hosts
            .into_iter()
            .find(|h| h.id == id && h.state == HostState::Ready)
            .ok_or_else(|| {
                nova_http::FieldError::new("host", format!("no ready host {id:?}")).into()
            }),
        None => hosts
            .into_iter()
            .find(|h| h.state == HostState::Ready && !h.cordoned)
            .ok_or_else(|| Error::conflict("no host is ready to run the backup job")),
    }
}

/// Runs `op` on `store` at `host`, reporting progress on operation `op_id`.
pub async fn run(
    ctx: &Context,
    host: &Host,
    store: &BackupStore,
    op: JobOp,
    op_id: &str,
) -> std::result::Result<JobResult, String> {
    let job = start(ctx, host, store, op).await?;
    follow(ctx, host, &job, op_id).await
}

/// Starts `op` on `store` at `host`: the job's id.
pub async fn start(
    ctx: &Context,
    host: &Host,
    store: &BackupStore,
    op: JobOp,
) -> std::result::Result<String, String> {
    let api = ctx.hostd(host).map_err(|e| e.to_string())?;
    let req = JobRequest {
        store: store_spec(store),
        op,
    };
    let job = api
        .start_backup_job(&req)
        .await
        .map_err(|e| format!("host {}: {e}", host.id))?;
    Ok(job.id)
}

/// Follows job `job_id` at `host` to its end, reporting progress on operation `op_id`.
/// A host that answers that it does not know the job (it restarted) has lost it.
pub async fn follow(
    ctx: &Context,
    host: &Host,
    job_id: &str,
    op_id: &str,
) -> std::result::Result<JobResult, String> {
    let api = ctx.hostd(host).map_err(|e| e.to_string())?;
    let job = nova_hostd_api::BackupJob {
        id: job_id.to_string(),
        state: JobState::Running,
        phase: String::new(),
        done: 0,
        total: 0,
        error: None,
        result: None,
    };
    let mut last_ok = tokio::time::Instant::now();
    let mut last_seen = (String::new(), 0u8);
    loop {
        tokio::time::sleep(POLL).await;
        let j = match api.backup_job(&job.id).await {
            Ok(j) => j,
            Err(e) if e.status() == Some(404) => {
                return Err(format!(
                    "host {} no longer knows backup job {} (it restarted): {e}",
                    host.id, job.id
                ))
            }
            Err(e) if last_ok.elapsed() < LOST_AFTER => {
                tracing::debug!(job = job.id, "polling the backup job: {e}");
                continue;
            }
            Err(e) => return Err(format!("host {} lost backup job {}: {e}", host.id, job.id)),
        };
        last_ok = tokio::time::Instant::now();
        match j.state {
            JobState::Running => {
                let pct = j
                    .done
                    .saturating_mul(99)
                    .checked_div(j.total)
                    .map_or(0, |p| p.min(99) as u8);
                if (j.phase.clone(), pct) != last_seen {
                    last_seen = (j.phase.clone(), pct);
                    let msg = format!("{}: {} of {} on host {}", j.phase, j.done, j.total, host.id);
                    let _ = operations::update(ctx, op_id, |o| {
                        o.state = OpState::Running;
                        o.progress = pct;
                        o.message = msg.clone();
                    })
                    .await;
                }
            }
            JobState::Succeeded => {
                return j
                    .result
                    .ok_or_else(|| format!("job {} succeeded without a result", j.id))
            }
            JobState::Failed => {
                return Err(j.error.unwrap_or_else(|| "the backup job failed".into()))
            }
        }
    }
}
