//! The socket side of token lifetime: `auth:expiring` and the expiry
//! disconnect (scheduled by `expiry`), and `auth:refresh { token }`, which
//! lets a client carry on with a new token for the same user.

use std::sync::Arc;

use serde::Deserialize;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;

use super::expiry::Expiring;
use super::reply::{self, Ack, Code, Refusal};
use super::session::Session;

/// A socket as the sweeper knows it: looked up when something is due, so
/// the schedule never keeps a closed socket alive.
pub struct SocketExpiry<A: Adapter> {
    pub io: SocketIo<A>,
    pub ns: String,
    pub sid: Sid,
}

impl<A: Adapter> SocketExpiry<A> {
    fn socket(&self) -> Option<SocketRef<A>> {
        self.io.of(&self.ns)?.get_socket(self.sid)
    }
}

impl<A: Adapter> Expiring for SocketExpiry<A> {
    fn warn(&self, exp: u64) {
        let Some(socket) = self.socket() else { return };
        let payload = serde_json::json!({ "expiresAt": exp * 1000 });
        if let Err(e) = socket.emit("auth:expiring", &payload) {
            tracing::debug!(sid = %socket.id, "auth:expiring not sent: {e}");
            super::slow::disconnect(&socket, "auth:expiring");
        }
    }

    fn expire(&self) {
        let Some(socket) = self.socket() else { return };
        tracing::info!(ns = socket.ns(), sid = %socket.id, "token expired; disconnecting");
        crate::metrics::server_disconnect("token_expired");
        super::closing(&socket, "token_expired");
    }
}

#[derive(Deserialize)]
struct RefreshArgs {
    token: String,
}

/// `auth:refresh { token }`: the token must be valid and name the same user
/// (and tenant); the socket then lives until its `exp`. Its `rooms` claim
/// is in force from then on: rooms and documents it no longer allows are
/// left (`room:left` / `doc:left`). The name stays the one the socket
/// connected with.
pub async fn refresh<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    data: Option<serde_json::Value>,
    ack: Option<Ack<A>>,
) {
    match check(session, socket, data).await {
        Ok((exp, rooms)) => {
            session.set_rooms_claim(rooms);
            super::rooms::drop_forbidden(session, socket).await;
            reply::ok(
                ack,
                &serde_json::json!({ "success": true, "expiresAt": exp * 1000 }),
            )
        }
        Err(r) => reply::refuse(ack, &r),
    }
}

async fn check<A: Adapter>(
    session: &Arc<Session<A>>,
    socket: &SocketRef<A>,
    data: Option<serde_json::Value>,
) -> Result<(u64, Option<Vec<String>>), Refusal> {
    let RefreshArgs { token } = reply::parse(data)?;
    let refused = |why: &str| Refusal::invalid(format!("Authentication failed: {why}"));
    let new = session
        .ctx
        .verifier
        .verify_fresh(&token)
        .await
        .map_err(|e| refused(&e.to_string()))?;
    if new.user_id != session.identity.user_id {
        return Err(refused("token is for another user"));
    }
    if new.tenant != session.identity.tenant || !new.may_open(socket.ns()) {
        return Err(refused("wrong tenant"));
    }
    let key = session
        .expiry
        .get()
        .ok_or_else(|| Refusal::new(Code::Internal, "socket lifetime not tracked"))?;
    let exp = session
        .ctx
        .expiries
        .extend(*key, new.expires_at)
        .ok_or_else(|| refused("token expired"))?;
    Ok((exp, new.rooms))
}
