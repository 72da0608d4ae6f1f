//! The API JSON of every listed object, kept per store revision: a list of objects
//! that did not change reads their stored rows and reuses what each encoded to,
//! instead of decoding and encoding each of them again (what a federated list of
//! thousands of VMs spent most of its time on, in every cluster it asked).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::model::Vm;
use crate::store::{decode, DynStore, Object, StoreError, Versioned};

/// One object as the API shows it, and the tenant it belongs to.
#[derive(Clone)]
pub struct Encoded {
    revision: u64,
    pub tenant: Arc<str>,
    pub json: Arc<[u8]>,
}

/// The encodings of the objects of type `T`, by key; each is that of one revision
/// (revisions are store-wide, so a key at the same revision is the same object).
pub struct EncodedList<T> {
    by_key: Mutex<Arc<HashMap<String, Encoded>>>,
    tenant: fn(&T) -> &str,
}

impl<T: Object> EncodedList<T> {
    /// `tenant` says whose an object is (what a caller's visibility is checked on).
    pub fn new(tenant: fn(&T) -> &str) -> Self {
        EncodedList {
            by_key: Mutex::new(Arc::new(HashMap::new())),
            tenant,
        }
    }

    /// Every stored `T`, encoded, in key order: those unchanged since the last list
    /// as they were encoded then (only their keys and revisions are read), the others
    /// read, decoded and encoded now. Keeps only what this list saw, so deleted
    /// objects are forgotten.
    pub async fn list(&self, store: &DynStore) -> Result<Vec<Encoded>, StoreError> {
        let revisions = store.list_revisions(T::PREFIX).await?;
        let known = self
            .by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let missing = revisions
            .iter()
            .filter(|(k, rev)| known.get(k).is_none_or(|e| e.revision != *rev))
            .count();
        // Many to read (the first list): one read of them all beats one each.
        let mut rows: HashMap<String, Versioned<Vec<u8>>> = if missing > MANY {
            store.list(T::PREFIX).await?.into_iter().collect()
        } else {
            HashMap::new()
        };
        let mut now = HashMap::with_capacity(revisions.len());
        let mut out = Vec::with_capacity(revisions.len());
        for (key, rev) in revisions {
            let e = match known.get(&key).filter(|e| e.revision == rev) {
                Some(e) => e.clone(),
                None => {
                    let row = match rows.remove(&key) {
                        Some(row) => Some(row),
                        None => store.get(&key).await?,
                    };
                    // Deleted since its key was listed.
                    let Some(row) = row else { continue };
                    self.encode(&key, row)?
                }
            };
            out.push(e.clone());
            now.insert(key, e);
        }
        *self.by_key.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(now);
        Ok(out)
    }

    fn encode(&self, key: &str, row: Versioned<Vec<u8>>) -> Result<Encoded, StoreError> {
        let revision = row.revision;
        let o: T = decode(key, row)?;
        let json =
            serde_json::to_vec(&o).map_err(|e| StoreError::Codec(key.into(), e.to_string()))?;
        Ok(Encoded {
            revision,
            tenant: (self.tenant)(&o).into(),
            json: json.into(),
        })
    }
}

/// Past this many objects to read, a list reads all of them at once.
const MANY: usize = 64;

impl Default for EncodedList<Vm> {
    fn default() -> Self {
        EncodedList::new(|v| &v.tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{sqlite::SqliteStore, Objects};

    fn vm(id: &str, tenant: &str) -> Vm {
        Vm {
            id: id.into(),
            tenant: tenant.into(),
            spec: crate::model::VmSpec::new(id, "/k"),
            desired: crate::model::DesiredState::Stopped,
            host: None,
            observed: None,
            migrating: None,
            created_at_ms: 1,
            revision: 0,
        }
    }

    #[tokio::test]
    async fn a_list_reencodes_only_what_changed_and_forgets_what_is_gone() {
        let tmp = nova_tests::TempDir::new();
        let store: DynStore = Arc::new(SqliteStore::open(&tmp.path().join("s.db")).unwrap());
        for i in 0..200 {
            store.create(&vm(&format!("v{i:03}"), "t1")).await.unwrap();
        }
        let list = EncodedList::<Vm>::default();
        let first = list.list(&store).await.unwrap();
        assert_eq!(first.len(), 200);
        // What the API shows: the VM with its revision.
        let shown: Vm = serde_json::from_slice(&first[7].json).unwrap();
        assert_eq!(shown.id, "v007");
        assert_eq!(
            shown.revision,
            store.must_read::<Vm>("v007").await.unwrap().revision
        );
        assert_eq!(&*first[7].tenant, "t1");

        store
            .update::<Vm, _>("v007", |v| {
                v.tenant = "t2".into();
                true
            })
            .await
            .unwrap();
        store.remove::<Vm>("v100").await.unwrap();
        let second = list.list(&store).await.unwrap();
        assert_eq!(second.len(), 199, "the removed VM is not listed");
        let changed: Vm = serde_json::from_slice(&second[7].json).unwrap();
        assert_eq!((changed.tenant.as_str(), &*second[7].tenant), ("t2", "t2"));
        assert!(changed.revision > shown.revision);
        assert!(!Arc::ptr_eq(&first[7].json, &second[7].json), "re-encoded");
        assert!(
            Arc::ptr_eq(&first[8].json, &second[8].json),
            "an unchanged VM's encoding is the one kept"
        );
        assert_eq!(
            list.by_key.lock().unwrap().len(),
            199,
            "the removed one is forgotten"
        );
    }
}
