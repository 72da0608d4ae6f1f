//! `GET /metrics`: the host's and every VM's figures in the Prometheus exposition
//! format, through `prometheus-client` (OpenMetrics text). Names follow Prometheus'
//! rules: the unit in the name (`_bytes`, `_seconds`), `_total` on counters, gauges
//! for what goes up and down. Per VM: state, size, uptime, restarts, the VMM
//! process's CPU and memory, and the VMM's counters, among them every disk's and
//! NIC's byte counters (labels `disk`/`nic`: the device's number in the VM's spec).
//! Migrations are counted by direction and result, with a histogram of downtimes.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use nova_hostd_api::{HostInfo, MigrationDirection, MigrationState, MigrationStatus, VmState};
use nova_vmm_api::DeviceCounters;

use crate::vms::live::Live;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;
type GaugeF = Gauge<f64, AtomicU64>;
type CounterF = Counter<f64, AtomicU64>;

const MIB: f64 = (1u64 << 20) as f64;

/// Migrations finished since hostd started (kept by `migration::state`).
#[derive(Debug, Clone)]
pub struct MigrationMetrics {
    finished: Family<Labels, Counter>,
    downtime: Histogram,
}

impl Default for MigrationMetrics {
    fn default() -> Self {
        MigrationMetrics {
            finished: Family::default(),
            // Downtimes from 0.1 ms (pre-copy on a quiet guest) to seconds.
            downtime: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        }
    }
}

fn direction(d: MigrationDirection) -> &'static str {
    match d {
        MigrationDirection::Outgoing => "outgoing",
        MigrationDirection::Incoming => "incoming",
    }
}

fn state_name(s: VmState) -> &'static str {
    match s {
        VmState::Created => "created",
        VmState::Starting => "starting",
        VmState::Running => "running",
        VmState::Paused => "paused",
        VmState::Stopped => "stopped",
        VmState::Crashed => "crashed",
        VmState::MigratingOut => "migrating_out",
        VmState::MigratingIn => "migrating_in",
        VmState::Unknown => "unknown",
    }
}

impl MigrationMetrics {
    /// Counts a finished migration (and its downtime, for a completed outgoing one:
    /// the VMM measured it on the source).
    pub fn finished(&self, m: &MigrationStatus) {
        let result = match m.state {
            MigrationState::Completed => "completed",
            MigrationState::Cancelled => "cancelled",
            _ => "failed",
        };
        self.finished
            .get_or_create(&vec![
                ("direction", direction(m.direction).to_string()),
                ("result", result.to_string()),
            ])
            .inc();
        if let (MigrationState::Completed, MigrationDirection::Outgoing, Some(d)) =
            (m.state, m.direction, m.downtime_ms)
        {
            self.downtime.observe(d / 1e3);
        }
    }
}

/// Families registered as they are filled.
struct Page {
    reg: Registry,
}

impl Page {
    fn gauge(&mut self, name: &str, help: &str, unit: Option<Unit>) -> Family<Labels, GaugeF> {
        let f = Family::<Labels, GaugeF>::default();
        match unit {
            Some(u) => self.reg.register_with_unit(name, help, u, f.clone()),
            None => self.reg.register(name, help, f.clone()),
        }
        f
    }

    fn counter(&mut self, name: &str, help: &str, unit: Option<Unit>) -> Family<Labels, Counter> {
        let f = Family::<Labels, Counter>::default();
        match unit {
            Some(u) => self.reg.register_with_unit(name, help, u, f.clone()),
            None => self.reg.register(name, help, f.clone()),
        }
        f
    }
}

fn vm(id: &str) -> Labels {
    vec![("vm", id.to_string())]
}

fn with(mut l: Labels, k: &'static str, v: impl ToString) -> Labels {
    l.push((k, v.to_string()));
    l
}

