//! `nova-hostd`: parses flags, reads the token, sets up the data dir and network,
//! takes back the VMMs still running from a previous hostd, and serves the API.
//! Stopping hostd (SIGTERM, SIGINT) never stops a VM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use nova_hostd::admission::Policy;
use nova_hostd::host::{Config, Host};
use nova_hostd::net::VxlanConfig;

#[derive(Parser, Debug)]
#[command(
    name = "nova-hostd",
    version,
    about = "NovaCron's per-host daemon: runs and supervises nova-vmm processes"
)]
struct Args {
    /// Address of the API, e.g. 0.0.0.0:7070.
    #[arg(long)]
    listen: SocketAddr,
    /// Where VMs, images and the host id live.
    #[arg(long)]
    data_dir: PathBuf,
    /// File holding the token callers must present (`Authorization: Bearer`).
    #[arg(long)]
    token_file: PathBuf,
    /// Controller to register with (`http://host:port`).
    #[arg(long, requires = "join_token_file")]
    controller: Option<String>,
    /// File holding the controller's join token.
    #[arg(long)]
    join_token_file: Option<PathBuf>,
    /// The nova-vmm binary (default: next to nova-hostd, else on PATH).
    #[arg(long)]
    vmm_bin: Option<PathBuf>,
    /// The VM bridge.
    #[arg(long, default_value = "novabr0")]
    bridge: String,
    /// Address for the host on the bridge (e.g. 203.0.113.1/24).
    #[arg(long)]
    host_cidr: Option<String>,
    /// Address other hosts reach this one on (migration streams); default: the
    /// listen address, or 127.0.0.1 when that is unspecified.
    #[arg(long)]
    advertise_ip: Option<IpAddr>,
    /// VXLAN network id of the overlay; no overlay without it.
    #[arg(long)]
    vxlan_vni: Option<u32>,
    /// Local underlay address of the VXLAN tunnel (default: the advertise address).
    #[arg(long)]
    vxlan_local: Option<IpAddr>,
    /// Underlay device for VXLAN.
    #[arg(long)]
    vxlan_dev: Option<String>,
    #[arg(long, default_value_t = 4789)]
    vxlan_port: u16,
    /// A peer host's underlay address; repeat for more (or POST /v1/network/peers).
    #[arg(long)]
    vxlan_peer: Vec<IpAddr>,
    /// vCPUs admitted per physical core.
    #[arg(long, default_value_t = Policy::default().cpu_overcommit)]
    cpu_overcommit: f64,
    /// Guest memory admitted per MiB of host memory.
    #[arg(long, default_value_t = Policy::default().mem_overcommit)]
    mem_overcommit: f64,
    /// Host memory never given to guests.
    #[arg(long, default_value_t = Policy::default().mem_reserve_mib)]
    mem_reserve_mib: u64,
    /// Virtual disk size admitted per MiB of the data dir's filesystem.
    #[arg(long, default_value_t = Policy::default().disk_overcommit)]
    disk_overcommit: f64,
    /// Never try FICLONE; always sparse-copy disks.
    #[arg(long)]
    no_reflink: bool,
}

fn read_secret(path: &PathBuf, what: &str) -> anyhow::Result<String> {
    let t = std::fs::read_to_string(path)
        .with_context(|| format!("reading the {what} {}", path.display()))?;
    let t = t.trim().to_string();
    if t.len() < 16 {
        bail!(
            "the {what} in {} is shorter than 16 characters",
            path.display()
        );
    }
    Ok(t)
}

fn default_vmm() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join("nova-vmm")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nova-vmm"))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let token = read_secret(&args.token_file, "token")?;
    for (name, v) in [
        ("cpu-overcommit", args.cpu_overcommit),
        ("mem-overcommit", args.mem_overcommit),
        ("disk-overcommit", args.disk_overcommit),
    ] {
        if !(v > 0.0 && v <= 1000.0) {
            bail!("--{name} {v} is out of range (0, 1000]");
        }
    }
    if args.bridge.is_empty() || args.bridge.len() > 15 || args.bridge.contains('/') {
        bail!(
            "--bridge {:?} is not an interface name (1 to 15 characters)",
            args.bridge
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let advertise_ip = args.advertise_ip.unwrap_or_else(|| {
        if args.listen.ip().is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            args.listen.ip()
        }
    });
    let vxlan = args.vxlan_vni.map(|vni| VxlanConfig {
        vni,
        local: args.vxlan_local.unwrap_or(advertise_ip),
        dev: args.vxlan_dev.clone(),
        port: args.vxlan_port,
    });
    let config = Config {
        data_dir,
        token,
        vmm_bin: args.vmm_bin.clone().unwrap_or_else(default_vmm),
        bridge: args.bridge.clone(),
        host_cidr: args.host_cidr.clone(),
        vxlan,
        vxlan_peers: args.vxlan_peer.clone(),
        policy: Policy {
            cpu_overcommit: args.cpu_overcommit,
            mem_overcommit: args.mem_overcommit,
            mem_reserve_mib: args.mem_reserve_mib,
            disk_overcommit: args.disk_overcommit,
        },
        advertise_ip,
        url: format!(
            "http://{}",
            SocketAddr::new(advertise_ip, args.listen.port())
        ),
        reflink: !args.no_reflink,
    };
    let host = Arc::new(Host::new(config)?);
    tracing::info!(host_id = host.host_id, data_dir = %host.config.data_dir.display(), vmm = %host.config.vmm_bin.display(), "nova-hostd starting");
    if host.config.vxlan.is_some() || host.config.host_cidr.is_some() {
        host.net.ensure().await.context("setting up the bridge")?;
    }
    for p in &host.config.vxlan_peers {
        host.net
            .add_peer(*p)
            .await
            .with_context(|| format!("adding vxlan peer {p}"))?;
    }
    host.reattach_all().await;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, vms = host.vms.all().len(), "serving");
    if let (Some(url), Some(f)) = (args.controller.clone(), args.join_token_file.as_ref()) {
        let join = read_secret(f, "join token")?;
        tokio::spawn(nova_hostd::controller::run(host.clone(), url, join));
    }
    let app = nova_hostd::api::router(host.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    tracing::info!("nova-hostd stopping; VMs keep running");
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nova-hostd: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nova-hostd: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
