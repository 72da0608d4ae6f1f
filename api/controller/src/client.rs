//! The typed client of a controller's `/v1` API, its event stream included
//! ([`events`]: WebSocket).

use std::time::Duration;

use futures_util::stream::BoxStream;
use nova_http::{Client, ClientOptions, Error};

use crate::*;

mod backups;
mod events;
mod federation;
mod monitoring;
mod snapshots;

/// One controller: its URL, the caller's token, a pooled connection.
#[derive(Clone, Debug)]
pub struct ControllerClient {
    http: Client,
    /// Kept for the event stream, which is a WebSocket, not a call of `http`.
    token: Option<String>,
    opts: ClientOptions,
}

impl ControllerClient {
    /// A client of the controller at `url` presenting `token` (none for `/v1/health`).
    pub fn new(url: &str, token: Option<&str>, opts: &ClientOptions) -> Result<Self, Error> {
        Ok(ControllerClient {
            http: Client::new(url, token, opts)?,
            token: token.map(str::to_owned),
            opts: opts.clone(),
        })
    }

    /// The same controller with another token (sharing the connection pool).
    pub fn with_token(&self, token: &str) -> Result<Self, Error> {
        Ok(ControllerClient {
            http: self.http.to(self.http.base(), Some(token))?,
            token: Some(token.to_owned()),
            opts: self.opts.clone(),
        })
    }

