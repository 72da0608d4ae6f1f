//! Authentication and authorization: API tokens (random 256-bit secrets, stored as
//! SHA-256 hashes), the caller they stand for, what each role may do, and the limit on
//! failed attempts per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::model::{Role, Token, SYSTEM_TENANT};

/// A new secret: `nova_` and 64 hex digits (256 random bits).
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("nova_{}", hex::encode(bytes))
}

/// Hex SHA-256 of a secret: the stored form, and the token's key.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The stored key (hash) of the token a request was authenticated with: what a
/// long-lived connection re-checks to end when the token is revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHash(pub String);

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub tenant: String,
    pub role: Role,
    /// Host credentials: the host they speak for.
    pub host: Option<String>,
}

impl Caller {
    pub fn from_token(t: &Token) -> Caller {
        Caller {
            user: t.user.clone(),
            tenant: t.tenant.clone(),
            role: t.role,
            host: t.host.clone(),
        }
    }
    /// Audit name.
    pub fn actor(&self) -> String {
        match &self.host {
            Some(h) => format!("host:{h}"),
            None => self.user.clone(),
        }
    }
    /// Sees every tenant and manages hosts.
    pub fn is_cluster(&self) -> bool {
        self.tenant == SYSTEM_TENANT && self.role != Role::Host
    }
    /// May change VMs and operations of its tenant.
    pub fn can_operate(&self) -> bool {
        matches!(self.role, Role::Operator | Role::Admin)
    }
    /// May manage users and tokens.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
    /// May see objects of `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        self.is_cluster() || self.tenant == tenant
    }
}

/// Failed authentication attempts per client address: after `max` failures within
/// `window`, that address is refused until the window ends.
pub struct FailedAuthLimiter {
    max: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailedAuthLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        FailedAuthLimiter {
            max,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` is locked out now.
    pub fn blocked(&self, ip: IpAddr) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&ip)
            .is_some_and(|(n, t)| *n >= self.max && t.elapsed() < self.window)
    }

    /// Counts a failure.
    pub fn failed(&self, ip: IpAddr) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 100_000 {
            let w = self.window;
            seen.retain(|_, (_, t)| t.elapsed() < w);
        }
        let e = seen.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() >= self.window {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_256_bit_random_and_only_their_hash_is_kept() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert_eq!(a.len(), 5 + 64);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
        assert!(!hash(&a).contains(&a[5..]));
    }

    #[test]
    fn an_address_is_locked_out_after_too_many_failures() {
        let l = FailedAuthLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..3 {
            assert!(!l.blocked(ip));
            l.failed(ip);
        }
        assert!(l.blocked(ip));
        assert!(
            !l.blocked("192.0.2.8".parse().unwrap()),
            "other clients are not affected"
        );
    }
}
