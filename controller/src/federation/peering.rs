//! Peering: a cluster joins another (introducing itself with the peer's admin
//! token, checking the signed answer), the other side of that handshake, each
//! side's policy for the other, and leaving.

use std::time::Duration;

use super::{
    cluster_token, find_peer, identity, keys, local, mint, trust, unavailable, view, Federation,
    LocalCluster, Mint, CALL_TTL_S,
};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{now_ms, Hello, JoinRequest, LeftPeer, Peer, PeerPolicy, Role, SYSTEM_TENANT};
use crate::store::{Expect, Object, Objects};

fn check_url(field: &str, url: &str) -> std::result::Result<(), nova_http::FieldError> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 512
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(nova_http::FieldError::new(
            field,
            "must be an http:// or https:// URL",
        ))
    }
}

/// Checks a peer's [`Hello`]: its proof is signed by one of the keys it shows (all
/// of them its own), for `aud`, and says it is a cluster speaking for itself.
fn check_hello(h: &Hello, aud: &str) -> Result<()> {
    let refuse = |why: String| Error::Unauthorized(format!("peer's handshake: {why}"));
    let id = &h.cluster.cluster_id;
    if !id.starts_with("c-") || id.len() > 64 {
        return Err(refuse(format!("{id:?} is not a cluster id")));
    }
    let prefix = format!("{id}:");
    if h.cluster.jwks.keys.is_empty() || h.cluster.jwks.keys.len() > 8 {
        return Err(refuse("it shows no keys, or too many".into()));
    }
    if let Some(k) = h
        .cluster
        .jwks
        .keys
        .iter()
        .find(|k| !k.kid.starts_with(&prefix))
    {
        return Err(refuse(format!("key {} is not its own", k.kid)));
    }
    let (kid, _) = keys::key_of(&h.proof).map_err(|e| refuse(e.to_string()))?;
    let c = keys::verify(&h.proof, &kid, &h.cluster.jwks, id, aud)
        .map_err(|e| refuse(e.to_string()))?;
    if !c.peer {
        return Err(refuse("its proof is a user's token".into()));
    }
    Ok(())
}

/// Peers with the cluster at `j.peer_url`: introduces this cluster with `j.peer_token`
/// (the peer's admin token), checks the peer's answer and keeps the peer with the
/// trust policy `j.trust`. Joining again refreshes the peer's record.
pub async fn join(ctx: &Context, fed: &Federation, j: &JoinRequest) -> Result<Peer> {
    check_url("peer_url", &j.peer_url)?;
    check_url("self_url", &j.self_url)?;
    trust::validate(&j.trust)?;
    if j.peer_token.is_empty() || j.peer_token.len() > 256 {
        return Err(
            nova_http::FieldError::new("peer_token", "must be the peer's admin token").into(),
        );
    }
    local(ctx).await?;
    let me = ctx
        .store
        .update::<LocalCluster, _>("local", |l| {
            let changed = l.url.as_deref() != Some(&j.self_url);
            l.url = Some(j.self_url.clone());
            changed
        })
        .await?;
    let (proof, _) = mint(
        &me,
        Mint {
            sub: &format!("cluster:{}", me.cluster_id),
            tenant: SYSTEM_TENANT,
            role: Role::Viewer,
            aud: vec!["*".into()],
            ttl_s: CALL_TTL_S,
            peer: true,
        },
    )?;
    let hello = Hello {
        cluster: identity(&me),
        proof,
    };
    let client = fed.client(j.peer_url.trim_end_matches('/'), &j.peer_token)?;
    let answer = match tokio::time::timeout(Duration::from_secs(10), client.handshake(&hello)).await
    {
        Err(_) => {
            return Err(Error::conflict(format!(
                "the peer at {} did not answer the handshake within 10 s",
                j.peer_url
            )))
        }
        Ok(Err(e)) if e.is_unreachable() => {
            return Err(Error::conflict_on(
                "peer_url",
                format!("the peer could not be reached (or its certificate verified): {e}"),
            ))
        }
        Ok(Err(e)) => {
            return Err(Error::conflict_on(
                "peer_token",
                format!("the peer refused the handshake: {e}"),
            ))
        }
        Ok(Ok(a)) => a,
    };
    check_hello(&answer, &me.cluster_id)?;
    if answer.cluster.cluster_id == me.cluster_id {
        return Err(nova_http::FieldError::new("peer_url", "that is this cluster").into());
    }
    let peer = Peer {
        cluster_id: answer.cluster.cluster_id.clone(),
        name: answer.cluster.name.clone(),
        region: answer.cluster.region.clone(),
        url: j.peer_url.trim_end_matches('/').to_string(),
        jwks: answer.cluster.jwks,
        trust: j.trust.clone(),
        placement: j.placement,
        joined_at_ms: now_ms(),
    };
    ctx.store
        .put(
            &format!("{}{}", Peer::PREFIX, peer.cluster_id),
            serde_json::to_vec(&peer).map_err(unavailable)?,
            Expect::Any,
        )
        .await?;
    tracing::info!(peer = %peer.cluster_id, url = %peer.url, "federation: joined");
    view::refresh_one(ctx, fed, &me, &peer).await;
    Ok(peer)
}

