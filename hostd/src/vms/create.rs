//! Creating a VM: its images resolved through the cache, admission (vCPUs, memory,
//! disk), unique MACs and their taps' names, its directory and disks, and a first
//! start when the spec asks for one. Refused with nothing left behind when it does
//! not fit.

use std::collections::HashSet;
use std::sync::Arc;

use nova_hostd_api::{
    parse_mac, CloneMethod, DiskInfo, FieldError, ImageInfo, NicInfo, Resources, VmInfo, VmSpec,
    VmState,
};

use crate::error::{Error, Result};
use crate::net::{mac, tap};
use crate::vms::record::{Vm, VmRecord};
use crate::vms::spawn::Launch;
use crate::vms::table::Vms;

fn gen_id() -> String {
    format!("vm-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// The disks of `spec` as they will be made (`disks/diskN.raw`, at least as large as
/// their base image; a shared one is its own path, sized when checked), and the total
/// virtual size in bytes of those made here.
pub fn plan_disks(spec: &VmSpec, bases: &[Option<ImageInfo>]) -> (Vec<DiskInfo>, u64) {
    let mut total = 0;
    let disks = spec
        .disks
        .iter()
        .zip(bases)
        .enumerate()
        .map(|(n, (d, base))| {
            if let Some(p) = &d.shared_path {
                // Used in place: nothing to make, nothing of this host's disk space.
                return DiskInfo {
                    path: p.clone(),
                    base: None,
                    read_only: d.read_only,
                    size_bytes: 0,
                    method: CloneMethod::Shared,
                };
            }
            let base_size = base.as_ref().map(|b| b.size_bytes).unwrap_or(0);
            let size = d.size_mib.map(|m| m << 20).unwrap_or(0).max(base_size);
            total += size;
            DiskInfo {
                path: format!("disks/disk{n}.raw"),
                base: base.as_ref().map(|b| b.id.clone()),
                read_only: d.read_only,
                size_bytes: size,
                method: if base.is_some() {
                    CloneMethod::SparseCopy
                } else {
                    CloneMethod::Blank
                },
            }
        })
        .collect();
    (disks, total)
}

/// A NIC with `mac` (from `field`), refused when the MAC is already used on this host;
/// its tap is named after the MAC.
pub fn nic(field: &str, mac_text: &str, used: &mut HashSet<[u8; 6]>) -> Result<NicInfo> {
    let m = parse_mac(field, mac_text)?;
    if !used.insert(m) {
        return Err(Error::Conflict(format!(
            "{field}: {mac_text} is in use on this host"
        )));
    }
    Ok(NicInfo {
        mac: mac::format(m),
        tap: tap::name(m),
    })
}

impl Vms {
    /// Creates a VM (and starts it if `spec.start`).
    pub async fn create_vm(self: &Arc<Self>, mut spec: VmSpec) -> Result<VmInfo> {
        spec.validate()?;
        let id = spec.id.clone().unwrap_or_else(gen_id);
        spec.id = Some(id.clone());
        if self.contains(&id) {
            return Err(Error::Conflict(format!(
                "a VM '{id}' already exists on this host"
            )));
        }
        if !spec.nics.is_empty() && !crate::net::link_exists(&self.net.bridge) && !can_make_links()
        {
            return Err(FieldError::new(
                "nics",
                "this host cannot create taps (needs root and /dev/net/tun)",
            )
            .into());
        }
        // Images first (imports can take a while; they are shared and idempotent).
        let images = self.images.clone();
        let spec2 = spec.clone();
        let (kernel, initrd, bases, shared) = tokio::task::spawn_blocking(move || -> Result<_> {
            let (k, _) = images.resolve("kernel", &spec2.kernel)?;
            let i = spec2
                .initrd
                .as_deref()
                .map(|r| images.resolve("initrd", r))
                .transpose()?;
            let mut disks = Vec::new();
            let mut shared = Vec::new();
            for (n, d) in spec2.disks.iter().enumerate() {
                shared.push(
                    d.shared_path
                        .as_deref()
                        .map(|p| images.shared_disk(&format!("disks[{n}].shared_path"), p))
                        .transpose()?,
                );
                let base = d
                    .image
                    .as_deref()
                    .map(|r| images.resolve(&format!("disks[{n}].image"), r))
                    .transpose()?;
                disks.push(base.map(|(info, _)| info));
            }
            Ok((k, i.map(|(info, _)| info), disks, shared))
        })
        .await
        .map_err(|e| Error::Conflict(format!("image task: {e}")))??;
        for (d, s) in spec.disks.iter_mut().zip(&shared) {
            if let Some((path, _)) = s {
                d.shared_path = Some(path.to_string_lossy().into_owned());
            }
        }
        spec.kernel = kernel.id.clone();
        spec.initrd = initrd.map(|i| i.id);
        for (d, b) in spec.disks.iter_mut().zip(&bases) {
            if let Some(b) = b {
                d.image = Some(b.id.clone());
            }
        }

        let vm = {
            let _adm = self.admission.lock().await;
            let (disks, disk_bytes) = plan_disks(&spec, &bases);
            self.admit(Resources {
                vcpus: if spec.start { spec.vcpus as u64 } else { 0 },
                mem_mib: if spec.start { spec.mem_mib } else { 0 },
                disk_mib: disk_bytes.div_ceil(1 << 20),
            })?;
            // Actual free space for the copies' data.
            let need_mib: u64 = bases
                .iter()
                .flatten()
                .map(|b| b.allocated_bytes.div_ceil(1 << 20))
                .sum();
            let free = crate::admission::disk_mib(&self.settings.data_dir).1;
            if need_mib > free {
                return Err(Error::NoCapacity(format!(
                    "disk: the base images need {need_mib} MiB of free space, {free} MiB free"
                )));
            }
            let mut used = self.macs_in_use();
            let mut nics = Vec::new();
            for (n, spec_nic) in spec.nics.iter_mut().enumerate() {
                let field = format!("nics[{n}].mac");
                let text = match &spec_nic.mac {
                    Some(m) => m.clone(),
                    None => mac::format(self.allocate_mac(&used)?),
                };
                let made = nic(&field, &text, &mut used)?;
                spec_nic.mac = Some(made.mac.clone());
                nics.push(made);
            }
            let rec = VmRecord {
                spec: spec.clone(),
                state: if spec.start {
                    VmState::Starting
                } else {
                    VmState::Created
                },
                disks,
                nics,
                restarts: 0,
                exit: None,
                migration: None,
            };
            self.insert_soon(&id, rec)?
        };
        tracing::info!(vm = id, name = spec.name, "created");
        if let Err(e) = self.make_disks_for(&vm, &bases).await {
            let _ = self.remove(&id);
            return Err(e);
        }
        if let Some(ci) = spec.cloud_init.clone() {
            if let Err(e) = self.make_seed_for(&vm, ci).await {
                let _ = self.remove(&id);
                return Err(e);
            }
        }
        if spec.start {
            // The launch makes the record durable while the VMM starts.
            let _op = vm.op.lock().await;
            self.launch(&vm, Launch::Boot).await?;
        } else {
            // Made durable in the background, not on the request's path: a VM that
            // never ran has nothing to lose but its record, and any start syncs it
            // before the VM is reported running. A power cut in the few milliseconds
            // before the fsync leaves no directory or an unreadable record, which
            // hostd reports as such (state `unknown`), never a wrong one.
            let v = vm.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = v.sync_record() {
                    tracing::warn!(vm = v.id, "persisting the new VM: {e}");
                }
            });
        }
        Ok(self.vm_info(&vm).await)
    }

    /// Writes the VM's NoCloud seed (`disks/seed.img`) and adds it, read-only, as its
    /// last disk.
    pub async fn make_seed_for(&self, vm: &Arc<Vm>, ci: nova_hostd_api::CloudInit) -> Result<()> {
        let path = vm.dir.join("disks/seed.img");
        let (p2, id) = (path.clone(), vm.id.clone());
        tokio::task::spawn_blocking(move || crate::nocloud::write_seed(&p2, &id, &ci))
            .await
            .map_err(|e| Error::Conflict(format!("seed task: {e}")))?
            .map_err(|e| Error::io(format!("making the seed disk {}", path.display()), e))?;
        tracing::info!(vm = vm.id, disk = %path.display(), "NoCloud seed made");
        vm.lock().rec.disks.push(DiskInfo {
            path: path.to_string_lossy().into_owned(),
            base: None,
            read_only: true,
            size_bytes: crate::nocloud::SEED_BYTES,
            method: CloneMethod::Blank,
        });
        vm.persist_soon()
    }

    /// Makes the VM's disks: clones of their base images, or blank sparse files.
    pub async fn make_disks_for(&self, vm: &Arc<Vm>, bases: &[Option<ImageInfo>]) -> Result<()> {
        let disks = vm.lock().rec.disks.clone();
        let mut made = Vec::new();
        for (d, base) in disks.into_iter().zip(bases) {
            let path = vm.dir.join(&d.path);
            if d.method == CloneMethod::Shared {
                // On shared storage: it must be there (the same file on every host).
                let meta = std::fs::metadata(&path)
                    .map_err(|e| Error::io(format!("shared disk {}", path.display()), e))?;
                if !meta.is_file() {
                    return Err(Error::Conflict(format!(
                        "shared disk {} is not a regular file",
                        path.display()
                    )));
                }
                tracing::info!(vm = vm.id, disk = %path.display(), "shared disk used in place");
                made.push(DiskInfo {
                    size_bytes: meta.len(),
                    ..d
                });
                continue;
            }
            let src = base.as_ref().and_then(|b| self.images.path_of(&b.id));
            let reflink = self.settings.reflink;
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
        vm.persist_soon()
    }
}

fn can_make_links() -> bool {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() } == 0) && std::path::Path::new("/dev/net/tun").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_are_planned_at_least_as_large_as_their_base() {
        let spec: VmSpec = serde_json::from_str(
            r#"{"name":"a","kernel":"/k","disks":[{"image":"/i","size_mib":1},{"size_mib":2,"read_only":true}]}"#,
        )
        .unwrap();
        let base = ImageInfo {
            id: "sha256:b".into(),
            size_bytes: 3 << 20,
            allocated_bytes: 1 << 20,
        };
        let (disks, total) = plan_disks(&spec, &[Some(base), None]);
        assert_eq!(disks[0].size_bytes, 3 << 20, "grown to the base's size");
        assert_eq!(disks[0].method, CloneMethod::SparseCopy);
        assert_eq!(disks[0].base.as_deref(), Some("sha256:b"));
        assert_eq!(
            (disks[1].path.as_str(), disks[1].method),
            ("disks/disk1.raw", CloneMethod::Blank)
        );
        assert!(disks[1].read_only);
        assert_eq!(total, 5 << 20);
    }

    #[test]
    fn a_mac_in_use_is_refused_and_taps_are_named_after_macs() {
        let mut used = HashSet::new();
        let n = nic("nics[0].mac", "02:AA:00:00:00:01", &mut used).unwrap();
        assert_eq!(
            (n.mac.as_str(), n.tap.as_str()),
            ("02:aa:00:00:00:01", "nt02aa00000001")
        );
        let e = nic("nics[1].mac", "02:aa:00:00:00:01", &mut used).unwrap_err();
        assert!(
            e.to_string()
                .contains("nics[1].mac: 02:aa:00:00:00:01 is in use"),
            "{e}"
        );
        let e = nic("nics[2].mac", "ff:ff:ff:ff:ff:ff", &mut used).unwrap_err();
        assert!(matches!(e, Error::Invalid(f) if f.field == "nics[2].mac"));
    }
}
