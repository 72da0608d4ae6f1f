//! nova-hostd-api: the contract of hostd's HTTP API, the bodies the controller and
//! other hosts send and read back, and (feature `client`) [`HostdClient`].
//!
//! Requests reject unknown fields, and every request type has a `validate` that names
//! the field that is wrong, so the controller can check a request before sending it.
//! Ids and names are [`validate_id`]-checked: they become directory and device names.

use std::collections::BTreeMap;
use std::net::IpAddr;

use utoipa::ToSchema;

pub use nova_http::{ErrorBody, FieldError};
pub use nova_vmm_api::config::{MAX_MEM_MIB, MAX_VCPUS, MIN_MEM_MIB};
pub use nova_vmm_api::{Compression, MigrationMode, MigrationParams};

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
pub use client::HostdClient;
use serde::{Deserialize, Serialize};

/// Longest VM id, VM name, snapshot name or image name.
pub const MAX_ID_LEN: usize = 63;
/// At most this many disks and NICs per VM.
pub const MAX_DISKS: usize = 8;
pub const MAX_NICS: usize = 8;
/// Longest kernel command line accepted.
pub const MAX_CMDLINE_LEN: usize = 2048;
/// Largest blank or grown disk, MiB (16 TiB).
pub const MAX_DISK_MIB: u64 = 16 << 20;

/// Checks an id or name that becomes a file or directory name: 1 to 63 characters of
/// `[A-Za-z0-9._-]`, not starting with `.` or `-` (so never `.`, `..`, a path, or NUL).
pub fn validate_id(field: &str, s: &str) -> Result<(), FieldError> {
    if s.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if s.len() > MAX_ID_LEN {
        return Err(FieldError::new(
            field,
            format!("longer than {MAX_ID_LEN} characters"),
        ));
    }
    if s.starts_with('.') || s.starts_with('-') {
        return Err(FieldError::new(field, "must not start with '.' or '-'"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(FieldError::new(
            field,
            format!("character {c:?} not allowed (only A-Z a-z 0-9 . _ -)"),
        ));
    }
    Ok(())
}

/// Checks `aa:bb:cc:dd:ee:ff`: unicast, not all zero.
pub fn parse_mac(field: &str, s: &str) -> Result<[u8; 6], FieldError> {
    let bad = || {
        FieldError::new(
            field,
            format!("'{s}' is not a MAC address like 02:00:00:00:00:01"),
        )
    };
    let parts: Vec<_> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *m = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 {
        return Err(FieldError::new(field, "is a multicast address"));
    }
    if mac == [0; 6] {
        return Err(FieldError::new(field, "is all zero"));
    }
    Ok(mac)
}

/// An image reference: `sha256:<64 hex>` (already in the host's image cache) or an
/// absolute path on the host (imported into the cache when the VM is created).
pub fn validate_image_ref(field: &str, s: &str) -> Result<(), FieldError> {
    if let Some(hex) = s.strip_prefix("sha256:") {
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Ok(());
        }
        return Err(FieldError::new(
            field,
            "sha256: must be followed by 64 lowercase hex digits",
        ));
    }
    if s.starts_with('/') && !s.contains('\0') && s.len() <= 4096 {
        return Ok(());
    }
    Err(FieldError::new(
        field,
        "must be sha256:<hex> or an absolute path",
    ))
}

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

/// A disk: a copy-on-write clone of a base image, or a blank sparse disk.
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

/// Where a VM is in its life on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Defined, never started (or stopped by request before start).
    Created,
    /// VMM spawned, API socket not answering yet.
    Starting,
    Running,
    Paused,
    /// The VMM exited cleanly (guest poweroff/reset, or stopped by request).
    Stopped,
    /// The VMM failed or was killed; see `exit`.
    Crashed,
    /// Leaving this host (live migration out in progress).
    MigratingOut,
    /// Arriving on this host: the VMM is receiving; not running here until the switch.
    MigratingIn,
}

/// How a VMM ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExitInfo {
    /// Exit code, when hostd was the VMM's parent (not after a reattach).
    pub code: Option<i32>,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// One line: what hostd knows about why.
    pub reason: String,
    /// The last console lines, for a crash report.
    pub console_tail: Vec<String>,
    /// The last lines of the VMM's own log.
    pub log_tail: Vec<String>,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// How a disk was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CloneMethod {
    /// FICLONE: shares blocks with the base image until written.
    Reflink,
    /// Copy of the base's data extents only (SEEK_DATA/SEEK_HOLE); holes stay holes.
    SparseCopy,
    /// A new sparse file.
    Blank,
}

/// A VM disk as made on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiskInfo {
    pub path: String,
    /// `sha256:<hex>` of the base image, if cloned.
    pub base: Option<String>,
    pub read_only: bool,
    pub size_bytes: u64,
    pub method: CloneMethod,
}

