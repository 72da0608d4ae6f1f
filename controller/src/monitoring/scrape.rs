//! From an exposition (hostd's `/metrics`, the controller's own) to the history's
//! series: the Prometheus text is parsed by the `prometheus-parse` crate, the names
//! NovaCron exports are mapped to short metric names (`vm.cpu`, `host.mem_used_bytes`),
//! per-device series are summed per VM, and counters become per-second rates against
//! the previous scrape (a counter that went back, a restarted VMM, starts over).

use std::collections::HashMap;

use super::tsdb::Key;
use crate::model::SYSTEM_TENANT;

/// How an exposed series becomes a stored one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Stored as it is.
    Gauge,
    /// Stored as its per-second rate.
    Rate,
    /// Stored as it is (a cumulative count, for `change` rules).
    Count,
}

/// Exposed name (without `_total`), one required label value, stored metric, kind.
type Mapping = (
    &'static str,
    Option<(&'static str, &'static str)>,
    &'static str,
    Kind,
);

const HOST: &[Mapping] = &[
    (
        "nova_host_memory_bytes",
        None,
        "host.mem_total_bytes",
        Kind::Gauge,
    ),
    (
        "nova_host_memory_available_bytes",
        None,
        "host.mem_available_bytes",
        Kind::Gauge,
    ),
    ("nova_host_cpu_seconds", None, "host.cpu", Kind::Rate),
    ("nova_host_cores", None, "host.cores", Kind::Gauge),
    (
        "nova_host_disk_size_bytes",
        None,
        "host.disk_total_bytes",
        Kind::Gauge,
    ),
    (
        "nova_host_disk_free_bytes",
        None,
        "host.disk_free_bytes",
        Kind::Gauge,
    ),
    (
        "nova_host_capacity_vcpus",
        None,
        "host.capacity_vcpus",
        Kind::Gauge,
    ),
    (
        "nova_host_capacity_memory_bytes",
        None,
        "host.capacity_mem_bytes",
        Kind::Gauge,
    ),
    (
        "nova_host_capacity_disk_bytes",
        None,
        "host.capacity_disk_bytes",
        Kind::Gauge,
    ),
    (
        "nova_host_allocated_vcpus",
        None,
        "host.allocated_vcpus",
        Kind::Gauge,
    ),
    (
        "nova_host_allocated_memory_bytes",
        None,
        "host.allocated_mem_bytes",
        Kind::Gauge,
    ),
    (
        "nova_host_allocated_disk_bytes",
        None,
        "host.allocated_disk_bytes",
        Kind::Gauge,
    ),
    ("nova_host_vms", None, "host.vms", Kind::Gauge),
    (
        "nova_host_migrations",
        Some(("result", "failed")),
        "host.migrations_failed",
        Kind::Count,
    ),
    (
        "nova_host_migrations",
        Some(("result", "completed")),
        "host.migrations",
        Kind::Count,
    ),
];

const VM: &[Mapping] = &[
    ("nova_vm_process_cpu_seconds", None, "vm.cpu", Kind::Rate),
    (
        "nova_vm_guest_resident_bytes",
        None,
        "vm.mem_bytes",
        Kind::Gauge,
    ),
    (
        "nova_vm_memory_bytes",
        None,
        "vm.mem_size_bytes",
        Kind::Gauge,
    ),
    (
        "nova_vm_disk_read_bytes",
        None,
        "vm.disk_read_bps",
        Kind::Rate,
    ),
    (
        "nova_vm_disk_written_bytes",
        None,
        "vm.disk_write_bps",
        Kind::Rate,
    ),
    (
        "nova_vm_net_receive_bytes",
        None,
        "vm.net_rx_bps",
        Kind::Rate,
    ),
    (
        "nova_vm_net_transmit_bytes",
        None,
        "vm.net_tx_bps",
        Kind::Rate,
    ),
    ("nova_vm_vcpu_exits", None, "vm.exits_per_s", Kind::Rate),
    ("nova_vm_restarts", None, "vm.restarts", Kind::Count),
    (
        "nova_vm_state",
        Some(("state", "crashed")),
        "vm.crashed",
        Kind::Gauge,
    ),
];

const CONTROLLER: &[Mapping] = &[
    (
        "nova_controller_leader",
        None,
        "controller.leader",
        Kind::Gauge,
    ),
    (
        "nova_controller_hosts",
        Some(("state", "down")),
        "controller.hosts_down",
        Kind::Gauge,
    ),
    (
        "nova_controller_migrations",
        Some(("result", "failed")),
        "controller.migrations_failed",
        Kind::Count,
    ),
    (
        "nova_controller_migrations",
        Some(("result", "succeeded")),
        "controller.migrations",
        Kind::Count,
    ),
    (
        "nova_controller_reconcile_passes",
        Some(("result", "error")),
        "controller.reconcile_errors",
        Kind::Count,
    ),
];

