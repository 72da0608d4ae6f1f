//! Hosts as the controller knows them: a hostd registers (and gets credentials of its
//! own), heartbeats its capacity and the state of its VMs, and operators cordon it.
//! The bodies are hostd's contract (`nova_hostd_api`).

use nova_hostd_api::{validate_id, Heartbeat, RegisterRequest, RegisterResponse, VmSummary};
use nova_http::FieldError;

use crate::auth;
use crate::context::Context;
use crate::error::{missing, Result};
use crate::model::{
    now_ms, resources_from_hostd, state_name, Host, HostState, Observed, Role, Token, Vm,
    SYSTEM_TENANT,
};
use crate::store::{Objects, StoreError};

fn check(r: &RegisterRequest) -> std::result::Result<(), FieldError> {
    validate_id("host_id", &r.host_id)?;
    if !r.url.starts_with("http://") || r.url.len() > 512 || r.url.contains(char::is_whitespace) {
        return Err(FieldError::new("url", "must be http://HOST:PORT"));
    }
    if r.token.is_empty() || r.token.len() > 4096 {
        return Err(FieldError::new("token", "must be 1 to 4096 characters"));
    }
    if r.hostname.len() > 253 {
        return Err(FieldError::new("hostname", "longer than 253 characters"));
    }
    Ok(())
}

/// Records a host (a restarted host keeps its labels and cordon) and answers its own
/// credentials: a token that may heartbeat for this host and nothing else.
pub async fn register(ctx: &Context, r: &RegisterRequest) -> Result<RegisterResponse> {
    check(r)?;
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
        registered_at_ms: now,
        last_heartbeat_ms: now,
        revision: 0,
    };
    match ctx.store.create(&host).await {
        Ok(_) => {}
        Err(StoreError::Conflict(_)) => {
            ctx.store
                .update::<Host, _>(&r.host_id, |h| {
                    h.url = r.url.clone();
                    h.hostd_token = r.token.clone();
                    h.hostname = r.hostname.clone();
                    h.capacity = resources_from_hostd(r.info.capacity);
                    h.allocated = resources_from_hostd(r.info.allocated);
                    h.kvm = r.info.kvm.clone();
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
            true
        })
        .await
        .map_err(missing("host"))?;
    if came_back {
        ctx.events
            .publish("host.ready", SYSTEM_TENANT, id, serde_json::json!({}))
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
        .publish(kind, SYSTEM_TENANT, id, serde_json::json!({}))
        .await;
    Ok(h)
}
