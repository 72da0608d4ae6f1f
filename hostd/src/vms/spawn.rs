//! Starting one VMM process: its taps, its configuration (`vmm.json`, the VMM's own
//! [`VmConfig`] type) or its `--incoming`/`--restore` flags, and the detached process
//! itself, in its jail (`crate::jail`) unless hostd runs with `--no-jail`.
//! Supervision of what was started is `supervise`'s.

use std::path::{Path, PathBuf};
use std::time::Instant;

use nova_hostd_api::CloneMethod;
use nova_vmm_api::{DiskConfig, NetConfig, VmConfig, VmmClient};

use crate::error::{Error, IoContext, Result};
use crate::jail::{self, JailSpec};
use crate::vms::process;
use crate::vms::record::{Vm, VmRecord, VMM_TIMEOUT};
use crate::vms::table::Vms;

/// How a VMM is started.
#[derive(Debug, Clone, PartialEq)]
pub enum Launch {
    /// Boot from the VM's kernel (`--config vmm.json`).
    Boot,
    /// Boot, vCPUs parked until resumed (`--paused`): a cold migration moves it so.
    BootPaused,
    /// Receive the VM from a source VMM (`--incoming tcp:ADDR`).
    Incoming(String),
    /// Restore from a snapshot directory (`--restore DIR [--lazy | --clone]`).
    Restore {
        dir: PathBuf,
        lazy: bool,
        clone: bool,
    },
}

/// Where a VM's VMM finds its files.
pub struct Paths<'a> {
    pub api_sock: &'a Path,
    pub console: &'a Path,
    pub console_sock: &'a Path,
    pub config: &'a Path,
    /// The receiving VMM's credential file (`--incoming-credential`).
    pub incoming_credential: &'a Path,
    /// Plaintext migrations (`--insecure` on every VMM): hostd's `--insecure-migration`.
    pub insecure_migration: bool,
    /// The VM's run directory, where each disk's backup bitmap file lives.
    pub run_dir: &'a Path,
}

/// Disk `i`'s backup bitmap file (the VMM's, kept across its restarts) in `run_dir`.
pub fn backup_bitmap(run_dir: &Path, i: usize) -> PathBuf {
    run_dir.join(format!("disk{i}.bitmap"))
}

/// The `nova-vmm run` arguments for `launch`, and the config file to write first
/// (for a boot). `image` resolves a `sha256:` reference to the cached file.
pub fn vmm_args(
    rec: &VmRecord,
    paths: &Paths,
    launch: &Launch,
    image: impl Fn(&str) -> Option<PathBuf>,
) -> Result<(Vec<String>, Option<VmConfig>)> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let path_of =
        |r: &str| image(r).ok_or_else(|| Error::NotFound(format!("image {r} is not in the cache")));
    let mut args = match launch {
        Launch::Boot | Launch::BootPaused => {
            let cfg = VmConfig {
                kernel: path_of(&rec.spec.kernel)?,
                initrd: rec.spec.initrd.as_deref().map(path_of).transpose()?,
                cmdline: rec.spec.cmdline.clone(),
                vcpus: rec.spec.vcpus,
                mem_mib: rec.spec.mem_mib,
                disks: rec
                    .disks
                    .iter()
                    .enumerate()
                    .map(|(i, d)| DiskConfig {
                        path: d.path.clone().into(),
                        read_only: d.read_only,
                        shared: d.method == CloneMethod::Shared,
                        backup_bitmap: Some(backup_bitmap(paths.run_dir, i)),
                    })
                    .collect(),
                nets: rec
                    .nics
                    .iter()
                    .map(|n| NetConfig {
                        tap: n.tap.clone(),
                        mac: Some(n.mac.clone()),
                    })
                    .collect(),
                api_sock: Some(paths.api_sock.to_path_buf()),
                console: Some(paths.console.to_path_buf()),
                acpi: true,
                console_sock: Some(paths.console_sock.to_path_buf()),
                console_max_bytes: None,
            };
            let mut args = vec!["--config".into(), s(paths.config)];
            if paths.insecure_migration {
                args.push("--insecure".into());
            }
            if *launch == Launch::BootPaused {
                args.push("--paused".into());
            }
            return Ok((args, Some(cfg)));
        }
        // The destination's whole VM is given here (admitted by this hostd); the
        // stream's own configuration is only compared with it.
        Launch::Incoming(addr) => vec![
            "--incoming".to_string(),
            addr.clone(),
            "--mem-mib".into(),
            rec.spec.mem_mib.to_string(),
            "--vcpus".into(),
            rec.spec.vcpus.to_string(),
        ],
        Launch::Restore { dir, lazy, clone } => {
            let mut a = vec!["--restore".to_string(), s(dir)];
            if *lazy {
                a.push("--lazy".into());
            }
            if *clone {
                a.push("--clone".into());
            }
            a
        }
    };
    match (launch, paths.insecure_migration) {
        (_, true) => args.push("--insecure".into()),
        (Launch::Incoming(_), false) => {
            args.extend(["--incoming-credential".into(), s(paths.incoming_credential)])
        }
        _ => {}
    }
    args.extend([
        "--api-sock".into(),
        s(paths.api_sock),
        "--console".into(),
        s(paths.console),
        "--console-sock".into(),
        s(paths.console_sock),
    ]);
    for (i, d) in rec.disks.iter().enumerate() {
        args.push("--disk".into());
        let mut arg = d.path.clone();
        if d.read_only {
            arg.push_str(",ro");
        }
        if d.method == CloneMethod::Shared {
            arg.push_str(",shared");
        }
        let bitmap = backup_bitmap(paths.run_dir, i);
        arg.push_str(&format!(",bitmap={}", bitmap.display()));
        args.push(arg);
    }
    for n in &rec.nics {
        args.push("--net".into());
        args.push(format!("tap={},mac={}", n.tap, n.mac));
    }
    Ok((args, None))
}

