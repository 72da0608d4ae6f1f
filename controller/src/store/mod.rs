//! The storage trait every backend implements (a versioned key-value store with
//! compare-and-swap), and the typed layer on top of it that the rest of the
//! controller uses: create/read/update/list/remove of hosts, VMs, operations, tenants,
//! users, tokens and the audit log, one page of a list at a time. Besides keys, a
//! store keeps append-only logs (the event log) that can be read from a revision on
//! and watched. Backends: [`sqlite`] (default, one file) and [`etcd`] (several
//! controllers, leader elected through etcd's election API, [`election`]).

#[cfg(feature = "etcd")]
pub mod election;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod sqlite;
#[cfg(test)]
mod suite;

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::model::{AuditEntry, Host, Operation, Tenant, Token, User, Vm};

/// The prefix of the audit log's keys.
pub const AUDIT_PREFIX: &str = "audit/";

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is there.
    Any,
    /// The key must not exist.
    Absent,
    /// The key must be at this revision.
    Revision(u64),
}

/// A value and the store revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: u64,
}

/// Keys and their versioned values, in key (or log) order.
pub type Entries = Vec<(String, Versioned<Vec<u8>>)>;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key was not at the expected revision (somebody else wrote first).
    #[error("conflict on {0}: it changed since it was read")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("store backend: {0}")]
    Backend(String),
    #[error("stored value of {0} is unreadable: {1}")]
    Codec(String, String),
    /// An update named a revision the object is no longer at.
    #[error("{key} is at revision {actual}, not {expected}")]
    Stale {
        key: String,
        expected: u64,
        actual: u64,
    },
}

/// A versioned key-value store with compare-and-swap: everything the controller
/// persists goes through it.
#[async_trait]
pub trait Store: Send + Sync {
    /// Which backend (`sqlite` or `etcd`).
    fn backend(&self) -> &'static str;
    async fn get(&self, key: &str) -> Result<Option<Versioned<Vec<u8>>>, StoreError>;
    /// Writes `value` if `expect` holds; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<u64, StoreError>;
    /// Removes the key if `expect` holds; false when it was not there.
    async fn delete(&self, key: &str, expect: Expect) -> Result<bool, StoreError>;
    /// Every key under `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Entries, StoreError>;
    /// Every key under `prefix` and its revision, in key order, without the values:
    /// what a reader that keeps values by revision asks first.
    async fn list_revisions(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError>;
    /// At most `limit` keys under `prefix` that sort after `after` (a whole key; from
    /// the first when None), in key order.
    async fn list_range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Entries, StoreError>;
    /// Appends `value` to the log under `prefix` (an entry never rewritten); returns
    /// its revision, which orders the log.
    async fn append(&self, prefix: &str, value: Vec<u8>) -> Result<u64, StoreError>;
    /// At most `limit` entries of the log under `prefix` whose revision is above
    /// `after`, oldest first, with their keys (to remove them by).
    async fn log_since(
        &self,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> Result<Entries, StoreError>;
    /// The log under `prefix` as it grows, whoever appends (this process or another
    /// controller): the entries above `after` first (only new ones when None), then
    /// each new one, in revision order, none twice. Ends with an error if the
    /// backend fails; the caller resumes from the last revision it saw. Returns once
    /// the watch is in place, so "only new ones" includes every entry appended after.
    async fn watch_log(
        self: Arc<Self>,
        prefix: &str,
        after: Option<u64>,
    ) -> BoxStream<'static, Result<Versioned<Vec<u8>>, StoreError>>;
}

/// A shared store.
pub type DynStore = Arc<dyn Store>;

/// What a backend's watcher task sends, as the stream `watch_log` answers.
fn received(
    rx: tokio::sync::mpsc::Receiver<Result<Versioned<Vec<u8>>, StoreError>>,
) -> BoxStream<'static, Result<Versioned<Vec<u8>>, StoreError>> {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|v| (v, rx))
    }))
}

/// A kind of stored object, keyed under its own prefix.
pub trait Object: Serialize + DeserializeOwned + Send + Sync {
    const PREFIX: &'static str;
    /// The object's key under `PREFIX` (its id; a token's hash).
    fn key(&self) -> &str;
    /// Called after a read with the record's revision.
    fn set_revision(&mut self, _rev: u64) {}
    /// Called after a read with the record's key under `PREFIX`.
    fn set_key(&mut self, _key: &str) {}
    /// What a list's `continue` token holds for this object (its key by default).
    fn cursor(&self) -> &str {
        self.key()
    }
    /// The whole key a page after `cursor` starts after.
    fn resume_after(cursor: &str) -> String {
        format!("{}{cursor}", Self::PREFIX)
    }
}

