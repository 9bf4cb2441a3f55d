//! The network edge: what happens to a connection before and around
//! Socket.IO. The accept loop and its limits (`serve`, `conn_limits`), the
//! guarded IO that counts and closes connections (`guarded_io`), the frame
//! followers and rewriters on the websocket (`ws_frames`, `ws_split`,
//! `outgoing` for connection state recovery,
//! `escaped_names`), clients with the wrong parser (`parser_mismatch`), HTTP
//! bodies that stall (`body_guard`), and giving memory back (`trim`,
//! `detach`).

pub mod body_guard;
pub mod conn_limits;
pub mod detach;
pub mod escaped_names;
pub mod guarded_io;
pub mod outgoing;
pub mod parser_mismatch;
pub mod serve;
pub mod trim;
pub mod ws_frames;
pub mod ws_split;
