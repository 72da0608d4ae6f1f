//! The client: pooled keep-alive connections over TCP, TLS or a unix socket, typed
//! JSON calls, error answers decoded into [`ErrorBody`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use bytes::Bytes;
pub use reqwest::Method;

use crate::ErrorBody;

/// How a [`Client`] connects: deadlines and the CA that signs `https://` peers.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline of a whole call (connect, send, answer).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// PEM file of the CA that signs the peers' certificates (a private CA); the
    /// built-in web roots are trusted as well.
    pub ca_file: Option<PathBuf>,
}

/// The CA every [`ClientOptions::default`] of this process trusts (a daemon's `--ca`).
static DEFAULT_CA: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes `ca` the CA of every default [`ClientOptions`] made from now on in this
/// process (a daemon calls it once, at start, with its `--ca`); later calls change
/// nothing.
pub fn trust_ca_by_default(ca: PathBuf) {
    let _ = DEFAULT_CA.set(ca);
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            ca_file: DEFAULT_CA.get().cloned(),
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be built (a bad URL, an unreadable CA file).
    #[error("{0}")]
    Config(String),
    /// No answer: refused, reset, DNS, TLS, or the deadline passed.
    #[error("{url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The peer answered with an error status.
    #[error("{method} {url}: {status}: {}", body.error)]
    Status {
        method: Method,
        url: String,
        status: u16,
        body: ErrorBody,
    },
    /// The answer was not what the contract says.
    #[error("{url}: unreadable answer: {reason}")]
    Decode { url: String, reason: String },
}

impl Error {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
    /// The peer said the object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
    /// The peer could not be reached (as opposed to answering with an error).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
    /// The error body of an error answer.
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            Error::Status { body, .. } => Some(body),
            _ => None,
        }
    }
}

/// One peer: where it is, the token it expects, and a pooled connection to it.
/// Cloning is cheap and shares the pool.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    /// `http://host:port[/prefix]`, `https://...`, or `http://localhost` on a unix socket.
    base: String,
    token: Option<String>,
    /// What a WebSocket to the same peer is opened with (`Client::websocket`).
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) timeout: Duration,
}

