//! The global view: this cluster's summary, the same question asked of every peer
//! in parallel with a deadline (each answer or failure named by cluster), and the
//! loop that keeps a cache of the peers' summaries (and pulls their revocations)
//! for the dashboard and for placement.

use std::time::{Duration, Instant};

use nova_controller_api::ControllerClient;

use super::{Federation, LocalCluster};
use crate::auth::Caller;
use crate::context::Context;
use crate::error::Result;
use crate::model::{
    now_ms, Alert, AlertState, ClusterAnswer, ClusterSummary, DesiredState, Host, HostState, Peer,
    Resources, Vm,
};
use crate::store::{Expect, Object, Objects};

/// How often the peers' summaries are refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// This cluster's summary, from its store.
pub async fn summary(ctx: &Context, me: &LocalCluster) -> Result<ClusterSummary> {
    let (views, vms) = crate::placement::host_views(ctx).await?;
    let hosts = ctx.store.list_all::<Host>().await?;
    let mut s = ClusterSummary {
        cluster_id: me.cluster_id.clone(),
        name: me.name.clone(),
        region: me.region.clone(),
        hosts: hosts.len() as u64,
        hosts_ready: hosts.iter().filter(|h| h.state == HostState::Ready).count() as u64,
        vms: vms
            .iter()
            .filter(|v: &&Vm| v.desired != DesiredState::Deleted)
            .count() as u64,
        at_ms: now_ms(),
        ..Default::default()
    };
    for v in views.iter().filter(|v| v.ready && !v.cordoned) {
        s.capacity = s.capacity.plus(v.capacity);
        s.used = s.used.plus(v.used);
        let free = v.capacity.minus(v.used);
        if (free.mem_mib, free.vcpus) > (s.largest_free.mem_mib, s.largest_free.vcpus) {
            s.largest_free = free;
        }
    }
    s.alerts_firing = ctx
        .store
        .list_all::<Alert>()
        .await?
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .count() as u64;
    Ok(s)
}

/// Who speaks to the peers: a user of this cluster, or the cluster itself.
#[derive(Clone, Copy)]
pub enum Speaker<'a> {
    User(&'a Caller),
    Cluster,
}

/// One peer's answer to a federated question.
pub struct PeerAnswer<T> {
    pub peer: Peer,
    pub answer: std::result::Result<T, String>,
    pub took_ms: u64,
}

impl<T> PeerAnswer<T> {
    /// How it answered, counting `items` when it did.
    pub fn status(&self, items: u64) -> ClusterAnswer {
        ClusterAnswer {
            cluster_id: self.peer.cluster_id.clone(),
            name: self.peer.name.clone(),
            answered: self.answer.is_ok(),
            error: self.answer.as_ref().err().cloned(),
            items: if self.answer.is_ok() { items } else { 0 },
            took_ms: self.took_ms,
        }
    }
}

/// Asks every peer of `peers` the same question at once (`ask`, given a client
/// presenting a token of `speaker` for that peer), each within `timeout`; answers
/// in the order of `peers`, a failure saying why.
pub async fn ask_all<T, F, Fut>(
    fed: &Federation,
    me: &LocalCluster,
    peers: Vec<Peer>,
    speaker: Speaker<'_>,
    timeout: Duration,
    ask: F,
) -> Vec<PeerAnswer<T>>
where
    F: Fn(ControllerClient) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, nova_http::Error>>,
{
    let calls = peers.into_iter().map(|peer| {
        let started = Instant::now();
        let token = match speaker {
            Speaker::User(c) => super::caller_token(me, c, &peer.cluster_id),
            Speaker::Cluster => super::cluster_token(me, &peer.cluster_id),
        };
        let client = token.and_then(|t| fed.client(&peer.url, &t));
        let fut = client.map(&ask);
        async move {
            let answer = match fut {
                Err(e) => Err(e.to_string()),
                Ok(f) => match tokio::time::timeout(timeout, f).await {
                    Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
                    Ok(Err(e)) => Err(e.to_string()),
                    Ok(Ok(v)) => Ok(v),
                },
            };
            PeerAnswer {
                peer,
                answer,
                took_ms: started.elapsed().as_millis() as u64,
            }
        }
    });
    futures_util::future::join_all(calls).await
}

/// Refreshes one peer's cached summary and pulls its revocations.
pub async fn refresh_one(ctx: &Context, fed: &Federation, me: &LocalCluster, peer: &Peer) {
    let mut answers = ask_all(
        fed,
        me,
        vec![peer.clone()],
        Speaker::Cluster,
        Duration::from_secs(3),
        |c| async move {
            let s = c.federation_summary().await?;
            let r = c.revocations().await?;
            Ok((s, r))
        },
    )
    .await;
    let Some(a) = answers.pop() else { return };
    match a.answer {
        Ok((s, revoked)) => {
            fed.note(&peer.cluster_id, Ok(s));
            for r in revoked.iter().filter(|r| r.iss == peer.cluster_id) {
                if let Err(e) = super::tokens::keep_revocation(ctx, r).await {
                    tracing::warn!("federation: keeping a peer's revocation: {e}");
                }
            }
        }
        Err(why) => fed.note(&peer.cluster_id, Err(why)),
    }
}

/// Refreshes every peer's summary, in parallel; drops revocations and issued-token
/// records past their tokens' expiry.
pub async fn refresh(ctx: &Context, fed: &Federation) -> Result<()> {
    let me = super::local(ctx).await?;
    let peers = super::peers(ctx).await?;
    futures_util::future::join_all(peers.iter().map(|p| refresh_one(ctx, fed, &me, p))).await;
    let now = now_ms();
    for r in ctx.store.list_all::<super::tokens::RevokedRecord>().await? {
        if r.revocation.until_ms + 60_000 < now {
            let key = format!("{}{}", super::tokens::RevokedRecord::PREFIX, r.id);
            ctx.store.delete(&key, Expect::Any).await?;
        }
    }
    for t in ctx.store.list_all::<super::tokens::IssuedToken>().await? {
        if t.expires_at_ms + 60_000 < now {
            ctx.store
                .remove::<super::tokens::IssuedToken>(&t.jti)
                .await?;
        }
    }
    Ok(())
}

/// Keeps the cache of the peers' summaries fresh, every [`REFRESH_EVERY`].
pub async fn run(ctx: Context, fed: std::sync::Arc<Federation>) {
    loop {
        if let Err(e) = refresh(&ctx, &fed).await {
            tracing::warn!("federation: refreshing peers: {e}");
        }
        tokio::time::sleep(REFRESH_EVERY).await;
    }
}

/// What `r` asks of a host, for a fit against a summary.
pub fn fits(r: Resources, s: &ClusterSummary) -> bool {
    r.fits_in(s.largest_free)
}
