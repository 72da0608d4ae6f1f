//! VM routes: create from a spec, list, get, start, stop, delete, migrate, console,
//! the VM's events.
//! They change the desired state (the reconcile loop makes hosts follow); another
//! tenant's VMs answer 404, never 403.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};

use super::error::{answer, parse_optional_json, ApiJson, ApiQuery, IfMatch};
use super::{must_operate, page, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::federation::Presenter;
use crate::model::{
    ConsoleLines, ConsoleQuery, DesiredState, ErrorBody, Event, ListQuery, MigrateBody, Operation,
    Page, StopQuery, Tenant, TenantListQuery, TenantQuery, Vm, VmSpec, MAX_PAGE,
};
use crate::store::Objects;

/// Reads a VM the caller may see; others' VMs are "not found", never "forbidden".
async fn visible(st: &AppState, c: &Caller, id: &str) -> ApiResult<Vm> {
    match st.ctx.store.read::<Vm>(id).await? {
        Some(v) if c.sees(&v.tenant) => Ok(v),
        _ => Err(ApiError::not_found("vm")),
    }
}

/// The tenant a call acts for: `?tenant=` (system tenant callers only) or the caller's.
async fn acting_for(st: &AppState, c: &Caller, tenant: Option<String>) -> ApiResult<String> {
    match tenant {
        Some(t) if c.is_cluster() => {
            st.ctx
                .store
                .read::<Tenant>(&t)
                .await?
                .ok_or_else(|| nova_http::FieldError::new("tenant", "no such tenant"))?;
            Ok(t)
        }
        Some(_) => Err(
            ApiError::forbidden("only the system tenant acts for other tenants")
                .with_field("tenant"),
        ),
        None => Ok(c.tenant.clone()),
    }
}

/// A host path (anything but a `sha256:` image) names a file on the hosts: only
/// system admins may, and hostd confines even theirs to its `--image-root`s.
fn host_paths_for_admins(c: &Caller, spec: &VmSpec) -> ApiResult<()> {
    if c.is_cluster() && c.is_admin() {
        return Ok(());
    }
    let mut refs = vec![("kernel".to_string(), Some(&spec.kernel))];
    refs.push(("initrd".into(), spec.initrd.as_ref()));
    for (i, d) in spec.disks.iter().enumerate() {
        refs.push((format!("disks[{i}].image"), d.image.as_ref()));
        refs.push((format!("disks[{i}].shared_path"), d.shared_path.as_ref()));
    }
    for (field, r) in refs {
        if let Some(r) = r.filter(|r| !r.starts_with("sha256:")) {
            return Err(ApiError::forbidden(&format!(
                "{field}: {r:?} is a host path, which only system admins may name; \
                 use an image from the cache (sha256:...)"
            ))
            .with_field(&field));
        }
    }
    Ok(())
}

/// `POST /v1/vms`: stores the VM as desired; the scheduler places it.
#[utoipa::path(post, path = "/v1/vms", tag = "vms", request_body = VmSpec,
    params(TenantQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "a retry with this key answers the VM the first call made")),
    responses((status = 201, body = Vm),
        (status = 400, description = "a bad field", body = ErrorBody),
        (status = 403, description = "a host path from a caller who is not a system admin (the field named)", body = ErrorBody),
        (status = 409, description = "the name is taken in the tenant (field `name`), or the quota is full", body = ErrorBody),
        (status = 422, description = "the Idempotency-Key was used for another request", body = ErrorBody)))]
pub async fn create_vm(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(spec): ApiJson<VmSpec>,
) -> ApiResult<Response> {
    must_operate(&c)?;
    host_paths_for_admins(&c, &spec)?;
    let tenant = acting_for(&st, &c, q.tenant).await?;
    let vm = crate::vms::create(&st.ctx, &tenant, spec).await?;
    Ok(answer(StatusCode::CREATED, Some(vm.revision), vm))
}

