//! The host's snapshot store (`DATA/snapshots/<id>`): crash-consistent snapshots of a
//! running VM kept apart from it. Taking one pauses the VM once: the VMM writes its
//! state and memory, hostd reflinks each writable disk (a copy-on-write point that
//! costs metadata, not data), and the VM resumes. A filesystem without reflink is
//! refused rather than having its disks copied during the pause. Stored snapshots
//! are root-owned and read-only; a restore or clone reads them in place (the jail
//! binds the directory read-only), and a peer hostd pulls them file by file.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use nova_hostd_api::{
    disk_file, validate_id, CloneMethod, FetchSnapshot, HostdClient, SnapshotDisk, StoredSnapshot,
    StoredSnapshotList, TakeSnapshot, VmInfo, VmState, META_FILE,
};

use crate::error::{Error, Result};
use crate::vms::record::{now_ms, Vm};
use crate::vms::spawn::Launch;
use crate::vms::table::Vms;

impl Vms {
    /// `DATA/snapshots`.
    pub fn store_dir(&self) -> PathBuf {
        self.settings.data_dir.join("snapshots")
    }

    /// The directory of stored snapshot `id` (checked as an id).
    fn stored_dir(&self, id: &str) -> Result<PathBuf> {
        validate_id("id", id)?;
        Ok(self.store_dir().join(id))
    }

    /// Stored snapshot `id`'s description.
    pub fn stored(&self, id: &str) -> Result<StoredSnapshot> {
        let dir = self.stored_dir(id)?;
        let text = std::fs::read(dir.join(META_FILE))
            .map_err(|_| Error::NotFound(format!("no stored snapshot '{id}'")))?;
        serde_json::from_slice(&text)
            .map_err(|e| Error::Conflict(format!("stored snapshot '{id}' is unreadable: {e}")))
    }

    /// Every complete snapshot in the store.
    pub fn stored_all(&self) -> StoredSnapshotList {
        let mut snapshots: Vec<StoredSnapshot> = std::fs::read_dir(self.store_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| self.stored(&e.file_name().to_string_lossy()).ok())
            .collect();
        snapshots.sort_by(|a, b| a.id.cmp(&b.id));
        StoredSnapshotList { snapshots }
    }

