//! The web dashboard, served by the controller itself: the single-page app built from
//! `controller/ui/` (its files embedded in the binary through `ui/dist/assets.rs`)
//! under `/ui/`, on the API's origin, with a strict Content-Security-Policy; any
//! other path under `/ui/` is a route of the app and answers its `index.html`.
//! It also lets a browser authenticate the API's WebSockets: a browser cannot set an
//! `Authorization` header on one, so the dashboard sends its token as a
//! `Sec-WebSocket-Protocol` entry (`nova.bearer.<hex of the token>`, beside
//! [`PROTOCOL`]), which becomes the bearer header here, before authentication.
//! Mounted as the router's outermost layer: it answers dashboard paths without
//! touching the API's middleware, and hands everything else on.

use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// One built file of the dashboard.
struct Asset {
    /// Path under `/ui/` (`index.html`, `assets/index-<hash>.js`).
    path: &'static str,
    /// Quoted; the start of the file's SHA-256.
    etag: &'static str,
    body: &'static [u8],
    gzip: Option<&'static [u8]>,
    br: Option<&'static [u8]>,
}

static ASSETS: &[Asset] = &include!("../../ui/dist/assets.rs");

/// Where the dashboard lives.
const BASE: &str = "/ui/";

/// The subprotocol the dashboard asks for on a WebSocket, answered back to it.
pub const PROTOCOL: &str = "nova.v1";
/// The prefix of the subprotocol entry that carries the token, hex-encoded.
const BEARER_PROTOCOL: &str = "nova.bearer.";

/// Only the dashboard's own files, no inline script, no framing, no plugins; the API
/// (and its WebSockets) on the same origin only. Styles alone may be inline: the
/// console's terminal (xterm.js) writes its renderer's sizes and colours into
/// `<style>` elements it creates, and offers no nonce. Scripts stay strict (`'self'`
/// and Trusted Types), so injected markup still cannot run code.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self'; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
    require-trusted-types-for 'script'";

/// Serves the dashboard's paths; passes every other request on (after turning a
/// WebSocket's bearer subprotocol into its `Authorization` header).
pub async fn dashboard(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let read = req.method() == Method::GET || req.method() == Method::HEAD;
    if !(read && (path == "/" || path == "/ui" || path.starts_with(BASE))) {
        return pass_on(req, next).await;
    }
    let started = Instant::now();
    let resp = match path.strip_prefix(BASE) {
        Some(rel) => serve(rel, req.headers()),
        None => redirect(BASE),
    };
    let took = started.elapsed();
    nova_logging::access(
        req.method().as_str(),
        path,
        resp.status().as_u16(),
        took,
        "-",
    );
    resp
}

fn redirect(to: &'static str) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

/// A file of the dashboard, or its `index.html` for a route of the app. A missing
/// file (a path with an extension, or under `assets/`) is 404, never the page.
fn serve(rel: &str, headers: &HeaderMap) -> Response {
    let rel = if rel.is_empty() { "index.html" } else { rel };
    let asset = match ASSETS.iter().find(|a| a.path == rel) {
        Some(a) => a,
        None if rel.starts_with("assets/")
            || rel.rsplit('/').next().is_some_and(|f| f.contains('.')) =>
        {
            return secured(
                (StatusCode::NOT_FOUND, "no such file of the dashboard\n").into_response(),
            )
        }
        None => index(),
    };
    let mut r = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        }) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let (body, encoding) = pick_encoding(asset, headers);
        let mut r = Body::from(body).into_response();
        if let Some(e) = encoding {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static(e));
        }
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(asset.path)),
        );
        r
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    // Hashed names never change content; everything else is checked on every load.
    let cache = if asset.path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    secured(r)
}

fn index() -> &'static Asset {
    ASSETS
        .iter()
        .find(|a| a.path == "index.html")
        .expect("the dashboard's build has an index.html")
}

/// The smallest copy the client accepts: brotli, then gzip, then the file itself.
fn pick_encoding(a: &Asset, headers: &HeaderMap) -> (&'static [u8], Option<&'static str>) {
    // `br;q=0` refuses br; any other weight accepts it.
    let accepted: Vec<&str> = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|e| {
            let mut parts = e.split(';').map(str::trim);
            let name = parts.next()?;
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (!refused).then_some(name)
        })
        .collect();
    match (a.br, a.gzip) {
        (Some(b), _) if accepted.contains(&"br") => (b, Some("br")),
        (_, Some(g)) if accepted.contains(&"gzip") => (g, Some("gzip")),
        _ => (a.body, None),
    }
}

/// The content type of a built file, by its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "json" => "application/json",
        "png" => "image/png",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The security headers of every dashboard answer.
fn secured(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    r
}

