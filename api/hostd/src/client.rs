//! The typed client of one hostd: every route of its API.

use std::path::Path;

use nova_http::{Client, ClientOptions, Error};

use crate::*;

/// One hostd: its URL, the token it expects, a pooled connection.
#[derive(Clone, Debug)]
pub struct HostdClient {
    http: Client,
}

impl HostdClient {
    /// A client of the hostd at `url` (`http(s)://host:port`) presenting `token`.
    pub fn new(url: &str, token: &str, opts: &ClientOptions) -> Result<Self, Error> {
        Ok(HostdClient {
            http: Client::new(url, Some(token), opts)?,
        })
    }

    /// A client of another hostd sharing this one's connection pool and options.
    pub fn to(&self, url: &str, token: &str) -> Result<Self, Error> {
        Ok(HostdClient {
            http: self.http.to(url, Some(token))?,
        })
    }

    /// A client of another hostd over an existing `nova_http::Client`'s pool.
    pub fn with(http: &Client, url: &str, token: &str) -> Result<Self, Error> {
        Ok(HostdClient {
            http: http.to(url, Some(token))?,
        })
    }

    /// The hostd's URL.
    pub fn url(&self) -> &str {
        self.http.base()
    }

    /// `GET /v1/health` (no token needed).
    pub async fn health(&self) -> Result<Health, Error> {
        self.http.get("/v1/health").await
    }
    /// `POST /v1/backup-jobs`: starts a backup job; follow it with [`Self::backup_job`].
    pub async fn start_backup_job(&self, req: &JobRequest) -> Result<BackupJob, Error> {
        self.http.post("/v1/backup-jobs", req).await
    }
    /// `GET /v1/backup-jobs/{id}`.
    pub async fn backup_job(&self, id: &str) -> Result<BackupJob, Error> {
        self.http.get(&format!("/v1/backup-jobs/{id}")).await
    }
    /// `GET /v1/host`.
    pub async fn host(&self) -> Result<HostInfo, Error> {
        self.http.get("/v1/host").await
    }
    /// `GET /v1/vms`.
    pub async fn vms(&self) -> Result<VmList, Error> {
        self.http.get("/v1/vms").await
    }
    /// `POST /v1/vms`.
    pub async fn create(&self, spec: &VmSpec) -> Result<VmInfo, Error> {
        self.http.post("/v1/vms", spec).await
    }
    /// `GET /v1/vms/{id}`.
    pub async fn vm(&self, id: &str) -> Result<VmInfo, Error> {
        self.http.get(&format!("/v1/vms/{id}")).await
    }
    /// `DELETE /v1/vms/{id}`: stop it and remove its disks, taps and directory.
    pub async fn delete(&self, id: &str) -> Result<(), Error> {
        self.http.delete(&format!("/v1/vms/{id}")).await
    }
    /// `POST /v1/vms/{id}/start`.
    pub async fn start(&self, id: &str) -> Result<VmInfo, Error> {
        self.http.post(&format!("/v1/vms/{id}/start"), &()).await
    }
    /// `POST /v1/vms/{id}/stop[?force=true]`.
    pub async fn stop(&self, id: &str, force: bool) -> Result<VmInfo, Error> {
        let q = if force { "?force=true" } else { "" };
        self.http.post(&format!("/v1/vms/{id}/stop{q}"), &()).await
    }
    /// `POST /v1/vms/{id}/stop` with a body: force, or how long the guest has to
    /// power off after its ACPI power button is pressed.
    pub async fn stop_with(&self, id: &str, req: &StopVmRequest) -> Result<VmInfo, Error> {
        self.http.post(&format!("/v1/vms/{id}/stop"), req).await
    }
    /// `GET /v1/vms/{id}/console/ws`: the VM's serial console, live (binary messages
    /// both ways: the guest's output from its backlog on, and input to the guest).
    pub async fn console_ws(&self, id: &str) -> Result<nova_http::websocket::WebSocket, Error> {
        self.http
            .websocket(&format!("/v1/vms/{id}/console/ws"))
            .await
    }
    /// `POST /v1/vms/{id}/pause`.
    pub async fn pause(&self, id: &str) -> Result<VmInfo, Error> {
        self.http.post(&format!("/v1/vms/{id}/pause"), &()).await
    }
    /// `POST /v1/vms/{id}/resume`.
    pub async fn resume(&self, id: &str) -> Result<VmInfo, Error> {
        self.http.post(&format!("/v1/vms/{id}/resume"), &()).await
    }
    /// `GET /v1/vms/{id}/console?lines=N`.
    pub async fn console(&self, id: &str, lines: usize) -> Result<ConsoleLog, Error> {
        self.http
            .get(&format!("/v1/vms/{id}/console?lines={lines}"))
            .await
    }
    /// `POST /v1/vms/{id}/snapshot`.
    pub async fn snapshot(&self, id: &str, req: &SnapshotRequest) -> Result<SnapshotInfo, Error> {
        self.http.post(&format!("/v1/vms/{id}/snapshot"), req).await
    }
    /// `POST /v1/vms/{id}/restore`.
    pub async fn restore(&self, id: &str, req: &RestoreRequest) -> Result<VmInfo, Error> {
        self.http.post(&format!("/v1/vms/{id}/restore"), req).await
    }
    /// `POST /v1/snapshots`: a crash-consistent snapshot into the host's store.
    pub async fn take_snapshot(&self, req: &TakeSnapshot) -> Result<StoredSnapshot, Error> {
        self.http.post("/v1/snapshots", req).await
    }
    /// `GET /v1/snapshots`.
    pub async fn stored_snapshots(&self) -> Result<StoredSnapshotList, Error> {
        self.http.get("/v1/snapshots").await
    }
    /// `GET /v1/snapshots/{id}`.
    pub async fn stored_snapshot(&self, id: &str) -> Result<StoredSnapshot, Error> {
        self.http.get(&format!("/v1/snapshots/{id}")).await
    }
    /// `DELETE /v1/snapshots/{id}`.
    pub async fn delete_stored_snapshot(&self, id: &str) -> Result<(), Error> {
        self.http.delete(&format!("/v1/snapshots/{id}")).await
    }
    /// `POST /v1/snapshots/{id}/fetch`: pull it from another hostd.
    pub async fn fetch_snapshot(
        &self,
        id: &str,
        req: &FetchSnapshot,
    ) -> Result<StoredSnapshot, Error> {
        self.http
            .post(&format!("/v1/snapshots/{id}/fetch"), req)
            .await
    }
    /// `GET /v1/snapshots/{id}/files/{file}`: one file of a stored snapshot, streamed
    /// chunk by chunk into `sink`; its length.
    pub async fn snapshot_file(
        &self,
        id: &str,
        file: &str,
        sink: impl FnMut(&[u8]) -> Result<(), String> + Send,
    ) -> Result<u64, Error> {
        self.http
            .get_streamed(&format!("/v1/snapshots/{id}/files/{file}"), sink)
            .await
    }
    /// `POST /v1/vms/{id}/migrate`: starts a live migration out of this host.
    pub async fn migrate(&self, id: &str, req: &MigrateRequest) -> Result<MigrationStatus, Error> {
        self.http.post(&format!("/v1/vms/{id}/migrate"), req).await
    }
    /// `GET /v1/vms/{id}/migration`: the VM's last migration here.
    pub async fn migration(&self, id: &str) -> Result<MigrationStatus, Error> {
        self.http.get(&format!("/v1/vms/{id}/migration")).await
    }
    /// `DELETE /v1/vms/{id}/migration`: cancel it (the VM stays here).
    pub async fn cancel_migration(&self, id: &str) -> Result<(), Error> {
        self.http.delete(&format!("/v1/vms/{id}/migration")).await
    }
    /// `GET /v1/migrations`.
    pub async fn migrations(&self) -> Result<MigrationList, Error> {
        self.http.get("/v1/migrations").await
    }
    /// `POST /v1/migrations/incoming` (hostd to hostd): get ready to receive a VM.
    pub async fn incoming(&self, req: &IncomingRequest) -> Result<IncomingReady, Error> {
        self.http.post("/v1/migrations/incoming", req).await
    }
    /// `POST /v1/migrations/incoming/{mid}/complete`.
    pub async fn incoming_complete(&self, mid: &str, o: &IncomingOutcome) -> Result<(), Error> {
        self.http
            .post(&format!("/v1/migrations/incoming/{mid}/complete"), o)
            .await
    }
    /// `POST /v1/migrations/incoming/{mid}/abort`.
    pub async fn incoming_abort(&self, mid: &str, o: &IncomingOutcome) -> Result<(), Error> {
        self.http
            .post(&format!("/v1/migrations/incoming/{mid}/abort"), o)
            .await
    }
    /// `GET /v1/images`.
    pub async fn images(&self) -> Result<ImageList, Error> {
        self.http.get("/v1/images").await
    }
    /// `GET /v1/images/{sha256:hex}`.
    pub async fn image(&self, id: &str) -> Result<ImageInfo, Error> {
        self.http.get(&format!("/v1/images/{id}")).await
    }
    /// `POST /v1/images`: import a file already on the host.
    pub async fn import_image(&self, req: &ImageImportRequest) -> Result<ImageInfo, Error> {
        self.http.post("/v1/images", req).await
    }
    /// `PUT /v1/images`: upload the file at `file` into the host's image cache.
    pub async fn upload_image(&self, file: &Path) -> Result<ImageInfo, Error> {
        self.http.upload("/v1/images", file).await
    }
    /// `GET /v1/system`: the host image this hostd runs on.
    pub async fn system(&self) -> Result<SystemInfo, Error> {
        self.http.get("/v1/system").await
    }
    /// `PUT /v1/system/staged/{file}` (`kernel` or `initrd`): stage the file at `path`.
    pub async fn stage_system_file(&self, file: &str, path: &Path) -> Result<StagedFile, Error> {
        self.http
            .upload(&format!("/v1/system/staged/{file}"), path)
            .await
    }
    /// `POST /v1/system/upgrade`: write the staged files to the other slot, boot it once.
    pub async fn upgrade_system(
        &self,
        req: &SystemUpgradeRequest,
    ) -> Result<SystemUpgradeStarted, Error> {
        // Hashing and writing the slot takes seconds to minutes (slow disks, TCG).
        self.http
            .post_slow(
                "/v1/system/upgrade",
                req,
                std::time::Duration::from_secs(600),
            )
            .await
    }
    /// `POST /v1/system/power`: power the machine off or reboot it, its VMs first.
    pub async fn power_system(&self, req: &SystemPower) -> Result<SystemPower, Error> {
        self.http.post("/v1/system/power", req).await
    }
    /// `GET /v1/network`.
    pub async fn network(&self) -> Result<NetworkInfo, Error> {
        self.http.get("/v1/network").await
    }
    /// `POST /v1/network/peers`.
    pub async fn add_peer(&self, req: &PeerRequest) -> Result<NetworkInfo, Error> {
        self.http.post("/v1/network/peers", req).await
    }
    /// `GET /metrics`: Prometheus text.
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
}
