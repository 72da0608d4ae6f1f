//! The `/v1` HTTP API: the router, the state every handler sees, the one
//! authentication point (see `middleware`), errors that name the bad field (`error`),
//! and the OpenAPI document (`openapi`). Handlers check who may do what and call the
//! domain (`vms`, `hosts`, `operations`, `migration`); the domain never calls back.

mod access;
mod alerting;
mod backups;
mod cloud;
mod console;
mod encoded;
mod error;
mod federation;
mod hosts;
mod images;
mod middleware;
mod monitoring;
mod openapi;
mod operations;
mod policy;
mod snapshots;
mod status;
mod stream;
mod templates;
mod ui;
mod upgrades;
mod vms;

use std::sync::Arc;

use axum::routing::{delete, get, post};
use axum::Router;

pub use error::{ApiError, ApiResult};
pub use openapi::ApiDoc;

use crate::auth::{Caller, FailedAuthLimiter};
use crate::context::Context;
use crate::model::{ListQuery, Page, MAX_PAGE};
use crate::store::{Object, Objects};

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    pub ctx: Context,
    /// SHA-256 of the join token hosts register with.
    pub join_hash: Arc<String>,
    /// When that (bootstrap) join token stops enrolling hosts, ms since the epoch.
    pub join_expires_at_ms: Option<u64>,
    pub limiter: Arc<FailedAuthLimiter>,
    /// Peers, their cached summaries, the pool they are called through.
    pub federation: Arc<crate::federation::Federation>,
    /// The VMs' API JSON per revision, for federated lists.
    pub vm_json: Arc<encoded::EncodedList<crate::model::Vm>>,
}

/// Requires a role that may change things in the caller's tenant.
fn must_operate(c: &Caller) -> ApiResult<()> {
    if c.can_operate() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "this token's role cannot change anything (viewer)",
        ))
    }
}

/// Requires the cluster's own tenant (hosts, tenants, policy, metrics).
fn must_be_cluster(c: &Caller, mutate: bool) -> ApiResult<()> {
    if !c.is_cluster() {
        return Err(ApiError::forbidden(
            "only the system tenant manages the cluster",
        ));
    }
    if mutate {
        must_operate(c)?;
    }
    Ok(())
}

/// One page of the objects `keep` accepts, after the query's `continue`.
async fn page<T: Object>(
    st: &AppState,
    q: &ListQuery,
    keep: impl Fn(&T) -> bool + Send + Sync,
) -> ApiResult<Page<T>> {
    let limit = q.limit.unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(nova_http::FieldError::new("limit", format!("must be 1 to {MAX_PAGE}")).into());
    }
    if let Some(c) = &q.continue_token {
        if c.is_empty() || c.len() > 512 || c.chars().any(char::is_control) {
            return Err(nova_http::FieldError::new(
                "continue",
                "not a continue token of this list",
            )
            .into());
        }
    }
    let (items, next) = st
        .ctx
        .store
        .page::<T, _>(q.continue_token.as_deref(), limit as usize, keep)
        .await?;
    Ok(Page {
        items,
        continue_token: next,
    })
}

async fn fallback() -> ApiError {
    ApiError::not_found("route")
}

/// The whole API router.
pub fn router(st: AppState) -> Router {
    use axum::middleware::from_fn_with_state as with;
    Router::new()
        .route("/v1/health", get(status::health))
        .route("/v1/leader", get(status::leader))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/whoami", get(status::whoami))
        .route("/metrics", get(status::metrics))
        .route("/v1/hosts/register", post(hosts::register))
        .route("/v1/hosts", get(hosts::list_hosts))
        .route(
            "/v1/hosts/{id}",
            get(hosts::get_host).delete(hosts::forget_host),
        )
        .route("/v1/join-tokens", post(hosts::create_join_token))
        .route(
            "/v1/images",
            get(images::list_images).post(images::upload_image),
        )
        .route("/v1/images/import", post(images::import_image))
        .route("/v1/hosts/{id}/heartbeat", post(hosts::heartbeat))
        .route("/v1/hosts/{id}/certificate", post(hosts::renew_certificate))
        .route("/v1/hosts/{id}/cordon", post(hosts::cordon))
        .route("/v1/hosts/{id}/uncordon", post(hosts::uncordon))
        .route("/v1/hosts/{id}/drain", post(hosts::drain))
        .route("/v1/hosts/{id}/upgrade", post(upgrades::upgrade_host))
        .route("/v1/hosts/{id}/power", post(upgrades::power_host))
        .route("/v1/system-images", get(upgrades::system_images))
        .route(
            "/v1/migration-policy",
            get(policy::get_policy)
                .put(policy::put_policy)
                .patch(policy::patch_policy),
        )
        .route("/v1/rebalance", get(policy::rebalance))
        .route("/v1/vms", get(vms::list_vms).post(vms::create_vm))
        .route("/v1/vms/{id}", get(vms::get_vm).delete(vms::delete_vm))
        .route("/v1/vms/{id}/start", post(vms::start_vm))
        .route("/v1/vms/{id}/stop", post(vms::stop_vm))
        .route("/v1/vms/{id}/migrate", post(vms::migrate_vm))
        .route("/v1/vms/{id}/console", get(vms::console))
        .route("/v1/vms/{id}/console/ws", get(console::console_ws))
        .route("/v1/vms/{id}/events", get(vms::vm_events))
        .route("/v1/operations", get(operations::list_operations))
        .route("/v1/operations/{id}", get(operations::get_operation))
        .route(
            "/v1/operations/{id}/cancel",
            post(operations::cancel_operation),
        )
        .route("/v1/events", get(stream::events))
        .route(
            "/v1/tenants",
            get(access::list_tenants).post(access::create_tenant),
        )
        .route(
            "/v1/users",
            get(access::list_users).post(access::create_user),
        )
        .route(
            "/v1/tokens",
            get(access::list_tokens).post(access::create_token),
        )
        .route("/v1/tokens/{id}", delete(access::delete_token))
        .route("/v1/audit", get(access::audit))
        .merge(monitoring::routes())
        .merge(alerting::routes())
        .merge(snapshots::routes())
        .merge(templates::routes())
        .merge(federation::routes())
        .merge(backups::routes())
        .merge(cloud::routes())
        .fallback(fallback)
        .layer(with(st.clone(), federation::scope))
        .layer(with(st.clone(), middleware::idempotent))
        .layer(with(st.clone(), middleware::authenticate))
        .layer(with(st.clone(), middleware::access))
        .layer(axum::extract::DefaultBodyLimit::max(middleware::MAX_BODY))
        .layer(axum::middleware::from_fn(ui::dashboard))
        .with_state(st)
}
