//! What each backup job does: back a VM's disks up (a running VM through a VMM
//! checkpoint and its staged copies, a stopped one from its disk files), restore a
//! backup to a new VM here, verify, collect garbage, delete backups.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nova_backup::{BackupError, Chunking, DirtyBlocks, FileIndex, Manifest, Store};
use nova_hostd_api::{
    BackupReport, DamagedChunk, DiskSpec, FileReport, GcReport, JobOp, JobRequest, JobResult,
    RestoreReport, RestoreRequest, VerifyReport, VmSpec, VmState,
};
use nova_vmm_api::{CheckpointRequest, VmmClient};

use super::{store_err, BackupJobs, Progress};
use crate::error::{Error, Result};

/// The longest a checkpoint may take (its copy runs while the guest is paused).
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `req` to its result.
pub async fn run(jobs: &Arc<BackupJobs>, req: JobRequest, p: Progress) -> Result<JobResult> {
    let store = Arc::new(jobs.open_store(&req.store, p.counter.clone())?);
    match req.op {
        JobOp::Backup {
            vm_id,
            backup_id,
            previous,
            memory,
        } => backup(jobs, store, &vm_id, &backup_id, previous, memory, &p)
            .await
            .map(JobResult::Backup),
        JobOp::Restore { backup_id, spec } => restore(jobs, store, &backup_id, *spec, &p)
            .await
            .map(JobResult::Restore),
        JobOp::Verify { backup_id } => {
            p.phase("verify", 0);
            let r = blocking(move || store.verify(&backup_id)).await?;
            Ok(JobResult::Verify(VerifyReport {
                backup_id: r.backup_id,
                chunks_checked: r.chunks_checked,
                damaged: r
                    .damaged
                    .into_iter()
                    .map(|(id, reason)| DamagedChunk {
                        chunk: id.to_hex(),
                        reason,
                    })
                    .collect(),
            }))
        }
        JobOp::Gc { grace_s } => {
            p.phase("gc", 0);
            let r =
                blocking(move || store.gc(Duration::from_secs(grace_s), SystemTime::now())).await?;
            Ok(JobResult::Gc(GcReport {
                referenced: r.referenced,
                removed: r.removed,
                removed_bytes: r.removed_bytes,
                kept_in_grace: r.kept_in_grace,
            }))
        }
        JobOp::Delete { backup_ids } => {
            p.phase("delete", backup_ids.len() as u64);
            let deleted = blocking(move || {
                let mut deleted = Vec::new();
                for id in backup_ids {
                    match store.delete_backup(&id) {
                        Ok(()) => deleted.push(id),
                        Err(BackupError::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(deleted)
            })
            .await?;
            Ok(JobResult::Delete { deleted })
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> nova_backup::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Conflict(format!("backup task: {e}")))?
        .map_err(store_err)
}

/// The files of a backup that hold the guest's memory and device state (a VMM
/// snapshot's own names), when it was taken with `memory`.
const MEMORY_FILES: [&str; 2] = ["state", "memory"];

/// The name of the snapshot a restore with memory resumes the new VM from.
const RESTORED_SNAPSHOT: &str = "from-backup";

/// One file to back up (a disk, or the guest's memory or state): where to read it,
/// and what changed in it (None: read all).
struct Source {
    name: String,
    path: PathBuf,
    /// The uid that must own it: a file the jailed VMM made, in a directory it
    /// controls (hostd, as root, reads only a regular file of the VM's own).
    owner: Option<u32>,
    dirty: Option<DirtyBlocks>,
    /// Why the VMM copied the whole disk, when it did.
    full_reason: Option<String>,
}

async fn backup(
    jobs: &Arc<BackupJobs>,
    store: Arc<Store>,
    vm_id: &str,
    backup_id: &str,
    previous: Option<String>,
    memory: bool,
    p: &Progress,
) -> Result<BackupReport> {
    let vm = jobs.vms.get(vm_id)?;
    p.phase("previous", 0);
    let prev = match previous.clone() {
        Some(id) => {
            let s = store.clone();
            match blocking(move || s.get_manifest(&id)).await {
                Ok(m) => Some(m),
                // The previous backup was deleted: this one is full and says why.
                Err(Error::NotFound(why)) => {
                    tracing::info!(vm = vm_id, "previous backup unavailable: {why}");
                    None
                }
                Err(e) => return Err(e),
            }
        }
        None => None,
    };
    let prev_id = prev.as_ref().map(|m| m.backup_id.clone());
    // Only the disks of the spec: the NoCloud seed is made again from the spec.
    let disks: Vec<(String, u64)> = {
        let g = vm.lock();
        let n = g.rec.spec.disks.len().min(g.rec.disks.len());
        g.rec.disks[..n]
            .iter()
            .map(|d| (d.path.clone(), d.size_bytes))
            .collect()
    };
    let op = vm.op.lock().await;
    let state = vm.state();
    // A VM between states (starting, migrating) has neither a VMM to checkpoint nor
    // disk files at rest.
    let running = match state {
        VmState::Running | VmState::Paused => true,
        VmState::Created | VmState::Stopped | VmState::Crashed => false,
        _ => {
            return Err(Error::Conflict(format!(
                "VM '{vm_id}' is {state:?}: back it up once it runs or has stopped"
            )))
        }
    };
    if memory && !running {
        return Err(Error::Conflict(format!(
            "VM '{vm_id}' is not running ({state:?}): it has no memory to back up"
        )));
    }
    let mut paused_ms = 0.0;
    let mut staging = None;
    let mut held = Some(op);
    let sources: Vec<Source> = if running {
        // The VMM copies only changed blocks when each disk can be incremental on
        // `prev` (fixed chunks aligned with its bitmap, same settings, same size).
        let need_full = !matches!(store.config().chunking, Chunking::Fixed { .. })
            || disks.iter().enumerate().any(|(i, (_, size))| {
                let dirty = DirtyBlocks::new(nova_vmm_api::BACKUP_BLOCK, *size);
                store
                    .incremental_refused(&format!("disk{i}"), *size, prev.as_ref(), Some(&dirty))
                    .is_some()
            });
        // Its own staging directory: another backup of the VM may still be reading
        // its files after it let go of the VM.
        let dir = vm.run_dir().join("backup-staging").join(backup_id);
        let _ = std::fs::remove_dir_all(&dir);
        let client = VmmClient::new(&vm.api_sock(), CHECKPOINT_TIMEOUT).map_err(Error::vmm)?;
        let owner = match jobs.vms.settings.jail.enabled {
            true => Some(jobs.vms.jailer.uid_for(vm_id)?),
            false => None,
        };
        p.phase("checkpoint", 0);
        let checkpoint = CheckpointRequest {
            checkpoint: backup_id.to_string(),
            previous: prev_id.clone(),
            staging_dir: dir.clone(),
            full: need_full,
            memory_dir: memory.then(|| dir.join("vm")),
        };
        staging = Some(dir.clone());
        let report = match client.backup_checkpoint(&checkpoint).await {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(Error::vmm(e));
            }
        };
        // The copy is made: the guest runs on, and the VM may be stopped or moved.
        held = None;
        paused_ms = report.paused_ms;
        let memory_files = MEMORY_FILES.iter().filter(|_| memory).map(|f| Source {
            name: f.to_string(),
            path: dir.join("vm").join(f),
            owner,
            dirty: None,
            full_reason: Some("memory and device state are read whole".into()),
        });
        report
            .disks
            .into_iter()
            .filter(|d| (d.index as usize) < disks.len())
            .map(|d| Source {
                name: format!("disk{}", d.index),
                // Where the VMM was told to stage it, not where it says it did.
                path: dir.join(format!("disk{}.img", d.index)),
                owner,
                dirty: (!d.full).then(|| DirtyBlocks {
                    block_size: d.block_size,
                    blocks: d.size.div_ceil(d.block_size.max(1)),
                    words: d.dirty_words,
                }),
                full_reason: d.full_reason,
            })
            .chain(memory_files)
            .collect()
    } else {
        disks
            .iter()
            .enumerate()
            .map(|(i, (path, _))| Source {
                name: format!("disk{i}"),
                path: PathBuf::from(path),
                owner: None,
                dirty: None,
                full_reason: Some("the VM is not running: its disk files are read whole".into()),
            })
            .collect()
    };
    let total = sources
        .iter()
        .map(|s| match &s.dirty {
            Some(d) => d.words.iter().map(|w| w.count_ones() as u64).sum::<u64>() * d.block_size,
            None => std::fs::metadata(&s.path).map(|m| m.len()).unwrap_or(0),
        })
        .sum();
    p.phase("read", total);
    let s = store.clone();
    let bid = backup_id.to_string();
    let result = blocking(
        move || -> nova_backup::Result<(Manifest, Vec<FileReport>)> {
            let mut files: Vec<FileIndex> = Vec::new();
            let mut reports = Vec::new();
            for src in &sources {
                let (file, md) = nova_backup::open_regular(&src.path)?;
                if let Some(uid) = src.owner.filter(|&u| u != md.uid()) {
                    return Err(BackupError::InvalidArgument {
                        field: "staging",
                        reason: format!(
                            "{} is owned by uid {}, not by the VM's {uid}: not read",
                            src.path.display(),
                            md.uid()
                        ),
                    });
                }
                if let Some(d) = &src.dirty {
                    // The staged copy holds only the changed blocks: anything but an
                    // incremental backup of it would store holes for the rest.
                    if let Some(why) =
                        s.incremental_refused(&src.name, md.len(), prev.as_ref(), Some(d))
                    {
                        return Err(BackupError::InvalidArgument {
                            field: "op.previous",
                            reason: format!("{}: cannot back up incrementally: {why}", src.name),
                        });
                    }
                }
                let r = s.backup_opened(
                    &src.name,
                    &file,
                    &src.path,
                    prev.as_ref(),
                    src.dirty.as_ref(),
                )?;
                reports.push(FileReport {
                    name: src.name.clone(),
                    size: r.index.size,
                    full_read: r.full_read,
                    full_read_reason: src.full_reason.clone().or(r.full_read_reason),
                    bytes_read: r.bytes_read,
                    bytes_stored: r.bytes_stored,
                    chunks_new: r.chunks_new,
                    chunks_reused: r.chunks_reused,
                    holes: r.holes,
                });
                files.push(r.index);
            }
            let m = s.new_manifest(&bid, None, files)?;
            s.put_manifest(&m)?;
            Ok((m, reports))
        },
    )
    .await;
    drop(held);
    if let Some(dir) = staging {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (m, files) = result?;
    tracing::info!(vm = vm_id, backup = backup_id, "backup stored");
    Ok(BackupReport {
        backup_id: backup_id.to_string(),
        previous: prev_id,
        created_unix: m.created_unix,
        paused_ms,
        bytes_read: files.iter().map(|f| f.bytes_read).sum(),
        bytes_stored: files.iter().map(|f| f.bytes_stored).sum(),
        files,
    })
}

async fn restore(
    jobs: &Arc<BackupJobs>,
    store: Arc<Store>,
    backup_id: &str,
    mut spec: VmSpec,
    p: &Progress,
) -> Result<RestoreReport> {
    let s = store.clone();
    let id = backup_id.to_string();
    let m = blocking(move || {
        let m = s.get_manifest(&id)?;
        s.check_key(&m)?;
        Ok(m)
    })
    .await?;
    if m.is_damaged() {
        return Err(Error::Conflict(format!(
            "backup {backup_id} is marked damaged ({} chunks): restore an older one",
            m.damaged.len()
        )));
    }
    // disk0, disk1, ... in order: the VM's disks as they were backed up; then the
    // guest's memory and state, both or neither.
    let mut disks = Vec::new();
    while let Some(f) = m.file(&format!("disk{}", disks.len())) {
        disks.push(f.clone());
    }
    let memory: Vec<_> = MEMORY_FILES
        .iter()
        .filter_map(|n| m.file(n))
        .cloned()
        .collect();
    if disks.len() + memory.len() != m.files.len() || !matches!(memory.len(), 0 | 2) {
        return Err(Error::Conflict(format!(
            "backup {backup_id} holds files other than disk0..disk{} and the guest's {}",
            disks.len(),
            MEMORY_FILES.join(" and ")
        )));
    }
    spec.disks = disks
        .iter()
        .enumerate()
        .map(|(i, f)| DiskSpec {
            image: None,
            size_mib: Some(f.size.div_ceil(1 << 20).max(1)),
            read_only: spec.disks.get(i).is_some_and(|d| d.read_only),
            shared_path: None,
        })
        .collect();
    let start = spec.start;
    spec.start = false;
    let resume = start && !memory.is_empty();
    p.phase("create", 0);
    let info = jobs.vms.create_vm(spec).await?;
    let vm = jobs.vms.get(&info.id)?;
    let paths: Vec<PathBuf> = vm
        .lock()
        .rec
        .disks
        .iter()
        .take(disks.len())
        .map(|d| PathBuf::from(&d.path))
        .collect();
    // The guest's memory and state land where the VM keeps its own snapshots (a
    // snapshot of the restored VM, which its VMM restores from).
    let snapshot_dir = vm.dir.join("snapshots").join(RESTORED_SNAPSHOT);
    let mut files: Vec<(FileIndex, PathBuf)> = disks.iter().cloned().zip(paths).collect();
    if resume {
        files.extend(
            memory
                .iter()
                .map(|f| (f.clone(), snapshot_dir.join(&f.name))),
        );
    }
    p.phase("write", files.iter().map(|(f, _)| f.size).sum());
    let s = store.clone();
    let written = blocking(move || {
        let mut written = 0;
        for (f, path) in &files {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| BackupError::io(format!("creating {}", dir.display()), e))?;
            }
            // The blank disk is replaced by the restored one, sparse where it was.
            if path.exists() {
                std::fs::remove_file(path)
                    .map_err(|e| BackupError::io(format!("removing {}", path.display()), e))?;
            }
            written += s.restore_file(&m, &f.name, path)?;
        }
        Ok(written)
    })
    .await;
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = jobs.vms.remove(&info.id);
            return Err(e);
        }
    };
    let started = if resume {
        p.phase("resume", 0);
        let req = RestoreRequest {
            snapshot: RESTORED_SNAPSHOT.into(),
            lazy: false,
            stored: false,
            clone: false,
        };
        let resumed = jobs.vms.restore_vm(&info.id, req).await.map(drop);
        // Its VMM holds the memory now: the copy would only go stale beside newer disks.
        let _ = std::fs::remove_dir_all(&snapshot_dir);
        resumed
    } else if start {
        p.phase("start", 0);
        jobs.vms.start_vm(&info.id).await.map(drop)
    } else {
        Ok(())
    };
    if let Err(e) = started {
        // Nothing half-made stays behind: the controller knows no such VM.
        if let Err(d) = jobs.vms.delete_vm(&info.id).await {
            tracing::warn!(vm = info.id, "removing the VM a failed restore made: {d}");
        }
        return Err(e);
    }
    tracing::info!(
        vm = info.id,
        backup = backup_id,
        written,
        resume,
        "backup restored"
    );
    Ok(RestoreReport {
        vm_id: info.id,
        bytes_written: written,
        resumed: resume,
    })
}
