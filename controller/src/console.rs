//! A VM's live serial console through the controller: finds the host the VM runs on
//! and opens that hostd's console WebSocket (with the host's token; TLS with the
//! cluster CA when the hostd is https). Who may attach, and whether they may type,
//! is the API's decision; this only reaches the console.

use nova_http::websocket::WebSocket;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{Host, Vm};
use crate::store::Objects;

/// The live console of `vm` on its host.
pub async fn attach(ctx: &Context, vm: &Vm) -> Result<WebSocket> {
    let host = vm
        .host
        .as_deref()
        .ok_or_else(|| Error::conflict("the VM is not placed on a host yet"))?;
    let h = ctx.store.must_read::<Host>(host).await?;
    Ok(ctx.hostd(&h)?.console_ws(&vm.id).await?)
}
