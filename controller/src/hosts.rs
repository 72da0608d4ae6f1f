//! Hosts as the controller knows them: a hostd registers (and gets credentials of its
//! own), heartbeats its capacity and the state of its VMs, and operators cordon it or
//! forget it. Who may register which host id is decided here ([`Enrolment`]): a join
//! token (the bootstrap file's, or a single-use expiring one from `POST
//! /v1/join-tokens`) only enrols a host id not yet known; an existing host id is
//! re-registered only with that host's own credential (or by a system admin).
//! A host given no TLS files sends its serving key with the registration and gets
//! its certificate back (`hostca`), then renews it with its own token
//! ([`renew_certificate`]). The bodies are hostd's contract (`nova_hostd_api`).

use std::net::IpAddr;
use std::time::Duration;

use nova_hostd_api::{
    validate_id, Heartbeat, HostCertificate, HostKeyRequest, RegisterRequest, RegisterResponse,
    VmSummary,
};
use nova_http::FieldError;

use serde::{Deserialize, Serialize};

use crate::auth;
use crate::context::Context;
use crate::error::{missing, Error, Result};
use crate::model::{
    now_ms, resources_from_hostd, state_name, Host, HostState, Observed, Role, Token, Vm,
    SYSTEM_TENANT,
};
use crate::store::{Expect, Object, Objects, StoreError};

/// A join token issued by `POST /v1/join-tokens`, stored by the hash of its secret;
/// deleted by the registration it admits (single use) or found expired.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinToken {
    pub id: String,
    pub hash: String,
    pub expires_at_ms: u64,
    pub created_by: String,
}

impl Object for JoinToken {
    const PREFIX: &'static str = "jointokens/";
    fn key(&self) -> &str {
        &self.hash
    }
}

/// Issues a join token living `ttl_s` seconds; answers (the secret, the record).
pub async fn issue_join_token(ctx: &Context, ttl_s: u64, by: &str) -> Result<(String, JoinToken)> {
    let secret = auth::new_secret();
    let hash = auth::hash(&secret);
    let t = JoinToken {
        id: hash[..16].to_string(),
        hash,
        expires_at_ms: now_ms().saturating_add(ttl_s.saturating_mul(1000)),
        created_by: by.to_string(),
    };
    ctx.store.create(&t).await?;
    Ok((secret, t))
}

/// The issued join token whose secret hashes to `hash`, if it exists and has not
/// expired (an expired one is deleted on sight).
pub async fn find_join_token(ctx: &Context, hash: &str) -> Result<Option<JoinToken>> {
    let Some(t) = ctx.store.read::<JoinToken>(hash).await? else {
        return Ok(None);
    };
    if t.expires_at_ms <= now_ms() {
        ctx.store.remove::<JoinToken>(hash).await?;
        return Ok(None);
    }
    Ok(Some(t))
}

/// What a registration is presented with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrolment {
    /// The bootstrap join token (`--join-token-file`): new host ids only.
    Bootstrap,
    /// An issued join token (by its hash): one new host id, then it is gone.
    JoinToken(String),
    /// A host's own credential: re-registers that host only.
    Host(String),
    /// A system admin: any host id.
    Admin,
}

fn not_yours(id: &str) -> Error {
    Error::Forbidden(format!(
        "host {id} is registered: re-registering it needs that host's own token \
         (or a system admin forgets it first: DELETE /v1/hosts/{id})"
    ))
}

fn check(r: &RegisterRequest) -> std::result::Result<(), FieldError> {
    validate_id("host_id", &r.host_id)?;
    let scheme = r.url.starts_with("http://") || r.url.starts_with("https://");
    if !scheme || r.url.len() > 512 || r.url.contains(char::is_whitespace) {
        return Err(FieldError::new("url", "must be http(s)://HOST:PORT"));
    }
    if r.token.is_empty() || r.token.len() > 4096 {
        return Err(FieldError::new("token", "must be 1 to 4096 characters"));
    }
    if r.hostname.len() > 253 {
        return Err(FieldError::new("hostname", "longer than 253 characters"));
    }
    if r.tls_key.is_some() && !r.url.starts_with("https://") {
        return Err(FieldError::new(
            "url",
            "a host asking for a serving certificate is reached at https://",
        ));
    }
    Ok(())
}

/// Signs `key` (verified first: it must prove possession for `host_id`) for the
/// host reached at `url`, asked from address `from`, with the hostd CA; a controller
/// without one refuses.
async fn sign(
    ctx: &Context,
    host_id: &str,
    url: &str,
    key: &HostKeyRequest,
    from: Option<IpAddr>,
) -> Result<HostCertificate> {
    let point = key.verify(host_id)?;
    if let Some(from) = from {
        names_the_caller(url, from).await?;
    }
    let Some(ca) = &ctx.settings.host_ca else {
        return Err(Error::Conflict {
            message: "this controller issues no host certificates (it has no --hostd-ca-key): \
                      give the host its own TLS files (--tls-cert and --tls-key)"
                .into(),
            field: Some("tls_key".into()),
        });
    };
    ca.issue(host_id, url, &point)
        .map_err(|e| FieldError::new("url", format!("no certificate for it: {e}")).into())
}