/// Every metric the history can hold, for the docs and `names`.
pub fn known_metrics() -> Vec<&'static str> {
    let mut v: Vec<&str> = HOST
        .iter()
        .chain(VM)
        .chain(CONTROLLER)
        .map(|m| m.2)
        .collect();
    v.extend(["host.up", "host.mem_used_bytes", "host.disk_used_bytes"]);
    v.sort();
    v.dedup();
    v
}

/// One stored sample: series, its owner, value.
pub type Sample = (Key, String, f64);

/// Counters' last values, to turn them into rates.
#[derive(Default)]
pub struct Rates {
    prev: HashMap<Key, (u64, f64)>,
}

impl Rates {
    /// The per-second rate of `key` since its last value (none the first time).
    fn rate(&mut self, key: &Key, t: u64, v: f64) -> Option<f64> {
        let before = self.prev.insert(key.clone(), (t, v));
        let (pt, pv) = before?;
        if t <= pt {
            return None;
        }
        let d = if v >= pv { v - pv } else { v };
        Some(d / (t - pt) as f64)
    }

    /// Forgets counters not seen since `before` (deleted VMs).
    pub fn forget_older(&mut self, before: u64) {
        self.prev.retain(|_, (t, _)| *t >= before);
    }
}

fn name(m: &str) -> &str {
    m.strip_suffix("_total").unwrap_or(m)
}

/// What a parsed exposition holds: (exposed name, labels, value) per line that
/// carries a number (histograms and summaries are skipped).
fn parse(text: &str) -> Vec<(String, prometheus_parse::Labels, f64)> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let Ok(s) = prometheus_parse::Scrape::parse(lines) else {
        return vec![];
    };
    s.samples
        .into_iter()
        .filter_map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            v.is_finite()
                .then(|| (name(&s.metric).to_string(), s.labels, v))
        })
        .collect()
}

fn matches(m: &Mapping, exposed: &str, labels: &prometheus_parse::Labels) -> bool {
    m.0 == exposed && m.1.is_none_or(|(k, v)| labels.get(k) == Some(v))
}

/// Sums each mapped series per target, then stores gauges as they are and counters
/// as rates.
fn collect<'a>(
    parsed: &[(String, prometheus_parse::Labels, f64)],
    table: &'a [Mapping],
    target_of: &dyn Fn(&prometheus_parse::Labels) -> Option<String>,
) -> HashMap<(String, &'a str), (Kind, f64)> {
    let mut sums: HashMap<(String, &str), (Kind, f64)> = HashMap::new();
    for (exposed, labels, v) in parsed {
        for m in table {
            let Some(target) = target_of(labels) else {
                continue;
            };
            if m.0 == exposed && m.2 == "vm.crashed" {
                // Every state line of a VM counts: 1 only for `crashed`.
                let e = sums.entry((target, m.2)).or_insert((m.3, 0.0));
                if labels.get("state") == Some("crashed") {
                    e.1 += v;
                }
                continue;
            }
            if matches(m, exposed, labels) {
                sums.entry((target, m.2)).or_insert((m.3, 0.0)).1 += v;
            }
        }
    }
    sums
}

fn finish(
    sums: HashMap<(String, &str), (Kind, f64)>,
    t: u64,
    rates: &mut Rates,
    tenant_of: &dyn Fn(&str) -> String,
    out: &mut Vec<Sample>,
) {
    for ((target, metric), (kind, v)) in sums {
        let key = Key {
            metric: metric.to_string(),
            target,
        };
        let v = match kind {
            Kind::Gauge | Kind::Count => Some(v),
            Kind::Rate => rates.rate(&key, t, v),
        };
        if let Some(v) = v {
            let tenant = tenant_of(&key.target);
            out.push((key, tenant, v));
        }
    }
}

/// The samples of one hostd's exposition at time `t`: the host's series (target: the
/// host's id) and each VM's (target: the VM id, owner from `vm_tenant`; VMs the
/// controller does not know belong to the system tenant).
pub fn host_samples(
    host: &str,
    text: &str,
    t: u64,
    vm_tenant: &HashMap<String, String>,
    rates: &mut Rates,
) -> Vec<Sample> {
    let parsed = parse(text);
    let mut out = vec![];
    let hs = collect(&parsed, HOST, &|_| Some(host.to_string()));
    let get = |m: &str| hs.get(&(host.to_string(), m)).map(|e| e.1);
    let mut derived = vec![];
    if let (Some(total), Some(avail)) =
        (get("host.mem_total_bytes"), get("host.mem_available_bytes"))
    {
        derived.push(("host.mem_used_bytes", total - avail));
    }
    if let (Some(total), Some(free)) = (get("host.disk_total_bytes"), get("host.disk_free_bytes")) {
        derived.push(("host.disk_used_bytes", total - free));
    }
    finish(hs, t, rates, &|_| SYSTEM_TENANT.into(), &mut out);
    for (m, v) in derived {
        out.push((key(m, host), SYSTEM_TENANT.into(), v));
    }
    out.push((key("host.up", host), SYSTEM_TENANT.into(), 1.0));
    let vs = collect(&parsed, VM, &|l| l.get("vm").map(str::to_string));
    finish(
        vs,
        t,
        rates,
        &|vm| {
            vm_tenant
                .get(vm)
                .cloned()
                .unwrap_or_else(|| SYSTEM_TENANT.into())
        },
        &mut out,
    );
    out
}