/// A VM NIC as made on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NicInfo {
    pub mac: String,
    pub tap: String,
}

/// One VM as hostd reports it (`GET /v1/vms/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VmInfo {
    pub id: String,
    pub name: String,
    pub state: VmState,
    /// The spec it was created with (`id` filled in; image refs resolved to `sha256:`).
    pub spec: VmSpec,
    pub pid: Option<u32>,
    /// `pvm` or `hardware`, as the VMM reports it.
    pub kvm: Option<String>,
    pub uptime_ms: Option<u64>,
    pub disks: Vec<DiskInfo>,
    pub nics: Vec<NicInfo>,
    /// Times hostd restarted it under its restart policy.
    pub restarts: u32,
    /// Last exit of its VMM.
    pub exit: Option<ExitInfo>,
    /// The VMM's counters (`vcpu_exits`, `io_exits`, `console_bytes`, ...), when running.
    pub counters: BTreeMap<String, u64>,
    /// The last migration that touched this VM here.
    pub migration: Option<MigrationStatus>,
}

/// `GET /v1/migrations`: under way and finished, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MigrationList {
    pub migrations: Vec<MigrationStatus>,
}

/// `GET /v1/vms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VmList {
    pub vms: Vec<VmInfo>,
}

/// Countable host resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Resources {
    pub vcpus: u64,
    pub mem_mib: u64,
    pub disk_mib: u64,
}

/// Host facts and capacity (`GET /v1/host`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostInfo {
    pub host_id: String,
    pub hostname: String,
    pub version: String,
    /// Physical facts.
    pub cores: u64,
    pub mem_mib: u64,
    /// Filesystem of the data dir.
    pub disk_total_mib: u64,
    pub disk_free_mib: u64,
    /// `pvm`, `hardware` or `none` (no usable /dev/kvm).
    pub kvm: String,
    pub cpu_overcommit: f64,
    pub mem_overcommit: f64,
    /// What admission control allows in total (cores x ratio, memory x ratio less the
    /// host reserve, free disk).
    pub capacity: Resources,
    /// What the VMs on this host hold.
    pub allocated: Resources,
    pub vms: u64,
    pub network: NetworkInfo,
}

/// The host's network as hostd set it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkInfo {
    pub bridge: String,
    pub host_cidr: Option<String>,
    pub vxlan: Option<VxlanInfo>,
}

/// The VXLAN overlay device on the bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VxlanInfo {
    pub device: String,
    pub vni: u32,
    #[schema(value_type = String)]
    pub local: IpAddr,
    #[schema(value_type = Vec<String>)]
    pub peers: Vec<IpAddr>,
}

/// `POST /v1/network/peers`: add a VXLAN peer (another host's underlay address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerRequest {
    #[schema(value_type = String)]
    pub address: IpAddr,
}

/// The destination hostd and the token to call it with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationTarget {
    /// `http://host:port` of the destination hostd.
    pub url: String,
    pub token: String,
}

/// `POST /v1/vms/{id}/migrate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    pub to: MigrationTarget,
    /// How the VMM moves the VM (its defaults: hybrid, 5 ms downtime target).
    #[serde(default)]
    pub params: MigrationParams,
}

impl MigrateRequest {
    pub fn validate(&self) -> Result<(), FieldError> {
        let u = &self.to.url;
        if !(u.starts_with("http://") || u.starts_with("https://"))
            || u.len() > 512
            || u.chars().any(char::is_whitespace)
        {
            return Err(FieldError::new(
                "to.url",
                "must be http(s)://HOST:PORT of the destination hostd",
            ));
        }
        if self.to.token.is_empty() || self.to.token.len() > 4096 {
            return Err(FieldError::new("to.token", "must be 1 to 4096 characters"));
        }
        self.params.validate().map_err(|e| e.under("params"))
    }
}

/// Which way a migration goes from this host's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MigrationDirection {
    Outgoing,
    Incoming,
}

/// Where a migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    /// Asking the destination to get ready / getting ready for the source.
    Preparing,
    /// VMM to VMM stream under way.
    Running,
    /// The VM runs on the destination; the source has let it go.
    Completed,
    /// The VM stays where it was (on the source); see `error`.
    Failed,
    Cancelled,
}

/// A migration's progress and result (`GET /v1/vms/{id}/migration`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MigrationStatus {
    pub id: String,
    pub vm_id: String,
    pub direction: MigrationDirection,
    pub state: MigrationState,
    pub mode: MigrationMode,
    /// The other hostd's URL (outgoing) or the source's address (incoming).
    pub peer: String,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// Downtime the VMM measured (pause on the source to run on the destination).
    pub downtime_ms: Option<f64>,
    pub total_ms: Option<f64>,
    pub bytes_sent: Option<u64>,
    pub rounds: Option<u64>,
    /// hostd's own time on the switch: from the VMM reporting completion to hostd
    /// having handed the VM over (ms, fractional).
    pub hostd_switch_ms: Option<f64>,
    pub error: Option<String>,
    /// The VMM's last `GET /v1/migration` answer.
    pub vmm: Option<nova_vmm_api::MigrationStatus>,
}

