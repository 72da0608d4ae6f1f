//! Federation: several clusters as one, each with its own store and no global
//! consensus on any request path. This module owns this cluster's federation
//! identity (an id, a name, a region and Ed25519 signing keys, kept in its store),
//! its peers (their URLs, public keys and the trust policy applied to their users),
//! peering (a handshake both sides authenticate with their own admin token, each
//! proving it holds the keys it shows: [`peering`]), federated tokens (issued,
//! verified, revoked: [`tokens`]), the global view ([`view`]) and global placement
//! ([`placement`]), and cross-cluster live migration (the source side in
//! [`migration`], the destination's admission and adoption in [`incoming`], the
//! source hostd's way in to the destination host in [`gateway`]). It calls peers
//! through the controller API's typed client; it knows nothing of the HTTP server.

pub mod gateway;
pub mod incoming;
pub mod keys;
pub mod migration;
pub mod peering;
pub mod placement;
pub mod tokens;
pub mod trust;
pub mod view;

pub use peering::{forget, handshake, join, leave, set_policy};
pub use tokens::{issue, record_revocation, revocations, revoke, verify, Presenter};

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nova_controller_api::ControllerClient;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{
    now_ms, ClusterIdentity, ClusterSummary, FederatedClaims, IdentityPatch, Peer, Role,
    SYSTEM_TENANT,
};
use crate::store::{Object, Objects, StoreError};

use keys::SigningKey;

/// Signing keys a cluster keeps at most (the current one and those retired but
/// still verifying tokens they signed).
const KEPT_KEYS: usize = 3;
/// Longest life of a federated token, s.
pub const MAX_TTL_S: u64 = 86_400;
/// How long a cluster's own proofs and per-call tokens live, s.
const CALL_TTL_S: u64 = 120;
/// A peer's keys are fetched again (a key id it did not know) at most this often.
const REFETCH_EVERY: Duration = Duration::from_secs(10);

/// This cluster's federation record, private keys included (never shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalCluster {
    pub cluster_id: String,
    pub name: String,
    #[serde(default)]
    pub region: Option<String>,
    /// What peers reach it at (set when it joins).
    #[serde(default)]
    pub url: Option<String>,
    /// The current key first.
    pub keys: Vec<SigningKey>,
    /// The number of the next key (`<cluster id>:<n>`).
    pub next_key: u32,
}

impl Object for LocalCluster {
    const PREFIX: &'static str = "federation-self/";
    fn key(&self) -> &str {
        "local"
    }
}

impl Object for Peer {
    const PREFIX: &'static str = "federation-peers/";
    fn key(&self) -> &str {
        &self.cluster_id
    }
}

/// What this controller last heard from a peer.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub summary: Option<ClusterSummary>,
    pub last_seen_ms: Option<u64>,
    pub error: Option<String>,
}

/// The federation's runtime state: one connection pool to every peer, the cache of
/// peers' summaries, and when each peer's keys were last fetched.
pub struct Federation {
    http: nova_http::Client,
    cache: Mutex<HashMap<String, Seen>>,
    refetched: Mutex<HashMap<String, Instant>>,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Store(StoreError::Backend(e.to_string()))
}

/// The caller, issuer and audience of one token this cluster signs.
pub struct Mint<'a> {
    pub sub: &'a str,
    pub tenant: &'a str,
    pub role: Role,
    pub aud: Vec<String>,
    pub ttl_s: u64,
    /// A cluster speaking for itself.
    pub peer: bool,
}

impl Federation {
    /// The pool peers are called through; https peers are trusted through the web
    /// roots and `ca_file` (the controller's `--federation-peer-ca`, else its
    /// `--hostd-ca`).
    pub fn new(ca_file: Option<std::path::PathBuf>) -> Result<Federation> {
        let opts = nova_http::ClientOptions {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            ca_file,
        };
        Ok(Federation {
            http: nova_http::Client::new("http://peer.invalid", None, &opts)?,
            cache: Mutex::default(),
            refetched: Mutex::default(),
        })
    }

    /// A client of the controller at `url` presenting `token`.
    pub fn client(&self, url: &str, token: &str) -> Result<ControllerClient> {
        Ok(ControllerClient::sharing(&self.http, url, token)?)
    }

    /// What this controller last heard from `peer`.
    pub fn seen(&self, peer: &str) -> Seen {
        let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.get(peer).cloned().unwrap_or_default()
    }

    fn note(&self, peer: &str, answer: std::result::Result<ClusterSummary, String>) {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let e = c.entry(peer.to_string()).or_default();
        match answer {
            Ok(s) => {
                e.summary = Some(s);
                e.last_seen_ms = Some(now_ms());
                e.error = None;
            }
            Err(why) => e.error = Some(why),
        }
    }

    fn forget_cache(&self, peer: &str) {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.remove(peer);
    }

    /// Whether `peer`'s keys may be fetched again now (and notes that they are).
    fn may_refetch(&self, peer: &str) -> bool {
        let mut r = self.refetched.lock().unwrap_or_else(|p| p.into_inner());
        match r.get(peer) {
            Some(t) if t.elapsed() < REFETCH_EVERY => false,
            _ => {
                r.insert(peer.to_string(), Instant::now());
                true
            }
        }
    }
}

