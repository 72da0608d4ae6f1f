//! The client against real listeners (TCP and a unix socket) that answer by hand.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::*;
use crate::blocking;
use std::time::Duration;

/// Serves `answer(request head)` on every request of every connection; counts
/// connections. Returns the base URL or socket path's server handle.
async fn serve<L, S>(listener: L, conns: Arc<AtomicUsize>, answer: fn(&str) -> (u16, String))
where
    L: Accept<S> + Send + 'static,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        while let Some(s) = listener.accept_one().await {
            conns.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut r = BufReader::new(s);
                loop {
                    let mut head = String::new();
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).await.unwrap();
                    head.push_str(&String::from_utf8_lossy(&body));
                    let (status, text) = answer(&head);
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if r.get_mut().write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

trait Accept<S> {
    fn accept_one(&self) -> impl std::future::Future<Output = Option<S>> + Send;
}
impl Accept<tokio::net::TcpStream> for tokio::net::TcpListener {
    async fn accept_one(&self) -> Option<tokio::net::TcpStream> {
        self.accept().await.ok().map(|(s, _)| s)
    }
}
impl Accept<tokio::net::UnixStream> for tokio::net::UnixListener {
    async fn accept_one(&self) -> Option<tokio::net::UnixStream> {
        self.accept().await.ok().map(|(s, _)| s)
    }
}

fn echo(head: &str) -> (u16, String) {
    if head.starts_with("GET /missing") {
        return (404, r#"{"error":"vm x not found"}"#.into());
    }
    if head.starts_with("POST /bad") {
        return (
            400,
            r#"{"error":"vcpus: 0 is out of range","field":"vcpus"}"#.into(),
        );
    }
    if head.starts_with("GET /proxy") {
        return (502, "Bad Gateway".into());
    }
    if head.starts_with("DELETE") {
        return (204, String::new());
    }
    let auth = head
        .lines()
        .find_map(|l| l.strip_prefix("authorization: "))
        .unwrap_or("none")
        .trim()
        .to_string();
    let body = head.rsplit("\r\n").next().unwrap_or("").to_string();
    let first = head.lines().next().unwrap_or("").to_string();
    (
        200,
        serde_json::to_string(&serde_json::Value::Array(vec![
            first.into(),
            auth.into(),
            body.into(),
        ]))
        .unwrap(),
    )
}

#[tokio::test]
async fn calls_keep_one_connection_and_carry_the_token_and_body() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let conns = Arc::new(AtomicUsize::new(0));
    serve(l, conns.clone(), echo).await;
    let c = Client::new(&base, Some("s3cret"), &ClientOptions::default()).unwrap();
    for i in 0..5 {
        let [line, auth, body]: [String; 3] = c.post("/v1/things", &i).await.unwrap();
        assert_eq!(line.trim(), "POST /v1/things HTTP/1.1");
        assert_eq!(auth, "Bearer s3cret");
        assert_eq!(body, i.to_string());
    }
    let () = c.delete("/v1/things/1").await.unwrap();
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "keep-alive reuses the connection"
    );
}

#[tokio::test]
async fn an_error_answer_keeps_its_status_message_and_field() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", l.local_addr().unwrap());
    serve(l, Arc::default(), echo).await;
    let c = Client::new(&base, None, &ClientOptions::default()).unwrap();
    let e = c.get::<()>("/missing").await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains("vm x not found"), "{e}");
    let e = c.post::<_, ()>("/bad", &()).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert_eq!(e.body().unwrap().field.as_deref(), Some("vcpus"));
    let e = c.get::<()>("/proxy").await.unwrap_err();
    assert_eq!(e.body().unwrap().error, "Bad Gateway");
    // An answer that is not what the contract says is a decode error, not a panic.
    let e = c.get::<u64>("/anything").await.unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e}");
}

#[tokio::test]
async fn a_unix_socket_api_is_called_like_any_other() {
    let dir = std::env::temp_dir().join(format!("nova-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("api.sock");
    let _ = std::fs::remove_file(&sock);
    let l = tokio::net::UnixListener::bind(&sock).unwrap();
    serve(l, Arc::default(), echo).await;
    let c = Client::unix(&sock, Duration::from_secs(2)).unwrap();
    let [line, auth, _]: [String; 3] = c.get("/v1/vm").await.unwrap();
    assert_eq!(
        (line.trim(), auth.as_str()),
        ("GET /v1/vm HTTP/1.1", "none")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn nobody_listening_is_unreachable_and_names_the_url() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = Client::new(
        &format!("http://127.0.0.1:{port}"),
        None,
        &ClientOptions::default(),
    )
    .unwrap();
    let e = c.get::<()>("/v1/health").await.unwrap_err();
    assert!(e.is_unreachable(), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("127.0.0.1:{port}/v1/health")),
        "{e}"
    );
}

#[test]
fn bad_bases_and_ca_files_are_refused_by_name() {
    for bad in ["ftp://x", "localhost:80", "http://", "http://a b"] {
        let e = Client::new(bad, None, &ClientOptions::default()).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{bad}: {e}");
    }
    let opts = ClientOptions {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..ClientOptions::default()
    };
    let e = Client::new("https://h:1", None, &opts).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}

#[test]
fn field_errors_nest_and_become_error_bodies() {
    let e = FieldError::new("size_mib", "0 is out of range").under("disks[1]");
    assert_eq!(e.field, "disks[1].size_mib");
    let b = ErrorBody::from(e);
    assert_eq!(b.field.as_deref(), Some("disks[1].size_mib"));
    assert_eq!(b.error, "disks[1].size_mib: 0 is out of range");
}

#[test]
fn blocking_callers_share_one_runtime() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    l.set_nonblocking(true).unwrap();
    let c = blocking::block_on(async {
        let l = tokio::net::TcpListener::from_std(l).unwrap();
        serve(l, Arc::default(), echo).await;
        Client::new(&base, None, &ClientOptions::default()).unwrap()
    });
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || {
                let [_, _, body]: [String; 3] = blocking::block_on(c.put("/x", &i)).unwrap();
                body
            })
        })
        .collect();
    let bodies: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(bodies, ["0", "1", "2"]);
}