    /// Removes stored snapshot `id` (VMs cloned from it keep their mapping: the
    /// kernel holds the file until the last one exits).
    pub fn delete_stored(&self, id: &str) -> Result<()> {
        let dir = self.stored_dir(id)?;
        if !dir.is_dir() {
            return Err(Error::NotFound(format!("no stored snapshot '{id}'")));
        }
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Error::io(format!("removing {}", dir.display()), e))
    }

    /// Snapshots VM `req.vm_id` (memory, devices, writable disks) into the store.
    pub async fn take_stored(&self, req: TakeSnapshot) -> Result<StoredSnapshot> {
        req.validate()?;
        let dest = self.stored_dir(&req.id)?;
        let vm = self.get(&req.vm_id)?;
        let _op = vm.op.lock().await;
        let state = vm.state();
        if !matches!(state, VmState::Running | VmState::Paused) {
            return Err(Error::Conflict(format!(
                "VM '{}' is not running ({state:?})",
                req.vm_id
            )));
        }
        if dest.exists() {
            return Err(Error::Conflict(format!("snapshot '{}' exists", req.id)));
        }
        let store = self.store_dir();
        std::fs::create_dir_all(&store)
            .map_err(|e| Error::io(format!("creating {}", store.display()), e))?;
        // The VMM (jailed) writes into the VM's own snapshot directory; the result
        // moves to the store once whole.
        let work = vm.dir.join("snapshots").join(format!("stored-{}", req.id));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)
            .map_err(|e| Error::io(format!("creating {}", work.display()), e))?;
        if self.settings.jail.enabled {
            crate::jail::give(&work, self.jailer.uid_for(&vm.id)?)?;
        }
        let taken = self.capture(&vm, &work, state == VmState::Paused).await;
        let (disks, paused_ms) = match taken {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&work);
                return Err(e);
            }
        };
        let spec = vm.lock().rec.spec.clone();
        let mut snap = StoredSnapshot {
            id: req.id.clone(),
            vm_id: req.vm_id.clone(),
            spec,
            disks,
            stored_bytes: 0,
            paused_ms,
            created_at_ms: now_ms(),
        };
        let sealed = seal(&work, &dest, &mut snap);
        if sealed.is_err() {
            let _ = std::fs::remove_dir_all(&work);
            let _ = std::fs::remove_dir_all(&dest);
        }
        sealed?;
        tracing::info!(
            snapshot = req.id,
            vm = req.vm_id,
            paused_ms,
            "snapshot stored"
        );
        Ok(snap)
    }

    /// Pauses the VM (unless it was), has the VMM write state and memory into
    /// `work`, reflinks its writable disks there, resumes. The disks and the pause.
    async fn capture(
        &self,
        vm: &Vm,
        work: &Path,
        was_paused: bool,
    ) -> Result<(Vec<SnapshotDisk>, f64)> {
        let vmm = vm.vmm()?;
        let t0 = Instant::now();
        if !was_paused {
            vmm.pause().await.map_err(Error::vmm)?;
        }
        let inner = async {
            let req = nova_vmm_api::SnapshotRequest {
                path: work.to_path_buf(),
                diff: false,
            };
            vmm.snapshot(&req).await.map_err(Error::vmm)?;
            let rec_disks = vm.lock().rec.disks.clone();
            let mut disks = Vec::new();
            for (index, d) in rec_disks.iter().enumerate() {
                if d.read_only {
                    continue;
                }
                let src = vm.dir.join(&d.path);
                let dst = work.join(disk_file(index));
                crate::images::clone::reflink_file(&src, &dst).map_err(|e| {
                    Error::Conflict(format!(
                        "disk {index} ({}): no copy-on-write point ({e}); snapshots of VMs with \
                         writable disks need a data dir on a filesystem with reflink (XFS, btrfs), \
                         and hostd will not copy a disk while the VM is paused",
                        src.display()
                    ))
                })?;
                let size_bytes = std::fs::metadata(&dst).map(|m| m.len()).unwrap_or(0);
                disks.push(SnapshotDisk {
                    index,
                    size_bytes,
                    method: CloneMethod::Reflink,
                });
            }
            Ok::<_, Error>(disks)
        }
        .await;
        if !was_paused {
            let resumed = vmm.resume().await.map_err(Error::vmm);
            if let Err(e) = &resumed {
                tracing::error!(vm = vm.id, "resuming after a snapshot: {e}");
            }
            resumed?;
        }
        let paused_ms = t0.elapsed().as_secs_f64() * 1000.0;
        Ok((inner?, paused_ms))
    }

    /// Copies stored snapshot `id` from a peer hostd into the store (nothing to do if
    /// it is here already).
    pub async fn fetch_stored(&self, id: &str, req: FetchSnapshot) -> Result<StoredSnapshot> {
        req.validate()?;
        let dest = self.stored_dir(id)?;
        if let Ok(s) = self.stored(id) {
            return Ok(s);
        }
        let peer = HostdClient::new(&req.from_url, &req.token, &Default::default())
            .map_err(Error::peer)?;
        let mut snap = peer.stored_snapshot(id).await.map_err(Error::peer)?;
        if snap.id != id {
            return Err(Error::Peer(format!("asked for '{id}', got '{}'", snap.id)));
        }
        let work = self.store_dir().join(format!(".fetch-{id}"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)
            .map_err(|e| Error::io(format!("creating {}", work.display()), e))?;
        let fetched = async {
            for f in snap.files() {
                if f == META_FILE {
                    continue;
                }
                let path = work.join(&f);
                let mut out = SparseWriter::create(&path)
                    .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
                peer.snapshot_file(id, &f, |chunk| out.push(chunk).map_err(|e| e.to_string()))
                    .await
                    .map_err(Error::peer)?;
                out.finish()
                    .map_err(|e| Error::io(format!("writing fetched {f}"), e))?;
            }
            snap.paused_ms = 0.0;
            seal(&work, &dest, &mut snap)
        }
        .await;
        if fetched.is_err() {
            let _ = std::fs::remove_dir_all(&work);
        }
        fetched?;
        tracing::info!(
            snapshot = id,
            from = req.from_url,
            "stored snapshot fetched"
        );
        Ok(snap)
    }

    /// Starts stopped VM `vm` from stored snapshot `id`: the snapshot's disks replace
    /// the VM's writable disks (a reflink where the filesystem has it, else a sparse
    /// copy: the VM is not running), then its VMM restores the memory eagerly,
    /// lazily or as a copy-on-write clone of the snapshot's memory file. The VM's
    /// own NICs (MACs) and read-only disks (its NoCloud seed) stay its own.
    pub async fn restore_stored(
        self: &Arc<Self>,
        vm: &Arc<Vm>,
        id: &str,
        lazy: bool,
        clone: bool,
    ) -> Result<VmInfo> {
        let snap = self.stored(id)?;
        let dir = self.stored_dir(id)?;
        let _op = vm.op.lock().await;
        let rec = vm.lock().rec.clone();
        if rec.spec.mem_mib != snap.spec.mem_mib || rec.spec.vcpus != snap.spec.vcpus {
            return Err(Error::Conflict(format!(
                "snapshot '{id}' is of a VM with {} vCPUs and {} MiB; this one has {} and {}",
                snap.spec.vcpus, snap.spec.mem_mib, rec.spec.vcpus, rec.spec.mem_mib
            )));
        }
        if rec.disks.len() != snap.spec.disks.len() + usize::from(snap.spec.cloud_init.is_some()) {
            return Err(Error::Conflict(format!(
                "snapshot '{id}' is of a VM with other disks than this one's"
            )));
        }
        let before = rec.state;
        self.admit_start(vm, ": stop it before restoring").await?;
        if let Err(e) = self.replace_disks(vm, &rec, id, &snap, &dir) {
            // Not started after all: the VM is as it was (its disks whole, the old or
            // the snapshot's: each is replaced in one rename).
            vm.set_state(before);
            return Err(e);
        }
        self.launch(vm, Launch::Restore { dir, lazy, clone })
            .await?;
        Ok(self.vm_info(vm).await)
    }

    /// Replaces the VM's writable disks by the stored snapshot's (a reflink where the
    /// filesystem has it, else a sparse copy), each in one rename.
    fn replace_disks(
        &self,
        vm: &Vm,
        rec: &crate::vms::record::VmRecord,
        id: &str,
        snap: &StoredSnapshot,
        dir: &Path,
    ) -> Result<()> {
        for d in &snap.disks {
            let Some(mine) = rec.disks.get(d.index).filter(|m| !m.read_only) else {
                return Err(Error::Conflict(format!(
                    "snapshot '{id}' holds disk {} which this VM has not writable",
                    d.index
                )));
            };
            let target = vm.dir.join(&mine.path);
            let src = dir.join(disk_file(d.index));
            let tmp = target.with_extension("restoring");
            let _ = std::fs::remove_file(&tmp);
            crate::images::clone::clone_file(&src, &tmp, None, true)
                .map_err(|e| Error::io(format!("copying {}", src.display()), e))?;
            std::fs::rename(&tmp, &target)
                .map_err(|e| Error::io(format!("replacing {}", target.display()), e))?;
        }
        Ok(())
    }
}

