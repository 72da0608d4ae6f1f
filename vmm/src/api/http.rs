//! Just enough HTTP/1.1 for a JSON API on a unix socket: one request at a time per
//! connection, Content-Length bodies, keep-alive. Small on purpose: the VMM's memory
//! budget is a few MiB and this is its only server.

use std::io::{BufRead, BufReader, Read, Write};

use nova_vmm_api::{ErrorBody, FieldError};

/// Largest request head we read.
const MAX_HEAD: usize = 16 << 10;
/// Largest request body we read.
pub const MAX_BODY: usize = 1 << 20;

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    pub close: bool,
}

/// A response: status and JSON body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
    /// It carries a finished migration's result: once it is written, the source
    /// process may exit (see `Migration::result_read`).
    pub delivers_migration_result: bool,
    /// It answers a stop that takes effect at once: the VM stops once it is written
    /// (or the client has gone), never before, so the answer always leaves.
    pub stops_vm: bool,
}

impl Response {
    pub fn json(status: u16, value: &impl serde::Serialize) -> Self {
        Self {
            status,
            body: serde_json::to_string(value).unwrap_or_else(|_| "{}".into()),
            delivers_migration_result: false,
            stops_vm: false,
        }
    }
    /// An error answer: `{"error": message}`.
    pub fn error(status: u16, message: impl std::fmt::Display) -> Self {
        Self::json(status, &ErrorBody::new(message.to_string()))
    }
    /// A 400 answer naming the field that is wrong: `{"error", "field"}`.
    pub fn bad_field(e: FieldError) -> Self {
        Self::json(400, &ErrorBody::from(e))
    }
    pub fn no_content() -> Self {
        Self {
            status: 204,
            body: String::new(),
            delivers_migration_result: false,
            stops_vm: false,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connection closed")]
    Closed,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request body larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one request; `Closed` at a clean end of the connection.
pub fn read_request<R: Read>(r: &mut BufReader<R>) -> Result<Request, HttpError> {
    read_request_with(r, |_| {})
}

/// [`read_request`], calling `on_head` once the head is read and before the body
/// (the server switches from its header to its body timeout there).
pub fn read_request_with<R: Read>(
    r: &mut BufReader<R>,
    on_head: impl FnOnce(&mut R),
) -> Result<Request, HttpError> {
    let mut head_len = 0;
    let mut line = String::new();
    let mut next_line = |r: &mut BufReader<R>, line: &mut String| -> Result<usize, HttpError> {
        line.clear();
        let n = r
            .by_ref()
            .take((MAX_HEAD - head_len) as u64)
            .read_line(line)?;
        head_len += n;
        if head_len >= MAX_HEAD {
            return Err(HttpError::Malformed("request head too large"));
        }
        Ok(n)
    };
    if next_line(r, &mut line)? == 0 {
        return Err(HttpError::Closed);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed("request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("HTTP version"));
    }
    let (method, path) = (method.to_string(), path.to_string());
    let mut close = version == "HTTP/1.0";
    let mut length = 0usize;
    loop {
        if next_line(r, &mut line)? == 0 {
            return Err(HttpError::Malformed("headers end early"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((name, value)) = l.split_once(':') else {
            return Err(HttpError::Malformed("header line"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .parse()
                .map_err(|_| HttpError::Malformed("Content-Length"))?;
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::Malformed("chunked bodies are not supported"));
        }
    }
    if length > MAX_BODY {
        return Err(HttpError::TooLarge);
    }
    on_head(r.get_mut());
    let mut body = vec![0u8; length];
    r.read_exact(&mut body)?;
    Ok(Request {
        method,
        path,
        body,
        close,
    })
}

/// Writes `resp`.
pub fn write_response<W: Write>(w: &mut W, resp: &Response) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        resp.status,
        reason(resp.status),
        resp.body.len()
    );
    w.write_all(head.as_bytes())?;
    w.write_all(resp.body.as_bytes())?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Request, HttpError> {
        read_request(&mut BufReader::new(raw.as_bytes()))
    }

    #[test]
    fn a_request_with_a_body_parses() {
        let r = parse("PUT /v1/vm/pause HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(
            (
                r.method.as_str(),
                r.path.as_str(),
                r.body.as_slice(),
                r.close
            ),
            ("PUT", "/v1/vm/pause", &b"{}"[..], false)
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        assert!(matches!(parse("\r\n\r\n"), Err(HttpError::Malformed(_))));
        assert!(matches!(
            parse("GET / SPDY/3\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            Err(HttpError::TooLarge)
        ));
        assert!(matches!(parse(""), Err(HttpError::Closed)));
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(parse(&huge), Err(HttpError::Malformed(_))));
    }
}
