//! The etcd backend (etcd v3 API; Debian's etcd-server 3.4): keys under a prefix,
//! compare-and-swap through transactions on `mod_revision`, logs ordered by etcd's own
//! revisions and watched through etcd's watch API (so every controller sees every
//! other's appends), over plain or TLS connections with optional user/password auth.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    Identity, PutOptions, SortOrder, SortTarget, TlsOptions, Txn, TxnOp, WatchOptions,
};
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;

use super::{Entries, EtcdOptions, Expect, Store, StoreError, Versioned};

/// A store in etcd; every key is stored under `prefix`.
pub struct EtcdStore {
    client: Client,
    prefix: String,
}

fn be(e: etcd_client::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The first key after every key that starts with `prefix` (etcd's range end).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`http://127.0.0.1:2379`, or `https://`
    /// with `opts.ca_pem`), as `opts.user` when given.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        opts: &EtcdOptions,
    ) -> Result<Self, StoreError> {
        let client = connect(endpoints, opts).await?;
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

    fn unprefixed(&self, kvs: &[etcd_client::KeyValue]) -> Entries {
        let strip = self.prefix.len();
        kvs.iter()
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
            .collect()
    }
}

/// A client of etcd at `endpoints` with the TLS and auth of `opts`.
pub async fn connect(endpoints: &[String], opts: &EtcdOptions) -> Result<Client, StoreError> {
    let mut o = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5));
    if opts.ca_pem.is_some() || opts.identity_pem.is_some() {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &opts.ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &opts.identity_pem {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        o = o.with_tls(tls);
    }
    if let Some((user, password)) = &opts.user {
        o = o.with_user(user, password);
    }
    Client::connect(endpoints, Some(o)).await.map_err(be)
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

    async fn list(&self, prefix: &str) -> Result<Entries, StoreError> {
        let r = self
            .client
            .kv_client()
            .get(self.k(prefix), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(be)?;
        Ok(self.unprefixed(r.kvs()))
    }

    async fn list_revisions(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let r = self
            .client
            .kv_client()
            .get(
                self.k(prefix),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .map_err(be)?;
        Ok(self
            .unprefixed(r.kvs())
            .into_iter()
            .map(|(k, v)| (k, v.revision))
            .collect())
    }

    async fn list_range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let start = match after {
            // The first key after `after` is `after` followed by a zero byte.
            Some(a) => format!("{}\0", self.k(a)),
            None => self.k(prefix),
        };
        let opts = GetOptions::new()
            .with_range(prefix_end(&self.k(prefix)))
            .with_limit(limit as i64);
        let r = self
            .client
            .kv_client()
            .get(start, Some(opts))
            .await
            .map_err(be)?;
        Ok(self.unprefixed(r.kvs()))
    }

    async fn append(&self, prefix: &str, value: Vec<u8>) -> Result<u64, StoreError> {
        // The key only has to be new; the entry's place in the log is etcd's revision.
        let key = format!(
            "{prefix}{:016}-{:016x}",
            crate::model::now_ms(),
            rand::random::<u64>()
        );
        self.put(&key, value, Expect::Absent).await
    }

    async fn log_since(
        &self,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let opts = GetOptions::new()
            .with_prefix()
            .with_min_create_revision(after as i64 + 1)
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(limit as i64);
        let r = self
            .client
            .kv_client()
            .get(self.k(prefix), Some(opts))
            .await
            .map_err(be)?;
        Ok(self.unprefixed(r.kvs()))
    }

    async fn watch_log(
        self: Arc<Self>,
        prefix: &str,
        after: Option<u64>,
    ) -> BoxStream<'static, Result<Versioned<Vec<u8>>, StoreError>> {
        let (tx, rx) = mpsc::channel(256);
        // etcd replays its history from `after` on (until it is compacted), then
        // streams: one mechanism for catching up and for live entries. The watch is
        // created (etcd has answered) before this returns, so "only new ones" misses
        // no entry appended after the call.
        let mut opts = WatchOptions::new().with_prefix();
        if let Some(a) = after {
            opts = opts.with_start_revision(a as i64 + 1);
        }
        let created = self
            .client
            .watch_client()
            .watch(self.k(prefix), Some(opts))
            .await;
        tokio::spawn(async move {
            let (_watcher, mut stream) = match created {
                Ok(w) => w,
                Err(e) => {
                    let _ = tx.send(Err(be(e))).await;
                    return;
                }
            };
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = tx.closed() => return,
                };
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(be(e))).await;
                        return;
                    }
                };
                if resp.canceled() {
                    let why = format!(
                        "etcd ended the watch: {} (compacted at {})",
                        resp.cancel_reason(),
                        resp.compact_revision()
                    );
                    let _ = tx.send(Err(StoreError::Backend(why))).await;
                    return;
                }
                for ev in resp.events() {
                    // Entries are written once; a removal (pruning) is no event.
                    let Some(kv) = ev.kv().filter(|_| ev.event_type() == EventType::Put) else {
                        continue;
                    };
                    let v = Versioned {
                        value: kv.value().to_vec(),
                        revision: kv.mod_revision() as u64,
                    };
                    if tx.send(Ok(v)).await.is_err() {
                        return;
                    }
                }
            }
        });
        super::received(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn the_range_of_a_prefix_ends_after_its_last_key() {
        assert_eq!(prefix_end("nova/"), b"nova0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