/// Describes `snap` in `work`, makes it root-owned and read-only (files 0444, so a
/// jailed VMM of any uid may map its memory; nothing may write it), and moves it to
/// `dest` in one rename.
fn seal(work: &Path, dest: &Path, snap: &mut StoredSnapshot) -> Result<()> {
    let ioe = |what: &Path| {
        let what = what.display().to_string();
        move |e| Error::io(format!("sealing {what}"), e)
    };
    let mut bytes = 0;
    for e in std::fs::read_dir(work).map_err(ioe(work))?.flatten() {
        let p = e.path();
        let md = std::fs::symlink_metadata(&p).map_err(ioe(&p))?;
        if !md.is_file() {
            return Err(Error::Conflict(format!("{} is not a file", p.display())));
        }
        bytes += md.blocks() * 512;
    }
    snap.stored_bytes = bytes;
    let meta = serde_json::to_vec_pretty(snap).map_err(|e| Error::Conflict(e.to_string()))?;
    std::fs::write(work.join(META_FILE), meta).map_err(ioe(work))?;
    for e in std::fs::read_dir(work).map_err(ioe(work))?.flatten() {
        let p = e.path();
        std::os::unix::fs::chown(&p, Some(0), Some(0)).map_err(ioe(&p))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).map_err(ioe(&p))?;
    }
    std::os::unix::fs::chown(work, Some(0), Some(0)).map_err(ioe(work))?;
    std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o755)).map_err(ioe(work))?;
    std::fs::rename(work, dest).map_err(ioe(dest))
}

