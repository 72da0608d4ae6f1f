//! The one owner of migration state on this host ([`Migrations`]): a migration's
//! status lives in its VM's record (`vm.json`, so it survives a hostd restart) while
//! the VM is here, and in the log of finished migrations once it is over (also for
//! VMs that left); the source's `migration-target.json` lets a restarted hostd finish
//! what it started; the counters and downtimes `/metrics` shows are kept here too.
//! Nothing else writes any of these.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use nova_hostd_api::{
    validate_id, HostdClient, MigrationDirection, MigrationList, MigrationMode, MigrationState,
    MigrationStatus, MigrationTarget, VmState,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::MigrationMetrics;
use crate::vms::record::{now_ms, Vm};
use crate::vms::table::Vms;

/// Finished migrations kept for `GET /v1/migrations`.
const LOG_LEN: usize = 1000;

/// What the source keeps on disk while a migration runs (`migration-target.json`),
/// so a restarted hostd can finish it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub target: MigrationTarget,
    pub migration_id: String,
}

/// Migrations on this host, both ways, and what they need from it.
pub struct Migrations {
    pub vms: Arc<Vms>,
    pub host_id: String,
    /// Where the receiving VMMs listen (other hosts reach this one there).
    pub advertise_ip: IpAddr,
    /// One connection pool for every peer hostd.
    http: nova_http::Client,
    log: Mutex<BTreeMap<String, MigrationStatus>>,
    pub metrics: MigrationMetrics,
}

/// A migration that just started.
pub fn new_status(
    id: &str,
    vm_id: &str,
    direction: MigrationDirection,
    mode: MigrationMode,
    peer: &str,
) -> MigrationStatus {
    MigrationStatus {
        id: id.to_string(),
        vm_id: vm_id.to_string(),
        direction,
        state: MigrationState::Preparing,
        mode,
        kind: Default::default(),
        peer: peer.to_string(),
        started_at_ms: now_ms(),
        finished_at_ms: None,
        downtime_ms: None,
        total_ms: None,
        bytes_sent: None,
        rounds: None,
        hostd_switch_ms: None,
        error: None,
        vmm: None,
    }
}

impl Migrations {
    pub fn new(vms: Arc<Vms>, host_id: String, advertise_ip: IpAddr) -> Result<Migrations> {
        let http = nova_http::Client::new("http://localhost", None, &Default::default())
            .map_err(Error::peer)?;
        Ok(Migrations {
            vms,
            host_id,
            advertise_ip,
            http,
            log: Mutex::new(BTreeMap::new()),
            metrics: MigrationMetrics::default(),
        })
    }

    /// The client of the other hostd of a migration.
    pub fn peer(&self, t: &MigrationTarget) -> Result<HostdClient> {
        HostdClient::with(&self.http, &t.url, &t.token).map_err(Error::peer)
    }

    /// Starts tracking `status` on `vm`, which enters `state` (migrating in or out).
    pub fn begin(&self, vm: &Vm, status: MigrationStatus, state: VmState) -> Result<()> {
        {
            let mut g = vm.lock();
            g.rec.migration = Some(status);
            g.rec.state = state;
        }
        vm.persist()
    }

    /// Changes the VM's current migration's status.
    pub fn update(&self, vm: &Vm, f: impl FnOnce(&mut MigrationStatus)) {
        {
            let mut g = vm.lock();
            if let Some(m) = g.rec.migration.as_mut() {
                f(m);
            }
        }
        let _ = vm.persist();
    }

    /// Ends the VM's current migration: `f` sets how (state, error, figures); the
    /// status goes into the log and the counters.
    pub fn finish(&self, vm: &Vm, f: impl FnOnce(&mut MigrationStatus)) {
        let done = {
            let mut g = vm.lock();
            g.rec.migration.as_mut().map(|m| {
                f(m);
                m.finished_at_ms.get_or_insert_with(now_ms);
                m.clone()
            })
        };
        let _ = vm.persist();
        let Some(m) = done else { return };
        self.metrics.finished(&m);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.insert(m.id.clone(), m);
        while log.len() > LOG_LEN {
            let Some(k) = log.keys().next().cloned() else {
                break;
            };
            log.remove(&k);
        }
    }

    /// The VM's current or last migration here (also of a VM that left).
    pub fn of_vm(&self, id: &str) -> Result<MigrationStatus> {
        validate_id("id", id)?;
        if let Ok(vm) = self.vms.get(id) {
            if let Some(m) = vm.lock().rec.migration.clone() {
                return Ok(m);
            }
        }
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.values()
            .filter(|m| m.vm_id == id)
            .max_by_key(|m| m.started_at_ms)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no migration of VM '{id}' on this host")))
    }

    /// Migrations under way and finished, newest first.
    pub fn list(&self) -> MigrationList {
        let mut all: Vec<MigrationStatus> = self
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for vm in self.vms.all() {
            if let Some(m) = vm.lock().rec.migration.clone() {
                if let Some(known) = all.iter_mut().find(|x| x.id == m.id) {
                    *known = m;
                } else {
                    all.push(m);
                }
            }
        }
        all.sort_by_key(|m| std::cmp::Reverse(m.started_at_ms));
        MigrationList { migrations: all }
    }

    /// Keeps where an outgoing migration goes, for a hostd restarted in the middle.
    pub fn save_pending(&self, vm: &Vm, p: &Pending) {
        let _ = std::fs::write(
            vm.dir.join("migration-target.json"),
            serde_json::to_vec(p).unwrap_or_default(),
        );
    }

    /// The outgoing migration a previous hostd left, if any.
    pub fn pending(&self, vm: &Vm) -> Option<Pending> {
        std::fs::read(vm.dir.join("migration-target.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn clear_pending(&self, vm: &Vm) {
        let _ = std::fs::remove_file(vm.dir.join("migration-target.json"));
    }

    /// Whether the source VMM last reported the VM's outgoing migration completed.
    pub fn last_seen_completed(&self, vm: &Vm) -> bool {
        let g = vm.lock();
        g.rec
            .migration
            .as_ref()
            .and_then(|m| m.vmm.as_ref())
            .is_some_and(|s| s.state == nova_vmm_api::MigrationState::Completed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vms::record::test_record;
    use crate::vms::table::testing;

    #[test]
    fn a_finished_migration_is_logged_counted_and_outlives_its_vm() {
        let (vms, dir) = testing::vms("mig-state");
        let m = Migrations::new(vms.clone(), "h".into(), [127, 0, 0, 1].into()).unwrap();
        let vm = vms.insert("a", test_record(VmState::Running)).unwrap();
        let s = new_status(
            "mig-1",
            "a",
            MigrationDirection::Outgoing,
            MigrationMode::Hybrid,
            "http://b",
        );
        m.begin(&vm, s, VmState::MigratingOut).unwrap();
        assert_eq!(vm.state(), VmState::MigratingOut);
        m.update(&vm, |s| s.state = MigrationState::Running);
        assert_eq!(m.of_vm("a").unwrap().state, MigrationState::Running);
        m.finish(&vm, |s| {
            s.state = MigrationState::Completed;
            s.downtime_ms = Some(0.5);
        });
        vms.remove("a").unwrap();
        let last = m.of_vm("a").unwrap();
        assert_eq!(last.state, MigrationState::Completed);
        assert!(last.finished_at_ms.is_some());
        assert_eq!(m.list().migrations.len(), 1);
        assert!(matches!(m.of_vm("b"), Err(Error::NotFound(_))));
        assert!(matches!(m.of_vm("../x"), Err(Error::Invalid(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
