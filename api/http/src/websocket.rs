//! WebSockets to a peer (feature `websocket`): [`Client::websocket`] opens `path` on
//! the client's peer as `ws://` (for `http://`) or `wss://` (for `https://`, rustls
//! trusting the web roots and the client's CA file, as every other call does), with
//! the client's bearer token, within the client's deadline. A refused upgrade is a
//! [`Error::Status`] with the peer's error body, like any other refused call.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self};
use tokio_tungstenite::Connector;

pub use tokio_tungstenite::tungstenite::Message;

use crate::{Client, Error, ErrorBody, Method};

/// An open WebSocket to a peer.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The error type of an open [`WebSocket`]'s messages.
pub type WsError = tungstenite::Error;

/// Largest message accepted from a peer.
const MAX_MESSAGE: usize = 4 << 20;

impl Client {
    /// Opens the WebSocket at `path` on this client's peer.
    pub async fn websocket(&self, path: &str) -> Result<WebSocket, Error> {
        let url = format!("{}{path}", self.base());
        let ws_url = ws_url(self.base(), path)?;
        let mut req = ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::Config(format!("{url}: {e}")))?;
        if let Some(tok) = self.token() {
            let v = format!("Bearer {tok}")
                .parse()
                .map_err(|_| Error::Config("the token is not a valid header value".into()))?;
            req.headers_mut().insert("Authorization", v);
        }
        let connector = if self.base().starts_with("https://") {
            Connector::Rustls(Arc::new(tls_config(self.ca_file.as_deref())?))
        } else {
            Connector::Plain
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let unreachable = |reason: String| Error::Unreachable {
            url: url.clone(),
            reason,
        };
        let handshake = tokio_tungstenite::connect_async_tls_with_config(
            req,
            Some(config),
            true,
            Some(connector),
        );
        let (ws, _) = tokio::time::timeout(self.timeout, handshake)
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| match e {
                tungstenite::Error::Http(answer) => Error::Status {
                    method: Method::GET,
                    url: url.clone(),
                    status: answer.status().as_u16(),
                    body: ErrorBody::from_answer(answer.body().as_deref().unwrap_or_default()),
                },
                tungstenite::Error::Url(e) => Error::Config(format!("{url}: {e}")),
                e => unreachable(describe(&e)),
            })?;
        Ok(ws)
    }
}

/// `ws://` or `wss://` for the peer at `base`.
fn ws_url(base: &str, path: &str) -> Result<String, Error> {
    if let Some(rest) = base.strip_prefix("https://") {
        Ok(format!("wss://{rest}{path}"))
    } else if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}{path}"))
    } else {
        Err(Error::Config(format!(
            "{base}: must start with http:// or https://"
        )))
    }
}

/// rustls trusting the web roots and `ca`, as the HTTP client does.
fn tls_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca {
        let bad =
            |e: &dyn std::fmt::Display| Error::Config(format!("ca file {}: {e}", ca.display()));
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| bad(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if certs.is_empty() {
            return Err(bad(&"no PEM certificate in it"));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(&e))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("tls: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A WebSocket error with its causes.
fn describe(e: &tungstenite::Error) -> String {
    use std::error::Error as _;
    let mut s = match e {
        tungstenite::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "cannot connect".to_string()
        }
        _ => e.to_string(),
    };
    let mut src = e.source();
    while let Some(cause) = src {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_follow_the_peers_scheme() {
        assert_eq!(
            ws_url("http://h:1", "/v1/x").unwrap(),
            "ws://h:1/v1/x".to_string()
        );
        assert_eq!(
            ws_url("https://h:1", "/v1/x").unwrap(),
            "wss://h:1/v1/x".to_string()
        );
        assert!(ws_url("ftp://h", "/").is_err());
    }
}
