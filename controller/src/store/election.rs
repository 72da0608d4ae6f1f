//! Leader election through etcd's election API (`campaign`, `observe`, `resign`,
//! `leader`): each controller campaigns with its node name on a lease it keeps alive;
//! etcd makes exactly one the leader. A leader that dies stops renewing its lease and
//! etcd hands leadership on within the lease's TTL; one that shuts down resigns at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, LeaderKey, ResignOptions};
use tokio::sync::watch;

/// How long a leader's lease lives without keep-alives: a dead leader is replaced
/// within about this long.
pub const LEASE_TTL_S: i64 = 2;
const RETRY: Duration = Duration::from_millis(250);

/// This controller's part in the election.
#[derive(Clone)]
pub struct Leadership {
    /// Whether this controller leads right now.
    pub leading: watch::Receiver<bool>,
    client: Client,
    /// The key and lease this controller leads with, while it does.
    held: Arc<Mutex<Option<(LeaderKey, i64)>>>,
}

/// Campaigns under `name` as `me`, forever (again after losing leadership).
pub fn campaign(client: Client, name: String, me: String) -> Leadership {
    let (tx, rx) = watch::channel(false);
    let held: Arc<Mutex<Option<(LeaderKey, i64)>>> = Arc::default();
    let (c, h) = (client.clone(), held.clone());
    tokio::spawn(async move {
        loop {
            if let Err(e) = lead_once(&c, &name, &me, &tx, &h).await {
                tracing::warn!("leader election: {e}");
            }
            if *tx.borrow() {
                tracing::warn!("{me} lost leadership");
            }
            let _ = tx.send(false);
            h.lock().unwrap_or_else(|p| p.into_inner()).take();
            tokio::time::sleep(RETRY).await;
        }
    });
    Leadership {
        leading: rx,
        client,
        held,
    }
}

impl Leadership {
    /// Gives leadership up at once (on shutdown), so another controller need not wait
    /// for the lease to expire.
    pub async fn resign(&self) {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((key, lease)) = held {
            let r = self
                .client
                .election_client()
                .resign(Some(ResignOptions::new().with_leader(key)))
                .await;
            if let Err(e) = r {
                tracing::warn!("resigning: {e}");
            }
            let _ = self.client.lease_client().revoke(lease).await;
            tracing::info!("resigned leadership");
        }
    }
}

/// Who leads the election `name` now (its node name).
pub async fn leader(client: &Client, name: &str) -> Option<String> {
    let r = client.election_client().leader(name).await.ok()?;
    r.kv()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
}

/// One term: a lease, a campaign on it, leadership until the lease or the key is lost.
async fn lead_once(
    client: &Client,
    name: &str,
    me: &str,
    leading: &watch::Sender<bool>,
    held: &Mutex<Option<(LeaderKey, i64)>>,
) -> Result<(), etcd_client::Error> {
    let mut leases = client.lease_client();
    let lease = leases.grant(LEASE_TTL_S, None).await?.id();
    let (mut keeper, mut acks) = leases.keep_alive(lease).await?;
    let keep_alive = async {
        loop {
            keeper.keep_alive().await?;
            match acks.message().await? {
                Some(a) if a.ttl() > 0 => {}
                _ => return Ok(()), // the lease is gone: start over with a new one
            }
            tokio::time::sleep(Duration::from_millis(LEASE_TTL_S as u64 * 1000 / 4)).await;
        }
    };
    let term = async {
        let mut election = client.election_client();
        // Returns once this controller leads (etcd queues candidates by revision).
        let won = election.campaign(name, me, lease).await?;
        let Some(key) = won.leader().cloned() else {
            return Ok(());
        };
        tracing::info!("{me} is now the leader");
        *held.lock().unwrap_or_else(|p| p.into_inner()) = Some((key.clone(), lease));
        let _ = leading.send(true);
        // Leads while etcd says its key leads (a paused process may have lost it).
        let mut observed = election.observe(name).await?;
        while let Some(now) = observed.message().await? {
            if now.kv().map(|kv| kv.key()) != Some(key.key()) {
                return Ok(());
            }
        }
        Ok(())
    };
    let r = tokio::select! {
        r = keep_alive => r,
        r = term => r,
    };
    let _ = client.lease_client().revoke(lease).await;
    r
}