/// This cluster's federation record, made (id and first key) on first use.
pub async fn local(ctx: &Context) -> Result<LocalCluster> {
    if let Some(l) = ctx.store.read::<LocalCluster>("local").await? {
        return Ok(l);
    }
    let id = format!("c-{}", hex::encode(rand::random::<[u8; 8]>()));
    let key = SigningKey::generate(format!("{id}:1"), now_ms()).map_err(unavailable)?;
    let l = LocalCluster {
        name: id.clone(),
        cluster_id: id,
        region: None,
        url: None,
        keys: vec![key],
        next_key: 2,
    };
    match ctx.store.create(&l).await {
        Ok(_) => Ok(l),
        // Another controller of this cluster made it first: theirs stands.
        Err(StoreError::Conflict(_)) => Ok(ctx.store.must_read::<LocalCluster>("local").await?),
        Err(e) => Err(e.into()),
    }
}

/// This cluster as its peers see it.
pub fn identity(l: &LocalCluster) -> ClusterIdentity {
    ClusterIdentity {
        cluster_id: l.cluster_id.clone(),
        name: l.name.clone(),
        region: l.region.clone(),
        url: l.url.clone(),
        jwks: keys::jwks(&l.keys),
    }
}

/// Changes this cluster's name or region.
pub async fn set_identity(ctx: &Context, p: &IdentityPatch) -> Result<ClusterIdentity> {
    if let Some(n) = &p.name {
        crate::vms::validate_label("name", n)?;
    }
    if let Some(r) = &p.region {
        crate::vms::validate_label("region", r)?;
    }
    local(ctx).await?;
    let l = ctx
        .store
        .update::<LocalCluster, _>("local", |l| {
            if let Some(n) = &p.name {
                l.name = n.clone();
            }
            if let Some(r) = &p.region {
                l.region = Some(r.clone());
            }
            true
        })
        .await?;
    Ok(identity(&l))
}

/// A new current signing key; the previous ones keep verifying (up to
/// [`KEPT_KEYS`] in all). Peers fetch the new key when they first see it used.
pub async fn rotate(ctx: &Context) -> Result<ClusterIdentity> {
    local(ctx).await?;
    let fresh = std::sync::Mutex::new(None::<SigningKey>);
    let l = ctx
        .store
        .update::<LocalCluster, _>("local", |l| {
            let mut slot = fresh.lock().unwrap_or_else(|p| p.into_inner());
            let k = match slot
                .as_ref()
                .filter(|k| k.kid.ends_with(&format!(":{}", l.next_key)))
            {
                Some(k) => k.clone(),
                None => {
                    match SigningKey::generate(format!("{}:{}", l.cluster_id, l.next_key), now_ms())
                    {
                        Ok(k) => k,
                        Err(_) => return false,
                    }
                }
            };
            *slot = Some(k.clone());
            l.keys.insert(0, k);
            l.keys.truncate(KEPT_KEYS);
            l.next_key += 1;
            true
        })
        .await?;
    Ok(identity(&l))
}

/// Signs a token with this cluster's current key.
pub fn mint(l: &LocalCluster, m: Mint<'_>) -> Result<(String, FederatedClaims)> {
    let now = now_ms() / 1000;
    let claims = FederatedClaims {
        iss: l.cluster_id.clone(),
        sub: m.sub.to_string(),
        aud: m.aud,
        exp: now + m.ttl_s,
        iat: now,
        jti: hex::encode(rand::random::<[u8; 12]>()),
        tenant: m.tenant.to_string(),
        role: m.role,
        peer: m.peer,
    };
    let key = l
        .keys
        .first()
        .ok_or_else(|| unavailable("no signing key"))?;
    Ok((key.sign(&claims).map_err(unavailable)?, claims))
}

/// A short-lived token of this cluster speaking for itself to `aud`.
pub fn cluster_token(l: &LocalCluster, aud: &str) -> Result<String> {
    let sub = format!("cluster:{}", l.cluster_id);
    mint(
        l,
        Mint {
            sub: &sub,
            tenant: SYSTEM_TENANT,
            role: Role::Viewer,
            aud: vec![aud.to_string()],
            ttl_s: CALL_TTL_S,
            peer: true,
        },
    )
    .map(|(t, _)| t)
}

/// A short-lived token of `caller` (a user of this cluster) for `aud`: what a
/// federated list or a forwarded create presents to a peer.
pub fn caller_token(l: &LocalCluster, caller: &Caller, aud: &str) -> Result<String> {
    mint(
        l,
        Mint {
            sub: &caller.user,
            tenant: &caller.tenant,
            role: caller.role,
            aud: vec![aud.to_string()],
            ttl_s: CALL_TTL_S,
            peer: false,
        },
    )
    .map(|(t, _)| t)
}

/// Every peer, in id order.
pub async fn peers(ctx: &Context) -> Result<Vec<Peer>> {
    Ok(ctx.store.list_all::<Peer>().await?)
}

/// The peer with this id or name.
pub async fn find_peer(ctx: &Context, id_or_name: &str) -> Result<Peer> {
    if let Some(p) = ctx.store.read::<Peer>(id_or_name).await? {
        return Ok(p);
    }
    peers(ctx)
        .await?
        .into_iter()
        .find(|p| p.name == id_or_name)
        .ok_or(Error::NotFound("peer"))
}
