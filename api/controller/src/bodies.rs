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
    /// Live, warm or cold; the migration policy's `kind` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<nova_vmm_api::MigrationKind>,
    /// A peer cluster (id or name) to move the VM to (cross-cluster live migration);
    /// `to` then names one of its hosts, and its scheduler picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
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

/// The header a creating call carries so that a retry returns the first answer
/// instead of creating another object (`POST /v1/vms`, `/v1/tenants`, `/v1/users`,
/// `/v1/vms/{id}/migrate`, `/v1/hosts/{id}/drain`). The same key with another body
/// answers 422; keys expire (24 h by default). `POST /v1/tokens` refuses it: a token's
/// secret is shown once and never stored, so it cannot be answered again.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// The header an update carries to apply only to the object's revision it read
/// (the `revision` field, bare or quoted; a mismatch answers 412).
pub const IF_MATCH: &str = "If-Match";

/// `?tenant=`: a system-tenant caller acting for (or listing) one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    /// The tenant (system tenant callers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// The query of a list route that a system-tenant caller may narrow to one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TenantListQuery {
    /// Items per page, 1 to 1000 (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `continue` of the previous page; the first page when absent.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
    /// Only this tenant's items (system tenant callers; others see only their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl TenantListQuery {
    /// The page part of the query.
    pub fn page(&self) -> ListQuery {
        ListQuery {
            limit: self.limit,
            continue_token: self.continue_token.clone(),
        }
    }
}

/// `POST /v1/vms/{id}/stop?force=true`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StopQuery {
    /// Kill the VM's VMM at once instead of asking the guest to power off.
    #[serde(default)]
    pub force: bool,
}

/// `GET /v1/vms/{id}/console?lines=N`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsoleQuery {
    /// The last N lines, 1 to 10000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u32>,
}

/// `GET /v1/events?since=<revision>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Replay the stored events after this revision, then stream new ones; only new
    /// ones when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

/// The `result` of a migration operation (and of each VM in a drain's result).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MigrationResult {
    /// Source host.
    pub from: String,
    /// Destination host (absent when none was picked).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<nova_vmm_api::MigrationMode>,
    /// Live, warm or cold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<nova_vmm_api::MigrationKind>,
    /// The pause the VMM measured, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<f64>,
    /// Bytes sent so far (all of them once done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds: Option<u64>,
    /// Why this VM did not move (in a drain's result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The peer cluster it moved to (a cross-cluster migration; `to` is its host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// `GET /v1/vms/{id}/console`: the last lines of the VM's console, from its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsoleLines {
    pub lines: Vec<String>,
    /// Size of the whole console log on the host.
    pub bytes: u64,
}

/// A live migration the rebalancer proposes (`GET /v1/rebalance`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Move {
    pub vm: String,
    pub from: String,
    pub to: String,
}

/// Longest a join token lives, s (7 days); the default is an hour.
pub const MAX_JOIN_TOKEN_TTL_S: u64 = 7 * 86_400;

/// `POST /v1/join-tokens` (system admins): a single-use token one new host joins with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewJoinToken {
    /// Seconds until it expires (1 to 604800) [default: 3600].
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// A join token, its secret shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedJoinToken {
    pub id: String,
    pub token: String,
    pub expires_at_ms: u64,
}

/// `DELETE /v1/hosts/{id}`: the host forgotten, its credentials revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ForgottenHost {
    pub forgotten: String,
    /// How many of its tokens were revoked.
    pub tokens_revoked: u64,
}

/// `POST /v1/images/import` (system admins): every ready host imports this host path
/// into its image cache (each host confines it to its `--image-root`s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportImage {
    pub path: String,
}

/// An image of the hosts' content-addressed caches, and the hosts that hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterImage {
    /// `sha256:<hex>`: what a VM spec's `kernel`, `initrd` or `disks[].image` names.
    pub id: String,
    pub size_bytes: u64,
    pub hosts: Vec<String>,
}

/// `GET /v1/images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterImages {
    pub images: Vec<ClusterImage>,
}