    /// `GET /v1/events[?since=]` (WebSocket): the events after revision `since` (the
    /// stored ones first), then every new one; only new ones when `since` is None.
    /// Returns once the controller has accepted the subscription: a change made after
    /// this returns is in the stream. Ends when the connection does.
    pub async fn events(
        &self,
        since: Option<u64>,
    ) -> Result<BoxStream<'static, Result<Event, Error>>, Error> {
        events::open(self.events_target(), since).await
    }

    /// [`ControllerClient::events`] that reopens a dropped connection after the last
    /// revision it delivered (a controller restart loses and repeats nothing), and
    /// ends with the error once reopening has failed for `give_up_after`.
    pub async fn follow_events(
        &self,
        since: Option<u64>,
        give_up_after: Duration,
    ) -> Result<BoxStream<'static, Result<Event, Error>>, Error> {
        let first = self.events(since).await?;
        let me = self.clone();
        let reopen = move |after: Option<u64>| {
            let me = me.clone();
            async move { me.events(after).await }
        };
        Ok(events::follow(
            format!("{}/v1/events", self.url()),
            first,
            since,
            give_up_after,
            reopen,
        ))
    }

    fn events_target(&self) -> events::Target<'_> {
        events::Target {
            base: self.http.base(),
            token: self.token.as_deref(),
            opts: &self.opts,
        }
    }

    /// The controller's URL.
    pub fn url(&self) -> &str {
        self.http.base()
    }

    /// The untyped client underneath, for routes this client does not name yet.
    pub fn http(&self) -> &Client {
        &self.http
    }

    pub async fn health(&self) -> Result<Health, Error> {
        self.http.get("/v1/health").await
    }
    pub async fn leader(&self) -> Result<Leader, Error> {
        self.http.get("/v1/leader").await
    }
    pub async fn whoami(&self) -> Result<Whoami, Error> {
        self.http.get("/v1/whoami").await
    }

    /// One page of `GET /v1/hosts`.
    pub async fn hosts_page(&self, q: &ListQuery) -> Result<Page<Host>, Error> {
        self.page("/v1/hosts", q).await
    }
    /// Every item of `GET /v1/hosts`, page after page.
    pub async fn hosts(&self) -> Result<Vec<Host>, Error> {
        self.all("/v1/hosts").await
    }
    pub async fn host(&self, id: &str) -> Result<Host, Error> {
        self.http.get(&format!("/v1/hosts/{id}")).await
    }
    pub async fn cordon(&self, id: &str) -> Result<Host, Error> {
        self.http.post(&format!("/v1/hosts/{id}/cordon"), &()).await
    }
    pub async fn uncordon(&self, id: &str) -> Result<Host, Error> {
        self.http
            .post(&format!("/v1/hosts/{id}/uncordon"), &())
            .await
    }
    /// Starts evacuating a host; answers the operation to follow.
    pub async fn drain(&self, id: &str) -> Result<Operation, Error> {
        self.http.post(&format!("/v1/hosts/{id}/drain"), &()).await
    }
    /// `GET /v1/system-images`: the host image versions, newest first.
    pub async fn system_images(&self) -> Result<SystemImages, Error> {
        self.http.get("/v1/system-images").await
    }
    /// `POST /v1/hosts/{id}/upgrade`: install a host image version on a host.
    pub async fn upgrade_host(
        &self,
        id: &str,
        req: &HostUpgradeRequest,
    ) -> Result<HostUpgrade, Error> {
        self.http
            .post(&format!("/v1/hosts/{id}/upgrade"), req)
            .await
    }

    /// `POST /v1/hosts/{id}/power`: power a host on the host image off or reboot it.
    pub async fn power_host(&self, id: &str, req: &SystemPower) -> Result<SystemPower, Error> {
        self.http.post(&format!("/v1/hosts/{id}/power"), req).await
    }

    pub async fn migration_policy(&self) -> Result<MigrationPolicy, Error> {
        self.http.get("/v1/migration-policy").await
    }
    pub async fn set_migration_policy(
        &self,
        p: &MigrationPolicy,
    ) -> Result<MigrationPolicy, Error> {
        self.http.put("/v1/migration-policy", p).await
    }

    /// `PATCH /v1/migration-policy`: changes only the fields `patch` names.
    pub async fn patch_migration_policy(
        &self,
        patch: &MigrationPolicyPatch,
    ) -> Result<MigrationPolicy, Error> {
        self.patch_migration_policy_if(patch, None).await
    }
    /// `PATCH /v1/migration-policy` applied only if the policy is still at `revision`
    /// (412 otherwise).
    pub async fn patch_migration_policy_if(
        &self,
        patch: &MigrationPolicyPatch,
        revision: Option<u64>,
    ) -> Result<MigrationPolicy, Error> {
        let h = if_match(revision);
        self.http
            .call_with(
                nova_http::Method::PATCH,
                "/v1/migration-policy",
                Some(patch),
                &headers(&h),
            )
            .await
    }
    /// `GET /v1/cloud/burst-policy`.
    pub async fn burst_policy(&self) -> Result<BurstPolicy, Error> {
        self.http.get("/v1/cloud/burst-policy").await
    }
    /// `PUT /v1/cloud/burst-policy`.
    pub async fn set_burst_policy(&self, p: &BurstPolicy) -> Result<BurstPolicy, Error> {
        self.http.put("/v1/cloud/burst-policy", p).await
    }
    /// `GET /v1/cloud/burst-hosts`: the burst hosts launched, with their cost.
    pub async fn burst_hosts(&self) -> Result<BurstHosts, Error> {
        self.http.get("/v1/cloud/burst-hosts").await
    }
    /// Live migrations the rebalancer proposes now.
    pub async fn rebalance(&self) -> Result<Vec<Move>, Error> {
        self.http.get("/v1/rebalance").await
    }

    /// One page of `GET /v1/vms` (`?tenant=` through [`ControllerClient::page`]).
    pub async fn vms_page(&self, q: &ListQuery) -> Result<Page<Vm>, Error> {
        self.page("/v1/vms", q).await
    }
    /// Every item of `GET /v1/vms`, page after page.
    pub async fn vms(&self) -> Result<Vec<Vm>, Error> {
        self.all("/v1/vms").await
    }
    pub async fn vm(&self, id: &str) -> Result<Vm, Error> {
        self.http.get(&format!("/v1/vms/{id}")).await
    }
    /// `POST /v1/vms`; with `idempotency_key`, a retry answers the VM the first call made.
    pub async fn create_vm(
        &self,
        spec: &VmSpec,
        idempotency_key: Option<&str>,
    ) -> Result<Vm, Error> {
        self.create_vm_in(None, spec, idempotency_key).await
    }
    /// [`ControllerClient::create_vm`] in `tenant` (`?tenant=`: system tenant callers
    /// acting for another tenant); the caller's own tenant when None.
    pub async fn create_vm_in(
        &self,
        tenant: Option<&str>,
        spec: &VmSpec,
        idempotency_key: Option<&str>,
    ) -> Result<Vm, Error> {
        let headers: Vec<(&str, &str)> = idempotency_key
            .map(|k| (IDEMPOTENCY_KEY, k))
            .into_iter()
            .collect();
        let path = match tenant {
            Some(t) => format!("/v1/vms?tenant={}", percent_encode(t)),
            None => "/v1/vms".to_string(),
        };
        self.http
            .call_with(nova_http::Method::POST, &path, Some(spec), &headers)
            .await
    }
    pub async fn start_vm(&self, id: &str) -> Result<Vm, Error> {
        self.start_vm_if(id, None).await
    }
    /// Starts the VM only if it is still at `revision` (412 otherwise).
    pub async fn start_vm_if(&self, id: &str, revision: Option<u64>) -> Result<Vm, Error> {
        let h = if_match(revision);
        self.http
            .call_with(
                nova_http::Method::POST,
                &format!("/v1/vms/{id}/start"),
                None::<&()>,
                &headers(&h),
            )
            .await
    }
    pub async fn stop_vm(&self, id: &str) -> Result<Vm, Error> {
        self.stop_vm_if(id, false, None).await
    }
    /// Stops the VM (`force`: kill its VMM at once), only if it is still at
    /// `revision` when one is given (412 otherwise).
    pub async fn stop_vm_if(
        &self,
        id: &str,
        force: bool,
        revision: Option<u64>,
    ) -> Result<Vm, Error> {
        let h = if_match(revision);
        let q = if force { "?force=true" } else { "" };
        self.http
            .call_with(
                nova_http::Method::POST,
                &format!("/v1/vms/{id}/stop{q}"),
                None::<&()>,
                &headers(&h),
            )
            .await
    }
    pub async fn delete_vm(&self, id: &str) -> Result<Vm, Error> {
        self.delete_vm_if(id, None).await
    }
    /// Deletes the VM only if it is still at `revision` (412 otherwise).
    pub async fn delete_vm_if(&self, id: &str, revision: Option<u64>) -> Result<Vm, Error> {
        let h = if_match(revision);
        self.http
            .call_with(
                nova_http::Method::DELETE,
                &format!("/v1/vms/{id}"),
                None::<&()>,
                &headers(&h),
            )
            .await
    }
    /// Starts a live migration under the cluster's policy; answers the operation.
    pub async fn migrate_vm(&self, id: &str, body: &MigrateBody) -> Result<Operation, Error> {
        self.http.post(&format!("/v1/vms/{id}/migrate"), body).await
    }
    /// The last `lines` lines of the VM's console, from its host.
    pub async fn console(&self, id: &str, lines: u32) -> Result<ConsoleLines, Error> {
        self.http
            .get(&format!("/v1/vms/{id}/console?lines={lines}"))
            .await
    }
    /// `GET /v1/vms/{id}/console/ws`: the VM's serial console, live, through the
    /// controller (binary messages both ways; a viewer's input is dropped).
    pub async fn console_ws(&self, id: &str) -> Result<nova_http::websocket::WebSocket, Error> {
        self.http
            .websocket(&format!("/v1/vms/{id}/console/ws"))
            .await
    }

    /// One page of `GET /v1/vms/{id}/events`: the VM's stored events, oldest first.
    pub async fn vm_events_page(&self, id: &str, q: &ListQuery) -> Result<Page<Event>, Error> {
        self.page(&format!("/v1/vms/{id}/events"), q).await
    }

    /// Every stored event of the VM `id`, oldest first.
    pub async fn vm_events(&self, id: &str) -> Result<Vec<Event>, Error> {
        self.all(&format!("/v1/vms/{id}/events")).await
    }

    /// One page of `GET /v1/operations`.
    pub async fn operations_page(&self, q: &ListQuery) -> Result<Page<Operation>, Error> {
        self.page("/v1/operations", q).await
    }
    /// Every item of `GET /v1/operations`, page after page.
    pub async fn operations(&self) -> Result<Vec<Operation>, Error> {
        self.all("/v1/operations").await
    }
    pub async fn operation(&self, id: &str) -> Result<Operation, Error> {
        self.http.get(&format!("/v1/operations/{id}")).await
    }
    pub async fn cancel_operation(&self, id: &str) -> Result<Operation, Error> {
        self.http
            .post(&format!("/v1/operations/{id}/cancel"), &())
            .await
    }

    /// One page of `GET /v1/tenants`.
    pub async fn tenants_page(&self, q: &ListQuery) -> Result<Page<Tenant>, Error> {
        self.page("/v1/tenants", q).await
    }
    /// Every item of `GET /v1/tenants`, page after page.
    pub async fn tenants(&self) -> Result<Vec<Tenant>, Error> {
        self.all("/v1/tenants").await
    }
    pub async fn create_tenant(&self, t: &NewTenant) -> Result<Tenant, Error> {
        self.create_tenant_with_key(t, None).await
    }
    /// `POST /v1/tenants`; with `idempotency_key`, a retry answers the first call's tenant.
    pub async fn create_tenant_with_key(
        &self,
        t: &NewTenant,
        idempotency_key: Option<&str>,
    ) -> Result<Tenant, Error> {
        let h: Vec<(&str, &str)> = idempotency_key
            .map(|k| (IDEMPOTENCY_KEY, k))
            .into_iter()
            .collect();
        self.http
            .call_with(nova_http::Method::POST, "/v1/tenants", Some(t), &h)
            .await
    }
    /// One page of `GET /v1/users`.
    pub async fn users_page(&self, q: &ListQuery) -> Result<Page<User>, Error> {
        self.page("/v1/users", q).await
    }
    /// Every item of `GET /v1/users`, page after page.
    pub async fn users(&self) -> Result<Vec<User>, Error> {
        self.all("/v1/users").await
    }
    pub async fn create_user(&self, u: &NewUser) -> Result<User, Error> {
        self.http.post("/v1/users", u).await
    }
    /// One page of `GET /v1/tokens`.
    pub async fn tokens_page(&self, q: &ListQuery) -> Result<Page<Token>, Error> {
        self.page("/v1/tokens", q).await
    }
    /// Every item of `GET /v1/tokens`, page after page.
    pub async fn tokens(&self) -> Result<Vec<Token>, Error> {
        self.all("/v1/tokens").await
    }
    pub async fn create_token(&self, t: &NewToken) -> Result<CreatedToken, Error> {
        self.http.post("/v1/tokens", t).await
    }
    pub async fn revoke_token(&self, id: &str) -> Result<RevokedToken, Error> {
        self.http.delete(&format!("/v1/tokens/{id}")).await
    }
    /// `POST /v1/images`: uploads the file at `file` to every ready host's cache.
    pub async fn upload_image(&self, file: &std::path::Path) -> Result<ClusterImage, Error> {
        self.http
            .upload_with(nova_http::Method::POST, "/v1/images", file)
            .await
    }
    /// `POST /v1/images/import` (system admins): every ready host imports a host path.
    pub async fn import_image(&self, path: &str) -> Result<ClusterImage, Error> {
        self.http
            .post("/v1/images/import", &ImportImage { path: path.into() })
            .await
    }
    /// `GET /v1/images`: the images of every ready host's cache.
    pub async fn images(&self) -> Result<ClusterImages, Error> {
        self.http.get("/v1/images").await
    }
    /// `POST /v1/join-tokens`: a single-use, expiring token for one new host.
    pub async fn create_join_token(&self, t: &NewJoinToken) -> Result<CreatedJoinToken, Error> {
        self.http.post("/v1/join-tokens", t).await
    }
    /// `DELETE /v1/hosts/{id}`: forgets a host and revokes its credentials.
    pub async fn forget_host(&self, id: &str) -> Result<ForgottenHost, Error> {
        self.http.delete(&format!("/v1/hosts/{id}")).await
    }
    /// One page of `GET /v1/audit`, oldest first.
    pub async fn audit_page(&self, q: &ListQuery) -> Result<Page<AuditEntry>, Error> {
        self.page("/v1/audit", q).await
    }
    /// The whole audit log the caller may see, oldest first.
    pub async fn audit(&self) -> Result<Vec<AuditEntry>, Error> {
        self.all("/v1/audit").await
    }

    /// `GET /metrics`: Prometheus (OpenMetrics) text; needs a system-tenant token.
    pub async fn metrics(&self) -> Result<String, Error> {
        let (status, bytes) = self.http.get_raw("/metrics").await?;
        if status != 200 {
            return Err(Error::Status {
                method: nova_http::Method::GET,
                url: format!("{}/metrics", self.url()),
                status,
                body: ErrorBody::from_answer(&bytes),
            });
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The OpenAPI document of this controller's API.
    pub async fn openapi(&self) -> Result<serde_json::Value, Error> {
        self.http.get("/v1/openapi.json").await
    }

    /// One page of the list at `path` (which may carry its own `?tenant=`).
    pub async fn page<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        q: &ListQuery,
    ) -> Result<Page<T>, Error> {
        let query = q.to_query();
        let path = match (path.contains('?'), query.is_empty()) {
            (_, true) => path.to_string(),
            (false, false) => format!("{path}{query}"),
            (true, false) => format!("{path}&{}", &query[1..]),
        };
        self.http.get(&path).await
    }

    /// Every item of the list at `path`, following `continue` tokens.
    pub async fn all<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, Error> {
        let mut q = ListQuery::default();
        let mut items = Vec::new();
        loop {
            let page: Page<T> = self.page(path, &q).await?;
            items.extend(page.items);
            match page.continue_token {
                Some(c) => q.continue_token = Some(c),
                None => return Ok(items),
            }
        }
    }
}

/// The `If-Match` value naming `revision`.
fn if_match(revision: Option<u64>) -> Option<String> {
    revision.map(|r| format!("\"{r}\""))
}

fn headers(if_match: &Option<String>) -> Vec<(&str, &str)> {
    if_match
        .as_deref()
        .map(|v| (IF_MATCH, v))
        .into_iter()
        .collect()
}
