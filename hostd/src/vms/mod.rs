//! The VMs of this host: their table, their records on disk, and their `nova-vmm`
//! processes ([`process`]: spawn detached, find again; [`lifecycle`]: create, start,
//! stop, delete, supervise, reattach).
//!
//! Each VM lives in `DATA/vms/<id>/`: `vm.json` (hostd's record: spec, state, disks,
//! NICs, last exit), `vmm.json` (the `nova-vmm --config`), `vmm.pid`, `api.sock`,
//! `console.log` (written by the VMM), `vmm.log` (the VMM's stderr), `disks/`,
//! `snapshots/`.

pub mod lifecycle;
pub mod process;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::api::types::{
    DiskInfo, ExitInfo, MigrationStatus, NicInfo, Resources, VmInfo, VmSpec, VmState,
};
use crate::error::{Error, IoContext, Result};

/// What hostd keeps about a VM across its own restarts (`vm.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmRecord {
    /// `id` set, image references resolved to `sha256:`.
    pub spec: VmSpec,
    pub state: VmState,
    pub disks: Vec<DiskInfo>,
    pub nics: Vec<NicInfo>,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub exit: Option<ExitInfo>,
    #[serde(default)]
    pub migration: Option<MigrationStatus>,
}

/// What only the running daemon knows.
#[derive(Debug, Default)]
pub struct Runtime {
    pub pid: Option<u32>,
    /// Bumped at every VMM start, so a stale supervisor does not act on a new VMM.
    pub generation: u64,
    /// A stop (or delete) was asked for: an exit is not a crash and is not restarted.
    pub stop_requested: bool,
    pub started: Option<Instant>,
    pub kvm: Option<String>,
}

/// A VM's record and runtime, behind one lock.
#[derive(Debug)]
pub struct VmInner {
    pub rec: VmRecord,
    pub rt: Runtime,
}

/// One VM.
#[derive(Debug)]
pub struct Vm {
    pub id: String,
    pub dir: PathBuf,
    inner: Mutex<VmInner>,
    /// Serialises lifecycle operations (start, stop, delete, migrate) on this VM.
    pub op: tokio::sync::Mutex<()>,
    /// Woken when its VMM exits.
    pub exited: tokio::sync::Notify,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Vm {
    fn new(id: String, dir: PathBuf, rec: VmRecord) -> Vm {
        Vm {
            id,
            dir,
            inner: Mutex::new(VmInner {
                rec,
                rt: Runtime::default(),
            }),
            op: tokio::sync::Mutex::new(()),
            exited: tokio::sync::Notify::new(),
        }
    }

    /// The VM's state, locked. Never held across an await.
    pub fn lock(&self) -> MutexGuard<'_, VmInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn api_sock(&self) -> PathBuf {
        self.dir.join("api.sock")
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("vmm.log")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("vmm.pid")
    }
    pub fn vmm_config(&self) -> PathBuf {
        self.dir.join("vmm.json")
    }

    /// Writes `vm.json` (atomically: temp file, then rename).
    pub fn persist(&self) -> Result<()> {
        let text = serde_json::to_vec_pretty(&self.lock().rec)
            .map_err(|e| Error::Conflict(e.to_string()))?;
        let tmp = self.dir.join("vm.json.tmp");
        std::fs::write(&tmp, text).ctx(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, self.dir.join("vm.json"))
            .ctx(|| format!("renaming {}", tmp.display()))
    }

    /// Sets the state and persists it.
    pub fn set_state(&self, state: VmState) {
        self.lock().rec.state = state;
        if let Err(e) = self.persist() {
            tracing::warn!(vm = self.id, "persisting state: {e}");
        }
    }

    pub fn state(&self) -> VmState {
        self.lock().rec.state
    }

    /// What the API reports (without live counters).
    pub fn info(&self) -> VmInfo {
        let g = self.lock();
        VmInfo {
            id: self.id.clone(),
            name: g.rec.spec.name.clone(),
            state: g.rec.state,
            spec: g.rec.spec.clone(),
            pid: g.rt.pid,
            kvm: g.rt.kvm.clone(),
            uptime_ms: g.rt.started.map(|s| s.elapsed().as_millis() as u64),
            disks: g.rec.disks.clone(),
            nics: g.rec.nics.clone(),
            restarts: g.rec.restarts,
            exit: g.rec.exit.clone(),
            counters: BTreeMap::new(),
            migration: g.rec.migration.clone(),
        }
    }

    /// Resources it holds: disks always; vCPUs and memory while a VMM runs or may
    /// run (starting, running, paused, migrating).
    pub fn holds(&self) -> Resources {
        let g = self.lock();
        let disk_mib = g
            .rec
            .disks
            .iter()
            .map(|d| d.size_bytes.div_ceil(1 << 20))
            .sum();
        if is_active(g.rec.state) {
            Resources {
                vcpus: g.rec.spec.vcpus as u64,
                mem_mib: g.rec.spec.mem_mib,
                disk_mib,
            }
        } else {
            Resources {
                vcpus: 0,
                mem_mib: 0,
                disk_mib,
            }
        }
    }
}

/// States in which the VM holds CPU and memory.
pub fn is_active(s: VmState) -> bool {
    matches!(
        s,
        VmState::Starting
            | VmState::Running
            | VmState::Paused
            | VmState::MigratingIn
            | VmState::MigratingOut
    )
}