/// `POST /v1/migrations/incoming` (hostd to hostd): get ready to receive a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncomingRequest {
    pub migration_id: String,
    /// The VM's spec, `id` set; kernel/initrd/disk images by `sha256:` (the destination
    /// must have them, see `missing_images` in the answer).
    pub spec: VmSpec,
    /// The VM's NIC MACs (kept across hosts so traffic can follow).
    pub macs: Vec<String>,
    pub mode: MigrationMode,
    /// The source hostd's host id.
    pub source_host: String,
}

/// The destination's answer: where the source VMM should send the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IncomingReady {
    pub migration_id: String,
    /// `tcp:IP:PORT` for the source VMM's `PUT /v1/migration {"to"}`.
    pub address: String,
}

/// `POST /v1/migrations/incoming/{id}/complete` or `/abort` (hostd to hostd).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncomingOutcome {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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

/// `POST /v1/vms/{id}/restore`: start a stopped VM from one of its snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// A name given to `POST /v1/vms/{id}/snapshot`.
    pub snapshot: String,
    /// Fill memory on first touch (userfaultfd) instead of up front.
    #[serde(default)]
    pub lazy: bool,
}

impl RestoreRequest {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_id("snapshot", &self.snapshot)
    }
}

/// A snapshot taken on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotInfo {
    pub vm_id: String,
    pub name: String,
    pub path: String,
    pub diff: bool,
    pub created_at_ms: u64,
}

/// `GET /v1/vms/{id}/console?lines=N`: the last N lines of the console log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsoleLog {
    pub lines: Vec<String>,
    /// Size of the whole log.
    pub bytes: u64,
}

/// `POST /v1/images`: import a file already on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageImportRequest {
    /// Absolute path on the host.
    pub path: String,
}

/// An image in the content-addressed cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageInfo {
    /// `sha256:<hex>`.
    pub id: String,
    pub size_bytes: u64,
    /// Bytes actually allocated (sparse images are smaller).
    pub allocated_bytes: u64,
}

/// `GET /v1/images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageList {
    pub images: Vec<ImageInfo>,
}

/// `GET /v1/health` (no token needed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub host_id: String,
    pub version: String,
}

/// hostd to controller: `POST {controller}/v1/hosts/register` with the join token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub host_id: String,
    pub hostname: String,
    /// Where the controller reaches this hostd (`http://ip:port`).
    pub url: String,
    /// The token the controller must present to this hostd.
    pub token: String,
    pub info: HostInfo,
}

/// The controller's answer to a registration: this host's own credentials for its
/// heartbeats (the join token only registers) and how often to send them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    pub host_id: String,
    pub token: String,
    pub heartbeat_interval_ms: u64,
}

/// hostd to controller every few seconds: `POST {controller}/v1/hosts/{host_id}/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub host_id: String,
    pub info: HostInfo,
    /// Id and state of every VM on the host.
    pub vms: Vec<VmSummary>,
}

/// A VM in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmSummary {
    pub id: String,
    pub state: VmState,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        serde_json::from_str(r#"{"name":"a","kernel":"/k"}"#).unwrap()
    }

    #[test]
    fn ids_that_could_escape_the_data_dir_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\0b",
            "-x",
            ".hidden",
            &"x".repeat(64),
            "a b",
            "é",
        ] {
            assert!(validate_id("id", bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "vm-1", "web_2.prod", &"x".repeat(63)] {
            validate_id("id", good).unwrap();
        }
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let e =
            serde_json::from_str::<VmSpec>(r#"{"name":"a","kernel":"/k","cpus":2}"#).unwrap_err();
        assert!(e.to_string().contains("cpus"), "{e}");
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let mut s = spec();
        s.vcpus = 0;
        assert_eq!(s.validate().unwrap_err().field, "vcpus");
        let mut s = spec();
        s.mem_mib = 8;
        assert_eq!(s.validate().unwrap_err().field, "mem_mib");
        let mut s = spec();
        s.disks = vec![DiskSpec {
            image: None,
            size_mib: None,
            read_only: false,
        }];
        assert_eq!(s.validate().unwrap_err().field, "disks[0].size_mib");
        let mut s = spec();
        s.nics = vec![NicSpec {
            mac: Some("01:00:00:00:00:01".into()),
        }];
        assert_eq!(s.validate().unwrap_err().field, "nics[0].mac");
        let mut s = spec();
        s.kernel = "relative".into();
        assert_eq!(s.validate().unwrap_err().field, "kernel");
        spec().validate().unwrap();
    }
}
