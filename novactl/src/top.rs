//! `novactl top hosts|vms`: each host's or VM's latest figures from the controller's
//! metric history (`GET /v1/metrics/query`), like `kubectl top`. Tenants see their
//! own VMs; hosts are the system tenant's.

use std::collections::BTreeMap;

use clap::Subcommand;
use nova_controller_api::{ControllerClient, MetricQuery};
use serde::Serialize;

use crate::output::{self, Columns, Format};

#[derive(Subcommand)]
pub enum TopCmd {
    /// Hosts: CPU, memory and disk in use, VMs, whether the last scrape reached it.
    Hosts,
    /// VMs: CPU, resident memory, disk and network throughput, vCPU exits.
    #[command(after_long_help = "Examples:
  novactl top vms
  novactl top vms -o json     # the figures as numbers, for scripts")]
    Vms,
}

/// One target's latest value of each metric.
#[derive(Serialize)]
pub struct Row {
    pub id: String,
    pub values: BTreeMap<String, f64>,
    #[serde(skip)]
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Host,
    Vm,
}

const HOST_METRICS: &[&str] = &[
    "host.up",
    "host.cpu",
    "host.cores",
    "host.mem_used_bytes",
    "host.mem_total_bytes",
    "host.disk_used_bytes",
    "host.disk_total_bytes",
    "host.vms",
];

const VM_METRICS: &[&str] = &[
    "vm.cpu",
    "vm.mem_bytes",
    "vm.disk_read_bps",
    "vm.disk_write_bps",
    "vm.net_rx_bps",
    "vm.net_tx_bps",
    "vm.exits_per_s",
];

/// Bytes as people read them (KiB, MiB, GiB).
fn bytes(v: Option<f64>) -> String {
    let Some(mut v) = v else { return "-".into() };
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"] {
        if v.abs() < 1024.0 || unit == "TiB" {
            return if unit == "B" {
                format!("{v:.0}{unit}")
            } else {
                format!("{v:.1}{unit}")
            };
        }
        v /= 1024.0;
    }
    unreachable!("the loop returns at TiB")
}

fn pct(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.0}%", 100.0 * a / b),
        _ => "-".into(),
    }
}

impl Row {
    fn get(&self, m: &str) -> Option<f64> {
        self.values.get(m).copied()
    }
}

impl Columns for Row {
    fn headers(_: bool) -> Vec<&'static str> {
        // Both kinds print through one type; the first row decides (see `print`).
        vec![]
    }
    fn cells(&self, _: bool) -> Vec<String> {
        let g = |m| self.get(m);
        match self.kind {
            Kind::Host => vec![
                self.id.clone(),
                match g("host.up") {
                    Some(u) if u > 0.0 => "yes".into(),
                    Some(_) => "no".into(),
                    None => "-".into(),
                },
                g("host.cpu").map_or("-".into(), |c| format!("{c:.2}")),
                pct(g("host.cpu"), g("host.cores")),
                bytes(g("host.mem_used_bytes")),
                pct(g("host.mem_used_bytes"), g("host.mem_total_bytes")),
                pct(g("host.disk_used_bytes"), g("host.disk_total_bytes")),
                g("host.vms").map_or("-".into(), |v| format!("{v:.0}")),
            ],
            Kind::Vm => vec![
                self.id.clone(),
                g("vm.cpu").map_or("-".into(), |c| format!("{c:.2}")),
                bytes(g("vm.mem_bytes")),
                format!("{}/s", bytes(g("vm.disk_read_bps"))),
                format!("{}/s", bytes(g("vm.disk_write_bps"))),
                format!("{}/s", bytes(g("vm.net_rx_bps"))),
                format!("{}/s", bytes(g("vm.net_tx_bps"))),
                g("vm.exits_per_s").map_or("-".into(), |c| format!("{c:.0}")),
            ],
        }
    }
}

/// The latest value of each metric per target, over the last five minutes.
async fn latest(api: &ControllerClient, metrics: &[&str], kind: Kind) -> anyhow::Result<Vec<Row>> {
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for m in metrics {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64;
        let a = api
            .metric_query(&MetricQuery {
                metric: m.to_string(),
                start_ms: Some(now.saturating_sub(300_000)),
                end_ms: Some(now),
                ..Default::default()
            })
            .await?;
        for s in a.series {
            let Some(&(_, v)) = s.points.last() else {
                continue;
            };
            rows.entry(s.target.clone())
                .or_insert_with(|| Row {
                    id: s.target.clone(),
                    values: BTreeMap::new(),
                    kind,
                })
                .values
                .insert(s.metric, v);
        }
    }
    Ok(rows.into_values().collect())
}

pub async fn run(api: &ControllerClient, cmd: TopCmd, f: Format) -> anyhow::Result<()> {
    let (rows, headers): (_, &[&str]) = match cmd {
        TopCmd::Hosts => (
            latest(api, HOST_METRICS, Kind::Host).await?,
            &[
                "host", "up", "cpu", "cpu%", "memory", "memory%", "disk%", "vms",
            ],
        ),
        TopCmd::Vms => (
            latest(api, VM_METRICS, Kind::Vm).await?,
            &[
                "vm",
                "cpu",
                "memory",
                "disk read",
                "disk write",
                "net rx",
                "net tx",
                "exits/s",
            ],
        ),
    };
    if f.is_table() {
        let cells: Vec<Vec<String>> = rows.iter().map(|r| r.cells(false)).collect();
        print!("{}", output::table(headers, &cells));
    } else {
        print!("{}", output::data(f, &rows)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_print_in_units_people_read() {
        assert_eq!(bytes(Some(512.0)), "512B");
        assert_eq!(bytes(Some(3.0 * 1024.0 * 1024.0)), "3.0MiB");
        assert_eq!(bytes(None), "-");
        assert_eq!(pct(Some(45.0), Some(50.0)), "90%");
        assert_eq!(pct(Some(1.0), Some(0.0)), "-");
    }
}