/// `GET /v1/vms`: the caller's tenant's VMs (every tenant's, or `?tenant=`'s, for the
/// system tenant), a page at a time.
#[utoipa::path(get, path = "/v1/vms", tag = "vms", params(TenantListQuery),
    responses((status = 200, body = Page<Vm>), (status = 400, description = "a bad parameter", body = ErrorBody)))]
pub async fn list_vms(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiQuery(q): ApiQuery<TenantListQuery>,
) -> ApiResult<Json<Page<Vm>>> {
    let only = q.tenant.clone();
    let p = page::<Vm>(&st, &q.page(), move |v| {
        c.sees(&v.tenant) && only.as_ref().is_none_or(|t| *t == v.tenant)
    })
    .await?;
    Ok(Json(p))
}

/// `GET /v1/vms/{id}`.
#[utoipa::path(get, path = "/v1/vms/{id}", tag = "vms",
    params(("id" = String, Path, description = "VM id")),
    responses((status = 200, body = Vm), (status = 404, description = "no such VM in your tenant", body = ErrorBody)))]
pub async fn get_vm(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let v = visible(&st, &c, &id).await?;
    Ok(answer(StatusCode::OK, Some(v.revision), v))
}

async fn set_desired(
    st: &AppState,
    c: &Caller,
    id: &str,
    d: DesiredState,
    rev: Option<u64>,
) -> ApiResult<Vm> {
    must_operate(c)?;
    visible(st, c, id).await?;
    Ok(crate::vms::set_desired(&st.ctx, id, d, rev).await?)
}

/// `POST /v1/vms/{id}/start`.
#[utoipa::path(post, path = "/v1/vms/{id}/start", tag = "vms",
    params(("id" = String, Path, description = "VM id"),
        ("If-Match" = Option<String>, Header, description = "the VM's revision")),
    responses((status = 200, body = Vm), (status = 404, description = "no such VM in your tenant", body = ErrorBody),
        (status = 409, description = "the VM is being deleted", body = ErrorBody),
        (status = 412, description = "the VM changed since that revision", body = ErrorBody)))]
pub async fn start_vm(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    IfMatch(rev): IfMatch,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let v = set_desired(&st, &c, &id, DesiredState::Running, rev).await?;
    Ok(answer(StatusCode::OK, Some(v.revision), v))
}

/// `POST /v1/vms/{id}/stop[?force=true]`: `force` kills the VMM at once instead of
/// asking the guest to power off.
#[utoipa::path(post, path = "/v1/vms/{id}/stop", tag = "vms",
    params(("id" = String, Path, description = "VM id"), StopQuery,
        ("If-Match" = Option<String>, Header, description = "the VM's revision")),
    responses((status = 200, body = Vm), (status = 404, description = "no such VM in your tenant", body = ErrorBody),
        (status = 409, description = "the VM is being deleted", body = ErrorBody),
        (status = 412, description = "the VM changed since that revision", body = ErrorBody)))]
pub async fn stop_vm(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    IfMatch(rev): IfMatch,
    ApiQuery(q): ApiQuery<StopQuery>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let v = if q.force {
        must_operate(&c)?;
        visible(&st, &c, &id).await?;
        crate::vms::force_stop(&st.ctx, &id, rev).await?
    } else {
        set_desired(&st, &c, &id, DesiredState::Stopped, rev).await?
    };
    Ok(answer(StatusCode::OK, Some(v.revision), v))
}

/// `DELETE /v1/vms/{id}`: the record goes once its host has let it go.
#[utoipa::path(delete, path = "/v1/vms/{id}", tag = "vms",
    params(("id" = String, Path, description = "VM id"),
        ("If-Match" = Option<String>, Header, description = "the VM's revision")),
    responses((status = 202, body = Vm), (status = 404, description = "no such VM in your tenant", body = ErrorBody),
        (status = 412, description = "the VM changed since that revision", body = ErrorBody)))]
pub async fn delete_vm(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    IfMatch(rev): IfMatch,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let v = set_desired(&st, &c, &id, DesiredState::Deleted, rev).await?;
    Ok(answer(StatusCode::ACCEPTED, Some(v.revision), v))
}

