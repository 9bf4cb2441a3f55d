//! Ending a socket on the server's initiative (a flooder, an expired token)
//! without losing what it was owed.
//!
//! Disconnecting at once lost things: the success acks of messages already
//! being stored came after the disconnect and went nowhere, and the client's
//! events still in flight then reached a socket socketioxide had removed,
//! which makes it close the whole Engine.IO session and drop what the client
//! had not yet received (`server:closing` and the `41` included; over
//! websocket the unread input also turned the close into a TCP reset).
//!
//! So a closing socket first stops taking events (each gets an error ack
//! saying why, those already queued too), then waits until the writes it
//! started are acked, sends
//! `server:closing { reason }`, waits until the client has been quiet for
//! [`QUIET`] (bounded by [`GRACE`]), and only then sends the Socket.IO
//! disconnect. socket.io-client closes its connection when its last
//! namespace is disconnected, so nothing is in flight by then.

use std::sync::Arc;
use std::time::{Duration, Instant};

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::reply::Code;
use super::session::{Job, Session};

/// How long a closing socket must have sent nothing before the disconnect
/// (long enough that a busy server's own pauses in reading are not taken
/// for the client's quiet).
pub const QUIET: Duration = Duration::from_millis(500);

/// The most a close waits, for the socket's writes and for quiet together;
/// a client that keeps sending past it is disconnected all the same. While
/// it waits, the client's events cost an error ack each, and a client that
/// does not read them is closed as a slow consumer.
pub const GRACE: Duration = Duration::from_secs(10);

/// Ends `socket`: see the module doc. Calling it again for a socket already
/// closing does nothing (one `server:closing`, one disconnect).
pub fn closing<A: Adapter>(socket: &SocketRef<A>, reason: &'static str) {
    let Some(session) = socket.extensions.get::<Arc<Session<A>>>() else {
        return disconnect(socket, reason);
    };
    if !session.start_closing(reason) {
        return;
    }
    let socket = socket.clone();
    tokio::spawn(async move {
        let deadline = Instant::now() + GRACE;
        // The events already queued are answered (refused: the socket is
        // closing), then the writes started before are acked.
        let (queued, answered) = tokio::sync::oneshot::channel();
        if session.push(socket.clone(), Job::Barrier(queued)).is_ok() {
            let _ = tokio::time::timeout_at(deadline.into(), answered).await;
        }
        let _ = tokio::time::timeout_at(deadline.into(), session.settle()).await;
        let _ = socket.emit("server:closing", &serde_json::json!({ "reason": reason }));
        while let Some(wait) = session.quiet_in(QUIET) {
            if Instant::now() + wait > deadline {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        disconnect(&socket, reason);
    });
}

/// The error ack an event gets while its socket is closing.
pub fn refusal(reason: &str) -> (Code, String) {
    let code = match reason {
        "rate_limited" => Code::RateLimited,
        _ => Code::Unavailable,
    };
    (code, format!("this socket is being disconnected: {reason}"))
}

/// The Socket.IO disconnect, or the connection's close when the packet does
/// not fit in the socket's queue.
fn disconnect<A: Adapter>(socket: &SocketRef<A>, reason: &'static str) {
    if let Err(e) = socket.clone().disconnect() {
        tracing::debug!(sid = %socket.id, "disconnect failed ({e}); closing the connection");
        if let Some(ctx) = socket
            .extensions
            .get::<Arc<Session<A>>>()
            .map(|s| s.ctx.clone())
            && let Some(conn) = super::slow::connection_of(&ctx, socket)
        {
            conn.close(crate::edge::ws_frames::CLOSE_POLICY, reason);
        }
    }
}

/// Counts a `rate_limited` refusal; a socket that keeps flooding after
/// refusals is told why and disconnected.
pub fn rate_refused<A: Adapter>(session: &Session<A>, socket: &SocketRef<A>) {
    if !session.limits.refused() || session.closing_reason().is_some() {
        return;
    }
    tracing::info!(
        ns = socket.ns(),
        sid = %socket.id,
        user = session.identity.user_id,
        "socket keeps flooding after rate_limited refusals; disconnecting"
    );
    crate::metrics::server_disconnect("rate_limited");
    closing(socket, "rate_limited");
}