impl Vms {
    /// Makes the VM's taps and starts its VMM detached; records the new generation.
    /// Returns the generation and the child to reap. The caller holds `vm.op`.
    pub async fn spawn_vmm(
        &self,
        vm: &Vm,
        launch: &Launch,
    ) -> Result<(u64, tokio::process::Child)> {
        let rec = vm.lock().rec.clone();
        let uid = if self.settings.jail.enabled {
            Some(self.jailer.uid_for(&vm.id)?)
        } else {
            None
        };
        for n in &rec.nics {
            self.net.create_tap(&n.tap).await?;
            if let Some(uid) = uid {
                jail::set_tap_owner(&n.tap, uid).await?;
            }
        }
        let run = vm.run_dir();
        std::fs::create_dir_all(&run).ctx(|| format!("creating {}", run.display()))?;
        let paths = Paths {
            api_sock: &vm.api_sock(),
            console: &vm.console_log(),
            console_sock: &vm.console_sock(),
            config: &vm.vmm_config(),
            incoming_credential: &vm.incoming_credential(),
            insecure_migration: self.settings.insecure_migration,
            run_dir: &run,
        };
        let (args, config) = vmm_args(&rec, &paths, launch, |r| self.images.path_of(r))?;
        if let Some(cfg) = config {
            let p = vm.vmm_config();
            let text =
                serde_json::to_vec_pretty(&cfg).map_err(|e| Error::Conflict(e.to_string()))?;
            std::fs::write(&p, text).ctx(|| format!("writing {}", p.display()))?;
        }
        let _ = std::fs::remove_file(vm.api_sock());
        let prepared = match uid {
            Some(uid) => {
                let spec = self.jail_spec(vm, &rec, launch, uid)?;
                Some(spec.prepare(&self.jailer.cgroups)?)
            }
            None => None,
        };
        // Exec'd inside the jail, where only its canonical path is bound.
        let bin = match uid {
            Some(_) => self
                .settings
                .vmm_bin
                .canonicalize()
                .ctx(|| format!("finding {}", self.settings.vmm_bin.display()))?,
            None => self.settings.vmm_bin.clone(),
        };
        let spawned = process::spawn(&bin, &args, &vm.dir, &vm.vmm_log(), prepared)?;
        let pid = spawned.pid;
        let _ = std::fs::write(vm.pid_file(), format!("{pid}\n"));
        let client = VmmClient::new(&vm.api_sock(), VMM_TIMEOUT).map_err(Error::vmm)?;
        let gen = {
            let mut g = vm.lock();
            g.rt.generation += 1;
            g.rt.pid = Some(pid);
            g.rt.stop_requested = false;
            g.rt.started = Some(Instant::now());
            g.rt.kvm = None;
            g.rt.vmm = Some(client);
            g.rt.generation
        };
        tracing::info!(vm = vm.id, pid, ?launch, uid, "VMM started");
        Ok((gen, spawned.child))
    }

