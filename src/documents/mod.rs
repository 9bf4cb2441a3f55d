//! Collaborative plain-text documents: the operational transform
//! (`ot`, pure), the service that orders, applies and holds documents
//! (`service`), and their storage (`store`: the trait and the in-memory one;
//! `sql`: SQLite and PostgreSQL). The Socket.IO events are in
//! `realtime::docs`, the HTTP routes in `http::api`.

pub mod ot;
pub mod service;
pub mod sql;
pub mod store;

pub use service::*;
