//! Host-to-host live migration, the hostd side. The VMMs move the VM; hostd makes sure
//! the destination is ready and that exactly one hostd owns the VM at the end.
//!
//! Source (`POST /v1/vms/{id}/migrate`): make sure the destination has the VM's images
//! (upload the missing ones), ask it to prepare (`POST /v1/migrations/incoming`:
//! admission, disks, taps, `nova-vmm run --incoming tcp:ADDR`), tell the local VMM
//! `PUT /v1/migration`, follow `GET /v1/migration`. On `completed`: tell the
//! destination (`.../complete`), then let go of the VM (taps, directory). On any
//! failure: tell the destination to abort (`.../abort`, which kills its VMM and
//! removes what it made) and keep the VM here, running.
//!
//! Destination: the VM is `migrating_in` until the source says complete (or its own
//! VMM reports the migration completed, when the source hostd is gone); then it is
//! `running` and its MACs are announced. If its VMM exits before that, it cleans up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::client;
use crate::api::types::{
    IncomingOutcome, IncomingReady, IncomingRequest, MigrateRequest, MigrationDirection,
    MigrationState, MigrationStatus, MigrationTarget, NicInfo, Resources, VmState,
};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::vms::lifecycle::{vmm_call, vmm_ok, Launch};
use crate::vms::{now_ms, Vm, VmRecord};

const PEER_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// What the source keeps on disk while a migration runs (`migration-target.json`),
/// so a restarted hostd can finish it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    target: MigrationTarget,
    migration_id: String,
}

