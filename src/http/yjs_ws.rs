//! `GET /yjs/{doc}`: the y-websocket provider's websocket upgrade; the
//! peer itself is `realtime::yjs_ws`'s. Every check happens on the
//! websocket, so that the provider reads the reason in the close (a
//! refused upgrade would only make it retry).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use crate::hub::Hub;
use crate::realtime::yjs_ws::{max_message_bytes, serve};

/// The path the provider's URL ends with (`url + "/yjs"`, then the name).
pub const PATH: &str = "/yjs/{doc}";

#[derive(Deserialize)]
pub struct Params {
    /// The JWT (y-websocket's `params: { token }`).
    token: Option<String>,
}

pub async fn upgrade(
    State(hub): State<Hub>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
    ws: WebSocketUpgrade,
) -> Response {
    let ctx = hub.ctx().clone();
    let max = max_message_bytes(&ctx);
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            crate::on_io!(hub.io(), io => serve(io.clone(), ctx, socket, name, params.token).await)
        })
}
