//! Remembered answers of creating calls (`Idempotency-Key`): the first call with a key
//! records what it was asked (a hash of the request) and, once answered, the answer;
//! a retry with the same key and request gets that answer again instead of a second
//! object, the same key with another request is refused. Records expire after the
//! retention's `idempotency_ttl`; one whose call never finished (a crash) is given up
//! after `IN_PROGRESS_FOR`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::now_ms;
use crate::store::{DynStore, Expect, StoreError};

/// The prefix of the records in the store.
pub const PREFIX: &str = "idem/";
/// A call still unanswered after this long is taken to have died.
const IN_PROGRESS_FOR: Duration = Duration::from_secs(60);

/// One key's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// Hex SHA-256 of the request (method, path, body).
    request: String,
    /// The answer, once there is one.
    answer: Option<Answer>,
    created_at_ms: u64,
}

/// A remembered answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// What a call with an idempotency key does.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// The first call with this key: run it, then `complete` or `abandon`.
    First,
    /// A retry: answer this.
    Replay(Answer),
    /// The key was used for another request.
    Mismatch,
    /// The first call with this key is still running.
    InProgress,
}

/// Where the record of `key`, used by `caller`, is kept (hashed: keys are the
/// client's text, of any length up to the limit the API checks).
fn store_key(caller: &str, key: &str) -> String {
    let h = Sha256::digest(format!("{caller}\n{key}").as_bytes());
    format!("{PREFIX}{}", hex::encode(h))
}

/// The hash a request is known by.
pub fn request_hash(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b" ");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

fn codec(k: &str, e: serde_json::Error) -> StoreError {
    StoreError::Codec(k.to_string(), e.to_string())
}

/// Starts a call with `key` by `caller` for the request hashed `request`.
pub async fn begin(
    store: &DynStore,
    ttl: Duration,
    caller: &str,
    key: &str,
    request: &str,
) -> Result<Begin, StoreError> {
    let k = store_key(caller, key);
    let fresh = Record {
        request: request.to_string(),
        answer: None,
        created_at_ms: now_ms(),
    };
    let bytes = serde_json::to_vec(&fresh).map_err(|e| codec(&k, e))?;
    loop {
        let expect = match store.get(&k).await? {
            None => Expect::Absent,
            Some(v) => {
                let r: Record = serde_json::from_slice(&v.value).map_err(|e| codec(&k, e))?;
                let age = Duration::from_millis(now_ms().saturating_sub(r.created_at_ms));
                let dead = r.answer.is_none() && age > IN_PROGRESS_FOR;
                if age < ttl && !dead {
                    return Ok(match (r.request == request, r.answer) {
                        (false, _) => Begin::Mismatch,
                        (true, Some(a)) => Begin::Replay(a),
                        (true, None) => Begin::InProgress,
                    });
                }
                Expect::Revision(v.revision) // expired or abandoned: take it over
            }
        };
        match store.put(&k, bytes.clone(), expect).await {
            Ok(_) => return Ok(Begin::First),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Records the answer of the first call with `key`.
pub async fn complete(
    store: &DynStore,
    caller: &str,
    key: &str,
    request: &str,
    answer: Answer,
) -> Result<(), StoreError> {
    let k = store_key(caller, key);
    let r = Record {
        request: request.to_string(),
        answer: Some(answer),
        created_at_ms: now_ms(),
    };
    let bytes = serde_json::to_vec(&r).map_err(|e| codec(&k, e))?;
    store.put(&k, bytes, Expect::Any).await.map(|_| ())
}

/// Forgets the first call with `key` (it failed: a retry may try again).
pub async fn abandon(store: &DynStore, caller: &str, key: &str) -> Result<(), StoreError> {
    store
        .delete(&store_key(caller, key), Expect::Any)
        .await
        .map(|_| ())
}

/// Removes records older than `ttl`; answers how many.
pub async fn prune(store: &DynStore, ttl: Duration) -> Result<usize, StoreError> {
    let cutoff = now_ms().saturating_sub(ttl.as_millis() as u64);
    let mut n = 0;
    for (k, v) in store.list(PREFIX).await? {
        let old = serde_json::from_slice::<Record>(&v.value)
            .map(|r| r.created_at_ms < cutoff)
            .unwrap_or(true);
        if old
            && store
                .delete(&k, Expect::Revision(v.revision))
                .await
                .unwrap_or(false)
        {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_retry_gets_the_first_answer_and_another_request_is_refused() {
        let dir = nova_tests::TempDir::new();
        let store: DynStore =
            Arc::new(crate::store::sqlite::SqliteStore::open(&dir.join("db")).unwrap());
        let day = Duration::from_secs(86_400);
        let (a, b) = (
            request_hash("POST", "/v1/vms", b"{1}"),
            request_hash("POST", "/v1/vms", b"{2}"),
        );
        assert_eq!(
            begin(&store, day, "ann", "k1", &a).await.unwrap(),
            Begin::First
        );
        assert_eq!(
            begin(&store, day, "ann", "k1", &a).await.unwrap(),
            Begin::InProgress
        );
        let answer = Answer {
            status: 201,
            body: "{\"id\":\"vm-1\"}".into(),
        };
        complete(&store, "ann", "k1", &a, answer.clone())
            .await
            .unwrap();
        assert_eq!(
            begin(&store, day, "ann", "k1", &a).await.unwrap(),
            Begin::Replay(answer)
        );
        assert_eq!(
            begin(&store, day, "ann", "k1", &b).await.unwrap(),
            Begin::Mismatch
        );
        assert_eq!(
            begin(&store, day, "bob", "k1", &b).await.unwrap(),
            Begin::First,
            "keys are per caller"
        );
        abandon(&store, "bob", "k1").await.unwrap();
        assert_eq!(
            begin(&store, day, "bob", "k1", &b).await.unwrap(),
            Begin::First
        );
        // Expired: the key is free again, and pruning removes it.
        assert_eq!(
            begin(&store, Duration::ZERO, "ann", "k1", &b)
                .await
                .unwrap(),
            Begin::First
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(prune(&store, Duration::ZERO).await.unwrap(), 2);
    }
}
