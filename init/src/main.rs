//! `nova-init`, /init of the host image: brings the machine up (mounts, modules, EFI
//! partition config, network, clock, data partition), then supervises nova-hostd
//! until a stop request and halts. PID 1 never exits: on a bad configuration it says
//! what is wrong on the console and waits for the power button.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use nova_init::config::{self, Config, IpConfig};
use nova_init::system;
use nova_init::{dhcp, disk, net, power, slots, sntp, supervise};

/// Where things live on the running system.
const ESP_LABEL: &str = "nova-esp";
/// The image signing keys this image was built to trust (`NOVA_IMAGE_KEYS`).
const IMAGE_KEYS: &str = "/etc/nova-image-keys";
const ESP_MOUNT: &str = "/boot";
const CONF_ON_ESP: &str = "/boot/nova/nova.conf";
const DATA_MOUNT: &str = "/data";
const HOSTD: &str = "/bin/nova-hostd";
const VMM: &str = "/bin/nova-vmm";
const RUN_DIR: &str = "/run/nova";

fn main() {
    supervise::block_all_signals();
    if let Err(e) = system::mount_base() {
        // No logging yet: the kernel's console is stderr.
        eprintln!("nova-init: {e}");
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let debug = config::cmdline_pairs(&cmdline)
        .iter()
        .any(|(k, v)| k == "debug" && v != "0");
    nova_logging::init(
        nova_logging::LogFormat::Text,
        if debug { "debug" } else { "info" },
    );
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "nova-init starting");
    system::disable_cad();
    let paths = slots::Paths::new(Path::new(slots::GRUBENV), Path::new(RUN_DIR));
    let halt = match boot(&cmdline) {
        Ok((hostd_args, cfg)) => {
            match slots::classify(&paths, cfg.slot) {
                slots::Boot::Trial { booted, previous } => slots::watch_trial(
                    paths.clone(),
                    booted,
                    previous,
                    Duration::from_secs(cfg.trial_secs),
                ),
                b => tracing::info!(slot = ?cfg.slot, "boot: {b:?}"),
            }
            let buttons = power::watch();
            tracing::info!(power_buttons = buttons, "supervising nova-hostd");
            let grace = match cfg.vms_at_shutdown {
                config::VmsAtShutdown::Stop => supervise::HOSTD_STOP_GRACE,
                config::VmsAtShutdown::Migrate => supervise::HOSTD_MIGRATE_GRACE,
            };
            supervise::run(
                || {
                    let mut c = Command::new(HOSTD);
                    c.args(&hostd_args)
                        .env("NOVA_LOG", if debug { "debug" } else { "info" });
                    c
                },
                grace,
            )
        }
        Err(e) => {
            tracing::error!("{e:#}");
            tracing::error!("nova-init cannot start nova-hostd; fix the configuration and reboot (power button powers off)");
            power::watch();
            supervise::wait_for_stop()
        }
    };
    if halt == system::Halt::Reboot {
        slots::arm_try(&paths);
    }
    for m in [DATA_MOUNT, ESP_MOUNT] {
        let _ = system::umount(m);
    }
    tracing::info!("halting: {halt:?}");
    system::halt(halt);
}

