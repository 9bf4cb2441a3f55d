//! Plain WebSocket clients (docs/protocol.md §19): a JSON protocol on
//! `GET /ws` for clients without socket.io-client. Each client is bridged to
//! a Socket.IO socket of its own inside the server, so that it is one more
//! edge onto the same core: rooms, presence, history, limits, hooks and
//! cluster delivery are the Socket.IO side's, not written again here.

pub mod bridge;
pub mod events;
pub mod protocol;
pub mod translations;
