//! `GET /v1/events[?since=<revision>]`: a WebSocket that sends every state change the
//! caller may see, one JSON `Event` per text message: the stored events after `since`
//! first, then new ones as any controller appends them. A client that reconnects with
//! the last revision it saw loses and repeats nothing.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use futures_util::StreamExt;

use super::error::ApiQuery;
use super::{ApiResult, AppState};
use crate::auth::Caller;
use crate::model::{ErrorBody, EventsQuery};

/// `GET /v1/events` (WebSocket upgrade).
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 101, description = "a WebSocket of Event messages (JSON text), oldest first",
            body = crate::model::Event),
        (status = 400, description = "a bad parameter", body = ErrorBody)))]
pub async fn events(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiQuery(q): ApiQuery<EventsQuery>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let events = st.ctx.events.subscribe(q.since);
    Ok(ws.on_upgrade(move |socket| send_events(socket, events, c)))
}

async fn send_events(
    mut socket: WebSocket,
    mut events: futures_util::stream::BoxStream<
        'static,
        Result<crate::model::Event, crate::store::StoreError>,
    >,
    c: Caller,
) {
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(ev)) => {
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
