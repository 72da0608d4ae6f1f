//! The burst policy (the contract's `BurstPolicy`) in the store: read it (the config
//! file's `[cloud.burst]`, else the default, until one is set) and replace it,
//! validated and guarded by the revision the caller read. Enabling it needs a
//! provider configured.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::BurstPolicy;
use crate::store::{Expect, StoreError};

fn codec(e: serde_json::Error) -> Error {
    Error::Store(StoreError::Codec(BurstPolicy::KEY.into(), e.to_string()))
}

/// The policy now, with its store revision (0 while the configured default applies).
pub async fn load(ctx: &Context) -> Result<BurstPolicy> {
    match ctx.store.get(BurstPolicy::KEY).await? {
        Some(v) => {
            let mut p: BurstPolicy = serde_json::from_slice(&v.value).map_err(codec)?;
            p.revision = v.revision;
            Ok(p)
        }
        None => Ok(ctx.settings.burst_policy.clone()),
    }
}

/// Replaces the whole policy while the stored one is at `revision` (when given).
pub async fn replace(ctx: &Context, p: &BurstPolicy, revision: Option<u64>) -> Result<BurstPolicy> {
    p.validate()?;
    if p.enabled && ctx.cloud.is_none() {
        return Err(nova_http::FieldError::new(
            "enabled",
            "no cloud provider is configured ([cloud.ec2] in the controller's config file)",
        )
        .into());
    }
    let now = load(ctx).await?;
    if let Some(want) = revision.filter(|&w| w != now.revision) {
        return Err(Error::Stale {
            expected: want,
            actual: now.revision,
        });
    }
    let mut next = p.clone();
    next.revision = 0;
    let bytes = serde_json::to_vec(&next).map_err(codec)?;
    let expect = match now.revision {
        0 if revision.is_some() => Expect::Absent,
        0 => Expect::Any,
        r if revision.is_some() => Expect::Revision(r),
        _ => Expect::Any,
    };
    match ctx.store.put(BurstPolicy::KEY, bytes, expect).await {
        Ok(rev) => {
            next.revision = rev;
            Ok(next)
        }
        Err(StoreError::Conflict(_)) => Err(Error::Stale {
            expected: revision.unwrap_or(0),
            actual: load(ctx).await?.revision,
        }),
        Err(e) => Err(e.into()),
    }
}