async fn peer(
    t: &MigrationTarget,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<client::Response> {
    let r = client::tcp(&t.url, Some(&t.token), method, path, body, PEER_TIMEOUT)
        .await
        .map_err(|e| Error::Peer(format!("{} {path}: {e}", t.url)))?;
    if !r.ok() {
        return Err(Error::Peer(format!(
            "{method} {path}: {} {}",
            r.status,
            r.error_message()
        )));
    }
    Ok(r)
}

fn set_status(vm: &Vm, f: impl FnOnce(&mut MigrationStatus)) {
    {
        let mut g = vm.lock();
        if let Some(m) = g.rec.migration.as_mut() {
            f(m);
        }
    }
    let _ = vm.persist();
}

fn field_u64(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(|x| x.as_u64())
}

/// Starts an outgoing migration; answers at once with its status (then poll
/// `GET /v1/vms/{id}/migration`).
pub async fn migrate_out(
    host: Arc<Host>,
    id: &str,
    req: MigrateRequest,
) -> Result<MigrationStatus> {
    req.validate()?;
    let vm = host.vms.get(id)?;
    let _op = vm.op.lock().await;
    let state = vm.state();
    if !matches!(state, VmState::Running | VmState::Paused) {
        return Err(Error::Conflict(
            format!("VM '{id}' is {state:?}; only a running VM migrates").to_lowercase(),
        ));
    }
    if let Some(n) = vm.lock().rec.disks.iter().position(|d| !d.read_only) {
        return Err(Error::Conflict(format!(
            "disks[{n}] is writable: its contents would not follow the VM (the VMM moves memory and device \
             state, not disk files); migrate VMs with read-only disks or shared storage"
        )));
    }
    let mid = format!("mig-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    let status = MigrationStatus {
        id: mid.clone(),
        vm_id: id.to_string(),
        direction: MigrationDirection::Outgoing,
        state: MigrationState::Preparing,
        mode: req.mode,
        peer: req.to.url.clone(),
        started_at_ms: now_ms(),
        finished_at_ms: None,
        downtime_ms: None,
        total_ms: None,
        bytes_sent: None,
        rounds: None,
        hostd_switch_ms: None,
        error: None,
        vmm: None,
    };
    {
        let mut g = vm.lock();
        g.rec.migration = Some(status.clone());
        g.rec.state = VmState::MigratingOut;
    }
    vm.persist()?;
    let pending = Pending {
        target: req.to.clone(),
        migration_id: mid,
    };
    let _ = std::fs::write(
        vm.dir.join("migration-target.json"),
        serde_json::to_vec(&pending).unwrap_or_default(),
    );
    let (h, v) = (host.clone(), vm.clone());
    tokio::spawn(async move {
        let _op = v.op.lock().await;
        let result = run_outgoing(&h, &v, &req, &pending).await;
        finish_outgoing(&h, &v, &pending, result).await;
    });
    Ok(status)
}

async fn run_outgoing(
    host: &Arc<Host>,
    vm: &Arc<Vm>,
    req: &MigrateRequest,
    p: &Pending,
) -> Result<Value> {
    let rec = vm.lock().rec.clone();
    // 1. The destination must hold the same images.
    let mut images = vec![rec.spec.kernel.clone()];
    images.extend(rec.spec.initrd.clone());
    images.extend(rec.disks.iter().filter_map(|d| d.base.clone()));
    for img in images {
        let have = client::tcp(
            &p.target.url,
            Some(&p.target.token),
            "GET",
            &format!("/v1/images/{img}"),
            None,
            PEER_TIMEOUT,
        )
        .await
        .map_err(|e| Error::Peer(format!("{}: {e}", p.target.url)))?;
        if have.status == 404 {
            let path = host
                .images
                .path_of(&img)
                .ok_or_else(|| Error::NotFound(img.clone()))?;
            tracing::info!(
                vm = vm.id,
                image = img,
                "uploading image to the destination"
            );
            let r = client::tcp_upload(
                &p.target.url,
                &p.target.token,
                "/v1/images",
                &path,
                Duration::from_secs(600),
            )
            .await
            .map_err(|e| Error::Peer(format!("uploading {img}: {e}")))?;
            if !r.ok() {
                return Err(Error::Peer(format!(
                    "uploading {img}: {} {}",
                    r.status,
                    r.error_message()
                )));
            }
        } else if !have.ok() {
            return Err(Error::Peer(format!(
                "GET /v1/images/{img}: {} {}",
                have.status,
                have.error_message()
            )));
        }
    }
    // 2. The destination prepares.
    let mut spec = rec.spec.clone();
    spec.start = false;
    for (d, info) in spec.disks.iter_mut().zip(&rec.disks) {
        d.image = info.base.clone();
        d.size_mib = Some(info.size_bytes.div_ceil(1 << 20));
    }
    let inc = IncomingRequest {
        migration_id: p.migration_id.clone(),
        spec,
        macs: rec.nics.iter().map(|n| n.mac.clone()).collect(),
        mode: req.mode,
        source_host: host.host_id.clone(),
    };
    let body = serde_json::to_string(&inc).unwrap_or_default();
    let ready: IncomingReady = serde_json::from_str(
        &peer(&p.target, "POST", "/v1/migrations/incoming", Some(&body))
            .await?
            .body,
    )
    .map_err(|e| Error::Peer(format!("bad answer to prepare: {e}")))?;
    tracing::info!(vm = vm.id, to = ready.address, "destination ready");
    // 3. The VMMs.
    let start = json!({
        "to": ready.address,
        "mode": req.mode,
        "downtime_ms": req.downtime_ms,
        "bandwidth_mbit": req.bandwidth_mbit,
        "compress": req.compress,
        "connections": req.connections,
    })
    .to_string();
    vmm_ok(vm, "PUT", "/v1/migration", Some(&start)).await?;
    set_status(vm, |m| m.state = MigrationState::Running);
    follow(vm).await
}

/// Follows the source VMM's `GET /v1/migration` to its end; Ok(result) when completed.
async fn follow(vm: &Arc<Vm>) -> Result<Value> {
    let mut failures = 0;
    loop {
        tokio::time::sleep(POLL).await;
        let r = match vmm_call(vm, "GET", "/v1/migration", None).await {
            Ok(r) if r.ok() => r,
            other => {
                // The VMM exits 0 right after a completed migration: the last answer
                // we saw (or the exit) decides.
                if vm.lock().rt.pid.is_none() {
                    let exit0 = vm
                        .lock()
                        .rec
                        .exit
                        .as_ref()
                        .is_some_and(|e| e.code == Some(0) || e.code.is_none());
                    let last = vm.lock().rec.migration.as_ref().and_then(|m| m.vmm.clone());
                    let completed = last
                        .as_ref()
                        .and_then(|v| v.get("state"))
                        .and_then(|s| s.as_str())
                        == Some("completed");
                    if completed || exit0 {
                        return Ok(last.unwrap_or_default());
                    }
                    return Err(Error::Vmm("the VMM exited during the migration".into()));
                }
                failures += 1;
                if failures > 100 {
                    return Err(Error::Vmm(format!(
                        "GET /v1/migration keeps failing: {other:?}"
                    )));
                }
                continue;
            }
        };
        failures = 0;
        let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
        let state = v
            .get("state")
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .to_string();
        set_status(vm, |m| {
            m.bytes_sent = field_u64(&v, "bytes_sent");
            m.rounds = field_u64(&v, "rounds");
            m.vmm = Some(v.clone());
        });
        match state.as_str() {
            "completed" => return Ok(v),
            "failed" | "cancelled" => {
                let err = v
                    .get("error")
                    .and_then(|e| e.as_str())
                    .unwrap_or("migration failed")
                    .to_string();
                return Err(Error::Vmm(err));
            }
            _ => {}
        }
    }
}

async fn finish_outgoing(host: &Arc<Host>, vm: &Arc<Vm>, p: &Pending, result: Result<Value>) {
    let _ = std::fs::remove_file(vm.dir.join("migration-target.json"));
    match result {
        Ok(v) => {
            let t0 = Instant::now();
            let downtime = field_u64(&v, "downtime_ms");
            let outcome = serde_json::to_string(&IncomingOutcome {
                downtime_ms: downtime,
                error: None,
            })
            .unwrap_or_default();
            let path = format!("/v1/migrations/incoming/{}/complete", p.migration_id);
            if let Err(e) = peer(&p.target, "POST", &path, Some(&outcome)).await {
                // The destination VMM runs the VM; its hostd takes it when it sees that.
                tracing::warn!(
                    vm = vm.id,
                    "telling the destination the migration completed: {e}"
                );
            }
            let switch_ms = t0.elapsed().as_secs_f64() * 1000.0;
            // The source VMM exits by itself after a completed migration.
            vm.lock().rt.stop_requested = true;
            let pid = vm.lock().rt.pid;
            for _ in 0..100 {
                if vm.lock().rt.pid.is_none() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Some(pid) = pid.filter(|_| vm.lock().rt.pid.is_some()) {
                crate::vms::process::signal(pid, libc::SIGKILL);
            }
            let mut status = vm.lock().rec.migration.clone();
            if let Some(m) = status.as_mut() {
                m.state = MigrationState::Completed;
                m.finished_at_ms = Some(now_ms());
                m.total_ms =
                    field_u64(&v, "total_ms").or(Some(now_ms().saturating_sub(m.started_at_ms)));
                m.downtime_ms = downtime;
                m.bytes_sent = field_u64(&v, "bytes_sent").or(m.bytes_sent);
                m.rounds = field_u64(&v, "rounds").or(m.rounds);
                m.hostd_switch_ms = Some(switch_ms);
                host.remember(m.clone());
            }
            {
                let mut c = host.migrations.lock().unwrap_or_else(|e| e.into_inner());
                c.outgoing_completed += 1;
                if let Some(d) = downtime {
                    c.downtime_ms_sum += d;
                    c.downtime_count += 1;
                }
            }
            tracing::info!(vm = vm.id, ?downtime, switch_ms, "migrated out");
            if let Err(e) = host.release(vm).await {
                tracing::error!(vm = vm.id, "releasing a migrated VM: {e}");
            }
        }
        Err(e) => {
            tracing::warn!(vm = vm.id, "migration failed: {e}; the VM stays here");
            let path = format!("/v1/migrations/incoming/{}/abort", p.migration_id);
            let body = serde_json::to_string(&IncomingOutcome {
                downtime_ms: None,
                error: Some(e.to_string()),
            })
            .unwrap_or_default();
            let _ = peer(&p.target, "POST", &path, Some(&body)).await;
            host.migrations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .outgoing_failed += 1;
            let alive = vm.lock().rt.pid.is_some();
            {
                let mut g = vm.lock();
                g.rec.state = if alive {
                    VmState::Running
                } else {
                    VmState::Crashed
                };
                if let Some(m) = g.rec.migration.as_mut() {
                    m.state = MigrationState::Failed;
                    m.error = Some(e.to_string());
                    m.finished_at_ms = Some(now_ms());
                }
            }
            if alive {
                // A failed pre-copy leaves the source running; make sure it is not
                // left paused by a failure after the VMM paused it.
                if let Ok(r) = vmm_call(vm, "GET", "/v1/vm", None).await {
                    if r.body.contains("\"paused\"") {
                        let _ = vmm_call(vm, "PUT", "/v1/vm/resume", None).await;
                    }
                }
            }
            let _ = vm.persist();
        }
    }
}

/// After a hostd restart with a migration out under way: follow it to its end.
pub fn resume_outgoing(host: Arc<Host>, vm: Arc<Vm>) {
    let Some(p) = std::fs::read(vm.dir.join("migration-target.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Pending>(&b).ok())
    else {
        vm.set_state(VmState::Running);
        return;
    };
    tokio::spawn(async move {
        let _op = vm.op.lock().await;
        let result = follow(&vm).await;
        finish_outgoing(&host, &vm, &p, result).await;
    });
}

/// Cancels an outgoing migration (the VMM's `DELETE /v1/migration`).
pub async fn cancel(host: &Arc<Host>, id: &str) -> Result<()> {
    let vm = host.vms.get(id)?;
    if vm.state() != VmState::MigratingOut {
        return Err(Error::Conflict(format!("VM '{id}' is not migrating")));
    }
    vmm_ok(&vm, "DELETE", "/v1/migration", None).await?;
    Ok(())
}

/// A free TCP port on `ip` for the incoming VMM to listen on.
fn free_port(ip: std::net::IpAddr) -> Result<u16> {
    let l = std::net::TcpListener::bind((ip, 0))
        .map_err(|e| Error::io(format!("binding {ip}:0"), e))?;
    Ok(l.local_addr()
        .map_err(|e| Error::io("local_addr", e))?
        .port())
}

/// Destination: get ready to receive a VM.
pub async fn prepare_incoming(host: Arc<Host>, req: IncomingRequest) -> Result<IncomingReady> {
    crate::api::types::validate_id("migration_id", &req.migration_id)?;
    req.spec
        .validate()
        .map_err(|e| crate::api::types::FieldError::new(format!("spec.{}", e.field), e.problem))?;
    let id = req
        .spec
        .id
        .clone()
        .ok_or_else(|| crate::api::types::FieldError::new("spec.id", "required"))?;
    if req.macs.len() != req.spec.nics.len() {
        return Err(crate::api::types::FieldError::new("macs", "one MAC per NIC").into());
    }
    let mut needed = vec![req.spec.kernel.clone()];
    needed.extend(req.spec.initrd.clone());
    needed.extend(req.spec.disks.iter().filter_map(|d| d.image.clone()));
    for img in &needed {
        host.images.get(img).map_err(|_| {
            Error::Conflict(format!("image {img} is not on this host: upload it first"))
        })?;
    }
    let vm = {
        let _adm = host.vms.admission.lock().await;
        if host.vms.contains(&id) {
            return Err(Error::Conflict(format!(
                "a VM '{id}' already exists on this host"
            )));
        }
        let bases: Vec<_> = req
            .spec
            .disks
            .iter()
            .map(|d| d.image.as_deref().and_then(|i| host.images.get(i).ok()))
            .collect();
        let mut disks = Vec::new();
        let mut disk_bytes = 0;
        for (n, (d, b)) in req.spec.disks.iter().zip(&bases).enumerate() {
            let size = d
                .size_mib
                .map(|m| m << 20)
                .unwrap_or(0)
                .max(b.as_ref().map(|b| b.size_bytes).unwrap_or(0));
            disk_bytes += size;
            disks.push(crate::api::types::DiskInfo {
                path: format!("disks/disk{n}.raw"),
                base: b.as_ref().map(|b| b.id.clone()),
                read_only: d.read_only,
                size_bytes: size,
                method: crate::api::types::CloneMethod::SparseCopy,
            });
        }
        let want = Resources {
            vcpus: req.spec.vcpus as u64,
            mem_mib: req.spec.mem_mib,
            disk_mib: disk_bytes.div_ceil(1 << 20),
        };
        let (allocated, _) = host.vms.allocated();
        crate::admission::admit(host.capacity(), allocated, want).map_err(Error::NoCapacity)?;
        let used = host.vms.macs_in_use();
        let mut nics = Vec::new();
        for (n, m) in req.macs.iter().enumerate() {
            let mac = crate::api::types::parse_mac(&format!("macs[{n}]"), m)?;
            if used.contains(&mac) {
                return Err(Error::Conflict(format!(
                    "macs[{n}]: {m} is in use on this host"
                )));
            }
            nics.push(NicInfo {
                mac: m.clone(),
                tap: crate::net::tap_name(&id, n),
            });
        }
        let status = MigrationStatus {
            id: req.migration_id.clone(),
            vm_id: id.clone(),
            direction: MigrationDirection::Incoming,
            state: MigrationState::Preparing,
            mode: req.mode,
            peer: req.source_host.clone(),
            started_at_ms: now_ms(),
            finished_at_ms: None,
            downtime_ms: None,
            total_ms: None,
            bytes_sent: None,
            rounds: None,
            hostd_switch_ms: None,
            error: None,
            vmm: None,
        };
        let rec = VmRecord {
            spec: req.spec.clone(),
            state: VmState::MigratingIn,
            disks,
            nics,
            restarts: 0,
            exit: None,
            migration: Some(status),
        };
        let vm = host.vms.insert(&id, rec)?;
        (vm, bases)
    };
    let (vm, bases) = vm;
    let setup = async {
        host.make_disks_for(&vm, &bases).await?;
        let port = free_port(host.config.advertise_ip)?;
        let address = match host.config.advertise_ip {
            std::net::IpAddr::V6(ip) => format!("tcp:[{ip}]:{port}"),
            std::net::IpAddr::V4(ip) => format!("tcp:{ip}:{port}"),
        };
        let _op = vm.op.lock().await;
        host.launch(&vm, Launch::Incoming(address.clone())).await?;
        Ok::<_, Error>(address)
    };
    match setup.await {
        Ok(address) => {
            set_status(&vm, |m| m.state = MigrationState::Running);
            watch_incoming(host.clone(), vm.clone());
            tracing::info!(vm = id, address, "ready for an incoming migration");
            Ok(IncomingReady {
                migration_id: req.migration_id,
                address,
            })
        }
        Err(e) => {
            let _ = abort_vm(&host, &vm, &e.to_string()).await;
            Err(e)
        }
    }
}

/// The destination VMM died before the switch, or reports the migration complete
/// while the source hostd is silent: act on it.
fn watch_incoming(host: Arc<Host>, vm: Arc<Vm>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if vm.state() != VmState::MigratingIn || !host.vms.contains(&vm.id) {
                return;
            }
            if vm.lock().rt.pid.is_none() {
                tracing::warn!(
                    vm = vm.id,
                    "incoming VMM exited before the switch; cleaning up"
                );
                let _ = abort_vm(&host, &vm, "the receiving VMM exited before the switch").await;
                return;
            }
            if let Ok(r) = vmm_call(&vm, "GET", "/v1/migration", None).await {
                if r.ok()
                    && serde_json::from_str::<Value>(&r.body)
                        .ok()
                        .and_then(|v| v.get("state")?.as_str().map(str::to_owned))
                        .as_deref()
                        == Some("completed")
                {
                    let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
                    let _ = take_over(&host, &vm, field_u64(&v, "downtime_ms")).await;
                    return;
                }
            }
        }
    });
}

fn find_incoming(host: &Host, mid: &str) -> Result<Arc<Vm>> {
    crate::api::types::validate_id("migration id", mid)?;
    host.vms
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
async fn take_over(host: &Arc<Host>, vm: &Arc<Vm>, downtime_ms: Option<u64>) -> Result<()> {
    {
        let mut g = vm.lock();
        if g.rec.state != VmState::MigratingIn {
            return Ok(());
        }
        g.rec.state = VmState::Running;
        if let Some(m) = g.rec.migration.as_mut() {
            m.state = MigrationState::Completed;
            m.finished_at_ms = Some(now_ms());
            m.downtime_ms = downtime_ms;
            m.total_ms = Some(now_ms().saturating_sub(m.started_at_ms));
        }
    }
    vm.persist()?;
    host.migrations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .incoming_completed += 1;
    let nics = vm.lock().rec.nics.clone();
    for n in nics {
        if let Ok(mac) = crate::api::types::parse_mac("mac", &n.mac) {
            if let Err(e) = host.net.announce(&n.tap, mac).await {
                tracing::warn!(vm = vm.id, "announcing {}: {e}", n.mac);
            }
        }
    }
    tracing::info!(vm = vm.id, "migrated in; running here");
    Ok(())
}

/// Source says: completed.
pub async fn complete_incoming(host: Arc<Host>, mid: &str, o: IncomingOutcome) -> Result<()> {
    let vm = find_incoming(&host, mid)?;
    take_over(&host, &vm, o.downtime_ms).await
}

async fn abort_vm(host: &Arc<Host>, vm: &Arc<Vm>, why: &str) -> Result<()> {
    let pid = {
        let mut g = vm.lock();
        g.rt.stop_requested = true;
        g.rt.pid
    };
    if let Some(pid) = pid {
        crate::vms::process::signal(pid, libc::SIGKILL);
        for _ in 0..100 {
            if vm.lock().rt.pid.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if let Some(mut m) = vm.lock().rec.migration.clone() {
        m.state = MigrationState::Failed;
        m.error = Some(why.to_string());
        m.finished_at_ms = Some(now_ms());
        host.remember(m);
    }
    host.migrations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .incoming_failed += 1;
    host.release(vm).await
}

/// Source says: abort (or failed).
pub async fn abort_incoming(host: Arc<Host>, mid: &str, o: IncomingOutcome) -> Result<()> {
    let vm = find_incoming(&host, mid)?;
    if vm.state() != VmState::MigratingIn {
        return Err(Error::Conflict(format!(
            "migration '{mid}' already completed here"
        )));
    }
    abort_vm(
        &host,
        &vm,
        o.error.as_deref().unwrap_or("aborted by the source"),
    )
    .await
}
