//! The gateway of one incoming cross-cluster migration: the source hostd's
//! hostd-to-hostd calls, authenticated by that migration's own token (compared in
//! constant time), each checked against what was admitted, passed to the chosen
//! destination host with this cluster's own host token (the images the admitted VM
//! boots from may be uploaded; nothing else). Preparing, completing or aborting
//! moves the migration's record ([`super::incoming`]).

use std::path::Path;

use nova_hostd_api::{
    Health, HostdClient, ImageInfo, IncomingOutcome, IncomingReady, IncomingRequest, VmInfo,
};

use super::incoming::{adopt, drop_arrival, host_client, valid_id, Arriving};
use crate::auth;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::IncomingPhase;
use crate::store::Objects;

/// The gateway: the source hostd's calls for migration `mid`, authenticated by its
/// token, each checked against what was admitted and passed to the destination host.
pub struct Gateway {
    arriving: Arriving,
    hostd: HostdClient,
}

impl Gateway {
    /// The gateway of `mid` for a caller presenting `token`; Unauthorized for a wrong
    /// token or a migration that is over.
    pub async fn open(ctx: &Context, mid: &str, token: &str) -> Result<Gateway> {
        let refuse = || Error::Unauthorized("not a credential of an open migration".into());
        if valid_id("migration", mid, "xmig-").is_err() {
            return Err(refuse());
        }
        let a = ctx.store.read::<Arriving>(mid).await?.ok_or_else(refuse)?;
        let presented = auth::hash(token);
        if !ct_eq(presented.as_bytes(), a.token_hash.as_bytes()) {
            return Err(refuse());
        }
        let hostd = host_client(ctx, &a.shown.host).await?;
        Ok(Gateway { arriving: a, hostd })
    }

    /// Who called, for the audit log.
    pub fn actor(&self) -> String {
        format!("migration:{}", self.arriving.shown.migration_id)
    }

    /// The tenant the VM belongs to here.
    pub fn tenant(&self) -> &str {
        &self.arriving.shown.tenant
    }

    fn open_phase(&self) -> Result<()> {
        match self.arriving.shown.phase {
            IncomingPhase::Admitted | IncomingPhase::Prepared => Ok(()),
            p => Err(Error::conflict(
                format!("this migration is {p:?}").to_lowercase(),
            )),
        }
    }

    /// `GET /v1/health` of the destination host.
    pub async fn health(&self) -> Result<Health> {
        Ok(self.hostd.health().await?)
    }

    /// `GET /v1/images/{id}` of the destination host.
    pub async fn image(&self, id: &str) -> Result<ImageInfo> {
        Ok(self.hostd.image(id).await?)
    }

    /// `PUT /v1/images` to the destination host: `spool` holds an image's bytes, which
    /// hash to `id`; only an image the admitted VM boots from is passed on.
    pub async fn upload(&self, id: &str, spool: &Path) -> Result<ImageInfo> {
        self.open_phase()?;
        if !self.arriving.images.iter().any(|i| i == id) {
            return Err(nova_http::FieldError::new(
                "body",
                format!("{id} is not an image the admitted VM boots from"),
            )
            .into());
        }
        Ok(self.hostd.upload_image(spool).await?)
    }

    /// `GET /v1/vms/{id}` of the destination host: this migration's VM only.
    pub async fn vm(&self, id: &str) -> Result<VmInfo> {
        if id != self.arriving.shown.vm_id {
            return Err(Error::NotFound("vm"));
        }
        Ok(self.hostd.vm(id).await?)
    }

    /// `POST /v1/migrations/incoming`: the VM admitted, nothing else.
    pub async fn prepare(&self, ctx: &Context, req: &IncomingRequest) -> Result<IncomingReady> {
        self.open_phase()?;
        let a = &self.arriving;
        if req.spec.id.as_deref() != Some(a.shown.vm_id.as_str()) {
            return Err(nova_http::FieldError::new(
                "spec.id",
                "not the VM this migration admitted",
            )
            .into());
        }
        if req.spec.vcpus != a.vcpus || req.spec.mem_mib != a.mem_mib {
            return Err(nova_http::FieldError::new(
                "spec",
                format!(
                    "{} vCPUs and {} MiB, but {} vCPUs and {} MiB were admitted",
                    req.spec.vcpus, req.spec.mem_mib, a.vcpus, a.mem_mib
                ),
            )
            .into());
        }
        if a.hostd_migration
            .as_ref()
            .is_some_and(|m| *m != req.migration_id)
        {
            return Err(Error::conflict("this migration was prepared already"));
        }
        let ready = self.hostd.incoming(req).await?;
        let mid = a.shown.migration_id.clone();
        let hm = req.migration_id.clone();
        ctx.store
            .update::<Arriving, _>(&mid, |x| {
                x.hostd_migration = Some(hm.clone());
                if x.shown.phase == IncomingPhase::Admitted {
                    x.shown.phase = IncomingPhase::Prepared;
                }
                true
            })
            .await?;
        Ok(ready)
    }

    fn check_hostd_migration(&self, hm: &str) -> Result<()> {
        if self.arriving.hostd_migration.as_deref() != Some(hm) {
            return Err(Error::NotFound("incoming migration"));
        }
        Ok(())
    }

    /// `POST /v1/migrations/incoming/{id}/complete`: the host takes the VM, and this
    /// cluster adopts its record.
    pub async fn complete(&self, ctx: &Context, hm: &str, o: &IncomingOutcome) -> Result<()> {
        self.check_hostd_migration(hm)?;
        self.hostd.incoming_complete(hm, o).await?;
        adopt(ctx, &self.arriving.shown.migration_id, o.downtime_ms).await
    }

    /// `POST /v1/migrations/incoming/{id}/abort`: the host drops it, and so does
    /// this cluster.
    pub async fn abort(&self, ctx: &Context, hm: &str, o: &IncomingOutcome) -> Result<()> {
        self.check_hostd_migration(hm)?;
        let why = o
            .error
            .clone()
            .unwrap_or_else(|| "aborted by the source".into());
        self.hostd.incoming_abort(hm, o).await?;
        drop_arrival(ctx, &self.arriving.shown.migration_id, &why).await
    }
}

/// Whether `a` equals `b`, in time that depends only on their lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        diff |= (a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff)) as u64;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_needs_every_byte() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"", b"a"));
    }
}
