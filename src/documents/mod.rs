//! Collaborative plain-text documents: the operational transform
//! (`ot`, pure), the service that orders, applies and holds documents
//! (`service`), and their storage (`store`: the trait and the in-memory one;
//! `sql`: SQLite and PostgreSQL). The Socket.IO events are in
//! `realtime::docs`, the HTTP routes in `http::api`.

pub mod ot;
pub mod service;
pub mod sql;
pub mod store;
pub mod yjs_store;

pub use service::*;

use std::sync::Arc;

use crate::store::{MemoryStore, MessageStore, SqlStore, StoreError, StoreUrl};
use store::{DocStore, MemoryDocs};

/// Opens (and migrates) the store `url` names, for messages and for
/// documents: one database, one connection pool.
pub async fn open_both(
    url: &StoreUrl,
) -> Result<(Arc<dyn MessageStore>, Arc<dyn DocStore>), StoreError> {
    Ok(match url {
        StoreUrl::Memory => {
            let messages: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
            (
                messages.clone(),
                Arc::new(MemoryDocs::with_outbox(messages)),
            )
        }
        StoreUrl::Sqlite(u) => {
            let s = Arc::new(SqlStore::open_sqlite(u).await?);
            (s.clone(), s)
        }
        StoreUrl::Postgres(u) => {
            let s = Arc::new(SqlStore::open_postgres(u).await?);
            (s.clone(), s)
        }
    })
}
