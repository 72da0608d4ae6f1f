//! Federated tokens: who presents one (a user of this cluster, a peer's user as
//! this cluster's policy maps them, or a peer cluster itself), verifying them
//! (fetching a peer's keys again when it rotated), issuing them to this cluster's
//! users, and revoking them here and at every peer.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    cluster_token, find_peer, keys, local, mint, peers, trust, unavailable, Federation,
    LocalCluster, Mint, MAX_TTL_S,
};
use crate::auth::Caller;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{
    now_ms, FederatedToken, NewFederatedToken, Peer, Revocation, Revoked, Role, Tenant,
    SYSTEM_TENANT,
};
use crate::store::{Expect, Object, Objects};

/// A revoked token, ours or a peer's, until it would have expired anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedRecord {
    /// `<iss>.<jti>`.
    pub id: String,
    pub revocation: Revocation,
}

impl Object for RevokedRecord {
    const PREFIX: &'static str = "federation-revoked/";
    fn key(&self) -> &str {
        &self.id
    }
}

/// A federated token this cluster issued (not the token itself): whose it is and
/// until when, so that it can be revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    pub jti: String,
    pub sub: String,
    pub tenant: String,
    pub expires_at_ms: u64,
}

impl Object for IssuedToken {
    const PREFIX: &'static str = "federation-issued/";
    fn key(&self) -> &str {
        &self.jti
    }
}

/// Who presents a verified federated token.
#[derive(Debug, Clone)]
pub enum Presenter {
    /// A user of this cluster (a token it issued).
    Local(Caller),
    /// A user of a peer, as this cluster's policy for that peer maps them.
    PeerUser { peer: String, caller: Caller },
    /// A peer cluster speaking for itself.
    PeerCluster { peer: String, caller: Caller },
}

impl Presenter {
    pub fn caller(&self) -> &Caller {
        match self {
            Presenter::Local(c) => c,
            Presenter::PeerUser { caller, .. } | Presenter::PeerCluster { caller, .. } => caller,
        }
    }
}

async fn is_revoked(ctx: &Context, iss: &str, jti: &str) -> Result<bool> {
    Ok(ctx
        .store
        .read::<RevokedRecord>(&format!("{iss}.{jti}"))
        .await?
        .is_some())
}

/// Verifies a federated token presented here: signed by this cluster or a peer
/// (fetching the peer's keys again when it names one this cluster has not seen),
/// for this cluster, not expired, not revoked; then maps its user through the
/// peer's trust policy. `Unauthorized` for a bad token, `Forbidden` when the
/// policy does not honour its tenant or role.
pub async fn verify(ctx: &Context, fed: &Federation, token: &str) -> Result<Presenter> {
    let bad = |e: keys::KeyError| Error::Unauthorized(format!("federated {e}"));
    let (kid, cluster) = keys::key_of(token).map_err(bad)?;
    let me = local(ctx).await?;
    let (claims, peer) = if cluster == me.cluster_id {
        let c = keys::verify(
            token,
            &kid,
            &keys::jwks(&me.keys),
            &me.cluster_id,
            &me.cluster_id,
        )
        .map_err(bad)?;
        (c, None)
    } else {
        let Some(mut peer) = ctx.store.read::<Peer>(&cluster).await? else {
            return Err(Error::Unauthorized(format!(
                "federated token of cluster {cluster}, which is not a peer of this one"
            )));
        };
        if !peer.jwks.keys.iter().any(|k| k.kid == kid) && fed.may_refetch(&peer.cluster_id) {
            peer = refetch_keys(ctx, fed, &me, peer).await;
        }
        let c =
            keys::verify(token, &kid, &peer.jwks, &peer.cluster_id, &me.cluster_id).map_err(bad)?;
        (c, Some(peer))
    };
    if is_revoked(ctx, &claims.iss, &claims.jti).await? {
        return Err(Error::Unauthorized(format!(
            "federated token {} was revoked",
            claims.jti
        )));
    }
    let Some(peer) = peer else {
        if claims.peer {
            return Err(Error::Unauthorized(
                "this cluster's own cluster token".into(),
            ));
        }
        return Ok(Presenter::Local(Caller {
            user: claims.sub,
            tenant: claims.tenant,
            role: claims.role,
            host: None,
        }));
    };
    if claims.peer {
        return Ok(Presenter::PeerCluster {
            caller: Caller {
                user: format!("cluster:{}", peer.name),
                // A tenant that cannot exist (labels have no ':'): it sees nothing.
                tenant: format!("peer:{}", peer.cluster_id),
                role: Role::Viewer,
                host: None,
            },
            peer: peer.cluster_id,
        });
    }
    let Some(tenant) = trust::honour(&peer.trust, &claims.tenant, claims.role) else {
        return Err(Error::Forbidden(format!(
            "this cluster's trust policy for peer {} honours no {:?} of tenant {}",
            peer.name, claims.role, claims.tenant
        )));
    };
    if tenant != SYSTEM_TENANT && ctx.store.read::<Tenant>(&tenant).await?.is_none() {
        return Err(Error::Forbidden(format!(
            "peer {}'s users of tenant {} act here in tenant {tenant}, which does not exist",
            peer.name, claims.tenant
        )));
    }
    Ok(Presenter::PeerUser {
        caller: Caller {
            user: format!("{}@{}", claims.sub, peer.name),
            tenant,
            role: claims.role,
            host: None,
        },
        peer: peer.cluster_id,
    })
}

