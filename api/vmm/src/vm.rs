//! What `GET /v1/vm` says of a running VM: its state, the KVM it runs on, its
//! configuration and its counters; and `PUT /v1/vm/stop`'s request and answer.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::VmConfig;
use nova_http::FieldError;

/// Running or paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Paused,
}

/// Which virtualization backs /dev/kvm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KvmKind {
    /// Intel VT-x or AMD-V.
    Hardware,
    /// Pagetable-based Virtual Machine (kvm_pvm): only PVM-built guests run natively.
    Pvm,
}

impl KvmKind {
    /// The wire name: `hardware` or `pvm`.
    pub fn as_str(self) -> &'static str {
        match self {
            KvmKind::Hardware => "hardware",
            KvmKind::Pvm => "pvm",
        }
    }
}

impl std::fmt::Display for KvmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvmKind::Hardware => f.write_str("hardware (VT-x/AMD-V)"),
            KvmKind::Pvm => f.write_str("PVM (kvm_pvm)"),
        }
    }
}

/// Block device counters, monotonic since the device was created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BlockCounters {
    pub read_requests: u64,
    pub read_bytes: u64,
    pub write_requests: u64,
    pub write_bytes: u64,
    pub flush_requests: u64,
    /// Requests completed with IOERR or UNSUPP (bad requests and backend failures).
    pub failed_requests: u64,
    /// Chains that were malformed (consumed with an error or used length 0).
    pub bad_chains: u64,
}

/// Net device counters, monotonic since the device was created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames read from the tap that no guest buffer could take.
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames the guest sent that were malformed or the tap refused.
    pub tx_dropped: u64,
    /// Chains that were malformed (consumed with used length 0).
    pub bad_chains: u64,
}

/// A virtio device's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeviceCounters {
    Block(BlockCounters),
    Net(NetCounters),
}

/// The VM's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Counters {
    pub vcpu_exits: u64,
    pub io_exits: u64,
    pub mmio_exits: u64,
    pub console_bytes: u64,
    /// Per virtio device, in device order (disks, then NICs).
    pub devices: Vec<DeviceCounters>,
}

/// What `GET /v1/vm` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmInfo {
    pub state: RunState,
    pub kvm: KvmKind,
    pub pid: u32,
    pub uptime_ms: u64,
    pub config: VmConfig,
    pub counters: Counters,
}

/// Longest a graceful stop may wait for the guest, ms.
pub const MAX_STOP_TIMEOUT_MS: u64 = 600_000;

/// `PUT /v1/vm/stop`: stop the VM, gracefully unless `force`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    /// Stop at once instead of pressing the power button.
    #[serde(default)]
    pub force: bool,
    /// How long the guest has to power off after the ACPI power button is pressed
    /// before the VMM stops it anyway (1..=600000).
    #[serde(default = "default_stop_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_stop_timeout_ms() -> u64 {
    30_000
}

impl Default for StopRequest {
    fn default() -> Self {
        StopRequest {
            force: false,
            timeout_ms: default_stop_timeout_ms(),
        }
    }
}

impl StopRequest {
    /// Checks the timeout's range, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.timeout_ms == 0 || self.timeout_ms > MAX_STOP_TIMEOUT_MS {
            return Err(FieldError::new(
                "timeout_ms",
                format!(
                    "{} is out of range 1..={MAX_STOP_TIMEOUT_MS}",
                    self.timeout_ms
                ),
            ));
        }
        Ok(())
    }
}

/// How a stop began (`202 Accepted`: the VMM exits when the VM has stopped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopReport {
    /// The ACPI power button was pressed: the guest is asked to power off, and is
    /// stopped after `timeout_ms` if it has not. False: stopped at once (`force`,
    /// or a VM without ACPI has no button).
    pub power_button: bool,
    pub timeout_ms: u64,
}

#[cfg(test)]
mod stop_tests {
    use super::*;

    /// Mutated and random bodies (a fixed xorshift stream, so failures repeat): the
    /// parser never panics, and whatever it accepts and validates is in range.
    #[test]
    fn stop_bodies_fuzzed_never_panic_and_accepted_ones_are_in_range() {
        let seeds: [&[u8]; 4] = [
            br#"{"force":false,"timeout_ms":30000}"#,
            br#"{"timeout_ms":600000}"#,
            br#"{"force":true}"#,
            b"{}",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut accepted = 0;
        for i in 0..20_000 {
            let mut body = seeds[i % seeds.len()].to_vec();
            for _ in 0..(next() % 4 + 1) {
                let r = next();
                let at = (r as usize >> 8) % (body.len() + 1);
                match r % 3 {
                    0 if at < body.len() => body[at] = (r >> 32) as u8,
                    1 => body.insert(at, b"0123456789\"{}:,-e.ftx"[(r >> 40) as usize % 21]),
                    _ if at < body.len() => {
                        body.remove(at);
                    }
                    _ => {}
                }
            }
            if let Ok(req) = serde_json::from_slice::<StopRequest>(&body) {
                if req.validate().is_ok() {
                    accepted += 1;
                    assert!((1..=MAX_STOP_TIMEOUT_MS).contains(&req.timeout_ms));
                }
            }
        }
        assert!(accepted > 0, "no mutation was a valid request");
    }

    #[test]
    fn an_empty_request_is_a_graceful_stop_with_the_default_timeout() {
        let req: StopRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(req, StopRequest::default());
        assert!(!req.force && req.timeout_ms == 30_000);
        let err = StopRequest {
            force: false,
            timeout_ms: 0,
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "timeout_ms");
    }
}
