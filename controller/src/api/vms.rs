//! VM routes: create from a spec, list, get, start, stop, delete, migrate. They only
//! change the desired state; the reconcile loop makes hosts follow.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use super::{
    created, must_operate, validate_label, ApiError, ApiJson, ApiResult, AppState, FieldError,
};
use crate::auth::Caller;
use crate::model::{now_ms, DesiredState, Operation, Tenant, Vm, VmSpec};
use crate::store::Objects;

/// `?tenant=` for cluster callers acting for a tenant.
#[derive(Deserialize)]
pub struct TenantParam {
    tenant: Option<String>,
}

/// Checks a spec, naming the field.
pub fn validate_spec(s: &VmSpec) -> Result<(), FieldError> {
    crate::model::spec_to_hostd(s, "x")
        .validate()
        .map_err(|mut e| {
            if e.field == "kernel" {
                e.field = "image".into();
            }
            e
        })?;
    if s.labels.len() > 32 {
        return Err(FieldError::new("labels", "more than 32 labels"));
    }
    for (k, v) in &s.labels {
        validate_label(&format!("labels.{k}"), k)?;
        validate_label(&format!("labels.{k}"), v)?;
    }
    for (k, v) in &s.affinity.host_labels {
        validate_label(&format!("affinity.host_labels.{k}"), k)?;
        validate_label(&format!("affinity.host_labels.{k}"), v)?;
    }
    for (name, terms) in [
        ("with", &s.affinity.with),
        ("apart_from", &s.affinity.apart_from),
    ] {
        if terms.len() > 16 {
            return Err(FieldError::new(
                format!("affinity.{name}"),
                "more than 16 terms",
            ));
        }
        for (i, t) in terms.iter().enumerate() {
            let field = format!("affinity.{name}[{i}]");
            let (k, v) = t
                .split_once('=')
                .ok_or_else(|| FieldError::new(&field, "must be key=value"))?;
            validate_label(&field, k)?;
            validate_label(&field, v)?;
        }
    }
    Ok(())
}

/// Reads a VM the caller may see; others' VMs are "not found", never "forbidden".
async fn visible(st: &AppState, c: &Caller, id: &str) -> ApiResult<Vm> {
    match st.store.read::<Vm>(id).await? {
        Some(v) if c.sees(&v.tenant) => Ok(v),
        _ => Err(ApiError::not_found("vm")),
    }
}

/// `POST /v1/vms`: stores the VM as desired; the scheduler places it.
#[utoipa::path(post, path = "/v1/vms", request_body = VmSpec, responses((status = 201, body = Vm), (status = 400, description = "bad field")))]
pub async fn create(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Query(q): Query<TenantParam>,
    ApiJson(spec): ApiJson<VmSpec>,
) -> ApiResult<Response> {
    must_operate(&c)?;
    validate_spec(&spec)?;
    let tenant = match q.tenant {
        Some(t) if c.is_cluster() => {
            st.store
                .read::<Tenant>(&t)
                .await?
                .ok_or_else(|| FieldError::new("tenant", "no such tenant"))?;
            t
        }
        Some(_) => {
            return Err(ApiError::forbidden(
                "only the system tenant acts for other tenants",
            ))
        }
        None => c.tenant.clone(),
    };
    // Quota is checked here for a clear answer, and again by the scheduler.
    if let Some(q) = st
        .store
        .read::<Tenant>(&tenant)
        .await?
        .and_then(|t| t.quota)
    {
        let mine: Vec<Vm> = st
            .store
            .list_all::<Vm>()
            .await?
            .into_iter()
            .filter(|v| v.tenant == tenant && v.desired != DesiredState::Deleted)
            .collect();
        let used = mine
            .iter()
            .fold(crate::model::Resources::default(), |a, v| {
                a.plus(v.spec.resources())
            });
        let r = spec.resources();
        if mine.len() as u64 + 1 > q.vms
            || used.vcpus + r.vcpus > q.vcpus
            || used.mem_mib + r.mem_mib > q.mem_mib
        {
            return Err(ApiError::conflict(format!(
                "tenant quota exceeded: {} VMs, {} vCPUs, {} MiB in use of {} VMs, {} vCPUs, {} MiB",
                mine.len(),
                used.vcpus,
                used.mem_mib,
                q.vms,
                q.vcpus,
                q.mem_mib
            )));
        }
    }
    let id = format!("vm-{}", hex::encode(rand::random::<[u8; 6]>()));
    let desired = if spec.start {
        DesiredState::Running
    } else {
        DesiredState::Stopped
    };
    let vm = Vm {
        id: id.clone(),
        tenant: tenant.clone(),
        spec,
        desired,
        host: None,
        observed: None,
        migrating: None,
        created_at_ms: now_ms(),
        revision: 0,
    };
    let rev = st.store.create(&vm).await?;
    st.events.publish(
        "vm.created",
        &tenant,
        &id,
        serde_json::json!({"name": vm.spec.name}),
    );
    Ok(created(Vm {
        revision: rev,
        ..vm
    }))
}

