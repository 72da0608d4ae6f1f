//! A host's serving key and the certificate the controller issues for it: hostd sends
//! its public key with a proof that it holds the private key ([`HostKeyRequest`]) at
//! registration (with the join token) and at renewal (with its own token); the
//! controller answers a short-lived certificate signed by its hostd CA
//! ([`HostCertificate`]). The private key never leaves the host.
//!
//! The key is ECDSA P-256; the proof is the key's signature over
//! `nova-host-key/v1\0` + the host id, so a request for one host id cannot be replayed
//! for another. No PKCS#10 CSR: the controller decides every field of the
//! certificate (names, lifetime, usage) itself, so a CSR's requested attributes would
//! be ignored, and the controller's parser stays a base64 decode and a signature check.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use nova_http::FieldError;

/// Length of an uncompressed P-256 point (`0x04 || X || Y`).
pub const P256_POINT_LEN: usize = 65;
/// Longest DER ECDSA P-256 signature.
pub const MAX_PROOF_LEN: usize = 80;

/// What a host's key proves possession over: this prefix, then the host id.
pub const PROOF_CONTEXT: &[u8] = b"nova-host-key/v1\0";

/// A host's public key and its proof of possession.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostKeyRequest {
    /// Base64 (standard, padded) of the uncompressed P-256 point (65 bytes).
    pub public_key: String,
    /// Base64 of the DER ECDSA-P256-SHA256 signature, by that key, over
    /// `nova-host-key/v1\0` followed by the host id.
    pub proof: String,
}

/// A certificate the controller issued for a host's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostCertificate {
    /// PEM: the host's certificate (names: the host id and its URL's host).
    pub pem: String,
    /// When it was issued, ms since the epoch.
    pub not_before_ms: u64,
    /// When it stops being valid, ms since the epoch: renew well before.
    pub not_after_ms: u64,
}

/// The message a host's key signs to prove possession for `host_id`.
pub fn proof_message(host_id: &str) -> Vec<u8> {
    let mut m = PROOF_CONTEXT.to_vec();
    m.extend_from_slice(host_id.as_bytes());
    m
}

fn b64(field: &str, s: &str, max: usize) -> Result<Vec<u8>, FieldError> {
    // 4/3 of the bytes, padded: anything longer is not ours and is not decoded.
    if s.len() > max.div_ceil(3) * 4 {
        return Err(FieldError::new(field, "too long"));
    }
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| FieldError::new(field, format!("not base64: {e}")))
}

impl HostKeyRequest {
    /// Makes the request for `host_id` with the P-256 key `pkcs8` (a PKCS#8 DER
    /// document): its public key and its signature over [`proof_message`].
    pub fn sign(pkcs8: &[u8], host_id: &str) -> Result<HostKeyRequest, FieldError> {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &rng)
            .map_err(|e| FieldError::new("key", format!("not a PKCS#8 P-256 key: {e}")))?;
        let sig = key
            .sign(&rng, &proof_message(host_id))
            .map_err(|e| FieldError::new("key", format!("signing: {e}")))?;
        let e = base64::engine::general_purpose::STANDARD;
        Ok(HostKeyRequest {
            public_key: e.encode(key.public_key().as_ref()),
            proof: e.encode(sig.as_ref()),
        })
    }

    /// Checks the request for `host_id`: the public key is a P-256 point and the proof
    /// is its signature over [`proof_message`]`(host_id)`. Answers the point's bytes;
    /// an error names the field.
    pub fn verify(&self, host_id: &str) -> Result<Vec<u8>, FieldError> {
        let point = b64("tls_key.public_key", &self.public_key, P256_POINT_LEN)?;
        if point.len() != P256_POINT_LEN || point[0] != 0x04 {
            return Err(FieldError::new(
                "tls_key.public_key",
                "not an uncompressed P-256 point (65 bytes, 0x04 first)",
            ));
        }
        let proof = b64("tls_key.proof", &self.proof, MAX_PROOF_LEN)?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &point)
            .verify(&proof_message(host_id), &proof)
            .map_err(|_| {
                FieldError::new(
                    "tls_key.proof",
                    format!("not this key's signature for host {host_id}"),
                )
            })?;
        Ok(point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkcs8() -> Vec<u8> {
        let rng = ring::rand::SystemRandom::new();
        ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .unwrap()
        .as_ref()
        .to_vec()
    }

    #[test]
    fn a_signed_request_verifies_for_its_host_and_no_other() {
        let r = HostKeyRequest::sign(&pkcs8(), "host-a").unwrap();
        assert_eq!(r.verify("host-a").unwrap().len(), P256_POINT_LEN);
        assert_eq!(r.verify("host-b").unwrap_err().field, "tls_key.proof");
    }

    #[test]
    fn another_keys_proof_or_a_bad_point_names_its_field() {
        let a = HostKeyRequest::sign(&pkcs8(), "h").unwrap();
        let b = HostKeyRequest::sign(&pkcs8(), "h").unwrap();
        let mixed = HostKeyRequest {
            public_key: a.public_key.clone(),
            proof: b.proof,
        };
        assert_eq!(mixed.verify("h").unwrap_err().field, "tls_key.proof");
        let bad = HostKeyRequest {
            public_key: "AAAA".into(),
            proof: a.proof.clone(),
        };
        assert_eq!(bad.verify("h").unwrap_err().field, "tls_key.public_key");
        let long = HostKeyRequest {
            public_key: "A".repeat(10_000),
            proof: a.proof,
        };
        assert_eq!(long.verify("h").unwrap_err().problem, "too long");
    }
}
