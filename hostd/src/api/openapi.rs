//! The OpenAPI document (`GET /v1/openapi.json`): the route table below plus JSON
//! schemas generated from the types in [`super::types`]. A test sends a request to
//! every route in the table, so the table cannot list a route the router lacks; the
//! router is built from the same paths (see `super::router`).

use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

use super::types::*;

/// One route of the API.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Request body schema (type name), if any.
    pub request: Option<&'static str>,
    /// Success status and response schema (None: no body or not JSON).
    pub response: (u16, Option<&'static str>),
    pub auth: bool,
}

macro_rules! route {
    ($m:literal $p:literal, $s:literal, $req:expr, $st:literal $resp:expr) => {
        Route {
            method: $m,
            path: $p,
            summary: $s,
            request: $req,
            response: ($st, $resp),
            auth: true,
        }
    };
}

/// Every route hostd serves.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/v1/health",
        summary: "Liveness (no token needed)",
        request: None,
        response: (200, Some("Health")),
        auth: false,
    },
    route!("GET" "/v1/openapi.json", "This document", None, 200 None),
    route!("GET" "/v1/host", "Host facts, capacity and what is allocated", None, 200 Some("HostInfo")),
    route!("GET" "/v1/vms", "Every VM on this host", None, 200 Some("VmList")),
    route!("POST" "/v1/vms", "Create (and by default start) a VM; 409 when it does not fit", Some("VmSpec"), 201 Some("VmInfo")),
    route!("GET" "/v1/vms/{id}", "One VM with its VMM's counters", None, 200 Some("VmInfo")),
    route!("DELETE" "/v1/vms/{id}", "Stop the VM and remove its disks, taps and directory", None, 204 None),
    route!("POST" "/v1/vms/{id}/start", "Start a created, stopped or crashed VM", None, 200 Some("VmInfo")),
    route!("POST" "/v1/vms/{id}/stop", "Stop the VM (?force=true: SIGKILL at once)", None, 200 Some("VmInfo")),
    route!("POST" "/v1/vms/{id}/pause", "Pause every vCPU", None, 200 Some("VmInfo")),
    route!("POST" "/v1/vms/{id}/resume", "Resume", None, 200 Some("VmInfo")),
    route!("GET" "/v1/vms/{id}/console", "The last ?lines=N (default 100) console lines", None, 200 Some("ConsoleLog")),
    route!("POST" "/v1/vms/{id}/snapshot", "Snapshot into DATA/vms/<id>/snapshots/<name>", Some("SnapshotRequest"), 201 Some("SnapshotInfo")),
    route!("POST" "/v1/vms/{id}/restore", "Start a stopped VM from one of its snapshots", Some("RestoreRequest"), 200 Some("VmInfo")),
    route!("POST" "/v1/vms/{id}/migrate", "Live-migrate the VM to another hostd", Some("MigrateRequest"), 202 Some("MigrationStatus")),
    route!("GET" "/v1/vms/{id}/migration", "The VM's current or last migration", None, 200 Some("MigrationStatus")),
    route!("DELETE" "/v1/vms/{id}/migration", "Cancel the VM's outgoing migration", None, 202 None),
    route!("GET" "/v1/migrations", "Migrations under way and finished", None, 200 None),
    route!("POST" "/v1/migrations/incoming", "(hostd to hostd) prepare to receive a VM", Some("IncomingRequest"), 201 Some("IncomingReady")),
    route!("POST" "/v1/migrations/incoming/{mid}/complete", "(hostd to hostd) the source saw the switch", Some("IncomingOutcome"), 204 None),
    route!("POST" "/v1/migrations/incoming/{mid}/abort", "(hostd to hostd) the migration failed; clean up", Some("IncomingOutcome"), 204 None),
    route!("GET" "/v1/images", "The image cache", None, 200 Some("ImageList")),
    route!("POST" "/v1/images", "Import a host file into the cache", Some("ImageImportRequest"), 201 Some("ImageInfo")),
    route!("PUT" "/v1/images", "Upload an image (raw body)", None, 201 Some("ImageInfo")),
    route!("GET" "/v1/images/{image}", "One image (sha256:<hex>)", None, 200 Some("ImageInfo")),
    route!("GET" "/v1/network", "The bridge and VXLAN overlay", None, 200 Some("NetworkInfo")),
    route!("POST" "/v1/network/peers", "Add a VXLAN peer host", Some("PeerRequest"), 200 Some("NetworkInfo")),
    route!("GET" "/metrics", "Prometheus text: host and per-VM metrics", None, 200 None),
];

fn schemas() -> Map<String, Value> {
    let mut g = SchemaGenerator::new(SchemaSettings::openapi3());
    macro_rules! add {
        ($($t:ty),*) => { $( let _ = g.subschema_for::<$t>(); )* };
    }
    add!(
        Health,
        HostInfo,
        VmList,
        VmSpec,
        VmInfo,
        ConsoleLog,
        SnapshotRequest,
        SnapshotInfo,
        RestoreRequest,
        MigrateRequest,
        MigrationStatus,
        IncomingRequest,
        IncomingReady,
        IncomingOutcome,
        ImageList,
        ImageImportRequest,
        ImageInfo,
        NetworkInfo,
        PeerRequest,
        ErrorBody,
        RegisterRequest,
        RegisterResponse,
        Heartbeat
    );
    g.take_definitions(true)
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut op = json!({
            "summary": r.summary,
            "responses": {
                "default": {"description": "error", "content": {"application/json": {"schema": schema_ref("ErrorBody")}}}
            }
        });
        let ok = match r.response.1 {
            Some(s) => {
                json!({"description": "ok", "content": {"application/json": {"schema": schema_ref(s)}}})
            }
            None => json!({"description": "ok"}),
        };
        op["responses"][r.response.0.to_string()] = ok;
        if let Some(req) = r.request {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema_ref(req)}}});
        }
        if !r.auth {
            op["security"] = json!([]);
        }
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "nova-hostd",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The per-host daemon's API: VMs, images, network, migration. Every call needs `Authorization: Bearer <host token>` except /v1/health."
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"bearer": []}]
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_referenced_schema_is_defined() {
        let doc = super::document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            assert!(
                schemas.contains_key(&name),
                "{name} is referenced but not defined"
            );
        }
        assert!(schemas["VmSpec"].to_string().contains("mem_mib"));
    }
}
