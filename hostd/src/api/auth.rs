//! The bearer token every API call presents (except `GET /v1/health`), compared in
//! constant time so its bytes cannot be learnt from response timing, and the
//! middleware that refuses a call without it and names who called for the access log.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nova_hostd_api::ErrorBody;

use crate::host::Host;

/// Who made a request, for the access log (set on the response).
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub &'static str);

/// Holders of the host token: the controller and the other hosts' hostd.
pub const TOKEN_HOLDER: Caller = Caller("host-token");

/// Whether `a` equals `b`, in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= (x ^ y) as u64;
    }
    std::hint::black_box(diff) == 0
}

/// Whether an `Authorization` header value carries `token`.
pub fn authorized(header: Option<&[u8]>, token: &str) -> bool {
    let Some(h) = header else { return false };
    let Some(presented) = h.strip_prefix(b"Bearer ") else {
        return false;
    };
    !token.is_empty() && ct_eq(presented, token.as_bytes())
}

/// Refuses a request without the host's token (401, nothing done).
pub async fn require_token(State(host): State<Arc<Host>>, req: Request, next: Next) -> Response {
    let h = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !authorized(h, &host.config.token) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(ErrorBody::new("missing or invalid bearer token")),
        )
            .into_response();
    }
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(TOKEN_HOLDER);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_passes() {
        assert!(authorized(Some(b"Bearer s3cret"), "s3cret"));
        assert!(!authorized(Some(b"Bearer s3cre"), "s3cret"));
        assert!(!authorized(Some(b"Bearer s3cret2"), "s3cret"));
        assert!(!authorized(Some(b"Bearer S3cret"), "s3cret"));
        assert!(!authorized(Some(b"Basic s3cret"), "s3cret"));
        assert!(!authorized(Some(b"s3cret"), "s3cret"));
        assert!(!authorized(None, "s3cret"));
        assert!(
            !authorized(Some(b"Bearer "), ""),
            "an empty token never authorizes"
        );
    }

    #[test]
    fn ct_eq_handles_different_lengths() {
        assert!(ct_eq(b"", b""));
        assert!(!ct_eq(b"a", b""));
        assert!(!ct_eq(b"", b"\xff"));
    }
}
