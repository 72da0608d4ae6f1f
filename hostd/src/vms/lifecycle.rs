//! A VM's life on this host: create (admission, images, disks, MACs), start (taps,
//! the VMM's config, a detached VMM), supervise (exit -> `stopped`/`crashed`, restart
//! by policy), stop, delete, pause/resume, snapshot, and reattach after a hostd
//! restart.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::process;
use super::{is_active, now_ms, tail_lines, Vm, VmRecord};
use crate::admission;
use crate::api::client;
use crate::api::types::{
    CloneMethod, ConsoleLog, DiskInfo, ExitInfo, FieldError, NicInfo, Resources, RestartPolicy,
    RestoreRequest, SnapshotInfo, SnapshotRequest, VmInfo, VmSpec, VmState,
};
use crate::error::{Error, Result};
use crate::host::Host;

/// How long a VMM gets to answer on its API socket after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful stop waits before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const API_TIMEOUT: Duration = Duration::from_secs(3);

/// How a VMM is started.
#[derive(Debug, Clone)]
pub enum Launch {
    /// Boot from the VM's kernel (`--config vmm.json`).
    Boot,
    /// Receive the VM from a source VMM (`--incoming tcp:ADDR`).
    Incoming(String),
    /// Restore from a snapshot directory (`--restore DIR [--lazy]`).
    Restore { dir: std::path::PathBuf, lazy: bool },
}

