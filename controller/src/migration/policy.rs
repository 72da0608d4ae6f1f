//! The cluster's migration policy (the contract's `MigrationPolicy`: the VMM's own
//! `MigrationParams` plus timeouts and parallelism) in the store: read it (the default
//! until one is set), replace it, or change only the fields a patch names, each
//! validated and guarded by the revision the caller read.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{MigrationPolicy, MigrationPolicyPatch};
use crate::store::{Expect, StoreError};

/// The policy now, with its store revision (0 while the default applies).
pub async fn load(ctx: &Context) -> Result<MigrationPolicy> {
    match ctx.store.get(MigrationPolicy::KEY).await? {
        Some(v) => {
            let mut p: MigrationPolicy = serde_json::from_slice(&v.value).map_err(|e| {
                Error::Store(StoreError::Codec(
                    MigrationPolicy::KEY.into(),
                    e.to_string(),
                ))
            })?;
            p.revision = v.revision;
            Ok(p)
        }
        None => Ok(MigrationPolicy::default()),
    }
}

/// Writes `change(current)` if it validates, while the stored policy is at `revision`
/// (when given; retried on a concurrent write otherwise).
async fn write(
    ctx: &Context,
    revision: Option<u64>,
    change: impl Fn(&MigrationPolicy) -> MigrationPolicy,
) -> Result<MigrationPolicy> {
    loop {
        let now = load(ctx).await?;
        if let Some(want) = revision.filter(|&w| w != now.revision) {
            return Err(Error::Stale {
                expected: want,
                actual: now.revision,
            });
        }
        let mut next = change(&now);
        next.validate()?;
        next.revision = 0;
        let bytes = serde_json::to_vec(&next).map_err(|e| {
            Error::Store(StoreError::Codec(
                MigrationPolicy::KEY.into(),
                e.to_string(),
            ))
        })?;
        let expect = match now.revision {
            0 => Expect::Absent,
            r => Expect::Revision(r),
        };
        match ctx.store.put(MigrationPolicy::KEY, bytes, expect).await {
            Ok(rev) => {
                next.revision = rev;
                return Ok(next);
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Replaces the whole policy.
pub async fn replace(
    ctx: &Context,
    p: &MigrationPolicy,
    revision: Option<u64>,
) -> Result<MigrationPolicy> {
    write(ctx, revision, |_| p.clone()).await
}

/// Changes only the fields `patch` names.
pub async fn patch(
    ctx: &Context,
    patch: &MigrationPolicyPatch,
    revision: Option<u64>,
) -> Result<MigrationPolicy> {
    write(ctx, revision, |now| now.patched(patch)).await
}
