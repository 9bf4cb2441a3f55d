//! Prometheus metrics: one recorder per process, and the few helpers the
//! rest of the code calls. Event names from clients are bounded to the known
//! ones ("other" for the rest) so a client cannot blow up label cardinality.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle that
/// renders it; `None` if another recorder was installed by an embedder.
pub fn init() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("seconds".into()),
                    &[
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ],
                )
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
        .inspect(|_| {
            HOT.get_or_init(Hot::new);
            ZEROS.get_or_init(zero_series);
        })
}

static ZEROS: OnceLock<()> = OnceLock::new();

/// The limits counted in `switchboard_limit_hits_total`, shown at zero from
/// the start (`tests/docs.rs` checks that every limit the code counts is here).
pub const LIMITS: &[&str] = &[
    "address_messages_per_sec",
    "connect_timeout_ms",
    "admin_event_bytes",
    "admin_events_bytes",
    "admin_events_waiting",
    "admin_login_backoff",
    "admin_login_busy",
    "admin_login_waiting",
    "doc_creations_per_min",
    "doc_joins_per_sec",
    "events_per_sec",
    "max_connections_per_user",
    "max_doc_bytes",
    "max_doc_memory_bytes",
    "max_payload_bytes",
    "max_redis_queue_bytes",
    "max_rooms_per_socket",
    "messages_per_sec",
    "static_dir_links",
    "body_timeout",
    "min_body_rate",
    "recovery_max_sessions",
    "yjs_max_update_bytes",
    "yjs_max_awareness_bytes",
    "yjs_max_doc_bytes",
    "yjs_max_memory_bytes",
    "yjs_awareness_clients",
];

/// The outcomes of `switchboard_recoveries_total`: `recovered`, or why not
/// (`recovery::Failure::label`; a test there checks each is listed).
pub const RECOVERY_OUTCOMES: &[&str] = &[
    "recovered",
    "malformed",
    "unknown_session",
    "other_user",
    "unknown_offset",
    "too_far_behind",
    "store_unavailable",
];

/// Every documented series that a counter or gauge has before anything
/// happened, registered at zero: a dashboard's `rate()` and an alert on
/// "absent" work from the first scrape instead of after the first event.
fn zero_series() {
    use metrics::{counter, gauge, histogram};
    gauge!("switchboard_connections", "namespace" => "/").increment(0.0);
    for kind in [
        "malformed",
        "unsupported_type",
        "invalid_room",
        "invalid_event",
        "unknown_namespace",
    ] {
        counter!("switchboard_emitter_dropped_total", "kind" => kind).increment(0);
    }
    for (path, reason) in [
        ("feeds", "redis_down"),
        ("feeds", "queue_full"),
        ("feeds", "publish_failed"),
        ("adapter", "consumer_behind"),
    ] {
        counter!("switchboard_redis_dropped_total", "path" => path, "reason" => reason)
            .increment(0);
    }
    let _ = histogram!("switchboard_store_write_seconds");
    for outcome in ["ok", "error"] {
        counter!("switchboard_store_messages_total", "outcome" => outcome).increment(0);
    }
    for reason in [
        "max_connections",
        "max_connections_per_ip",
        "parser_mismatch",
    ] {
        counter!("switchboard_connections_refused_total", "reason" => reason).increment(0);
    }
    for &limit in LIMITS {
        counter!("switchboard_limit_hits_total", "limit" => limit).increment(0);
    }
    for reason in ["rate_limited", "token_expired"] {
        counter!("switchboard_server_disconnects_total", "reason" => reason).increment(0);
    }
    counter!("switchboard_slow_consumer_disconnects_total").increment(0);
    counter!("switchboard_namespaces_removed_total").increment(0);
    counter!("switchboard_doc_ops_total").increment(0);
    counter!("switchboard_doc_conflicts_total").increment(0);
    for &outcome in RECOVERY_OUTCOMES {
        counter!("switchboard_recoveries_total", "outcome" => outcome).increment(0);
    }
    counter!("switchboard_recovery_replayed_total").increment(0);
    counter!("switchboard_recovery_duplicates_dropped_total").increment(0);
    counter!("switchboard_recovery_sessions_lost_total").increment(0);
    for outcome in ["ok", "error", "skipped"] {
        counter!("switchboard_jwks_refreshes_total", "outcome" => outcome).increment(0);
    }
    gauge!("switchboard_jwks_keys").set(0.0);
    for outcome in ["delivered", "retried", "dropped", "lost"] {
        counter!("switchboard_webhook_events_total", "outcome" => outcome).increment(0);
    }
    gauge!("switchboard_webhook_outbox").set(0.0);
    gauge!("switchboard_yjs_documents").set(0.0);
    gauge!("switchboard_yjs_connections").set(0.0);
    gauge!("switchboard_plain_connections").set(0.0);
    counter!("switchboard_yjs_updates_total").increment(0);
    counter!("switchboard_yjs_update_bytes_total").increment(0);
    counter!("switchboard_yjs_refused_total").increment(0);
    gauge!("switchboard_yjs_awareness_clients").set(0.0);
    // Set by the documents' eviction task at its first tick, which a scrape
    // right after start could precede.
    gauge!("switchboard_docs_held").set(0.0);
    gauge!("switchboard_docs_held_bytes").set(0.0);
    for hook in ["join", "publish", "rpc"] {
        let _ = histogram!("switchboard_hook_seconds", "hook" => hook);
        for outcome in ["answered", "failed", "circuit_open"] {
            counter!("switchboard_hook_calls_total", "hook" => hook, "outcome" => outcome)
                .increment(0);
        }
    }
}