/// The other side of [`join`]: a cluster introduces itself (its caller is this
/// cluster's admin); keeps it as a peer (honouring nothing of its users until this
/// side's policy says so, or the policy it had when it peered before) and answers
/// this cluster's own [`Hello`].
pub async fn handshake(ctx: &Context, fed: &Federation, h: &Hello) -> Result<Hello> {
    check_hello(h, "*")?;
    let me = local(ctx).await?;
    if h.cluster.cluster_id == me.cluster_id {
        return Err(
            nova_http::FieldError::new("cluster.cluster_id", "that is this cluster").into(),
        );
    }
    let url =
        h.cluster.url.clone().ok_or_else(|| {
            nova_http::FieldError::new("cluster.url", "a peer must say where it is")
        })?;
    check_url("cluster.url", &url)?;
    crate::vms::validate_label("cluster.name", &h.cluster.name)?;
    let before = ctx.store.read::<Peer>(&h.cluster.cluster_id).await?;
    let peer = Peer {
        cluster_id: h.cluster.cluster_id.clone(),
        name: h.cluster.name.clone(),
        region: h.cluster.region.clone(),
        url: url.trim_end_matches('/').to_string(),
        jwks: h.cluster.jwks.clone(),
        trust: before.as_ref().map(|p| p.trust.clone()).unwrap_or_default(),
        placement: before.as_ref().is_none_or(|p| p.placement),
        joined_at_ms: now_ms(),
    };
    ctx.store
        .put(
            &format!("{}{}", Peer::PREFIX, peer.cluster_id),
            serde_json::to_vec(&peer).map_err(unavailable)?,
            Expect::Any,
        )
        .await?;
    fed.forget_cache(&peer.cluster_id);
    tracing::info!(peer = %peer.cluster_id, url = %peer.url, "federation: a peer joined");
    let (proof, _) = mint(
        &me,
        Mint {
            sub: &format!("cluster:{}", me.cluster_id),
            tenant: SYSTEM_TENANT,
            role: Role::Viewer,
            aud: vec![peer.cluster_id.clone()],
            ttl_s: CALL_TTL_S,
            peer: true,
        },
    )?;
    Ok(Hello {
        cluster: identity(&me),
        proof,
    })
}

/// Sets what this cluster honours of a peer and whether VMs may be placed there.
pub async fn set_policy(ctx: &Context, id: &str, p: &PeerPolicy) -> Result<Peer> {
    trust::validate(&p.trust)?;
    let peer = find_peer(ctx, id).await?;
    Ok(ctx
        .store
        .update::<Peer, _>(&peer.cluster_id, |x| {
            x.trust = p.trust.clone();
            x.placement = p.placement;
            true
        })
        .await?)
}

/// Stops peering with `id`: forgets it here and tells it (when it answers) to
/// forget this cluster too.
pub async fn leave(ctx: &Context, fed: &Federation, id: &str) -> Result<LeftPeer> {
    let peer = find_peer(ctx, id).await?;
    let me = local(ctx).await?;
    let token = cluster_token(&me, &peer.cluster_id)?;
    let told = match fed.client(&peer.url, &token) {
        Ok(c) => matches!(
            tokio::time::timeout(
                Duration::from_secs(3),
                c.http().post::<_, ()>("/v1/federation/leave", &())
            )
            .await,
            Ok(Ok(()))
        ),
        Err(_) => false,
    };
    ctx.store.remove::<Peer>(&peer.cluster_id).await?;
    fed.forget_cache(&peer.cluster_id);
    tracing::info!(peer = %peer.cluster_id, told, "federation: left");
    Ok(LeftPeer {
        cluster_id: peer.cluster_id,
        peer_acknowledged: told,
    })
}

/// A peer said it leaves: forget it.
pub async fn forget(ctx: &Context, fed: &Federation, peer: &str) -> Result<()> {
    ctx.store.remove::<Peer>(peer).await?;
    fed.forget_cache(peer);
    tracing::info!(peer, "federation: a peer left");
    Ok(())
}
