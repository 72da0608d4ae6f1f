//! The source side of a migration. `POST /v1/vms/{id}/migrate` answers at once; the
//! rest runs behind it: make sure the destination has the VM's images (upload the
//! missing ones; writable disks are not images there but copied by the VMM), ask it
//! to prepare (`POST /v1/migrations/incoming`), pause (warm) or stop and boot paused
//! (cold) the guest, start the local VMM's migration and follow it. On `completed`: tell the destination, let go
//! of the VM. On any failure: tell the destination to abort (until it hears it) and
//! keep the VM here, running. A source VMM that lost the destination after the
//! switch (`unknown`) is never resumed on a guess: the destination hostd decides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nova_hostd_api::{
    HostdClient, IncomingDisk, IncomingOutcome, IncomingRequest, MigrateRequest,
    MigrationDirection, MigrationKind, MigrationMode, MigrationState, MigrationStatus, VmState,
};
use nova_vmm_api::{MigrationRequest, MigrationState as VmmState, MigrationStatus as VmmStatus};

use crate::error::{Error, Result};
use crate::migration::state::{new_status, Migrations, Pending};
use crate::vms::process;
use crate::vms::record::{now_ms, Vm};

/// How often the source VMM's progress is read.
const POLL: Duration = Duration::from_millis(20);
/// How often (and with what timeout) the source checks the destination hostd is there.
const PEER_CHECK: Duration = Duration::from_millis(300);
/// How long the VMM gets to confirm a cancel.
const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// How long an `unknown` end waits for the destination to say who has the VM.
const SETTLE: Duration = Duration::from_secs(300);
/// How long the source keeps telling an unreachable destination to abort.
const ABORT_RETRY: Duration = Duration::from_secs(600);
/// How long a cold migration's guest gets to stop before it is killed.
const COLD_STOP: Duration = Duration::from_secs(5);
/// The source VMM lost the destination after the switch.
const UNKNOWN: &str = "contact with the destination VMM was lost after the switch";

/// How an outgoing migration ended.
pub(super) enum End {
    /// The VM runs on the destination; the source VMM's last word, if it had one.
    Moved(Option<VmmStatus>),
    /// Nothing moved: the VM is here.
    Failed(Error),
    /// The VMMs lost each other after the switch: the destination must tell.
    Unknown,
}

impl Migrations {
    /// Starts an outgoing migration; answers at once with its status (then poll
    /// `GET /v1/vms/{id}/migration`).
    pub async fn migrate_out(
        self: &Arc<Self>,
        id: &str,
        req: MigrateRequest,
    ) -> Result<MigrationStatus> {
        req.validate()?;
        let vm = self.vms.get(id)?;
        let _op = vm.op.lock().await;
        let state = vm.state();
        if !matches!(state, VmState::Running | VmState::Paused) {
            return Err(Error::Conflict(
                format!("VM '{id}' is {state:?}; only a running VM migrates").to_lowercase(),
            ));
        }
        let peer = self.peer(&req.to)?;
        let mid = format!("mig-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let mut status = new_status(
            &mid,
            id,
            MigrationDirection::Outgoing,
            req.params.mode,
            &req.to.url,
        );
        status.kind = req.kind;
        self.begin(&vm, status.clone(), VmState::MigratingOut)?;
        let pending = Pending {
            target: req.to.clone(),
            migration_id: mid,
        };
        self.save_pending(&vm, &pending);
        let (m, v) = (self.clone(), vm.clone());
        tokio::spawn(async move {
            let _op = v.op.lock().await;
            let end = match m.run(&v, &peer, &req, &pending).await {
                Ok(()) => m.follow(&v, &peer).await,
                Err(e) => End::Failed(e),
            };
            m.finish_outgoing(&v, &peer, &pending, end).await;
        });
        Ok(status)
    }

