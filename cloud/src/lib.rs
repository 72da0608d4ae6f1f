//! nova-cloud: cloud connectors. It owns the [`Provider`] trait through which the
//! controller launches hosts (machines booting the host image, told how to join by
//! their user-data), terminates, lists and tags them and estimates what they cost, and
//! its adapters: [`ec2`] (aws-sdk-ec2). It does not decide when to launch or
//! terminate (the controller's burst policy does) nor what a host runs (the host
//! image does). A crate of its own so the controller never compiles the AWS SDK's
//! generics again when its own code changes, and so the SDK's dependency graph stays
//! behind one small trait.

pub mod ec2;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

/// Why a cloud call failed.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The provider's configuration is wrong: names the key.
    #[error("cloud config `{field}`: {problem}")]
    Config { field: String, problem: String },
    /// The provider's API answered with an error, or could not be reached.
    #[error("{provider} {call}: {message}")]
    Api {
        provider: &'static str,
        call: &'static str,
        message: String,
    },
}

/// What a launched machine is told and tagged with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRequest {
    /// The machine's name (EC2: the `Name` tag).
    pub name: String,
    /// Handed to the machine as its user-data (at most 16 KiB on EC2).
    pub user_data: String,
    /// Tags on the machine (beside the provider config's own).
    pub tags: BTreeMap<String, String>,
}

/// Where a machine is in its life, as the provider says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
    /// A state this adapter does not know, as the provider named it.
    Other(String),
}

impl InstanceState {
    /// Whether the machine is gone or going (it bills no more, or soon not).
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            InstanceState::ShuttingDown | InstanceState::Terminated
        )
    }

    /// The provider's name of the state (`running`, `terminated`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Other(s) => s,
        }
    }
}

/// A machine as the provider lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The provider's id (EC2: `i-...`).
    pub id: String,
    pub state: InstanceState,
    /// The machine type (EC2: `m5.large`).
    pub instance_type: String,
    /// When it was launched, ms since the epoch (when the provider says).
    pub launched_at_ms: Option<u64>,
    pub private_ip: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// What one machine has cost so far, estimated.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceCost {
    pub instance_id: String,
    /// Hours billed (per second with a one-minute minimum, as EC2 bills Linux
    /// machines).
    pub hours: f64,
    /// `hours` times the configured hourly price; None when no price is configured.
    pub usd: Option<f64>,
}

/// A cloud that hosts can be launched in. Implementations are cheap to share
/// (`Arc<dyn Provider>`) and every call is one or a few API requests, never a wait for
/// a machine to boot.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The provider's name as hosts show it in their `provider` label (`ec2`).
    fn name(&self) -> &'static str;
    /// Launches one machine from the configured host image; answers it as launched
    /// (usually `pending`).
    async fn launch(&self, req: &LaunchRequest) -> Result<Instance, CloudError>;
    /// Terminates machine `id` (idempotent: an already terminated one is fine).
    async fn terminate(&self, id: &str) -> Result<(), CloudError>;
    /// Every machine carrying all of `tags`, terminated ones included while the
    /// provider still lists them.
    async fn list(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Instance>, CloudError>;
    /// Adds (or overwrites) tags on machine `id`.
    async fn tag(&self, id: &str, tags: &BTreeMap<String, String>) -> Result<(), CloudError>;
    /// What `instance` has cost from its launch to `until_ms`, estimated from the
    /// configured price (providers' billing APIs are separate services).
    fn cost(&self, instance_id: &str, launched_at_ms: u64, until_ms: u64) -> InstanceCost;
}

/// A provider and where the hosts it launches join: what the controller's burst
/// policy launches through.
pub struct Fleet {
    pub provider: Arc<dyn Provider>,
    /// The controller's URL as launched hosts reach it.
    pub controller_url: String,
    /// PEM of the CA launched hosts trust the controller by.
    pub ca_pem: Option<String>,
    /// The value of the `nova:cluster` tag on every machine launched.
    pub cluster: String,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("provider", &self.provider.name())
            .field("controller_url", &self.controller_url)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// Hours billed from `from_ms` to `until_ms`: per second, at least one minute.
pub fn billed_hours(from_ms: u64, until_ms: u64) -> f64 {
    let secs = until_ms.saturating_sub(from_ms).div_ceil(1000).max(60);
    secs as f64 / 3600.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_bills_per_second_and_at_least_a_minute() {
        assert_eq!(billed_hours(0, 0), 60.0 / 3600.0);
        assert_eq!(billed_hours(0, 3_600_000), 1.0);
        assert_eq!(billed_hours(0, 3_600_001), 3601.0 / 3600.0);
        assert_eq!(
            billed_hours(10, 5),
            60.0 / 3600.0,
            "a clock going back bills the minimum"
        );
    }

    #[test]
    fn only_shutting_down_and_terminated_machines_are_gone() {
        assert!(InstanceState::Terminated.is_gone());
        assert!(InstanceState::ShuttingDown.is_gone());
        assert!(!InstanceState::Stopped.is_gone());
        assert_eq!(InstanceState::Other("x".into()).as_str(), "x");
    }
}
