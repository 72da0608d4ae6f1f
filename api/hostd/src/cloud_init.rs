//! Guest configuration a VM spec may carry (`cloud_init`), delivered the cloud-init
//! NoCloud way: hostd writes it to a small read-only `cidata` disk the guest reads
//! at boot. The limits here are the contract; hostd builds the disk.

use nova_http::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most SSH keys per VM.
pub const MAX_SSH_KEYS: usize = 32;
/// Longest SSH public key line.
pub const MAX_SSH_KEY_LEN: usize = 16 << 10;
/// Largest user-data or network-config, bytes (the seed disk holds them).
pub const MAX_CLOUD_INIT_DOC: usize = 256 << 10;

/// The guest's hostname, SSH keys, user-data and network configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudInit {
    /// The guest's hostname (`local-hostname`): RFC 1123 labels, at most 63 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// OpenSSH public keys (`ssh-ed25519 AAAA... comment`), one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    /// The user-data document as is (`#cloud-config ...`, a script, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// The network-config document as is (cloud-init network config v1 or v2 YAML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_config: Option<String>,
}

fn bad(field: &str, why: impl Into<String>) -> FieldError {
    FieldError::new(format!("cloud_init.{field}"), why)
}

/// Whether `h` is a hostname: dot-separated labels of letters, digits and inner
/// hyphens, each 1 to 63 bytes; the whole at most 253.
pub fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Whether `k` looks like one OpenSSH public key line: a known type, base64 data and
/// an optional comment of printable characters (nothing that could break the YAML
/// it is written into).
pub fn is_ssh_key(k: &str) -> bool {
    let mut parts = k.splitn(3, ' ');
    let (Some(kind), Some(data)) = (parts.next(), parts.next()) else {
        return false;
    };
    let comment = parts.next().unwrap_or("");
    let known = kind.starts_with("ssh-")
        || kind.starts_with("ecdsa-sha2-")
        || kind.starts_with("sk-ssh-")
        || kind.starts_with("sk-ecdsa-");
    known
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-@.".contains(&b))
        && !data.is_empty()
        && data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        && comment
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"\\'".contains(&b) || b == b' ')
}

impl CloudInit {
    /// Checks every field, naming it (`cloud_init.hostname`, ...).
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(h) = &self.hostname {
            if h.len() > 63 || !is_hostname(h) {
                return Err(bad(
                    "hostname",
                    "not a hostname (letters, digits, inner hyphens; dot-separated labels; at most 63 bytes)",
                ));
            }
        }
        if self.ssh_authorized_keys.len() > MAX_SSH_KEYS {
            return Err(bad(
                "ssh_authorized_keys",
                format!("more than {MAX_SSH_KEYS} keys"),
            ));
        }
        for (i, k) in self.ssh_authorized_keys.iter().enumerate() {
            if k.len() > MAX_SSH_KEY_LEN || !is_ssh_key(k) {
                return Err(bad(
                    &format!("ssh_authorized_keys[{i}]"),
                    "not one OpenSSH public key line (type, base64 data, optional comment)",
                ));
            }
        }
        for (name, doc) in [
            ("user_data", &self.user_data),
            ("network_config", &self.network_config),
        ] {
            if let Some(d) = doc {
                if d.len() > MAX_CLOUD_INIT_DOC {
                    return Err(bad(name, format!("larger than {MAX_CLOUD_INIT_DOC} bytes")));
                }
                if d.contains('\0') {
                    return Err(bad(name, "contains NUL"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_init_fields_are_checked_and_named() {
        let ok = CloudInit {
            hostname: Some("web-1.example".into()),
            ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB+x= ops@laptop".into()],
            user_data: Some("#cloud-config\n".into()),
            network_config: None,
        };
        ok.validate().unwrap();
        let field = |c: CloudInit| c.validate().unwrap_err().field;
        for h in ["", "-a", "a_b", "a..b", &"x".repeat(64)] {
            let c = CloudInit {
                hostname: Some(h.into()),
                ..ok.clone()
            };
            assert_eq!(field(c), "cloud_init.hostname", "{h:?}");
        }
        for k in [
            "",
            "ssh-ed25519",
            "rsa AAAA",
            "ssh-rsa AA\nAA",
            "ssh-rsa AAAA a\"b",
        ] {
            let c = CloudInit {
                ssh_authorized_keys: vec![k.into()],
                ..ok.clone()
            };
            assert_eq!(field(c), "cloud_init.ssh_authorized_keys[0]", "{k:?}");
        }
        let c = CloudInit {
            user_data: Some("a\0b".into()),
            ..ok.clone()
        };
        assert_eq!(field(c), "cloud_init.user_data");
    }
}