    /// Images, the destination's preparation, the VMM's start.
    async fn run(
        &self,
        vm: &Arc<Vm>,
        peer: &HostdClient,
        req: &MigrateRequest,
        p: &Pending,
    ) -> Result<()> {
        let rec = vm.lock().rec.clone();
        let mut images = vec![rec.spec.kernel.clone()];
        images.extend(rec.spec.initrd.clone());
        // Writable disks travel in the VMM's stream: only read-only ones need their image.
        images.extend(
            rec.disks
                .iter()
                .filter(|d| d.read_only)
                .filter_map(|d| d.base.clone()),
        );
        for img in images {
            match peer.image(&img).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {
                    let path = self
                        .vms
                        .images
                        .path_of(&img)
                        .ok_or_else(|| Error::NotFound(img.clone()))?;
                    tracing::info!(
                        vm = vm.id,
                        image = img,
                        "uploading image to the destination"
                    );
                    peer.upload_image(&path).await.map_err(Error::peer)?;
                }
                Err(e) => return Err(Error::peer(e)),
            }
        }
        let mut spec = rec.spec.clone();
        spec.start = false;
        let mut disks = Vec::new();
        for (d, info) in spec.disks.iter_mut().zip(&rec.disks) {
            let shared = info.method == nova_hostd_api::CloneMethod::Shared;
            d.image = info.base.clone();
            // A shared disk is the same file there: named by its path, not sized.
            d.size_mib = (!shared).then(|| info.size_bytes.div_ceil(1 << 20));
            // Writable disks travel in the VMM's stream (live block migration); a
            // read-only one is its image on both hosts.
            let path = vm.dir.join(&info.path);
            disks.push(IncomingDisk {
                size_bytes: info.size_bytes,
                allocated_bytes: crate::images::clone::allocated_bytes(&path)
                    .unwrap_or(info.size_bytes),
                copied: !info.read_only && !shared,
            });
        }
        // Warm and cold migrations move a guest that does not run: one pass, no rounds.
        let mut params = req.params;
        if req.kind != MigrationKind::Live {
            params.mode = MigrationMode::Precopy;
        }
        let inc = IncomingRequest {
            migration_id: p.migration_id.clone(),
            spec,
            macs: rec.nics.iter().map(|n| n.mac.clone()).collect(),
            mode: params.mode,
            source_host: self.host_id.clone(),
            disks,
        };
        let ready = peer.incoming(&inc).await.map_err(Error::peer)?;
        tracing::info!(vm = vm.id, to = ready.address, "destination ready");
        match req.kind {
            MigrationKind::Live => {}
            MigrationKind::Warm => {
                vm.vmm()?.pause().await.map_err(Error::vmm)?;
            }
            MigrationKind::Cold => self.vms.reboot_paused(vm, COLD_STOP).await?,
        }
        // Stopping a guest takes seconds: the destination hostd must still be there
        // before the stream starts (a paused guest moves in a blink, before the checks
        // of `follow` could notice), or the VM would land where no daemon answers.
        if req.kind != MigrationKind::Live
            && !matches!(
                tokio::time::timeout(Duration::from_secs(3), peer.health()).await,
                Ok(Ok(_))
            )
        {
            return Err(Error::Peer(format!(
                "the destination hostd {} stopped answering while the guest was stopped here",
                peer.url()
            )));
        }
        let start = MigrationRequest {
            to: ready.address,
            params,
            // The destination's credential for this migration only: its VMM lets in
            // nothing else.
            peer: ready.peer,
        };
        vm.vmm()?.migrate(&start).await.map_err(Error::vmm)?;
        self.update(vm, |m| m.state = MigrationState::Running);
        Ok(())
    }

    /// Follows the source VMM's `GET /v1/migration` to its end.
    pub(super) async fn follow(&self, vm: &Vm, peer: &HostdClient) -> End {
        let mut failures = 0;
        let mut peer_check = Instant::now();
        let mut peer_failures = 0;
        let mut cancelled_at: Option<Instant> = None;
        loop {
            tokio::time::sleep(POLL).await;
            // The destination hostd must stay reachable until the switch: if it is gone
            // (killed, or the link cut), cancel, so the VM stays here rather than
            // arriving on a host whose daemon nobody can reach.
            if cancelled_at.is_none() && peer_check.elapsed() >= PEER_CHECK {
                peer_check = Instant::now();
                let ok = matches!(
                    tokio::time::timeout(PEER_CHECK, peer.health()).await,
                    Ok(Ok(_))
                );
                peer_failures = if ok { 0 } else { peer_failures + 1 };
                if peer_failures >= 3 {
                    tracing::warn!(
                        vm = vm.id,
                        "the destination hostd {} does not answer: cancelling",
                        peer.url()
                    );
                    cancelled_at = Some(Instant::now());
                    if let Ok(vmm) = vm.vmm() {
                        let _ = vmm.cancel_migration().await;
                    }
                }
            }
            let url = peer.url();
            let peer_gone = || {
                Error::Peer(format!(
                    "{url} stopped answering before the switch; cancelled"
                ))
            };
            if cancelled_at.is_some_and(|t| t.elapsed() > CANCEL_GRACE) {
                // The VMM never confirmed the cancel nor switched: the VM runs here.
                return End::Failed(peer_gone());
            }
            let answer = match vm.vmm() {
                Ok(vmm) => vmm.migration().await.map_err(Error::vmm),
                Err(e) => Err(e),
            };
            let s = match answer {
                Ok(s) => s,
                Err(e) => {
                    if vm.lock().rt.pid.is_none() {
                        // The VMM exits right after a completed migration (once its
                        // result was read); if we never saw `completed`, only the
                        // destination knows whether the VM runs there.
                        if self.last_seen_completed(vm) {
                            return End::Moved(None);
                        }
                        return End::Unknown;
                    }
                    failures += 1;
                    if failures > 250 {
                        return End::Failed(Error::Vmm(format!(
                            "GET /v1/migration keeps failing: {e}"
                        )));
                    }
                    continue;
                }
            };
            failures = 0;
            self.update(vm, |m| {
                m.bytes_sent = Some(s.bytes_sent);
                m.rounds = Some(s.rounds as u64);
                m.vmm = Some(s.clone());
            });
            match s.state {
                VmmState::Completed => return End::Moved(Some(s)),
                // Contact lost after the switch: the VM is paused here and may run
                // there. Never resume it here on a guess: the destination decides.
                VmmState::Unknown => return End::Unknown,
                // Our own cancel (the peer went away) cut the VMM's connections.
                VmmState::Failed | VmmState::Cancelled if cancelled_at.is_some() => {
                    return End::Failed(peer_gone());
                }
                VmmState::Failed | VmmState::Cancelled => {
                    let why = s
                        .error
                        .unwrap_or_else(|| format!("migration {:?}", s.state));
                    return End::Failed(Error::Vmm(why));
                }
                VmmState::Running => {}
            }
        }
    }

    /// After an `unknown` end: asks the destination hostd who has the VM. Some(true)
    /// when it runs there, Some(false) when the destination gave it up (so it may
    /// resume here), None when nobody can tell in time (it stays paused here).
    async fn settle_unknown(&self, vm: &Vm, peer: &HostdClient) -> Option<bool> {
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(5), peer.vm(&vm.id)).await {
                Ok(Err(e)) if e.is_not_found() => return Some(false),
                Ok(Ok(v)) if matches!(v.state, VmState::Running | VmState::Paused) => {
                    return Some(true)
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    pub(super) async fn finish_outgoing(
        &self,
        vm: &Arc<Vm>,
        peer: &HostdClient,
        p: &Pending,
        end: End,
    ) {
        let end = match end {
            End::Unknown => match self.settle_unknown(vm, peer).await {
                Some(true) => End::Moved(None),
                Some(false) => End::Failed(Error::Peer(
                    "the destination gave the VM up after losing the source".into(),
                )),
                None => {
                    tracing::error!(
                        vm = vm.id,
                        "{UNKNOWN}; the destination cannot tell; the VM stays paused here"
                    );
                    vm.lock().rec.state = VmState::Paused;
                    self.finish(vm, |m| {
                        m.state = MigrationState::Failed;
                        m.error = Some(format!(
                            "{UNKNOWN}; left paused here: resume only if it does not run elsewhere"
                        ));
                    });
                    return;
                }
            },
            e => e,
        };
        match end {
            End::Moved(last) => self.moved(vm, peer, p, last).await,
            End::Failed(e) => self.stayed(vm, peer, p, e).await,
            End::Unknown => unreachable!("settled above"),
        }
    }

    /// The VM runs on the destination: tell it, let go of the VM here.
    async fn moved(&self, vm: &Arc<Vm>, peer: &HostdClient, p: &Pending, last: Option<VmmStatus>) {
        let t0 = Instant::now();
        // When the VMM was gone before hostd read its result, the last answer seen.
        let last = last.or_else(|| vm.lock().rec.migration.as_ref().and_then(|m| m.vmm.clone()));
        let completed = last.as_ref().filter(|s| s.state == VmmState::Completed);
        let downtime = completed.map(|s| s.downtime_ms);
        let outcome = IncomingOutcome {
            downtime_ms: downtime,
            error: None,
        };
        if let Err(e) = peer.incoming_complete(&p.migration_id, &outcome).await {
            // The destination VMM runs the VM; its hostd takes it when it sees that.
            tracing::warn!(
                vm = vm.id,
                "telling the destination the migration completed: {e}"
            );
        }
        let switch_ms = t0.elapsed().as_secs_f64() * 1000.0;
        // The source VMM exits by itself after a completed migration.
        let pid = {
            let mut g = vm.lock();
            g.rt.stop_requested = true;
            g.rt.pid
        };
        for _ in 0..100 {
            if vm.lock().rt.pid.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(pid) = pid.filter(|_| vm.lock().rt.pid.is_some()) {
            process::signal(pid, libc::SIGKILL);
        }
        self.finish(vm, |m| {
            m.state = MigrationState::Completed;
            m.total_ms = completed
                .map(|s| s.total_ms)
                .or(Some(now_ms().saturating_sub(m.started_at_ms) as f64));
            m.downtime_ms = downtime;
            m.bytes_sent = completed.map(|s| s.bytes_sent).or(m.bytes_sent);
            m.rounds = completed.map(|s| s.rounds as u64).or(m.rounds);
            m.hostd_switch_ms = Some(switch_ms);
        });
        tracing::info!(vm = vm.id, ?downtime, switch_ms, "migrated out");
        self.clear_pending(vm);
        if let Err(e) = self.vms.release(vm).await {
            tracing::error!(vm = vm.id, "releasing a migrated VM: {e}");
        }
    }

    /// Nothing moved: the destination cleans up (told until it hears it), the VM
    /// runs on here.
    async fn stayed(&self, vm: &Arc<Vm>, peer: &HostdClient, p: &Pending, e: Error) {
        tracing::warn!(vm = vm.id, "migration failed: {e}; the VM stays here");
        let outcome = IncomingOutcome {
            downtime_ms: None,
            error: Some(e.to_string()),
        };
        // The destination must hear it, even if it is unreachable right now (a cut
        // link): keep telling it for a while, in the background.
        let (peer2, mid) = (peer.clone(), p.migration_id.clone());
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            let deadline = Instant::now() + ABORT_RETRY;
            while Instant::now() < deadline {
                match tokio::time::timeout(
                    Duration::from_secs(5),
                    peer2.incoming_abort(&mid, &outcome),
                )
                .await
                {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) if matches!(e.status(), Some(404 | 409)) => return,
                    _ => {}
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
        let alive = vm.lock().rt.pid.is_some();
        vm.lock().rec.state = if alive {
            VmState::Running
        } else {
            VmState::Crashed
        };
        self.finish(vm, |m| {
            m.state = MigrationState::Failed;
            m.error = Some(e.to_string());
        });
        if alive {
            // A failed pre-copy leaves the source running; make sure it is not left
            // paused by a failure after the VMM paused it (warm), or booted paused
            // (cold). A VMM slow to answer is asked again: a VM left paused here while
            // its record says running would be lost in plain sight.
            for attempt in 1..=5 {
                match resume_if_paused(vm).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(vm = vm.id, attempt, "resuming after the failed move: {e}");
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                }
            }
        }
        self.clear_pending(vm);
    }

    /// Cancels an outgoing migration (the VMM's `DELETE /v1/migration`).
    pub async fn cancel(&self, id: &str) -> Result<()> {
        let vm = self.vms.get(id)?;
        if vm.state() != VmState::MigratingOut {
            return Err(Error::Conflict(format!("VM '{id}' is not migrating")));
        }
        vm.vmm()?.cancel_migration().await.map_err(Error::vmm)?;
        Ok(())
    }
}

/// Resumes the VM's VMM if it is paused.
async fn resume_if_paused(vm: &Vm) -> Result<()> {
    let vmm = vm.vmm()?;
    let info = vmm.info().await.map_err(Error::vmm)?;
    if info.state == nova_vmm_api::RunState::Paused {
        vmm.resume().await.map_err(Error::vmm)?;
    }
    Ok(())
}