/// Renders the whole exposition; `attach` is how jailed VMMs enter their cgroups.
pub fn render(
    host: &HostInfo,
    vms: &[Live],
    mig: &MigrationMetrics,
    attach: &crate::jail::favordynmods::Mode,
) -> String {
    let mut p = Page {
        reg: Registry::with_prefix("nova"),
    };
    let host_gauges: [(&str, &str, Option<Unit>, f64); 11] = [
        ("host_cores", "Physical cores", None, host.cores as f64),
        (
            "host_memory",
            "Physical memory",
            Some(Unit::Bytes),
            host.mem_mib as f64 * MIB,
        ),
        (
            "host_disk_size",
            "Size of the data dir's filesystem",
            Some(Unit::Bytes),
            host.disk_total_mib as f64 * MIB,
        ),
        (
            "host_disk_free",
            "Free space on the data dir's filesystem",
            Some(Unit::Bytes),
            host.disk_free_mib as f64 * MIB,
        ),
        (
            "host_capacity_vcpus",
            "vCPUs admission allows",
            None,
            host.capacity.vcpus as f64,
        ),
        (
            "host_capacity_memory",
            "Guest memory admission allows",
            Some(Unit::Bytes),
            host.capacity.mem_mib as f64 * MIB,
        ),
        (
            "host_capacity_disk",
            "Virtual disk size admission allows",
            Some(Unit::Bytes),
            host.capacity.disk_mib as f64 * MIB,
        ),
        (
            "host_allocated_vcpus",
            "vCPUs held by active VMs",
            None,
            host.allocated.vcpus as f64,
        ),
        (
            "host_allocated_memory",
            "Guest memory held by active VMs",
            Some(Unit::Bytes),
            host.allocated.mem_mib as f64 * MIB,
        ),
        (
            "host_allocated_disk",
            "Virtual size of the VMs' disks",
            Some(Unit::Bytes),
            host.allocated.disk_mib as f64 * MIB,
        ),
        (
            "host_vms",
            "VMs defined on this host",
            None,
            vms.len() as f64,
        ),
    ];
    for (name, help, unit, v) in host_gauges {
        let g = GaugeF::default();
        g.set(v);
        match unit {
            Some(u) => p.reg.register_with_unit(name, help, u, g),
            None => p.reg.register(name, help, g),
        }
    }
    host_usage(&mut p);
    let dynmods = p.gauge(
        "host_cgroup_favordynmods",
        "1 on the series of how hostd found or set cgroup2's favordynmods at start (fast cgroup attach for jailed VMMs when already-on, remounted or mounted)",
        None,
    );
    for name in crate::jail::favordynmods::Mode::NAMES {
        dynmods
            .get_or_create(&vec![("mode", name.to_string())])
            .set(if name == attach.name() { 1.0 } else { 0.0 });
    }
    p.reg.register(
        "host_migrations",
        "Migrations this hostd finished since it started, by direction and result",
        mig.finished.clone(),
    );
    p.reg.register_with_unit(
        "host_migration_downtime",
        "VMM-measured downtime of completed outgoing migrations",
        Unit::Seconds,
        mig.downtime.clone(),
    );

    let state = p.gauge("vm_state", "1 for the VM's current state", None);
    let memory = p.gauge("vm_memory", "Guest memory", Some(Unit::Bytes));
    let vcpus = p.gauge("vm_vcpus", "vCPUs", None);
    let uptime = p.gauge(
        "vm_uptime",
        "Time since its VMM started",
        Some(Unit::Seconds),
    );
    let restarts = p.counter(
        "vm_restarts",
        "Restarts under the VM's restart policy",
        None,
    );
    let cpu = Family::<Labels, CounterF>::default();
    p.reg.register_with_unit(
        "vm_process_cpu",
        "CPU time of the VM's VMM process (vCPUs included)",
        Unit::Seconds,
        cpu.clone(),
    );
    let rss = p.gauge(
        "vm_process_resident",
        "Resident memory of the VMM process itself",
        Some(Unit::Bytes),
    );
    let guest_rss = p.gauge(
        "vm_guest_resident",
        "Guest memory resident on the host",
        Some(Unit::Bytes),
    );
    let downtime = p.gauge(
        "vm_migration_downtime",
        "Downtime of the VM's last completed migration here",
        Some(Unit::Seconds),
    );
    for l in vms {
        let i = &l.info;
        state
            .get_or_create(&vec![
                ("vm", i.id.clone()),
                ("name", i.name.clone()),
                ("state", state_name(i.state).to_string()),
            ])
            .set(1.0);
        memory
            .get_or_create(&vm(&i.id))
            .set(i.spec.mem_mib as f64 * MIB);
        vcpus.get_or_create(&vm(&i.id)).set(i.spec.vcpus as f64);
        if let Some(u) = i.uptime_ms {
            uptime.get_or_create(&vm(&i.id)).set(u as f64 / 1e3);
        }
        restarts.get_or_create(&vm(&i.id)).inc_by(i.restarts as u64);
        if let Some(p) = l.process {
            cpu.get_or_create(&vm(&i.id)).inc_by(p.cpu_ms as f64 / 1e3);
            rss.get_or_create(&vm(&i.id)).set(p.rss_bytes as f64);
            guest_rss
                .get_or_create(&vm(&i.id))
                .set(p.guest_bytes as f64);
        }
        if let Some(m) = &i.migration {
            if let (MigrationState::Completed, Some(d)) = (m.state, m.downtime_ms) {
                downtime
                    .get_or_create(&with(vm(&i.id), "direction", direction(m.direction)))
                    .set(d / 1e3);
            }
        }
    }
    vmm_counters(&mut p, vms);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &p.reg);
    out
}