/// `POST /v1/vms/{id}/migrate`: migrates (live, warm or cold: the body's `kind`, or
/// the policy's) under the cluster's migration policy, to another host or (with
/// `cluster`) to a peer cluster; answers the operation to follow.
#[utoipa::path(post, path = "/v1/vms/{id}/migrate", tag = "vms", request_body = MigrateBody,
    params(("id" = String, Path, description = "VM id"),
        ("Idempotency-Key" = Option<String>, Header, description = "a retry with this key answers the first call's operation")),
    responses((status = 202, body = Operation), (status = 404, description = "no such VM in your tenant", body = ErrorBody),
        (status = 409, description = "the VM is not running, or already migrating", body = ErrorBody)))]
pub async fn migrate_vm(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    p: Option<Extension<Presenter>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    must_operate(&c)?;
    let vm = visible(&st, &c, &id).await?;
    let body: MigrateBody = parse_optional_json(&body)?;
    if body.to.is_some() && !c.is_cluster() {
        return Err(
            ApiError::forbidden("only the system tenant chooses destination hosts")
                .with_field("to"),
        );
    }
    let op = match &body.cluster {
        // Federation does not chain: only this cluster's own callers move VMs out.
        Some(cluster) => {
            if !matches!(p, None | Some(Extension(Presenter::Local(_)))) {
                return Err(ApiError::forbidden(
                    "a peer's token cannot move VMs to another cluster",
                ));
            }
            crate::federation::migration::start(
                &st.ctx,
                &st.federation,
                &c,
                &vm,
                cluster,
                body.to,
                body.kind,
            )
            .await?
        }
        None => crate::migration::start_one(&st.ctx, &vm, body.to, body.kind).await?,
    };
    Ok(answer(StatusCode::ACCEPTED, Some(op.revision), op))
}

/// `GET /v1/vms/{id}/events?limit=&continue=`: the VM's stored events (and those of
/// operations on it), oldest first.
#[utoipa::path(get, path = "/v1/vms/{id}/events", tag = "vms",
    params(("id" = String, Path, description = "VM id"), ListQuery),
    responses((status = 200, body = Page<Event>), (status = 400, description = "a bad parameter", body = ErrorBody),
        (status = 404, description = "no such VM in your tenant", body = ErrorBody)))]
pub async fn vm_events(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
    Path(id): Path<String>,
) -> ApiResult<Json<Page<Event>>> {
    let limit = q.limit.unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(nova_http::FieldError::new("limit", format!("must be 1 to {MAX_PAGE}")).into());
    }
    let after = match &q.continue_token {
        None => 0,
        Some(t) => t.parse::<u64>().map_err(|_| {
            nova_http::FieldError::new("continue", "not a continue token of this list")
        })?,
    };
    let vm = visible(&st, &c, &id).await?;
    let (items, next) = st
        .ctx
        .events
        .of_object(&vm.id, after, limit as usize)
        .await?;
    Ok(Json(Page {
        items,
        continue_token: next.map(|r| r.to_string()),
    }))
}

/// `GET /v1/vms/{id}/console?lines=N`: the last lines of the VM's console, from its host.
#[utoipa::path(get, path = "/v1/vms/{id}/console", tag = "vms",
    params(("id" = String, Path, description = "VM id"), ConsoleQuery),
    responses((status = 200, body = ConsoleLines), (status = 404, description = "no such VM in your tenant", body = ErrorBody),
        (status = 409, description = "the VM is not placed yet", body = ErrorBody),
        (status = 502, description = "its host did not answer", body = ErrorBody)))]
pub async fn console(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiQuery(q): ApiQuery<ConsoleQuery>,
    Path(id): Path<String>,
) -> ApiResult<Json<ConsoleLines>> {
    let lines = q.lines.unwrap_or(100);
    if !(1..=10_000).contains(&lines) {
        return Err(nova_http::FieldError::new("lines", "must be 1 to 10000").into());
    }
    let vm = visible(&st, &c, &id).await?;
    Ok(Json(crate::vms::console(&st.ctx, &vm, lines).await?))
}
