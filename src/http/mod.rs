//! The plain HTTP side, beside Socket.IO.

mod health;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::realtime::Ctx;

pub fn routes(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(ctx)
}
