//! Cloud bursting: the policy that lets the controller launch cloud hosts when no host
//! fits a VM (`GET/PUT /v1/cloud/burst-policy`), the burst hosts it launched (`GET
//! /v1/cloud/burst-hosts`), and the user-data a burst host boots with (how it joins).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use nova_http::FieldError;

/// The host label naming the cloud provider of a burst host (`ec2`).
pub const LABEL_PROVIDER: &str = "provider";
/// The host label naming a burst host's machine at its provider (`i-...`).
pub const LABEL_INSTANCE_ID: &str = "instance_id";
/// The host label naming the burst record a host joined for.
pub const LABEL_BURST: &str = "burst";

/// `GET/PUT /v1/cloud/burst-policy`: when the controller may launch cloud hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BurstPolicy {
    /// Launch a cloud host when a VM fits on no host (needs a provider configured).
    pub enabled: bool,
    /// Burst hosts at once at most (launched and not yet terminated).
    pub max_hosts: u32,
    /// Seconds between two launches at least.
    pub cooldown_s: u64,
    /// A burst host with no VM for this long is drained and terminated, s.
    pub idle_s: u64,
    /// A burst host that has not joined this long after its launch is terminated, s.
    pub join_timeout_s: u64,
    /// Store revision of the policy, set by the controller (what `If-Match` names);
    /// ignored in a `PUT` body.
    #[serde(default)]
    pub revision: u64,
}

impl Default for BurstPolicy {
    fn default() -> Self {
        BurstPolicy {
            enabled: false,
            max_hosts: 2,
            cooldown_s: 60,
            idle_s: 600,
            join_timeout_s: 900,
            revision: 0,
        }
    }
}

impl BurstPolicy {
    /// The store key.
    pub const KEY: &'static str = "policy/burst";

    pub fn validate(&self) -> Result<(), FieldError> {
        if self.max_hosts > 1000 {
            return Err(FieldError::new("max_hosts", "out of range 0..=1000"));
        }
        if self.cooldown_s > 86_400 {
            return Err(FieldError::new("cooldown_s", "out of range 0..=86400"));
        }
        if !(1..=604_800).contains(&self.idle_s) {
            return Err(FieldError::new("idle_s", "out of range 1..=604800"));
        }
        if !(10..=86_400).contains(&self.join_timeout_s) {
            return Err(FieldError::new("join_timeout_s", "out of range 10..=86400"));
        }
        Ok(())
    }
}

/// Where a burst host is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BurstState {
    /// Launched; its hostd has not registered yet.
    Launching,
    /// Its hostd registered: it is a host of the cluster.
    Joined,
    /// Idle past `idle_s` (or never joined): cordoned, being terminated.
    Terminating,
    /// Terminated at the provider; its host record is gone.
    Terminated,
}

/// A cloud host the controller launched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BurstHost {
    /// `b-<random>`, also the `burst` label of its host.
    pub id: String,
    /// `ec2`.
    pub provider: String,
    /// The provider's machine id (`i-...`).
    pub instance_id: String,
    pub state: BurstState,
    /// The host id its hostd registered as, once joined.
    #[serde(default)]
    pub host_id: Option<String>,
    /// The VMs that fit nowhere when it was launched.
    #[serde(default)]
    pub for_vms: Vec<String>,
    /// The hash of the single-use join token in its user-data (blank in answers).
    #[serde(default)]
    pub join_hash: String,
    pub launched_at_ms: u64,
    #[serde(default)]
    pub joined_at_ms: Option<u64>,
    /// Since when it has had no VM (while joined).
    #[serde(default)]
    pub idle_since_ms: Option<u64>,
    #[serde(default)]
    pub terminated_at_ms: Option<u64>,
    /// Why it was terminated (idle, never joined).
    #[serde(default)]
    pub reason: Option<String>,
    /// Hours billed so far (estimated: per second, one-minute minimum).
    #[serde(default)]
    pub hours: f64,
    /// `hours` at the configured price, USD; None without a price.
    #[serde(default)]
    pub cost_usd: Option<f64>,
}

