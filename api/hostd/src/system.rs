//! The host image's system (kernel + initramfs in A/B slots): what hostd reports about
//! it (`GET /v1/system`), and the upgrade contract (`PUT /v1/system/staged/{file}`
//! with each file's bytes, then `POST /v1/system/upgrade` to write them to the
//! inactive slot and reboot into it once). An image may carry an Ed25519 signature
//! over its [`system_image_manifest`] (version and the files' SHA-256s): a hostd that
//! trusts signing keys writes only an image one of them signed. `POST /v1/system/power`
//! powers the machine off or reboots it, its VMs first (per its `vms_at_shutdown`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::FieldError;

/// The files of a system image, as staged: `kernel` (vmlinuz) and `initrd`.
pub const SYSTEM_FILES: [&str; 2] = ["kernel", "initrd"];

/// `GET /v1/system`: the host image this hostd runs on, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SystemInfo {
    /// The image's version (`/etc/nova-version`); None off the host image.
    pub image_version: Option<String>,
    /// The slot booted (`a` or `b`, from `nova.slot=` on the kernel command line).
    pub slot: Option<String>,
    /// Whether this host can be upgraded (it runs from the host image's disk).
    pub upgradable: bool,
    /// The image signing keys this host trusts (hex Ed25519 public keys): when any,
    /// it installs only images one of them signed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_image_keys: Vec<String>,
}

/// `PUT /v1/system/staged/{file}`: what was staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StagedFile {
    pub file: String,
    pub size_bytes: u64,
    pub sha256: String,
}

/// `POST /v1/system/upgrade`: write the staged files to the inactive slot and boot it
/// once; it becomes the default only after it registers with the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemUpgradeRequest {
    /// The new image's version (what it will report).
    pub version: String,
    /// SHA-256 (hex) of the staged kernel and initrd: checked before the slot is written.
    pub kernel_sha256: String,
    pub initrd_sha256: String,
    /// The image's signature, if it has one (required by a host trusting keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ImageSignature>,
}

/// An Ed25519 signature over an image's [`system_image_manifest`], and the public
/// key that made it (both hex). Kept beside the image as `signature.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageSignature {
    /// The signer's Ed25519 public key: 64 hex digits.
    pub key: String,
    /// The signature: 128 hex digits.
    pub signature: String,
}

impl ImageSignature {
    /// Names the first bad field.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_key("signature.key", &self.key)?;
        validate_hex("signature.signature", &self.signature, 64)
    }
}

/// The bytes an image signature covers: a fixed first line (so no other signed text
/// can pass for an image's), the version and the SHA-256 of each file.
pub fn system_image_manifest(version: &str, kernel_sha256: &str, initrd_sha256: &str) -> String {
    format!(
        "nova-system-image v1\nversion {version}\nkernel sha256 {kernel_sha256}\ninitrd sha256 {initrd_sha256}\n"
    )
}

/// `n` bytes in lowercase hex.
fn validate_hex(field: &str, v: &str, n: usize) -> Result<(), FieldError> {
    if v.len() == 2 * n && v.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("not {n} bytes in lowercase hex ({} digits)", 2 * n),
        ))
    }
}

/// An Ed25519 public key: 32 bytes in lowercase hex.
pub fn validate_key(field: &str, v: &str) -> Result<(), FieldError> {
    validate_hex(field, v, 32).map_err(|_| {
        FieldError::new(
            field,
            format!("'{v}' is not an Ed25519 public key (64 lowercase hex digits)"),
        )
    })
}

/// What `POST /v1/system/power` does to a host on the host image (asked, and
/// answered with 202, before it happens): nova-init stops hostd, whose VMs are stopped
/// or migrated away first as the host's `vms_at_shutdown` says, then halts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PowerAction {
    Poweroff,
    Reboot,
}

/// `POST /v1/system/power`'s request and its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemPower {
    pub action: PowerAction,
}

/// The answer to an upgrade: the slot written; the host reboots into it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SystemUpgradeStarted {
    pub version: String,
    pub slot: String,
    pub from_version: Option<String>,
}

/// A version name: 1-64 of letters, digits, `.`, `-`, `_`, `+`, not starting with `.`
/// (it names a directory on the controller and a file in a slot).
pub fn validate_version(field: &str, v: &str) -> Result<(), FieldError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && !v.starts_with('.')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "'{v}' is not a version (1-64 of letters, digits, . - _ +, not starting with .)"
            ),
        ))
    }
}

/// A SHA-256 in hex (64 lowercase hex digits).
pub fn validate_sha256(field: &str, v: &str) -> Result<(), FieldError> {
    if v.len() == 64 && v.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "not a SHA-256 (64 lowercase hex digits)",
        ))
    }
}

impl SystemUpgradeRequest {
    /// Names the first bad field.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_version("version", &self.version)?;
        validate_sha256("kernel_sha256", &self.kernel_sha256)?;
        validate_sha256("initrd_sha256", &self.initrd_sha256)?;
        match &self.signature {
            Some(s) => s.validate(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_that_could_name_another_path_are_refused() {
        for v in ["", "..", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_version("version", v).is_err(), "{v:?}");
        }
        for v in ["0.1.0", "0.1.0+1765000000", "v2_test-1"] {
            validate_version("version", v).unwrap();
        }
    }

    #[test]
    fn upgrade_request_names_the_bad_hash() {
        let r = SystemUpgradeRequest {
            version: "2".into(),
            kernel_sha256: "a".repeat(64),
            initrd_sha256: "A".repeat(64),
            signature: None,
        };
        assert_eq!(r.validate().unwrap_err().field, "initrd_sha256");
    }

    #[test]
    fn signatures_name_a_malformed_key_or_signature() {
        let mut s = ImageSignature {
            key: "ab".repeat(32),
            signature: "cd".repeat(64),
        };
        s.validate().unwrap();
        s.signature.pop();
        assert_eq!(s.validate().unwrap_err().field, "signature.signature");
        s.key = "AB".repeat(32);
        assert_eq!(s.validate().unwrap_err().field, "signature.key");
    }

    #[test]
    fn the_manifest_names_version_and_both_hashes() {
        let m = system_image_manifest("2.0", "aa", "bb");
        assert_eq!(
            m,
            "nova-system-image v1\nversion 2.0\nkernel sha256 aa\ninitrd sha256 bb\n"
        );
    }
}
