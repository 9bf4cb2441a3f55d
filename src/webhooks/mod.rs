//! Webhooks (`--webhook-url`): what happened, told to the backend as signed
//! HTTP POSTs from a durable outbox in the store. A message's
//! `message.created` is written in the message's own transaction, so a
//! SIGKILL loses neither without the other; other events are written as they
//! happen. One node at a time delivers ([`deliver`]), in order, at least
//! once, retrying with backoff. See docs/http-api.md, "Webhooks".

pub mod deliver;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::store::{MessageStore, OutboxEvent};

/// The event types, in the contract's words.
pub use crate::config::WEBHOOK_TYPES as TYPES;

/// The webhook side of one node.
pub struct Webhooks {
    pub url: String,
    pub secret: Option<String>,
    types: HashSet<String>,
    pub store: Arc<dyn MessageStore>,
    pub timeout: Duration,
    pub batch: usize,
    pub max_outbox: u64,
    pub max_age: Duration,
    /// This node's name in the delivery lease.
    pub node: String,
}

impl Webhooks {
    /// Starts delivery; `None` without `--webhook-url`.
    pub fn start(config: &crate::Config, store: Arc<dyn MessageStore>) -> Option<Arc<Webhooks>> {
        let url = config.webhook_url.clone()?;
        let types: HashSet<String> = match &config.webhook_events {
            Some(list) => list
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
            None => TYPES.iter().map(|t| t.to_string()).collect(),
        };
        if types.contains("message.created") {
            store.enable_outbox();
        }
        let w = Arc::new(Webhooks {
            url,
            secret: config.webhook_secret.clone(),
            types,
            store,
            timeout: Duration::from_millis(config.webhook_timeout_ms),
            batch: config.webhook_batch,
            max_outbox: config.webhook_max_outbox,
            max_age: Duration::from_secs(config.webhook_max_age_secs),
            node: ulid::Ulid::new().to_string(),
        });
        tokio::spawn(deliver::run(w.clone()));
        tokio::spawn(deliver::trim(w.clone()));
        Some(w)
    }

    pub fn wants(&self, ty: &str) -> bool {
        self.types.contains(ty)
    }

    /// Writes an event of `ty` about `data` to the outbox (not for
    /// `message.created`, which the store writes with the message). Awaited,
    /// so that what the user does next comes after it in the outbox.
    pub async fn emit(&self, ty: &'static str, data: Value) {
        if !self.wants(ty) {
            return;
        }
        let event = OutboxEvent::new(ty, data);
        if let Err(e) = self.store.outbox_push(&[event]).await {
            tracing::warn!("webhook event {ty} not written: {e}");
            crate::metrics::webhook_events("lost", 1);
        }
    }
}
