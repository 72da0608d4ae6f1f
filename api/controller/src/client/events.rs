//! `GET /v1/events[?since=<revision>]`: the controller's event stream, a WebSocket of
//! JSON [`Event`] text messages, as a typed [`Stream`]. `ws://` for an `http://`
//! controller, `wss://` (rustls, the web roots plus the client's `ca_file`) for an
//! `https://` one. The connection errors are `nova_http::Error`s like every other
//! call's: a refused upgrade is `Status` (401, 403, 400 with its field), no answer is
//! `Unreachable`, a message that is not an `Event` is `Decode`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use nova_http::{ClientOptions, Error, ErrorBody, Method};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::Connector;

use crate::Event;

/// Largest event message accepted: a controller's events are a few KiB; anything
/// larger is a broken or hostile peer, not an event.
const MAX_MESSAGE: usize = 4 << 20;

/// Where the stream is and how to reach it.
pub(super) struct Target<'a> {
    pub base: &'a str,
    pub token: Option<&'a str>,
    pub opts: &'a ClientOptions,
}

/// Opens the stream: events after `since` (stored ones first), then new ones; only new
/// ones when `since` is None. Returns once the controller has accepted the subscription,
/// so every change after this call returns is in the stream.
pub(super) async fn open(
    t: Target<'_>,
    since: Option<u64>,
) -> Result<BoxStream<'static, Result<Event, Error>>, Error> {
    let path = match since {
        Some(s) => format!("/v1/events?since={s}"),
        None => "/v1/events".to_string(),
    };
    let url = format!("{}{path}", t.base);
    let ws_url = if let Some(rest) = t.base.strip_prefix("https://") {
        format!("wss://{rest}{path}")
    } else if let Some(rest) = t.base.strip_prefix("http://") {
        format!("ws://{rest}{path}")
    } else {
        return Err(Error::Config(format!(
            "{}: must start with http:// or https://",
            t.base
        )));
    };
    let mut req = ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| Error::Config(format!("{url}: {e}")))?;
    if let Some(tok) = t.token {
        let v = format!("Bearer {tok}")
            .parse()
            .map_err(|_| Error::Config("the token is not a valid header value".into()))?;
        req.headers_mut().insert("Authorization", v);
    }
    let connector = if t.base.starts_with("https://") {
        Connector::Rustls(Arc::new(tls_config(t.opts)?))
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
    // The call's whole deadline covers connect, TLS and the upgrade; the stream
    // itself then lasts as long as the caller reads it.
    let handshake =
        tokio_tungstenite::connect_async_tls_with_config(req, Some(config), true, Some(connector));
    let (ws, _) = tokio::time::timeout(t.opts.timeout, handshake)
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
    Ok(events(ws, url).boxed())
}

/// The events of an open WebSocket; ends when the controller closes it.
fn events<S>(ws: S, url: String) -> impl Stream<Item = Result<Event, Error>>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    futures_util::stream::unfold((ws, url, false), |(mut ws, url, done)| async move {
        if done {
            return None;
        }
        loop {
            let item = match ws.next().await? {
                Ok(Message::Text(t)) => {
                    serde_json::from_str::<Event>(&t).map_err(|e| Error::Decode {
                        url: url.clone(),
                        reason: e.to_string(),
                    })
                }
                Ok(Message::Close(_)) => return None,
                // Pings are answered by the WebSocket itself; nothing else is sent.
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed) => return None,
                Err(e) => {
                    let err = Error::Unreachable {
                        url: url.clone(),
                        reason: describe(&e),
                    };
                    return Some((Err(err), (ws, url, true)));
                }
            };
            return Some((item, (ws, url, false)));
        }
    })
}

/// rustls trusting the web roots and the options' CA file, as `nova_http::Client` does.
fn tls_config(opts: &ClientOptions) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &opts.ca_file {
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

/// A WebSocket error with its causes (which say what went wrong: refused, TLS, reset).
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

/// The pause between two attempts to reopen a dropped stream.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// What [`follow`] carries from one event to the next.
struct Follow<F> {
    url: String,
    reopen: F,
    current: Option<BoxStream<'static, Result<Event, Error>>>,
    last: Option<u64>,
    give_up_after: Duration,
    failing_since: Option<std::time::Instant>,
    done: bool,
}

/// `first`, then, whenever the connection drops, the stream reopened by `reopen` after
/// the last revision seen: a controller restart (or, under etcd, a switch to another
/// controller behind the same URL) loses and repeats nothing. Gives up, with the last
/// error, once reopening has failed for `give_up_after`; an answer that is not a
/// connection error (401, 403) ends it at once.
pub(super) fn follow<F, Fut>(
    url: String,
    first: BoxStream<'static, Result<Event, Error>>,
    since: Option<u64>,
    give_up_after: Duration,
    reopen: F,
) -> BoxStream<'static, Result<Event, Error>>
where
    F: Fn(Option<u64>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<BoxStream<'static, Result<Event, Error>>, Error>>
        + Send,
{
    let st = Follow {
        url,
        reopen,
        current: Some(first),
        last: since,
        give_up_after,
        failing_since: None,
        done: false,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(cur) = st.current.as_mut() {
                match cur.next().await {
                    Some(Ok(ev)) => {
                        st.last = Some(ev.revision);
                        st.failing_since = None;
                        return Some((Ok(ev), st));
                    }
                    // One unreadable message: say so and read on.
                    Some(Err(e @ Error::Decode { .. })) => return Some((Err(e), st)),
                    Some(Err(_)) | None => {
                        st.current = None;
                        let since = *st.failing_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() >= st.give_up_after {
                            st.done = true;
                            let e = Error::Unreachable {
                                url: st.url.clone(),
                                reason: "the event stream keeps closing".into(),
                            };
                            return Some((Err(e), st));
                        }
                    }
                }
                continue;
            }
            // Until an event arrives again, the stream counts as failing (a controller
            // that accepts and closes at once must not be reopened in a tight loop).
            tokio::time::sleep(RECONNECT_PAUSE).await;
            match (st.reopen)(st.last).await {
                Ok(s) => st.current = Some(s),
                Err(e) if e.is_unreachable() => {
                    let since = *st.failing_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= st.give_up_after {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            }
        }
    })
    .boxed()
}
