//! Access routes: tenants (system admins), users and API tokens (admins of a tenant),
//! and the audit log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use nova_hostd_api::validate_id;
use nova_http::FieldError;

use super::error::{answer, ApiJson, ApiQuery};
use super::{must_be_cluster, page, ApiError, ApiResult, AppState};
use crate::auth::{self, Caller};
use crate::model::{
    now_ms, AuditEntry, CreatedToken, ErrorBody, ListQuery, NewTenant, NewToken, NewUser, Page,
    RevokedToken, Role, Tenant, Token, User,
};
use crate::store::{Objects, StoreError};

fn must_admin(c: &Caller) -> ApiResult<()> {
    if c.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden("only admins manage users and tokens"))
    }
}

fn taken(e: StoreError, what: &str) -> ApiError {
    match e {
        StoreError::Conflict(_) => {
            ApiError::new(StatusCode::CONFLICT, format!("{what} exists")).with_field("id")
        }
        e => e.into(),
    }
}

/// `POST /v1/tenants` (system admins).
#[utoipa::path(post, path = "/v1/tenants", tag = "access", request_body = NewTenant,
    params(("Idempotency-Key" = Option<String>, Header, description = "a retry with this key answers the first call's tenant")),
    responses((status = 201, body = Tenant), (status = 400, description = "a bad field", body = ErrorBody),
        (status = 409, description = "the tenant exists", body = ErrorBody)))]
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
    st.ctx
        .store
        .create(&tenant)
        .await
        .map_err(|e| taken(e, "tenant"))?;
    Ok(answer(StatusCode::CREATED, None, tenant))
}

/// `GET /v1/tenants`: every tenant for the system tenant, one's own otherwise.
#[utoipa::path(get, path = "/v1/tenants", tag = "access", params(ListQuery),
    responses((status = 200, body = Page<Tenant>), (status = 400, description = "a bad parameter", body = ErrorBody)))]
pub async fn list_tenants(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<Tenant>>> {
    Ok(Json(page::<Tenant>(&st, &q, move |t| c.sees(&t.id)).await?))
}

/// `POST /v1/users` (admins, in their tenant).
#[utoipa::path(post, path = "/v1/users", tag = "access", request_body = NewUser,
    params(("Idempotency-Key" = Option<String>, Header, description = "a retry with this key answers the first call's user")),
    responses((status = 201, body = User), (status = 400, description = "a bad field", body = ErrorBody),
        (status = 409, description = "the user exists", body = ErrorBody)))]
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
            st.ctx
                .store
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
    st.ctx
        .store
        .create(&user)
        .await
        .map_err(|e| taken(e, "user"))?;
    Ok(answer(StatusCode::CREATED, None, user))
}

/// `GET /v1/users`.
#[utoipa::path(get, path = "/v1/users", tag = "access", params(ListQuery),
    responses((status = 200, body = Page<User>), (status = 400, description = "a bad parameter", body = ErrorBody)))]
pub async fn list_users(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<User>>> {
    Ok(Json(
        page::<User>(&st, &q, move |u| c.sees(&u.tenant)).await?,
    ))
}

/// `POST /v1/tokens`: a new API token for a user; the secret is in the answer only
/// (so `Idempotency-Key` is refused here).
#[utoipa::path(post, path = "/v1/tokens", tag = "access", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 400, description = "a bad field", body = ErrorBody)))]
pub async fn create_token(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiJson(t): ApiJson<NewToken>,
) -> ApiResult<Response> {
    must_admin(&c)?;
    let user = match st.ctx.store.read::<User>(&t.user).await? {
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
    st.ctx.store.create(&token).await?;
    let mut info = token;
    info.hash.clear();
    Ok(answer(
        StatusCode::CREATED,
        None,
        CreatedToken {
            token: secret,
            info,
        },
    ))
}

/// `GET /v1/tokens`: tokens of the caller's tenant (hashes never shown).
#[utoipa::path(get, path = "/v1/tokens", tag = "access", params(ListQuery),
    responses((status = 200, body = Page<Token>), (status = 400, description = "a bad parameter", body = ErrorBody)))]
pub async fn list_tokens(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<Token>>> {
    must_admin(&c)?;
    let mut p = page::<Token>(&st, &q, move |t| c.sees(&t.tenant)).await?;
    for t in &mut p.items {
        t.hash.clear();
    }
    Ok(Json(p))
}

/// `DELETE /v1/tokens/{id}`: revokes a token by its public id.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "access",
    params(("id" = String, Path, description = "the token's public id")),
    responses((status = 200, body = RevokedToken), (status = 404, description = "no such token in your tenant", body = ErrorBody)))]
pub async fn delete_token(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<RevokedToken>> {
    must_admin(&c)?;
    let t = st
        .ctx
        .store
        .list_all::<Token>()
        .await?
        .into_iter()
        .find(|t| t.id == id && c.sees(&t.tenant))
        .ok_or_else(|| ApiError::not_found("token"))?;
    st.ctx.store.remove::<Token>(&t.hash).await?;
    // Its open event streams (on any controller) end on this event.
    st.ctx
        .events
        .publish("token.revoked", &t.tenant, &t.id, crate::events::no_data())
        .await;
    Ok(Json(RevokedToken { revoked: id }))
}

/// `GET /v1/audit`: the audit log of the caller's tenant (all for system admins),
/// oldest first.
#[utoipa::path(get, path = "/v1/audit", tag = "access", params(ListQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 400, description = "a bad parameter", body = ErrorBody)))]
pub async fn audit(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    must_admin(&c)?;
    Ok(Json(
        page::<AuditEntry>(&st, &q, move |e| c.sees(&e.tenant)).await?,
    ))
}
