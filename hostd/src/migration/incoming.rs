//! The destination side of a migration. `POST /v1/migrations/incoming` makes the VM
//! here (admission, disks cloned from the same base images, taps with the VM's MACs)
//! and starts a VMM that listens for it; the VM is `migrating_in` until the source
//! says complete, or until its own VMM serves its API (nova-vmm opens it only once
//! the VM runs here, after the switch: then this host owns it, whatever the source
//! hostd says). Then it is `running` and its MACs are announced. If its VMM exits
//! before that, or the source says abort, everything made here is removed.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nova_hostd_api::{
    parse_mac, validate_id, FieldError, IncomingOutcome, IncomingReady, IncomingRequest,
    MigrationDirection, MigrationState, Resources, VmState,
};

use crate::error::{Error, Result};
use crate::migration::state::{new_status, Migrations};
use crate::vms::create::{nic, plan_disks};
use crate::vms::reattach::Adopted;
use crate::vms::record::{now_ms, Vm, VmRecord};
use crate::vms::spawn::Launch;
use crate::vms::stop;
use crate::vms::tail::tail_lines;

/// Whether something listens on TCP `port` in this network namespace (/proc/net/tcp*),
/// without connecting to it (a connection would be taken for the migration stream).
fn listening(port: u16) -> bool {
    let needle = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && cols[1].ends_with(&needle) && cols[3] == "0A"
            })
        })
    })
}

