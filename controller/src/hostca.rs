//! The controller as the certificate authority of hostd's serving certificates
//! (`--hostd-ca` with `--hostd-ca-key`): a host that was given no TLS files sends its
//! public key with a proof of possession when it registers (or renews); this signs a
//! short-lived certificate naming the host id and the host of the URL the controller
//! dials, which the controller (and other hosts) verify against `--hostd-ca`.
//! Owns loading the CA pair and signing; who may ask is decided in `hosts`.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};

use nova_hostd_api::HostCertificate;

/// Why the CA could not be loaded or a certificate not be made.
#[derive(Debug, thiserror::Error)]
pub enum HostCaError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Bad(String),
    #[error("signing: {0}")]
    Sign(#[from] rcgen::Error),
}

/// The hostd CA: its certificate (whose subject becomes the issuer of what it signs)
/// and its key.
pub struct HostCa {
    issuer: rcgen::Certificate,
    key: KeyPair,
    /// How long an issued certificate lives.
    pub ttl: Duration,
}

impl std::fmt::Debug for HostCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCa").field("ttl", &self.ttl).finish()
    }
}

/// A host's public key as `rcgen` signs it: an uncompressed P-256 point.
struct HostKey<'a>(&'a [u8]);

impl PublicKeyData for HostKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }
    fn algorithm(&self) -> &SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// The subject name (as rcgen values) and the subject public key bits of a DER
/// certificate.
fn subject_and_key(der: &[u8]) -> Result<(DistinguishedName, Vec<u8>), String> {
    let tbs = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let tbs = r.next().read_der()?;
            r.next().read_der()?;
            r.next().read_der()?;
            Ok(tbs)
        })
    })
    .map_err(|e| format!("not a DER certificate: {e}"))?;
    let (subject, spki) = yasna::parse_der(&tbs, |r| {
        r.read_sequence(|r| {
            r.read_optional(|r| r.read_tagged(yasna::Tag::context(0), |r| r.read_der()))?;
            for _ in 0..4 {
                r.next().read_der()?; // serial, signature, issuer, validity
            }
            let subject = r.next().read_der()?;
            let spki = r.next().read_der()?;
            while r.read_optional(|r| r.read_der())?.is_some() {}
            Ok((subject, spki))
        })
    })
    .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let key = yasna::parse_der(&spki, |r| {
        r.read_sequence(|r| {
            r.next().read_der()?;
            Ok(r.next().read_bitvec_bytes()?.0)
        })
    })
    .map_err(|e| format!("its public key: {e}"))?;
    let mut dn = DistinguishedName::new();
    let mut unsupported = None;
    yasna::parse_der(&subject, |r| {
        r.read_sequence_of(|r| {
            r.read_set_of(|r| {
                r.read_sequence(|r| {
                    let oid = r.next().read_oid()?;
                    let v = r.next();
                    let value = match v.lookahead_tag()? {
                        yasna::tags::TAG_UTF8STRING => DnValue::Utf8String(v.read_utf8string()?),
                        yasna::tags::TAG_PRINTABLESTRING => {
                            let s = v.read_printable_string()?;
                            match rcgen::PrintableString::try_from(s) {
                                Ok(p) => DnValue::PrintableString(p),
                                Err(_) => {
                                    return Err(yasna::ASN1Error::new(
                                        yasna::ASN1ErrorKind::Invalid,
                                    ))
                                }
                            }
                        }
                        yasna::tags::TAG_IA5STRING => {
                            let s = v.read_ia5_string()?;
                            match rcgen::Ia5String::try_from(s) {
                                Ok(p) => DnValue::Ia5String(p),
                                Err(_) => {
                                    return Err(yasna::ASN1Error::new(
                                        yasna::ASN1ErrorKind::Invalid,
                                    ))
                                }
                            }
                        }
                        t => {
                            unsupported = Some(format!("{t:?}"));
                            v.read_der()?;
                            return Ok(());
                        }
                    };
                    dn.push(DnType::CustomDnType(oid.components().clone()), value);
                    Ok(())
                })
            })
        })
    })
    .map_err(|e| format!("its subject name: {e}"))?;
    if let Some(t) = unsupported {
        return Err(format!(
            "its subject name has a string type this CA cannot reproduce ({t}): \
             use a CA whose subject is UTF8String, PrintableString or IA5String"
        ));
    }
    Ok((dn, key))
}

