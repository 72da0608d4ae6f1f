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

const PEER_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// How often (and with what timeout) the source checks the destination hostd is there.
const PEER_CHECK: Duration = Duration::from_millis(300);
/// How long the VMM gets to confirm a cancel.
const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// The source VMM lost the destination after the switch.
const UNKNOWN: &str = "contact with the destination VMM was lost after the switch";

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
    v.get(k)
        .and_then(|x| x.as_u64().or_else(|| x.as_f64().map(|f| f as u64)))
}

fn field_f64(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(|x| x.as_f64())
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
    follow(vm, &p.target).await
}

/// Follows the source VMM's `GET /v1/migration` to its end; Ok(result) when completed.
async fn follow(vm: &Arc<Vm>, target: &MigrationTarget) -> Result<Value> {
    let mut failures = 0;
    let mut peer_check = Instant::now();
    let mut peer_failures = 0;
    let mut cancelled = false;
    let mut cancelled_at = Instant::now();
    loop {
        tokio::time::sleep(POLL).await;
        // The destination hostd must stay reachable until the switch: if it is gone
        // (killed, or the link cut), cancel, so the VM stays here rather than arriving
        // on a host whose daemon nobody can reach.
        if !cancelled && peer_check.elapsed() >= PEER_CHECK {
            peer_check = Instant::now();
            let ok = client::tcp(&target.url, None, "GET", "/v1/health", None, PEER_CHECK)
                .await
                .is_ok_and(|r| r.ok());
            peer_failures = if ok { 0 } else { peer_failures + 1 };
            if peer_failures >= 3 {
                tracing::warn!(
                    vm = vm.id,
                    "the destination hostd {} does not answer: cancelling",
                    target.url
                );
                cancelled = true;
                cancelled_at = Instant::now();
                let _ = vmm_call(vm, "DELETE", "/v1/migration", None).await;
            }
        }
        if cancelled && cancelled_at.elapsed() > CANCEL_GRACE {
            // The VMM has not confirmed the cancel (its stream is stuck on a dead
            // link). It never switched, so the VM runs here: stop waiting for it.
            return Err(Error::Peer(format!(
                "the destination hostd {} stopped answering before the switch; migration cancelled",
                target.url
            )));
        }
        let r = match vmm_call(vm, "GET", "/v1/migration", None).await {
            Ok(r) if r.ok() => r,
            other => {
                if vm.lock().rt.pid.is_none() {
                    // The VMM exits right after a completed migration (once its result
                    // was read); if we never saw `completed`, only the destination
                    // knows whether the VM runs there.
                    let last = vm.lock().rec.migration.as_ref().and_then(|m| m.vmm.clone());
                    let completed = last
                        .as_ref()
                        .and_then(|v| v.get("state"))
                        .and_then(|s| s.as_str())
                        == Some("completed");
                    if completed {
                        return Ok(last.unwrap_or_default());
                    }
                    return Err(Error::Vmm(UNKNOWN.into()));
                }
                failures += 1;
                if failures > 250 {
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
            "unknown" => {
                // Contact lost after the switch: the VM is paused here and may run
                // there. Never resume it here on a guess: the destination decides.
                return Err(Error::Vmm(UNKNOWN.into()));
            }
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

/// After an `unknown` end: asks the destination hostd who has the VM. Ok when it
/// runs there; Err when the destination gave it up (so it may resume here); None when
/// nobody can tell yet (the VM stays paused here).
async fn settle_unknown(vm: &Arc<Vm>, p: &Pending) -> Option<Result<Value>> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let path = format!("/v1/vms/{}", vm.id);
    while Instant::now() < deadline {
        match client::tcp(
            &p.target.url,
            Some(&p.target.token),
            "GET",
            &path,
            None,
            Duration::from_secs(5),
        )
        .await
        {
            Ok(r) if r.status == 404 => {
                return Some(Err(Error::Peer(
                    "the destination gave the VM up after losing the source".into(),
                )))
            }
            Ok(r) if r.ok() => {
                let state = serde_json::from_str::<Value>(&r.body)
                    .ok()
                    .and_then(|v| v.get("state")?.as_str().map(str::to_owned));
                if matches!(state.as_deref(), Some("running") | Some("paused")) {
                    return Some(Ok(Value::Null));
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

async fn finish_outgoing(host: &Arc<Host>, vm: &Arc<Vm>, p: &Pending, result: Result<Value>) {
    let result = match result {
        Err(Error::Vmm(m)) if m == UNKNOWN => {
            match settle_unknown(vm, p).await {
                Some(r) => r,
                None => {
                    tracing::error!(
                        vm = vm.id,
                        "{UNKNOWN}; the destination cannot tell; the VM stays paused here"
                    );
                    {
                        let mut g = vm.lock();
                        g.rec.state = VmState::Paused;
                        if let Some(m) = g.rec.migration.as_mut() {
                            m.state = MigrationState::Failed;
                            m.error = Some(format!("{UNKNOWN}; left paused here: resume only if it does not run elsewhere"));
                        }
                    }
                    let _ = vm.persist();
                    return;
                }
            }
        }
        r => r,
    };
    match result {
        Ok(v) => {
            let t0 = Instant::now();
            // When the VMM was gone before hostd read its result, the last answer seen.
            let v = if v.is_null() {
                vm.lock()
                    .rec
                    .migration
                    .as_ref()
                    .and_then(|m| m.vmm.clone())
                    .unwrap_or_default()
            } else {
                v
            };
            let downtime = field_f64(&v, "downtime_ms")
                .filter(|_| v.get("state").and_then(|s| s.as_str()) == Some("completed"));
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
                m.total_ms = field_f64(&v, "total_ms")
                    .or(Some(now_ms().saturating_sub(m.started_at_ms) as f64));
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
            // The destination must hear it, even if it is unreachable right now (a cut
            // link): keep telling it for a while, in the background.
            let target = p.target.clone();
            tokio::spawn(async move {
                let mut delay = Duration::from_millis(200);
                let deadline = Instant::now() + Duration::from_secs(600);
                while Instant::now() < deadline {
                    let r = client::tcp(
                        &target.url,
                        Some(&target.token),
                        "POST",
                        &path,
                        Some(&body),
                        Duration::from_secs(5),
                    );
                    match r.await {
                        Ok(r) if r.ok() || r.status == 404 || r.status == 409 => return,
                        _ => {}
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            });
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
            let _ = std::fs::remove_file(vm.dir.join("migration-target.json"));
            let _ = vm.persist();
        }
    }
}

/// Whether the VM has an outgoing migration hostd can resume.
pub fn has_pending(vm: &Vm) -> bool {
    vm.dir.join("migration-target.json").exists()
}

/// Whether the source VMM last reported this VM's outgoing migration completed.
pub fn last_seen_completed(vm: &Vm) -> bool {
    let g = vm.lock();
    let state = g
        .rec
        .migration
        .as_ref()
        .and_then(|m| m.vmm.as_ref()?.get("state")?.as_str().map(str::to_owned));
    state.as_deref() == Some("completed")
}

/// After a hostd restart with a migration out under way: follow it to its end (if the
/// VMM is gone already, the destination says whether the VM runs there).
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
        let result = follow(&vm, &p.target).await;
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

/// Whether something listens on TCP `port` in this network namespace (/proc/net/tcp*),
/// without connecting to it (a connection would be taken for the migration stream).
fn listening(port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && format!("{} ", cols[1]).ends_with(&needle) && cols[3] == "0A"
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
            let log = crate::vms::tail_lines(&vm.vmm_log(), 3).0.join(" | ");
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
        wait_listening(&vm, port).await?;
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
            tokio::time::sleep(Duration::from_millis(10)).await;
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
            // The receiving VMM serves its API only once the VM runs here (after the
            // switch): from then on this host owns it, whatever the source hostd says.
            if let Ok(r) = vmm_call(&vm, "GET", "/v1/vm", None).await {
                if r.ok() {
                    let _ = take_over(&host, &vm, None).await;
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
async fn take_over(host: &Arc<Host>, vm: &Arc<Vm>, downtime_ms: Option<f64>) -> Result<()> {
    {
        let mut g = vm.lock();
        if g.rec.state != VmState::MigratingIn {
            return Ok(());
        }
        g.rec.state = VmState::Running;
        if let Some(m) = g.rec.migration.as_mut() {
            m.state = MigrationState::Completed;
            m.finished_at_ms = Some(now_ms());
            m.downtime_ms = downtime_ms.or(m.downtime_ms);
            m.total_ms = Some(now_ms().saturating_sub(m.started_at_ms) as f64);
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

/// Source says: completed. Answers at once; the MAC announcement runs behind it.
pub async fn complete_incoming(host: Arc<Host>, mid: &str, o: IncomingOutcome) -> Result<()> {
    let vm = find_incoming(&host, mid)?;
    if let Some(d) = o.downtime_ms {
        let mut g = vm.lock();
        if let Some(m) = g.rec.migration.as_mut() {
            m.downtime_ms = Some(d);
        }
    }
    tokio::spawn(async move {
        if let Err(e) = take_over(&host, &vm, o.downtime_ms).await {
            tracing::error!(vm = vm.id, "taking over a migrated VM: {e}");
        }
    });
    Ok(())
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

#[cfg(test)]
mod tests {
    #[test]
    fn sees_a_listening_port_without_connecting() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(super::listening(port));
        drop(l);
        assert!(!super::listening(port));
    }
}
