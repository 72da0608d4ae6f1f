//! The daemon's composition ([`Host`]): its configuration, identity and physical
//! facts, and the parts that own each piece of host-local state (the VM table, the
//! image cache, the network, migrations). It wires them together at start and
//! answers "what is this host"; the API handlers get an `Arc<Host>`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nova_hostd_api::{HostInfo, Resources};

use crate::admission::{disk_mib, Physical, Policy};
use crate::error::{IoContext, Result};
use crate::images::ImageCache;
use crate::migration::Migrations;
use crate::net::{Cidr, Network, VxlanConfig};
use crate::vms::table::{Settings, Vms};

/// What `nova-hostd` was started with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// The token every caller must present.
    pub token: String,
    pub vmm_bin: PathBuf,
    pub bridge: String,
    pub host_cidr: Option<Cidr>,
    pub vxlan: Option<VxlanConfig>,
    pub vxlan_peers: Vec<std::net::IpAddr>,
    pub policy: Policy,
    /// Address other hosts reach this host on (migration streams, registration URL).
    pub advertise_ip: std::net::IpAddr,
    /// `http://ip:port` of this hostd's API as others reach it.
    pub url: String,
    /// Try FICLONE before copying (off only for tests of the copy path).
    pub reflink: bool,
    /// Directories an admin may name host paths under (`--image-root`), canonical.
    pub image_roots: Vec<PathBuf>,
    /// Directories backup stores may be under (`--backup-root`).
    pub backup_roots: Vec<PathBuf>,
    /// Largest image upload, bytes (`--max-image-mib`).
    pub max_image_bytes: u64,
    /// How VMMs are jailed.
    pub jail: crate::jail::JailSettings,
    /// Migrate in plaintext without credentials (`--insecure-migration`).
    pub insecure_migration: bool,
    /// Keys a host image upgrade must be signed by (`--trusted-image-key`; none: any).
    pub trusted_image_keys: Vec<String>,
}

/// The daemon.
pub struct Host {
    pub config: Config,
    pub host_id: String,
    pub hostname: String,
    pub physical: Physical,
    pub images: ImageCache,
    pub net: Arc<Network>,
    pub vms: Arc<Vms>,
    pub migrations: Arc<Migrations>,
    /// The host image it runs on, if any (upgrades: [`crate::upgrade`]).
    pub system: crate::upgrade::System,
    pub backups: Arc<crate::backup::BackupJobs>,
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
        std::fs::create_dir_all(d).ctx(|| format!("creating {}", d.display()))?;
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
        let images = ImageCache::new(d.join("images"))?
            .confined_to(&config.image_roots)
            .map_err(|e| crate::error::Error::io("the image roots", e))?;
        let net = Arc::new(Network::new(
            config.bridge.clone(),
            config.host_cidr,
            config.vxlan.clone(),
        ));
        let settings = Settings {
            data_dir: d.clone(),
            vmm_bin: config.vmm_bin.clone(),
            reflink: config.reflink,
            policy: config.policy,
            physical,
            jail: config.jail.clone(),
            insecure_migration: config.insecure_migration,
        };
        let vms = Arc::new(Vms::new(settings, &host_id, images.clone(), net.clone())?);
        let migrations = Arc::new(Migrations::new(
            vms.clone(),
            host_id.clone(),
            config.advertise_ip,
        )?);
        let backups = Arc::new(
            crate::backup::BackupJobs::new(vms.clone(), &config.backup_roots)
                .map_err(|e| crate::error::Error::io("the backup roots", e))?,
        );
        let system = crate::upgrade::System::detect(&config.trusted_image_keys);
        Ok(Host {
            backups,
            config,
            host_id,
            hostname,
            physical,
            images,
            net,
            vms,
            migrations,
            system,
        })
    }

    /// Takes back what a previous hostd left: the VMMs still running, and the
    /// migrations they were in.
    pub async fn reattach(&self) {
        let migrating = self.vms.reattach_all().await;
        self.migrations.recover(migrating).await;
    }

    /// Capacity admission allows.
    pub fn capacity(&self) -> Resources {
        self.vms.capacity()
    }

    /// Host facts and capacity.
    pub fn info(&self) -> HostInfo {
        let (total, free) = disk_mib(&self.config.data_dir);
        let (allocated, vms) = self.vms.allocated();
        HostInfo {
            host_id: self.host_id.clone(),
            hostname: self.hostname.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            image_version: self.system.version.clone(),
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
