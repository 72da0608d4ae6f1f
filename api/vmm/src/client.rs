//! The typed client of one VMM's API socket.

use std::path::Path;
use std::time::Duration;

use nova_http::{Client, Error};

use crate::{
    CheckpointReport, CheckpointRequest, MigrationRequest, MigrationStatus, SnapshotReport,
    SnapshotRequest, StopReport, StopRequest, VmInfo,
};

/// One VMM, reached on its API socket.
#[derive(Clone, Debug)]
pub struct VmmClient {
    http: Client,
}

impl VmmClient {
    /// A client of the VMM serving `sock`; every call ends within `timeout`.
    pub fn new(sock: &Path, timeout: Duration) -> Result<Self, Error> {
        Ok(VmmClient {
            http: Client::unix(sock, timeout)?,
        })
    }

    /// `GET /v1/vm`.
    pub async fn info(&self) -> Result<VmInfo, Error> {
        self.http.get("/v1/vm").await
    }
    /// `PUT /v1/vm/pause`.
    pub async fn pause(&self) -> Result<VmInfo, Error> {
        self.http.put("/v1/vm/pause", &()).await
    }
    /// `PUT /v1/vm/resume`.
    pub async fn resume(&self) -> Result<VmInfo, Error> {
        self.http.put("/v1/vm/resume", &()).await
    }
    /// `PUT /v1/vm/shutdown`: the VMM stops the VM and exits.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.http.put("/v1/vm/shutdown", &()).await
    }
    /// `PUT /v1/vm/stop`: presses the ACPI power button (the VMM stops the VM after
    /// `timeout_ms` if the guest has not powered off), or stops at once with `force`.
    pub async fn stop(&self, req: &StopRequest) -> Result<StopReport, Error> {
        self.http.put("/v1/vm/stop", req).await
    }
    /// `PUT /v1/snapshot`.
    pub async fn snapshot(&self, req: &SnapshotRequest) -> Result<SnapshotReport, Error> {
        self.http.put("/v1/snapshot", req).await
    }
    /// `PUT /v1/backup/checkpoint`: pause, take and reset the backup bitmaps, stage
    /// the blocks to back up, resume.
    pub async fn backup_checkpoint(
        &self,
        req: &CheckpointRequest,
    ) -> Result<CheckpointReport, Error> {
        self.http.put("/v1/backup/checkpoint", req).await
    }
    /// `PUT /v1/migration`: starts a migration; follow it with [`Self::migration`].
    pub async fn migrate(&self, req: &MigrationRequest) -> Result<MigrationStatus, Error> {
        self.http.put("/v1/migration", req).await
    }
    /// `GET /v1/migration`: progress, then the result.
    pub async fn migration(&self) -> Result<MigrationStatus, Error> {
        self.http.get("/v1/migration").await
    }
    /// `DELETE /v1/migration`: cancels a running migration (the VM stays here).
    pub async fn cancel_migration(&self) -> Result<MigrationStatus, Error> {
        self.http.delete("/v1/migration").await
    }
}