/// The controller's own samples (target: its node name).
pub fn controller_samples(node: &str, text: &str, t: u64, rates: &mut Rates) -> Vec<Sample> {
    let parsed = parse(text);
    let mut out = vec![];
    let cs = collect(&parsed, CONTROLLER, &|_| Some(node.to_string()));
    finish(cs, t, rates, &|_| SYSTEM_TENANT.into(), &mut out);
    out
}

/// A series' key.
pub fn key(metric: &str, target: &str) -> Key {
    Key {
        metric: metric.into(),
        target: target.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# TYPE nova_host_memory_bytes gauge
nova_host_memory_bytes 1000.0
# TYPE nova_host_memory_available_bytes gauge
nova_host_memory_available_bytes 250.0
# TYPE nova_vm_process_cpu_seconds counter
nova_vm_process_cpu_seconds_total{vm=\"a\"} 10.0
# TYPE nova_vm_disk_read_bytes counter
nova_vm_disk_read_bytes_total{vm=\"a\",disk=\"0\"} 100
nova_vm_disk_read_bytes_total{vm=\"a\",disk=\"1\"} 300
# TYPE nova_vm_state gauge
nova_vm_state{vm=\"a\",name=\"x\",state=\"running\"} 1.0
# TYPE nova_host_migrations counter
nova_host_migrations_total{direction=\"outgoing\",result=\"failed\"} 2
# EOF
";

    fn find(s: &[Sample], m: &str, t: &str) -> Option<(String, f64)> {
        s.iter()
            .find(|x| x.0.metric == m && x.0.target == t)
            .map(|x| (x.1.clone(), x.2))
    }

    #[test]
    fn counters_become_rates_devices_are_summed_and_vms_keep_their_tenant() {
        let tenants = HashMap::from([("a".to_string(), "acme".to_string())]);
        let mut r = Rates::default();
        let first = host_samples("h1", PAGE, 100, &tenants, &mut r);
        assert_eq!(
            find(&first, "host.mem_used_bytes", "h1"),
            Some(("system".into(), 750.0))
        );
        assert_eq!(find(&first, "host.up", "h1").unwrap().1, 1.0);
        assert_eq!(find(&first, "host.migrations_failed", "h1").unwrap().1, 2.0);
        assert_eq!(find(&first, "vm.crashed", "a"), Some(("acme".into(), 0.0)));
        assert!(
            find(&first, "vm.cpu", "a").is_none(),
            "no rate from one value"
        );
        let later = PAGE
            .replace("} 10.0", "} 15.0")
            .replace("disk=\"1\"} 300", "disk=\"1\"} 1300")
            .replace("state=\"running\"", "state=\"crashed\"");
        let second = host_samples("h1", &later, 110, &tenants, &mut r);
        assert_eq!(find(&second, "vm.cpu", "a"), Some(("acme".into(), 0.5)));
        assert_eq!(find(&second, "vm.disk_read_bps", "a").unwrap().1, 100.0);
        assert_eq!(find(&second, "vm.crashed", "a").unwrap().1, 1.0);
    }

    #[test]
    fn hostile_expositions_yield_nothing_rather_than_panicking() {
        let mut r = Rates::default();
        for text in [
            "",
            "nova_vm_process_cpu_seconds_total{vm=\"a\" 1",
            "nova_vm_process_cpu_seconds_total{vm=} NaN",
            "nova_host_memory_bytes +Inf\nnova_host_memory_bytes -1e309",
            "{}{}{}\n# TYPE\n# TYPE x histogram\nx_bucket{le=\"zz\"} 1",
            &"x".repeat(100_000),
            "\u{0}\u{ffff}nova_vm_restarts_total{vm=\"\u{1f600}\"} 1",
        ] {
            let s = host_samples("h", text, 1, &HashMap::new(), &mut r);
            assert!(s.iter().all(|x| x.2.is_finite()), "{text:?}: {s:?}");
        }
        // Random bytes, as a fuzzer would send.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut b = vec![];
            for _ in 0..(seed % 200) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                const ALPHABET: &[u8] = b"nova_vm_{}=\",\n #TYPE0123.e+-";
                b.push(ALPHABET[(seed % ALPHABET.len() as u64) as usize]);
            }
            let text = String::from_utf8_lossy(&b);
            host_samples("h", &text, 2, &HashMap::new(), &mut r);
        }
    }
}
