//! `GET /v1/vms/{id}/console/ws`: a VM's serial console, live, as a WebSocket proxied
//! to the hostd running the VM (over hostd's own authenticated console WebSocket).
//! Binary messages both ways: the guest's output (from the VMM's backlog on) to the
//! client, the client's bytes (binary or text) to the guest. Authenticated like every
//! route (a browser sends its token as the `nova.bearer.<hex>` subprotocol, as for
//! `/v1/events`); another tenant's VM is 404. A viewer may watch but not type: its
//! input is dropped, never forwarded. The proxy closes (1008) once its token is
//! revoked, as the event stream does.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use futures_util::{SinkExt, StreamExt};
use nova_http::websocket::{Message as Up, WebSocket as Upstream};

use super::stream::{revoked, still_valid, RECHECK};
use super::{ApiError, ApiResult, AppState};
use crate::auth::{Caller, TokenHash};
use crate::model::{ErrorBody, Vm};
use crate::store::Objects;

/// `GET /v1/vms/{id}/console/ws` (WebSocket upgrade).
#[utoipa::path(get, path = "/v1/vms/{id}/console/ws", tag = "vms",
    params(("id" = String, Path, description = "VM id")),
    responses((status = 101, description = "a WebSocket of the console's bytes (binary messages both ways; a viewer's input is dropped)"),
        (status = 404, description = "no such VM in your tenant", body = ErrorBody),
        (status = 409, description = "the VM is not placed yet", body = ErrorBody),
        (status = 502, description = "its host did not answer or the VM is not running", body = ErrorBody)))]
pub async fn console_ws(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    token: Option<Extension<TokenHash>>,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let vm = match st.ctx.store.read::<Vm>(&id).await? {
        Some(v) if c.sees(&v.tenant) => v,
        _ => return Err(ApiError::not_found("vm")),
    };
    // Reach the console before answering the upgrade: a VM that is not running is
    // an HTTP error the client can read, not a WebSocket that closes at once.
    let upstream = crate::console::attach(&st.ctx, &vm).await?;
    let may_type = c.can_operate();
    let token = token.map(|Extension(t)| t);
    Ok(ws.on_upgrade(move |socket| proxy(socket, upstream, may_type, st, token)))
}

/// Copies bytes both ways until either side closes or the token is revoked.
async fn proxy(
    socket: WebSocket,
    upstream: Upstream,
    may_type: bool,
    st: AppState,
    token: Option<TokenHash>,
) {
    let (mut up_tx, mut up_rx) = upstream.split();
    let (mut tx, mut rx) = socket.split();
    let mut tick = tokio::time::interval(RECHECK);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !still_valid(&st, &token).await {
                    let mut s = match tx.reunite(rx) {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                    revoked(&mut s).await;
                    let _ = up_tx.send(Up::Close(None)).await;
                    return;
                }
            }
            out = up_rx.next() => match out {
                Some(Ok(Up::Binary(b))) => {
                    if tx.send(Message::Binary(b)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Up::Text(t))) => {
                    if tx.send(Message::Binary(t.as_bytes().to_vec().into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Up::Close(_))) | None | Some(Err(_)) => {
                    let _ = tx.send(Message::Close(None)).await;
                    break;
                }
                Some(Ok(_)) => {}
            },
            inp = rx.next() => match inp {
                Some(Ok(Message::Binary(b))) if may_type => {
                    if up_tx.send(Up::Binary(b)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Text(t))) if may_type => {
                    let bytes = t.as_str().as_bytes().to_vec();
                    if up_tx.send(Up::Binary(bytes.into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    let _ = up_tx.send(Up::Close(None)).await;
                    break;
                }
                // A viewer's keystrokes, pings (answered by the WebSocket itself).
                Some(Ok(_)) => {}
            },
        }
    }
}
