//! Owns the jobs that keep a store healthy: verify (re-hash every chunk of a backup and
//! mark it damaged), garbage collection (mark-and-sweep with a grace period for chunks of
//! backups still being written) and pruning by retention policy.

use crate::chunk::{decode_and_verify, ChunkId};
use crate::error::{BackupError, Result};
use crate::retention::{select_retained, RetentionPolicy};
use crate::store::{chunk_key, manifest_key, Store};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

/// What verify found in one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The backup verified.
    pub backup_id: String,
    /// Distinct chunks re-hashed.
    pub chunks_checked: u64,
    /// Damaged or missing chunks, each with the reason.
    pub damaged: BTreeMap<ChunkId, String>,
}

/// What GC did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Chunks referenced by some manifest.
    pub referenced: u64,
    /// Unreferenced chunks deleted.
    pub removed: u64,
    /// Stored bytes freed.
    pub removed_bytes: u64,
    /// Unreferenced chunks kept because they are younger than the grace period.
    pub kept_in_grace: u64,
}

impl Store {
    /// Re-hashes every chunk of `backup_id` and records the result in its manifest
    /// (damaged chunks listed, so `Manifest::is_damaged` reports it).
    pub fn verify(&self, backup_id: &str) -> Result<VerifyReport> {
        let mut m = self.get_manifest(backup_id)?;
        self.check_key(&m)?;
        let mut seen = HashSet::new();
        let mut damaged = BTreeMap::new();
        for id in m.chunk_ids().copied().collect::<Vec<_>>() {
            if !seen.insert(id) {
                continue;
            }
            self.add_progress(1);
            let check = self.backend().get(&chunk_key(&id)).and_then(|stored| {
                decode_and_verify(&id, &stored, m.hash, self.config().key.as_ref())
            });
            match check {
                Ok(_) => {}
                Err(BackupError::NotFound(_)) => {
                    damaged.insert(id, "missing".to_string());
                }
                Err(
                    e @ (BackupError::MalformedChunk { .. }
                    | BackupError::ChunkHashMismatch { .. }
                    | BackupError::Decrypt(_)),
                ) => {
                    damaged.insert(id, e.to_string());
                }
                Err(other) => return Err(other),
            }
        }
        m.damaged = damaged.keys().copied().collect();
        m.verified_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        self.put_manifest(&m)?;
        if damaged.is_empty() {
            tracing::info!(backup = backup_id, chunks = seen.len(), "verify ok");
        } else {
            tracing::warn!(
                backup = backup_id,
                damaged = damaged.len(),
                "verify found damaged chunks"
            );
        }
        Ok(VerifyReport {
            backup_id: backup_id.to_string(),
            chunks_checked: seen.len() as u64,
            damaged,
        })
    }

    /// Deletes chunks no manifest references and that are older than `grace` at `now`.
    /// Any malformed manifest aborts GC: sweeping without a full mark would lose data.
    pub fn gc(&self, grace: Duration, now: SystemTime) -> Result<GcReport> {
        let mut referenced = HashSet::new();
        for m in self.list_backups()? {
            referenced.extend(m.chunk_ids().copied());
        }
        let mut report = GcReport {
            referenced: referenced.len() as u64,
            ..Default::default()
        };
        for obj in self.backend().list("chunks/")? {
            // Only objects at exactly the key a valid id maps to are ours to sweep.
            let Some(id) = obj
                .key
                .rsplit('/')
                .next()
                .and_then(|h| ChunkId::parse(h).ok())
            else {
                continue;
            };
            if chunk_key(&id) != obj.key || referenced.contains(&id) {
                continue;
            }
            let age = now.duration_since(obj.modified).unwrap_or(Duration::ZERO);
            if age < grace {
                report.kept_in_grace += 1;
                continue;
            }
            self.backend().delete(&obj.key)?;
            report.removed += 1;
            report.removed_bytes += obj.size;
        }
        tracing::info!(?report, "gc done");
        Ok(report)
    }

    /// Deletes the manifests `policy` does not keep; returns the removed backup ids.
    /// Their chunks go at the next GC.
    pub fn prune(&self, policy: &RetentionPolicy) -> Result<Vec<String>> {
        let backups = self.list_backups()?;
        let times: Vec<u64> = backups.iter().map(|m| m.created_unix).collect();
        let keep = select_retained(&times, policy);
        let mut removed = Vec::new();
        for (i, m) in backups.iter().enumerate() {
            if !keep.contains(&i) {
                self.backend().delete(&manifest_key(&m.backup_id)?)?;
                removed.push(m.backup_id.clone());
            }
        }
        tracing::info!(removed = removed.len(), kept = keep.len(), "pruned");
        Ok(removed)
    }
}