/// Hands a request to the API. A WebSocket upgrade without `Authorization` whose
/// subprotocols carry `nova.bearer.<hex>` gets that token as its bearer header (the
/// entry itself is removed), and its answer names [`PROTOCOL`], which the browser
/// requires to be one it offered.
async fn pass_on(mut req: Request, next: Next) -> Response {
    let Some(token) = websocket_bearer(req.headers()) else {
        return next.run(req).await;
    };
    let h = req.headers_mut();
    match HeaderValue::from_str(&format!("Bearer {token}")) {
        Ok(v) => h.insert(header::AUTHORIZATION, v),
        // Not a header value: authentication refuses it as a missing token.
        Err(_) => None,
    };
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(PROTOCOL),
    );
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(PROTOCOL),
        );
    }
    resp
}

/// The token of a WebSocket upgrade that offers [`PROTOCOL`] and carries one in its
/// subprotocols (and has no `Authorization` header).
fn websocket_bearer(h: &HeaderMap) -> Option<String> {
    if h.contains_key(header::AUTHORIZATION) || !h.contains_key(header::UPGRADE) {
        return None;
    }
    let offered: Vec<&str> = h
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !offered.contains(&PROTOCOL) {
        return None;
    }
    let hexed = offered
        .iter()
        .find_map(|p| p.strip_prefix(BEARER_PROTOCOL))?;
    let bytes = hex::decode(hexed).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_build_has_an_index_that_loads_its_hashed_script_and_style() {
        let html = std::str::from_utf8(index().body).unwrap();
        // What the page loads, and the chunks its scripts load on demand (the console's
        // terminal), which its scripts name.
        let scripts: Vec<&str> = ASSETS
            .iter()
            .filter(|a| a.path.ends_with(".js") && html.contains(&format!("/ui/{}", a.path)))
            .map(|a| std::str::from_utf8(a.body).unwrap())
            .collect();
        assert!(!scripts.is_empty(), "the index loads a script");
        for a in ASSETS
            .iter()
            .filter(|a| a.path.ends_with(".js") || a.path.ends_with(".css"))
        {
            assert!(a.path.starts_with("assets/"), "{}", a.path);
            let name = a.path.trim_start_matches("assets/");
            assert!(
                html.contains(&format!("/ui/{}", a.path))
                    || scripts.iter().any(|s| s.contains(name)),
                "{} is not loaded",
                a.path
            );
        }
        assert!(
            !html.contains("<script>"),
            "no inline script (the CSP forbids it)"
        );
    }

    #[test]
    fn a_route_of_the_app_answers_the_page_and_a_missing_file_answers_404() {
        let none = HeaderMap::new();
        let page = serve("vms/vm-1", &none);
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()[header::ETAG], index().etag);
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(
            serve("assets/gone-1234.js", &none).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(serve("favicon.ico", &none).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn scripts_come_compressed_typed_and_cached_for_good() {
        let js = ASSETS.iter().find(|a| a.path.ends_with(".js")).unwrap();
        let r = serve(
            js.path,
            &headers(&[(header::ACCEPT_ENCODING, "gzip, deflate, br")]),
        );
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "br");
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(r.headers()[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable"));
        let r = serve(js.path, &headers(&[(header::ACCEPT_ENCODING, "gzip")]));
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        let r = serve(
            js.path,
            &headers(&[(header::ACCEPT_ENCODING, "br;q=0, identity")]),
        );
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        let r = serve(js.path, &headers(&[(header::IF_NONE_MATCH, js.etag)]));
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn a_browser_websocket_token_travels_as_a_subprotocol() {
        let hexed = hex::encode("nova_abc");
        let offer = format!("{PROTOCOL}, {BEARER_PROTOCOL}{hexed}");
        let ws = |extra: &[(HeaderName, &str)]| {
            let mut p = vec![
                (header::UPGRADE, "websocket"),
                (header::SEC_WEBSOCKET_PROTOCOL, offer.as_str()),
            ];
            p.extend_from_slice(extra);
            websocket_bearer(&headers(&p))
        };
        assert_eq!(ws(&[]).as_deref(), Some("nova_abc"));
        assert_eq!(
            ws(&[(header::AUTHORIZATION, "Bearer other")]),
            None,
            "the header wins"
        );
        let only_token = headers(&[
            (header::UPGRADE, "websocket"),
            (
                header::SEC_WEBSOCKET_PROTOCOL,
                &format!("{BEARER_PROTOCOL}{hexed}"),
            ),
        ]);
        assert_eq!(
            websocket_bearer(&only_token),
            None,
            "without nova.v1 it is not ours"
        );
        let not_hex = headers(&[
            (header::UPGRADE, "websocket"),
            (
                header::SEC_WEBSOCKET_PROTOCOL,
                &format!("{PROTOCOL}, {BEARER_PROTOCOL}zz"),
            ),
        ]);
        assert_eq!(websocket_bearer(&not_hex), None);
    }
}
