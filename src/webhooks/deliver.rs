//! Delivery: the node holding the lease sends the oldest events in batches,
//! `{ "events": [...] }`, signed; a 2xx removes them, anything else (or a
//! timeout) is retried after a backoff that doubles from 1 s to 60 s, and
//! nothing later goes before them, so events arrive in order. The outbox is
//! bounded by age and size; what is dropped is counted.

use std::sync::Arc;
use std::time::Duration;

use super::Webhooks;
use crate::store::now_ms;

/// How long a lease lasts; the holder renews it on each round.
const LEASE: Duration = Duration::from_secs(10);
/// How often an idle node looks for events (and for the lease).
const POLL: Duration = Duration::from_millis(100);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

pub async fn run(w: Arc<Webhooks>) {
    let client = reqwest::Client::builder()
        .timeout(w.timeout)
        .build()
        .expect("an HTTP client");
    let mut failures: u32 = 0;
    loop {
        let now = now_ms();
        match w
            .store
            .lease(&w.node, now, now + LEASE.as_millis() as u64)
            .await
        {
            Ok(true) => {}
            _ => {
                tokio::time::sleep(POLL).await;
                continue;
            }
        }
        let events = match w.store.outbox_next(w.batch, now_ms()).await {
            Ok(e) if !e.is_empty() => e,
            _ => {
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        let body = format!(
            "{{\"events\":[{}]}}",
            events
                .iter()
                .map(|e| e.body.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut req = client
            .post(&w.url)
            .header("content-type", "application/json");
        if let Some(secret) = &w.secret {
            let sig =
                crate::hooks::http::signature(secret, crate::auth::now_secs(), body.as_bytes());
            req = req.header("x-switchboard-signature", sig);
        }
        let ok = match req.body(body).send().await {
            Ok(res) => res.status().is_success(),
            Err(_) => false,
        };
        if ok {
            failures = 0;
            let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
            if let Err(e) = w.store.outbox_done(&ids).await {
                // Sent again later: at least once.
                tracing::warn!("delivered webhook events not removed: {e}");
            }
            crate::metrics::webhook_events("delivered", ids.len() as u64);
        } else {
            failures = failures.saturating_add(1);
            crate::metrics::webhook_events("retried", events.len() as u64);
            let wait = BACKOFF_MIN
                .saturating_mul(1u32 << (failures - 1).min(6))
                .min(BACKOFF_MAX);
            if failures == 1 {
                tracing::warn!(
                    url = w.url,
                    "webhook delivery failed; retrying with backoff"
                );
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// How often the outbox is held to its bounds: it may exceed
/// `--webhook-max-outbox` by the events of one such interval.
pub const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Drops events older than `--webhook-max-age-secs` and the oldest beyond
/// `--webhook-max-outbox`, every [`TRIM_EVERY`].
pub async fn trim(w: Arc<Webhooks>) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    loop {
        tick.tick().await;
        let before = now_ms().saturating_sub(w.max_age.as_millis() as u64);
        match w.store.outbox_trim(before, w.max_outbox).await {
            Ok((dropped, left)) => {
                if dropped > 0 {
                    tracing::warn!(dropped, "webhook events dropped (too old or too many)");
                    crate::metrics::webhook_events("dropped", dropped);
                }
                crate::metrics::webhook_outbox(left);
            }
            Err(e) => tracing::debug!("webhook outbox trim failed: {e}"),
        }
    }
}
