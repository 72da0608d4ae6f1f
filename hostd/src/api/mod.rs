//! hostd's HTTP API (axum): one small handler per route ([`vms`], [`migrations`],
//! [`host`]), each a call into the part of the daemon that owns the state; the
//! token check ([`auth`]); errors as the contract's `ErrorBody` ([`error`]); one
//! access log line per request. The router and the OpenAPI document come from the
//! same `#[utoipa::path]` annotations (utoipa-axum), so the document cannot list a
//! route the router lacks, nor the reverse.

pub mod auth;
pub mod backups;
pub mod error;
pub mod host;
pub mod migrations;
pub mod snapshots;
pub mod system;
pub mod vms;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use nova_hostd_api::ErrorBody;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::host::Host;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "nova-hostd",
        description = "The per-host daemon's API: VMs, images, network, migration. Every call \
            needs `Authorization: Bearer <host token>` except /v1/health; every error answers \
            with an ErrorBody."
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
    components(schemas(ErrorBody)),
    tags(
        (name = "vms", description = "VMs and their lifecycle"),
        (name = "migrations", description = "Live migration between hosts"),
        (name = "snapshots", description = "The host's snapshot store"),
        (name = "images", description = "The content-addressed image cache"),
        (name = "network", description = "Bridge and VXLAN overlay"),
        (name = "host", description = "The host itself"),
        (name = "backups", description = "Backup jobs on backup stores")
    )
)]
struct ApiDoc;

/// The bearer security scheme every route but health uses.
struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes and their document.
fn routes(host: &Arc<Host>) -> (Router<Arc<Host>>, utoipa::openapi::OpenApi) {
    let authed = OpenApiRouter::new()
        .routes(routes!(host::openapi))
        .routes(routes!(host::host_info))
        .routes(routes!(vms::list_vms, vms::create_vm))
        .routes(routes!(vms::get_vm, vms::delete_vm))
        .routes(routes!(vms::start_vm))
        .routes(routes!(vms::stop_vm))
        .routes(routes!(vms::pause_vm))
        .routes(routes!(vms::resume_vm))
        .routes(routes!(vms::console))
        .routes(routes!(vms::console_ws))
        .routes(routes!(vms::snapshot))
        .routes(routes!(vms::restore))
        .routes(routes!(snapshots::take, snapshots::list))
        .routes(routes!(snapshots::get, snapshots::delete))
        .routes(routes!(snapshots::file))
        .routes(routes!(snapshots::fetch))
        .routes(routes!(migrations::migrate))
        .routes(routes!(
            migrations::migration_status,
            migrations::cancel_migration
        ))
        .routes(routes!(migrations::list_migrations))
        .routes(routes!(migrations::incoming))
        .routes(routes!(migrations::incoming_complete))
        .routes(routes!(migrations::incoming_abort))
        .routes(routes!(
            host::list_images,
            host::import_image,
            host::upload_image
        ))
        .routes(routes!(host::get_image))
        .routes(routes!(host::network))
        .routes(routes!(host::add_peer))
        .routes(routes!(host::metrics))
        .routes(routes!(system::system))
        .routes(routes!(system::stage))
        .routes(routes!(system::upgrade))
        .routes(routes!(system::power))
        .routes(routes!(backups::start_job))
        .routes(routes!(backups::get_job))
        .route_layer(middleware::from_fn_with_state(
            host.clone(),
            auth::require_token,
        ));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(host::health))
        .merge(authed)
        .split_for_parts()
}

async fn no_route(req: Request) -> Response {
    let body = ErrorBody::new(format!("no route {} {}", req.method(), req.uri().path()));
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// One access log line per request: method, path, status, time, who.
async fn access_log(req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    let who = resp.extensions().get::<auth::Caller>().map_or("-", |c| c.0);
    nova_logging::access(
        method.as_str(),
        &path,
        resp.status().as_u16(),
        t0.elapsed(),
        who,
    );
    resp
}

fn error_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    utoipa::openapi::RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// The answers every authenticated operation can give besides its own: 401 (no or
/// a wrong token) and 400 (a bad path parameter or body), so a client (and a
/// conformance checker) finds every status hostd answers in the document.
fn document_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        if path == "/v1/health" {
            continue;
        }
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let rs = &mut op.responses.responses;
            rs.entry("401".into())
                .or_insert_with(|| error_response("no token, or not this host's"));
            rs.entry("400".into())
                .or_insert_with(|| error_response("a bad parameter or body (the field named)"));
        }
    }
}

/// The whole API.
pub fn router(host: Arc<Host>) -> Router {
    let (router, mut doc) = routes(&host);
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    document_common_errors(&mut doc);
    router
        .fallback(no_route)
        .layer(Extension(Arc::new(doc)))
        .layer(middleware::from_fn(access_log))
        .with_state(host)
}