/// `GET /v1/vms`: the caller's tenant's VMs (every VM for the system tenant).
#[utoipa::path(get, path = "/v1/vms", responses((status = 200, body = [Vm])))]
pub async fn list(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<Vm>>> {
    Ok(Json(
        st.store
            .list_all::<Vm>()
            .await?
            .into_iter()
            .filter(|v| c.sees(&v.tenant))
            .collect(),
    ))
}

/// `GET /v1/vms/{id}`.
#[utoipa::path(get, path = "/v1/vms/{id}", responses((status = 200, body = Vm), (status = 404, description = "no such VM in your tenant")))]
pub async fn get_vm(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vm>> {
    Ok(Json(visible(&st, &c, &id).await?))
}

async fn set_desired(st: &AppState, c: &Caller, id: &str, d: DesiredState) -> ApiResult<Vm> {
    must_operate(c)?;
    let v = visible(st, c, id).await?;
    if v.desired == DesiredState::Deleted {
        return Err(ApiError::conflict("the VM is being deleted"));
    }
    let v = st
        .store
        .update::<Vm, _>(id, |v| {
            let change = v.desired != d && v.desired != DesiredState::Deleted;
            v.desired = d;
            change
        })
        .await?;
    let kind = match d {
        DesiredState::Running => "vm.start_requested",
        DesiredState::Stopped => "vm.stop_requested",
        DesiredState::Deleted => "vm.delete_requested",
    };
    st.events
        .publish(kind, &v.tenant, id, serde_json::json!({"desired": d}));
    Ok(v)
}

/// `POST /v1/vms/{id}/start`.
#[utoipa::path(post, path = "/v1/vms/{id}/start", responses((status = 200, body = Vm)))]
pub async fn start(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vm>> {
    Ok(Json(
        set_desired(&st, &c, &id, DesiredState::Running).await?,
    ))
}

/// `POST /v1/vms/{id}/stop`.
#[utoipa::path(post, path = "/v1/vms/{id}/stop", responses((status = 200, body = Vm)))]
pub async fn stop(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vm>> {
    Ok(Json(
        set_desired(&st, &c, &id, DesiredState::Stopped).await?,
    ))
}

/// `DELETE /v1/vms/{id}`: the record goes once its host has let it go.
#[utoipa::path(delete, path = "/v1/vms/{id}", responses((status = 202, body = Vm)))]
pub async fn delete(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    must_operate(&c)?;
    visible(&st, &c, &id).await?;
    let v = st
        .store
        .update::<Vm, _>(&id, |v| {
            v.desired = DesiredState::Deleted;
            true
        })
        .await?;
    st.events
        .publish("vm.delete_requested", &v.tenant, &id, serde_json::json!({}));
    Ok((StatusCode::ACCEPTED, Json(v)).into_response())
}

/// `POST /v1/vms/{id}/migrate` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateBody {
    /// Destination host; the scheduler picks one when absent.
    #[serde(default)]
    pub to: Option<String>,
}

/// `POST /v1/vms/{id}/migrate`: live-migrates under the cluster's migration policy;
/// answers the operation to follow.
#[utoipa::path(post, path = "/v1/vms/{id}/migrate", request_body = MigrateBody, responses((status = 202, body = Operation)))]
pub async fn migrate(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    must_operate(&c)?;
    let vm = visible(&st, &c, &id).await?;
    let body: MigrateBody = if body.iter().all(u8::is_ascii_whitespace) {
        MigrateBody::default()
    } else {
        super::parse_json(&body)?
    };
    let to = body.to;
    if to.is_some() && !c.is_cluster() {
        return Err(
            ApiError::forbidden("only the system tenant chooses destination hosts")
                .with_field("to"),
        );
    }
    let op = crate::migration::start_one(&st, &vm, to).await?;
    Ok((StatusCode::ACCEPTED, Json(op)).into_response())
}

impl ApiError {
    /// Names the field an error is about.
    pub fn with_field(mut self, f: &str) -> Self {
        self.field = Some(f.into());
        self
    }
}
