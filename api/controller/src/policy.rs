//! The migration policy: how every live migration and drain of the cluster runs. Its
//! migration parameters are the VMM's own ([`MigrationParams`]), with the same defaults.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use nova_http::FieldError;
use nova_vmm_api::{Compression, MigrationKind, MigrationMode, MigrationParams};

/// `GET/PUT /v1/migration-policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationPolicy {
    /// How each migration runs (mode, downtime target, bandwidth cap, compression,
    /// connections).
    #[serde(default)]
    pub params: MigrationParams,
    /// How VMs move unless a request says otherwise: live (default), warm or cold.
    /// A drain falls back per VM when this kind is impossible for it.
    #[serde(default)]
    pub kind: MigrationKind,
    /// A migration still running after this long is cancelled (the VM stays on its source).
    pub completion_timeout_s: u64,
    /// Whether post-copy (and hybrid) may be used.
    pub postcopy_allowed: bool,
    /// Migrations at once in the whole cluster.
    pub max_parallel_cluster: u32,
    /// Migrations at once leaving (or entering) one host.
    pub max_parallel_per_host: u32,
    /// Store revision of the policy, set by the controller (what `If-Match` names);
    /// ignored in a `PUT` body.
    #[serde(default)]
    pub revision: u64,
}

impl Default for MigrationPolicy {
    fn default() -> Self {
        MigrationPolicy {
            params: MigrationParams::default(),
            kind: MigrationKind::default(),
            completion_timeout_s: 600,
            postcopy_allowed: true,
            max_parallel_cluster: 4,
            max_parallel_per_host: 2,
            revision: 0,
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

/// `PATCH /v1/migration-policy`: a JSON merge patch (RFC 7396) of the policy. Only
/// the fields given change; `null` clears an optional one (`params.bandwidth_mbit`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationPolicyPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<MigrationParamsPatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<MigrationKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timeout_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postcopy_allowed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_cluster: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_per_host: Option<u32>,
}

/// The `params` part of a [`MigrationPolicyPatch`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationParamsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MigrationMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// `Some(None)` (JSON `null`) removes the cap.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[schema(value_type = Option<u64>)]
    pub bandwidth_mbit: Option<Option<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compress: Option<Compression>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

impl MigrationPolicy {
    /// The policy with `patch` applied (not yet validated).
    pub fn patched(&self, patch: &MigrationPolicyPatch) -> MigrationPolicy {
        let mut p = self.clone();
        if let Some(k) = patch.kind {
            p.kind = k;
        }
        if let Some(q) = &patch.params {
            if let Some(v) = q.mode {
                p.params.mode = v;
            }
            if let Some(v) = q.downtime_ms {
                p.params.downtime_ms = v;
            }
            if let Some(v) = q.bandwidth_mbit {
                p.params.bandwidth_mbit = v;
            }
            if let Some(v) = q.compress {
                p.params.compress = v;
            }
            if let Some(v) = q.connections {
                p.params.connections = v;
            }
        }
        if let Some(v) = patch.completion_timeout_s {
            p.completion_timeout_s = v;
        }
        if let Some(v) = patch.postcopy_allowed {
            p.postcopy_allowed = v;
        }
        if let Some(v) = patch.max_parallel_cluster {
            p.max_parallel_cluster = v;
        }
        if let Some(v) = patch.max_parallel_per_host {
            p.max_parallel_per_host = v;
        }
        p
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

    #[test]
    fn a_patch_changes_only_the_fields_it_names() {
        let mut base = MigrationPolicy::default();
        base.params.bandwidth_mbit = Some(100);
        let patch: MigrationPolicyPatch =
            serde_json::from_str(r#"{"params":{"downtime_ms":50},"max_parallel_cluster":8}"#)
                .unwrap();
        let p = base.patched(&patch);
        assert_eq!(p.params.downtime_ms, 50);
        assert_eq!(p.max_parallel_cluster, 8);
        assert_eq!(p.params.bandwidth_mbit, Some(100), "untouched");
        assert_eq!(p.params.mode, base.params.mode, "untouched");
        let clear: MigrationPolicyPatch =
            serde_json::from_str(r#"{"params":{"bandwidth_mbit":null}}"#).unwrap();
        assert_eq!(base.patched(&clear).params.bandwidth_mbit, None);
        assert_eq!(
            serde_json::to_string(&clear).unwrap(),
            r#"{"params":{"bandwidth_mbit":null}}"#
        );
        let e =
            serde_json::from_str::<MigrationPolicyPatch>(r#"{"params":{"speed":1}}"#).unwrap_err();
        assert!(e.to_string().contains("speed"), "{e}");
    }
}
