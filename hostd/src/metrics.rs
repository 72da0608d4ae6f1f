//! Prometheus text exposition (`GET /metrics`): host capacity and allocation, and per
//! VM: state, memory, vCPUs, the VMM's counters (exits, console/disk/net bytes),
//! restarts, migrations and their downtime.

use std::fmt::Write;

use crate::api::types::{HostInfo, MigrationDirection, MigrationState, VmInfo, VmState};

/// Counters of migrations this hostd ran since it started.
#[derive(Debug, Default, Clone)]
pub struct MigrationCounters {
    pub outgoing_completed: u64,
    pub outgoing_failed: u64,
    pub incoming_completed: u64,
    pub incoming_failed: u64,
    /// Sum and count of VMM-reported downtimes (ms) of completed outgoing migrations.
    pub downtime_ms_sum: f64,
    pub downtime_count: u64,
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn metric_name(counter: &str) -> Option<String> {
    let ok = !counter.is_empty()
        && counter
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then(|| format!("nova_vm_{counter}"))
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
    }
}

/// Renders the whole exposition.
pub fn render(host: &HostInfo, vms: &[VmInfo], mig: &MigrationCounters) -> String {
    let mut o = String::new();
    let h = label(&host.host_id);
    let gauge = |o: &mut String, name: &str, help: &str, v: f64| {
        let _ = writeln!(
            o,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{host=\"{h}\"}} {v}"
        );
    };
    gauge(
        &mut o,
        "nova_host_cores",
        "Physical cores.",
        host.cores as f64,
    );
    gauge(
        &mut o,
        "nova_host_memory_mib",
        "Physical memory.",
        host.mem_mib as f64,
    );
    gauge(
        &mut o,
        "nova_host_disk_free_mib",
        "Free space on the data dir's filesystem.",
        host.disk_free_mib as f64,
    );
    gauge(
        &mut o,
        "nova_host_capacity_vcpus",
        "vCPUs admission allows.",
        host.capacity.vcpus as f64,
    );
    gauge(
        &mut o,
        "nova_host_capacity_memory_mib",
        "Memory admission allows.",
        host.capacity.mem_mib as f64,
    );
    gauge(
        &mut o,
        "nova_host_allocated_vcpus",
        "vCPUs held by active VMs.",
        host.allocated.vcpus as f64,
    );
    gauge(
        &mut o,
        "nova_host_allocated_memory_mib",
        "Memory held by active VMs.",
        host.allocated.mem_mib as f64,
    );
    gauge(
        &mut o,
        "nova_host_allocated_disk_mib",
        "Disk held by VM disks (virtual size).",
        host.allocated.disk_mib as f64,
    );
    gauge(
        &mut o,
        "nova_host_vms",
        "VMs defined on this host.",
        vms.len() as f64,
    );

    let _ = writeln!(
        o,
        "# HELP nova_host_migrations_total Migrations run by this hostd since it started."
    );
    let _ = writeln!(o, "# TYPE nova_host_migrations_total counter");
    for (dir, res, n) in [
        ("outgoing", "completed", mig.outgoing_completed),
        ("outgoing", "failed", mig.outgoing_failed),
        ("incoming", "completed", mig.incoming_completed),
        ("incoming", "failed", mig.incoming_failed),
    ] {
        let _ = writeln!(
            o,
            "nova_host_migrations_total{{host=\"{h}\",direction=\"{dir}\",result=\"{res}\"}} {n}"
        );
    }
    let _ = writeln!(o, "# HELP nova_host_migration_downtime_ms VMM-measured downtime of completed outgoing migrations.");
    let _ = writeln!(o, "# TYPE nova_host_migration_downtime_ms summary");
    let _ = writeln!(
        o,
        "nova_host_migration_downtime_ms_sum{{host=\"{h}\"}} {}",
        mig.downtime_ms_sum
    );
    let _ = writeln!(
        o,
        "nova_host_migration_downtime_ms_count{{host=\"{h}\"}} {}",
        mig.downtime_count
    );

    let help = |o: &mut String, name: &str, kind: &str, text: &str| {
        let _ = writeln!(o, "# HELP {name} {text}\n# TYPE {name} {kind}");
    };
    help(
        &mut o,
        "nova_vm_state",
        "gauge",
        "1 for the VM's current state.",
    );
    for vm in vms {
        let _ = writeln!(
            o,
            "nova_vm_state{{vm=\"{}\",name=\"{}\",state=\"{}\"}} 1",
            label(&vm.id),
            label(&vm.name),
            state_name(vm.state)
        );
    }
    help(&mut o, "nova_vm_memory_mib", "gauge", "Guest memory.");
    for vm in vms {
        let _ = writeln!(
            o,
            "nova_vm_memory_mib{{vm=\"{}\"}} {}",
            label(&vm.id),
            vm.spec.mem_mib
        );
    }
    help(&mut o, "nova_vm_vcpus", "gauge", "vCPUs.");
    for vm in vms {
        let _ = writeln!(
            o,
            "nova_vm_vcpus{{vm=\"{}\"}} {}",
            label(&vm.id),
            vm.spec.vcpus
        );
    }
    help(
        &mut o,
        "nova_vm_uptime_ms",
        "gauge",
        "Time since the VMM started.",
    );
    for vm in vms {
        if let Some(u) = vm.uptime_ms {
            let _ = writeln!(o, "nova_vm_uptime_ms{{vm=\"{}\"}} {u}", label(&vm.id));
        }
    }
    help(
        &mut o,
        "nova_vm_restarts_total",
        "counter",
        "Restarts under the VM's restart policy.",
    );
    for vm in vms {
        let _ = writeln!(
            o,
            "nova_vm_restarts_total{{vm=\"{}\"}} {}",
            label(&vm.id),
            vm.restarts
        );
    }
    help(
        &mut o,
        "nova_vm_migration_downtime_ms",
        "gauge",
        "Downtime of the VM's last completed migration here.",
    );
    for vm in vms {
        if let Some(m) = &vm.migration {
            if let (MigrationState::Completed, Some(d)) = (m.state, m.downtime_ms) {
                let dir = if m.direction == MigrationDirection::Outgoing {
                    "outgoing"
                } else {
                    "incoming"
                };
                let _ = writeln!(
                    o,
                    "nova_vm_migration_downtime_ms{{vm=\"{}\",direction=\"{dir}\"}} {d}",
                    label(&vm.id)
                );
            }
        }
    }
    // The VMM's counters, one metric family per counter name, as the VMM names them.
    let mut names: Vec<&String> = vms.iter().flat_map(|v| v.counters.keys()).collect();
    names.sort();
    names.dedup();
    for c in names {
        let Some(name) = metric_name(c) else { continue };
        help(
            &mut o,
            &name,
            "counter",
            &format!("The VMM's `{c}` counter."),
        );
        for vm in vms {
            if let Some(v) = vm.counters.get(c) {
                let _ = writeln!(o, "{name}{{vm=\"{}\"}} {v}", label(&vm.id));
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::*;

    fn host() -> HostInfo {
        HostInfo {
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
    fn renders_host_and_vm_series_with_escaped_labels() {
        let spec: VmSpec =
            serde_json::from_str(r#"{"name":"a","kernel":"/k","mem_mib":64}"#).unwrap();
        let vm = VmInfo {
            id: "vm\"1".into(),
            name: "a".into(),
            state: VmState::Running,
            spec,
            pid: Some(1),
            kvm: None,
            uptime_ms: Some(5),
            disks: vec![],
            nics: vec![],
            restarts: 0,
            exit: None,
            counters: [
                ("vcpu_exits".to_string(), 42u64),
                ("bad-name".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            migration: None,
        };
        let text = render(&host(), &[vm], &MigrationCounters::default());
        assert!(text.contains("nova_host_cores{host=\"h1\"} 2\n"), "{text}");
        assert!(
            text.contains("nova_vm_state{vm=\"vm\\\"1\",name=\"a\",state=\"running\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("nova_vm_vcpu_exits{vm=\"vm\\\"1\"} 42\n"),
            "{text}"
        );
        assert!(
            text.contains("nova_vm_memory_mib{vm=\"vm\\\"1\"} 64\n"),
            "{text}"
        );
        assert!(!text.contains("bad-name"), "{text}");
        // Every sample line is `name{labels} value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = l.rsplit_once(' ').unwrap();
            v.parse::<f64>()
                .unwrap_or_else(|_| panic!("bad sample {l}"));
        }
    }
}
