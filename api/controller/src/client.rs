//! The typed client of a controller's `/v1` API.

use nova_http::{Client, ClientOptions, Error};

use crate::*;

/// One controller: its URL, the caller's token, a pooled connection.
#[derive(Clone, Debug)]
pub struct ControllerClient {
    http: Client,
}

impl ControllerClient {
    /// A client of the controller at `url` presenting `token` (none for `/v1/health`).
    pub fn new(url: &str, token: Option<&str>, opts: &ClientOptions) -> Result<Self, Error> {
        Ok(ControllerClient {
            http: Client::new(url, token, opts)?,
        })
    }

    /// The same controller with another token (sharing the connection pool).
    pub fn with_token(&self, token: &str) -> Result<Self, Error> {
        Ok(ControllerClient {
            http: self.http.to(self.http.base(), Some(token))?,
        })
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

    pub async fn hosts(&self) -> Result<Vec<Host>, Error> {
        self.http.get("/v1/hosts").await
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

    pub async fn migration_policy(&self) -> Result<MigrationPolicy, Error> {
        self.http.get("/v1/migration-policy").await
    }
    pub async fn set_migration_policy(
        &self,
        p: &MigrationPolicy,
    ) -> Result<MigrationPolicy, Error> {
        self.http.put("/v1/migration-policy", p).await
    }

    pub async fn vms(&self) -> Result<Vec<Vm>, Error> {
        self.http.get("/v1/vms").await
    }
    pub async fn vm(&self, id: &str) -> Result<Vm, Error> {
        self.http.get(&format!("/v1/vms/{id}")).await
    }
    pub async fn create_vm(&self, spec: &VmSpec) -> Result<Vm, Error> {
        self.http.post("/v1/vms", spec).await
    }
    pub async fn start_vm(&self, id: &str) -> Result<Vm, Error> {
        self.http.post(&format!("/v1/vms/{id}/start"), &()).await
    }
    pub async fn stop_vm(&self, id: &str) -> Result<Vm, Error> {
        self.http.post(&format!("/v1/vms/{id}/stop"), &()).await
    }
    pub async fn delete_vm(&self, id: &str) -> Result<Vm, Error> {
        self.http.delete(&format!("/v1/vms/{id}")).await
    }
    /// Starts a live migration under the cluster's policy; answers the operation.
    pub async fn migrate_vm(&self, id: &str, body: &MigrateBody) -> Result<Operation, Error> {
        self.http.post(&format!("/v1/vms/{id}/migrate"), body).await
    }

    pub async fn operations(&self) -> Result<Vec<Operation>, Error> {
        self.http.get("/v1/operations").await
    }
    pub async fn operation(&self, id: &str) -> Result<Operation, Error> {
        self.http.get(&format!("/v1/operations/{id}")).await
    }
    pub async fn cancel_operation(&self, id: &str) -> Result<Operation, Error> {
        self.http
            .post(&format!("/v1/operations/{id}/cancel"), &())
            .await
    }

    pub async fn tenants(&self) -> Result<Vec<Tenant>, Error> {
        self.http.get("/v1/tenants").await
    }
    pub async fn create_tenant(&self, t: &NewTenant) -> Result<Tenant, Error> {
        self.http.post("/v1/tenants", t).await
    }
    pub async fn users(&self) -> Result<Vec<User>, Error> {
        self.http.get("/v1/users").await
    }
    pub async fn create_user(&self, u: &NewUser) -> Result<User, Error> {
        self.http.post("/v1/users", u).await
    }
    pub async fn tokens(&self) -> Result<Vec<Token>, Error> {
        self.http.get("/v1/tokens").await
    }
    pub async fn create_token(&self, t: &NewToken) -> Result<CreatedToken, Error> {
        self.http.post("/v1/tokens", t).await
    }
    pub async fn revoke_token(&self, id: &str) -> Result<RevokedToken, Error> {
        self.http.delete(&format!("/v1/tokens/{id}")).await
    }
    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        self.http.get(&format!("/v1/audit?limit={limit}")).await
    }
}
