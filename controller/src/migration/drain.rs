//! Drain: cordon a host and move every VM off it: running VMs by live migration
//! (within the policy's parallelism limits), stopped ones by re-placement.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{load_policy, migrate, operation, set_op};
use crate::api::{ApiError, AppState};
use crate::hostd::Hostd;
use crate::model::{DesiredState, Host, OpState, Operation, Vm, SYSTEM_TENANT};
use crate::store::Objects;

/// Starts draining `host_id`; answers the drain operation.
pub async fn start(st: &AppState, host_id: &str) -> Result<Operation, ApiError> {
    st.store
        .update::<Host, _>(host_id, |h| {
            h.cordoned = true;
            h.draining = true;
            true
        })
        .await?;
    st.events.publish(
        "host.cordoned",
        SYSTEM_TENANT,
        host_id,
        serde_json::json!({"draining": true}),
    );
    let op = operation(SYSTEM_TENANT, "drain", host_id);
    st.store.create(&op).await?;
    let (st2, h, id) = (st.clone(), host_id.to_string(), op.id.clone());
    tokio::spawn(async move {
        let outcome = run(&st2, &h, &id).await;
        super::finish(&st2, &id, outcome).await;
        let _ = st2
            .store
            .update::<Host, _>(&h, |h| {
                h.draining = false;
                true
            })
            .await;
    });
    Ok(op)
}

async fn run(st: &AppState, host_id: &str, op_id: &str) -> super::Outcome {
    let policy = load_policy(st).await.map_err(super::failed)?;
    let vms: Vec<Vm> = st
        .store
        .list_all::<Vm>()
        .await
        .map_err(super::failed)?
        .into_iter()
        .filter(|v| v.host.as_deref() == Some(host_id) && v.desired != DesiredState::Deleted)
        .collect();
    let total = vms.len().max(1);
    set_op(st, op_id, |o| {
        o.state = OpState::Running;
        o.message = format!("{} VMs to move", vms.len());
    })
    .await
    .map_err(super::failed)?;
    let host = st
        .store
        .must_read::<Host>(host_id)
        .await
        .map_err(super::failed)?;
    let per_host = Arc::new(Semaphore::new(policy.max_parallel_per_host as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for vm in vms {
        let (st, host, per_host, op_id) = (
            st.clone(),
            host.clone(),
            per_host.clone(),
            op_id.to_string(),
        );
        tasks.spawn(async move {
            let _permit = per_host.acquire_owned().await;
            if st
                .store
                .read::<Operation>(&op_id)
                .await
                .ok()
                .flatten()
                .is_some_and(|o| o.cancel_requested)
            {
                return (
                    vm.id,
                    Err((OpState::Cancelled, "drain cancelled".to_string())),
                );
            }
            if vm.desired == DesiredState::Stopped {
                // Not running: let hostd forget it; the scheduler places it elsewhere.
                let hd = Hostd {
                    http: &st.http,
                    url: &host.url,
                    token: &host.hostd_token,
                };
                let r = match hd.delete(&vm.id).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_not_found() => Ok(()),
                    Err(e) => Err(e.to_string()),
                };
                let r = match r {
                    Ok(()) => st
                        .store
                        .update::<Vm, _>(&vm.id, |v| {
                            v.host = None;
                            v.observed = None;
                            true
                        })
                        .await
                        .map(|_| serde_json::json!({"moved": "re-placed (stopped)"}))
                        .map_err(super::failed),
                    Err(e) => Err(super::failed(e)),
                };
                return (vm.id, r);
            }
            // Each VM migration is an operation of its own, visible to its tenant.
            let child = operation(&vm.tenant, "migrate", &vm.id);
            if let Err(e) = st.store.create(&child).await {
                return (vm.id, Err(super::failed(e)));
            }
            let outcome = migrate(&st, &vm.id, None, &child.id).await;
            super::finish(&st, &child.id, outcome.clone()).await;
            (vm.id, outcome)
        });
    }
    let mut done = 0usize;
    let mut results = serde_json::Map::new();
    let mut failures = 0;
    while let Some(r) = tasks.join_next().await {
        let Ok((vm, outcome)) = r else { continue };
        done += 1;
        let entry = match outcome {
            Ok(v) => v,
            Err((_, msg)) => {
                failures += 1;
                serde_json::json!({"error": msg})
            }
        };
        results.insert(vm, entry);
        let snapshot = serde_json::Value::Object(results.clone());
        let _ = set_op(st, op_id, |o| {
            o.progress = ((done * 100) / total).min(99) as u8;
            o.message = format!("{done} of {total} moved");
            o.result = snapshot.clone();
        })
        .await;
    }
    if failures > 0 {
        return Err((
            OpState::Failed,
            format!("{failures} VMs could not be moved; the host stays cordoned"),
        ));
    }
    Ok(serde_json::Value::Object(results))
}