/// Refuses a certificate for an address the asking host does not have: `url`'s host
/// must be the address the request came from (`from`), or a name resolving to it. A
/// join token admits a host; it is no licence to a certificate for another machine's
/// address, with which its holder could pose as that machine to this controller.
async fn names_the_caller(url: &str, from: IpAddr) -> Result<()> {
    let host =
        crate::hostca::url_host(url).ok_or_else(|| FieldError::new("url", "no host in it"))?;
    let from = from.to_canonical();
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => {
            let lookup = tokio::net::lookup_host((host, 0));
            match tokio::time::timeout(Duration::from_secs(2), lookup).await {
                Ok(Ok(found)) => found.map(|sa| sa.ip()).collect(),
                _ => Vec::new(),
            }
        }
    };
    if addrs.iter().any(|a| a.to_canonical() == from) {
        return Ok(());
    }
    Err(FieldError::new(
        "url",
        format!(
            "{host} is not the address this request came from ({from}): an issued certificate \
             names only the host's own address (a host behind NAT or a proxy needs its own TLS \
             files)"
        ),
    )
    .into())
}

/// A new certificate for host `id`'s new key (`POST /v1/hosts/{id}/certificate`, with
/// that host's own token), for the URL it registered.
pub async fn renew_certificate(
    ctx: &Context,
    id: &str,
    key: &HostKeyRequest,
    from: IpAddr,
) -> Result<HostCertificate> {
    let host = ctx
        .store
        .read::<Host>(id)
        .await?
        .ok_or(Error::NotFound("host"))?;
    if !host.url.starts_with("https://") {
        return Err(FieldError::new("url", "the host registered a plain http:// URL").into());
    }
    let c = sign(ctx, id, &host.url, key, Some(from)).await?;
    ctx.events
        .publish(
            "host.certificate",
            SYSTEM_TENANT,
            id,
            crate::events::no_data(),
        )
        .await;
    Ok(c)
}

