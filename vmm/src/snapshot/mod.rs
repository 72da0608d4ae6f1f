//! Snapshots: a paused VM's state and memory in a directory, and restoring from one.
//!
//! `DIR/state` is the encoded [`Snapshot`] (magic, version, crc: see `crate::state`);
//! `DIR/memory` is guest RAM at its memfd offsets, written sparse: only pages the
//! guest touched and that are not zero take space, so creating a snapshot costs what
//! the guest touched, not its size. A diff snapshot holds only the pages written since
//! the previous snapshot of the same VM and names that one as its parent.
//!
//! Restore is eager (copy into a fresh memfd), lazy (a fresh memfd whose pages a
//! userfaultfd fills from the file on first touch) or a clone (the file mapped
//! private: many VMs share its pages copy-on-write).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nova_vmm_api::{SnapshotReport, VmConfig};
use serde::{Deserialize, Serialize};

use crate::dirty::{self, DirtyBitmap};
use crate::memory::PAGE_SIZE;
use crate::state::{self, DecodeError, VmState};
use crate::vm::build::MemorySource;
use crate::vm::{Vm, VmError};

pub mod lazy;
pub mod ranges;

/// What `DIR/state` holds.
#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    /// For a diff snapshot: the parent directory and the pages this one holds.
    pub diff: Option<DiffOf>,
    pub vm: VmState,
}

/// A diff snapshot's parent and the pages it overrides.
#[derive(Serialize, Deserialize)]
pub struct DiffOf {
    pub parent: PathBuf,
    pub pages: Vec<u64>,
}

/// How to bring a snapshot's memory back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreMode {
    Eager,
    Lazy,
    Clone,
}