/// Handles of the counters bumped for every event, made once the recorder is
/// installed. Looking a counter up by name and labels on each event cost
/// more than the rest of the counting (a registry lookup with hashing);
/// before `init` (unit tests) the helpers look up as before.
struct Hot {
    /// One per `CLIENT_EVENTS` entry, then "other".
    events_in: Vec<metrics::Counter>,
    /// One per `SERVER_EVENTS` entry.
    events_out: Vec<metrics::Counter>,
    acks_success: metrics::Counter,
}

static HOT: OnceLock<Hot> = OnceLock::new();

impl Hot {
    fn new() -> Hot {
        Hot {
            events_in: CLIENT_EVENTS
                .iter()
                .chain(&["other"])
                .map(|&name| metrics::counter!("switchboard_events_in_total", "event" => name))
                .collect(),
            events_out: SERVER_EVENTS
                .iter()
                .map(|&name| metrics::counter!("switchboard_events_out_total", "event" => name))
                .collect(),
            acks_success: metrics::counter!("switchboard_acks_total", "outcome" => "success"),
        }
    }
}

const CLIENT_EVENTS: &[&str] = &[
    "room:join",
    "chat:join",
    "room:leave",
    "room:members",
    "chat:send",
    "chat:message",
    "chat:history",
    "private:send",
    "typing:start",
    "typing:stop",
    "ping",
    "auth:refresh",
    "doc:join",
    "doc:operation",
    "doc:cursor",
    "doc:leave",
];

pub fn event_in(event: &str) {
    let i = CLIENT_EVENTS.iter().position(|e| *e == event);
    if let Some(hot) = HOT.get() {
        return hot.events_in[i.unwrap_or(CLIENT_EVENTS.len())].increment(1);
    }
    let name = i.map_or("other", |i| CLIENT_EVENTS[i]);
    metrics::counter!("switchboard_events_in_total", "event" => name).increment(1);
}

/// Events the server itself emits; counted without allocating a label.
const SERVER_EVENTS: &[&str] = &[
    "chat:message",
    "private:message",
    "room:user-joined",
    "chat:userJoined",
    "room:user-left",
    "typing:user",
    "typing:stopped",
    "pong",
    "doc:operation",
    "doc:cursor",
    "doc:sync",
];

/// A Redis emitter message dropped, by why (`cluster::emitter::Drop`).
pub fn emitter_dropped(kind: &'static str) {
    metrics::counter!("switchboard_emitter_dropped_total", "kind" => kind).increment(1);
}

/// An event sent out. The server's own names cost no allocation (this runs
/// per message); names chosen by backends are kept if at most 64 characters.
pub fn event_out(event: &str) {
    match SERVER_EVENTS.iter().position(|e| *e == event) {
        Some(i) => match HOT.get() {
            Some(hot) => hot.events_out[i].increment(1),
            None => metrics::counter!("switchboard_events_out_total", "event" => SERVER_EVENTS[i])
                .increment(1),
        },
        None => {
            let name = if event.len() <= 64 { event } else { "other" };
            metrics::counter!("switchboard_events_out_total", "event" => name.to_string())
                .increment(1)
        }
    }
}

/// Success acks written to a guarded websocket (counted there, once written,
/// so that one dropped with its connection is not counted).
pub fn acks_written(n: u64) {
    match HOT.get() {
        Some(hot) => hot.acks_success.increment(n),
        None => metrics::counter!("switchboard_acks_total", "outcome" => "success").increment(n),
    }
}

/// An ack sent to a client: "success" or the error code.
pub fn ack(outcome: &'static str) {
    metrics::counter!("switchboard_acks_total", "outcome" => outcome).increment(1);
}

pub fn connection_opened(ns: &str) {
    metrics::gauge!("switchboard_connections", "namespace" => ns.to_string()).increment(1.0);
}

pub fn connection_closed(ns: &str) {
    metrics::gauge!("switchboard_connections", "namespace" => ns.to_string()).decrement(1.0);
}

/// One store transaction (a batch of messages).
pub fn store_write(took: Duration, messages: usize, ok: bool) {
    metrics::histogram!("switchboard_store_write_seconds").record(took.as_secs_f64());
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!("switchboard_store_messages_total", "outcome" => outcome)
        .increment(messages as u64);
}

pub fn http_request(route: &str, status: u16) {
    metrics::counter!(
        "switchboard_http_requests_total",
        "route" => route.to_string(),
        "status" => status.to_string()
    )
    .increment(1);
}

