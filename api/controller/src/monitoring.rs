//! The contract of monitoring: metric history queries (`GET /v1/metrics/query`), the
//! Prometheus HTTP service-discovery answer (`GET /v1/metrics/targets`), alert rules,
//! alerts and their lifecycle, notification receivers and their dead letters, and
//! capacity (`GET /v1/capacity`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/metrics/query`: one metric's history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MetricQuery {
    /// The metric (`vm.cpu`, `host.mem_used_bytes`, ...; `GET /v1/metrics/names` lists them).
    pub metric: String,
    /// Only this host's or VM's series; every visible one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// From, ms since the epoch [default: an hour before `end`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    /// To, ms since the epoch [default: now].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    /// Seconds per point (each the mean of what it covers) [default: the stored
    /// resolution of the range].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_s: Option<u64>,
}

impl MetricQuery {
    /// The query string.
    pub fn to_query(&self) -> String {
        let mut q = format!("?metric={}", crate::percent_encode(&self.metric));
        if let Some(t) = &self.target {
            q.push_str(&format!("&target={}", crate::percent_encode(t)));
        }
        for (k, v) in [
            ("start_ms", self.start_ms),
            ("end_ms", self.end_ms),
            ("step_s", self.step_s),
        ] {
            if let Some(v) = v {
                q.push_str(&format!("&{k}={v}"));
            }
        }
        q
    }
}

/// One series of a query's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Series {
    pub metric: String,
    /// The host's or VM's id (the controller's node name for `controller.*`).
    pub target: String,
    /// `[ms since the epoch, value]`, oldest first.
    pub points: Vec<(u64, f64)>,
}

/// `GET /v1/metrics/query`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueryAnswer {
    /// Seconds per point in `series`.
    pub step_s: u64,
    /// Seconds per stored point where the answer was read (10, 300 or 3600 by default).
    pub resolution_s: u64,
    pub series: Vec<Series>,
}

/// One target group of Prometheus' HTTP service discovery (`http_sd_configs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SdTargetGroup {
    /// `host:port` of the controller that proxies the target's `/metrics`.
    pub targets: Vec<String>,
    /// `__metrics_path__`, `__scheme__`, `job`, `host`, `node`.
    pub labels: BTreeMap<String, String>,
}

/// How a rule compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cmp {
    Above,
    Below,
}

impl Cmp {
    /// Whether `v` is beyond `limit` this way.
    pub fn holds(self, v: f64, limit: f64) -> bool {
        match self {
            Cmp::Above => v > limit,
            Cmp::Below => v < limit,
        }
    }
}

/// What a rule tests on each series of its metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleKind {
    /// The latest value (divided by `ratio_of`'s latest value of the same target
    /// when given) is beyond `value`.
    Threshold {
        cmp: Cmp,
        value: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ratio_of: Option<String>,
    },
    /// The series grew (or fell) by more than `value` over the last `window_s`.
    Change { cmp: Cmp, value: f64, window_s: u64 },
    /// No point of the series in the last `window_s` (a silent host, a lost VM).
    Absent { window_s: u64 },
    /// The latest value is more than `z` robust z-scores (median and MAD of the
    /// last `window_s`) from the series' usual level.
    Anomaly { z: f64, window_s: u64 },
    /// At the linear trend of the last `window_s`, the series reaches `capacity_of`'s
    /// latest value (same target) in fewer than `days` days.
    Forecast {
        capacity_of: String,
        days: f64,
        window_s: u64,
    },
}

/// An alert rule (`POST /v1/alert-rules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Letters, digits, `-`, `_`, 1 to 63.
    pub id: String,
    /// The metric the rule tests, on every series of it (or `target`'s only).
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// What the rule tests.
    pub condition: RuleKind,
    /// How long the condition must hold before the alert fires (pending meanwhile).
    #[serde(default)]
    pub for_s: u64,
    /// `info`, `warning` or `critical`.
    #[serde(default = "warning")]
    pub severity: String,
    /// What people read.
    #[serde(default)]
    pub summary: String,
    /// Shipped with the controller (may be changed, comes back when deleted).
    #[serde(default)]
    pub builtin: bool,
}

fn warning() -> String {
    "warning".into()
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds, not yet for the rule's `for_s`.
    Pending,
    /// Notified.
    Firing,
    /// Somebody is on it: no more notifications until it resolves.
    Acknowledged,
    /// Muted until `silenced_until_ms`.
    Silenced,
    /// The condition no longer holds.
    Resolved,
}

/// One alert: a rule's condition on one target. Deduplicated: while active, a rule
/// and target have one alert, whatever how often it is evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    /// `<rule>:<target>`.
    pub id: String,
    pub rule: String,
    pub target: String,
    pub metric: String,
    /// Owner of the target (`system` for hosts and the controller).
    pub tenant: String,
    pub state: AlertState,
    pub severity: String,
    pub summary: String,
    /// The value that tripped the rule (the days left for a forecast, the z-score of
    /// an anomaly).
    pub value: f64,
    pub since_ms: u64,
    #[serde(default)]
    pub fired_ms: Option<u64>,
    #[serde(default)]
    pub resolved_ms: Option<u64>,
    #[serde(default)]
    pub acknowledged_by: Option<String>,
    #[serde(default)]
    pub silenced_until_ms: Option<u64>,
    /// Evaluations in which the condition held.
    pub count: u64,
}

