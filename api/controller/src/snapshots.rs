//! Cluster snapshots of VMs (memory, devices and disks, crash-consistent), their
//! schedules and retention, and templates: named, versioned, parameterized VM
//! recipes whose source is an image + spec or a golden snapshot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::VmSpec;

/// A snapshot of a VM as the controller keeps it (`/v1/vms/{id}/snapshots`). Its
/// files live in the snapshot store of `host` (and of the hosts in `copies`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    pub id: String,
    pub tenant: String,
    pub vm_id: String,
    /// The VM's name when it was taken.
    pub vm_name: String,
    pub name: String,
    /// The host whose store holds it.
    pub host: String,
    /// Other hosts it was copied to for a restore there.
    #[serde(default)]
    pub copies: Vec<String>,
    /// The VM's spec when it was taken (what a restore to a new VM recreates).
    pub spec: VmSpec,
    pub created_at_ms: u64,
    /// How long the VM was paused for it, ms.
    pub paused_ms: f64,
    /// Bytes its files take in the store.
    pub stored_bytes: u64,
    /// Taken by the VM's schedule (retention applies only to these).
    #[serde(default)]
    pub scheduled: bool,
}

/// `POST /v1/vms/{id}/snapshots` (the body is optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSnapshot {
    /// A name for people (letters, digits, `-_.`); made from the time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `POST /v1/snapshots/{id}/restore`: back into its VM (stopping it first), or into
/// a new VM named `new_vm`, on `host` (any host; the snapshot's own when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreSnapshot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_vm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// How many snapshots a schedule keeps: the newest `last`, plus the newest of each
/// of the last `hourly` hours, `daily` days and `weekly` weeks that have one (the
/// rules add up; a snapshot kept by any rule stays). All zero keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeepPolicy {
    #[serde(default)]
    pub last: u32,
    #[serde(default)]
    pub hourly: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
}

/// Shortest interval of a snapshot schedule, seconds.
pub const MIN_SCHEDULE_SECS: u64 = 1;
/// Longest interval of a snapshot schedule, seconds (30 days).
pub const MAX_SCHEDULE_SECS: u64 = 30 * 86_400;
/// Most snapshots a retention rule may name.
pub const MAX_KEEP: u32 = 1000;

/// `PUT /v1/vms/{id}/snapshot-schedule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// Take one every this many seconds.
    pub every_secs: u64,
    #[serde(default)]
    pub keep: KeepPolicy,
}

/// A VM's snapshot schedule, evaluated by the leading controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotSchedule {
    pub vm_id: String,
    pub tenant: String,
    pub every_secs: u64,
    pub keep: KeepPolicy,
    /// When it last took one, ms since the epoch (0: never).
    #[serde(default)]
    pub last_run_ms: u64,
    /// The last failure, if the last run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What a template parameter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// A whole number within `min..=max`.
    Integer,
    /// A hostname (RFC 1123 labels).
    Hostname,
    /// A list of OpenSSH public key lines.
    SshKeys,
    /// Free text (user-data).
    Text,
}

/// A value given for a parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ParamValue {
    Integer(u64),
    Text(String),
    List(Vec<String>),
}

/// One parameter of a template. Its `name` says what it sets: `vcpus`, `mem_mib`
/// (integers), `hostname`, `ssh_keys` or `user_data` (the guest configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateParam {
    pub name: String,
    pub kind: ParamKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Used when instantiation gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<ParamValue>,
    /// Instantiation must give it (when it has no default).
    #[serde(default)]
    pub required: bool,
    /// Bounds of an integer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

/// Where a template's VMs come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[allow(clippy::large_enum_variant)] // a wire type, kept flat for its JSON
pub enum TemplateSource {
    /// Boot this spec (its kernel, disks' images, command line).
    Image(VmSpec),
    /// A golden snapshot (a cluster snapshot id): clones restore from it, memory
    /// shared copy-on-write; a cold instance boots the spec it was taken of.
    Snapshot(String),
}

/// `POST /v1/templates`: a new template, or a new version of an existing one (of
/// the same name in the same tenant). Versions are immutable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTemplate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Vec<TemplateParam>,
    pub source: TemplateSource,
    /// Make this version the default (the first version always is).
    #[serde(default)]
    pub make_default: bool,
    /// A system template (visible to every tenant); system admins only.
    #[serde(default)]
    pub system: bool,
}

/// One immutable version of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateVersion {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub parameters: Vec<TemplateParam>,
    pub source: TemplateSource,
    /// The spec an instance starts from before its parameters apply (for a
    /// snapshot source, the spec of the VM it was taken of).
    pub base: VmSpec,
    pub created_at_ms: u64,
}

/// A template: its versions, and which one `name` alone means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Template {
    /// `<tenant>/<name>`.
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub default_version: u32,
    pub versions: Vec<TemplateVersion>,
    /// Store revision of this record (set on read).
    #[serde(default)]
    pub revision: u64,
}

/// How an instance is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstantiateMode {
    /// Boot from the kernel and images.
    Cold,
    /// Restore a clone of the golden snapshot (memory shared copy-on-write, disks
    /// reflinked), with its own MAC, hostname and instance id.
    Clone,
}

/// `POST /v1/templates/{ref}/instantiate` (`ref` is `name` or `name@version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Instantiate {
    /// The new VM's name.
    pub name: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamValue>,
    /// `clone` by default for a snapshot source, `cold` for an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<InstantiateMode>,
    /// Where a clone runs (the golden snapshot's host when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// `PUT /v1/templates/{name}/default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultVersion {
    pub version: u32,
}
