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
    let result = write_snapshot(vm, dir, parent);
    if !was_paused {
        vm.resume();
    }
    let (pages, bytes) = result?;
    vm.set_diff_base(Some(std::fs::canonicalize(dir).map_err(io(dir))?));
    Ok(SnapshotReport {
        path: dir.to_owned(),
        diff,
        pages_written: pages,
        bytes_written: bytes,
        paused_ms: t0.elapsed().as_secs_f64() * 1000.0,
    })
}

fn write_snapshot(
    vm: &Vm,
    dir: &Path,
    parent: Option<PathBuf>,
) -> Result<(u64, u64), SnapshotError> {
    let vmerr = |e: VmError| SnapshotError::Vm(e.to_string());
    let state = vm.save_state().map_err(vmerr)?;
    let mem_path = dir.join("memory");
    let mem_bytes = vm.config.mem_mib << 20;
    let file = File::create(&mem_path).map_err(io(&mem_path))?;
    file.set_len(mem_bytes).map_err(io(&mem_path))?;
    // Every snapshot restarts dirty tracking, so the next diff holds what changed since.
    let dirty_now = vm.collect_dirty().map_err(vmerr)?;
    let pages: Box<dyn Iterator<Item = usize>> = match &parent {
        Some(_) => Box::new(dirty_now.iter().collect::<Vec<_>>().into_iter()),
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
        if parent.is_none() && buf.iter().all(|b| *b == 0) {
            continue;
        }
        file.write_all_at(&buf, (page * PAGE_SIZE) as u64)
            .map_err(io(&mem_path))?;
        n += 1;
        bytes += PAGE_SIZE as u64;
    }
    file.sync_all().map_err(io(&mem_path))?;
    let snap = Snapshot {
        diff: parent.map(|parent| DiffOf {
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

/// Fills `memfd` with a snapshot's memory, following diff snapshots to their base.
pub fn copy_memory_into(
    dir: &Path,
    snap: &Snapshot,
    memfd: &File,
    mem_bytes: u64,
) -> Result<(), SnapshotError> {
    if let Some(diff) = &snap.diff {
        let parent = load(&diff.parent)?;
        copy_memory_into(&diff.parent, &parent, memfd, mem_bytes)?;
        let file = open_memory(dir, mem_bytes)?;
        let pages = DirtyBitmap::from_words(diff.pages.clone(), (mem_bytes as usize) / PAGE_SIZE)
            .ok_or_else(|| {
            SnapshotError::Vm(format!(
                "{}: diff page map has the wrong size",
                dir.display()
            ))
        })?;
        let mut buf = vec![0u8; PAGE_SIZE];
        for page in pages.iter() {
            let off = (page * PAGE_SIZE) as u64;
            file.read_exact_at(&mut buf, off).map_err(io(dir))?;
            memfd.write_all_at(&buf, off).map_err(io(dir))?;
        }
        return Ok(());
    }
    let file = open_memory(dir, mem_bytes)?;
    ranges::copy_data(&file, memfd).map_err(io(dir))
}

/// Builds a VM from the snapshot in `dir`: its configuration with `adjust` applied
/// (new console, API socket, disks or NICs), its memory by `mode`, its state loaded.
/// The VM is ready to start.
pub fn restore(
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
