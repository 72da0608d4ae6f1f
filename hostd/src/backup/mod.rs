//! Backup jobs on this host: the table of jobs (running and recently finished, with
//! their progress), and opening the store a job names (a directory confined to the
//! `--backup-root`s, or an S3 bucket). What each job does is in [`ops`]. Jobs live in
//! memory: a hostd restart forgets them (the controller then sees the job gone).

pub mod ops;

use std::collections::{HashMap, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nova_backup::{
    Chunking, CryptKey, DirBackend, HashAlgo, S3Backend, S3Config, Store, StoreConfig,
};
use nova_hostd_api::{
    BackupJob, ChunkHash, ChunkingKind, FieldError, JobOp, JobRequest, JobResult, JobState,
    StoreLocation, StoreSpec,
};

use crate::error::{Error, Result};
use crate::vms::table::Vms;

/// Finished jobs kept for their callers to read.
const KEEP_FINISHED: usize = 256;

struct Entry {
    job: BackupJob,
    progress: Arc<AtomicU64>,
}

/// The backup jobs of this host.
pub struct BackupJobs {
    vms: Arc<Vms>,
    /// Canonical `--backup-root`s.
    roots: Vec<PathBuf>,
    jobs: Mutex<HashMap<String, Entry>>,
    finished: Mutex<VecDeque<String>>,
}

/// A job's handle on its own progress.
#[derive(Clone)]
pub struct Progress {
    jobs: Arc<BackupJobs>,
    id: String,
    pub counter: Arc<AtomicU64>,
}

impl Progress {
    /// Says what the job does now and what its progress goes up to (restarting it).
    pub fn phase(&self, phase: &str, total: u64) {
        self.counter.store(0, Ordering::Relaxed);
        if let Some(e) = self.jobs.table().get_mut(&self.id) {
            e.job.phase = phase.to_string();
            e.job.total = total;
        }
    }
}

impl BackupJobs {
    /// The jobs table; `roots` must exist (they are canonicalized).
    pub fn new(vms: Arc<Vms>, roots: &[PathBuf]) -> std::io::Result<Self> {
        let roots = roots
            .iter()
            .map(|r| {
                r.canonicalize().map_err(|e| {
                    std::io::Error::new(e.kind(), format!("--backup-root {}: {e}", r.display()))
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(BackupJobs {
            vms,
            roots,
            jobs: Mutex::default(),
            finished: Mutex::default(),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a job; it runs in the background.
    pub fn start(self: &Arc<Self>, req: JobRequest) -> Result<BackupJob> {
        req.validate()?;
        // Refusals a caller can fix are answered now, not as a failed job.
        self.store_dir(&req.store)?;
        if let JobOp::Backup { vm_id, .. } = &req.op {
            self.vms.get(vm_id)?;
        }
        let id = format!("bj-{:016x}", rand::random::<u64>());
        let job = BackupJob {
            id: id.clone(),
            state: JobState::Running,
            phase: "starting".into(),
            done: 0,
            total: 0,
            error: None,
            result: None,
        };
        let progress = Progress {
            jobs: self.clone(),
            id: id.clone(),
            counter: Arc::default(),
        };
        self.table().insert(
            id.clone(),
            Entry {
                job: job.clone(),
                progress: progress.counter.clone(),
            },
        );
        let this = self.clone();
        tokio::spawn(async move {
            let out = ops::run(&this, req, progress).await;
            this.finish(&id, out);
        });
        Ok(job)
    }

    fn finish(&self, id: &str, out: Result<JobResult>) {
        {
            let mut t = self.table();
            if let Some(e) = t.get_mut(id) {
                e.job.done = e.progress.load(Ordering::Relaxed);
                match out {
                    Ok(r) => {
                        e.job.state = JobState::Succeeded;
                        e.job.phase = "done".into();
                        e.job.result = Some(r);
                    }
                    Err(err) => {
                        tracing::warn!(job = id, "backup job failed: {err}");
                        e.job.state = JobState::Failed;
                        e.job.error = Some(err.to_string());
                    }
                }
            }
        }
        let mut f = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        f.push_back(id.to_string());
        while f.len() > KEEP_FINISHED {
            if let Some(old) = f.pop_front() {
                self.table().remove(&old);
            }
        }
    }

    /// A job, with its progress now.
    pub fn get(&self, id: &str) -> Result<BackupJob> {
        let t = self.table();
        let e = t
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("no backup job '{id}'")))?;
        let mut job = e.job.clone();
        if job.state == JobState::Running {
            job.done = e.progress.load(Ordering::Relaxed);
        }
        Ok(job)
    }

    /// The directory of a directory store, confined to a `--backup-root` (created if
    /// missing); `None` for an S3 store.
    fn store_dir(&self, spec: &StoreSpec) -> Result<Option<PathBuf>> {
        let StoreLocation::Dir { path } = &spec.location else {
            return Ok(None);
        };
        let field = "store.location.path";
        let p = Path::new(path);
        let lexical_ok = p.is_absolute()
            && p.components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        let under = |q: &Path| self.roots.iter().any(|r| q.starts_with(r));
        if !lexical_ok || !under(p) {
            let roots = if self.roots.is_empty() {
                "none on this host (no --backup-root)".to_string()
            } else {
                self.roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(FieldError::new(
                field,
                format!("{path} is not under a backup root ({roots})"),
            )
            .into());
        }
        // A symlink inside a root must not lead out of it: the part that exists is
        // resolved and checked before anything is created, and the whole after.
        let escapes = |q: &Path| -> Result<Option<PathBuf>> {
            let real = q
                .canonicalize()
                .map_err(|e| Error::io(format!("resolving {}", q.display()), e))?;
            Ok((!under(&real)).then_some(real))
        };
        let mut existing = p;
        while !existing.exists() {
            existing = existing.parent().unwrap_or(Path::new("/"));
        }
        for q in [existing, p] {
            if q == p {
                std::fs::create_dir_all(p).map_err(|e| Error::io(format!("creating {path}"), e))?;
            }
            if let Some(real) = escapes(q)? {
                return Err(FieldError::new(
                    field,
                    format!(
                        "{path} resolves to {}, outside the backup roots",
                        real.display()
                    ),
                )
                .into());
            }
        }
        let real = p
            .canonicalize()
            .map_err(|e| Error::io(format!("resolving {path}"), e))?;
        Ok(Some(real))
    }

    /// Opens the store a job names, counting progress into `counter`.
    pub fn open_store(&self, spec: &StoreSpec, counter: Arc<AtomicU64>) -> Result<Store> {
        let backend: Box<dyn nova_backup::Backend> = match (&spec.location, self.store_dir(spec)?) {
            (_, Some(dir)) => Box::new(DirBackend::open(dir).map_err(store_err)?),
            (
                StoreLocation::S3 {
                    endpoint,
                    bucket,
                    region,
                    access_key_id,
                    secret_access_key,
                    allow_http,
                },
                None,
            ) => Box::new(
                S3Backend::new(&S3Config {
                    endpoint: endpoint.clone(),
                    bucket: bucket.clone(),
                    region: region.clone(),
                    access_key_id: access_key_id.clone(),
                    secret_access_key: secret_access_key.clone(),
                    allow_http: *allow_http,
                })
                .map_err(store_err)?,
            ),
            (StoreLocation::Dir { .. }, None) => {
                return Err(Error::Conflict(
                    "a directory store without a directory".into(),
                ))
            }
        };
        let key = match &spec.encryption_key {
            Some(hex) => {
                let mut k = [0u8; 32];
                for (i, b) in k.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| {
                        FieldError::new("store.encryption_key", "must be 64 hex digits")
                    })?;
                }
                Some(CryptKey::from_master(&k))
            }
            None => None,
        };
        let cfg = StoreConfig {
            hash: match spec.hash {
                ChunkHash::Blake3 => HashAlgo::Blake3,
                ChunkHash::Sha256 => HashAlgo::Sha256,
            },
            chunking: match spec.chunking {
                ChunkingKind::Fixed => Chunking::DISK,
                ChunkingKind::Cdc => Chunking::CDC,
            },
            key,
            zstd_level: 1,
        };
        Ok(Store::new(backend, cfg).with_progress(counter))
    }
}

/// A store failure as hostd reports it: a missing object is 404, a wrong key or a
/// bad argument 409/400, the rest a conflict naming the cause.
pub fn store_err(e: nova_backup::BackupError) -> Error {
    use nova_backup::BackupError as B;
    match e {
        B::NotFound(what) => Error::NotFound(format!("backup store: {what}")),
        B::InvalidArgument { field, reason } => FieldError::new(field, reason).into(),
        other => Error::Conflict(format!("backup store: {other}")),
    }
}