/// The VM table.
pub struct Vms {
    pub dir: PathBuf,
    table: Mutex<BTreeMap<String, Arc<Vm>>>,
    /// Held while admitting and inserting, so two requests cannot take the same room.
    pub admission: tokio::sync::Mutex<()>,
    /// MAC counter state, persisted in `DATA/mac-counter`.
    mac_counter: Mutex<u32>,
    pub mac_prefix: [u8; 2],
}

impl Vms {
    pub fn new(dir: PathBuf, host_id: &str) -> Result<Vms> {
        let counter = std::fs::read_to_string(dir.with_file_name("mac-counter"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1);
        Ok(Vms {
            dir,
            table: Mutex::new(BTreeMap::new()),
            admission: tokio::sync::Mutex::new(()),
            mac_counter: Mutex::new(counter),
            mac_prefix: crate::net::mac::host_prefix(host_id),
        })
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Vm>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: &str) -> Result<Arc<Vm>> {
        crate::api::types::validate_id("id", id)?;
        self.table()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no VM '{id}' on this host")))
    }

    pub fn all(&self) -> Vec<Arc<Vm>> {
        self.table().values().cloned().collect()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.table().contains_key(id)
    }

    /// Makes `DATA/vms/<id>/` and enters the VM in the table (the caller validated `id`).
    pub fn insert(&self, id: &str, rec: VmRecord) -> Result<Arc<Vm>> {
        let dir = self.dir.join(id);
        let mut t = self.table();
        if t.contains_key(id) || dir.exists() {
            return Err(Error::Conflict(format!(
                "a VM '{id}' already exists on this host"
            )));
        }
        std::fs::create_dir_all(dir.join("disks")).ctx(|| format!("creating {}", dir.display()))?;
        let vm = Arc::new(Vm::new(id.to_string(), dir, rec));
        vm.persist()?;
        t.insert(id.to_string(), vm.clone());
        Ok(vm)
    }

    /// Puts a VM read from disk back in the table.
    pub fn adopt(&self, id: &str, rec: VmRecord) -> Arc<Vm> {
        let vm = Arc::new(Vm::new(id.to_string(), self.dir.join(id), rec));
        self.table().insert(id.to_string(), vm.clone());
        vm
    }

    /// Takes a VM out of the table and removes its directory.
    pub fn remove(&self, id: &str) -> Result<()> {
        self.table().remove(id);
        let dir = self.dir.join(id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).ctx(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }

    /// Sum of what every VM holds, and how many VMs.
    pub fn allocated(&self) -> (Resources, u64) {
        let vms = self.all();
        let mut r = Resources::default();
        for vm in &vms {
            let h = vm.holds();
            r.vcpus += h.vcpus;
            r.mem_mib += h.mem_mib;
            r.disk_mib += h.disk_mib;
        }
        (r, vms.len() as u64)
    }

    /// Every MAC used by a VM on this host.
    pub fn macs_in_use(&self) -> HashSet<[u8; 6]> {
        let mut used = HashSet::new();
        for vm in self.all() {
            for n in &vm.lock().rec.nics {
                if let Ok(m) = crate::api::types::parse_mac("mac", &n.mac) {
                    used.insert(m);
                }
            }
        }
        used
    }

    /// Allocates a fresh MAC not in `used` (which the caller extends as it goes).
    pub fn allocate_mac(&self, used: &HashSet<[u8; 6]>) -> Result<[u8; 6]> {
        let mut c = self.mac_counter.lock().unwrap_or_else(|e| e.into_inner());
        let mac = crate::net::mac::allocate(self.mac_prefix, &mut c, used).ok_or_else(|| {
            Error::NoCapacity("mac addresses: all 2^24 of this host's are in use".into())
        })?;
        let _ = std::fs::write(self.dir.with_file_name("mac-counter"), c.to_string());
        Ok(mac)
    }

    /// Reads every `vm.json` under the VMs directory (skipping unreadable ones, loudly).
    pub fn load_records(&self) -> Vec<(String, VmRecord)> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if crate::api::types::validate_id("id", &id).is_err() {
                continue;
            }
            let p = e.path().join("vm.json");
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<VmRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(rec) => out.push((id, rec)),
                Err(e) => tracing::error!("ignoring {}: {e}", p.display()),
            }
        }
        out
    }
}

/// The last `n` lines of a text file (reads at most the last 256 KiB).
pub fn tail_lines(path: &Path, n: usize) -> (Vec<String>, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return (Vec::new(), 0);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(256 << 10);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return (Vec::new(), len);
    }
    // A line still being written is left for the next read.
    let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let text = String::from_utf8_lossy(&buf[..complete]);
    let mut lines: Vec<String> = text.lines().map(strip_ansi).collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // partial first line
    }
    let skip = lines.len().saturating_sub(n);
    (lines.split_off(skip), len)
}

/// Removes ANSI colour sequences (the VMM's log may have them) and `\r`.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tail_leaves_out_a_line_still_being_written() {
        let p = std::env::temp_dir().join(format!("hostd-tail-{}", std::process::id()));
        std::fs::write(&p, "a\nb\nNOVA-PAR").unwrap();
        assert_eq!(super::tail_lines(&p, 10).0, vec!["a", "b"]);
        assert_eq!(super::tail_lines(&p, 1).0, vec!["b"]);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn strips_colour_codes() {
        assert_eq!(
            super::strip_ansi("\x1b[2m2026\x1b[0m \x1b[32m INFO\x1b[0m x\r"),
            "2026  INFO x"
        );
    }
}
