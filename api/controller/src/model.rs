//! The objects the controller stores and its API shows: hosts, VMs (desired and
//! observed state), operations, tenants, users, API tokens and audit entries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The tenant that owns the cluster itself: its admins manage hosts and every tenant.
pub const SYSTEM_TENANT: &str = "system";

/// Countable resources of a host or a VM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Resources {
    pub vcpus: u64,
    pub mem_mib: u64,
    #[serde(default)]
    pub disk_mib: u64,
}

impl Resources {
    /// Component-wise sum.
    pub fn plus(self, o: Resources) -> Resources {
        Resources {
            vcpus: self.vcpus + o.vcpus,
            mem_mib: self.mem_mib + o.mem_mib,
            disk_mib: self.disk_mib + o.disk_mib,
        }
    }
    /// Component-wise difference, floored at zero.
    pub fn minus(self, o: Resources) -> Resources {
        Resources {
            vcpus: self.vcpus.saturating_sub(o.vcpus),
            mem_mib: self.mem_mib.saturating_sub(o.mem_mib),
            disk_mib: self.disk_mib.saturating_sub(o.disk_mib),
        }
    }
    /// Every component of `self` fits in `o`.
    pub fn fits_in(self, o: Resources) -> bool {
        self.vcpus <= o.vcpus && self.mem_mib <= o.mem_mib && self.disk_mib <= o.disk_mib
    }
}

/// Whether a host takes part in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Heartbeating.
    Ready,
    /// Missed its heartbeats.
    Down,
}

/// A host as the controller knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Host {
    pub id: String,
    pub hostname: String,
    /// Where the controller reaches its hostd.
    pub url: String,
    /// The token the controller presents to its hostd (never shown by the API).
    #[serde(default)]
    pub hostd_token: String,
    pub labels: BTreeMap<String, String>,
    pub state: HostState,
    /// No new VMs are placed on it.
    pub cordoned: bool,
    /// A drain is evacuating it.
    pub draining: bool,
    pub capacity: Resources,
    /// What hostd reports allocated.
    pub allocated: Resources,
    pub kvm: String,
    /// The host image's version when the host runs from it (upgrades: `POST
    /// /v1/hosts/{id}/upgrade`).
    #[serde(default)]
    pub image_version: Option<String>,
    pub registered_at_ms: u64,
    pub last_heartbeat_ms: u64,
    /// Store revision of this record (set on read): what `If-Match` names.
    #[serde(default)]
    pub revision: u64,
}

/// What a user wants of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    Running,
    Stopped,
    /// Being removed from its host; the record goes once hostd has let it go.
    Deleted,
}

/// What the controller does when a VM's host goes down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostFailurePolicy {
    /// Wait for the host to come back.
    #[default]
    Wait,
    /// Start it again on another host.
    Restart,
}

/// A disk of a VM spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskRequest {
    /// Base image (absolute path on the host or `sha256:<hex>`); blank when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mib: Option<u64>,
    #[serde(default)]
    pub read_only: bool,
    /// An existing disk file on storage every host sees at this path (NFS, a shared
    /// filesystem): used in place, and a migration does not copy it. System admins
    /// only (a host path); excludes `image` and `size_mib`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_path: Option<String>,
}

/// A NIC of a VM spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NicRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// Where a VM may (affinity) or may not (anti-affinity) run: next to VMs of the same
/// tenant carrying these labels.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Affinity {
    /// Labels (`k=v`) a host must carry.
    #[serde(default)]
    pub host_labels: BTreeMap<String, String>,
    /// Run on a host that already runs a VM with one of these labels (`k=v`).
    #[serde(default)]
    pub with: Vec<String>,
    /// Never share a host with a VM carrying one of these labels (`k=v`).
    #[serde(default)]
    pub apart_from: Vec<String>,
}

/// `POST /v1/vms`: a VM as a user asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    pub name: String,
    #[serde(default = "one")]
    pub vcpus: u8,
    #[serde(default = "mem_default")]
    pub mem_mib: u64,
    /// The kernel to boot: `sha256:<hex>` from the image cache (or, for admins, an
    /// absolute path on the hosts). `image` is its old name, still read.
    #[serde(alias = "image")]
    pub kernel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(default)]
    pub disks: Vec<DiskRequest>,
    #[serde(default)]
    pub nics: Vec<NicRequest>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub affinity: Affinity,
    #[serde(default)]
    pub on_host_failure: HostFailurePolicy,
    /// Start once placed (default true).
    #[serde(default = "yes")]
    pub start: bool,
    /// Guest configuration (hostname, SSH keys, user-data, network config) on a
    /// read-only NoCloud `cidata` disk, the VM's last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<nova_hostd_api::CloudInit>,
}

