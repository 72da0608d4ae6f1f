//! Powering a host off or rebooting it (`POST /v1/hosts/{id}/power`, system
//! operators): the host's hostd asks nova-init, which stops hostd first (its VMs
//! stopped or migrated away, as the host's `vms_at_shutdown` says) and then halts.
//! Only for hosts that run from the host image: other machines have their own OS.

use nova_hostd_api::SystemPower;

use crate::context::Context;
use crate::error::Result;
use crate::model::SYSTEM_TENANT;
use crate::upgrades::imaged_host;

/// Asks host `id` to do `req`; answers once its hostd took the request (a
/// `host.power` event records it).
pub async fn power(ctx: &Context, id: &str, req: &SystemPower) -> Result<SystemPower> {
    let host = imaged_host(ctx, id, "power it off through its own OS").await?;
    let done = ctx.hostd(&host)?.power_system(req).await?;
    tracing::info!(host = %id, action = ?done.action, "host asked to power off or reboot");
    ctx.events
        .publish("host.power", SYSTEM_TENANT, id, crate::events::data(&done))
        .await;
    Ok(done)
}
