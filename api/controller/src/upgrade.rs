//! Host image upgrades: the versions the controller holds (`GET /v1/system-images`,
//! from its `--system-images` directory) and the upgrade of one host (`POST
//! /v1/hosts/{id}/upgrade`): the controller streams the version's kernel and
//! initramfs to the host's hostd, which writes them to its inactive slot and reboots
//! into it once; the host comes back Ready on the new version, or (if the new system
//! does not register in time) on the old one.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One host image version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SystemImage {
    pub version: String,
    pub kernel_bytes: u64,
    pub initrd_bytes: u64,
    /// When the version's directory last changed (ms since the epoch): the newest is
    /// the default of an upgrade.
    pub modified_ms: u64,
    /// The public key (hex) whose signature the version carries (its
    /// `signature.json`); absent when it is unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

/// The file beside a version's `vmlinuz` and `initrd.img` holding its signature
/// ([`ImageSignature`], written by `novactl host-image sign`).
pub const SIGNATURE_FILE: &str = "signature.json";

pub use nova_hostd_api::{
    system_image_manifest, validate_version, ImageSignature, PowerAction, SystemPower,
};

/// The data of the `host.upgrading` and `host.upgrade_failed` events: the version,
/// the slot written (upgrading) or why it failed (upgrade_failed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostUpgradeEvent {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/system-images`, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SystemImages {
    pub images: Vec<SystemImage>,
}

/// `POST /v1/hosts/{id}/upgrade`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostUpgradeRequest {
    /// The version to install; the newest when absent.
    #[serde(default)]
    pub image: Option<String>,
}

/// The answer (202): the controller is streaming `to_version` to the host, which
/// then reboots into it; follow the host's state and `image_version` (failures are
/// `host.upgrade_failed` events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostUpgrade {
    pub host: String,
    pub from_version: Option<String>,
    pub to_version: String,
}
