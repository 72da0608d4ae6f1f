//! `GET /v1/events[?since=<revision>]`: a WebSocket that sends every state change the
//! caller may see, one JSON `Event` per text message: the stored events after `since`
//! first, then new ones as any controller appends them. A client that reconnects with
//! the last revision it saw loses and repeats nothing. A stream ends (close frame,
//! code 1008) once its token is revoked: at the `token.revoked` event, or at the
//! latest at the next periodic re-check of the token.

use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use futures_util::StreamExt;

use super::error::ApiQuery;
use super::{ApiResult, AppState};
use crate::auth::{Caller, TokenHash};
use crate::model::{ErrorBody, EventsQuery, Token};
use crate::store::Objects;

/// `GET /v1/events` (WebSocket upgrade).
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 101, description = "a WebSocket of Event messages (JSON text), oldest first",
            body = crate::model::Event),
        (status = 400, description = "a bad parameter", body = ErrorBody)))]
pub async fn events(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    token: Option<Extension<TokenHash>>,
    ApiQuery(q): ApiQuery<EventsQuery>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let events = st.ctx.events.subscribe(q.since).await;
    let token = token.map(|Extension(t)| t);
    Ok(ws.on_upgrade(move |socket| send_events(socket, events, c, st, token)))
}

/// How often an open stream re-reads its token (revocation by any path).
pub(super) const RECHECK: Duration = Duration::from_secs(5);

/// Whether the token `t` still exists (a store error counts as yes: the stream
/// itself fails on a store that is down).
pub(super) async fn still_valid(st: &AppState, t: &Option<TokenHash>) -> bool {
    match t {
        Some(TokenHash(h)) => !matches!(st.ctx.store.read::<Token>(h).await, Ok(None)),
        None => true,
    }
}

pub(super) async fn revoked(socket: &mut WebSocket) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: close_code::POLICY,
            reason: "the token was revoked".into(),
        })))
        .await;
}

async fn send_events(
    mut socket: WebSocket,
    mut events: futures_util::stream::BoxStream<
        'static,
        Result<crate::model::Event, crate::store::StoreError>,
    >,
    c: Caller,
    st: AppState,
    token: Option<TokenHash>,
) {
    let mut tick = tokio::time::interval(RECHECK);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !still_valid(&st, &token).await {
                    return revoked(&mut socket).await;
                }
            }
            ev = events.next() => match ev {
                Some(Ok(ev)) => {
                    if ev.kind == "token.revoked" && !still_valid(&st, &token).await {
                        return revoked(&mut socket).await;
                    }
                    if !c.sees(&ev.tenant) {
                        continue;
                    }
                    let Ok(text) = serde_json::to_string(&ev) else { continue };
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                // The store failed: close; the client resumes from its last revision.
                Some(Err(e)) => {
                    tracing::warn!("event stream: {e}");
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                None => return,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
}
