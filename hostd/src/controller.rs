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
//!
//! A hostd given no TLS files ([`Issued`]) sends a new key with every registration
//! and serves the certificate the controller answers (`certificate`); it renews at
//! two thirds of the certificate's life with its own token (`POST
//! /v1/hosts/{id}/certificate`), retrying every heartbeat until it works. A
//! certificate that expires unrenewed is still served: the controller then refuses
//! it (its calls to this host fail) until a renewal or a re-registration succeeds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nova_hostd_api::{Heartbeat, HostCertificate, RegisterRequest, RegisterResponse, VmSummary};
use nova_http::{Client, ClientOptions};

use crate::certificate::{self, PendingKey};
use crate::host::Host;

/// Heartbeat period until the controller says otherwise.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// The serving certificate the controller issues: where it is kept, and who waits
/// for the first one (the API serves only once it exists).
#[derive(Clone)]
pub struct Issued {
    pub file: PathBuf,
    pub ready: Arc<tokio::sync::Notify>,
}

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

/// A new key and its request, or None (logged) when none could be made.
fn new_key(host: &Host) -> Option<PendingKey> {
    certificate::new_key(&host.host_id)
        .map_err(|e| tracing::error!("serving certificate: {e}"))
        .ok()
}

/// Keeps an issued certificate with its key; when to renew it.
fn keep(issued: &Issued, key: &PendingKey, cert: &HostCertificate) -> Option<Instant> {
    if let Err(e) = certificate::keep(&issued.file, key, cert) {
        tracing::error!("keeping the serving certificate: {e}");
        return None;
    }
    issued.ready.notify_one();
    let renew = certificate::renew_in(cert.not_after_ms);
    tracing::info!(
        not_after_ms = cert.not_after_ms,
        renew_in_s = renew.as_secs(),
        "serving certificate issued by the controller"
    );
    Some(Instant::now() + renew)
}

/// Registers (retrying until it works): with the host's own credential when it has
/// one, else with the join token; the client to heartbeat with (presenting the new
/// credential, saved), the interval, and when to renew an issued certificate.
async fn register(
    host: &Host,
    join: &Client,
    issued: Option<&Issued>,
) -> (Client, Duration, Option<Instant>) {
    let mut delay = Duration::from_millis(500);
    loop {
        let own = saved_credential(host, join);
        let by = own.as_ref().unwrap_or(join);
        let key = match issued {
            Some(_) => new_key(host),
            None => None,
        };
        let reg = RegisterRequest {
            host_id: host.host_id.clone(),
            hostname: host.hostname.clone(),
            url: host.config.url.clone(),
            token: host.config.token.clone(),
            info: host.info(),
            tls_key: key.as_ref().map(|k| k.request.clone()),
        };
        let wanted = issued.is_some() && key.is_some();
        match by
            .post::<_, RegisterResponse>("/v1/hosts/register", &reg)
            .await
        {
            Ok(c) if wanted && c.certificate.is_none() => {
                tracing::error!(
                    controller = join.base(),
                    "the controller answered no serving certificate (is it older than this host?)"
                );
            }
            Ok(c) => {
                tracing::info!(controller = join.base(), "registered");
                host.system.note_registered();
                let file = credential_file(host);
                if let Err(e) = nova_durable::write_secret(&file, c.token.as_bytes()) {
                    tracing::warn!("saving {}: {e}", file.display());
                }
                let renew_at = match (issued, &key, &c.certificate) {
                    (Some(i), Some(k), Some(cert)) => keep(i, k, cert),
                    _ => None,
                };
                let every = Duration::from_millis(c.heartbeat_interval_ms.clamp(200, 60_000));
                match join.to(join.base(), Some(&c.token)) {
                    Ok(client) => return (client, every, renew_at),
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

/// Renews the issued certificate with the host's own token; when to renew next, or
/// the error (the caller retries at the next heartbeat).
async fn renew(host: &Host, client: &Client, issued: &Issued) -> Result<Instant, nova_http::Error> {
    let Some(key) = new_key(host) else {
        return Err(nova_http::Error::Config("no key could be made".into()));
    };
    let path = format!("/v1/hosts/{}/certificate", host.host_id);
    let cert: HostCertificate = client.post(&path, &key.request).await?;
    keep(issued, &key, &cert)
        .ok_or_else(|| nova_http::Error::Config("the certificate could not be kept".into()))
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

/// Registers, then heartbeats forever (renewing an issued certificate when due).
pub async fn run(host: Arc<Host>, join: Client, issued: Option<Issued>) {
    let path = format!("/v1/hosts/{}/heartbeat", host.host_id);
    let (mut client, mut every, mut renew_at) = register(&host, &join, issued.as_ref()).await;
    loop {
        tokio::time::sleep(every).await;
        if let (Some(i), Some(at)) = (&issued, renew_at) {
            if Instant::now() >= at {
                match renew(&host, &client, i).await {
                    Ok(next) => renew_at = Some(next),
                    Err(e) if matches!(e.status(), Some(401 | 403 | 404)) => {
                        tracing::warn!("certificate renewal refused ({e}): registering again");
                        (client, every, renew_at) = register(&host, &join, Some(i)).await;
                        continue;
                    }
                    Err(e) => tracing::warn!("renewing the serving certificate: {e}"),
                }
            }
        }
        match client
            .post::<_, serde::de::IgnoredAny>(&path, &heartbeat(&host))
            .await
        {
            Ok(_) => {}
            Err(e) if matches!(e.status(), Some(401 | 403 | 404)) => {
                tracing::warn!("heartbeat refused ({e}): registering again");
                (client, every, renew_at) = register(&host, &join, issued.as_ref()).await;
            }
            Err(e) => tracing::warn!("heartbeat: {e}"),
        }
    }
}