/// Why a snapshot could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("snapshot {path}: {err}")]
    Format { path: PathBuf, err: DecodeError },
    #[error("snapshot {path}: memory file is {found} bytes, the VM has {expected}")]
    MemorySize {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("a diff snapshot needs a full snapshot of this VM first")]
    NoBase,
    #[error("{0} restore needs a full snapshot, and {1} is a diff")]
    DiffNotSupported(&'static str, PathBuf),
    #[error("diff snapshot parent {}: {why}", parent.display())]
    Chain { parent: PathBuf, why: String },
    #[error("{0}")]
    Vm(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |err| SnapshotError::Io {
        path: path.to_owned(),
        err,
    }
}

/// Writes a snapshot of `vm` into `dir`: pauses it, saves state and memory, resumes.
pub fn create(vm: &Vm, dir: &Path, diff: bool) -> Result<SnapshotReport, SnapshotError> {
    let parent = if diff {
        Some(vm.diff_base().ok_or(SnapshotError::NoBase)?)
    } else {
        None
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let was_paused = vm.control.is_paused();
    let t0 = std::time::Instant::now();
    vm.pause();
    // Every snapshot of the VM's own restarts dirty tracking, so the next diff holds
    // what changed since.
    let result = vm
        .collect_dirty()
        .map_err(|e| SnapshotError::Vm(e.to_string()))
        .and_then(|dirty| write_snapshot(vm, dir, parent.map(|p| (p, dirty))));
    if !was_paused {
        vm.resume();
    }
    // The dirty log may have restarted before a failure: no diff may count from the
    // previous snapshot any more (it would miss those pages).
    let (pages, bytes) = result.inspect_err(|_| vm.set_diff_base(None))?;
    vm.set_diff_base(Some(std::fs::canonicalize(dir).map_err(io(dir))?));
    Ok(SnapshotReport {
        path: dir.to_owned(),
        diff,
        pages_written: pages,
        bytes_written: bytes,
        paused_ms: t0.elapsed().as_secs_f64() * 1000.0,
    })
}

/// Writes a full snapshot of the paused `vm` into `dir` (created if missing) for a
/// backup: the VM's own snapshots are left alone (its dirty-page tracking is not
/// restarted, no diff counts from this one). Pages and bytes written.
pub fn write_detached(vm: &Vm, dir: &Path) -> Result<(u64, u64), SnapshotError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_snapshot(vm, dir, None)
}

/// Writes state and memory: every touched page, or for a diff (its parent and the
/// pages dirtied since it) those pages.
fn write_snapshot(
    vm: &Vm,
    dir: &Path,
    diff: Option<(PathBuf, DirtyBitmap)>,
) -> Result<(u64, u64), SnapshotError> {
    let vmerr = |e: VmError| SnapshotError::Vm(e.to_string());
    let state = vm.save_state().map_err(vmerr)?;
    let mem_path = dir.join("memory");
    let mem_bytes = vm.config.mem_mib << 20;
    let file = File::create(&mem_path).map_err(io(&mem_path))?;
    file.set_len(mem_bytes).map_err(io(&mem_path))?;
    let pages: Box<dyn Iterator<Item = usize>> = match &diff {
        Some((_, dirty)) => Box::new(dirty.iter().collect::<Vec<_>>().into_iter()),
        None => Box::new(
            ranges::touched_pages(vm)
                .map_err(io(&mem_path))?
                .into_iter(),
        ),
    };
    let mut written = DirtyBitmap::new(dirty::ram_pages(&vm.mem));
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut buf = vec![0u8; PAGE_SIZE];
    for page in pages {
        vm.read_page(page, &mut buf).map_err(io(&mem_path))?;
        written.set(page);
        // Zero pages are holes in a full snapshot; a diff must record them (they may
        // have been non-zero in the parent).
        if diff.is_none() && buf.iter().all(|b| *b == 0) {
            continue;
        }
        file.write_all_at(&buf, (page * PAGE_SIZE) as u64)
            .map_err(io(&mem_path))?;
        n += 1;
        bytes += PAGE_SIZE as u64;
    }
    file.sync_all().map_err(io(&mem_path))?;
    let snap = Snapshot {
        diff: diff.map(|(parent, _)| DiffOf {
            parent,
            pages: written.words().to_vec(),
        }),
        vm: state,
    };
    let state_path = dir.join("state");
    let mut f = File::create(&state_path).map_err(io(&state_path))?;
    f.write_all(&state::encode(&snap))
        .map_err(io(&state_path))?;
    f.sync_all().map_err(io(&state_path))?;
    Ok((n, bytes))
}

/// Reads and verifies `DIR/state`.
pub fn load(dir: &Path) -> Result<Snapshot, SnapshotError> {
    let path = dir.join("state");
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    state::decode(&bytes).map_err(|err| SnapshotError::Format { path, err })
}

/// Opens `DIR/memory`, checking it is the size the VM's configuration says.
pub fn open_memory(dir: &Path, mem_bytes: u64) -> Result<File, SnapshotError> {
    let path = dir.join("memory");
    let f = File::open(&path).map_err(io(&path))?;
    let found = f.metadata().map_err(io(&path))?.len();
    if found != mem_bytes {
        return Err(SnapshotError::MemorySize {
            path,
            found,
            expected: mem_bytes,
        });
    }
    Ok(f)
}

/// Longest chain of diff snapshots restore follows to its full base.
pub const MAX_DIFF_CHAIN: usize = 64;

/// The ancestors a restore of the diff snapshot in `dir` reads, loaded: its parent
/// first, its full base last. A parent must be a sibling of `dir` (in the directory
/// that holds the VM's snapshots), must not be a snapshot already in the chain (a loop
/// used to recurse until the stack overflowed), and the chain is at most
/// [`MAX_DIFF_CHAIN`] long: a crafted `state` may name any path as its parent, and
/// none of that is followed.
pub fn diff_chain(dir: &Path, parent: &Path) -> Result<Vec<(PathBuf, Snapshot)>, SnapshotError> {
    let top = std::fs::canonicalize(dir).map_err(io(dir))?;
    let home = top.parent().map(Path::to_path_buf);
    let mut seen = std::collections::HashSet::from([top]);
    let mut chain: Vec<(PathBuf, Snapshot)> = Vec::new();
    let mut next = Some(parent.to_path_buf());
    while let Some(named) = next.take() {
        let refuse = |why: &str| SnapshotError::Chain {
            parent: named.clone(),
            why: why.to_string(),
        };
        if chain.len() >= MAX_DIFF_CHAIN {
            return Err(refuse("the chain of diff snapshots is too long"));
        }
        let found = std::fs::canonicalize(&named).map_err(io(&named))?;
        if found.parent().map(Path::to_path_buf) != home {
            return Err(refuse("the parent is outside this snapshot's directory"));
        }
        if !seen.insert(found.clone()) {
            return Err(refuse("the chain of diff snapshots loops"));
        }
        let loaded = load(&found)?;
        next = loaded.diff.as_ref().map(|d| d.parent.clone());
        chain.push((found, loaded));
    }
    Ok(chain)
}

/// Fills `memfd` with a snapshot's memory, following diff snapshots to their base
/// (see [`diff_chain`] for the chains refused).
pub fn copy_memory_into(
    dir: &Path,
    snap: &Snapshot,
    memfd: &File,
    mem_bytes: u64,
) -> Result<(), SnapshotError> {
    let Some(own) = &snap.diff else {
        let file = open_memory(dir, mem_bytes)?;
        return ranges::copy_data(&file, memfd).map_err(io(dir));
    };
    let chain = diff_chain(dir, &own.parent)?;
    // The base first, then each diff over it, this snapshot last.
    let layers = chain
        .iter()
        .rev()
        .map(|(p, s)| (p.as_path(), s.diff.as_ref()))
        .chain(std::iter::once((dir, Some(own))));
    for (path, diff) in layers {
        let file = open_memory(path, mem_bytes)?;
        let Some(diff) = diff else {
            ranges::copy_data(&file, memfd).map_err(io(path))?;
            continue;
        };
        let pages = DirtyBitmap::from_words(diff.pages.clone(), (mem_bytes as usize) / PAGE_SIZE)
            .ok_or_else(|| {
            SnapshotError::Vm(format!(
                "{}: diff page map has the wrong size",
                path.display()
            ))
        })?;
        let mut buf = vec![0u8; PAGE_SIZE];
        for page in pages.iter() {
            let off = (page * PAGE_SIZE) as u64;
            file.read_exact_at(&mut buf, off).map_err(io(path))?;
            memfd.write_all_at(&buf, off).map_err(io(path))?;
        }
    }
    Ok(())
}

/// Builds a VM from the snapshot in `dir`: its configuration with `adjust` applied
/// (new console, API socket, disks or NICs), its memory by `mode`, its state loaded.
/// The VM is ready to start.
///
/// The work runs on a short-lived thread, and the heap's free pages go back to the
/// kernel after it: decoding and loading the state takes ~50 KiB of stack and ~100
/// KiB of heap that a restored VM never uses again, and each clone of a golden
/// snapshot would otherwise keep them (its private memory is otherwise only its VMM's
/// own and the pages its guest writes). glibc returns an exited thread's stack
/// pages to the kernel (`MADV_DONTNEED`).
pub fn restore(
    dir: &Path,
    mode: RestoreMode,
    adjust: impl FnOnce(&mut VmConfig) + Send,
) -> Result<Vm, SnapshotError> {
    let vm = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("restore".into())
            .spawn_scoped(s, || restore_here(dir, mode, adjust))
            .map_err(|e| SnapshotError::Vm(format!("starting the restore thread: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(SnapshotError::Vm("the restore thread panicked".into())))
    })?;
    release_free_heap();
    Ok(vm)
}

/// Gives the heap's free pages back to the kernel (`malloc_trim`: in every arena, not
/// only at the top).
fn release_free_heap() {
    // SAFETY: malloc_trim only walks glibc's own arenas; no Rust memory is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn restore_here(
    dir: &Path,
    mode: RestoreMode,
    adjust: impl FnOnce(&mut VmConfig),
) -> Result<Vm, SnapshotError> {
    let vmerr = |e: VmError| SnapshotError::Vm(e.to_string());
    let snap = load(dir)?;
    let mut config = snap.vm.config.clone();
    adjust(&mut config);
    let mem_bytes = config.mem_mib << 20;
    let is_diff = snap.diff.is_some();
    let (source, lazy_file) = match mode {
        RestoreMode::Eager => {
            let memfd = crate::memory::create_memfd(config.mem_mib)
                .map_err(|e| SnapshotError::Vm(e.to_string()))?;
            copy_memory_into(dir, &snap, &memfd, mem_bytes)?;
            (MemorySource::Memfd(memfd), None)
        }
        RestoreMode::Lazy | RestoreMode::Clone if is_diff => {
            let what = if mode == RestoreMode::Lazy {
                "lazy"
            } else {
                "clone"
            };
            return Err(SnapshotError::DiffNotSupported(what, dir.to_owned()));
        }
        RestoreMode::Lazy => {
            let memfd = crate::memory::create_memfd(config.mem_mib)
                .map_err(|e| SnapshotError::Vm(e.to_string()))?;
            (
                MemorySource::Memfd(memfd),
                Some(open_memory(dir, mem_bytes)?),
            )
        }
        RestoreMode::Clone => (MemorySource::SharedFile(open_memory(dir, mem_bytes)?), None),
    };
    let vm = Vm::build(config, source, Some(&snap.vm.vcpus)).map_err(vmerr)?;
    if let Some(file) = lazy_file {
        lazy::prefetch_first_touched(&vm.mem, &file, &snap.vm.vcpus);
        lazy::serve_from_file(&vm.mem, file).map_err(io(dir))?;
    }
    vm.restore_state(&snap.vm).map_err(vmerr)?;
    Ok(vm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{KvmState, VmState};

    fn write_diff(dir: &Path, parent: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let snap = Snapshot {
            diff: Some(DiffOf {
                parent: parent.to_owned(),
                pages: vec![0; 4],
            }),
            vm: VmState {
                config: VmConfig::new("/k".into()),
                vcpus: vec![],
                kvm: KvmState::default(),
                serial: vm_superio::serial::SerialState::default().into(),
                virtio: vec![],
                backup_bitmaps: vec![],
            },
        };
        std::fs::write(dir.join("state"), state::encode(&snap)).unwrap();
        std::fs::write(dir.join("memory"), vec![0u8; 256 * PAGE_SIZE]).unwrap();
    }

    fn restore_memory(dir: &Path) -> Result<(), SnapshotError> {
        let snap = load(dir)?;
        let into = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.with_extension("restored"))
            .unwrap();
        into.set_len(1 << 20).unwrap();
        copy_memory_into(dir, &snap, &into, 1 << 20)
    }

    #[test]
    fn a_diff_snapshot_that_is_its_own_parent_is_refused_not_a_stack_overflow() {
        let root = std::env::temp_dir().join(format!("nova-snap-loop-{}", std::process::id()));
        let (a, b) = (root.join("a"), root.join("b"));
        write_diff(&a, &a);
        let err = restore_memory(&a).unwrap_err().to_string();
        assert!(err.contains("loops"), "{err}");
        // A longer loop too: a -> b -> a.
        write_diff(&a, &b);
        write_diff(&b, &a);
        let err = restore_memory(&a).unwrap_err().to_string();
        assert!(err.contains("loops"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_diff_snapshot_whose_parent_is_outside_its_directory_is_refused() {
        let root = std::env::temp_dir().join(format!("nova-snap-out-{}", std::process::id()));
        let (a, elsewhere) = (root.join("vm/a"), root.join("other/base"));
        write_diff(&elsewhere, &elsewhere);
        write_diff(&a, &elsewhere);
        let err = restore_memory(&a).unwrap_err().to_string();
        assert!(err.contains("outside"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
