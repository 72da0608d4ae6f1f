//! nova-controller: serves the `/v1` API, runs the reconcile loops while it leads,
//! and bootstraps a new cluster (the first admin token and the join token).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use nova_controller::api::{self, AppState};
use nova_controller::auth::{self, FailedAuthLimiter};
use nova_controller::config::{Args, Command, Config};
use nova_controller::context::Context;
use nova_controller::model::{now_ms, Role, Token, User, SYSTEM_TENANT};
use nova_controller::reconcile;
use nova_controller::store::{self, EtcdOptions, Objects};
use tokio::sync::watch;

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    nova_durable::write_secret(path, secret.as_bytes())?;
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
    match store.create(&admin).await {
        Ok(_) => {}
        Err(store::StoreError::Conflict(_)) => return Ok(()), // not a new cluster
        Err(e) => return Err(e).context("the store refuses writes"),
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

/// When the join token file stops enrolling hosts (`--join-token-max-age-s` after its
/// mtime), ms since the epoch.
fn join_expiry(c: &Config) -> anyhow::Result<Option<u64>> {
    let Some(age) = c.join_token_max_age else {
        return Ok(None);
    };
    let written = std::fs::metadata(&c.join_token_file)?
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(Some((written + age).as_millis() as u64))
}

/// The etcd credentials the flags name, read from their files.
fn etcd_options(c: &Config) -> anyhow::Result<EtcdOptions> {
    let read = |p: &Path, flag: &str| {
        std::fs::read(p).with_context(|| format!("--{flag} {}", p.display()))
    };
    let mut o = EtcdOptions::default();
    if let Some(ca) = &c.etcd.ca {
        o.ca_pem = Some(read(ca, "etcd-ca")?);
    }
    if let (Some(cert), Some(key)) = (&c.etcd.cert, &c.etcd.key) {
        o.identity_pem = Some((read(cert, "etcd-cert")?, read(key, "etcd-key")?));
    }
    if let (Some(user), Some(pw)) = (&c.etcd.user, &c.etcd.password_file) {
        let pw = String::from_utf8(read(pw, "etcd-password-file")?)
            .context("--etcd-password-file: not UTF-8")?;
        o.user = Some((user.clone(), pw.trim_end_matches(['\n', '\r']).to_string()));
    }
    Ok(o)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    nova_logging::init(args.log.log_format, "info");
    if let Some(Command::DevCa { dir, san }) = &args.command {
        nova_controller::devca::make(dir, san)?;
        println!(
            "development CA in {}: ca.pem (the clients' --ca), server.pem + server.key (--tls-cert, --tls-key)",
            dir.display()
        );
        return Ok(());
    }
    let c = args.resolve()?;
    if let Some(p) = c
        .store
        .strip_prefix("sqlite:")
        .map(Path::new)
        .and_then(Path::parent)
    {
        std::fs::create_dir_all(p).ok();
    }
    let etcd = etcd_options(&c)?;
    let store = store::open(&c.store, &etcd)
        .await
        .with_context(|| format!("opening {}", c.store))?;
    bootstrap_admin(&store, &c.admin_token_file)
        .await
        .with_context(|| format!("using {}", c.store))?;
    let join = join_token(&c.join_token_file)?;

    let (leading, resign) = leadership(&c, &etcd).await?;
    let mut ctx = Context::new(store, c.settings.clone(), leading, c.node.clone())?;
    if let Some(o) = &c.cloud {
        let cloud = nova_controller::cloud::fleet(o)?;
        tracing::info!("cloud provider: {cloud:?}");
        ctx = ctx.with_cloud(cloud);
    }
    let st = AppState {
        ctx: ctx.clone(),
        join_hash: Arc::new(auth::hash(&join)),
        join_expires_at_ms: join_expiry(&c)?,
        limiter: Arc::new(FailedAuthLimiter::new(
            c.max_failed_auth,
            Duration::from_secs(60),
        )),
        federation: Arc::new(nova_controller::federation::Federation::new(
            c.settings.federation_peer_ca.clone(),
        )?),
        vm_json: Default::default(),
    };
    tokio::spawn(nova_controller::federation::view::run(
        ctx.clone(),
        st.federation.clone(),
    ));
    // Incoming cross-cluster migrations a restart interrupted are watched again.
    if let Err(e) = nova_controller::federation::incoming::resume(&ctx).await {
        tracing::warn!("resuming incoming migrations: {e}");
    }
    tokio::spawn(reconcile::run(ctx.clone()));
    tokio::spawn(nova_controller::monitoring::run(ctx.clone()));
    tokio::spawn(nova_controller::alerting::run(ctx.clone()));
    tokio::spawn(nova_controller::snapshots::schedule::run(ctx.clone()));
    tokio::spawn(nova_controller::backups::schedule::run(ctx.clone()));
    tokio::spawn(nova_controller::backups::recovery::run(ctx.clone()));

    let listener = tokio::net::TcpListener::bind(c.listen)
        .await
        .with_context(|| format!("binding {}", c.listen))?;
    let scheme = if c.serve.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(node = %c.node, backend = ctx.store.backend(), "API on {scheme}://{}", listener.local_addr()?);
    nova_http::server::serve(listener, api::router(st), c.serve.clone(), shutdown()).await?;
    resign.await;
    Ok(())
}

/// Whether this controller leads, and what gives leadership up on shutdown.
async fn leadership(
    c: &Config,
    etcd: &EtcdOptions,
) -> anyhow::Result<(
    watch::Receiver<bool>,
    std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
)> {
    #[cfg(feature = "etcd")]
    if let Some(eps) = c.store.strip_prefix("etcd:") {
        let eps: Vec<String> = eps.split(',').map(String::from).collect();
        let client = store::etcd::connect(&eps, etcd).await?;
        let name = format!("{}leader", store::ETCD_PREFIX);
        let l = store::election::campaign(client, name, c.node.clone());
        let leading = l.leading.clone();
        return Ok((leading, Box::pin(async move { l.resign().await })));
    }
    // One SQLite file, one controller: it always leads.
    let _ = (c, etcd);
    let (tx, rx) = watch::channel(true);
    Ok((rx, Box::pin(async move { drop(tx) })))
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
