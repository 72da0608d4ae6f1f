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