/// What the host itself uses now: memory available (`/proc/meminfo`) and CPU time
/// spent outside idle (`/proc/stat`), for the controller's history and alerts.
fn host_usage(p: &mut Page) {
    let avail = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
    });
    if let Some(kib) = avail {
        let g = GaugeF::default();
        g.set(kib * 1024.0);
        p.reg.register_with_unit(
            "host_memory_available",
            "Memory available for new work (MemAvailable)",
            Unit::Bytes,
            g,
        );
    }
    // The first line of /proc/stat: user nice system idle iowait irq softirq steal, in
    // clock ticks (USER_HZ, 100 on Linux).
    let busy = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        let f: Vec<u64> = s
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        (f.len() >= 8).then(|| f[..8].iter().sum::<u64>() - f[3] - f[4])
    });
    if let Some(ticks) = busy {
        let c = CounterF::default();
        c.inc_by(ticks as f64 / 100.0);
        p.reg.register_with_unit(
            "host_cpu",
            "CPU time the host spent busy, all cores",
            Unit::Seconds,
            c,
        );
    }
}

/// The VMMs' own counters: VM-wide, then per disk and per NIC.
fn vmm_counters(p: &mut Page, vms: &[Live]) {
    let b = Some(Unit::Bytes);
    let exits = p.counter("vm_vcpu_exits", "vCPU exits to the VMM", None);
    let io = p.counter("vm_io_exits", "Port I/O exits", None);
    let mmio = p.counter("vm_mmio_exits", "MMIO exits", None);
    let console = p.counter(
        "vm_console",
        "Bytes the guest wrote to its serial console",
        b.clone(),
    );
    let disk_read = p.counter(
        "vm_disk_read",
        "Bytes the guest read from the disk",
        b.clone(),
    );
    let disk_write = p.counter(
        "vm_disk_written",
        "Bytes the guest wrote to the disk",
        b.clone(),
    );
    let disk_reads = p.counter("vm_disk_reads", "Read requests completed", None);
    let disk_writes = p.counter("vm_disk_writes", "Write requests completed", None);
    let disk_failed = p.counter(
        "vm_disk_failed_requests",
        "Requests that failed or were malformed",
        None,
    );
    let rx = p.counter(
        "vm_net_receive",
        "Bytes the NIC delivered to the guest",
        b.clone(),
    );
    let tx = p.counter("vm_net_transmit", "Bytes the guest sent on the NIC", b);
    let rx_p = p.counter(
        "vm_net_receive_packets",
        "Frames delivered to the guest",
        None,
    );
    let tx_p = p.counter("vm_net_transmit_packets", "Frames the guest sent", None);
    let drops = p.counter(
        "vm_net_dropped_packets",
        "Frames dropped, by direction",
        None,
    );
    for l in vms {
        let Some(c) = &l.vmm else { continue };
        let id = &l.info.id;
        exits.get_or_create(&vm(id)).inc_by(c.vcpu_exits);
        io.get_or_create(&vm(id)).inc_by(c.io_exits);
        mmio.get_or_create(&vm(id)).inc_by(c.mmio_exits);
        console.get_or_create(&vm(id)).inc_by(c.console_bytes);
        let (mut disk, mut nic) = (0, 0);
        for d in &c.devices {
            match d {
                DeviceCounters::Block(k) => {
                    let l = with(vm(id), "disk", disk);
                    disk_read.get_or_create(&l).inc_by(k.read_bytes);
                    disk_write.get_or_create(&l).inc_by(k.write_bytes);
                    disk_reads.get_or_create(&l).inc_by(k.read_requests);
                    disk_writes.get_or_create(&l).inc_by(k.write_requests);
                    disk_failed
                        .get_or_create(&l)
                        .inc_by(k.failed_requests + k.bad_chains);
                    disk += 1;
                }
                DeviceCounters::Net(k) => {
                    let l = with(vm(id), "nic", nic);
                    rx.get_or_create(&l).inc_by(k.rx_bytes);
                    tx.get_or_create(&l).inc_by(k.tx_bytes);
                    rx_p.get_or_create(&l).inc_by(k.rx_packets);
                    tx_p.get_or_create(&l).inc_by(k.tx_packets);
                    drops
                        .get_or_create(&with(l.clone(), "direction", "receive"))
                        .inc_by(k.rx_dropped);
                    drops
                        .get_or_create(&with(l, "direction", "transmit"))
                        .inc_by(k.tx_dropped + k.bad_chains);
                    nic += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nova_hostd_api::*;
    use nova_vmm_api::{BlockCounters, Counters, NetCounters};

    fn host() -> HostInfo {
        HostInfo {
            image_version: None,
            host_id: "h1".into(),
            hostname: "x".into(),
            version: "0".into(),
            cores: 2,
            mem_mib: 1024,
            disk_total_mib: 10,
            disk_free_mib: 5,
            kvm: "pvm".into(),
            cpu_overcommit: 8.0,
            mem_overcommit: 1.0,
            capacity: Resources {
                vcpus: 16,
                mem_mib: 512,
                disk_mib: 10,
            },
            allocated: Resources {
                vcpus: 1,
                mem_mib: 64,
                disk_mib: 0,
            },
            vms: 1,
            network: NetworkInfo {
                bridge: "br".into(),
                host_cidr: None,
                vxlan: None,
            },
        }
    }

    #[test]
    fn renders_host_vm_and_device_series_with_units_in_their_names() {
        let spec: VmSpec =
            serde_json::from_str(r#"{"name":"a","kernel":"/k","mem_mib":64}"#).unwrap();
        let info = VmInfo {
            id: "vm-1".into(),
            name: "a".into(),
            state: VmState::Running,
            spec,
            pid: Some(1),
            kvm: None,
            uptime_ms: Some(1500),
            disks: vec![],
            nics: vec![],
            restarts: 0,
            exit: None,
            counters: Default::default(),
            migration: None,
        };
        let counters = Counters {
            vcpu_exits: 42,
            devices: vec![
                DeviceCounters::Block(BlockCounters {
                    read_bytes: 4096,
                    ..Default::default()
                }),
                DeviceCounters::Net(NetCounters {
                    rx_bytes: 98,
                    ..Default::default()
                }),
            ],
            ..Default::default()
        };
        let mig = MigrationMetrics::default();
        let mut m = crate::migration::state::new_status(
            "m",
            "x",
            MigrationDirection::Outgoing,
            MigrationMode::Hybrid,
            "p",
        );
        m.state = MigrationState::Completed;
        m.downtime_ms = Some(0.4);
        mig.finished(&m);
        m.state = MigrationState::Failed;
        mig.finished(&m);
        let live = Live {
            info,
            vmm: Some(counters),
            process: None,
        };
        let attach = crate::jail::favordynmods::Mode::Remounted {
            at: "/sys/fs/cgroup".into(),
        };
        let text = render(&host(), &[live], &mig, &attach);
        for want in [
            "# TYPE nova_host_memory_bytes gauge",
            "nova_host_memory_bytes 1073741824.0",
            "# TYPE nova_host_memory_available_bytes gauge",
            "# TYPE nova_host_cpu_seconds counter",
            "nova_vm_state{vm=\"vm-1\",name=\"a\",state=\"running\"} 1.0",
            "# TYPE nova_vm_vcpu_exits counter",
            "nova_vm_vcpu_exits_total{vm=\"vm-1\"} 42",
            "nova_vm_uptime_seconds{vm=\"vm-1\"} 1.5",
            "nova_vm_disk_read_bytes_total{vm=\"vm-1\",disk=\"0\"} 4096",
            "nova_vm_net_receive_bytes_total{vm=\"vm-1\",nic=\"0\"} 98",
            "nova_host_migrations_total{direction=\"outgoing\",result=\"completed\"} 1",
            "nova_host_migrations_total{direction=\"outgoing\",result=\"failed\"} 1",
            "# TYPE nova_host_migration_downtime_seconds histogram",
            "nova_host_migration_downtime_seconds_count 1",
            "nova_host_cgroup_favordynmods{mode=\"remounted\"} 1.0",
            "nova_host_cgroup_favordynmods{mode=\"off\"} 0.0",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