fn one() -> u8 {
    1
}
fn mem_default() -> u64 {
    256
}
fn yes() -> bool {
    true
}

impl VmSpec {
    /// The spec a body naming only `name` and `kernel` means: every other field at
    /// the API's default.
    pub fn new(name: impl Into<String>, kernel: impl Into<String>) -> VmSpec {
        VmSpec {
            name: name.into(),
            vcpus: one(),
            mem_mib: mem_default(),
            kernel: kernel.into(),
            initrd: None,
            cmdline: None,
            disks: Vec::new(),
            nics: Vec::new(),
            labels: BTreeMap::new(),
            affinity: Affinity::default(),
            on_host_failure: HostFailurePolicy::default(),
            start: yes(),
            cloud_init: None,
        }
    }

    /// What the VM holds on its host.
    pub fn resources(&self) -> Resources {
        let disk: u64 = self.disks.iter().filter_map(|d| d.size_mib).sum();
        Resources {
            vcpus: self.vcpus as u64,
            mem_mib: self.mem_mib,
            disk_mib: disk,
        }
    }

    /// The VM's labels as `k=v` strings.
    pub fn label_pairs(&self) -> impl Iterator<Item = String> + '_ {
        self.labels.iter().map(|(k, v)| format!("{k}={v}"))
    }
}

/// What hostd last said about a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Observed {
    /// hostd's state name (`running`, `stopped`, ...), `missing` when hostd does not
    /// have it, `unknown` when its host is down.
    pub state: String,
    pub host: Option<String>,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A VM: its spec and desired state (the user's), its placement and observed state
/// (the controller's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Vm {
    pub id: String,
    pub tenant: String,
    pub spec: VmSpec,
    pub desired: DesiredState,
    /// The host it is placed on.
    pub host: Option<String>,
    pub observed: Option<Observed>,
    /// A migration operation under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrating: Option<String>,
    pub created_at_ms: u64,
    /// Store revision of this record (set on read): what `If-Match` names.
    #[serde(default)]
    pub revision: u64,
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl OpState {
    /// Succeeded, failed or cancelled.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OpState::Succeeded | OpState::Failed | OpState::Cancelled
        )
    }
}

/// A long-running operation (migration, drain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Operation {
    pub id: String,
    pub tenant: String,
    /// `migrate` or `drain`.
    pub kind: String,
    /// The VM or host it acts on.
    pub target: String,
    pub state: OpState,
    /// 0 to 100.
    pub progress: u8,
    pub message: String,
    /// Results: downtime_ms, total_ms, bytes, per-VM outcomes of a drain.
    #[schema(value_type = Object)]
    pub result: serde_json::Value,
    pub cancel_requested: bool,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Store revision of this record (set on read): what `If-Match` names.
    #[serde(default)]
    pub revision: u64,
}

/// A tenant and its quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    /// Most a tenant's VMs may hold in total; unlimited when absent.
    pub quota: Option<Quota>,
    pub created_at_ms: u64,
}

/// A tenant's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub vcpus: u64,
    pub mem_mib: u64,
    pub vms: u64,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read only.
    Viewer,
    /// Manage VMs (and, in the system tenant, hosts).
    Operator,
    /// Also manage users and tokens (and, in the system tenant, tenants).
    Admin,
    /// A registered hostd: heartbeats for its own host only.
    Host,
}

/// A person or robot in a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: String,
    pub tenant: String,
    pub role: Role,
    pub created_at_ms: u64,
}

/// An API token: only the SHA-256 of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    /// Public id (first 16 hex digits of the hash), for listing and revoking.
    pub id: String,
    /// Hex SHA-256 of the secret (stored; blanked before the API shows a token).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
    pub user: String,
    pub tenant: String,
    pub role: Role,
    /// For host credentials: the host it speaks for.
    pub host: Option<String>,
    pub created_at_ms: u64,
}

/// One mutating call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Sorts by time (`<at_ms>-<random>`).
    #[serde(default)]
    pub id: String,
    pub at_ms: u64,
    /// User id (or `host:<id>`, `join-token`).
    pub actor: String,
    pub tenant: String,
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// One state change, as stored in the cluster's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Where the event is in the cluster's log: increases with every event, the same
    /// on every controller; `GET /v1/events?since=<revision>` resumes after it.
    #[serde(default)]
    pub revision: u64,
    pub at_ms: u64,
    /// `vm.created`, `vm.placed`, `vm.state`, `vm.deleted`, `host.registered`, `host.ready`,
    /// `host.down`, `host.cordoned`, `operation.progress`, `operation.done`, ...
    pub kind: String,
    /// Owner of the object (`system` for hosts).
    pub tenant: String,
    /// The object's id.
    pub id: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}