/// Calls the VM's VMM API.
pub async fn vmm_call(
    vm: &Vm,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<client::Response> {
    client::unix(&vm.api_sock(), method, path, body, API_TIMEOUT)
        .await
        .map_err(|e| Error::Vmm(format!("{}: {e}", vm.api_sock().display())))
}

/// Calls the VMM API and requires a 2xx answer.
pub async fn vmm_ok(
    vm: &Vm,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<client::Response> {
    let r = vmm_call(vm, method, path, body).await?;
    if !r.ok() {
        return Err(Error::Vmm(format!(
            "{method} {path}: {} {}",
            r.status,
            r.error_message()
        )));
    }
    Ok(r)
}

fn gen_id() -> String {
    format!("vm-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

impl Host {
    /// Creates a VM (and starts it if `spec.start`). Refused, with nothing left
    /// behind, when it does not fit.
    pub async fn create_vm(self: &Arc<Self>, mut spec: VmSpec) -> Result<VmInfo> {
        spec.validate()?;
        let id = spec.id.clone().unwrap_or_else(gen_id);
        spec.id = Some(id.clone());
        if self.vms.contains(&id) {
            return Err(Error::Conflict(format!(
                "a VM '{id}' already exists on this host"
            )));
        }
        if !spec.nics.is_empty()
            && !crate::net::link_exists(&self.config.bridge)
            && !self.can_make_links()
        {
            return Err(FieldError::new(
                "nics",
                "this host cannot create taps (needs root and iproute2)",
            )
            .into());
        }
        // Images first (imports can take a while; they are shared and idempotent).
        let images = self.images.clone();
        let spec2 = spec.clone();
        let resolved = tokio::task::spawn_blocking(move || -> Result<_> {
            let (k, _) = images.resolve("kernel", &spec2.kernel)?;
            let i = spec2
                .initrd
                .as_deref()
                .map(|r| images.resolve("initrd", r))
                .transpose()?;
            let mut disks = Vec::new();
            for (n, d) in spec2.disks.iter().enumerate() {
                let base = d
                    .image
                    .as_deref()
                    .map(|r| images.resolve(&format!("disks[{n}].image"), r))
                    .transpose()?;
                disks.push(base.map(|(info, _)| info));
            }
            Ok((k, i.map(|(info, _)| info), disks))
        })
        .await
        .map_err(|e| Error::Conflict(format!("image task: {e}")))??;
        let (kernel, initrd, bases) = resolved;
        spec.kernel = kernel.id.clone();
        spec.initrd = initrd.map(|i| i.id);

        let vm = {
            let _adm = self.vms.admission.lock().await;
            let mut disks = Vec::new();
            let mut disk_bytes = 0u64;
            for (n, (d, base)) in spec.disks.iter_mut().zip(&bases).enumerate() {
                let base_size = base.as_ref().map(|b| b.size_bytes).unwrap_or(0);
                let size = d.size_mib.map(|m| m << 20).unwrap_or(0).max(base_size);
                disk_bytes += size;
                if let Some(b) = base {
                    d.image = Some(b.id.clone());
                }
                disks.push(DiskInfo {
                    path: format!("disks/disk{n}.raw"),
                    base: base.as_ref().map(|b| b.id.clone()),
                    read_only: d.read_only,
                    size_bytes: size,
                    method: if base.is_some() {
                        CloneMethod::SparseCopy
                    } else {
                        CloneMethod::Blank
                    },
                });
            }
            let want = Resources {
                vcpus: if spec.start { spec.vcpus as u64 } else { 0 },
                mem_mib: if spec.start { spec.mem_mib } else { 0 },
                disk_mib: disk_bytes.div_ceil(1 << 20),
            };
            let (allocated, _) = self.vms.allocated();
            admission::admit(self.capacity(), allocated, want).map_err(Error::NoCapacity)?;
            // Actual free space for the copies' data.
            let need_mib: u64 = bases
                .iter()
                .flatten()
                .map(|b| b.allocated_bytes.div_ceil(1 << 20))
                .sum();
            let free = crate::host::disk_mib(&self.config.data_dir).1;
            if need_mib > free {
                return Err(Error::NoCapacity(format!(
                    "disk: the base images need {need_mib} MiB of free space, {free} MiB free"
                )));
            }
            let mut used = self.vms.macs_in_use();
            let mut nics = Vec::new();
            for (n, nic) in spec.nics.iter_mut().enumerate() {
                let mac = match &nic.mac {
                    Some(m) => {
                        let mac = crate::api::types::parse_mac(&format!("nics[{n}].mac"), m)?;
                        if used.contains(&mac) {
                            return Err(Error::Conflict(format!(
                                "nics[{n}].mac: {m} is in use on this host"
                            )));
                        }
                        mac
                    }
                    None => self.vms.allocate_mac(&used)?,
                };
                used.insert(mac);
                let mac_s = crate::net::mac::format(mac);
                nic.mac = Some(mac_s.clone());
                nics.push(NicInfo {
                    mac: mac_s,
                    tap: crate::net::tap_name(&id, n),
                });
            }
            let state = if spec.start {
                VmState::Starting
            } else {
                VmState::Created
            };
            let rec = VmRecord {
                spec: spec.clone(),
                state,
                disks,
                nics,
                restarts: 0,
                exit: None,
                migration: None,
            };
            self.vms.insert(&id, rec)?
        };
        tracing::info!(vm = id, name = spec.name, "created");
        if let Err(e) = self.make_disks_for(&vm, &bases).await {
            let _ = self.vms.remove(&id);
            return Err(e);
        }
        if spec.start {
            let _op = vm.op.lock().await;
            self.launch(&vm, Launch::Boot).await?;
        }
        Ok(self.vm_info(&vm).await)
    }

    fn can_make_links(&self) -> bool {
        // SAFETY: geteuid has no preconditions.
        (unsafe { libc::geteuid() } == 0) && std::path::Path::new("/dev/net/tun").exists()
    }

    pub async fn make_disks_for(
        &self,
        vm: &Arc<Vm>,
        bases: &[Option<crate::api::types::ImageInfo>],
    ) -> Result<()> {
        let disks = vm.lock().rec.disks.clone();
        let mut made = Vec::new();
        for (d, base) in disks.into_iter().zip(bases) {
            let path = vm.dir.join(&d.path);
            let src = base.as_ref().and_then(|b| self.images.path_of(&b.id));
            let reflink = self.config.reflink;
            let size = d.size_bytes;
            let p2 = path.clone();
            let method = tokio::task::spawn_blocking(move || -> std::io::Result<CloneMethod> {
                match src {
                    Some(src) => crate::images::clone::clone_file(&src, &p2, Some(size), reflink),
                    None => {
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(&p2)?;
                        f.set_len(size)?;
                        Ok(CloneMethod::Blank)
                    }
                }
            })
            .await
            .map_err(|e| Error::Conflict(format!("disk task: {e}")))?
            .map_err(|e| Error::io(format!("making disk {}", path.display()), e))?;
            tracing::info!(vm = vm.id, disk = %path.display(), ?method, "disk made");
            made.push(DiskInfo {
                path: path.to_string_lossy().into_owned(),
                method,
                ..d
            });
        }
        vm.lock().rec.disks = made;
        vm.persist()
    }

    /// Starts a created, stopped or crashed VM.
    pub async fn start_vm(self: &Arc<Self>, id: &str) -> Result<VmInfo> {
        let vm = self.vms.get(id)?;
        let _op = vm.op.lock().await;
        {
            let _adm = self.vms.admission.lock().await;
            let state = vm.state();
            if !matches!(
                state,
                VmState::Created | VmState::Stopped | VmState::Crashed
            ) {
                return Err(Error::Conflict(
                    format!("VM '{id}' is {state:?}, not startable").to_lowercase(),
                ));
            }
            let spec = vm.lock().rec.spec.clone();
            let (allocated, _) = self.vms.allocated();
            let want = Resources {
                vcpus: spec.vcpus as u64,
                mem_mib: spec.mem_mib,
                disk_mib: 0,
            };
            admission::admit(self.capacity(), allocated, want).map_err(Error::NoCapacity)?;
            vm.set_state(VmState::Starting);
        }
        self.launch(&vm, Launch::Boot).await?;
        Ok(self.vm_info(&vm).await)
    }

    /// Starts a created, stopped or crashed VM from one of its snapshots.
    pub async fn restore_vm(self: &Arc<Self>, id: &str, req: RestoreRequest) -> Result<VmInfo> {
        req.validate()?;
        let vm = self.vms.get(id)?;
        let dir = vm.dir.join("snapshots").join(&req.snapshot);
        if !dir.is_dir() {
            return Err(Error::NotFound(format!(
                "VM '{id}' has no snapshot '{}'",
                req.snapshot
            )));
        }
        let _op = vm.op.lock().await;
        {
            let _adm = self.vms.admission.lock().await;
            let state = vm.state();
            if !matches!(
                state,
                VmState::Created | VmState::Stopped | VmState::Crashed
            ) {
                return Err(Error::Conflict(
                    format!("VM '{id}' is {state:?}: stop it before restoring").to_lowercase(),
                ));
            }
            let spec = vm.lock().rec.spec.clone();
            let (allocated, _) = self.vms.allocated();
            let want = Resources {
                vcpus: spec.vcpus as u64,
                mem_mib: spec.mem_mib,
                disk_mib: 0,
            };
            admission::admit(self.capacity(), allocated, want).map_err(Error::NoCapacity)?;
            vm.set_state(VmState::Starting);
        }
        self.launch(
            &vm,
            Launch::Restore {
                dir,
                lazy: req.lazy,
            },
        )
        .await?;
        Ok(self.vm_info(&vm).await)
    }

    /// The nova-vmm arguments for `launch`.
    fn vmm_args(&self, vm: &Vm, launch: &Launch) -> Result<Vec<String>> {
        let rec = vm.lock().rec.clone();
        let disks: Vec<Value> = rec
            .disks
            .iter()
            .map(|d| json!({"path": d.path, "read_only": d.read_only}))
            .collect();
        let nets: Vec<Value> = rec
            .nics
            .iter()
            .map(|n| json!({"tap": n.tap, "mac": n.mac}))
            .collect();
        match launch {
            Launch::Boot => {
                let path_of = |r: &str| {
                    self.images
                        .path_of(r)
                        .ok_or_else(|| Error::NotFound(format!("image {r} is not in the cache")))
                };
                let mut cfg = json!({
                    "kernel": path_of(&rec.spec.kernel)?,
                    "vcpus": rec.spec.vcpus,
                    "mem_mib": rec.spec.mem_mib,
                    "disks": disks,
                    "nets": nets,
                    "api_sock": vm.api_sock(),
                    "console": vm.console_log(),
                });
                if let Some(i) = &rec.spec.initrd {
                    cfg["initrd"] = json!(path_of(i)?);
                }
                if let Some(c) = &rec.spec.cmdline {
                    cfg["cmdline"] = json!(c);
                }
                let p = vm.vmm_config();
                std::fs::write(&p, serde_json::to_vec_pretty(&cfg).unwrap_or_default())
                    .map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
                Ok(vec!["--config".into(), p.to_string_lossy().into_owned()])
            }
            Launch::Incoming(_) | Launch::Restore { .. } => {
                let mut a = match launch {
                    Launch::Incoming(addr) => vec!["--incoming".to_string(), addr.clone()],
                    Launch::Restore { dir, lazy } => {
                        let mut a =
                            vec!["--restore".to_string(), dir.to_string_lossy().into_owned()];
                        if *lazy {
                            a.push("--lazy".into());
                        }
                        a
                    }
                    Launch::Boot => Vec::new(),
                };
                a.extend([
                    "--api-sock".into(),
                    vm.api_sock().to_string_lossy().into_owned(),
                    "--console".into(),
                    vm.console_log().to_string_lossy().into_owned(),
                ]);
                for d in &rec.disks {
                    a.push("--disk".into());
                    a.push(if d.read_only {
                        format!("{},ro", d.path)
                    } else {
                        d.path.clone()
                    });
                }
                for n in &rec.nics {
                    a.push("--net".into());
                    a.push(format!("tap={},mac={}", n.tap, n.mac));
                }
                Ok(a)
            }
        }
    }

    /// Makes the taps, starts the VMM detached and supervises it; for a boot, waits
    /// until its API answers. The caller holds `vm.op` and set the state.
    pub async fn launch(self: &Arc<Self>, vm: &Arc<Vm>, launch: Launch) -> Result<()> {
        let result = self.launch_inner(vm, &launch).await;
        if let Err(e) = &result {
            let mut g = vm.lock();
            if g.rt.pid.is_none() && matches!(g.rec.state, VmState::Starting) {
                g.rec.state = VmState::Crashed;
                g.rec.exit.get_or_insert_with(|| ExitInfo {
                    code: None,
                    signal: None,
                    reason: format!("start failed: {e}"),
                    console_tail: Vec::new(),
                    log_tail: Vec::new(),
                    at_ms: now_ms(),
                });
                drop(g);
                let _ = vm.persist();
            }
        }
        result
    }

    async fn launch_inner(self: &Arc<Self>, vm: &Arc<Vm>, launch: &Launch) -> Result<()> {
        let taps: Vec<String> = vm.lock().rec.nics.iter().map(|n| n.tap.clone()).collect();
        for t in &taps {
            self.net.create_tap(t).await?;
        }
        let args = self.vmm_args(vm, launch)?;
        let _ = std::fs::remove_file(vm.api_sock());
        let spawned = process::spawn(&self.config.vmm_bin, &args, &vm.dir, &vm.vmm_log())?;
        let pid = spawned.pid;
        let _ = std::fs::write(vm.pid_file(), format!("{pid}\n"));
        let gen = {
            let mut g = vm.lock();
            g.rt.generation += 1;
            g.rt.pid = Some(pid);
            g.rt.stop_requested = false;
            g.rt.started = Some(Instant::now());
            g.rt.kvm = None;
            g.rt.generation
        };
        tracing::info!(vm = vm.id, pid, ?launch, "VMM started");
        let (host, vm2) = (self.clone(), vm.clone());
        let mut child = spawned.child;
        tokio::spawn(async move {
            let st = child.wait().await;
            let (code, signal) = match st {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    (s.code(), s.signal())
                }
                Err(_) => (None, None),
            };
            host.on_exit(vm2, gen, code, signal, true).await;
        });
        if matches!(launch, Launch::Boot | Launch::Restore { .. }) {
            self.wait_ready(vm, gen).await?;
            let mut g = vm.lock();
            if g.rt.generation == gen && g.rt.pid.is_some() && g.rec.state == VmState::Starting {
                g.rec.state = VmState::Running;
                drop(g);
                let _ = vm.persist();
            }
        }
        Ok(())
    }

    /// Waits until the VMM of generation `gen` answers `GET /v1/vm`.
    pub async fn wait_ready(&self, vm: &Vm, gen: u64) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            {
                let g = vm.lock();
                if g.rt.generation == gen && g.rt.pid.is_none() && g.rec.state == VmState::Stopped {
                    // It ran and the guest already powered off: started all right.
                    return Ok(());
                }
                if g.rt.generation != gen || g.rt.pid.is_none() {
                    let reason = g
                        .rec
                        .exit
                        .as_ref()
                        .map(|e| e.reason.clone())
                        .unwrap_or_default();
                    let log = tail_lines(&vm.vmm_log(), 3).0.join(" | ");
                    return Err(Error::Vmm(format!(
                        "nova-vmm exited while starting: {reason}: {log}"
                    )));
                }
            }
            if let Ok(r) = client::unix(
                &vm.api_sock(),
                "GET",
                "/v1/vm",
                None,
                Duration::from_secs(1),
            )
            .await
            {
                if r.ok() {
                    if let Ok(v) = serde_json::from_str::<Value>(&r.body) {
                        vm.lock().rt.kvm = v.get("kvm").and_then(|k| k.as_str()).map(str::to_owned);
                    }
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Vmm(format!(
                    "the VMM's API did not answer within {READY_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A VMM exited: record how, decide the state, restart by policy.
    fn on_exit(
        self: Arc<Self>,
        vm: Arc<Vm>,
        gen: u64,
        code: Option<i32>,
        signal: Option<i32>,
        known: bool,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let console_tail = tail_lines(&vm.console_log(), 20).0;
            let log_tail = tail_lines(&vm.vmm_log(), 20).0;
            let restart = {
                let mut g = vm.lock();
                if g.rt.generation != gen {
                    return;
                }
                g.rt.pid = None;
                g.rt.started = None;
                let stop_requested = g.rt.stop_requested;
                let logged = |needle: &str| log_tail.iter().any(|l| l.contains(needle));
                let (state, reason) = if stop_requested {
                    (VmState::Stopped, "stopped by request".to_string())
                } else if known {
                    match (code, signal) {
                        (Some(0), _) => (
                            VmState::Stopped,
                            "the guest powered off or reset".to_string(),
                        ),
                        (Some(c), _) => {
                            (VmState::Crashed, format!("nova-vmm exited with code {c}"))
                        }
                        (None, Some(s)) => (
                            VmState::Crashed,
                            format!("nova-vmm was killed by signal {s}"),
                        ),
                        _ => (
                            VmState::Crashed,
                            "nova-vmm ended, status unknown".to_string(),
                        ),
                    }
                } else if logged("VM failed") {
                    (VmState::Crashed, "nova-vmm failed (its log says VM failed; exit code unknown: hostd was restarted since it started)".into())
                } else if logged("VM stopped") {
                    (VmState::Stopped, "the guest stopped (from the VMM's log; exit code unknown: hostd was restarted since it started)".into())
                } else {
                    (VmState::Crashed, "nova-vmm is gone (exit code unknown: hostd was restarted since it started)".into())
                };
                g.rec.exit = Some(ExitInfo {
                    code,
                    signal,
                    reason: reason.clone(),
                    console_tail,
                    log_tail,
                    at_ms: now_ms(),
                });
                let migrating = matches!(g.rec.state, VmState::MigratingOut | VmState::MigratingIn);
                if !migrating {
                    g.rec.state = state;
                }
                tracing::info!(vm = vm.id, ?code, ?signal, reason, "VMM exited");
                let policy = g.rec.spec.restart;
                !stop_requested
                    && !migrating
                    && match policy {
                        RestartPolicy::Never => false,
                        RestartPolicy::OnFailure => state == VmState::Crashed,
                        RestartPolicy::Always => true,
                    }
            };
            let _ = vm.persist();
            let _ = std::fs::remove_file(vm.pid_file());
            vm.exited.notify_waiters();
            if restart {
                let n = vm.lock().rec.restarts;
                // Back off a crash loop: 0.25 s, 0.5 s, ... up to 30 s.
                let delay = Duration::from_millis(250u64.saturating_mul(1 << n.min(7)))
                    .min(Duration::from_secs(30));
                tokio::time::sleep(delay).await;
                {
                    let mut g = vm.lock();
                    if g.rt.stop_requested || g.rt.generation != gen || !self.vms.contains(&vm.id) {
                        return;
                    }
                    g.rec.restarts += 1;
                }
                tracing::info!(vm = vm.id, "restarting under its restart policy");
                if let Err(e) = self.start_vm(&vm.id).await {
                    tracing::error!(vm = vm.id, "restart failed: {e}");
                }
            }
        })
    }

    /// Watches a VMM hostd is not the parent of (after a reattach) until it exits.
    fn watch_pid(self: &Arc<Self>, vm: Arc<Vm>, gen: u64, pid: u32) {
        let host = self.clone();
        tokio::spawn(async move {
            while process::alive(pid) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if vm.lock().rt.generation != gen {
                    return;
                }
            }
            host.on_exit(vm, gen, None, None, false).await;
        });
    }

    /// Waits until the VM's VMM has exited (pid cleared), up to `t`.
    async fn wait_exit(&self, vm: &Vm, t: Duration) -> bool {
        let deadline = Instant::now() + t;
        loop {
            if vm.lock().rt.pid.is_none() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), vm.exited.notified()).await;
        }
    }

    /// Stops a VM's VMM: the VMM's shutdown, then SIGKILL if it has not exited in time
    /// (at once when `force`). Idempotent.
    pub async fn stop_vm(self: &Arc<Self>, id: &str, force: bool) -> Result<VmInfo> {
        let vm = self.vms.get(id)?;
        let _op = vm.op.lock().await;
        self.stop_locked(&vm, force).await?;
        Ok(self.vm_info(&vm).await)
    }

    async fn stop_locked(&self, vm: &Arc<Vm>, force: bool) -> Result<()> {
        let pid = {
            let mut g = vm.lock();
            if matches!(g.rec.state, VmState::MigratingOut) {
                return Err(Error::Conflict(format!(
                    "VM '{}' is migrating; cancel the migration first",
                    vm.id
                )));
            }
            g.rt.stop_requested = true;
            g.rt.pid
        };
        let Some(pid) = pid else {
            let mut g = vm.lock();
            if matches!(
                g.rec.state,
                VmState::Starting | VmState::Running | VmState::Paused
            ) {
                g.rec.state = VmState::Stopped;
                drop(g);
                let _ = vm.persist();
            }
            return Ok(());
        };
        if !force
            && vmm_call(vm, "PUT", "/v1/vm/shutdown", None)
                .await
                .is_ok_and(|r| r.ok())
        {
            if self.wait_exit(vm, STOP_TIMEOUT).await {
                return Ok(());
            }
            tracing::warn!(vm = vm.id, "did not stop in {STOP_TIMEOUT:?}; killing it");
        }
        process::signal(pid, libc::SIGKILL);
        if self.wait_exit(vm, Duration::from_secs(5)).await {
            Ok(())
        } else {
            Err(Error::Vmm(format!(
                "nova-vmm pid {pid} did not exit after SIGKILL"
            )))
        }
    }

    /// Stops the VM, removes its taps, disks and directory.
    pub async fn delete_vm(self: &Arc<Self>, id: &str) -> Result<()> {
        let vm = self.vms.get(id)?;
        let _op = vm.op.lock().await;
        self.stop_locked(&vm, false).await?;
        self.release(&vm).await
    }

    /// Removes what the VM holds on this host (taps, directory) and forgets it.
    pub async fn release(&self, vm: &Arc<Vm>) -> Result<()> {
        let taps: Vec<String> = vm.lock().rec.nics.iter().map(|n| n.tap.clone()).collect();
        for t in taps {
            if let Err(e) = self.net.delete_tap(&t).await {
                tracing::warn!(vm = vm.id, "deleting tap {t}: {e}");
            }
        }
        vm.lock().rt.generation += 1; // any supervisor left is stale now
        self.vms.remove(&vm.id)?;
        tracing::info!(vm = vm.id, "deleted");
        Ok(())
    }

    /// Pauses or resumes (passthrough to the VMM).
    pub async fn pause_resume(self: &Arc<Self>, id: &str, pause: bool) -> Result<VmInfo> {
        let vm = self.vms.get(id)?;
        let _op = vm.op.lock().await;
        let state = vm.state();
        if !matches!(state, VmState::Running | VmState::Paused) {
            return Err(Error::Conflict(
                format!("VM '{id}' is not running ({state:?})").to_lowercase(),
            ));
        }
        let path = if pause {
            "/v1/vm/pause"
        } else {
            "/v1/vm/resume"
        };
        vmm_ok(&vm, "PUT", path, None).await?;
        vm.set_state(if pause {
            VmState::Paused
        } else {
            VmState::Running
        });
        Ok(self.vm_info(&vm).await)
    }

    /// Asks the VMM for a snapshot into `DATA/vms/<id>/snapshots/<name>`.
    pub async fn snapshot_vm(
        self: &Arc<Self>,
        id: &str,
        req: SnapshotRequest,
    ) -> Result<SnapshotInfo> {
        req.validate()?;
        let vm = self.vms.get(id)?;
        let _op = vm.op.lock().await;
        if !matches!(vm.state(), VmState::Running | VmState::Paused) {
            return Err(Error::Conflict(format!("VM '{id}' is not running")));
        }
        let dir = vm.dir.join("snapshots").join(&req.name);
        if dir.exists() {
            return Err(Error::Conflict(format!("snapshot '{}' exists", req.name)));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let body = json!({"path": dir, "diff": req.diff}).to_string();
        if let Err(e) = vmm_ok(&vm, "PUT", "/v1/snapshot", Some(&body)).await {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(SnapshotInfo {
            vm_id: id.to_string(),
            name: req.name,
            path: dir.to_string_lossy().into_owned(),
            diff: req.diff,
            created_at_ms: now_ms(),
        })
    }

    /// The last `lines` lines of the VM's console.
    pub fn console(&self, id: &str, lines: usize) -> Result<ConsoleLog> {
        let vm = self.vms.get(id)?;
        let (lines, bytes) = tail_lines(&vm.console_log(), lines);
        Ok(ConsoleLog { lines, bytes })
    }

    /// The VM with its VMM's live state and counters.
    pub async fn vm_info(&self, vm: &Vm) -> VmInfo {
        let mut info = vm.info();
        if let Some((cpu_ms, rss, guest)) = info.pid.and_then(process::stats) {
            info.counters.insert("process_cpu_ms".into(), cpu_ms);
            info.counters.insert("process_rss_bytes".into(), rss);
            info.counters.insert("guest_resident_bytes".into(), guest);
        }
        if is_active(info.state) && info.pid.is_some() {
            if let Ok(r) = client::unix(
                &vm.api_sock(),
                "GET",
                "/v1/vm",
                None,
                Duration::from_secs(1),
            )
            .await
            {
                if let Ok(v) = serde_json::from_str::<Value>(&r.body) {
                    if let Some(c) = v.get("counters").and_then(|c| c.as_object()) {
                        for (k, v) in c {
                            if let Some(n) = v.as_u64() {
                                info.counters.insert(k.clone(), n);
                            }
                        }
                    }
                    if info.kvm.is_none() {
                        info.kvm = v.get("kvm").and_then(|k| k.as_str()).map(str::to_owned);
                    }
                }
            }
        }
        info
    }

    /// Every VM with live counters (queried concurrently).
    pub async fn vm_infos(self: &Arc<Self>) -> Vec<VmInfo> {
        let mut set = tokio::task::JoinSet::new();
        for (i, vm) in self.vms.all().into_iter().enumerate() {
            let host = self.clone();
            set.spawn(async move { (i, host.vm_info(&vm).await) });
        }
        let mut out: Vec<(usize, VmInfo)> = set.join_all().await;
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// On hostd start: reads every VM record, takes back the VMMs still running, and
    /// reports (and restarts by policy) the ones that died while hostd was away.
    pub async fn reattach_all(self: &Arc<Self>) {
        let mut seen_macs = HashSet::new();
        for (id, rec) in self.vms.load_records() {
            for n in &rec.nics {
                if let Ok(m) = crate::api::types::parse_mac("mac", &n.mac) {
                    seen_macs.insert(m);
                }
            }
            let state = rec.state;
            let vm = self.vms.adopt(&id, rec);
            if !is_active(state) {
                continue;
            }
            let pid = process::read_pid(&vm.pid_file())
                .filter(|&p| process::alive(p) && process::is_our_vmm(p, &vm.dir));
            let gen = {
                let mut g = vm.lock();
                g.rt.generation += 1;
                g.rt.pid = pid;
                g.rt.generation
            };
            match pid {
                Some(pid) => {
                    let status = vmm_call(&vm, "GET", "/v1/vm", None)
                        .await
                        .ok()
                        .filter(|r| r.ok());
                    let v: Value = status
                        .map(|r| serde_json::from_str(&r.body).unwrap_or_default())
                        .unwrap_or_default();
                    {
                        let mut g = vm.lock();
                        g.rt.kvm = v.get("kvm").and_then(|k| k.as_str()).map(str::to_owned);
                        let uptime = v.get("uptime_ms").and_then(|u| u.as_u64()).unwrap_or(0);
                        g.rt.started = Instant::now().checked_sub(Duration::from_millis(uptime));
                    }
                    let vmm_state = v.get("state").and_then(|s| s.as_str()).unwrap_or("");
                    match (state, vmm_state) {
                        (VmState::MigratingIn, "running") | (VmState::MigratingIn, "paused") => {
                            // The switch happened while hostd was away: the VM is ours.
                            vm.set_state(VmState::Running);
                        }
                        (VmState::MigratingIn, _) => {
                            // hostd lost the incoming migration: give up on it; the
                            // source keeps the VM.
                            tracing::warn!(vm = id, "dropping an unfinished incoming migration");
                            vm.lock().rt.stop_requested = true;
                            process::signal(pid, libc::SIGKILL);
                            self.watch_pid(vm.clone(), gen, pid);
                            let _ = self.wait_exit(&vm, Duration::from_secs(3)).await;
                            let _ = self.release(&vm).await;
                            continue;
                        }
                        (VmState::MigratingOut, _) => {
                            crate::migration::resume_outgoing(self.clone(), vm.clone());
                        }
                        (_, "paused") => vm.set_state(VmState::Paused),
                        _ => vm.set_state(VmState::Running),
                    }
                    tracing::info!(vm = id, pid, "reattached");
                    self.watch_pid(vm, gen, pid);
                }
                None => {
                    if state == VmState::MigratingIn {
                        let _ = self.release(&vm).await;
                        continue;
                    }
                    if state == VmState::MigratingOut && crate::migration::has_pending(&vm) {
                        // The VMM is gone: either the VM moved (the source VMM exits
                        // after a completed migration) or it died. The destination knows.
                        crate::migration::resume_outgoing(self.clone(), vm.clone());
                        continue;
                    }
                    if state == VmState::MigratingOut && crate::migration::last_seen_completed(&vm)
                    {
                        // It moved; hostd died before letting go of it.
                        tracing::info!(
                            vm = id,
                            "migrated out while hostd was away; letting go of it"
                        );
                        let _ = self.release(&vm).await;
                        continue;
                    }
                    if state == VmState::MigratingOut {
                        vm.lock().rec.state = VmState::Running;
                    }
                    let host = self.clone();
                    host.on_exit(vm, gen, None, None, false).await;
                }
            }
        }
        let _ = seen_macs;
    }
}
