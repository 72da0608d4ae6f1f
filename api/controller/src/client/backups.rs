//! The client's backup calls: stores, backups of VMs, restore, verify, prune, GC and
//! schedules. Long ones answer an [`Operation`] to follow.

use nova_http::Error;

use super::ControllerClient;
use crate::*;

impl ControllerClient {
    /// `POST /v1/backup-stores` (system admins).
    pub async fn create_backup_store(&self, s: &BackupStore) -> Result<BackupStore, Error> {
        self.http().post("/v1/backup-stores", s).await
    }
    /// `GET /v1/backup-stores` (secrets redacted).
    pub async fn backup_stores(&self) -> Result<Vec<BackupStore>, Error> {
        self.http().get("/v1/backup-stores").await
    }
    /// `DELETE /v1/backup-stores/{name}`.
    pub async fn delete_backup_store(&self, name: &str) -> Result<BackupStore, Error> {
        self.http()
            .delete(&format!("/v1/backup-stores/{}", percent_encode(name)))
            .await
    }
    /// `POST /v1/vms/{id}/backups`: the operation; its result names the backup.
    pub async fn backup_vm(&self, vm: &str, b: &BackupBody) -> Result<Operation, Error> {
        self.http()
            .post(&format!("/v1/vms/{}/backups", percent_encode(vm)), b)
            .await
    }
    /// `GET /v1/backups[?vm=]`.
    pub async fn backups(&self, vm: Option<&str>) -> Result<Page<Backup>, Error> {
        let q = vm.map_or(String::new(), |v| format!("?vm={}", percent_encode(v)));
        self.http().get(&format!("/v1/backups{q}")).await
    }
    /// `GET /v1/backups/{id}`.
    pub async fn backup(&self, id: &str) -> Result<Backup, Error> {
        self.http()
            .get(&format!("/v1/backups/{}", percent_encode(id)))
            .await
    }
    /// `DELETE /v1/backups/{id}`: the operation deleting it from its store.
    pub async fn delete_backup(&self, id: &str) -> Result<Operation, Error> {
        self.http()
            .delete(&format!("/v1/backups/{}", percent_encode(id)))
            .await
    }
    /// `POST /v1/backups/{id}/restore`: the operation; its result names the new VM.
    pub async fn restore_backup(&self, id: &str, b: &RestoreBody) -> Result<Operation, Error> {
        self.http()
            .post(&format!("/v1/backups/{}/restore", percent_encode(id)), b)
            .await
    }
    /// `POST /v1/backups/{id}/verify`.
    pub async fn verify_backup(&self, id: &str) -> Result<Operation, Error> {
        self.http()
            .post(&format!("/v1/backups/{}/verify", percent_encode(id)), &())
            .await
    }
    /// `POST /v1/vms/{id}/backups/prune`: deletes the VM's backups `retention` drops.
    pub async fn prune_backups(&self, vm: &str, b: &PruneBody) -> Result<Operation, Error> {
        self.http()
            .post(&format!("/v1/vms/{}/backups/prune", percent_encode(vm)), b)
            .await
    }
    /// `POST /v1/backup-stores/{name}/gc` (system admins).
    pub async fn gc_backup_store(&self, name: &str, b: &GcBody) -> Result<Operation, Error> {
        self.http()
            .post(&format!("/v1/backup-stores/{}/gc", percent_encode(name)), b)
            .await
    }
    /// `PUT /v1/vms/{id}/backup-schedule`.
    pub async fn set_backup_schedule(
        &self,
        vm: &str,
        s: &BackupSchedule,
    ) -> Result<BackupSchedule, Error> {
        self.http()
            .put(
                &format!("/v1/vms/{}/backup-schedule", percent_encode(vm)),
                s,
            )
            .await
    }
    /// `GET /v1/vms/{id}/backup-schedule`.
    pub async fn backup_schedule(&self, vm: &str) -> Result<BackupSchedule, Error> {
        self.http()
            .get(&format!("/v1/vms/{}/backup-schedule", percent_encode(vm)))
            .await
    }
    /// `DELETE /v1/vms/{id}/backup-schedule`.
    pub async fn delete_backup_schedule(&self, vm: &str) -> Result<BackupSchedule, Error> {
        self.http()
            .delete(&format!("/v1/vms/{}/backup-schedule", percent_encode(vm)))
            .await
    }
}