/// A new file written front to back from chunks of any size, leaving all-zero 4 KiB
/// blocks as holes (a fetched memory file takes what the guest touched, not its size).
struct SparseWriter {
    file: std::fs::File,
    /// Bytes received but not yet a whole block.
    pending: Vec<u8>,
    /// Where `pending` starts in the file.
    at: u64,
}

const BLOCK: usize = 4096;

impl SparseWriter {
    fn create(path: &Path) -> std::io::Result<SparseWriter> {
        Ok(SparseWriter {
            file: std::fs::File::create(path)?,
            pending: Vec::with_capacity(2 * BLOCK),
            at: 0,
        })
    }

    fn write_block(&mut self, block: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if block.iter().any(|&b| b != 0) {
            self.file.write_all_at(block, self.at)?;
        }
        self.at += block.len() as u64;
        Ok(())
    }

    fn push(&mut self, mut chunk: &[u8]) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let take = (BLOCK - self.pending.len()).min(chunk.len());
            self.pending.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.pending.len() < BLOCK {
                return Ok(());
            }
            let block = std::mem::take(&mut self.pending);
            self.write_block(&block)?;
            self.pending = block;
            self.pending.clear();
        }
        let whole = chunk.len() / BLOCK * BLOCK;
        for block in chunk[..whole].chunks(BLOCK) {
            self.write_block(block)?;
        }
        self.pending.extend_from_slice(&chunk[whole..]);
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<()> {
        let rest = std::mem::take(&mut self.pending);
        self.write_block(&rest)?;
        self.file.set_len(self.at)?;
        self.file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetched_files_keep_their_zero_blocks_as_holes_whatever_the_chunks() {
        let dir = nova_tests_free_dir();
        let mut bytes = vec![0u8; 64 << 12];
        bytes[5 << 12] = 7;
        bytes[(9 << 12) + 4095] = 9;
        bytes.extend_from_slice(&[1, 2, 3]); // a tail shorter than a block
        for (i, size) in [1usize, 1000, 4096, 5000, 1 << 20].into_iter().enumerate() {
            let p = dir.join(format!("memory{i}"));
            let mut w = SparseWriter::create(&p).unwrap();
            for c in bytes.chunks(size) {
                w.push(c).unwrap();
            }
            w.finish().unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), bytes, "chunks of {size}");
            let md = std::fs::metadata(&p).unwrap();
            assert!(
                md.blocks() * 512 <= 32 << 10,
                "{} bytes allocated",
                md.blocks() * 512
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn nova_tests_free_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("nova-stored-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