/// Brings the system up; the arguments nova-hostd is started with, and the settings.
fn boot(cmdline: &str) -> anyhow::Result<(Vec<String>, Config)> {
    let n = system::load_modules(&[]);
    tracing::info!(modules = n, "modules loaded");
    let esp_conf = read_esp_config();
    let mut cfg = Config::from_sources(esp_conf.as_deref(), cmdline)?;
    if let Ok(t) = std::fs::read_to_string(IMAGE_KEYS) {
        cfg.add_image_keys(&t, IMAGE_KEYS)?;
    }
    tracing::info!(slot = ?cfg.slot, controller = ?cfg.controller, "configuration read");
    nova_init::debug_console::start(cfg.debug_console.as_deref());
    if !cfg.modules.is_empty() {
        system::load_modules(&cfg.modules);
    }
    if let Some(h) = &cfg.hostname {
        system::set_hostname(h).context("setting the hostname")?;
    }
    let ip = bring_up_network(&cfg)?;
    if let Some(base) = cfg.imds.clone() {
        let u = nova_init::imds::user_data(&base, Duration::from_secs(60))
            .context("nova.config=imds")?;
        cfg.apply_user_data(u)?;
        tracing::info!(imds = %base, controller = ?cfg.controller, "configuration from EC2 user-data");
    }
    if let Some(server) = cfg.ntp {
        match sntp::set_clock(server) {
            Ok(t) => tracing::info!(unix_time = t, %server, "clock set"),
            Err(e) => tracing::warn!(%server, "setting the clock: {e}"),
        }
    }
    mount_data(&cfg);
    Ok((hostd_args(&cfg, ip)?, cfg))
}

/// The text of nova.conf on the EFI partition, if there is one. The partition stays
/// mounted read-write: GRUB's environment block there is how upgrades boot.
fn read_esp_config() -> Option<String> {
    let dev = disk::wait_for_label(ESP_LABEL, Duration::from_secs(3))?;
    let devs = dev.to_string_lossy();
    if let Err(e) = system::mount(
        &devs,
        ESP_MOUNT,
        "vfat",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    ) {
        tracing::warn!("EFI partition {devs}: {e}");
        return None;
    }
    let t = std::fs::read_to_string(CONF_ON_ESP).ok();
    tracing::info!(dev = %devs, config = t.is_some(), "EFI partition mounted");
    t
}

/// Configures the NIC; the host's address.
fn bring_up_network(cfg: &Config) -> anyhow::Result<std::net::Ipv4Addr> {
    net::link_up("lo").context("loopback")?;
    let nic = net::choose_nic(cfg.iface.as_deref(), Duration::from_secs(10)).with_context(
        || match &cfg.iface {
            Some(i) => format!("nova.iface: no interface {i}"),
            None => "no Ethernet interface found (is its driver in the image?)".to_string(),
        },
    )?;
    net::link_up(&nic)?;
    match cfg.ip {
        IpConfig::Static {
            addr,
            prefix,
            gateway,
        } => {
            net::set_address(&nic, addr, prefix)?;
            if let Some(gw) = gateway {
                net::add_default_route(&nic, gw)?;
            }
            tracing::info!(%nic, %addr, prefix, gateway = ?gateway, "network up (static)");
            Ok(addr)
        }
        IpConfig::Dhcp => {
            let mac = dhcp::mac_of(&nic).with_context(|| format!("no MAC address for {nic}"))?;
            let xid = u32::from_str_radix(&system::random_hex(4)?, 16)?;
            let lease = dhcp::obtain(&nic, mac, xid, Duration::from_secs(60))?;
            net::set_address(&nic, lease.addr, lease.prefix)?;
            if let Some(gw) = lease.gateway {
                net::add_default_route(&nic, gw)?;
            }
            tracing::info!(%nic, addr = %lease.addr, prefix = lease.prefix, gateway = ?lease.gateway, server = %lease.server, lease_secs = lease.lease_secs, "network up (DHCP)");
            renew_forever(nic, mac, xid, lease.clone());
            Ok(lease.addr)
        }
    }
}

/// Renews the lease at half its time, for ever (a thread). The address is the host's
/// identity to the controller: a renewal giving another one is logged loudly.
fn renew_forever(nic: String, mac: [u8; 6], xid: u32, first: dhcp::Lease) {
    std::thread::spawn(move || {
        let mut lease = first;
        loop {
            let half = Duration::from_secs(u64::from(lease.lease_secs.max(120)) / 2);
            std::thread::sleep(half);
            match dhcp::obtain(&nic, mac, xid, Duration::from_secs(60)) {
                Ok(l) if l.addr == lease.addr => lease = l,
                Ok(l) => {
                    tracing::error!(old = %lease.addr, new = %l.addr, "DHCP gave another address; keeping the old one");
                    lease.lease_secs = l.lease_secs;
                }
                Err(e) => tracing::warn!("renewing the DHCP lease: {e}"),
            }
        }
    });
}

