//! The EC2 instance metadata service, IMDSv2 (`nova.config=imds`): a session token
//! (`PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`), then
//! `GET /latest/user-data` presenting it (`X-aws-ec2-metadata-token`). The user-data
//! is what the controller's burst launcher writes (`HostUserData`, parsed by its one
//! parser). The service answers only once the network is up: asked until a deadline.

use std::time::{Duration, Instant};

use nova_controller_api::HostUserData;
use nova_http::{Client, ClientOptions, Method};

/// How long a session token lives, s (the fetch takes two requests).
const TOKEN_TTL_S: &str = "60";

/// Why there is no user-data.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("nova.imds_url {0}: {1}")]
    Client(String, Box<nova_http::Error>),
    #[error("{url}: {what} answered {status}: {body}")]
    Status {
        url: String,
        what: &'static str,
        status: u16,
        body: String,
    },
    #[error("{0}: {1}")]
    Unreachable(String, Box<nova_http::Error>),
    #[error("the user-data: {0}")]
    Parse(nova_http::FieldError),
}

fn excerpt(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()
}

/// One attempt: a token, then the user-data, parsed.
fn once(base: &str, c: &Client) -> Result<HostUserData, ImdsError> {
    let block = nova_http::blocking::block_on;
    let (status, body) = block(c.send_raw(
        Method::PUT,
        "/latest/api/token",
        "text/plain",
        vec![],
        &[("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_S)],
    ))
    .map_err(|e| ImdsError::Unreachable(base.to_string(), Box::new(e)))?;
    if status != 200 {
        return Err(ImdsError::Status {
            url: base.to_string(),
            what: "PUT /latest/api/token",
            status,
            body: excerpt(&body),
        });
    }
    let token = String::from_utf8_lossy(&body).trim().to_string();
    let (status, body) = block(c.send_raw(
        Method::GET,
        "/latest/user-data",
        "text/plain",
        vec![],
        &[("X-aws-ec2-metadata-token", token.as_str())],
    ))
    .map_err(|e| ImdsError::Unreachable(base.to_string(), Box::new(e)))?;
    if status != 200 {
        return Err(ImdsError::Status {
            url: base.to_string(),
            what: "GET /latest/user-data",
            status,
            body: excerpt(&body),
        });
    }
    HostUserData::parse(&String::from_utf8_lossy(&body)).map_err(ImdsError::Parse)
}

/// The user-data of this instance from the service at `base`, asked every second
/// until `deadline` while it is unreachable; an answer that is not user-data (an
/// error status, a bad body) ends it at once.
pub fn user_data(base: &str, deadline: Duration) -> Result<HostUserData, ImdsError> {
    let opts = ClientOptions {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let c = Client::new(base, None, &opts)
        .map_err(|e| ImdsError::Client(base.to_string(), Box::new(e)))?;
    let start = Instant::now();
    loop {
        match once(base, &c) {
            Err(ImdsError::Unreachable(u, e)) if start.elapsed() < deadline => {
                tracing::debug!("instance metadata at {u}: {e}; asking again");
                std::thread::sleep(Duration::from_secs(1));
            }
            r => return r,
        }
    }
}
