//! Owns writing and reading backups: chunking a file (full, or incremental from the
//! previous manifest and a dirty-block bitmap), deduplicating chunks against the backend,
//! storing manifests, and restoring a file byte-identical with its holes kept sparse.
//! It is over 500 lines: backup and restore share the chunk and manifest plumbing.

use crate::backend::Backend;
use crate::chunk::{chunk_id, decode_and_verify, encode_chunk, ChunkId, CryptKey, HashAlgo};
use crate::chunker::split;
use crate::dirty::DirtyBlocks;
use crate::error::{BackupError, Result};
use crate::manifest::{
    validate_backup_id, ChunkRef, Chunking, FileIndex, Manifest, MANIFEST_FORMAT,
};
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Opens `path` for reading only if it is itself a regular file: a symlink (the
/// last component is not followed), a device or a FIFO is refused rather than read.
/// A backup reads files that a jailed VMM may have made; hostd reads them as root.
pub fn open_regular(path: &Path) -> Result<(File, std::fs::Metadata)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            BackupError::io(
                format!("opening {} (not followed if a symlink)", path.display()),
                e,
            )
        })?;
    let md = file
        .metadata()
        .map_err(|e| BackupError::io(format!("stat {}", path.display()), e))?;
    if !md.is_file() {
        return Err(BackupError::InvalidArgument {
            field: "path",
            reason: format!("{} is not a regular file", path.display()),
        });
    }
    Ok((file, md))
}

/// Bytes read from the source per step (a multiple of the 4 MiB disk chunk).
const WINDOW: usize = 32 << 20;

/// How a store makes chunks.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Hash naming chunks.
    pub hash: HashAlgo,
    /// Fixed or content-defined chunking.
    pub chunking: Chunking,
    /// Encryption key the user holds; `None` stores chunks unencrypted.
    pub key: Option<CryptKey>,
    /// zstd level (1-19; 1 is fast and compresses disk data well).
    pub zstd_level: i32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            hash: HashAlgo::Blake3,
            chunking: Chunking::DISK,
            key: None,
            zstd_level: 1,
        }
    }
}

/// What backing up one file did.
#[derive(Debug, Clone)]
pub struct BackupFileResult {
    /// The file's index, to put in the manifest.
    pub index: FileIndex,
    /// Whether the whole file was read (no usable previous backup or bitmap).
    pub full_read: bool,
    /// Why the whole file was read, when it was.
    pub full_read_reason: Option<String>,
    /// Bytes read from the source file.
    pub bytes_read: u64,
    /// Chunks written to the store by this backup.
    pub chunks_new: u64,
    /// Stored (compressed, encrypted) bytes written by this backup.
    pub bytes_stored: u64,
    /// Chunks that were already in the store or reused from the previous manifest.
    pub chunks_reused: u64,
    /// Chunks that were all zeros, recorded as holes and stored nowhere.
    pub holes: u64,
}

/// A chunk store on a backend.
pub struct Store {
    backend: Box<dyn Backend>,
    cfg: StoreConfig,
    /// Bytes read (backup), written (restore) or chunks checked (verify) so far.
    progress: Arc<AtomicU64>,
    /// A missing previous chunk fails the backup instead of being re-read: the
    /// source holds only the changed blocks (a staged copy).
    strict: bool,
}

/// The object key of a chunk: `chunks/<first 4 hex>/<64 hex>`.
pub fn chunk_key(id: &ChunkId) -> String {
    let hex = id.to_hex();
    format!("chunks/{}/{hex}", &hex[..4])
}

/// The object key of a manifest.
pub fn manifest_key(backup_id: &str) -> Result<String> {
    validate_backup_id(backup_id)?;
    Ok(format!("manifests/{backup_id}.json"))
}

