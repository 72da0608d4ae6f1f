//! `nova-hostd`: reads its flags and config file, the token, sets up the data dir and
//! network, takes back the VMMs still running from a previous hostd, joins the
//! controller (and, given no TLS files, waits for the certificate it issues), and
//! serves the API. Stopping hostd (SIGTERM, SIGINT) stops no VM unless
//! `--vms-at-exit` says (the host image powering off).

use std::sync::Arc;

use anyhow::Context;
use nova_hostd::config::{read_secret, Args, FileConfig};
use nova_hostd::host::Host;

async fn run(args: Args) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(p) => FileConfig::read(p)?,
        None => FileConfig::default(),
    };
    let vms_at_exit = args.vms_at_exit;
    let r = args.resolve(file)?;
    nova_logging::init(r.log_format, "info");
    if let Some(ca) = &r.ca {
        nova_http::trust_ca_by_default(ca.clone());
    }
    let mut config = r.host;
    config.token = read_secret(&r.token_file, "token")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    config.data_dir = config.data_dir.canonicalize()?;
    let join = match &r.join {
        Some(j) => {
            let token = read_secret(&j.token_file, "join token")?;
            let opts = nova_http::ClientOptions {
                ca_file: j.ca_file.clone(),
                ..Default::default()
            };
            Some(
                nova_hostd::controller::join_client(&j.url, &token, &opts)
                    .with_context(|| format!("--controller {}", j.url))?,
            )
        }
        None => None,
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
    host.reattach().await;
    let listener = tokio::net::TcpListener::bind(r.listen)
        .await
        .with_context(|| format!("listening on {}", r.listen))?;
    tracing::info!(listen = %r.listen, vms = host.vms.all().len(), "serving");
    let issued = r
        .issued_tls
        .clone()
        .map(|file| nova_hostd::controller::Issued {
            file,
            ready: Arc::new(tokio::sync::Notify::new()),
        });
    if let Some(join) = join.clone() {
        tokio::spawn(nova_hostd::controller::run(
            host.clone(),
            join,
            issued.clone(),
        ));
    }
    if let Some(i) = &issued {
        if !nova_hostd::certificate::usable(&i.file) {
            tracing::info!(file = %i.file.display(), "waiting for the controller to issue this host's serving certificate");
            i.ready.notified().await;
        }
    }
    notify_ready();
    let app = nova_hostd::api::router(host.clone());
    // The VMs' policy runs before the API closes: a drain (`migrate`) needs this
    // host's migrate-out calls answered while its VMs move away.
    let stopping = async move {
        shutdown().await;
        if vms_at_exit == nova_hostd::shutdown::VmsAtExit::Keep {
            tracing::info!("nova-hostd stopping; VMs keep running");
        } else {
            tracing::info!(policy = ?vms_at_exit, "nova-hostd stopping: its VMs first");
            nova_hostd::shutdown::run(&host, vms_at_exit, join).await;
        }
    };
    nova_http::server::serve(listener, app, r.serve.clone(), stopping).await?;
    Ok(())
}

/// Tells systemd (`Type=notify`) that hostd serves: `READY=1` on `$NOTIFY_SOCKET`
/// (a path, or an abstract name written `@name`). Nothing to do without it.
fn notify_ready() {
    use std::os::unix::net::UnixDatagram;
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        match target.as_encoded_bytes().strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(b"READY=1\n", &addr)
            }
            None => sock.send_to(b"READY=1\n", &target),
        }
    });
    if let Err(e) = sent {
        tracing::warn!("telling systemd hostd is ready: {e}");
    }
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
    let args = Args::from_command_line();
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
