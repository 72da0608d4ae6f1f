//! The migration policy: how every live migration and drain of the cluster runs. Its
//! migration parameters are the VMM's own ([`MigrationParams`]), with the same defaults.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use nova_http::FieldError;
use nova_vmm_api::{MigrationMode, MigrationParams};

/// `GET/PUT /v1/migration-policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationPolicy {
    /// How each migration runs (mode, downtime target, bandwidth cap, compression,
    /// connections).
    #[serde(default)]
    pub params: MigrationParams,
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
            params: MigrationParams::default(),
            completion_timeout_s: 600,
            postcopy_allowed: true,
            max_parallel_cluster: 4,
            max_parallel_per_host: 2,
        }
    }
}

impl MigrationPolicy {
    /// The store key.
    pub const KEY: &'static str = "policy/migration";

    pub fn validate(&self) -> Result<(), FieldError> {
        if self.params.mode != MigrationMode::Precopy && !self.postcopy_allowed {
            return Err(FieldError::new(
                "params.mode",
                "post-copy and hybrid need postcopy_allowed: true",
            ));
        }
        self.params.validate().map_err(|e| e.under("params"))?;
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
        let mut p = MigrationPolicy {
            postcopy_allowed: false,
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().field, "params.mode");
        p.params.mode = MigrationMode::Precopy;
        p.validate().unwrap();
        p.params.connections = 0;
        assert_eq!(p.validate().unwrap_err().field, "params.connections");
        let p = MigrationPolicy {
            max_parallel_per_host: 0,
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().field, "max_parallel_per_host");
    }
}
