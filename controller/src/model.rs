//! The stored objects are the API contract's (`nova_controller_api::model`): hosts,
//! VMs, operations, tenants, users, tokens and audit entries, exactly as the API shows
//! them. What maps them to hostd's contract (`nova_hostd_api`) lives here.

pub use nova_controller_api::*;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A host's resources as hostd reports them.
pub fn resources_from_hostd(r: nova_hostd_api::Resources) -> Resources {
    Resources {
        vcpus: r.vcpus,
        mem_mib: r.mem_mib,
        disk_mib: r.disk_mib,
    }
}

/// The spec hostd receives for this VM.
pub fn spec_to_hostd(spec: &VmSpec, id: &str) -> nova_hostd_api::VmSpec {
    use nova_hostd_api as h;
    h::VmSpec {
        id: Some(id.to_string()),
        name: spec.name.clone(),
        vcpus: spec.vcpus,
        mem_mib: spec.mem_mib,
        kernel: spec.kernel.clone(),
        initrd: spec.initrd.clone(),
        cmdline: spec.cmdline.clone(),
        disks: spec
            .disks
            .iter()
            .map(|d| h::DiskSpec {
                image: d.image.clone(),
                size_mib: d.size_mib,
                read_only: d.read_only,
                shared_path: d.shared_path.clone(),
            })
            .collect(),
        nics: spec
            .nics
            .iter()
            .map(|n| h::NicSpec { mac: n.mac.clone() })
            .collect(),
        restart: h::RestartPolicy::Never,
        start: spec.start,
        cloud_init: spec.cloud_init.clone(),
    }
}

/// hostd's name for a VM state (`running`, `stopped`, ...), as `Observed.state` shows it.
pub fn state_name(s: nova_hostd_api::VmState) -> &'static str {
    use nova_hostd_api::VmState as S;
    match s {
        S::Created => "created",
        S::Starting => "starting",
        S::Running => "running",
        S::Paused => "paused",
        S::Stopped => "stopped",
        S::Crashed => "crashed",
        S::MigratingOut => "migrating_out",
        S::MigratingIn => "migrating_in",
        S::Unknown => "unknown",
    }
}