    /// What the VM's jail holds: the binary, its kernel and initrd read-only; its
    /// disks, console, snapshots and socket directory read-write, given to `uid`.
    fn jail_spec(&self, vm: &Vm, rec: &VmRecord, launch: &Launch, uid: u32) -> Result<JailSpec> {
        let console = vm.console_log();
        // The VMM rotates its console into `console.log.1` in place (it cannot
        // create files in the jail): both exist before it starts.
        let rotated = nova_vmm_api::config::rotated_console(&console);
        for f in [&console, &rotated] {
            if !f.exists() {
                std::fs::write(f, b"").ctx(|| format!("creating {}", f.display()))?;
            }
        }
        let snapshots = vm.dir.join("snapshots");
        std::fs::create_dir_all(&snapshots).ctx(|| format!("creating {}", snapshots.display()))?;
        let disks: Vec<PathBuf> = rec.disks.iter().map(|d| vm.dir.join(&d.path)).collect();
        let mut read_only = vec![self.settings.vmm_bin.clone()];
        if matches!(launch, Launch::Boot | Launch::BootPaused) {
            let image = |r: &str| {
                self.images
                    .path_of(r)
                    .ok_or_else(|| Error::NotFound(format!("image {r} is not in the cache")))
            };
            read_only.push(image(&rec.spec.kernel)?);
            if let Some(i) = &rec.spec.initrd {
                read_only.push(image(i)?);
            }
            let config = vm.vmm_config();
            jail::give(&config, uid)?;
            read_only.push(config);
        }
        for p in disks.iter().chain([&console, &rotated, &vm.run_dir()]) {
            jail::give(p, uid)?;
        }
        // A stored snapshot (outside the VM's directory) is read, never written: its
        // memory file may be mapped by many clones at once.
        if let Launch::Restore { dir, .. } = launch {
            if !dir.starts_with(&snapshots) {
                read_only.push(dir.clone());
            }
        }
        let cred = vm.incoming_credential();
        if matches!(launch, Launch::Incoming(_)) && cred.exists() {
            jail::give(&cred, uid)?;
        }
        jail::give_tree(&snapshots, uid)?;
        let mut max_file = rec.spec.mem_mib << 20;
        for d in &disks {
            max_file = max_file.max(std::fs::metadata(d).map(|m| m.len()).unwrap_or(0));
        }
        let mut read_write = disks;
        read_write.extend([console, rotated, snapshots, vm.run_dir()]);
        Ok(JailSpec {
            vm_id: vm.id.clone(),
            uid,
            root: vm.jail_root(),
            workdir: vm.dir.clone(),
            read_only,
            read_write,
            vcpus: rec.spec.vcpus,
            mem_mib: rec.spec.mem_mib,
            max_file_bytes: max_file + (64 << 20),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vms::record::test_record;
    use nova_hostd_api::{NicInfo, VmState};

    fn paths() -> Paths<'static> {
        Paths {
            api_sock: Path::new("/d/api.sock"),
            console: Path::new("/d/console.log"),
            console_sock: Path::new("/d/console.sock"),
            config: Path::new("/d/vmm.json"),
            incoming_credential: Path::new("/d/run/incoming-credential.json"),
            insecure_migration: false,
            run_dir: Path::new("/d/run"),
        }
    }

    fn rec() -> VmRecord {
        let mut r = test_record(VmState::Starting);
        r.spec.kernel = "sha256:k".into();
        r.spec.cmdline = Some("nova.workload=idle".into());
        r.disks[0].path = "/d/disks/disk0.raw".into();
        r.disks[0].read_only = true;
        r.nics.push(NicInfo {
            mac: "02:00:00:00:00:01".into(),
            tap: "nt020000000001".into(),
        });
        r
    }

    #[test]
    fn a_boot_writes_the_vmms_own_config_with_cached_images() {
        let (args, cfg) = vmm_args(&rec(), &paths(), &Launch::Boot, |r| {
            Some(PathBuf::from(format!("/cache/{r}")))
        })
        .unwrap();
        assert_eq!(args, ["--config", "/d/vmm.json"]);
        let cfg = cfg.unwrap();
        assert_eq!(cfg.kernel, Path::new("/cache/sha256:k"));
        assert_eq!((cfg.vcpus, cfg.mem_mib), (2, 128));
        assert_eq!(cfg.disks[0].path, Path::new("/d/disks/disk0.raw"));
        assert!(cfg.disks[0].read_only);
        assert_eq!(
            cfg.disks[0].backup_bitmap.as_deref(),
            Some(Path::new("/d/run/disk0.bitmap"))
        );
        assert_eq!(cfg.nets[0].tap, "nt020000000001");
        assert_eq!(cfg.api_sock.as_deref(), Some(Path::new("/d/api.sock")));
        cfg.validate().unwrap();
    }

    #[test]
    fn insecure_migration_makes_every_vmm_plaintext_and_drops_the_credential() {
        let insecure = Paths {
            insecure_migration: true,
            ..paths()
        };
        let image = |r: &str| Some(PathBuf::from(format!("/cache/{r}")));
        let (boot, _) = vmm_args(&rec(), &insecure, &Launch::Boot, image).unwrap();
        assert_eq!(boot, ["--config", "/d/vmm.json", "--insecure"]);
        let incoming = Launch::Incoming("tcp:198.51.100.2:4000".into());
        let (args, _) = vmm_args(&rec(), &insecure, &incoming, image).unwrap();
        assert!(args.contains(&"--insecure".to_string()), "{args:?}");
        assert!(
            !args.contains(&"--incoming-credential".to_string()),
            "{args:?}"
        );
        let (args, _) = vmm_args(&rec(), &paths(), &incoming, image).unwrap();
        assert!(!args.contains(&"--insecure".to_string()), "{args:?}");
    }

    #[test]
    fn a_boot_from_an_image_not_in_the_cache_is_refused() {
        let e = vmm_args(&rec(), &paths(), &Launch::Boot, |_| None).unwrap_err();
        assert!(matches!(e, Error::NotFound(m) if m.contains("sha256:k")));
    }

    #[test]
    fn incoming_and_restore_pass_devices_as_flags() {
        let (args, cfg) = vmm_args(
            &rec(),
            &paths(),
            &Launch::Incoming("tcp:198.51.100.2:4000".into()),
            |_| None,
        )
        .unwrap();
        assert!(cfg.is_none());
        assert_eq!(
            args.join(" "),
            "--incoming tcp:198.51.100.2:4000 --mem-mib 128 --vcpus 2 \
             --incoming-credential /d/run/incoming-credential.json --api-sock /d/api.sock --console /d/console.log \
             --console-sock /d/console.sock --disk /d/disks/disk0.raw,ro,bitmap=/d/run/disk0.bitmap --net tap=nt020000000001,mac=02:00:00:00:00:01"
        );
        let (args, _) = vmm_args(
            &rec(),
            &paths(),
            &Launch::Restore {
                dir: "/d/snapshots/s".into(),
                lazy: true,
                clone: false,
            },
            |_| None,
        )
        .unwrap();
        assert_eq!(&args[..3], ["--restore", "/d/snapshots/s", "--lazy"]);
        let (args, _) = vmm_args(
            &rec(),
            &paths(),
            &Launch::Restore {
                dir: "/data/snapshots/g".into(),
                lazy: false,
                clone: true,
            },
            |_| None,
        )
        .unwrap();
        assert_eq!(&args[..3], ["--restore", "/data/snapshots/g", "--clone"]);
    }
}