/// The data of the `cloud.launched`, `cloud.joined` and `cloud.terminated` events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BurstEvent {
    /// The provider's machine id (`i-...`).
    pub instance_id: String,
    /// `ec2` (on `cloud.launched`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The VM it was launched for (on `cloud.launched`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// The host id it joined as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Why it was terminated (on `cloud.terminated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /v1/cloud/burst-hosts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BurstHosts {
    /// The provider configured (`ec2`), None when none is.
    pub provider: Option<String>,
    pub items: Vec<BurstHost>,
    /// Sum of the items' `cost_usd` (terminated ones included while kept).
    pub total_cost_usd: Option<f64>,
}

/// What a burst host's machine is given as its user-data (JSON): how its hostd joins
/// the cluster. The join token is single-use and expires with the policy's
/// `join_timeout_s`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostUserData {
    /// Always `nova-host/v1`: what the host image looks for.
    pub format: String,
    /// The controller's URL as hosts reach it (hostd `--controller`).
    pub controller: String,
    /// The join token (hostd `--join-token-file`'s content).
    pub join_token: String,
    /// PEM of the CA of the controller's certificate (hostd `--controller-ca`), when
    /// the controller serves https with a private CA.
    #[serde(default)]
    pub ca_pem: Option<String>,
}

impl HostUserData {
    /// The `format` of this version.
    pub const FORMAT: &'static str = "nova-host/v1";

    /// Parses user-data; an error names the bad field.
    pub fn parse(text: &str) -> Result<HostUserData, FieldError> {
        let u: HostUserData =
            serde_json::from_str(text).map_err(|e| FieldError::new("user_data", e.to_string()))?;
        if u.format != Self::FORMAT {
            return Err(FieldError::new(
                "format",
                format!("{:?}: this host image reads {}", u.format, Self::FORMAT),
            ));
        }
        if !(u.controller.starts_with("http://") || u.controller.starts_with("https://")) {
            return Err(FieldError::new("controller", "must be http(s)://HOST:PORT"));
        }
        if u.join_token.len() < 32 || u.join_token.chars().any(|c| !c.is_ascii_graphic()) {
            return Err(FieldError::new("join_token", "not a join token"));
        }
        Ok(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_policy_out_of_range_names_its_field() {
        let mut p = BurstPolicy::default();
        p.validate().unwrap();
        p.idle_s = 0;
        assert_eq!(p.validate().unwrap_err().field, "idle_s");
        let p = BurstPolicy {
            max_hosts: 5000,
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().field, "max_hosts");
    }

    #[test]
    fn user_data_of_another_format_or_without_a_token_is_refused() {
        let good = HostUserData {
            format: HostUserData::FORMAT.into(),
            controller: "https://c:7443".into(),
            join_token: "x".repeat(43),
            ca_pem: None,
        };
        let text = serde_json::to_string(&good).unwrap();
        assert_eq!(HostUserData::parse(&text).unwrap(), good);
        let bad = text.replace("nova-host/v1", "nova-host/v9");
        assert_eq!(HostUserData::parse(&bad).unwrap_err().field, "format");
        let bad = text.replace(&"x".repeat(43), "short");
        assert_eq!(HostUserData::parse(&bad).unwrap_err().field, "join_token");
        assert_eq!(
            HostUserData::parse("#!/bin/sh").unwrap_err().field,
            "user_data"
        );
    }

    #[test]
    fn every_cut_or_byte_flip_of_user_data_is_a_value_or_a_named_error() {
        let good = serde_json::to_string(&HostUserData {
            format: HostUserData::FORMAT.into(),
            controller: "http://192.0.2.1:7070".into(),
            join_token: "t".repeat(43),
            ca_pem: Some("-----BEGIN CERTIFICATE-----\n".into()),
        })
        .unwrap();
        let bytes = good.as_bytes();
        for cut in 0..bytes.len() {
            let text = String::from_utf8_lossy(&bytes[..cut]);
            assert!(!HostUserData::parse(&text).unwrap_err().field.is_empty());
        }
        for i in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[i] ^= 0x5a;
            if let Err(e) = HostUserData::parse(&String::from_utf8_lossy(&b)) {
                assert!(!e.field.is_empty());
            }
        }
    }
}
