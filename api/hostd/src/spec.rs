//! What the controller asks of hostd about a VM: its spec ([`VmSpec`], with the
//! limits it is checked against), and snapshot and restore requests.

use nova_http::FieldError;
use nova_vmm_api::config::{MAX_MEM_MIB, MAX_VCPUS, MIN_MEM_MIB};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::names::{parse_mac, validate_id, validate_image_ref};

/// At most this many disks and NICs per VM.
pub const MAX_DISKS: usize = 8;
pub const MAX_NICS: usize = 8;
/// Longest kernel command line accepted.
pub const MAX_CMDLINE_LEN: usize = 2048;
/// Largest blank or grown disk, MiB (16 TiB).
pub const MAX_DISK_MIB: u64 = 16 << 20;

/// What hostd does when a VM's VMM exits on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Report it (`stopped` or `crashed`) and leave it.
    #[default]
    Never,
    /// Restart when the VMM failed (non-zero exit or killed by a signal).
    OnFailure,
    /// Restart whenever it exits, also after a guest poweroff.
    Always,
}

/// One VM as the controller asks for it (`POST /v1/vms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// The VM's id on this host (and the directory `DATA/vms/<id>`); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A label for people; same character rules as ids.
    pub name: String,
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    #[serde(default = "default_mem_mib")]
    pub mem_mib: u64,
    /// Kernel image: `sha256:<hex>` from the image cache, or an absolute host path.
    pub kernel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    #[serde(default)]
    pub nics: Vec<NicSpec>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Start the VM as soon as it is created (default true).
    #[serde(default = "default_true")]
    pub start: bool,
    /// Guest configuration, given to the guest on a read-only NoCloud `cidata` disk
    /// (the VM's last disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<crate::CloudInit>,
}

fn default_vcpus() -> u8 {
    1
}
fn default_mem_mib() -> u64 {
    256
}
fn default_true() -> bool {
    true
}

/// A disk: a copy-on-write clone of a base image, a blank sparse disk, or an existing
/// file on storage every host sees (`shared_path`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Base image (`sha256:<hex>` or an absolute path); blank disk when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Size in MiB: required for a blank disk; grows a clone when larger than its image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mib: Option<u64>,
    #[serde(default)]
    pub read_only: bool,
    /// An existing disk file on storage every host sees at this path (NFS, a shared
    /// filesystem), used in place: never cloned nor removed by hostd, and not copied
    /// by a migration (the destination opens the same file). Absolute, under an
    /// `--image-root`; excludes `image` and `size_mib`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_path: Option<String>,
}

