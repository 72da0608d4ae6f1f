//! `nova-controller dev-ca DIR`: a development certificate authority (rcgen) and one
//! server certificate it signs, so a one-machine cluster (`make up`, tests) runs on
//! TLS with one command. Keys are written 0600. Not for production: a real cluster's
//! certificates come from the operator's own CA.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// Why the CA could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevCaError {
    #[error("making the certificates: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// Writes `ca.pem`, `ca.key`, `server.pem`, `server.key` into `dir`; the server
/// certificate names localhost, 127.0.0.1, ::1 and every `sans` (DNS names or IPs).
pub fn make(dir: &Path, sans: &[String]) -> Result<(), DevCaError> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "NovaCron development CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;

    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for s in sans {
        if !names.contains(s) {
            names.push(s.clone());
        }
    }
    let mut server = CertificateParams::new(names)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "NovaCron development server");
    server.is_ca = IsCa::ExplicitNoCa;
    server.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;

    std::fs::create_dir_all(dir).map_err(|e| DevCaError::Io(dir.display().to_string(), e))?;
    let put = |name: &str, text: String, mode: u32| {
        let p = dir.join(name);
        nova_durable::write(&p, text.as_bytes(), mode)
            .map_err(|e| DevCaError::Io(p.display().to_string(), e))
    };
    put("ca.pem", ca_cert.pem(), nova_durable::STATE)?;
    put("ca.key", ca_key.serialize_pem(), nova_durable::SECRET)?;
    put("server.pem", server_cert.pem(), nova_durable::STATE)?;
    put(
        "server.key",
        server_key.serialize_pem(),
        nova_durable::SECRET,
    )?;
    Ok(())
}
