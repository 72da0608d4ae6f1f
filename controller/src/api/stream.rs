//! `GET /v1/events`: a WebSocket that sends every state change the caller may see, one
//! JSON [`crate::events::Event`] per text message.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use crate::auth::Caller;

/// `GET /v1/events` (WebSocket upgrade).
#[utoipa::path(get, path = "/v1/events", responses((status = 101, description = "WebSocket of Event messages")))]
pub async fn events(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    ws: WebSocketUpgrade,
) -> Response {
    let rx = st.events.subscribe();
    ws.on_upgrade(move |socket| send_events(socket, rx, c))
}

async fn send_events(
    mut socket: WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<crate::events::Event>,
    c: Caller,
) {
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    if !c.sees(&ev.tenant) {
                        continue;
                    }
                    let Ok(text) = serde_json::to_string(&ev) else { continue };
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    let msg = format!("{{\"kind\":\"lagged\",\"missed\":{n}}}");
                    if socket.send(Message::Text(msg.into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
}
