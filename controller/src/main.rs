//! nova-controller: serves the `/v1` API, runs the reconcile loops while it leads,
//! and bootstraps a new cluster (the first admin token and the join token).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nova_controller::api::{self, AppState};
use nova_controller::auth::{self, FailedAuthLimiter};
use nova_controller::events::Events;
use nova_controller::model::{now_ms, Role, Token, User, SYSTEM_TENANT};
use nova_controller::reconcile::{self, Timing};
use nova_controller::scheduler::Weights;
use nova_controller::store::{self, Objects};
use tokio::sync::watch;

#[derive(Parser)]
#[command(name = "nova-controller", about = "NovaCron cluster controller")]
struct Args {
    /// Address of the API.
    #[arg(long, default_value = "127.0.0.1:7070", env = "NOVA_LISTEN")]
    listen: SocketAddr,
    /// `sqlite:PATH` (default) or `etcd:http://HOST:PORT[,...]`.
    #[arg(
        long,
        default_value = "sqlite:/var/lib/nova/controller.db",
        env = "NOVA_STORE"
    )]
    store: String,
    /// Where the first admin token is written (0600) when the cluster is new.
    #[arg(long, default_value = "/var/lib/nova/admin.token")]
    admin_token_file: PathBuf,
    /// The join token hosts register with: read from this file, created if missing.
    #[arg(long, default_value = "/var/lib/nova/join.token")]
    join_token_file: PathBuf,
    /// This controller's name (for leader election).
    #[arg(long, default_value_t = format!("controller-{}", std::process::id()))]
    node: String,
    #[arg(long, default_value_t = 1000)]
    reconcile_interval_ms: u64,
    /// A host silent this long is marked down.
    #[arg(long, default_value_t = 16000)]
    down_after_ms: u64,
    /// How often hosts are told to heartbeat.
    #[arg(long, default_value_t = 5000)]
    heartbeat_ms: u64,
    /// `spread` or `binpack`.
    #[arg(long, default_value = "spread")]
    strategy: String,
    /// Failed authentications per client address per minute before it is refused.
    #[arg(long, default_value_t = 20)]
    max_failed_auth: u32,
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The first admin of a new cluster: user `admin` of the system tenant and a token,
/// created once (whichever controller gets there first).
async fn bootstrap_admin(store: &store::DynStore, file: &Path) -> anyhow::Result<()> {
    let admin = User {
        id: "admin".into(),
        tenant: SYSTEM_TENANT.into(),
        role: Role::Admin,
        created_at_ms: now_ms(),
    };
    if store.create(&admin).await.is_err() {
        return Ok(()); // not a new cluster
    }
    let secret = auth::new_secret();
    let hash = auth::hash(&secret);
    let t = Token {
        id: hash[..16].into(),
        hash,
        user: "admin".into(),
        tenant: SYSTEM_TENANT.into(),
        role: Role::Admin,
        host: None,
        created_at_ms: now_ms(),
    };
    store.create(&t).await?;
    write_secret(file, &secret).with_context(|| format!("writing {}", file.display()))?;
    tracing::info!("new cluster: admin token written to {}", file.display());
    Ok(())
}

fn join_token(file: &Path) -> anyhow::Result<String> {
    if let Ok(s) = std::fs::read_to_string(file) {
        let s = s.trim().to_string();
        anyhow::ensure!(
            s.len() >= 32,
            "{}: join token shorter than 32 characters",
            file.display()
        );
        return Ok(s);
    }
    let s = auth::new_secret();
    write_secret(file, &s)?;
    Ok(s)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NOVA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let a = Args::parse();
    let weights = match a.strategy.as_str() {
        "spread" => Weights {
            binpack: 0.0,
            spread: 1.0,
        },
        "binpack" => Weights {
            binpack: 1.0,
            spread: 0.0,
        },
        other => anyhow::bail!("--strategy {other}: expected spread or binpack"),
    };
    if let Some(p) = a
        .store
        .strip_prefix("sqlite:")
        .map(Path::new)
        .and_then(Path::parent)
    {
        std::fs::create_dir_all(p).ok();
    }
    let store = store::open(&a.store)
        .await
        .with_context(|| format!("opening {}", a.store))?;
    bootstrap_admin(&store, &a.admin_token_file).await?;
    let join = join_token(&a.join_token_file)?;

    let leading = leadership(&a, &store).await?;
    let st = AppState {
        store,
        events: Events::new(),
        leading,
        node: a.node.clone(),
        join_hash: Arc::new(auth::hash(&join)),
        limiter: Arc::new(FailedAuthLimiter::new(
            a.max_failed_auth,
            Duration::from_secs(60),
        )),
        http: nova_controller::hostd::client(),
        slots: Default::default(),
        heartbeat_ms: a.heartbeat_ms,
    };
    let timing = Timing {
        interval: Duration::from_millis(a.reconcile_interval_ms),
        down_after: Duration::from_millis(a.down_after_ms),
    };
    tokio::spawn(reconcile::run(st.clone(), timing, weights));

    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?;
    tracing::info!(node = %a.node, backend = st.store.backend(), "API on http://{}", listener.local_addr()?);
    let app = api::router(st).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

async fn leadership(a: &Args, store: &store::DynStore) -> anyhow::Result<watch::Receiver<bool>> {
    #[cfg(feature = "etcd")]
    if let Some(eps) = a.store.strip_prefix("etcd:") {
        let eps: Vec<String> = eps.split(',').map(String::from).collect();
        let e = store::etcd::EtcdStore::connect(&eps, "").await?;
        return Ok(store::etcd::elect(
            e.client(),
            "nova/leader".into(),
            a.node.clone(),
        ));
    }
    // One SQLite file, one controller: it always leads.
    let _ = store;
    let (tx, rx) = watch::channel(true);
    std::mem::forget(tx);
    Ok(rx)
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
