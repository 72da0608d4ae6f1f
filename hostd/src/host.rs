//! The daemon's shared state ([`Host`]): its configuration, identity and physical
//! facts, and the parts that own each piece of host-local state (VMs, images,
//! network, migrations). API handlers get an `Arc<Host>`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::admission::{Physical, Policy};
use crate::api::types::{HostInfo, MigrationStatus, Resources};
use crate::error::{IoContext, Result};
use crate::images::ImageCache;
use crate::metrics::MigrationCounters;
use crate::net::{Network, VxlanConfig};
use crate::vms::Vms;

/// What `nova-hostd` was started with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// The token every caller must present.
    pub token: String,
    pub vmm_bin: PathBuf,
    pub bridge: String,
    pub host_cidr: Option<String>,
    pub vxlan: Option<VxlanConfig>,
    pub vxlan_peers: Vec<std::net::IpAddr>,
    pub policy: Policy,
    /// Address other hosts reach this host on (migration streams, registration URL).
    pub advertise_ip: std::net::IpAddr,
    /// `http://ip:port` of this hostd's API as others reach it.
    pub url: String,
    /// Try FICLONE before copying (off only for tests of the copy path).
    pub reflink: bool,
}

/// The daemon.
pub struct Host {
    pub config: Config,
    pub host_id: String,
    pub hostname: String,
    pub physical: Physical,
    pub images: ImageCache,
    pub net: Network,
    pub vms: Vms,
    pub migrations: Mutex<MigrationCounters>,
    /// Finished migrations (also of VMs no longer here), by migration id.
    pub migration_log: Mutex<std::collections::BTreeMap<String, MigrationStatus>>,
}

/// Reads or creates `DATA/host-id` (16 hex digits, kept for the host's life).
fn host_id(data: &Path) -> Result<String> {
    let p = data.join("host-id");
    if let Ok(s) = std::fs::read_to_string(&p) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let id = format!("{:016x}", rand::random::<u64>());
    std::fs::write(&p, format!("{id}\n")).ctx(|| format!("writing {}", p.display()))?;
    Ok(id)
}

fn meminfo_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}

/// (total, free) MiB of the filesystem holding `path`.
pub fn disk_mib(path: &Path) -> (u64, u64) {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return (0, 0);
    };
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return (0, 0);
    }
    let f = s.f_frsize as u64;
    ((s.f_blocks as u64 * f) >> 20, (s.f_bavail as u64 * f) >> 20)
}

/// `hardware`, `pvm`, or `none`.
pub fn kvm_kind() -> &'static str {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return "none";
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        "pvm"
    } else {
        "hardware"
    }
}

impl Host {
    /// Sets up the data dir and reads the host's facts (does not start VMs).
    pub fn new(config: Config) -> Result<Host> {
        let d = &config.data_dir;
        std::fs::create_dir_all(d.join("vms")).ctx(|| format!("creating {}", d.display()))?;
        let host_id = host_id(d)?;
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1);
        let physical = Physical {
            cores,
            mem_mib: meminfo_mib(),
            disk_mib: disk_mib(d).0,
        };
        let images = ImageCache::new(d.join("images"))?;
        let net = Network::new(
            config.bridge.clone(),
            config.host_cidr.clone(),
            config.vxlan.clone(),
        );
        let vms = Vms::new(d.join("vms"), &host_id)?;
        Ok(Host {
            config,
            host_id,
            hostname,
            physical,
            images,
            net,
            vms,
            migrations: Mutex::new(MigrationCounters::default()),
            migration_log: Mutex::new(Default::default()),
        })
    }

    /// Keeps a finished migration's status (the last 1,000).
    pub fn remember(&self, m: MigrationStatus) {
        let mut log = self.migration_log.lock().unwrap_or_else(|e| e.into_inner());
        log.insert(m.id.clone(), m);
        while log.len() > 1000 {
            let Some(k) = log.keys().next().cloned() else {
                break;
            };
            log.remove(&k);
        }
    }

    /// Capacity admission allows.
    pub fn capacity(&self) -> Resources {
        self.config.policy.capacity(self.physical)
    }

    /// Host facts and capacity.
    pub fn info(&self) -> HostInfo {
        let (total, free) = disk_mib(&self.config.data_dir);
        let (allocated, vms) = self.vms.allocated();
        HostInfo {
            host_id: self.host_id.clone(),
            hostname: self.hostname.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            cores: self.physical.cores,
            mem_mib: self.physical.mem_mib,
            disk_total_mib: total,
            disk_free_mib: free,
            kvm: kvm_kind().to_string(),
            cpu_overcommit: self.config.policy.cpu_overcommit,
            mem_overcommit: self.config.policy.mem_overcommit,
            capacity: self.capacity(),
            allocated,
            vms,
            network: self.net.info(),
        }
    }
}