/// Waits until the receiving VMM listens on `port` (or exits, or 10 s pass).
async fn wait_listening(vm: &Vm, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if listening(port) {
            return Ok(());
        }
        if vm.lock().rt.pid.is_none() {
            let log = tail_lines(&vm.vmm_log(), 3).0.join(" | ");
            return Err(Error::Vmm(format!("the receiving nova-vmm exited: {log}")));
        }
        if Instant::now() > deadline {
            return Err(Error::Vmm(format!(
                "the receiving nova-vmm does not listen on port {port}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A TCP port on `ip` nothing uses right now, for the receiving VMM.
fn unused_port(ip: IpAddr) -> Result<u16> {
    let l = std::net::TcpListener::bind((ip, 0))
        .map_err(|e| Error::io(format!("binding {ip}:0"), e))?;
    Ok(l.local_addr()
        .map_err(|e| Error::io("local_addr", e))?
        .port())
}

/// `tcp:IP:PORT` as the VMM's `--incoming` takes it.
pub fn incoming_address(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(ip) => format!("tcp:[{ip}]:{port}"),
        IpAddr::V4(ip) => format!("tcp:{ip}:{port}"),
    }
}

/// MiB of free space the VM's disks take here: what the source's copied disks
/// have allocated, and the data of the images the others are cloned from.
fn disks_need_mib(req: &IncomingRequest, bases: &[Option<nova_hostd_api::ImageInfo>]) -> u64 {
    let copied: u64 = req
        .disks
        .iter()
        .filter(|d| d.copied)
        .map(|d| d.allocated_bytes.min(d.size_bytes))
        .sum();
    let cloned: u64 = bases.iter().flatten().map(|b| b.allocated_bytes).sum();
    (copied + cloned).div_ceil(1 << 20)
}

impl Migrations {
    /// Destination: get ready to receive a VM.
    pub async fn prepare_incoming(self: &Arc<Self>, req: IncomingRequest) -> Result<IncomingReady> {
        validate_id("migration_id", &req.migration_id)?;
        req.spec.validate().map_err(|e| e.under("spec"))?;
        let id = req
            .spec
            .id
            .clone()
            .ok_or_else(|| FieldError::new("spec.id", "required"))?;
        if req.macs.len() != req.spec.nics.len() {
            return Err(FieldError::new("macs", "one MAC per NIC").into());
        }
        req.validate_disks()?;
        // A shared disk must be the very file the source uses: under an allowed root
        // here too, and of the size the source reported.
        for (n, d) in req.spec.disks.iter().enumerate() {
            let Some(p) = &d.shared_path else { continue };
            let field = format!("spec.disks[{n}].shared_path");
            let (_, size) = self.vms.images.shared_disk(&field, p)?;
            if let Some(src) = req.disks.get(n).filter(|s| s.size_bytes != size) {
                return Err(FieldError::new(
                    field,
                    format!(
                        "{p} is {size} bytes here and {} bytes on the source: not the same \
                         shared file",
                        src.size_bytes
                    ),
                )
                .into());
            }
        }
        // A disk the VMM copies starts as an empty sparse file of the source's exact
        // size; the others are clones of their images, as on the source.
        let copied = |n: usize| req.disks.get(n).filter(|d| d.copied);
        let vms = &self.vms;
        // The same source trying again (a drain's warm retry after a live attempt):
        // the earlier attempt's leftovers here are dead, whether or not its abort
        // arrived yet. A source migrates a VM once at a time.
        if let Ok(old) = vms.get(&id) {
            let stale = old.state() == VmState::MigratingIn
                && old
                    .lock()
                    .rec
                    .migration
                    .as_ref()
                    .is_some_and(|m| m.peer == req.source_host && m.id != req.migration_id);
            if stale {
                tracing::info!(
                    vm = id,
                    "dropping an earlier, failed attempt to migrate it in"
                );
                self.abort_vm(&old, "superseded by a new migration from the same source")
                    .await?;
            }
        }
        let mut needed = vec![req.spec.kernel.clone()];
        needed.extend(req.spec.initrd.clone());
        needed.extend(
            req.spec
                .disks
                .iter()
                .enumerate()
                .filter(|(n, _)| copied(*n).is_none())
                .filter_map(|(_, d)| d.image.clone()),
        );
        for img in &needed {
            vms.images.get(img).map_err(|_| {
                Error::Conflict(format!("image {img} is not on this host: upload it first"))
            })?;
        }
        let (vm, bases) = {
            let _adm = vms.admission.lock().await;
            if vms.contains(&id) {
                return Err(Error::Conflict(format!(
                    "a VM '{id}' already exists on this host"
                )));
            }
            let bases: Vec<_> = req
                .spec
                .disks
                .iter()
                .enumerate()
                .map(|(n, d)| match copied(n) {
                    Some(_) => None,
                    None => d.image.as_deref().and_then(|i| vms.images.get(i).ok()),
                })
                .collect();
            let (mut disks, mut disk_bytes) = plan_disks(&req.spec, &bases);
            for (n, d) in disks.iter_mut().enumerate() {
                if let Some(c) = copied(n) {
                    disk_bytes = disk_bytes - d.size_bytes + c.size_bytes;
                    d.size_bytes = c.size_bytes;
                }
            }
            vms.admit(Resources {
                vcpus: req.spec.vcpus as u64,
                mem_mib: req.spec.mem_mib,
                disk_mib: disk_bytes.div_ceil(1 << 20),
            })?;
            // Real free space for what arrives: the copied disks' data and the clones'.
            let need_mib = disks_need_mib(&req, &bases);
            let free = crate::admission::disk_mib(&vms.settings.data_dir).1;
            if need_mib > free {
                return Err(Error::NoCapacity(format!(
                    "disk: the VM's disks need {need_mib} MiB of free space, {free} MiB free"
                )));
            }
            let mut used = vms.macs_in_use();
            let nics = req
                .macs
                .iter()
                .enumerate()
                .map(|(n, m)| nic(&format!("macs[{n}]"), m, &mut used))
                .collect::<Result<Vec<_>>>()?;
            let rec = VmRecord {
                spec: req.spec.clone(),
                state: VmState::MigratingIn,
                disks,
                nics,
                restarts: 0,
                exit: None,
                migration: None,
            };
            let vm = vms.insert(&id, rec)?;
            let status = new_status(
                &req.migration_id,
                &id,
                MigrationDirection::Incoming,
                req.mode,
                &req.source_host,
            );
            self.begin(&vm, status, VmState::MigratingIn)?;
            (vm, bases)
        };
        let setup = async {
            vms.make_disks_for(&vm, &bases).await?;
            let port = unused_port(self.advertise_ip)?;
            let address = incoming_address(self.advertise_ip, port);
            let _op = vm.op.lock().await;
            // Its own credential (unless --insecure-migration): the receiving VMM
            // reads only connections that prove it.
            let peer = match vms.settings.insecure_migration {
                true => None,
                false => {
                    let run = vm.run_dir();
                    std::fs::create_dir_all(&run)
                        .map_err(|e| Error::io(format!("creating {}", run.display()), e))?;
                    Some(super::credential::issue(&vm.incoming_credential())?)
                }
            };
            vms.launch(&vm, Launch::Incoming(address.clone())).await?;
            wait_listening(&vm, port).await?;
            Ok::<_, Error>((address, peer))
        };
        match setup.await {
            Ok((address, peer)) => {
                self.update(&vm, |m| m.state = MigrationState::Running);
                self.watch_incoming(vm.clone());
                tracing::info!(vm = id, address, "ready for an incoming migration");
                Ok(IncomingReady {
                    migration_id: req.migration_id,
                    address,
                    peer,
                })
            }
            Err(e) => {
                let _ = self.abort_vm(&vm, &e.to_string()).await;
                Err(e)
            }
        }
    }

    /// Acts when the destination VMM dies before the switch, or serves its API (the
    /// VM runs here) while the source hostd is silent.
    fn watch_incoming(self: &Arc<Self>, vm: Arc<Vm>) {
        let m = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if vm.state() != VmState::MigratingIn || !m.vms.contains(&vm.id) {
                    return;
                }
                if vm.lock().rt.pid.is_none() {
                    tracing::warn!(
                        vm = vm.id,
                        "incoming VMM exited before the switch; cleaning up"
                    );
                    let _ = m
                        .abort_vm(&vm, "the receiving VMM exited before the switch")
                        .await;
                    return;
                }
                let answered = match vm.vmm() {
                    Ok(vmm) => vmm.info().await.is_ok(),
                    Err(_) => false,
                };
                if answered {
                    let _ = m.take_over(&vm, None).await;
                    return;
                }
            }
        });
    }

    fn find_incoming(&self, mid: &str) -> Result<Arc<Vm>> {
        validate_id("migration id", mid)?;
        self.vms
            .all()
            .into_iter()
            .find(|vm| {
                vm.lock()
                    .rec
                    .migration
                    .as_ref()
                    .is_some_and(|m| m.id == mid && m.direction == MigrationDirection::Incoming)
            })
            .ok_or_else(|| Error::NotFound(format!("no incoming migration '{mid}'")))
    }

    /// The VM is ours now: running, its MACs announced.
    async fn take_over(&self, vm: &Arc<Vm>, downtime_ms: Option<f64>) -> Result<()> {
        {
            let mut g = vm.lock();
            if g.rec.state != VmState::MigratingIn {
                return Ok(());
            }
            g.rec.state = VmState::Running;
        }
        // Its listener is closed: the credential opens nothing any more.
        let _ = std::fs::remove_file(vm.incoming_credential());
        self.finish(vm, |m| {
            m.state = MigrationState::Completed;
            m.downtime_ms = downtime_ms.or(m.downtime_ms);
            m.total_ms = Some(now_ms().saturating_sub(m.started_at_ms) as f64);
        });
        let nics = vm.lock().rec.nics.clone();
        for n in nics {
            if let Ok(mac) = parse_mac("mac", &n.mac) {
                if let Err(e) = self.vms.net.announce(&n.tap, mac).await {
                    tracing::warn!(vm = vm.id, "announcing {}: {e}", n.mac);
                }
            }
        }
        tracing::info!(vm = vm.id, "migrated in; running here");
        Ok(())
    }

    /// Source says: completed. Answers at once; the MAC announcement runs behind it.
    pub async fn complete_incoming(self: &Arc<Self>, mid: &str, o: IncomingOutcome) -> Result<()> {
        let vm = self.find_incoming(mid)?;
        if let Some(d) = o.downtime_ms {
            self.update(&vm, |m| m.downtime_ms = Some(d));
        }
        let m = self.clone();
        tokio::spawn(async move {
            if let Err(e) = m.take_over(&vm, o.downtime_ms).await {
                tracing::error!(vm = vm.id, "taking over a migrated VM: {e}");
            }
        });
        Ok(())
    }

    /// Kills the receiving VMM and removes everything made for the VM here.
    async fn abort_vm(&self, vm: &Arc<Vm>, why: &str) -> Result<()> {
        stop::kill(vm, Duration::from_secs(2)).await;
        self.finish(vm, |m| {
            m.state = MigrationState::Failed;
            m.error = Some(why.to_string());
        });
        self.vms.release(vm).await
    }

    /// Source says: abort (or failed).
    pub async fn abort_incoming(&self, mid: &str, o: IncomingOutcome) -> Result<()> {
        let vm = self.find_incoming(mid)?;
        if vm.state() != VmState::MigratingIn {
            return Err(Error::Conflict(format!(
                "migration '{mid}' already completed here"
            )));
        }
        self.abort_vm(&vm, o.error.as_deref().unwrap_or("aborted by the source"))
            .await
    }

    /// After a hostd restart: a receiving VMM that serves its API switched while hostd
    /// was away (the VM is ours); any other arriving VM is given up (the source keeps
    /// it).
    pub async fn recover_incoming(&self, a: Adopted) {
        if a.pid.is_some() && a.run.is_some() {
            let _ = self.take_over(&a.vm, None).await;
            return;
        }
        tracing::warn!(vm = a.vm.id, "dropping an unfinished incoming migration");
        let _ = self
            .abort_vm(&a.vm, "hostd restarted before the switch")
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_listening_port_without_connecting() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listening(port));
        drop(l);
        assert!(!listening(port));
    }

    #[test]
    fn incoming_addresses_bracket_ipv6() {
        assert_eq!(
            incoming_address([198, 51, 100, 2].into(), 7),
            "tcp:198.51.100.2:7"
        );
        assert_eq!(
            incoming_address("2001:db8::1".parse().unwrap(), 7),
            "tcp:[2001:db8::1]:7"
        );
    }
}