impl HostCa {
    /// Loads the CA certificate `cert` and its key `key` (PEM files); issued
    /// certificates live `ttl`. Refuses a key that is not the certificate's.
    pub fn load(cert: &Path, key: &Path, ttl: Duration) -> Result<HostCa, HostCaError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| HostCaError::Io(p.display().to_string(), e))
        };
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let der = pem::parse(&cert_pem)
            .map_err(|e| HostCaError::Bad(format!("{}: {e}", cert.display())))?;
        let (dn, ca_public) = subject_and_key(der.contents())
            .map_err(|e| HostCaError::Bad(format!("{}: {e}", cert.display())))?;
        let key_pair = KeyPair::from_pem(&key_pem)
            .map_err(|e| HostCaError::Bad(format!("{}: {e}", key.display())))?;
        if key_pair.public_key_raw() != ca_public.as_slice() {
            return Err(HostCaError::Bad(format!(
                "{} is not the key of {}",
                key.display(),
                cert.display()
            )));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = params.self_signed(&key_pair)?;
        Ok(HostCa {
            issuer,
            key: key_pair,
            ttl,
        })
    }

    /// Signs a certificate for `host_id`'s verified P-256 `point`, naming the host id
    /// and the host of `url` (an IP address or a DNS name), valid from a minute ago
    /// (clock skew) for `ttl`.
    pub fn issue(
        &self,
        host_id: &str,
        url: &str,
        point: &[u8],
    ) -> Result<HostCertificate, HostCaError> {
        let host =
            url_host(url).ok_or_else(|| HostCaError::Bad(format!("{url}: no host in it")))?;
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, host_id);
        p.subject_alt_names = vec![SanType::DnsName(
            rcgen::Ia5String::try_from(host_id.to_string())
                .map_err(|e| HostCaError::Bad(format!("host id {host_id}: {e}")))?,
        )];
        let named = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                rcgen::Ia5String::try_from(host.to_string())
                    .map_err(|e| HostCaError::Bad(format!("{host}: {e}")))?,
            ),
        };
        if !p.subject_alt_names.contains(&named) {
            p.subject_alt_names.push(named);
        }
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // The CA may have been made by another tool: no key identifier of ours to match.
        p.use_authority_key_identifier_extension = false;
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|_| HostCaError::Bad("no randomness for a serial number".into()))?;
        serial[0] &= 0x7f;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        let now = time::OffsetDateTime::now_utc();
        let not_before = now - time::Duration::minutes(1);
        let not_after = now + self.ttl;
        p.not_before = not_before;
        p.not_after = not_after;
        let cert = p.signed_by(&HostKey(point), &self.issuer, &self.key)?;
        let ms = |t: time::OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
        Ok(HostCertificate {
            pem: cert.pem(),
            not_before_ms: ms(not_before),
            not_after_ms: ms(not_after),
        })
    }
}

/// The host part of `scheme://host[:port][/...]` (brackets of an IPv6 literal removed).
pub(crate) fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_host_is_found_for_names_v4_and_v6() {
        assert_eq!(url_host("https://192.0.2.1:7070"), Some("192.0.2.1"));
        assert_eq!(
            url_host("https://[2001:db8::1]:7070/x"),
            Some("2001:db8::1")
        );
        assert_eq!(url_host("https://h.example"), Some("h.example"));
        assert_eq!(url_host("https://:7070"), None);
        assert_eq!(url_host("nothing"), None);
    }

    #[test]
    fn a_dev_ca_loads_and_another_key_is_refused() {
        let d = std::env::temp_dir().join(format!("nova-hostca-{}", std::process::id()));
        crate::devca::make(&d, &[]).unwrap();
        let ttl = Duration::from_secs(600);
        let ca = HostCa::load(&d.join("ca.pem"), &d.join("ca.key"), ttl).unwrap();
        let key = KeyPair::generate().unwrap();
        let c = ca
            .issue("host-1", "https://192.0.2.7:7070", key.public_key_raw())
            .unwrap();
        assert!(c.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(c.not_after_ms - c.not_before_ms >= 600_000);
        let e = HostCa::load(&d.join("ca.pem"), &d.join("server.key"), ttl).unwrap_err();
        assert!(e.to_string().contains("is not the key of"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