impl Alert {
    /// Whether the alert still needs anyone (not resolved).
    pub fn active(&self) -> bool {
        self.state != AlertState::Resolved
    }
}

/// `POST /v1/alerts/{id}/silence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceBody {
    /// For how long, 1 s to 30 days.
    pub for_s: u64,
}

/// A channel alerts are sent to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReceiverKind {
    /// POSTs a [`Notification`] as JSON, signed: header `X-Nova-Signature: sha256=<hex
    /// HMAC-SHA256 of the body with secret>`; retried with backoff, then dead-lettered.
    Webhook {
        url: String,
        /// Write-only: the API never shows it.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        secret: String,
    },
    /// Mails each notification through an SMTP relay (plain SMTP on `host:port`).
    Email {
        smtp: String,
        from: String,
        to: Vec<String>,
    },
    /// POSTs to Alertmanager's `/api/v2/alerts` (its base URL here).
    Alertmanager { url: String },
}

/// A notification receiver (`POST /v1/alert-receivers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    pub id: String,
    /// Where notifications go.
    pub channel: ReceiverKind,
    /// Only alerts of at least this severity [default: every one].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<String>,
    /// Attempts per notification before it is dead-lettered, 1 to 20 [default: 5].
    #[serde(default = "five")]
    pub max_attempts: u32,
    /// Wait before the first retry, doubled before each next one, ms, 10 to 600000
    /// [default: 1000].
    #[serde(default = "second")]
    pub backoff_ms: u64,
}

fn five() -> u32 {
    5
}

fn second() -> u64 {
    1000
}

/// What an alert is matched on: `rule`, `target`, `metric`, `severity`, `tenant`.
pub const ALERT_LABELS: [&str; 5] = ["rule", "target", "metric", "severity", "tenant"];

/// A silence: alerts whose labels match every matcher are silenced (no
/// notifications) until `until_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Silence {
    pub id: String,
    /// Label (one of `rule`, `target`, `metric`, `severity`, `tenant`) to the value it
    /// must have; a value ending in `*` matches every value it begins.
    pub matchers: BTreeMap<String, String>,
    pub until_ms: u64,
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
}

impl Silence {
    /// Whether the silence holds at `now_ms` for an alert with `labels`.
    pub fn mutes(&self, now_ms: u64, labels: &BTreeMap<&str, &str>) -> bool {
        now_ms < self.until_ms
            && self.matchers.iter().all(|(k, want)| {
                let have = labels.get(k.as_str()).copied().unwrap_or_default();
                match want.strip_suffix('*') {
                    Some(prefix) => have.starts_with(prefix),
                    None => have == want,
                }
            })
    }
}

/// `POST /v1/silences`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// At least one; see [`Silence::matchers`].
    pub matchers: BTreeMap<String, String>,
    /// For how long, 1 s to 30 days.
    pub for_s: u64,
    #[serde(default)]
    pub comment: String,
}

/// One alert as Alertmanager's `POST /api/v2/alerts` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertmanagerAlert {
    /// `alertname` (the rule), `target`, `metric`, `severity`, `tenant`.
    pub labels: BTreeMap<String, String>,
    /// `summary`, `value`.
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// RFC 3339; set once resolved.
    #[serde(rename = "endsAt", default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
}

/// What a webhook receives: one rule's alerts that changed in one evaluation
/// (grouped), signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    /// The rule the alerts are grouped by.
    pub group: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub alerts: Vec<Alert>,
}

/// A notification given up on after its retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetter {
    pub id: String,
    pub receiver: String,
    pub at_ms: u64,
    pub attempts: u32,
    pub error: String,
    pub notification: Notification,
}

/// One resource's use, trend and forecast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResourceForecast {
    /// `vcpus`, `memory_bytes` or `disk_bytes`.
    pub resource: String,
    pub capacity: f64,
    /// Allocated to VMs (what the scheduler counts).
    pub allocated: f64,
    /// Used on the host (resident memory, filesystem use), when measured.
    #[serde(default)]
    pub used: Option<f64>,
    pub free: f64,
    /// Growth of the allocation per day (linear fit over the history asked for).
    pub trend_per_day: f64,
    /// Days until the allocation reaches the capacity at that trend; none when it
    /// is not growing.
    #[serde(default)]
    pub days_until_full: Option<f64>,
    /// Growth of the use per day (linear fit), when use is measured.
    #[serde(default)]
    pub used_trend_per_day: Option<f64>,
    /// Days until the use reaches the capacity at that trend; none when it is not
    /// growing or not measured.
    #[serde(default)]
    pub days_until_used_full: Option<f64>,
}

/// One host's capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostCapacity {
    pub host: String,
    pub resources: Vec<ResourceForecast>,
    /// VMs of the size asked for that fit now, and in 30 days at the trend.
    pub fits_now: u64,
    pub fits_in_30_days: u64,
}

/// `GET /v1/capacity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Capacity {
    pub hosts: Vec<HostCapacity>,
    /// The sum over ready hosts.
    pub cluster: HostCapacity,
    /// The VM size `fits_*` count.
    pub vm_vcpus: u64,
    pub vm_mem_mib: u64,
}

/// `GET /v1/capacity`'s parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CapacityQuery {
    /// vCPUs of the VM size to count [default: 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u64>,
    /// Memory of the VM size to count, MiB [default: 512].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_mib: Option<u64>,
    /// History the trend is fitted over, s [default: 604800, a week].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u64>,
}
