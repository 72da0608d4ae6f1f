//! Each incoming migration's own credential: a fresh self-signed certificate (its key
//! never leaves this host: it goes to the receiving VMM's file, 0600) and a random
//! secret. The source hostd gets the certificate's SHA-256 and the secret in the
//! `IncomingReady` answer and hands them to its VMM, which pins the one and proves
//! itself with the other; nobody else can take the migration's place.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nova_vmm_api::migration::to_hex;
use nova_vmm_api::{IncomingCredential, MigrationPeer};
use rand::RngCore;
use sha2::Digest;

use crate::error::{Error, Result};

/// Makes a credential, writes the destination's half to `path` (0600, created new)
/// and returns the source's half.
pub fn issue(path: &Path) -> Result<MigrationPeer> {
    let key = rcgen::KeyPair::generate()
        .map_err(|e| Error::Conflict(format!("migration credential key: {e}")))?;
    let cert = rcgen::CertificateParams::new(vec!["nova-migration".into()])
        .and_then(|p| p.self_signed(&key))
        .map_err(|e| Error::Conflict(format!("migration credential certificate: {e}")))?;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let cred = IncomingCredential {
        cert_der: to_hex(cert.der()),
        key_der: to_hex(&key.serialize_der()),
        secret: to_hex(&secret),
    };
    let text = serde_json::to_vec(&cred).map_err(|e| Error::Conflict(e.to_string()))?;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    f.write_all(&text)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(MigrationPeer {
        cert_sha256: to_hex(&sha2::Sha256::digest(cert.der())),
        secret: to_hex(&secret),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn every_credential_is_new_and_its_file_is_private() {
        let dir = std::env::temp_dir().join(format!("hostd-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("incoming-credential.json");
        let a = issue(&path).unwrap();
        let file: IncomingCredential =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(file.secret, a.secret);
        let der: Vec<u8> = (0..file.cert_der.len() / 2)
            .map(|i| u8::from_str_radix(&file.cert_der[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert_eq!(to_hex(&sha2::Sha256::digest(&der)), a.cert_sha256);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = issue(&path).unwrap();
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.cert_sha256, b.cert_sha256);
        a.decode().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