/// Mounts the data partition (formatting a blank one), or a tmpfs when there is none.
fn mount_data(cfg: &Config) {
    match disk::wait_for_label(&cfg.data_label, Duration::from_secs(5)) {
        Some(dev) => match disk::mount_data(&dev, DATA_MOUNT, &cfg.data_label, cfg.format_data) {
            Ok(()) => {
                tracing::info!(dev = %dev.display(), "data partition mounted on {DATA_MOUNT}");
                return;
            }
            Err(e) => tracing::error!("data partition: {e:#}; keeping data in memory"),
        },
        None => tracing::warn!(
            label = %cfg.data_label,
            "no data partition: VMs and images live in memory until reboot"
        ),
    }
    let _ = system::mount(
        "tmpfs",
        DATA_MOUNT,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    );
}

/// Writes `text` to `path` with mode 0600.
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// hostd's flags from the configuration; its API token is made once and kept on the
/// data partition (the controller learns it when the host registers).
fn hostd_args(cfg: &Config, ip: std::net::Ipv4Addr) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(RUN_DIR)?;
    let token_file = Path::new(DATA_MOUNT).join("hostd.token");
    if !token_file.exists() {
        write_secret(&token_file, &system::random_hex(32)?)?;
    }
    let mut a: Vec<String> = vec![
        "--listen".into(),
        format!("0.0.0.0:{}", cfg.listen_port),
        "--advertise-ip".into(),
        ip.to_string(),
        "--data-dir".into(),
        format!("{DATA_MOUNT}/hostd"),
        "--token-file".into(),
        token_file.to_string_lossy().into_owned(),
        "--vmm-bin".into(),
        VMM.into(),
        // The machine stops after hostd: its VMs go first, per nova.vms_at_shutdown.
        "--vms-at-exit".into(),
        cfg.vms_at_shutdown.as_str().into(),
    ];
    if let (Some(url), Some(token)) = (&cfg.controller, &cfg.join_token) {
        let jf = Path::new(RUN_DIR).join("join.token");
        write_secret(&jf, token)?;
        a.extend([
            "--controller".into(),
            url.clone(),
            "--join-token-file".into(),
            jf.to_string_lossy().into_owned(),
        ]);
    }
    if let Some(ca) = &cfg.ca {
        anyhow::ensure!(ca.exists(), "nova.ca: {} does not exist", ca.display());
        a.extend(["--controller-ca".into(), ca.to_string_lossy().into_owned()]);
    }
    if let Some(pem) = &cfg.ca_pem {
        // Given inline (command line or user-data): a file for hostd, in memory.
        let f = Path::new(RUN_DIR).join("controller-ca.pem");
        std::fs::write(&f, pem).with_context(|| format!("writing {}", f.display()))?;
        a.extend(["--controller-ca".into(), f.to_string_lossy().into_owned()]);
    }
    a.extend(cfg.image_key_args());
    if let Some(x) = cfg.cpu_overcommit {
        a.extend(["--cpu-overcommit".into(), x.to_string()]);
    }
    if let Some(x) = cfg.mem_overcommit {
        a.extend(["--mem-overcommit".into(), x.to_string()]);
    }
    match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => a.extend([
            "--tls-cert".into(),
            c.to_string_lossy().into_owned(),
            "--tls-key".into(),
            k.to_string_lossy().into_owned(),
        ]),
        _ if cfg.insecure_http => a.push("--insecure-http".into()),
        // Neither: hostd makes its key on the data partition (0600; a tmpfs when there
        // is none) and serves the certificate the controller issues at join.
        _ => {}
    }
    Ok(a)
}