/// A connection refused by a connection limit (`reason` is the limit's name).
pub fn connection_refused(reason: &'static str) {
    metrics::counter!("switchboard_connections_refused_total", "reason" => reason).increment(1);
}

/// A client hit a limit (`limit` is the flag's name without dashes' prefix).
pub fn limit_hit(limit: &'static str) {
    metrics::counter!("switchboard_limit_hits_total", "limit" => limit).increment(1);
}

/// A socket disconnected because it could not keep up with what was sent to it.
pub fn slow_consumer_disconnect() {
    metrics::counter!("switchboard_slow_consumer_disconnects_total").increment(1);
}

/// A socket disconnected by the server for a reason of its own (`reason`:
/// rate_limited, token_expired, ...).
pub fn server_disconnect(reason: &'static str) {
    metrics::counter!("switchboard_server_disconnects_total", "reason" => reason).increment(1);
}

/// An empty child namespace (of a pattern) was removed.
pub fn namespace_removed() {
    metrics::counter!("switchboard_namespaces_removed_total").increment(1);
}

/// Document ops committed (one batch of `n`).
pub fn doc_ops(n: usize) {
    metrics::counter!("switchboard_doc_ops_total").increment(n as u64);
}

/// A document commit lost the version race to another node and was redone.
pub fn doc_conflict() {
    metrics::counter!("switchboard_doc_conflicts_total").increment(1);
}

/// Documents held in memory on this node, and the bytes they take.
pub fn docs_held(docs: usize, bytes: usize) {
    metrics::gauge!("switchboard_docs_held").set(docs as f64);
    metrics::gauge!("switchboard_docs_held_bytes").set(bytes as f64);
}

/// A client asked to recover a session: `recovered` or why not.
pub fn recovery(outcome: &'static str) {
    metrics::counter!("switchboard_recoveries_total", "outcome" => outcome).increment(1);
}

/// Messages replayed to recovered sockets.
pub fn recovery_replayed(n: u64) {
    metrics::counter!("switchboard_recovery_replayed_total").increment(n);
}

/// A message not written because the socket already had it (a replayed
/// one that also came live, or the reverse).
pub fn recovery_duplicate_dropped() {
    metrics::counter!("switchboard_recovery_duplicates_dropped_total").increment(1);
}

/// Sessions that could not be written to the store.
pub fn recovery_sessions_lost(n: u64) {
    metrics::counter!("switchboard_recovery_sessions_lost_total").increment(n);
}

/// A JWKS fetch: `ok`, `error`, or `skipped` (an unknown `kid` too soon
/// after the last fetch).
pub fn jwks_refresh(outcome: &'static str) {
    metrics::counter!("switchboard_jwks_refreshes_total", "outcome" => outcome).increment(1);
}

/// Keys in the JWKS cache.
pub fn jwks_keys(n: usize) {
    metrics::gauge!("switchboard_jwks_keys").set(n as f64);
}

/// A hook call: `answered`, `failed` (timeout, error, unreadable answer) or
/// `circuit_open` (not called); with its time when it was called.
pub fn hook_call(hook: &'static str, outcome: &'static str, took: Option<Duration>) {
    metrics::counter!("switchboard_hook_calls_total", "hook" => hook, "outcome" => outcome)
        .increment(1);
    if let Some(t) = took {
        metrics::histogram!("switchboard_hook_seconds", "hook" => hook).record(t.as_secs_f64());
    }
}

/// Webhook events: `delivered`, `retried` (a batch that failed and waits),
/// `dropped` (too old or too many) or `lost` (could not be written).
pub fn webhook_events(outcome: &'static str, n: u64) {
    metrics::counter!("switchboard_webhook_events_total", "outcome" => outcome).increment(n);
}

/// Webhook events waiting in the outbox (as of the last trim).
pub fn webhook_outbox(n: u64) {
    metrics::gauge!("switchboard_webhook_outbox").set(n as f64);
}

/// Yjs documents loaded on this node (`delta`: +1 loaded, -1 unloaded).
pub fn yjs_loaded(delta: i64) {
    metrics::gauge!("switchboard_yjs_documents").increment(delta as f64);
}

/// Yjs clients (y-socket.io sockets and y-websocket peers) on this node.
/// Plain WebSocket clients connected (`/ws`), opened (+1) or closed (-1).
pub fn plain_connection(delta: i64) {
    metrics::gauge!("switchboard_plain_connections").increment(delta as f64);
}

pub fn yjs_connections(delta: i64) {
    metrics::gauge!("switchboard_yjs_connections").increment(delta as f64);
}

/// A Yjs update stored and applied.
pub fn yjs_update(bytes: usize) {
    metrics::counter!("switchboard_yjs_updates_total").increment(1);
    metrics::counter!("switchboard_yjs_update_bytes_total").increment(bytes as u64);
}

/// Awareness clients (cursors) this node's Yjs clients speak for.
pub fn yjs_awareness(delta: i64) {
    metrics::gauge!("switchboard_yjs_awareness_clients").increment(delta as f64);
}

/// A Yjs message or connection refused (its socket is ended).
pub fn yjs_refused() {
    metrics::counter!("switchboard_yjs_refused_total").increment(1);
}
