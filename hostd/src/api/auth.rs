//! The bearer token every API call presents (except `GET /v1/health`), compared in
//! constant time so its bytes cannot be learnt from response timing.

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
