//! One VM: what hostd keeps about it across its own restarts ([`VmRecord`], the
//! `vm.json` in its directory), what only the running daemon knows ([`Runtime`]),
//! and the paths of its files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nova_hostd_api::{
    DiskInfo, ExitInfo, MigrationStatus, NicInfo, Resources, VmInfo, VmSpec, VmState,
};
use nova_vmm_api::{KvmKind, VmmClient};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// How long a call to a VMM's API may take.
pub const VMM_TIMEOUT: Duration = Duration::from_secs(3);

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
    /// Written only by `migration::state`, the owner of migration state.
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
    pub kvm: Option<KvmKind>,
    /// The client of this generation's VMM (a fresh connection pool per VMM).
    pub vmm: Option<VmmClient>,
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

impl Vm {
    pub fn new(id: String, dir: PathBuf, rec: VmRecord) -> Vm {
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
        self.run_dir().join("api.sock")
    }
    /// The one directory the VMM may create files in (its API and console sockets).
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    /// Where the VMM's jail root is mounted (empty on the host).
    pub fn jail_root(&self) -> PathBuf {
        self.dir.join("root")
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    /// The VMM's console socket (`--console-sock`), for `GET /v1/vms/{id}/console/ws`;
    /// in the run directory, the one a jailed VMM may create sockets in.
    pub fn console_sock(&self) -> PathBuf {
        self.run_dir().join("console.sock")
    }
    /// The receiving VMM's migration credential (`--incoming-credential`).
    pub fn incoming_credential(&self) -> PathBuf {
        self.run_dir().join("incoming-credential.json")
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

    /// A client of the VM's VMM (the current generation's, or a new one).
    pub fn vmm(&self) -> Result<VmmClient> {
        let mut g = self.lock();
        if let Some(c) = &g.rt.vmm {
            return Ok(c.clone());
        }
        let c = VmmClient::new(&self.api_sock(), VMM_TIMEOUT).map_err(Error::vmm)?;
        g.rt.vmm = Some(c.clone());
        Ok(c)
    }

    /// Writes `vm.json` durably (a unique temp file, fsync, rename, directory fsync):
    /// a crash leaves the old record or the new one.
    pub fn persist(&self) -> Result<()> {
        let text = serde_json::to_vec_pretty(&self.lock().rec)
            .map_err(|e| Error::Conflict(e.to_string()))?;
        let path = self.dir.join("vm.json");
        nova_durable::write(&path, &text, nova_durable::SECRET)
            .ctx(|| format!("writing {}", path.display()))
    }

    /// Writes `vm.json` whole (temp file and rename) but not durably: a hostd crash
    /// leaves the old record or the new one; a power cut may leave the old one until
    /// [`sync_record`](Self::sync_record). Used on the start path, where the record
    /// is made durable while the VMM starts (see `supervise::launch`).
    pub fn persist_soon(&self) -> Result<()> {
        let text = serde_json::to_vec_pretty(&self.lock().rec)
            .map_err(|e| Error::Conflict(e.to_string()))?;
        let path = self.dir.join("vm.json");
        nova_durable::replace(&path, &text, nova_durable::SECRET)
            .ctx(|| format!("writing {}", path.display()))
    }

    /// Makes the last [`persist_soon`](Self::persist_soon) durable (fsync of
    /// `vm.json` and of the VM's directory).
    pub fn sync_record(&self) -> Result<()> {
        let path = self.dir.join("vm.json");
        nova_durable::sync(&path).ctx(|| format!("syncing {}", path.display()))
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
            kvm: g.rt.kvm.map(|k| k.as_str().to_string()),
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
        holds(&g.rec)
    }
}

/// What a VM in `rec` holds on the host.
pub fn holds(rec: &VmRecord) -> Resources {
    let disk_mib = rec
        .disks
        .iter()
        .map(|d| d.size_bytes.div_ceil(1 << 20))
        .sum();
    let active = is_active(rec.state);
    Resources {
        vcpus: if active { rec.spec.vcpus as u64 } else { 0 },
        mem_mib: if active { rec.spec.mem_mib } else { 0 },
        disk_mib,
    }
}

#[cfg(test)]
pub(crate) fn test_record(state: VmState) -> VmRecord {
    VmRecord {
        spec: serde_json::from_str(r#"{"name":"t","kernel":"/k","vcpus":2,"mem_mib":128}"#)
            .unwrap(),
        state,
        disks: vec![DiskInfo {
            path: "disks/disk0.raw".into(),
            base: None,
            read_only: false,
            size_bytes: (3 << 20) + 1,
            method: nova_hostd_api::CloneMethod::Blank,
        }],
        nics: Vec::new(),
        restarts: 0,
        exit: None,
        migration: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_vm_holds_its_disks_but_no_cpu_or_memory() {
        let r = holds(&test_record(VmState::Stopped));
        assert_eq!((r.vcpus, r.mem_mib, r.disk_mib), (0, 0, 4));
        for s in [VmState::Running, VmState::MigratingIn, VmState::Starting] {
            let r = holds(&test_record(s));
            assert_eq!((r.vcpus, r.mem_mib), (2, 128), "{s:?}");
        }
    }
}