/// Issues a federated token to `caller` (a user of this cluster) for the peers
/// `req.audience` names (every peer and this cluster when empty).
pub async fn issue(
    ctx: &Context,
    caller: &Caller,
    req: &NewFederatedToken,
) -> Result<FederatedToken> {
    if caller.host.is_some() || caller.role == Role::Host {
        return Err(Error::Forbidden("host credentials never federate".into()));
    }
    let ttl = req.ttl_s.unwrap_or(3600);
    if !(60..=MAX_TTL_S).contains(&ttl) {
        return Err(
            nova_http::FieldError::new("ttl_s", format!("must be 60 to {MAX_TTL_S}")).into(),
        );
    }
    if req.audience.len() > 64 {
        return Err(nova_http::FieldError::new("audience", "more than 64 clusters").into());
    }
    let me = local(ctx).await?;
    let mut aud = Vec::new();
    if req.audience.is_empty() {
        aud.push(me.cluster_id.clone());
        aud.extend(peers(ctx).await?.into_iter().map(|p| p.cluster_id));
    } else {
        for (i, a) in req.audience.iter().enumerate() {
            if *a == me.cluster_id || *a == me.name {
                aud.push(me.cluster_id.clone());
                continue;
            }
            match find_peer(ctx, a).await {
                Ok(p) => aud.push(p.cluster_id),
                Err(Error::NotFound(_)) => {
                    return Err(nova_http::FieldError::new(
                        format!("audience[{i}]"),
                        format!("{a:?} is neither this cluster nor a peer"),
                    )
                    .into())
                }
                Err(e) => return Err(e),
            }
        }
    }
    let (token, claims) = mint(
        &me,
        Mint {
            sub: &caller.user,
            tenant: &caller.tenant,
            role: caller.role,
            aud: aud.clone(),
            ttl_s: ttl,
            peer: false,
        },
    )?;
    let expires_at_ms = claims.exp * 1000;
    ctx.store
        .create(&IssuedToken {
            jti: claims.jti.clone(),
            sub: caller.user.clone(),
            tenant: caller.tenant.clone(),
            expires_at_ms,
        })
        .await?;
    Ok(FederatedToken {
        token,
        jti: claims.jti,
        audience: aud,
        expires_at_ms,
    })
}

pub(super) async fn keep_revocation(ctx: &Context, r: &Revocation) -> Result<()> {
    let rec = RevokedRecord {
        id: format!("{}.{}", r.iss, r.jti),
        revocation: r.clone(),
    };
    ctx.store
        .put(
            &format!("{}{}", RevokedRecord::PREFIX, rec.id),
            serde_json::to_vec(&rec).map_err(unavailable)?,
            Expect::Any,
        )
        .await?;
    Ok(())
}

