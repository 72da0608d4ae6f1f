//! Template routes: add a version, list, show (`name` or `name@version`), set the
//! default version, instantiate. A tenant sees its own templates and the system's.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::error::ApiJson;
use super::{must_operate, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::model::{
    DefaultVersion, ErrorBody, Instantiate, NewTemplate, Template, Vm, SYSTEM_TENANT,
};

/// The routes.
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post, put};
    axum::Router::new()
        .route("/v1/templates", get(list).post(create))
        .route("/v1/templates/{reference}", get(show))
        .route("/v1/templates/{reference}/default", put(set_default))
        .route("/v1/templates/{reference}/instantiate", post(instantiate))
}

/// `POST /v1/templates`: a new template, or the next version of one.
#[utoipa::path(post, path = "/v1/templates", tag = "templates", request_body = NewTemplate,
    responses((status = 201, body = Template),
        (status = 400, description = "a bad field (named), e.g. `parameters[0].name`", body = ErrorBody),
        (status = 403, description = "a system template from a caller who is not a system admin", body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiJson(body): ApiJson<NewTemplate>,
) -> ApiResult<(StatusCode, Json<Template>)> {
    must_operate(&c)?;
    let tenant = if body.system {
        if !(c.is_cluster() && c.is_admin()) {
            return Err(
                ApiError::forbidden("only system admins make system templates")
                    .with_field("system"),
            );
        }
        SYSTEM_TENANT.to_string()
    } else {
        c.tenant.clone()
    };
    if let crate::model::TemplateSource::Image(spec) = &body.source {
        let refs = std::iter::once(&spec.kernel)
            .chain(spec.initrd.iter())
            .chain(spec.disks.iter().filter_map(|d| d.image.as_ref()));
        if !(c.is_cluster() && c.is_admin()) && refs.into_iter().any(|r| !r.starts_with("sha256:"))
        {
            return Err(ApiError::forbidden(
                "a host path, which only system admins may name; use an image from the cache (sha256:...)",
            )
            .with_field("source.image"));
        }
    }
    let t = crate::templates::create_version(&st.ctx, &tenant, body).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

/// `GET /v1/templates`: the caller's tenant's and the system's.
#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses((status = 200, body = Vec<Template>)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<Template>>> {
    Ok(Json(crate::templates::list(&st.ctx, |t| c.sees(t)).await?))
}

/// `GET /v1/templates/{reference}`: `name` (every version) or `name@version` (only it).
#[utoipa::path(get, path = "/v1/templates/{reference}", tag = "templates",
    params(("reference" = String, Path, description = "name or name@version")),
    responses((status = 200, body = Template), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn show(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(reference): Path<String>,
) -> ApiResult<Json<Template>> {
    let (name, v) = crate::templates::parse_ref(&reference)?;
    let mut t = crate::templates::find(&st.ctx, &c.tenant, name).await?;
    if let Some(v) = v {
        let one = crate::templates::version(&t, Some(v))?.clone();
        t.versions = vec![one];
    }
    Ok(Json(t))
}

/// `PUT /v1/templates/{name}/default`.
#[utoipa::path(put, path = "/v1/templates/{reference}/default", tag = "templates",
    params(("reference" = String, Path, description = "template name")), request_body = DefaultVersion,
    responses((status = 200, body = Template), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn set_default(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(reference): Path<String>,
    ApiJson(body): ApiJson<DefaultVersion>,
) -> ApiResult<Json<Template>> {
    must_operate(&c)?;
    let (name, _) = crate::templates::parse_ref(&reference)?;
    Ok(Json(
        crate::templates::set_default(&st.ctx, &c.tenant, name, body.version).await?,
    ))
}

/// `POST /v1/templates/{reference}/instantiate`: a VM from the template, cold or as a
/// clone of its golden snapshot. A bad parameter is refused naming it
/// (`parameters.<name>`).
#[utoipa::path(post, path = "/v1/templates/{reference}/instantiate", tag = "templates",
    params(("reference" = String, Path, description = "name or name@version")), request_body = Instantiate,
    responses((status = 201, body = Vm), (status = 400, description = "a bad parameter, named", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 502, body = ErrorBody)))]
pub async fn instantiate(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(reference): Path<String>,
    ApiJson(body): ApiJson<Instantiate>,
) -> ApiResult<(StatusCode, Json<Vm>)> {
    must_operate(&c)?;
    let vm = crate::templates::instantiate(&st.ctx, &c.tenant, &reference, body).await?;
    Ok((StatusCode::CREATED, Json(vm)))
}
