//! The server side every NovaCron daemon serves its API with (feature `server`):
//! TLS (rustls) from a PEM certificate and key (read again when the files change: a
//! renewed certificate needs no restart), or plaintext only when the daemon was
//! told so explicitly; a cap on open connections (past it, new ones wait in the
//! listen backlog); a deadline on a request's head, on each piece of its body, and on
//! a connection that says nothing; the peer's address for the handlers
//! (`ConnectInfo<SocketAddr>`); a clean shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt as _;

/// A PEM certificate chain and its key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How a daemon serves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// TLS, or plaintext when None (which daemons allow only with `--insecure-http`).
    pub tls: Option<TlsFiles>,
    /// Open connections at most; more wait in the listen backlog.
    pub max_connections: usize,
    /// A request's head (and a TLS handshake) must arrive within this.
    pub header_timeout: Duration,
    /// Each piece of a request body must arrive within this of the one before.
    pub body_timeout: Duration,
    /// A connection with no request in flight and no byte either way for this long
    /// is closed.
    pub idle_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            tls: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// The default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Tls(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The certificate chain and key of `files`, checked to match.
fn load_certified(
    files: &TlsFiles,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<rustls::sign::CertifiedKey, ServeError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| ServeError::Tls(format!("{}: {e}", p.display())))
    };
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServeError::Tls(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "{}: no PEM certificate in it",
            files.cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| ServeError::Tls(format!("{}: {e}", files.key.display())))?
        .ok_or_else(|| {
            ServeError::Tls(format!("{}: no PEM private key in it", files.key.display()))
        })?;
    rustls::sign::CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        ServeError::Tls(format!(
            "{} and {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })
}

/// The modification times of the certificate and key files.
fn stamp(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(&files.cert), m(&files.key))
}

/// Serves the certificate of [`TlsFiles`], read again when either file's modification
/// time changes (looked at once a second at most): a renewed certificate (replaced
/// by a rename) reaches new connections without a restart. A replacement that does
/// not load is logged nowhere and ignored: the last good pair stays.
struct Reloading {
    files: TlsFiles,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: std::sync::Mutex<Loaded>,
}

struct Loaded {
    stamp: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
    key: Arc<rustls::sign::CertifiedKey>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("files", &self.files)
            .finish()
    }
}

impl rustls::server::ResolvesServerCert for Reloading {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.checked.elapsed() >= Duration::from_secs(1) {
            cur.checked = Instant::now();
            let now = stamp(&self.files);
            if now != cur.stamp {
                if let Ok(k) = load_certified(&self.files, &self.provider) {
                    cur.key = Arc::new(k);
                    cur.stamp = now;
                }
            }
        }
        Some(cur.key.clone())
    }
}

/// The rustls configuration of `files` (HTTP/1.1 only: the event stream's WebSocket
/// upgrades need it); the files are read again when they change.
pub fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let first = stamp(files);
    let key = load_certified(files, &provider)?;
    let resolver = Reloading {
        files: files.clone(),
        provider: provider.clone(),
        current: std::sync::Mutex::new(Loaded {
            stamp: first,
            checked: Instant::now(),
            key: Arc::new(key),
        }),
    };
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// When a connection last moved a byte, in ms since `epoch`.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A TCP stream that records its last activity.
struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the requests in
/// flight finish (10 s at most).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let tls = opts
        .tls
        .as_ref()
        .map(tls_config)
        .transpose()?
        .map(tokio_rustls::TlsAcceptor::from);
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        opts.body_timeout,
    ));
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => {
                    // Out of descriptors or a connection reset before accept: breathe.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let (app, tls, opts, stop) = (app.clone(), tls.clone(), opts.clone(), stop_rx.clone());
        tokio::spawn(async move {
            connection(tcp, peer, app, tls, &opts, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all = opts.max_connections.max(1) as u32;
    let _ = tokio::time::timeout(Duration::from_secs(10), slots.acquire_many(all)).await;
    Ok(())
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    opts: &ServerOptions,
    stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity {
        epoch: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let io = Watched {
        tcp,
        activity: activity.clone(),
    };
    match tls {
        Some(acceptor) => {
            // A failed or too slow handshake: nothing to answer.
            if let Ok(Ok(s)) = tokio::time::timeout(opts.header_timeout, acceptor.accept(io)).await
            {
                drive(TokioIo::new(s), peer, app, opts, stop, activity).await
            }
        }
        None => drive(TokioIo::new(io), peer, app, opts, stop, activity).await,
    }
}

async fn drive<I>(
    io: TokioIo<I>,
    peer: SocketAddr,
    app: Router,
    opts: &ServerOptions,
    mut stop: watch::Receiver<bool>,
    activity: Arc<Activity>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = app.map_request(move |mut r: axum::http::Request<Incoming>| {
        r.extensions_mut().insert(ConnectInfo(peer));
        r
    });
    let svc = hyper_util::service::TowerToHyperService::new(svc);
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout);
    let conn = b.serve_connection(io, svc).with_upgrades();
    tokio::pin!(conn);
    let tick = (opts.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            r = stop.changed(), if !closing => {
                let _ = r;
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(tick), if !closing => {
                if activity.idle() >= opts.idle_timeout {
                    // Closes now when no request is in flight, else after it.
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Reads and drops what is left of a refused upload (at most 64 MiB or 5 s more), so
/// the client, still sending, reads the 413 instead of a reset: a socket closed with
/// unread bytes in it is reset by the kernel, taking the answer with it.
pub async fn drain_refused_body(body: &mut axum::body::Body) {
    let mut left: u64 = 64 << 20;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(Ok(frame)) = http_body_util::BodyExt::frame(body).await {
            let n = frame.data_ref().map_or(0, |d| d.len() as u64);
            left = left.saturating_sub(n);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}
