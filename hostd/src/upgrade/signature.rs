//! Which host images this host installs: with trusted keys (`--trusted-image-key`),
//! only those carrying a valid Ed25519 signature by one of them over
//! [`system_image_manifest`] (the version and both files' SHA-256s, which the caller
//! has checked against the staged files); without, any (with a warning).

use nova_hostd_api::{system_image_manifest, FieldError, SystemUpgradeRequest};

use crate::error::Result;

/// Checks that `req` (its hashes already checked against the staged files) carries a
/// valid signature by a trusted key, when this host trusts any; names what is wrong.
pub fn check_signature(trusted: &[String], req: &SystemUpgradeRequest) -> Result<()> {
    if trusted.is_empty() {
        if req.signature.is_none() {
            tracing::warn!(version = %req.version, "installing an unsigned image: this host trusts no image signing key (--trusted-image-key)");
        }
        return Ok(());
    }
    let Some(sig) = &req.signature else {
        return Err(FieldError::new(
            "signature",
            format!(
                "image {} is not signed, and this host installs only images signed by one of its trusted keys ({})",
                req.version,
                trusted.join(", ")
            ),
        )
        .into());
    };
    if !trusted.contains(&sig.key) {
        return Err(FieldError::new(
            "signature.key",
            format!(
                "image {} is signed by key {}, which this host does not trust (it trusts {})",
                req.version,
                sig.key,
                trusted.join(", ")
            ),
        )
        .into());
    }
    let bad_hex = |f: &str| FieldError::new(f, "not hex");
    let key = hex::decode(&sig.key).map_err(|_| bad_hex("signature.key"))?;
    let signature = hex::decode(&sig.signature).map_err(|_| bad_hex("signature.signature"))?;
    let manifest = system_image_manifest(&req.version, &req.kernel_sha256, &req.initrd_sha256);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key)
        .verify(manifest.as_bytes(), &signature)
        .map_err(|_| {
            FieldError::new(
                "signature.signature",
                format!(
                    "the signature of image {} does not verify under key {}: the version or the files are not what was signed",
                    req.version, sig.key
                ),
            )
        })?;
    tracing::info!(version = %req.version, key = %sig.key, "image signature verified");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nova_hostd_api::ImageSignature;

    /// A new Ed25519 key pair.
    fn keypair() -> ring::signature::Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn sign(k: &ring::signature::Ed25519KeyPair, r: &SystemUpgradeRequest) -> ImageSignature {
        use ring::signature::KeyPair;
        let m = system_image_manifest(&r.version, &r.kernel_sha256, &r.initrd_sha256);
        ImageSignature {
            key: hex::encode(k.public_key().as_ref()),
            signature: hex::encode(k.sign(m.as_bytes()).as_ref()),
        }
    }

    fn request(version: &str) -> SystemUpgradeRequest {
        SystemUpgradeRequest {
            version: version.into(),
            kernel_sha256: "1".repeat(64),
            initrd_sha256: "2".repeat(64),
            signature: None,
        }
    }

    #[test]
    fn a_host_trusting_keys_takes_only_images_they_signed() {
        let (trusted, other_key) = (keypair(), keypair());
        let mut req = request("2.0");
        let good = sign(&trusted, &req);
        let keys = vec![good.key.clone()];
        // No keys: anything goes (with a warning).
        check_signature(&[], &req).unwrap();
        // Unsigned.
        let e = check_signature(&keys, &req).unwrap_err();
        assert!(e.to_string().contains("is not signed"), "{e}");
        // Signed by a key it does not trust.
        req.signature = Some(sign(&other_key, &req));
        let e = check_signature(&keys, &req).unwrap_err();
        assert!(
            e.to_string().contains("which this host does not trust"),
            "{e}"
        );
        // The trusted key's signature over another version, or other files.
        req.signature = Some(good.clone());
        req.version = "2.1".into();
        let e = check_signature(&keys, &req).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        req.version = "2.0".into();
        req.initrd_sha256 = "3".repeat(64);
        let e = check_signature(&keys, &req).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        req.initrd_sha256 = "2".repeat(64);
        check_signature(&keys, &req).unwrap();
        // Rotation: the old and the new key both trusted, either signature passes.
        let both = vec![sign(&other_key, &req).key, good.key.clone()];
        check_signature(&both, &req).unwrap();
        req.signature = Some(sign(&other_key, &req));
        check_signature(&both, &req).unwrap();
    }
}
