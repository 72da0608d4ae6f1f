//! Access routes: tenants (system admins), users and API tokens (admins of a tenant),
//! and the audit log.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::{Extension, Json};
use nova_hostd::api::types::validate_id;
use serde::Deserialize;

use super::{created, must_be_cluster, ApiError, ApiJson, ApiResult, AppState, FieldError};
use crate::auth::{self, Caller};
use crate::model::{now_ms, AuditEntry, Quota, Role, Tenant, Token, User};
use crate::store::Objects;

fn must_admin(c: &Caller) -> ApiResult<()> {
    if c.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden("only admins manage users and tokens"))
    }
}

/// `POST /v1/tenants` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub id: String,
    #[serde(default)]
    pub quota: Option<Quota>,
}

/// `POST /v1/tenants` (system admins).
#[utoipa::path(post, path = "/v1/tenants", request_body = NewTenant, responses((status = 201, body = Tenant)))]
pub async fn create_tenant(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiJson(t): ApiJson<NewTenant>,
) -> ApiResult<Response> {
    must_be_cluster(&c, true)?;
    must_admin(&c)?;
    validate_id("id", &t.id)?;
    let tenant = Tenant {
        id: t.id,
        quota: t.quota,
        created_at_ms: now_ms(),
    };
    st.store
        .create(&tenant)
        .await
        .map_err(|_| ApiError::conflict("tenant exists").with_field("id"))?;
    Ok(created(tenant))
}

/// `GET /v1/tenants`: every tenant for the system tenant, one's own otherwise.
#[utoipa::path(get, path = "/v1/tenants", responses((status = 200, body = [Tenant])))]
pub async fn list_tenants(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<Tenant>>> {
    Ok(Json(
        st.store
            .list_all::<Tenant>()
            .await?
            .into_iter()
            .filter(|t| c.sees(&t.id))
            .collect(),
    ))
}

/// `POST /v1/users` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub id: String,
    pub role: Role,
    /// The tenant (system admins only; one's own otherwise).
    #[serde(default)]
    pub tenant: Option<String>,
}

/// `POST /v1/users` (admins, in their tenant).
#[utoipa::path(post, path = "/v1/users", request_body = NewUser, responses((status = 201, body = User)))]
pub async fn create_user(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiJson(u): ApiJson<NewUser>,
) -> ApiResult<Response> {
    must_admin(&c)?;
    validate_id("id", &u.id)?;
    if u.role == Role::Host {
        return Err(FieldError::new("role", "host credentials come from host registration").into());
    }
    let tenant = match u.tenant {
        Some(t) if t != c.tenant => {
            if !c.is_cluster() {
                return Err(ApiError::forbidden("users are created in your own tenant")
                    .with_field("tenant"));
            }
            st.store
                .read::<Tenant>(&t)
                .await?
                .ok_or_else(|| FieldError::new("tenant", "no such tenant"))?;
            t
        }
        _ => c.tenant.clone(),
    };
    // User ids are global (they name the actor in the audit log).
    let user = User {
        id: u.id,
        tenant,
        role: u.role,
        created_at_ms: now_ms(),
    };
    st.store
        .create(&user)
        .await
        .map_err(|_| ApiError::conflict("user exists").with_field("id"))?;
    Ok(created(user))
}

/// `GET /v1/users`.
#[utoipa::path(get, path = "/v1/users", responses((status = 200, body = [User])))]
pub async fn list_users(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(
        st.store
            .list_all::<User>()
            .await?
            .into_iter()
            .filter(|u| c.sees(&u.tenant))
            .collect(),
    ))
}

/// `POST /v1/tokens` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub user: String,
    /// At most the user's role; the user's role when absent.
    #[serde(default)]
    pub role: Option<Role>,
}

/// `POST /v1/tokens`: a new API token for a user; the secret is in the answer only.
#[utoipa::path(post, path = "/v1/tokens", request_body = NewToken, responses((status = 201, description = "{token, info}")))]
pub async fn create_token(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiJson(t): ApiJson<NewToken>,
) -> ApiResult<Response> {
    must_admin(&c)?;
    let user = match st.store.read::<User>(&t.user).await? {
        Some(u) if c.sees(&u.tenant) => u,
        _ => return Err(FieldError::new("user", "no such user in your tenant").into()),
    };
    let role = t.role.unwrap_or(user.role);
    if role > user.role || role == Role::Host {
        return Err(FieldError::new("role", "cannot exceed the user's role").into());
    }
    let secret = auth::new_secret();
    let hash = auth::hash(&secret);
    let token = Token {
        id: hash[..16].to_string(),
        hash,
        user: user.id,
        tenant: user.tenant,
        role,
        host: None,
        created_at_ms: now_ms(),
    };
    st.store.create(&token).await?;
    let mut info = token;
    info.hash.clear();
    Ok(created(serde_json::json!({"token": secret, "info": info})))
}

/// `GET /v1/tokens`: tokens of the caller's tenant (hashes never shown).
#[utoipa::path(get, path = "/v1/tokens", responses((status = 200, body = [Token])))]
pub async fn list_tokens(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<Token>>> {
    must_admin(&c)?;
    let mut v: Vec<Token> = st
        .store
        .list_all::<Token>()
        .await?
        .into_iter()
        .filter(|t| c.sees(&t.tenant))
        .collect();
    for t in &mut v {
        t.hash.clear();
    }
    Ok(Json(v))
}

/// `DELETE /v1/tokens/{id}`: revokes a token by its public id.
#[utoipa::path(delete, path = "/v1/tokens/{id}", responses((status = 200, description = "revoked")))]
pub async fn delete_token(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    must_admin(&c)?;
    let t = st
        .store
        .list_all::<Token>()
        .await?
        .into_iter()
        .find(|t| t.id == id && c.sees(&t.tenant))
        .ok_or_else(|| ApiError::not_found("token"))?;
    st.store.remove::<Token>(&t.hash).await?;
    Ok(Json(serde_json::json!({"revoked": id})))
}

/// `?limit=`.
#[derive(Deserialize)]
pub struct Limit {
    limit: Option<usize>,
}

/// `GET /v1/audit`: the audit log of the caller's tenant (all for system admins).
#[utoipa::path(get, path = "/v1/audit", responses((status = 200, body = [AuditEntry])))]
pub async fn audit(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Query(l): Query<Limit>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    must_admin(&c)?;
    let limit = l.limit.unwrap_or(1000).min(10_000);
    let log = st.store.audit_log(usize::MAX).await?;
    let mine: Vec<AuditEntry> = log.into_iter().filter(|e| c.sees(&e.tenant)).collect();
    let skip = mine.len().saturating_sub(limit);
    Ok(Json(mine.into_iter().skip(skip).collect()))
}
