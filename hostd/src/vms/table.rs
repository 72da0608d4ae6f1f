//! The VM table ([`Vms`]): every VM of this host by id, their directories under
//! `DATA/vms/`, the admission lock, MAC allocation, and what the lifecycle needs from
//! the rest of the host (images, network, the VMM binary, the capacity policy).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use nova_hostd_api::{parse_mac, validate_id, Resources};

use crate::admission::{self, Physical, Policy};
use crate::error::{Error, IoContext, Result};
use crate::images::ImageCache;
use crate::net::Network;
use crate::vms::record::{Vm, VmRecord};

/// What starting VMMs needs to know about the host.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub vmm_bin: PathBuf,
    /// Try FICLONE before copying (off only for tests of the copy path).
    pub reflink: bool,
    pub policy: Policy,
    pub physical: Physical,
    /// How VMMs are jailed (`--no-jail`, `--jail-ids`).
    pub jail: crate::jail::JailSettings,
    /// Migrate in plaintext without credentials (`--insecure-migration`, benchmarks).
    pub insecure_migration: bool,
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
    pub images: ImageCache,
    pub net: Arc<Network>,
    pub settings: Settings,
    /// Per-VM uids and cgroups of the jails.
    pub jailer: crate::jail::Jailer,
}

impl Vms {
    pub fn new(
        settings: Settings,
        host_id: &str,
        images: ImageCache,
        net: Arc<Network>,
    ) -> Result<Vms> {
        let dir = settings.data_dir.join("vms");
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
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
            images,
            net,
            jailer: crate::jail::Jailer::new(settings.jail.clone()),
            settings,
        })
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Vm>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: &str) -> Result<Arc<Vm>> {
        validate_id("id", id)?;
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

    /// Makes `DATA/vms/<id>/` and enters the VM in the table (the caller validated
    /// `id`), its record durable when this returns.
    pub fn insert(&self, id: &str, rec: VmRecord) -> Result<Arc<Vm>> {
        let vm = self.insert_soon(id, rec)?;
        // Outside the table's lock: other VMs' requests do not wait for this fsync.
        if let Err(e) = vm.sync_record() {
            let _ = self.remove(id);
            return Err(e);
        }
        Ok(vm)
    }

    /// [`insert`](Self::insert) with the record written but not yet durable: the
    /// caller makes it durable ([`Vm::sync_record`]) before it reports the VM, without
    /// holding the table's or the admission lock meanwhile.
    pub fn insert_soon(&self, id: &str, rec: VmRecord) -> Result<Arc<Vm>> {
        let dir = self.dir.join(id);
        let mut t = self.table();
        if t.contains_key(id) || dir.exists() {
            return Err(Error::Conflict(format!(
                "a VM '{id}' already exists on this host"
            )));
        }
        std::fs::create_dir_all(dir.join("disks")).ctx(|| format!("creating {}", dir.display()))?;
        let vm = Arc::new(Vm::new(id.to_string(), dir, rec));
        vm.persist_soon()?;
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

    /// Capacity admission allows.
    pub fn capacity(&self) -> Resources {
        self.settings.policy.capacity(self.settings.physical)
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

    /// Admits `want` beside what every VM holds. The caller holds `admission`.
    pub fn admit(&self, want: Resources) -> Result<()> {
        let (allocated, _) = self.allocated();
        admission::admit(self.capacity(), allocated, want).map_err(Error::NoCapacity)
    }

    /// Every MAC used by a VM on this host.
    pub fn macs_in_use(&self) -> HashSet<[u8; 6]> {
        let mut used = HashSet::new();
        for vm in self.all() {
            for n in &vm.lock().rec.nics {
                if let Ok(m) = parse_mac("mac", &n.mac) {
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

    /// Reads every `vm.json` under the VMs directory; an unreadable one becomes a
    /// record in state `unknown` whose `exit.reason` says why (the file is left as it
    /// is, for a person to look at).
    pub fn load_records(&self) -> Vec<(String, VmRecord)> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if validate_id("id", &id).is_err() {
                continue;
            }
            let p = e.path().join("vm.json");
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<VmRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(rec) => out.push((id, rec)),
                Err(e) => {
                    tracing::error!(vm = id, "{}: {e}", p.display());
                    out.push((id.clone(), unreadable_record(&id, &p, &e)));
                }
            }
        }
        out
    }
}

/// What hostd reports of a VM whose record it cannot read.
fn unreadable_record(id: &str, path: &std::path::Path, why: &str) -> VmRecord {
    let spec = nova_hostd_api::VmSpec {
        id: Some(id.to_string()),
        name: id.to_string(),
        vcpus: 1,
        mem_mib: 0,
        kernel: String::new(),
        initrd: None,
        cmdline: None,
        disks: Vec::new(),
        nics: Vec::new(),
        restart: Default::default(),
        start: false,
        cloud_init: None,
    };
    VmRecord {
        spec,
        state: nova_hostd_api::VmState::Unknown,
        disks: Vec::new(),
        nics: Vec::new(),
        restarts: 0,
        exit: Some(nova_hostd_api::ExitInfo {
            code: None,
            signal: None,
            reason: format!("{} is unreadable: {why}", path.display()),
            console_tail: Vec::new(),
            log_tail: Vec::new(),
            at_ms: crate::vms::record::now_ms(),
        }),
        migration: None,
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A table on a fresh directory, with a host of 2 cores and 1 GiB.
    pub fn vms(tag: &str) -> (Arc<Vms>, PathBuf) {
        let dir = std::env::temp_dir().join(format!("hostd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let images = ImageCache::new(dir.join("images")).unwrap();
        let net = Arc::new(Network::new("nvtestbr".into(), None, None));
        let settings = Settings {
            data_dir: dir.clone(),
            vmm_bin: "/nonexistent/nova-vmm".into(),
            reflink: false,
            insecure_migration: false,
            policy: Policy {
                mem_reserve_mib: 0,
                ..Policy::default()
            },
            physical: Physical {
                cores: 2,
                mem_mib: 1024,
                disk_mib: 1 << 20,
            },
            jail: crate::jail::JailSettings {
                enabled: false,
                ..Default::default()
            },
        };
        (
            Arc::new(Vms::new(settings, "test-host", images, net).unwrap()),
            dir,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vms::record::test_record;
    use nova_hostd_api::VmState;

    #[test]
    fn admission_counts_what_active_vms_hold() {
        let (vms, dir) = testing::vms("admit");
        let mut rec = test_record(VmState::Running);
        rec.spec.mem_mib = 1000;
        vms.insert("a", rec).unwrap();
        let e = vms
            .admit(Resources {
                vcpus: 1,
                mem_mib: 64,
                disk_mib: 0,
            })
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("memory: 64 MiB requested, 24 MiB free"),
            "{e}"
        );
        vms.get("a").unwrap().set_state(VmState::Stopped);
        vms.admit(Resources {
            vcpus: 1,
            mem_mib: 64,
            disk_mib: 0,
        })
        .unwrap();
        assert!(matches!(
            vms.insert("a", test_record(VmState::Created)),
            Err(Error::Conflict(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