/// Records a host (a restarted host keeps its labels and cordon) and answers its own
/// credentials: a token that may heartbeat for this host and nothing else; the host's
/// earlier tokens are revoked.
pub async fn register(
    ctx: &Context,
    by: &Enrolment,
    r: &RegisterRequest,
    from: IpAddr,
) -> Result<RegisterResponse> {
    check(r)?;
    // A system admin may register a host from anywhere; a host asks from its own address.
    let asked_from = (!matches!(by, Enrolment::Admin)).then_some(from);
    // Signed before anything is recorded (or a join token used): a key that does not
    // prove itself for this host id, or a controller that cannot sign, changes nothing.
    let certificate = match &r.tls_key {
        Some(k) => Some(sign(ctx, &r.host_id, &r.url, k, asked_from).await?),
        None => None,
    };
    let known = ctx.store.read::<Host>(&r.host_id).await?.is_some();
    match by {
        Enrolment::Admin => {}
        Enrolment::Host(h) if *h == r.host_id => {}
        Enrolment::Host(h) => {
            return Err(Error::Forbidden(format!(
                "this is host {h}'s token: it registers host {h} only"
            )))
        }
        Enrolment::Bootstrap | Enrolment::JoinToken(_) if known => {
            return Err(not_yours(&r.host_id))
        }
        Enrolment::Bootstrap => {}
        Enrolment::JoinToken(hash) => {
            // Single use: whichever registration deletes it first is admitted.
            let gone = ctx
                .store
                .delete(&format!("{}{hash}", JoinToken::PREFIX), Expect::Any)
                .await?;
            if !gone {
                return Err(Error::Unauthorized(
                    "this join token was used already".into(),
                ));
            }
        }
    }
    let now = now_ms();
    let host = Host {
        id: r.host_id.clone(),
        hostname: r.hostname.clone(),
        url: r.url.clone(),
        hostd_token: r.token.clone(),
        labels: Default::default(),
        state: HostState::Ready,
        cordoned: false,
        draining: false,
        capacity: resources_from_hostd(r.info.capacity),
        allocated: resources_from_hostd(r.info.allocated),
        kvm: r.info.kvm.clone(),
        image_version: r.info.image_version.clone(),
        registered_at_ms: now,
        last_heartbeat_ms: now,
        revision: 0,
    };
    match ctx.store.create(&host).await {
        Ok(_) => {}
        Err(StoreError::Conflict(_))
            if matches!(by, Enrolment::Bootstrap | Enrolment::JoinToken(_)) =>
        {
            return Err(not_yours(&r.host_id));
        }
        Err(StoreError::Conflict(_)) => {
            ctx.store
                .update::<Host, _>(&r.host_id, |h| {
                    h.url = r.url.clone();
                    h.hostd_token = r.token.clone();
                    h.hostname = r.hostname.clone();
                    h.capacity = resources_from_hostd(r.info.capacity);
                    h.allocated = resources_from_hostd(r.info.allocated);
                    h.kvm = r.info.kvm.clone();
                    h.image_version = r.info.image_version.clone();
                    h.state = HostState::Ready;
                    h.last_heartbeat_ms = now;
                    true
                })
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    let secret = auth::new_secret();
    let hash = auth::hash(&secret);
    let token = Token {
        id: hash[..16].to_string(),
        hash,
        user: format!("host:{}", r.host_id),
        tenant: SYSTEM_TENANT.into(),
        role: Role::Host,
        host: Some(r.host_id.clone()),
        created_at_ms: now,
    };
    ctx.store.create(&token).await?;
    revoke_host_tokens(ctx, &r.host_id, Some(&token.hash)).await?;
    ctx.events
        .publish(
            "host.registered",
            SYSTEM_TENANT,
            &r.host_id,
            serde_json::json!({"url": r.url}),
        )
        .await;
    Ok(RegisterResponse {
        host_id: r.host_id.clone(),
        token: secret,
        heartbeat_interval_ms: ctx.settings.heartbeat.as_millis() as u64,
        certificate,
    })
}

/// A heartbeat of host `id`: it is ready, its capacity is as reported, and so are its
/// VMs' states.
pub async fn heartbeat(ctx: &Context, id: &str, hb: &Heartbeat) -> Result<()> {
    let mut came_back = false;
    ctx.store
        .update::<Host, _>(id, |h| {
            came_back = h.state == HostState::Down;
            h.state = HostState::Ready;
            h.last_heartbeat_ms = now_ms();
            h.capacity = resources_from_hostd(hb.info.capacity);
            h.allocated = resources_from_hostd(hb.info.allocated);
            h.image_version = hb.info.image_version.clone();
            true
        })
        .await
        .map_err(missing("host"))?;
    if came_back {
        ctx.events
            .publish("host.ready", SYSTEM_TENANT, id, crate::events::no_data())
            .await;
    }
    observe(ctx, id, &hb.vms).await
}

/// Records the VM states a host reported.
async fn observe(ctx: &Context, host: &str, vms: &[VmSummary]) -> Result<()> {
    for s in vms {
        let Some(vm) = ctx.store.read::<Vm>(&s.id).await? else {
            continue;
        };
        if vm.host.as_deref() != Some(host) || vm.migrating.is_some() {
            continue;
        }
        let state = state_name(s.state);
        if vm
            .observed
            .as_ref()
            .is_some_and(|o| o.state == state && o.error.is_none())
        {
            continue;
        }
        crate::vms::set_observed(
            ctx,
            &s.id,
            Observed {
                state: state.into(),
                host: Some(host.into()),
                at_ms: now_ms(),
                error: None,
            },
        )
        .await?;
    }
    Ok(())
}

/// Cordons host `id` (no new VMs land there) or lets it take VMs again (which also
/// ends a drain's hold on it), at `revision` when given.
pub async fn set_cordon(ctx: &Context, id: &str, on: bool, revision: Option<u64>) -> Result<Host> {
    let h = ctx
        .store
        .update_at::<Host, _>(id, revision, |h| {
            h.cordoned = on;
            if !on {
                h.draining = false;
            }
            true
        })
        .await
        .map_err(missing("host"))?;
    let kind = if on {
        "host.cordoned"
    } else {
        "host.uncordoned"
    };
    ctx.events
        .publish(kind, SYSTEM_TENANT, id, crate::events::no_data())
        .await;
    Ok(h)
}

/// Revokes every token of host `id` but `keep`; answers how many went.
async fn revoke_host_tokens(ctx: &Context, id: &str, keep: Option<&str>) -> Result<u64> {
    let mut n = 0;
    for t in ctx.store.list_all::<Token>().await? {
        if t.host.as_deref() == Some(id) && Some(t.hash.as_str()) != keep {
            ctx.store.remove::<Token>(&t.hash).await?;
            n += 1;
        }
    }
    Ok(n)
}

/// Forgets host `id`: its record and every credential it holds. Its VMs stay in the
/// store (the reconcile loop sees their host gone); the host may join anew with a
/// join token.
pub async fn forget(ctx: &Context, id: &str) -> Result<u64> {
    if !ctx.store.remove::<Host>(id).await? {
        return Err(Error::NotFound("host"));
    }
    let n = revoke_host_tokens(ctx, id, None).await?;
    ctx.events
        .publish(
            "host.forgotten",
            SYSTEM_TENANT,
            id,
            crate::events::no_data(),
        )
        .await;
    Ok(n)
}
