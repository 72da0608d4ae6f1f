//! The etcd backend (etcd v3 API; Debian's etcd-server 3.4): keys under a prefix,
//! compare-and-swap through transactions on `mod_revision`, and leader election
//! through a key held by a lease.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use tokio::sync::watch;

use super::{Expect, Store, StoreError, Versioned};

/// A store in etcd; every key is stored under `prefix`.
pub struct EtcdStore {
    client: Client,
    prefix: String,
}

fn be(e: etcd_client::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`http://127.0.0.1:2379`).
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(opts)).await.map_err(be)?;
        Ok(EtcdStore {
            client,
            prefix: prefix.to_string(),
        })
    }

    /// The client, for leader election.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    fn k(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn guard(&self, key: &str, expect: Expect) -> Vec<Compare> {
        match expect {
            Expect::Any => vec![],
            Expect::Absent => vec![Compare::create_revision(key, CompareOp::Equal, 0)],
            Expect::Revision(r) => vec![Compare::mod_revision(key, CompareOp::Equal, r as i64)],
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    async fn get(&self, key: &str) -> Result<Option<Versioned<Vec<u8>>>, StoreError> {
        let r = self
            .client
            .kv_client()
            .get(self.k(key), None)
            .await
            .map_err(be)?;
        Ok(r.kvs().first().map(|kv| Versioned {
            value: kv.value().to_vec(),
            revision: kv.mod_revision() as u64,
        }))
    }

    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<u64, StoreError> {
        let k = self.k(key);
        let txn = Txn::new()
            .when(self.guard(&k, expect))
            .and_then([TxnOp::put(k.clone(), value, None::<PutOptions>)]);
        let r = self.client.kv_client().txn(txn).await.map_err(be)?;
        if !r.succeeded() {
            return Err(StoreError::Conflict(key.to_string()));
        }
        Ok(r.header().map(|h| h.revision() as u64).unwrap_or(0))
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<bool, StoreError> {
        let k = self.k(key);
        let txn = Txn::new()
            .when(self.guard(&k, expect))
            .and_then([TxnOp::delete(k.clone(), None::<DeleteOptions>)]);
        let r = self.client.kv_client().txn(txn).await.map_err(be)?;
        if !r.succeeded() {
            return Err(StoreError::Conflict(key.to_string()));
        }
        let deleted = r.op_responses().into_iter().any(|op| match op {
            etcd_client::TxnOpResponse::Delete(d) => d.deleted() > 0,
            _ => false,
        });
        Ok(deleted)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned<Vec<u8>>)>, StoreError> {
        let r = self
            .client
            .kv_client()
            .get(self.k(prefix), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(be)?;
        let strip = self.prefix.len();
        Ok(r.kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key())
                    .get(strip..)
                    .unwrap_or_default()
                    .to_string();
                (
                    key,
                    Versioned {
                        value: kv.value().to_vec(),
                        revision: kv.mod_revision() as u64,
                    },
                )
            })
            .collect())
    }
}

/// How long a leader's lease lives without keep-alives; a dead leader is replaced
/// within about this long plus one poll.
pub const LEASE_TTL_S: i64 = 2;
const POLL: Duration = Duration::from_millis(250);

/// Campaigns for leadership under `key` as `me`, forever; the watch says whether
/// this controller leads right now.
pub fn elect(client: Client, key: String, me: String) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            if let Err(e) = campaign(client.clone(), &key, &me, &tx).await {
                tracing::warn!("leader election: {e}");
            }
            let _ = tx.send(false);
            tokio::time::sleep(POLL).await;
        }
    });
    rx
}

async fn campaign(
    client: Client,
    key: &str,
    me: &str,
    leading: &watch::Sender<bool>,
) -> Result<(), etcd_client::Error> {
    let mut lease = client.lease_client();
    let id = lease.grant(LEASE_TTL_S, None).await?.id();
    let (mut keeper, mut acks) = lease.keep_alive(id).await?;
    let mut kv = client.kv_client();
    loop {
        keeper.keep_alive().await?;
        match acks.message().await? {
            Some(a) if a.ttl() > 0 => {}
            _ => return Ok(()), // the lease is gone: start over with a new one
        }
        if !*leading.borrow() {
            let txn = Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, me, Some(PutOptions::new().with_lease(id)))]);
            if kv.txn(txn).await?.succeeded() {
                tracing::info!("{me} is now the leader");
                let _ = leading.send(true);
            }
        } else {
            // Still ours? (A paused process may have lost it.)
            let r = kv.get(key, None).await?;
            if r.kvs().first().map(|k| k.lease()) != Some(id) {
                tracing::warn!("{me} lost leadership");
                return Ok(());
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Who leads right now (the value under `key`).
pub async fn leader(client: &Client, key: &str) -> Option<String> {
    let r = client.kv_client().get(key, None).await.ok()?;
    r.kvs()
        .first()
        .map(|k| String::from_utf8_lossy(k.value()).to_string())
}
