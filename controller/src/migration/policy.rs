//! The migration policy: how every live migration and drain of the cluster runs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::FieldError;

/// Live migration mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Precopy,
    Postcopy,
    Hybrid,
}

impl From<Mode> for nova_hostd::api::types::MigrationMode {
    fn from(m: Mode) -> Self {
        use nova_hostd::api::types::MigrationMode as H;
        match m {
            Mode::Precopy => H::Precopy,
            Mode::Postcopy => H::Postcopy,
            Mode::Hybrid => H::Hybrid,
        }
    }
}

/// `GET/PUT /v1/migration-policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationPolicy {
    pub mode: Mode,
    /// Downtime target of pre-copy, ms.
    pub downtime_ms: u64,
    /// Bandwidth cap per migration; none when absent.
    #[serde(default)]
    pub bandwidth_mbit: Option<u64>,
    /// A migration still running after this long is cancelled (the VM stays on its source).
    pub completion_timeout_s: u64,
    /// Whether post-copy (and hybrid) may be used.
    pub postcopy_allowed: bool,
    /// Migrations at once in the whole cluster.
    pub max_parallel_cluster: u32,
    /// Migrations at once leaving (or entering) one host.
    pub max_parallel_per_host: u32,
}

impl Default for MigrationPolicy {
    fn default() -> Self {
        MigrationPolicy {
            mode: Mode::Precopy,
            downtime_ms: 300,
            bandwidth_mbit: None,
            completion_timeout_s: 600,
            postcopy_allowed: false,
            max_parallel_cluster: 4,
            max_parallel_per_host: 2,
        }
    }
}

impl MigrationPolicy {
    /// The store key.
    pub const KEY: &'static str = "policy/migration";

    pub fn validate(&self) -> Result<(), FieldError> {
        if self.mode != Mode::Precopy && !self.postcopy_allowed {
            return Err(FieldError::new(
                "mode",
                "post-copy and hybrid need postcopy_allowed: true",
            ));
        }
        if !(1..=60_000).contains(&self.downtime_ms) {
            return Err(FieldError::new("downtime_ms", "out of range 1..=60000"));
        }
        if let Some(b) = self.bandwidth_mbit {
            if !(1..=1_000_000).contains(&b) {
                return Err(FieldError::new(
                    "bandwidth_mbit",
                    "out of range 1..=1000000",
                ));
            }
        }
        if !(1..=86_400).contains(&self.completion_timeout_s) {
            return Err(FieldError::new(
                "completion_timeout_s",
                "out of range 1..=86400",
            ));
        }
        if !(1..=256).contains(&self.max_parallel_cluster) {
            return Err(FieldError::new(
                "max_parallel_cluster",
                "out of range 1..=256",
            ));
        }
        if !(1..=64).contains(&self.max_parallel_per_host) {
            return Err(FieldError::new(
                "max_parallel_per_host",
                "out of range 1..=64",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postcopy_needs_to_be_allowed_and_limits_are_checked() {
        MigrationPolicy::default().validate().unwrap();
        let p = MigrationPolicy {
            mode: Mode::Hybrid,
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().field, "mode");
        let p = MigrationPolicy {
            max_parallel_per_host: 0,
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().field, "max_parallel_per_host");
    }
}
