//! The client's snapshot, schedule and template calls.

use nova_http::Error;

use super::{percent_encode, ControllerClient};
use crate::*;

impl ControllerClient {
    /// `POST /v1/vms/{id}/snapshots`.
    pub async fn snapshot_vm(&self, vm: &str, body: &NewSnapshot) -> Result<Snapshot, Error> {
        self.http()
            .post(&format!("/v1/vms/{vm}/snapshots"), body)
            .await
    }
    /// `GET /v1/vms/{id}/snapshots`, newest first.
    pub async fn vm_snapshots(&self, vm: &str) -> Result<Vec<Snapshot>, Error> {
        self.http().get(&format!("/v1/vms/{vm}/snapshots")).await
    }
    /// `GET /v1/snapshots`: every snapshot the caller may see, newest first.
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>, Error> {
        self.http().get("/v1/snapshots").await
    }
    /// `GET /v1/snapshots/{id}`.
    pub async fn snapshot(&self, id: &str) -> Result<Snapshot, Error> {
        self.http().get(&format!("/v1/snapshots/{id}")).await
    }
    /// `DELETE /v1/snapshots/{id}`.
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), Error> {
        self.http().delete(&format!("/v1/snapshots/{id}")).await
    }
    /// `POST /v1/snapshots/{id}/restore`: the VM it now runs in.
    pub async fn restore_snapshot(&self, id: &str, body: &RestoreSnapshot) -> Result<Vm, Error> {
        self.http()
            .post(&format!("/v1/snapshots/{id}/restore"), body)
            .await
    }
    /// `PUT /v1/vms/{id}/snapshot-schedule`.
    pub async fn set_snapshot_schedule(
        &self,
        vm: &str,
        body: &ScheduleBody,
    ) -> Result<SnapshotSchedule, Error> {
        self.http()
            .put(&format!("/v1/vms/{vm}/snapshot-schedule"), body)
            .await
    }
    /// `GET /v1/vms/{id}/snapshot-schedule`.
    pub async fn snapshot_schedule(&self, vm: &str) -> Result<SnapshotSchedule, Error> {
        self.http()
            .get(&format!("/v1/vms/{vm}/snapshot-schedule"))
            .await
    }
    /// `DELETE /v1/vms/{id}/snapshot-schedule`.
    pub async fn delete_snapshot_schedule(&self, vm: &str) -> Result<(), Error> {
        self.http()
            .delete(&format!("/v1/vms/{vm}/snapshot-schedule"))
            .await
    }
    /// `POST /v1/templates`: a template or a new version of one.
    pub async fn create_template(&self, body: &NewTemplate) -> Result<Template, Error> {
        self.http().post("/v1/templates", body).await
    }
    /// `GET /v1/templates`: the caller's tenant's and the system's.
    pub async fn templates(&self) -> Result<Vec<Template>, Error> {
        self.http().get("/v1/templates").await
    }
    /// `GET /v1/templates/{ref}` (`name` or `name@version`: the template, with only
    /// that version when one is named).
    pub async fn template(&self, reference: &str) -> Result<Template, Error> {
        self.http()
            .get(&format!("/v1/templates/{}", percent_encode(reference)))
            .await
    }
    /// `PUT /v1/templates/{name}/default`.
    pub async fn set_default_version(&self, name: &str, version: u32) -> Result<Template, Error> {
        self.http()
            .put(
                &format!("/v1/templates/{}/default", percent_encode(name)),
                &DefaultVersion { version },
            )
            .await
    }
    /// `POST /v1/templates/{ref}/instantiate`: the new VM.
    pub async fn instantiate(&self, reference: &str, body: &Instantiate) -> Result<Vm, Error> {
        self.http()
            .post(
                &format!("/v1/templates/{}/instantiate", percent_encode(reference)),
                body,
            )
            .await
    }
}