/// A NIC on the host's bridge.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    /// `02:..`; assigned by hostd (locally administered, unique on the host) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl VmSpec {
    /// Checks every range and format, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(id) = &self.id {
            validate_id("id", id)?;
        }
        validate_id("name", &self.name)?;
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(FieldError::new(
                "vcpus",
                format!("{} is out of range 1..={MAX_VCPUS}", self.vcpus),
            ));
        }
        if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&self.mem_mib) {
            return Err(FieldError::new(
                "mem_mib",
                format!(
                    "{} is out of range {MIN_MEM_MIB}..={MAX_MEM_MIB}",
                    self.mem_mib
                ),
            ));
        }
        validate_image_ref("kernel", &self.kernel)?;
        if let Some(i) = &self.initrd {
            validate_image_ref("initrd", i)?;
        }
        if let Some(c) = &self.cmdline {
            if c.len() > MAX_CMDLINE_LEN {
                return Err(FieldError::new(
                    "cmdline",
                    format!("longer than {MAX_CMDLINE_LEN} bytes"),
                ));
            }
            if c.bytes().any(|b| b == 0 || b == b'\n') {
                return Err(FieldError::new("cmdline", "contains NUL or a newline"));
            }
        }
        if self.disks.len() > MAX_DISKS {
            return Err(FieldError::new(
                "disks",
                format!("more than {MAX_DISKS} disks"),
            ));
        }
        for (i, d) in self.disks.iter().enumerate() {
            if let Some(p) = &d.shared_path {
                let field = format!("disks[{i}].shared_path");
                if !p.starts_with('/') || p.len() > 4096 || p.contains('\0') {
                    return Err(FieldError::new(field, "must be an absolute path"));
                }
                if d.image.is_some() || d.size_mib.is_some() {
                    return Err(FieldError::new(
                        field,
                        "a shared disk is used as it is: no image, no size_mib",
                    ));
                }
                continue;
            }
            if let Some(img) = &d.image {
                validate_image_ref(&format!("disks[{i}].image"), img)?;
            } else if d.size_mib.is_none() {
                return Err(FieldError::new(
                    format!("disks[{i}].size_mib"),
                    "required for a blank disk",
                ));
            }
            if let Some(s) = d.size_mib {
                if s == 0 || s > MAX_DISK_MIB {
                    return Err(FieldError::new(
                        format!("disks[{i}].size_mib"),
                        format!("{s} is out of range 1..={MAX_DISK_MIB}"),
                    ));
                }
            }
        }
        if self.nics.len() > MAX_NICS {
            return Err(FieldError::new(
                "nics",
                format!("more than {MAX_NICS} NICs"),
            ));
        }
        if let Some(ci) = &self.cloud_init {
            ci.validate()?;
            if self.disks.len() >= MAX_DISKS {
                return Err(FieldError::new(
                    "cloud_init",
                    format!("its seed disk would make more than {MAX_DISKS} disks"),
                ));
            }
        }
        let mut seen = Vec::new();
        for (i, n) in self.nics.iter().enumerate() {
            if let Some(m) = &n.mac {
                let mac = parse_mac(&format!("nics[{i}].mac"), m)?;
                if seen.contains(&mac) {
                    return Err(FieldError::new(
                        format!("nics[{i}].mac"),
                        "used twice in this VM",
                    ));
                }
                seen.push(mac);
            }
        }
        Ok(())
    }
}

/// `POST /v1/vms/{id}/snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// Directory name under `DATA/vms/<id>/snapshots/`.
    pub name: String,
    /// Only pages dirtied since the last snapshot.
    #[serde(default)]
    pub diff: bool,
}

impl SnapshotRequest {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_id("name", &self.name)
    }
}

/// Longest a graceful stop may wait for the guest, ms.
pub const MAX_STOP_TIMEOUT_MS: u64 = 600_000;
/// How long a graceful stop waits for the guest when the request does not say, ms.
pub const DEFAULT_STOP_TIMEOUT_MS: u64 = 5_000;

/// `POST /v1/vms/{id}/stop` (the body is optional): the VM's ACPI power button is
/// pressed and the guest has `timeout_ms` to power off before its VMM stops it;
/// with `force` (or `?force=true`) the VMM is killed at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopVmRequest {
    #[serde(default)]
    pub force: bool,
    /// 1..=600000; [`DEFAULT_STOP_TIMEOUT_MS`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl StopVmRequest {
    pub fn validate(&self) -> Result<(), FieldError> {
        match self.timeout_ms {
            Some(t) if t == 0 || t > MAX_STOP_TIMEOUT_MS => Err(FieldError::new(
                "timeout_ms",
                format!("{t} is out of range 1..={MAX_STOP_TIMEOUT_MS}"),
            )),
            _ => Ok(()),
        }
    }
}

/// `POST /v1/vms/{id}/restore`: start a stopped VM from one of its snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// A name given to `POST /v1/vms/{id}/snapshot`.
    pub snapshot: String,
    /// Fill memory on first touch (userfaultfd) instead of up front.
    #[serde(default)]
    pub lazy: bool,
    /// `snapshot` names a snapshot in the host's store (`POST /v1/snapshots`), not
    /// one of this VM's own; its disks replace the VM's writable disks first.
    #[serde(default)]
    pub stored: bool,
    /// Map the snapshot's memory copy-on-write, shared with every other clone of it
    /// (only with `stored`).
    #[serde(default)]
    pub clone: bool,
}

impl RestoreRequest {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_id("snapshot", &self.snapshot)?;
        if self.clone && self.lazy {
            return Err(FieldError::new("clone", "a clone cannot also be lazy"));
        }
        if self.clone && !self.stored {
            return Err(FieldError::new(
                "clone",
                "clones are made from stored snapshots only",
            ));
        }
        Ok(())
    }
}
