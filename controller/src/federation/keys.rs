//! This cluster's Ed25519 signing keys and the federated tokens (JWT, EdDSA) signed
//! and checked with them. The JWT itself is read by `jsonwebtoken` (header, claims,
//! signature, expiry, audience): no parser of our own. A key id names its cluster
//! (`<cluster id>:<n>`), so the key that must have signed a token is found without
//! trusting anything else the token says.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::model::{FederatedClaims, Jwk, Jwks};

/// Longest token read (a JWT of ours is about 600 characters).
pub const MAX_TOKEN: usize = 4096;

/// One key pair, as the store keeps it (the private half never leaves the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    /// PKCS#8 document of the key pair, base64.
    pub pkcs8: String,
    /// The public key, base64url without padding.
    pub x: String,
    pub created_at_ms: u64,
}

/// Why a key or a token is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key generation failed")]
    Generate,
    #[error("stored key {0} is unreadable")]
    Stored(String),
    #[error("token: {0}")]
    Token(String),
}

impl SigningKey {
    /// A new random key pair named `kid`.
    pub fn generate(kid: String, now_ms: u64) -> Result<SigningKey, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| KeyError::Generate)?;
        Ok(SigningKey {
            kid,
            pkcs8: STANDARD.encode(doc.as_ref()),
            x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            created_at_ms: now_ms,
        })
    }

    /// Its public half.
    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            kid: self.kid.clone(),
            x: self.x.clone(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
        }
    }

    /// Signs `claims` as a compact JWT naming this key.
    pub fn sign(&self, claims: &FederatedClaims) -> Result<String, KeyError> {
        let der = STANDARD
            .decode(&self.pkcs8)
            .map_err(|_| KeyError::Stored(self.kid.clone()))?;
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &EncodingKey::from_ed_der(&der))
            .map_err(|e| KeyError::Token(e.to_string()))
    }
}

/// The public keys of `keys`.
pub fn jwks(keys: &[SigningKey]) -> Jwks {
    Jwks {
        keys: keys.iter().map(SigningKey::jwk).collect(),
    }
}

/// Whether a bearer credential is a JWT (three base64url parts, a JSON header)
/// rather than an API token (`nova_...`).
pub fn is_jwt(s: &str) -> bool {
    s.starts_with("eyJ")
        && s.len() <= MAX_TOKEN
        && s.split('.').count() == 3
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The key id a token names and the cluster that key belongs to.
pub fn key_of(token: &str) -> Result<(String, String), KeyError> {
    let h = jsonwebtoken::decode_header(token).map_err(|e| KeyError::Token(e.to_string()))?;
    if h.alg != Algorithm::EdDSA {
        return Err(KeyError::Token(format!(
            "algorithm {:?}; only EdDSA is accepted",
            h.alg
        )));
    }
    let kid = h
        .kid
        .ok_or_else(|| KeyError::Token("no key id (kid)".into()))?;
    let cluster = kid
        .split_once(':')
        .map(|(c, _)| c.to_string())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| KeyError::Token(format!("key id {kid:?} names no cluster")))?;
    Ok((kid, cluster))
}

/// Checks `token`'s signature with the key `kid` of `keys`, its expiry, that it was
/// issued by `issuer` and is meant for `audience`; answers its claims.
pub fn verify(
    token: &str,
    kid: &str,
    keys: &Jwks,
    issuer: &str,
    audience: &str,
) -> Result<FederatedClaims, KeyError> {
    let jwk = keys
        .keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| KeyError::Token(format!("unknown key {kid}")))?;
    if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
        return Err(KeyError::Token(format!("key {kid} is not an Ed25519 key")));
    }
    let key = DecodingKey::from_ed_components(&jwk.x)
        .map_err(|e| KeyError::Token(format!("key {kid}: {e}")))?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    v.leeway = 30;
    let data = jsonwebtoken::decode::<FederatedClaims>(token, &key, &v)
        .map_err(|e| KeyError::Token(e.to_string()))?;
    Ok(data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    fn claims(aud: &str, exp: u64) -> FederatedClaims {
        FederatedClaims {
            iss: "c-a".into(),
            sub: "alice".into(),
            aud: vec![aud.into()],
            exp,
            iat: 0,
            jti: "j1".into(),
            tenant: "acme".into(),
            role: Role::Viewer,
            peer: false,
        }
    }

    fn now_s() -> u64 {
        crate::model::now_ms() / 1000
    }

    #[test]
    fn a_signed_token_verifies_with_its_key_and_only_for_its_audience() {
        let k = SigningKey::generate("c-a:1".into(), 0).unwrap();
        let t = k.sign(&claims("c-b", now_s() + 60)).unwrap();
        assert!(is_jwt(&t), "{t}");
        let (kid, cluster) = key_of(&t).unwrap();
        assert_eq!((kid.as_str(), cluster.as_str()), ("c-a:1", "c-a"));
        let keys = jwks(std::slice::from_ref(&k));
        let c = verify(&t, &kid, &keys, "c-a", "c-b").unwrap();
        assert_eq!(c.sub, "alice");
        assert!(
            verify(&t, &kid, &keys, "c-a", "c-c").is_err(),
            "another audience"
        );
        assert!(
            verify(&t, &kid, &keys, "c-x", "c-b").is_err(),
            "another issuer"
        );
    }

    #[test]
    fn expired_tampered_or_foreign_tokens_are_refused() {
        let k = SigningKey::generate("c-a:1".into(), 0).unwrap();
        let other = SigningKey::generate("c-a:1".into(), 0).unwrap();
        let keys = jwks(std::slice::from_ref(&k));
        let old = k.sign(&claims("c-b", now_s() - 120)).unwrap();
        assert!(verify(&old, "c-a:1", &keys, "c-a", "c-b").is_err());
        let forged = other.sign(&claims("c-b", now_s() + 60)).unwrap();
        assert!(verify(&forged, "c-a:1", &keys, "c-a", "c-b").is_err());
        let good = k.sign(&claims("c-b", now_s() + 60)).unwrap();
        let mut parts: Vec<&str> = good.split('.').collect();
        let admin = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&FederatedClaims {
                role: Role::Admin,
                ..claims("c-b", now_s() + 60)
            })
            .unwrap(),
        );
        parts[1] = &admin;
        assert!(verify(&parts.join("."), "c-a:1", &keys, "c-a", "c-b").is_err());
        assert!(!is_jwt("nova_0123"));
        assert!(
            key_of("eyJhbGciOiJIUzI1NiJ9.e30.x").is_err(),
            "HS256 refused"
        );
    }
}