/// A client with a `ca_file` trusts that CA only (as Go's `RootCAs`, Nomad's and
/// Consul's `ca_file` do): the system's roots stay out. That is also what keeps a
/// client cheap to make: loading the system's roots (`object_store` turns them on
/// for every reqwest client in a binary) takes ~3 ms per client here, and hostd makes
/// one per VM it starts.
fn builder(opts: &ClientOptions) -> Result<reqwest::ClientBuilder, Error> {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(opts.timeout)
        .connect_timeout(opts.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .use_rustls_tls();
    if let Some(ca) = &opts.ca_file {
        b = b.tls_built_in_root_certs(false);
        let pem = std::fs::read(ca)
            .map_err(|e| Error::Config(format!("ca file {}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::Config(format!("ca file {}: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(Error::Config(format!(
                "ca file {}: no PEM certificate in it",
                ca.display()
            )));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    Ok(b)
}

fn check_base(base: &str) -> Result<String, Error> {
    let base = base.trim_end_matches('/');
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))
        .ok_or_else(|| Error::Config(format!("{base}: must start with http:// or https://")))?;
    if rest.is_empty() || base.chars().any(char::is_whitespace) {
        return Err(Error::Config(format!("{base}: no host in it")));
    }
    Ok(base.to_string())
}

impl Client {
    /// A client of the peer at `base` (`http://host:port` or `https://host:port`),
    /// presenting `token` as a bearer token when given.
    pub fn new(base: &str, token: Option<&str>, opts: &ClientOptions) -> Result<Self, Error> {
        let http = builder(opts)?
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Client {
            http,
            base: check_base(base)?,
            token: token.map(str::to_owned),
            ca_file: opts.ca_file.clone(),
            timeout: opts.timeout,
        })
    }

    /// A client of the API served on the unix socket at `path`.
    pub fn unix(path: &Path, timeout: Duration) -> Result<Self, Error> {
        let opts = ClientOptions {
            timeout,
            ..ClientOptions::default()
        };
        // No TLS on a unix socket: no roots to load.
        let http = builder(&opts)?
            .tls_built_in_root_certs(false)
            .unix_socket(path)
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Client {
            http,
            base: "http://localhost".into(),
            token: None,
            ca_file: None,
            timeout,
        })
    }

    /// A client of another peer that shares this one's connection pool and options.
    pub fn to(&self, base: &str, token: Option<&str>) -> Result<Self, Error> {
        Ok(Client {
            http: self.http.clone(),
            base: check_base(base)?,
            token: token.map(str::to_owned),
            ca_file: self.ca_file.clone(),
            timeout: self.timeout,
        })
    }

    /// The peer's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The bearer token this client presents.
    #[cfg(feature = "websocket")]
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rq = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => rq.bearer_auth(t),
            None => rq,
        }
    }

    /// `GET path`, the answer decoded as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// `POST path` with a JSON body.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `POST path` with a JSON body and a deadline of its own, for a call that does
    /// long work before it answers (an upgrade streams and writes a system image).
    pub async fn post_slow<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, Error> {
        let method = Method::POST;
        let rq = self
            .request(method.clone(), path)
            .json(body)
            .timeout(timeout);
        let (status, bytes) = self.send(&method, path, rq).await?;
        self.decode(method, path, status, &bytes)
    }

    /// `PUT path` with a JSON body.
    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    /// Any method, an optional JSON body, the answer decoded as `T` (`()` for an
    /// empty answer).
    pub async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, Error> {
        self.call_with(method, path, body, &[]).await
    }

    /// [`Client::call`] with extra request headers (`Idempotency-Key`, `If-Match`).
    pub async fn call_with<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        headers: &[(&str, &str)],
    ) -> Result<T, Error> {
        let mut rq = self.request(method.clone(), path);
        if let Some(b) = body {
            rq = rq.json(b);
        }
        for (k, v) in headers {
            rq = rq.header(*k, *v);
        }
        let (status, bytes) = self.send(&method, path, rq).await?;
        self.decode(method, path, status, &bytes)
    }

    /// `PUT path` streaming the file at `file` as an `application/octet-stream` body.
    pub async fn upload<T: DeserializeOwned>(&self, path: &str, file: &Path) -> Result<T, Error> {
        self.upload_with(Method::PUT, path, file).await
    }

    /// `method path` streaming the file at `file` as an `application/octet-stream` body.
    pub async fn upload_with<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        file: &Path,
    ) -> Result<T, Error> {
        let url = self.url(path);
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|e| Error::Config(format!("{}: {e}", file.display())))?;
        let len = f
            .metadata()
            .await
            .map_err(|e| Error::Config(format!("{}: {e}", file.display())))?
            .len();
        let stream = tokio_util::io::ReaderStream::new(f);
        let rq = self
            .request(method.clone(), path)
            // An upload takes as long as the bytes take; the pool's deadline is for calls.
            .timeout(Duration::from_secs(3600))
            .header("content-type", "application/octet-stream")
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(stream));
        let (status, bytes) = self.send(&method, path, rq).await.map_err(|e| match e {
            Error::Unreachable { reason, .. } => Error::Unreachable { url, reason },
            e => e,
        })?;
        self.decode(method, path, status, &bytes)
    }

    /// `method path` with `body` as it is (bytes a signature covers) and extra
    /// headers; the answer's status and bytes as they are (a webhook's "ok").
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Vec<u8>), Error> {
        let mut rq = self
            .request(method.clone(), path)
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            rq = rq.header(*k, *v);
        }
        let (status, bytes) = self.send(&method, path, rq).await?;
        Ok((status, bytes.to_vec()))
    }

    /// `GET path` with an hour's deadline, each chunk of the answer handed to `sink`
    /// as it arrives, so a large file is never whole in memory; the bytes received.
    /// An error status answers `Status`; a `sink` error ends the transfer as `Decode`.
    pub async fn get_streamed(
        &self,
        path: &str,
        mut sink: impl FnMut(&[u8]) -> Result<(), String> + Send,
    ) -> Result<u64, Error> {
        let unreachable = |e: reqwest::Error| Error::Unreachable {
            url: self.url(path),
            reason: describe(&e),
        };
        let rq = self
            .request(Method::GET, path)
            .timeout(Duration::from_secs(3600));
        let mut r = rq.send().await.map_err(unreachable)?;
        let status = r.status().as_u16();
        if !(200..300).contains(&status) {
            let bytes = r.bytes().await.map_err(unreachable)?;
            return Err(Error::Status {
                method: Method::GET,
                url: self.url(path),
                status,
                body: ErrorBody::from_answer(&bytes),
            });
        }
        let mut n = 0u64;
        while let Some(chunk) = r.chunk().await.map_err(unreachable)? {
            sink(&chunk).map_err(|reason| Error::Decode {
                url: self.url(path),
                reason,
            })?;
            n += chunk.len() as u64;
        }
        Ok(n)
    }

    /// `GET path`, the answer's status and bytes as they are (Prometheus text, HTML).
    pub async fn get_raw(&self, path: &str) -> Result<(u16, Vec<u8>), Error> {
        let rq = self.request(Method::GET, path);
        let (status, bytes) = self.send(&Method::GET, path, rq).await?;
        Ok((status, bytes.to_vec()))
    }

    /// `GET path`, the JSON answer's body as it came (not decoded, not copied), for a
    /// caller that passes it on; a status outside 2xx fails as in [`Client::get`].
    pub async fn get_body(&self, path: &str) -> Result<Bytes, Error> {
        let rq = self.request(Method::GET, path);
        let (status, bytes) = self.send(&Method::GET, path, rq).await?;
        self.check(Method::GET, path, status, &bytes)?;
        Ok(bytes)
    }

    async fn send(
        &self,
        _method: &Method,
        path: &str,
        rq: reqwest::RequestBuilder,
    ) -> Result<(u16, Bytes), Error> {
        let unreachable = |e: reqwest::Error| Error::Unreachable {
            url: self.url(path),
            reason: describe(&e),
        };
        let r = rq.send().await.map_err(unreachable)?;
        let status = r.status().as_u16();
        // The body as reqwest assembled it: decoded from there, never copied again.
        let bytes = r.bytes().await.map_err(unreachable)?;
        Ok((status, bytes))
    }

    /// An error for a status outside 2xx, with the API's error body.
    fn check(&self, method: Method, path: &str, status: u16, bytes: &[u8]) -> Result<(), Error> {
        if (200..300).contains(&status) {
            return Ok(());
        }
        Err(Error::Status {
            method,
            url: self.url(path),
            status,
            body: ErrorBody::from_answer(bytes),
        })
    }

    fn decode<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        status: u16,
        bytes: &[u8],
    ) -> Result<T, Error> {
        self.check(method, path, status, bytes)?;
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            &b"null"[..]
        } else {
            bytes
        };
        serde_json::from_slice(bytes).map_err(|e| Error::Decode {
            url: self.url(path),
            reason: e.to_string(),
        })
    }
}

/// A reqwest error with its causes, which say what actually went wrong.
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
