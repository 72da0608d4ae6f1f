//! Request and answer bodies of the `/v1` routes that are not stored objects.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::{Quota, Role, Token};

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// `GET /v1/leader`: this controller and whether it leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Leader {
    pub node: String,
    pub leader: bool,
    /// `sqlite` or `etcd`.
    pub backend: String,
}

/// `GET /v1/whoami`: the caller as its token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Whoami {
    pub user: String,
    pub tenant: String,
    pub role: Role,
    #[serde(default)]
    pub host: Option<String>,
}

/// `POST /v1/tenants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub id: String,
    #[serde(default)]
    pub quota: Option<Quota>,
}

/// `POST /v1/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub id: String,
    pub role: Role,
    /// The tenant (system admins only; one's own otherwise).
    #[serde(default)]
    pub tenant: Option<String>,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub user: String,
    /// At most the user's role; the user's role when absent.
    #[serde(default)]
    pub role: Option<Role>,
}

/// The answer to `POST /v1/tokens`: the secret, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub token: String,
    pub info: Token,
}

/// The answer to `DELETE /v1/tokens/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevokedToken {
    pub revoked: String,
}

/// `POST /v1/vms/{id}/migrate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateBody {
    /// Destination host; the scheduler picks one when absent.
    #[serde(default)]
    pub to: Option<String>,
}

/// Most items one page of a list holds; the default when `limit` is absent.
pub const MAX_PAGE: u32 = 1000;

/// The query of every list route: `?limit=N&continue=TOKEN` (and, where a route says,
/// `tenant=`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Items per page, 1 to 1000 (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `continue` of the previous page; the first page when absent.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

impl ListQuery {
    /// The query string (`?limit=..&continue=..`, or empty).
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(l) = self.limit {
            parts.push(format!("limit={l}"));
        }
        if let Some(c) = &self.continue_token {
            parts.push(format!("continue={}", percent_encode(c)));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One page of a list, oldest first: the items and, when more follow, the token that
/// asks for them (`?continue=`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

/// The header a creating call carries so that a retry returns the first object
/// instead of creating another (`POST /v1/vms`, `/v1/tenants`, `/v1/users`, `/v1/tokens`).
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// The header an update carries to apply only to the object's revision it read
/// (the `revision` field; a mismatch answers 412).
pub const IF_MATCH: &str = "If-Match";
