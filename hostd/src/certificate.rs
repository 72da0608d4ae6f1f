//! This host's serving certificate when it was given no TLS files: a fresh P-256 key
//! made here for every issuance (it never leaves the host), the request that proves
//! it for this host id (`HostKeyRequest`), and the controller's answer kept with the
//! key in one 0600 PEM file (`DATA/tls/host.pem`, replaced atomically, so the server,
//! which reads it again when it changes, never sees a key with another's certificate)
//! and its validity beside it (`host.pem.validity`: not-before and not-after, ms).
//! On a host image without a data partition the data dir is a tmpfs: the key then
//! lives in memory only and a reboot makes a new one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nova_hostd_api::{HostCertificate, HostKeyRequest};

/// A key made for one issuance, not yet certified.
pub struct PendingKey {
    pem: String,
    /// The request proving the key for the host id it was made for.
    pub request: HostKeyRequest,
}

/// Why a key could not be made or a certificate kept.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("making a key: {0}")]
    Key(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// Makes a new P-256 key and its request for `host_id`.
pub fn new_key(host_id: &str) -> Result<PendingKey, CertError> {
    let key = rcgen::KeyPair::generate().map_err(|e| CertError::Key(e.to_string()))?;
    let request = HostKeyRequest::sign(&key.serialize_der(), host_id)
        .map_err(|e| CertError::Key(e.problem))?;
    Ok(PendingKey {
        pem: key.serialize_pem(),
        request,
    })
}

fn validity_file(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".validity");
    PathBuf::from(p)
}

/// Keeps `key` with its certificate `cert` in `file` (and the validity beside it).
pub fn keep(file: &Path, key: &PendingKey, cert: &HostCertificate) -> Result<(), CertError> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |e| CertError::Io(p, e)
    };
    let v = validity_file(file);
    nova_durable::write_secret(
        &v,
        format!("{} {}\n", cert.not_before_ms, cert.not_after_ms).as_bytes(),
    )
    .map_err(io(&v))?;
    let both = format!("{}{}", key.pem, cert.pem);
    nova_durable::write_secret(file, both.as_bytes()).map_err(io(file))
}

/// The validity (not-before, not-after; ms since the epoch) of the certificate kept
/// in `file`, if there is one.
pub fn validity(file: &Path) -> Option<(u64, u64)> {
    if !file.exists() {
        return None;
    }
    let t = std::fs::read_to_string(validity_file(file)).ok()?;
    let mut w = t.split_whitespace().map(str::parse::<u64>);
    match (w.next(), w.next()) {
        (Some(Ok(a)), Some(Ok(b))) if a < b => Some((a, b)),
        _ => None,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether the certificate in `file` may be served now (valid for another minute).
pub fn usable(file: &Path) -> bool {
    validity(file).is_some_and(|(_, until)| until > now_ms() + 60_000)
}

/// How long until a certificate just received, valid until `not_after_ms`, should be
/// renewed: after two thirds of what is left of it (kubelet renews between 70 and
/// 90 % of its life). Counted from now, not from its not-before, which the
/// controller backdates a minute for clock skew.
pub fn renew_in(not_after_ms: u64) -> Duration {
    Duration::from_millis(not_after_ms.saturating_sub(now_ms()) * 2 / 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_certificate_is_usable_until_a_minute_before_it_expires() {
        let d = std::env::temp_dir().join(format!("nova-hostcert-{}", std::process::id()));
        let f = d.join("tls/host.pem");
        assert!(!usable(&f));
        let k = new_key("h1").unwrap();
        k.request.verify("h1").unwrap();
        let now = now_ms();
        let c = HostCertificate {
            pem: "-----BEGIN CERTIFICATE-----\n".into(),
            not_before_ms: now,
            not_after_ms: now + 3_600_000,
        };
        keep(&f, &k, &c).unwrap();
        assert!(usable(&f));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key is the owner's only");
        let soon = HostCertificate {
            not_after_ms: now + 30_000,
            ..c
        };
        keep(&f, &k, &soon).unwrap();
        assert!(!usable(&f), "expiring within the minute");
        let r = renew_in(now_ms() + 3_000_000).as_millis() as u64;
        assert!((1_990_000..=2_000_000).contains(&r), "{r}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
