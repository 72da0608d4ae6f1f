//! The controller's Prometheus metrics (`GET /metrics`, OpenMetrics text through
//! `prometheus-client`): API request latency by route template and status, reconcile
//! passes, scheduler decisions, migrations (outcomes, downtime, bytes), whether this
//! controller leads, and hosts by state. Names follow Prometheus' rules: a unit suffix
//! (`_seconds`, `_bytes`), `_total` on counters.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// One API request: its method, route template (`/v1/vms/{id}`) and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// How something ended (`ok`/`error`, `placed`/`unschedulable`, `succeeded`/`failed`/`cancelled`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// A host state (`ready`, `down`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 0.25 ms .. ~8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

fn downtime() -> Histogram {
    // 0.1 ms .. ~3 s: live migration pauses are milliseconds.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// Every metric of the controller, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    requests: HistogramFamily<RequestLabels>,
    reconcile_passes: Family<ResultLabel, Counter>,
    reconcile_duration: Histogram,
    decisions: Family<ResultLabel, Counter>,
    migrations: Family<ResultLabel, Counter>,
    migration_downtime: Histogram,
    migration_bytes: Counter,
    leader: Gauge,
    hosts: Family<StateLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn result(r: &str) -> ResultLabel {
    ResultLabel { result: r.into() }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("nova_controller");
        let requests: HistogramFamily<RequestLabels> = Family::new_with_constructor(latency);
        registry.register_with_unit(
            "api_request_duration",
            "Time to answer an API request, by method, route template and status",
            Unit::Seconds,
            requests.clone(),
        );
        let reconcile_passes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reconcile_passes",
            "Reconcile passes run while leading, by result (ok, error)",
            reconcile_passes.clone(),
        );
        let reconcile_duration = latency();
        registry.register_with_unit(
            "reconcile_pass_duration",
            "Time one reconcile pass took",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let decisions = Family::<ResultLabel, Counter>::default();
        registry.register(
            "scheduler_decisions",
            "Placements the scheduler decided, by result (placed, unschedulable)",
            decisions.clone(),
        );
        let migrations = Family::<ResultLabel, Counter>::default();
        registry.register(
            "migrations",
            "Live migrations ended, by result (succeeded, failed, cancelled)",
            migrations.clone(),
        );
        let migration_downtime = downtime();
        registry.register_with_unit(
            "migration_downtime",
            "Downtime of completed live migrations, as the VMM measured it",
            Unit::Seconds,
            migration_downtime.clone(),
        );
        let migration_bytes = Counter::default();
        registry.register_with_unit(
            "migration",
            "Bytes sent by completed live migrations",
            Unit::Bytes,
            migration_bytes.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this controller leads (runs the reconcile loops), else 0",
            leader.clone(),
        );
        let hosts = Family::<StateLabel, Gauge>::default();
        registry.register(
            "hosts",
            "Hosts by state, as of the last reconcile pass",
            hosts.clone(),
        );
        Metrics {
            registry,
            requests,
            reconcile_passes,
            reconcile_duration,
            decisions,
            migrations,
            migration_downtime,
            migration_bytes,
            leader,
            hosts,
        }
    }

    /// One API request answered.
    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.into(),
                route: route.into(),
                status,
            })
            .observe(took.as_secs_f64());
    }

    /// One reconcile pass done.
    pub fn reconcile_pass(&self, ok: bool, took: Duration) {
        self.reconcile_passes
            .get_or_create(&result(if ok { "ok" } else { "error" }))
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    /// One placement decided (`placed` or `unschedulable`).
    pub fn decision(&self, placed: bool) {
        self.decisions
            .get_or_create(&result(if placed { "placed" } else { "unschedulable" }))
            .inc();
    }

    /// One migration ended (`succeeded`, `failed`, `cancelled`) with what it measured.
    pub fn migration(&self, outcome: &str, downtime_ms: Option<f64>, bytes: Option<u64>) {
        self.migrations.get_or_create(&result(outcome)).inc();
        if let Some(d) = downtime_ms {
            self.migration_downtime.observe(d / 1e3);
        }
        if let Some(b) = bytes {
            self.migration_bytes.inc_by(b);
        }
    }

    /// Whether this controller leads now.
    pub fn set_leading(&self, leading: bool) {
        self.leader.set(leading as i64);
    }

    /// Hosts per state now.
    pub fn set_hosts(&self, ready: usize, down: usize) {
        self.hosts
            .get_or_create(&StateLabel {
                state: "ready".into(),
            })
            .set(ready as i64);
        self.hosts
            .get_or_create(&StateLabel {
                state: "down".into(),
            })
            .set(down as i64);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_unit_and_counters_end_in_total() {
        let m = Metrics::new();
        m.request("GET", "/v1/vms/{id}", 200, Duration::from_millis(2));
        m.reconcile_pass(true, Duration::from_millis(5));
        m.decision(true);
        m.migration("succeeded", Some(3.5), Some(4096));
        let text = m.encode();
        for line in [
            "# TYPE nova_controller_api_request_duration_seconds histogram",
            "nova_controller_api_request_duration_seconds_count{method=\"GET\",route=\"/v1/vms/{id}\",status=\"200\"} 1",
            "# TYPE nova_controller_reconcile_passes counter",
            "nova_controller_reconcile_passes_total{result=\"ok\"} 1",
            "nova_controller_scheduler_decisions_total{result=\"placed\"} 1",
            "nova_controller_migrations_total{result=\"succeeded\"} 1",
            "# TYPE nova_controller_migration_downtime_seconds histogram",
            "nova_controller_migration_bytes_total 4096",
            "# TYPE nova_controller_leader gauge",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
