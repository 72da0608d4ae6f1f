//! The storage trait every backend implements (a versioned key-value store with
//! compare-and-swap), and the typed layer on top of it that the rest of the
//! controller uses: create/read/update/list/remove of hosts, VMs, operations, tenants,
//! users, tokens and the audit log. Backends: [`sqlite`] (default, one file) and
//! [`etcd`] (several controllers, leader elected through a lease).

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod sqlite;
#[cfg(test)]
mod suite;

use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::model::{AuditEntry, Host, Operation, Tenant, Token, User, Vm};

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
    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned<Vec<u8>>)>, StoreError>;
}

/// A shared store.
pub type DynStore = Arc<dyn Store>;

/// A kind of stored object, keyed under its own prefix.
pub trait Object: Serialize + DeserializeOwned + Send + Sync {
    const PREFIX: &'static str;
    /// The object's key under `PREFIX` (its id; a token's hash).
    fn key(&self) -> &str;
    /// Called after a read with the record's revision.
    fn set_revision(&mut self, _rev: u64) {}
}

impl Object for Host {
    const PREFIX: &'static str = "hosts/";
    fn key(&self) -> &str {
        &self.id
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
/// Tokens are keyed by the hash of their secret, so authenticating is one read.
impl Object for Token {
    const PREFIX: &'static str = "tokens/";
    fn key(&self) -> &str {
        &self.hash
    }
}

fn decode<T: Object>(key: &str, v: Versioned<Vec<u8>>) -> Result<T, StoreError> {
    let mut o: T = serde_json::from_slice(&v.value)
        .map_err(|e| StoreError::Codec(key.into(), e.to_string()))?;
    o.set_revision(v.revision);
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
    /// Writes `o` only if the stored one is still at `revision`.
    async fn replace<T: Object>(&self, o: &T, revision: u64) -> Result<u64, StoreError>;
    async fn remove<T: Object>(&self, id: &str) -> Result<bool, StoreError>;
    /// Appends to the audit log.
    async fn audit(&self, e: &AuditEntry) -> Result<(), StoreError>;
    /// The audit log, oldest first, at most the last `limit` entries.
    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
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

    async fn update<T, F>(&self, id: &str, mut f: F) -> Result<T, StoreError>
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
        let key = format!("audit/{:016}-{:016x}", e.at_ms, rand::random::<u64>());
        let v = serde_json::to_vec(e).map_err(|x| StoreError::Codec(key.clone(), x.to_string()))?;
        self.put(&key, v, Expect::Absent).await.map(|_| ())
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let all = self.list("audit/").await?;
        let skip = all.len().saturating_sub(limit);
        all.into_iter()
            .skip(skip)
            .map(|(k, v)| {
                serde_json::from_slice(&v.value).map_err(|e| StoreError::Codec(k, e.to_string()))
            })
            .collect()
    }
}

/// Opens a store from `sqlite:PATH` or `etcd:http://HOST:PORT[,...]`.
pub async fn open(spec: &str) -> Result<DynStore, StoreError> {
    if let Some(path) = spec.strip_prefix("sqlite:") {
        return Ok(Arc::new(sqlite::SqliteStore::open(std::path::Path::new(
            path,
        ))?));
    }
    #[cfg(feature = "etcd")]
    if let Some(eps) = spec.strip_prefix("etcd:") {
        let eps: Vec<String> = eps.split(',').map(String::from).collect();
        return Ok(Arc::new(etcd::EtcdStore::connect(&eps, "nova/").await?));
    }
    Err(StoreError::Backend(format!(
        "unknown store '{spec}' (sqlite:PATH or etcd:URL)"
    )))
}
