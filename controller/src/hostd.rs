//! The client of hostd's HTTP API (`nova_hostd::api::types` bodies, bearer token):
//! the only place the controller talks to hosts.

use std::time::Duration;

use nova_hostd::api::types::{MigrateRequest, MigrationStatus, VmInfo, VmSpec};
use serde::de::DeserializeOwned;

/// Why a hostd call failed.
#[derive(Debug, thiserror::Error)]
pub enum HostdError {
    #[error("hostd unreachable: {0}")]
    Unreachable(String),
    #[error("hostd answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("hostd answer unreadable: {0}")]
    Decode(String),
}

impl HostdError {
    /// hostd says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, HostdError::Status { status: 404, .. })
    }
}

/// One hostd: its URL and the token it expects.
#[derive(Clone)]
pub struct Hostd<'a> {
    pub http: &'a reqwest::Client,
    pub url: &'a str,
    pub token: &'a str,
}

/// A client with short timeouts: a slow host must not stall a reconcile pass.
pub fn client() -> reqwest::Client {
    // Hosts are reached directly, never through an HTTP proxy from the environment.
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default()
}

impl Hostd<'_> {
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, HostdError> {
        let mut rq = self
            .http
            .request(method, format!("{}{path}", self.url.trim_end_matches('/')))
            .bearer_auth(self.token);
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let r = rq
            .send()
            .await
            .map_err(|e| HostdError::Unreachable(e.to_string()))?;
        let status = r.status().as_u16();
        let bytes = r
            .bytes()
            .await
            .map_err(|e| HostdError::Unreachable(e.to_string()))?;
        if !(200..300).contains(&status) {
            return Err(HostdError::Status {
                status,
                body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            });
        }
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes).map_err(|e| HostdError::Decode(e.to_string()))
    }

    pub async fn vm(&self, id: &str) -> Result<VmInfo, HostdError> {
        self.call(reqwest::Method::GET, &format!("/v1/vms/{id}"), None)
            .await
    }
    pub async fn create(&self, spec: &VmSpec) -> Result<VmInfo, HostdError> {
        let body = serde_json::to_value(spec).map_err(|e| HostdError::Decode(e.to_string()))?;
        self.call(reqwest::Method::POST, "/v1/vms", Some(body))
            .await
    }
    pub async fn start(&self, id: &str) -> Result<serde_json::Value, HostdError> {
        self.call(reqwest::Method::POST, &format!("/v1/vms/{id}/start"), None)
            .await
    }
    pub async fn stop(&self, id: &str) -> Result<serde_json::Value, HostdError> {
        self.call(reqwest::Method::POST, &format!("/v1/vms/{id}/stop"), None)
            .await
    }
    pub async fn delete(&self, id: &str) -> Result<serde_json::Value, HostdError> {
        self.call(reqwest::Method::DELETE, &format!("/v1/vms/{id}"), None)
            .await
    }
    pub async fn migrate(
        &self,
        id: &str,
        req: &MigrateRequest,
    ) -> Result<MigrationStatus, HostdError> {
        let body = serde_json::to_value(req).map_err(|e| HostdError::Decode(e.to_string()))?;
        self.call(
            reqwest::Method::POST,
            &format!("/v1/vms/{id}/migrate"),
            Some(body),
        )
        .await
    }
    pub async fn migration(&self, id: &str) -> Result<MigrationStatus, HostdError> {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/vms/{id}/migration"),
            None,
        )
        .await
    }
    pub async fn cancel_migration(&self, id: &str) -> Result<serde_json::Value, HostdError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/v1/vms/{id}/migration"),
            None,
        )
        .await
    }
}
