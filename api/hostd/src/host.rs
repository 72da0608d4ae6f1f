//! The host's side of the contract: its facts and capacity, its network, its image
//! cache, and what it tells the controller (registration, heartbeats).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::vm::VmState;

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
    /// The host image's version when hostd runs on the host image (`/etc/nova-version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_version: Option<String>,
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
    /// The host's serving key, when it asks the controller for its certificate (it
    /// was given no TLS files); the answer's `certificate` is it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<crate::HostKeyRequest>,
}

/// The controller's answer to a registration: this host's own credentials for its
/// heartbeats (the join token only registers) and how often to send them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    pub host_id: String,
    pub token: String,
    pub heartbeat_interval_ms: u64,
    /// The certificate issued for the request's `tls_key`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<crate::HostCertificate>,
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