/// Revokes a token this cluster issued (its owner, or an admin who sees its tenant)
/// and tells every peer, in parallel; peers not told now pull it at their next
/// refresh (`view::refresh`).
pub async fn revoke(
    ctx: &Context,
    fed: &Federation,
    caller: &Caller,
    jti: &str,
) -> Result<Revoked> {
    let issued = ctx
        .store
        .read::<IssuedToken>(jti)
        .await?
        .filter(|t| {
            t.sub == caller.user && t.tenant == caller.tenant
                || caller.is_admin() && caller.sees(&t.tenant)
        })
        .ok_or(Error::NotFound("federated token"))?;
    let me = local(ctx).await?;
    let r = Revocation {
        iss: me.cluster_id.clone(),
        jti: issued.jti.clone(),
        until_ms: issued.expires_at_ms,
    };
    keep_revocation(ctx, &r).await?;
    let peers = peers(ctx).await?;
    let tells = peers.iter().map(|p| {
        let r = r.clone();
        let me = &me;
        async move {
            let token = cluster_token(me, &p.cluster_id).ok()?;
            let c = fed.client(&p.url, &token).ok()?;
            tokio::time::timeout(Duration::from_secs(3), c.tell_revocation(&r))
                .await
                .ok()?
                .ok()
        }
    });
    let answers = futures_util::future::join_all(tells).await;
    let (mut told, mut missed) = (Vec::new(), Vec::new());
    for (p, a) in peers.iter().zip(answers) {
        match a {
            Some(_) => told.push(p.cluster_id.clone()),
            None => missed.push(p.cluster_id.clone()),
        }
    }
    Ok(Revoked {
        revocation: r,
        peers_told: told,
        peers_missed: missed,
    })
}

/// A peer tells of a token it revoked (only its own tokens).
pub async fn record_revocation(ctx: &Context, from_peer: &str, r: &Revocation) -> Result<()> {
    if r.iss != from_peer {
        return Err(Error::Forbidden(
            "a peer revokes only its own tokens".into(),
        ));
    }
    if r.jti.is_empty() || r.jti.len() > 64 || !r.jti.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(nova_http::FieldError::new("jti", "not a token id").into());
    }
    keep_revocation(ctx, r).await
}

/// The tokens this cluster revoked that have not expired yet.
pub async fn revocations(ctx: &Context) -> Result<Vec<Revocation>> {
    let me = local(ctx).await?;
    let now = now_ms();
    Ok(ctx
        .store
        .list_all::<RevokedRecord>()
        .await?
        .into_iter()
        .map(|r| r.revocation)
        .filter(|r| r.iss == me.cluster_id && r.until_ms > now)
        .collect())
}

/// Fetches `peer`'s keys again from its JWKS endpoint (a key id it has not shown
/// yet: it rotated); keeps them when every key is the peer's own. Answers the peer
/// as it is now.
pub async fn refetch_keys(ctx: &Context, fed: &Federation, me: &LocalCluster, peer: Peer) -> Peer {
    let Ok(token) = super::cluster_token(me, &peer.cluster_id) else {
        return peer;
    };
    let Ok(c) = fed.client(&peer.url, &token) else {
        return peer;
    };
    let fetched = match tokio::time::timeout(Duration::from_secs(3), c.jwks()).await {
        Ok(Ok(k)) => k,
        Ok(Err(e)) => {
            tracing::warn!(peer = %peer.cluster_id, "federation: fetching its keys: {e}");
            return peer;
        }
        Err(_) => return peer,
    };
    let prefix = format!("{}:", peer.cluster_id);
    if fetched.keys.is_empty()
        || fetched.keys.len() > 8
        || fetched.keys.iter().any(|k| !k.kid.starts_with(&prefix))
    {
        tracing::warn!(peer = %peer.cluster_id, "federation: its key set names keys not its own; ignored");
        return peer;
    }
    match ctx
        .store
        .update::<Peer, _>(&peer.cluster_id, |p| {
            p.jwks = fetched.clone();
            true
        })
        .await
    {
        Ok(p) => {
            tracing::info!(peer = %p.cluster_id, keys = p.jwks.keys.len(), "federation: peer's keys refreshed");
            p
        }
        Err(_) => peer,
    }
}
