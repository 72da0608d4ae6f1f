//! Joining a controller: register once (`POST {controller}/v1/hosts/register` with the
//! join token), then heartbeat every few seconds with the host's facts and the state
//! of every VM. The controller decides; hostd only reports.

use std::sync::Arc;
use std::time::Duration;

use crate::api::client;
use crate::api::types::{Heartbeat, RegisterRequest, VmSummary};
use crate::host::Host;

/// Heartbeat period.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Registers (retrying until it works), then heartbeats forever.
pub async fn run(host: Arc<Host>, controller: String, join_token: String) {
    let reg = RegisterRequest {
        host_id: host.host_id.clone(),
        hostname: host.hostname.clone(),
        url: host.config.url.clone(),
        token: host.config.token.clone(),
        info: host.info(),
    };
    let body = serde_json::to_string(&reg).unwrap_or_default();
    let mut delay = Duration::from_millis(500);
    loop {
        match client::tcp(
            &controller,
            Some(&join_token),
            "POST",
            "/v1/hosts/register",
            Some(&body),
            Duration::from_secs(10),
        )
        .await
        {
            Ok(r) if r.ok() => break,
            Ok(r) => tracing::warn!(
                "registering with {controller}: {} {}",
                r.status,
                r.error_message()
            ),
            Err(e) => tracing::warn!("registering with {controller}: {e}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
    tracing::info!("registered with {controller}");
    let path = format!("/v1/hosts/{}/heartbeat", host.host_id);
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let hb = Heartbeat {
            host_id: host.host_id.clone(),
            info: host.info(),
            vms: host
                .vms
                .all()
                .iter()
                .map(|vm| VmSummary {
                    id: vm.id.clone(),
                    state: vm.state(),
                })
                .collect(),
        };
        let body = serde_json::to_string(&hb).unwrap_or_default();
        match client::tcp(
            &controller,
            Some(&join_token),
            "POST",
            &path,
            Some(&body),
            Duration::from_secs(10),
        )
        .await
        {
            Ok(r) if r.ok() => {}
            Ok(r) => tracing::warn!("heartbeat: {} {}", r.status, r.error_message()),
            Err(e) => tracing::warn!("heartbeat: {e}"),
        }
    }
}