impl Object for Host {
    const PREFIX: &'static str = "hosts/";
    fn key(&self) -> &str {
        &self.id
    }
    fn set_revision(&mut self, rev: u64) {
        self.revision = rev;
    }
}
impl Object for Vm {
    const PREFIX: &'static str = "vms/";
    fn key(&self) -> &str {
        &self.id
    }
    fn set_revision(&mut self, rev: u64) {
        self.revision = rev;
    }
}
impl Object for Operation {
    const PREFIX: &'static str = "ops/";
    fn key(&self) -> &str {
        &self.id
    }
    fn set_revision(&mut self, rev: u64) {
        self.revision = rev;
    }
}
impl Object for Tenant {
    const PREFIX: &'static str = "tenants/";
    fn key(&self) -> &str {
        &self.id
    }
}
impl Object for User {
    const PREFIX: &'static str = "users/";
    fn key(&self) -> &str {
        &self.id
    }
}
/// Tokens are keyed by the hash of their secret, so authenticating is one read; a
/// page of tokens continues from the public id (the hash's first 16 digits), never
/// from the hash itself.
impl Object for Token {
    const PREFIX: &'static str = "tokens/";
    fn key(&self) -> &str {
        &self.hash
    }
    fn cursor(&self) -> &str {
        &self.id
    }
    fn resume_after(cursor: &str) -> String {
        // Every hash starting with the id sorts before `<id>g` (hex digits are < 'g').
        format!("{}{cursor}g", Self::PREFIX)
    }
}

/// Audit entries are keyed by time (`<at_ms>-<random>`), oldest first.
impl Object for AuditEntry {
    const PREFIX: &'static str = AUDIT_PREFIX;
    fn key(&self) -> &str {
        &self.id
    }
    fn set_key(&mut self, key: &str) {
        if self.id.is_empty() {
            self.id = key.to_string();
        }
    }
}

/// The object stored at `key` as `v`, with its revision and key set.
pub fn decode<T: Object>(key: &str, v: Versioned<Vec<u8>>) -> Result<T, StoreError> {
    let mut o: T = serde_json::from_slice(&v.value)
        .map_err(|e| StoreError::Codec(key.into(), e.to_string()))?;
    o.set_revision(v.revision);
    o.set_key(key.strip_prefix(T::PREFIX).unwrap_or(key));
    Ok(o)
}

fn encode<T: Object>(o: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(o)
        .map_err(|e| StoreError::Codec(format!("{}{}", T::PREFIX, o.key()), e.to_string()))
}

/// Typed access to the stored objects, for any [`Store`].
#[async_trait]
pub trait Objects {
    /// Stores a new object; `Conflict` if its id is taken.
    async fn create<T: Object>(&self, o: &T) -> Result<u64, StoreError>;
    async fn read<T: Object>(&self, id: &str) -> Result<Option<T>, StoreError>;
    /// Like `read`, `NotFound` when absent.
    async fn must_read<T: Object>(&self, id: &str) -> Result<T, StoreError>;
    async fn list_all<T: Object>(&self) -> Result<Vec<T>, StoreError>;
    /// Read-modify-write with compare-and-swap, retried on conflict: `f` may run more
    /// than once and returns false to leave the object as it is.
    async fn update<T, F>(&self, id: &str, f: F) -> Result<T, StoreError>
    where
        T: Object,
        F: FnMut(&mut T) -> bool + Send;
    /// Like `update`, but only while the object is at `revision` when one is given:
    /// `Stale` (nothing written) once it is not.
    async fn update_at<T, F>(&self, id: &str, revision: Option<u64>, f: F) -> Result<T, StoreError>
    where
        T: Object,
        F: FnMut(&mut T) -> bool + Send;
    /// Objects after `cursor` (a `continue` token) that `keep` accepts, at most
    /// `limit`; the cursor of the last one when more may follow.
    async fn page<T, F>(
        &self,
        cursor: Option<&str>,
        limit: usize,
        keep: F,
    ) -> Result<(Vec<T>, Option<String>), StoreError>
    where
        T: Object,
        F: Fn(&T) -> bool + Send + Sync;
    /// Writes `o` only if the stored one is still at `revision`.
    async fn replace<T: Object>(&self, o: &T, revision: u64) -> Result<u64, StoreError>;
    async fn remove<T: Object>(&self, id: &str) -> Result<bool, StoreError>;
    /// Appends to the audit log (its `id` is made here).
    async fn audit(&self, e: &AuditEntry) -> Result<(), StoreError>;
}

#[async_trait]
impl<S: Store + ?Sized> Objects for S {
    async fn create<T: Object>(&self, o: &T) -> Result<u64, StoreError> {
        let key = format!("{}{}", T::PREFIX, o.key());
        self.put(&key, encode(o)?, Expect::Absent).await
    }

    async fn read<T: Object>(&self, id: &str) -> Result<Option<T>, StoreError> {
        let key = format!("{}{id}", T::PREFIX);
        match self.get(&key).await? {
            Some(v) => Ok(Some(decode(&key, v)?)),
            None => Ok(None),
        }
    }

