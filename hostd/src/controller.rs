//! Joining a controller: register once (`POST {controller}/v1/hosts/register` with the
//! join token; the answer is this host's own token and heartbeat interval), then
//! heartbeat with the host's facts and the state of every VM. The controller decides;
//! hostd only reports. A heartbeat refused with 401/403/404 registers again.

use std::sync::Arc;
use std::time::Duration;

use crate::api::client;
use crate::api::types::{Heartbeat, RegisterRequest, RegisterResponse, VmSummary};
use crate::host::Host;

/// Heartbeat period.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Registers (retrying until it works); the credentials and interval to heartbeat with.
async fn register(host: &Host, controller: &str, join_token: &str) -> (String, Duration) {
    let mut delay = Duration::from_millis(500);
    loop {
        let reg = RegisterRequest {
            host_id: host.host_id.clone(),
            hostname: host.hostname.clone(),
            url: host.config.url.clone(),
            token: host.config.token.clone(),
            info: host.info(),
        };
        let body = serde_json::to_string(&reg).unwrap_or_default();
        let r = client::tcp(
            controller,
            Some(join_token),
            "POST",
            "/v1/hosts/register",
            Some(&body),
            Duration::from_secs(10),
        );
        match r.await {
            Ok(r) if r.ok() => {
                tracing::info!("registered with {controller}");
                // An older controller answers without credentials: keep the join token.
                return match serde_json::from_str::<RegisterResponse>(&r.body) {
                    Ok(c) => (
                        c.token,
                        Duration::from_millis(c.heartbeat_interval_ms.clamp(200, 60_000)),
                    ),
                    Err(_) => (join_token.to_string(), HEARTBEAT),
                };
            }
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
}

/// Registers, then heartbeats forever.
pub async fn run(host: Arc<Host>, controller: String, join_token: String) {
    let path = format!("/v1/hosts/{}/heartbeat", host.host_id);
    let (mut token, mut every) = register(&host, &controller, &join_token).await;
    loop {
        tokio::time::sleep(every).await;
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
            Some(&token),
            "POST",
            &path,
            Some(&body),
            Duration::from_secs(10),
        )
        .await
        {
            Ok(r) if r.ok() => {}
            Ok(r) if matches!(r.status, 401 | 403 | 404) => {
                tracing::warn!(
                    "heartbeat refused ({} {}): registering again",
                    r.status,
                    r.error_message()
                );
                (token, every) = register(&host, &controller, &join_token).await;
            }
            Ok(r) => tracing::warn!("heartbeat: {} {}", r.status, r.error_message()),
            Err(e) => tracing::warn!("heartbeat: {e}"),
        }
    }
}
