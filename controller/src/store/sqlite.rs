//! The SQLite backend: one file in WAL mode, one table of versioned keys, and a
//! store-wide revision counter so revisions mean the same as etcd's. A log entry's
//! key is its revision (zero-padded), so key order is log order; appends are also
//! told to this process's watchers (one controller per file: nobody else appends).

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{broadcast, mpsc};

use super::{Entries, Expect, Store, StoreError, Versioned};

/// How many entries one read of a log returns while catching a watcher up.
const CATCH_UP: usize = 1000;

/// A store in one SQLite file. Writes are serialized by the writer connection's lock,
/// which makes compare-and-swap a read and a write under one transaction; reads use a
/// few more connections (WAL lets them run beside the writer).
pub struct SqliteStore {
    conn: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next: std::sync::atomic::AtomicUsize,
    /// Every append, sent under the writer's lock so that watchers see revision order.
    appended: broadcast::Sender<(String, Versioned<Vec<u8>>)>,
}

const READERS: usize = 4;

fn be(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Sets the database and its `-wal`/`-shm` companions to 0600 (an existing 0644
/// database from an older controller included).
fn owner_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Backend(format!(
                    "{}: {e}",
                    std::path::Path::new(&p).display()
                )))
            }
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`. It holds hostd tokens, so
    /// it and its WAL and shared-memory files are the owner's only (0600).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        }
        let conn = Connection::open(path).map_err(be)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(be)?;
        owner_only(path)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(be)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(be)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, rev INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0), rev INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta (id, rev) VALUES (0, 0);
             CREATE INDEX IF NOT EXISTS kv_key_rev ON kv (key, rev);",
        )
        .map_err(be)?;
        let mut readers = vec![];
        for _ in 0..READERS {
            let r = Connection::open(path).map_err(be)?;
            r.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(be)?;
            readers.push(Mutex::new(r));
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            readers,
            next: Default::default(),
            appended: broadcast::channel(1024).0,
        })
    }

    /// The store's revision now (that of its last write).
    fn revision(&self) -> Result<u64, StoreError> {
        self.reader()
            .query_row("SELECT rev FROM meta WHERE id = 0", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|r| r as u64)
            .map_err(be)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (the transaction
        // rolls back on drop), so a poisoned lock is safe to take.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free reader connection (or the next one in turn, waiting for it).
    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        for r in &self.readers {
            if let Ok(g) = r.try_lock() {
                return g;
            }
        }
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.readers.len();
        self.readers[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The end of the key range under `prefix`.
fn range_end(prefix: &str) -> String {
    // Keys under a prefix are the range [prefix, prefix + U+10FFFF).
    format!("{prefix}\u{10FFFF}")
}

fn log_key(prefix: &str, rev: u64) -> String {
    format!("{prefix}{rev:020}")
}

fn rows(
    c: &Connection,
    sql: &str,
    from: &str,
    to: &str,
    limit: usize,
) -> Result<Entries, StoreError> {
    let mut st = c.prepare_cached(sql).map_err(be)?;
    let rows = st
        .query_map(params![from, to, limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Versioned {
                    value: r.get(1)?,
                    revision: r.get::<_, i64>(2)? as u64,
                },
            ))
        })
        .map_err(be)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(be)
}

fn current(tx: &Connection, key: &str) -> Result<Option<u64>, StoreError> {
    tx.query_row("SELECT rev FROM kv WHERE key = ?1", [key], |r| {
        r.get::<_, i64>(0)
    })
    .optional()
    .map(|o| o.map(|r| r as u64))
    .map_err(be)
}

fn check(key: &str, have: Option<u64>, expect: Expect) -> Result<(), StoreError> {
    let ok = match expect {
        Expect::Any => true,
        Expect::Absent => have.is_none(),
        Expect::Revision(r) => have == Some(r),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::Conflict(key.to_string()))
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn get(&self, key: &str) -> Result<Option<Versioned<Vec<u8>>>, StoreError> {
        let c = self.reader();
        let mut st = c
            .prepare_cached("SELECT value, rev FROM kv WHERE key = ?1")
            .map_err(be)?;
        st.query_row([key], |r| {
            Ok(Versioned {
                value: r.get(0)?,
                revision: r.get::<_, i64>(1)? as u64,
            })
        })
        .optional()
        .map_err(be)
    }

    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<u64, StoreError> {
        let mut c = self.lock();
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(be)?;
        check(key, current(&tx, key)?, expect)?;
        let rev: i64 = tx
            .query_row(
                "UPDATE meta SET rev = rev + 1 WHERE id = 0 RETURNING rev",
                [],
                |r| r.get(0),
            )
            .map_err(be)?;
        tx.execute(
            "INSERT INTO kv (key, value, rev) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, rev = excluded.rev",
            params![key, value, rev],
        )
        .map_err(be)?;
        tx.commit().map_err(be)?;
        Ok(rev as u64)
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<bool, StoreError> {
        let mut c = self.lock();
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(be)?;
        let have = current(&tx, key)?;
        check(key, have, expect)?;
        if have.is_none() {
            return Ok(false);
        }
        tx.execute("DELETE FROM kv WHERE key = ?1", [key])
            .map_err(be)?;
        tx.execute("UPDATE meta SET rev = rev + 1 WHERE id = 0", [])
            .map_err(be)?;
        tx.commit().map_err(be)?;
        Ok(true)
    }

    async fn list(&self, prefix: &str) -> Result<Entries, StoreError> {
        rows(
            &self.reader(),
            "SELECT key, value, rev FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT ?3",
            prefix,
            &range_end(prefix),
            i64::MAX as usize,
        )
    }

    async fn list_revisions(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        // From the index on (key, rev) alone: no row and no value is read.
        let c = self.reader();
        let mut st = c
            .prepare_cached(
                "SELECT key, rev FROM kv INDEXED BY kv_key_rev WHERE key >= ?1 AND key < ?2 ORDER BY key",
            )
            .map_err(be)?;
        let rows = st
            .query_map(params![prefix, &range_end(prefix)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(be)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(be)
    }

    async fn list_range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let c = self.reader();
        let end = range_end(prefix);
        match after {
            Some(a) => rows(
                &c,
                "SELECT key, value, rev FROM kv WHERE key > ?1 AND key < ?2 ORDER BY key LIMIT ?3",
                a,
                &end,
                limit,
            ),
            None => rows(
                &c,
                "SELECT key, value, rev FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT ?3",
                prefix,
                &end,
                limit,
            ),
        }
    }

    async fn append(&self, prefix: &str, value: Vec<u8>) -> Result<u64, StoreError> {
        let mut c = self.lock();
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(be)?;
        let rev: i64 = tx
            .query_row(
                "UPDATE meta SET rev = rev + 1 WHERE id = 0 RETURNING rev",
                [],
                |r| r.get(0),
            )
            .map_err(be)?;
        let key = log_key(prefix, rev as u64);
        tx.execute(
            "INSERT INTO kv (key, value, rev) VALUES (?1, ?2, ?3)",
            params![key, value, rev],
        )
        .map_err(be)?;
        tx.commit().map_err(be)?;
        // Still under the writer's lock: watchers get appends in revision order.
        let _ = self.appended.send((
            key,
            Versioned {
                value,
                revision: rev as u64,
            },
        ));
        Ok(rev as u64)
    }

    async fn log_since(
        &self,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        rows(
            &self.reader(),
            "SELECT key, value, rev FROM kv WHERE key > ?1 AND key < ?2 ORDER BY key LIMIT ?3",
            &log_key(prefix, after),
            &range_end(prefix),
            limit,
        )
    }

    async fn watch_log(
        self: Arc<Self>,
        prefix: &str,
        after: Option<u64>,
    ) -> BoxStream<'static, Result<Versioned<Vec<u8>>, StoreError>> {
        let (tx, rx) = mpsc::channel(256);
        // "Only new ones" starts at the store's revision now. Read before subscribing,
        // subscribed before catching up: nothing appended in between is lost, and what
        // both the stored log and the live feed deliver is skipped by revision.
        let start = match after {
            Some(a) => Ok(a),
            None => self.revision(),
        };
        let mut live = self.appended.subscribe();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut last = match start {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let mut behind = true;
            loop {
                while behind {
                    match self.log_since(&prefix, last, CATCH_UP).await {
                        Ok(batch) => {
                            behind = batch.len() == CATCH_UP;
                            for (_, v) in batch {
                                last = v.revision;
                                if tx.send(Ok(v)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
                let got = tokio::select! {
                    got = live.recv() => got,
                    // The watcher went away while nothing was appended.
                    _ = tx.closed() => return,
                };
                match got {
                    Ok((k, v)) if k.starts_with(&prefix) && v.revision > last => {
                        last = v.revision;
                        if tx.send(Ok(v)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Fell behind the live feed: the stored log has what was missed.
                    Err(broadcast::error::RecvError::Lagged(_)) => behind = true,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        super::received(rx)
    }
}