    async fn must_read<T: Object>(&self, id: &str) -> Result<T, StoreError> {
        self.read(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("{}{id}", T::PREFIX)))
    }

    async fn list_all<T: Object>(&self) -> Result<Vec<T>, StoreError> {
        self.list(T::PREFIX)
            .await?
            .into_iter()
            .map(|(k, v)| decode(&k, v))
            .collect()
    }

    async fn update<T, F>(&self, id: &str, f: F) -> Result<T, StoreError>
    where
        T: Object,
        F: FnMut(&mut T) -> bool + Send,
    {
        self.update_at(id, None, f).await
    }

    async fn update_at<T, F>(
        &self,
        id: &str,
        revision: Option<u64>,
        mut f: F,
    ) -> Result<T, StoreError>
    where
        T: Object,
        F: FnMut(&mut T) -> bool + Send,
    {
        let key = format!("{}{id}", T::PREFIX);
        for attempt in 0..200u32 {
            let Some(v) = self.get(&key).await? else {
                return Err(StoreError::NotFound(key));
            };
            let rev = v.revision;
            if let Some(want) = revision.filter(|&w| w != rev) {
                return Err(StoreError::Stale {
                    key,
                    expected: want,
                    actual: rev,
                });
            }
            let mut o: T = decode(&key, v)?;
            if !f(&mut o) {
                return Ok(o);
            }
            match self.put(&key, encode(&o)?, Expect::Revision(rev)).await {
                Ok(new_rev) => {
                    o.set_revision(new_rev);
                    return Ok(o);
                }
                Err(StoreError::Conflict(_)) => {
                    if attempt > 3 {
                        tokio::time::sleep(std::time::Duration::from_millis(rand::random_range(
                            0..5,
                        )))
                        .await;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(key))
    }

    async fn page<T, F>(
        &self,
        cursor: Option<&str>,
        limit: usize,
        keep: F,
    ) -> Result<(Vec<T>, Option<String>), StoreError>
    where
        T: Object,
        F: Fn(&T) -> bool + Send + Sync,
    {
        let limit = limit.max(1);
        let mut after = cursor.map(T::resume_after);
        let mut items: Vec<T> = Vec::new();
        // Read a little past `limit` so that "more follow" is known, not guessed.
        loop {
            let batch = self
                .list_range(T::PREFIX, after.as_deref(), limit + 1)
                .await?;
            let full = batch.len() > limit;
            for (k, v) in batch {
                after = Some(k.clone());
                let o: T = decode(&k, v)?;
                if keep(&o) {
                    if items.len() == limit {
                        let next = items.last().map(|o| o.cursor().to_string());
                        return Ok((items, next));
                    }
                    items.push(o);
                }
            }
            if !full {
                return Ok((items, None));
            }
        }
    }

    async fn replace<T: Object>(&self, o: &T, revision: u64) -> Result<u64, StoreError> {
        let key = format!("{}{}", T::PREFIX, o.key());
        self.put(&key, encode(o)?, Expect::Revision(revision)).await
    }

    async fn remove<T: Object>(&self, id: &str) -> Result<bool, StoreError> {
        self.delete(&format!("{}{id}", T::PREFIX), Expect::Any)
            .await
    }

    async fn audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        // Time-ordered keys; the random suffix keeps two entries of one millisecond apart.
        let mut e = e.clone();
        e.id = format!("{:016}-{:016x}", e.at_ms, rand::random::<u64>());
        self.create(&e).await.map(|_| ())
    }
}

/// The key prefix of the controller's objects in a shared etcd.
pub const ETCD_PREFIX: &str = "nova/";

/// Opens a store from `sqlite:PATH` or `etcd:http(s)://HOST:PORT[,...]` (with `tls`
/// and credentials for etcd).
pub async fn open(spec: &str, etcd_opts: &EtcdOptions) -> Result<DynStore, StoreError> {
    if let Some(path) = spec.strip_prefix("sqlite:") {
        let _ = etcd_opts;
        return Ok(Arc::new(sqlite::SqliteStore::open(std::path::Path::new(
            path,
        ))?));
    }
    #[cfg(feature = "etcd")]
    if let Some(eps) = spec.strip_prefix("etcd:") {
        let eps: Vec<String> = eps.split(',').map(String::from).collect();
        return Ok(Arc::new(
            etcd::EtcdStore::connect(&eps, ETCD_PREFIX, etcd_opts).await?,
        ));
    }
    Err(StoreError::Backend(format!(
        "unknown store '{spec}' (sqlite:PATH or etcd:URL)"
    )))
}

/// How to reach a secured etcd: a CA for `https://` endpoints, a client certificate
/// (when etcd asks for one), a user and password (when etcd has auth enabled).
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    /// PEM of the CA that signs etcd's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of this controller's client certificate and key.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// User and password.
    pub user: Option<(String, String)>,
}
