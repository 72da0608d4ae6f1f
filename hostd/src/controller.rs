//! Joining a controller: register once (`POST {controller}/v1/hosts/register` with
//! the join token and a `RegisterRequest`; the `RegisterResponse` is this host's own
//! token and heartbeat interval), then heartbeat (`Heartbeat`: the host's facts and
//! the state of every VM). The controller decides; hostd only reports. A heartbeat
//! refused with 401/403/404 registers again. The controller may be `https://`, its
//! certificate signed by a private CA (`--controller-ca`).
//!
//! The host's own token is kept in `DATA/controller.token` (0600, written durably):
//! a known host id re-registers only with it (a join token enrols new hosts only), so
//! a restarted hostd presents it first and falls back to the join token only when the
//! controller no longer knows it (401: the host was forgotten).

use std::sync::Arc;
use std::time::Duration;

use nova_hostd_api::{Heartbeat, RegisterRequest, RegisterResponse, VmSummary};
use nova_http::{Client, ClientOptions};

use crate::host::Host;

/// Heartbeat period until the controller says otherwise.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Where the host's own controller credential is kept.
fn credential_file(host: &Host) -> std::path::PathBuf {
    host.config.data_dir.join("controller.token")
}

/// The client presenting this host's saved credential, if there is one.
fn saved_credential(host: &Host, join: &Client) -> Option<Client> {
    let t = std::fs::read_to_string(credential_file(host)).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| join.to(join.base(), Some(t)).ok())?
}

/// Registers (retrying until it works): with the host's own credential when it has
/// one, else with the join token; the client to heartbeat with (presenting the new
/// credential, saved) and the interval.
async fn register(host: &Host, join: &Client) -> (Client, Duration) {
    let mut delay = Duration::from_millis(500);
    loop {
        let own = saved_credential(host, join);
        let by = own.as_ref().unwrap_or(join);
        let reg = RegisterRequest {
            host_id: host.host_id.clone(),
            hostname: host.hostname.clone(),
            url: host.config.url.clone(),
            token: host.config.token.clone(),
            info: host.info(),
        };
        match by
            .post::<_, RegisterResponse>("/v1/hosts/register", &reg)
            .await
        {
            Ok(c) => {
                tracing::info!(controller = join.base(), "registered");
                host.system.note_registered();
                let file = credential_file(host);
                if let Err(e) = nova_durable::write_secret(&file, c.token.as_bytes()) {
                    tracing::warn!("saving {}: {e}", file.display());
                }
                let every = Duration::from_millis(c.heartbeat_interval_ms.clamp(200, 60_000));
                match join.to(join.base(), Some(&c.token)) {
                    Ok(client) => return (client, every),
                    Err(e) => tracing::warn!("the controller's token: {e}"),
                }
            }
            Err(e) if own.is_some() && e.status() == Some(401) => {
                // Forgotten by the controller: join anew with the join token.
                tracing::warn!("the controller no longer knows this host's token: joining anew");
                let _ = std::fs::remove_file(credential_file(host));
                continue;
            }
            Err(e) => tracing::warn!("registering with {}: {e}", join.base()),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// A client presenting this host's own controller credential (for calls beyond
/// heartbeats: asking for a drain of itself at shutdown), if it has registered.
pub fn own_client(host: &Host, join: Option<&Client>) -> Option<Client> {
    saved_credential(host, join?)
}

/// The heartbeat body: the host's facts and every VM's state.
pub fn heartbeat(host: &Host) -> Heartbeat {
    Heartbeat {
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
    }
}

/// The client of the controller at `url` presenting the join token.
pub fn join_client(
    url: &str,
    join_token: &str,
    opts: &ClientOptions,
) -> Result<Client, nova_http::Error> {
    Client::new(url, Some(join_token), opts)
}

/// Registers, then heartbeats forever.
pub async fn run(host: Arc<Host>, join: Client) {
    let path = format!("/v1/hosts/{}/heartbeat", host.host_id);
    let (mut client, mut every) = register(&host, &join).await;
    loop {
        tokio::time::sleep(every).await;
        match client
            .post::<_, serde::de::IgnoredAny>(&path, &heartbeat(&host))
            .await
        {
            Ok(_) => {}
            Err(e) if matches!(e.status(), Some(401 | 403 | 404)) => {
                tracing::warn!("heartbeat refused ({e}): registering again");
                (client, every) = register(&host, &join).await;
            }
            Err(e) => tracing::warn!("heartbeat: {e}"),
        }
    }
}