fn prev_id(previous: Option<&Manifest>) -> &str {
    previous.map_or("-", |m| m.backup_id.as_str())
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Store {
    /// A store writing through `backend` with `cfg`.
    pub fn new(backend: Box<dyn Backend>, cfg: StoreConfig) -> Self {
        Store {
            backend,
            cfg,
            progress: Arc::default(),
            strict: false,
        }
    }

    /// Counts progress into `counter`: bytes read by backups, bytes written by
    /// restores, chunks checked by verify.
    pub fn with_progress(mut self, counter: Arc<AtomicU64>) -> Self {
        self.progress = counter;
        self
    }

    /// Incremental backups whose source holds only the changed blocks (a sparse staged
    /// copy): a previous chunk gone from the store fails the backup, naming it, where
    /// it would otherwise be re-read (from holes).
    pub fn strict_incremental(mut self) -> Self {
        self.strict = true;
        self
    }

    pub(crate) fn add_progress(&self, n: u64) {
        self.progress.fetch_add(n, Ordering::Relaxed);
    }

    /// Deletes a backup's manifest; its chunks go at the next GC.
    pub fn delete_backup(&self, backup_id: &str) -> Result<()> {
        self.backend.delete(&manifest_key(backup_id)?)
    }

    /// Why `previous` + `dirty` cannot drive an incremental backup of file `name` of
    /// `size` bytes, if they cannot (the same check [`backup_file`](Self::backup_file) makes).
    pub fn incremental_refused(
        &self,
        name: &str,
        size: u64,
        previous: Option<&Manifest>,
        dirty: Option<&DirtyBlocks>,
    ) -> Option<String> {
        self.incremental_refusal(name, size, previous, dirty).err()
    }

    /// The backend (for maintenance jobs).
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    fn fingerprint(&self) -> Option<String> {
        self.cfg.key.as_ref().map(|k| k.fingerprint().to_string())
    }

    /// Refuses a manifest made with another key (or none) before touching its chunks.
    pub fn check_key(&self, m: &Manifest) -> Result<()> {
        if m.key_fingerprint != self.fingerprint() {
            return Err(BackupError::KeyMismatch(format!(
                "backup {} was written with key {:?}, this store has {:?}",
                m.backup_id,
                m.key_fingerprint,
                self.fingerprint()
            )));
        }
        Ok(())
    }

    /// Why `previous` + `dirty` cannot drive an incremental backup of `name`, if they cannot.
    fn incremental_refusal<'a>(
        &self,
        name: &str,
        size: u64,
        previous: Option<&'a Manifest>,
        dirty: Option<&DirtyBlocks>,
    ) -> std::result::Result<&'a FileIndex, String> {
        let prev = previous.ok_or("no previous backup")?;
        let dirty =
            dirty.ok_or("no dirty-block bitmap since the previous backup (lost or not tracked)")?;
        if prev.hash != self.cfg.hash
            || prev.chunking != self.cfg.chunking
            || prev.key_fingerprint != self.fingerprint()
        {
            return Err("previous backup used another hash, chunking or key".into());
        }
        if prev.is_damaged() {
            return Err(format!(
                "previous backup {} is marked damaged",
                prev.backup_id
            ));
        }
        let file = prev
            .file(name)
            .ok_or_else(|| format!("previous backup has no file {name:?}"))?;
        if file.size != size {
            return Err(format!("file size changed from {} to {size}", file.size));
        }
        if !dirty.is_well_formed() || dirty.blocks.saturating_mul(dirty.block_size) < size {
            return Err("dirty-block bitmap does not cover the file".into());
        }
        Ok(file)
    }

    /// Backs up the file at `path` under `name`. With a previous manifest and a dirty-block
    /// bitmap since it, reads only dirty ranges and reuses the previous chunk ids for the
    /// rest; otherwise reads everything and says why in the result. `path` must name a
    /// regular file itself (see [`open_regular`]).
    pub fn backup_file(
        &self,
        name: &str,
        path: &Path,
        previous: Option<&Manifest>,
        dirty: Option<&DirtyBlocks>,
    ) -> Result<BackupFileResult> {
        let (file, _) = open_regular(path)?;
        self.backup_opened(name, &file, path, previous, dirty)
    }

    /// [`Store::backup_file`] of a file the caller opened (and checked); `path` names it
    /// in errors.
    pub fn backup_opened(
        &self,
        name: &str,
        file: &File,
        path: &Path,
        previous: Option<&Manifest>,
        dirty: Option<&DirtyBlocks>,
    ) -> Result<BackupFileResult> {
        let size = file
            .metadata()
            .map_err(|e| BackupError::io(format!("stat {}", path.display()), e))?
            .len();
        let mut res = BackupFileResult {
            index: FileIndex {
                name: name.to_string(),
                size,
                chunks: Vec::new(),
            },
            full_read: false,
            full_read_reason: None,
            bytes_read: 0,
            chunks_new: 0,
            bytes_stored: 0,
            chunks_reused: 0,
            holes: 0,
        };
        // Chunks this backup has already checked (and touched) in the store.
        let mut seen = HashSet::new();
        match self.incremental_refusal(name, size, previous, dirty) {
            Err(reason) => {
                tracing::info!(file = name, %reason, "full read");
                res.full_read = true;
                res.full_read_reason = Some(reason);
                let chunks = self.store_range(file, 0, size, &mut res, &mut seen)?;
                res.index.chunks = chunks;
            }
            Ok(prev) => {
                let dirty = dirty.expect("checked by incremental_refusal");
                // A clean piece is reused if its chunk is still there; touching it also
                // keeps GC from sweeping it before this backup's manifest is stored.
                let mut reread = Vec::with_capacity(prev.chunks.len());
                for c in &prev.chunks {
                    let mut r = dirty.any_dirty(c.offset, c.len as u64);
                    if let (false, Some(id)) = (r, c.id) {
                        if seen.insert(id) {
                            match self.backend.touch(&chunk_key(&id)) {
                                Err(BackupError::NotFound(what)) if self.strict => {
                                    return Err(BackupError::NotFound(format!(
                                        "{what} (a chunk of previous backup {}): the source holds only changed blocks, take a full backup",
                                        prev_id(previous)
                                    )));
                                }
                                Err(BackupError::NotFound(_)) => {
                                    tracing::warn!(chunk = %id, "previous chunk missing, re-reading");
                                    seen.remove(&id);
                                    r = true;
                                }
                                other => other?,
                            }
                        }
                    }
                    reread.push(r);
                }
                let mut i = 0;
                while i < prev.chunks.len() {
                    let c = &prev.chunks[i];
                    if !reread[i] {
                        if c.id.is_some() {
                            res.chunks_reused += 1;
                        } else {
                            res.holes += 1;
                        }
                        res.index.chunks.push(c.clone());
                        i += 1;
                        continue;
                    }
                    let start = c.offset;
                    while i < prev.chunks.len() && reread[i] {
                        i += 1;
                    }
                    let end = prev.chunks.get(i).map_or(size, |n| n.offset);
                    let chunks = self.store_range(file, start, end, &mut res, &mut seen)?;
                    res.index.chunks.extend(chunks);
                }
            }
        }
        tracing::info!(
            file = name,
            read = res.bytes_read,
            new = res.chunks_new,
            stored = res.bytes_stored,
            "file backed up"
        );
        Ok(res)
    }

    /// Reads `start..end` of `file` window by window, chunks it and stores new chunks.
    fn store_range(
        &self,
        file: &File,
        start: u64,
        end: u64,
        res: &mut BackupFileResult,
        seen: &mut HashSet<ChunkId>,
    ) -> Result<Vec<ChunkRef>> {
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(WINDOW);
        let mut read_pos = start;
        let mut buf_start = start;
        loop {
            let mut want = (WINDOW - buf.len()).min((end - read_pos) as usize);
            if let (Chunking::Fixed { size }, true) = (self.cfg.chunking, buf.is_empty()) {
                // Whole chunks in a hole are holes without reading their zeros; the
                // window stops at the chunk where the data ends.
                let size = u64::from(size);
                let (data, data_end) = crate::sparse::next_data(file, read_pos, end)
                    .map_err(|e| BackupError::io(format!("seeking data at {read_pos}"), e))?
                    .unwrap_or((end, end));
                while read_pos % size == 0 && read_pos + size.min(end - read_pos) <= data {
                    if read_pos == end {
                        return Ok(out);
                    }
                    let len = size.min(end - read_pos);
                    out.push(ChunkRef {
                        offset: read_pos,
                        len: len as u32,
                        id: None,
                    });
                    res.holes += 1;
                    self.add_progress(len);
                    read_pos += len;
                }
                buf_start = read_pos;
                if read_pos == end {
                    return Ok(out);
                }
                let stop = data_end.div_ceil(size).saturating_mul(size).min(end);
                want = want.min((stop.max(read_pos + 1) - read_pos) as usize);
            }
            let old = buf.len();
            buf.resize(old + want, 0);
            file.read_exact_at(&mut buf[old..], read_pos)
                .map_err(|e| BackupError::io(format!("reading at offset {read_pos}"), e))?;
            read_pos += want as u64;
            res.bytes_read += want as u64;
            self.add_progress(want as u64);
            let at_end = read_pos == end;
            let mut lens = split(self.cfg.chunking, buf_start, &buf);
            // A CDC chunk cut by the window edge is not final: carry its bytes over.
            if !at_end && lens.len() > 1 && matches!(self.cfg.chunking, Chunking::Cdc { .. }) {
                lens.pop();
            }
            let mut pos = 0usize;
            for len in lens {
                let data = &buf[pos..pos + len];
                out.push(self.store_chunk(buf_start + pos as u64, data, res, seen)?);
                pos += len;
            }
            buf.drain(..pos);
            buf_start += pos as u64;
            if at_end && buf.is_empty() {
                return Ok(out);
            }
        }
    }

    fn store_chunk(
        &self,
        offset: u64,
        data: &[u8],
        res: &mut BackupFileResult,
        seen: &mut HashSet<ChunkId>,
    ) -> Result<ChunkRef> {
        let len = data.len() as u32;
        if data.iter().all(|b| *b == 0) {
            res.holes += 1;
            return Ok(ChunkRef {
                offset,
                len,
                id: None,
            });
        }
        let id = chunk_id(self.cfg.hash, self.cfg.key.as_ref(), data);
        let key = chunk_key(&id);
        if !seen.insert(id) {
            res.chunks_reused += 1;
        } else {
            // A chunk already stored is touched so GC's grace period covers it until
            // this backup's manifest references it; a missing one is written.
            match self.backend.touch(&key) {
                Ok(()) => res.chunks_reused += 1,
                Err(BackupError::NotFound(_)) => self.put_chunk(&id, data, res)?,
                Err(e) => return Err(e),
            }
        }
        Ok(ChunkRef {
            offset,
            len,
            id: Some(id),
        })
    }

    fn put_chunk(&self, id: &ChunkId, data: &[u8], res: &mut BackupFileResult) -> Result<()> {
        let stored = encode_chunk(id, data, self.cfg.key.as_ref(), self.cfg.zstd_level)?;
        self.backend.put(&chunk_key(id), &stored)?;
        res.chunks_new += 1;
        res.bytes_stored += stored.len() as u64;
        Ok(())
    }

    /// Builds the manifest of a backup made of `files` with this store's settings.
    pub fn new_manifest(
        &self,
        backup_id: &str,
        created_unix: Option<u64>,
        files: Vec<FileIndex>,
    ) -> Result<Manifest> {
        validate_backup_id(backup_id)?;
        Ok(Manifest {
            format: MANIFEST_FORMAT,
            backup_id: backup_id.to_string(),
            created_unix: created_unix.unwrap_or_else(now_unix),
            hash: self.cfg.hash,
            chunking: self.cfg.chunking,
            key_fingerprint: self.fingerprint(),
            files,
            damaged: Vec::new(),
            verified_unix: None,
        })
    }

    /// Stores a manifest (after its chunks, so a listed backup is always complete).
    pub fn put_manifest(&self, m: &Manifest) -> Result<()> {
        self.backend.put(&manifest_key(&m.backup_id)?, &m.encode()?)
    }

    /// Reads and validates one manifest.
    pub fn get_manifest(&self, backup_id: &str) -> Result<Manifest> {
        let key = manifest_key(backup_id)?;
        Manifest::decode(&key, &self.backend.get(&key)?)
    }

    /// Every backup's manifest, oldest first. A malformed manifest is an error, not skipped.
    pub fn list_backups(&self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for obj in self.backend.list("manifests/")? {
            if obj.key.ends_with(".json") {
                out.push(Manifest::decode(&obj.key, &self.backend.get(&obj.key)?)?);
            }
        }
        out.sort_by(|a, b| {
            a.created_unix
                .cmp(&b.created_unix)
                .then(a.backup_id.cmp(&b.backup_id))
        });
        Ok(out)
    }

    /// Restores file `name` of backup `m` to `dest` (created 0600, must not exist), each
    /// chunk re-hashed; holes are not written, so the restored file stays sparse.
    pub fn restore_file(&self, m: &Manifest, name: &str, dest: &Path) -> Result<u64> {
        self.check_key(m)?;
        let index = m.file(name).ok_or_else(|| {
            BackupError::NotFound(format!("file {name:?} in backup {}", m.backup_id))
        })?;
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)
            .map_err(|e| BackupError::io(format!("creating {}", dest.display()), e))?;
        out.set_len(index.size)
            .map_err(|e| BackupError::io(format!("sizing {}", dest.display()), e))?;
        let mut written = 0u64;
        for c in &index.chunks {
            let Some(id) = c.id else { continue };
            let stored = self.backend.get(&chunk_key(&id))?;
            let data = decode_and_verify(&id, &stored, m.hash, self.cfg.key.as_ref())?;
            if data.len() != c.len as usize {
                return Err(BackupError::MalformedChunk {
                    id: id.to_hex(),
                    reason: format!("{} bytes where the manifest says {}", data.len(), c.len),
                });
            }
            out.write_all_at(&data, c.offset).map_err(|e| {
                BackupError::io(format!("writing {} at {}", dest.display(), c.offset), e)
            })?;
            written += data.len() as u64;
            self.add_progress(data.len() as u64);
        }
        out.sync_all()
            .map_err(|e| BackupError::io(format!("syncing {}", dest.display()), e))?;
        tracing::info!(backup = %m.backup_id, file = name, written, "restored");
        Ok(written)
    }
}
