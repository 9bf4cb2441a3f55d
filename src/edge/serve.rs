//! The accept loop: HTTP/1.1 only, with the limits that must hold before a
//! request is read.
//!
//! * Connections in all and per source address are counted before anything
//!   else exists for them ([`crate::edge::conn_limits`]); a refused one gets a
//!   one-line JSON answer and is closed.
//! * hyper reads request headers under a deadline (`--header-timeout-ms`),
//!   which also closes connections that stay silent, idle keep-alive ones
//!   included (hyper restarts the same timer while it waits for the next
//!   request).
//! * Request bodies must arrive within `--body-timeout-ms` and at
//!   `--min-body-bytes-per-sec` ([`crate::edge::body_guard`]), for every route.
//! * Every connection is a [`GuardedIo`]: the websocket size limit read from
//!   frame headers, closes with a reason, write-stall tracking.
//! * The HTTP/1 read buffer is capped at hyper's minimum (8 KiB): hyper grows
//!   it to 16 KiB on the first reads and keeps it for the life of an upgraded
//!   websocket, which made it the largest part of an idle connection's memory.
//!
//! HTTP/2 is not served: browsers speak it only over TLS, which a proxy in
//! front ends. A client that opens with the HTTP/2 preface gets an error
//! answer from hyper's HTTP/1 parser and the connection is closed.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::edge::body_guard::{BodyRules, TimedBody, json_then_close, overdue};
use crate::edge::conn_limits::{ConnLimits, Slot, client_ip};
use crate::edge::guarded_io::{ConnHandle, Connections, GuardedIo};

/// hyper's smallest allowed HTTP/1 buffer.
pub const HTTP1_MAX_BUF: usize = 8192;

/// What the accept loop enforces; see `Config` for each flag.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub trusted_proxies: Vec<IpAddr>,
    pub max_message_bytes: u64,
    pub body: BodyRules,
    /// The server speaks msgpack: text Socket.IO packets are refused.
    pub msgpack: bool,
}

impl ServeLimits {
    pub fn from_config(config: &crate::Config) -> Self {
        ServeLimits {
            header_timeout: Duration::from_millis(config.header_timeout_ms),
            max_connections: config.effective_max_connections(),
            max_connections_per_ip: config.max_connections_per_ip,
            trusted_proxies: config.trusted_proxies.clone(),
            max_message_bytes: config.max_payload_bytes,
            msgpack: config.parser == crate::config::WireParser::Msgpack,
            body: BodyRules {
                timeout: Duration::from_millis(config.body_timeout_ms),
                min_rate: config.min_body_bytes_per_sec,
            },
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for the open HTTP connections to finish (upgraded
/// websockets are closed separately, by closing the Socket.IO server).
/// `connections` is the registry the Socket.IO side uses to find and close
/// connections (see [`crate::Switchboard::connections`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    connections: Arc<Connections>,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(HTTP1_MAX_BUF);
    let counts = ConnLimits::new(limits.max_connections, limits.max_connections_per_ip);
    let limits = Arc::new(limits);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let behind_proxy = limits.trusted_proxies.contains(&peer.ip());
        let slot = match counts.acquire((!behind_proxy).then_some(peer.ip())) {
            Ok(slot) => Arc::new(slot),
            Err(refused) => {
                crate::metrics::connection_refused(refused.as_str());
                // A fresh socket's send buffer is empty: this never blocks.
                let _ = tcp.try_write(refused.response().as_bytes());
                continue;
            }
        };
        // Small frames (acks, typing) must not wait for Nagle + delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let io = GuardedIo::new(
            tcp,
            slot.clone(),
            connections.clone(),
            limits.max_message_bytes,
            limits.msgpack,
        );
        let conn_ctx = PerConnection {
            router: router.clone(),
            handle: io.handle(),
            slot,
            peer,
            limits: limits.clone(),
            connections: connections.clone(),
        };
        let service = hyper::service::service_fn(move |req| conn_ctx.clone().call(req));
        let conn = http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!("connection ended: {e}");
                    }
                }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(stop_rx);
    let _ = stop_tx.send(true);
    // Resolves once every connection task has dropped its receiver.
    stop_tx.closed().await;
}

/// What each request of one connection needs.
#[derive(Clone)]
struct PerConnection {
    router: Router,
    handle: ConnHandle,
    slot: Arc<Slot>,
    peer: SocketAddr,
    limits: Arc<ServeLimits>,
    connections: Arc<Connections>,
}

impl PerConnection {
    async fn call(
        self,
        mut req: Request<Incoming>,
    ) -> Result<Response<axum::body::Body>, std::convert::Infallible> {
        let mut client = self.peer.ip();
        if self.limits.trusted_proxies.contains(&self.peer.ip()) {
            let forwarded = req
                .headers()
                .get("x-forwarded-for")
                .and_then(|h| h.to_str().ok());
            client = client_ip(self.peer.ip(), forwarded, &self.limits.trusted_proxies);
            if let Err(refused) = self.slot.rebind(client) {
                crate::metrics::connection_refused(refused.as_str());
                return Ok(refusal(refused));
            }
        }
        req.extensions_mut()
            .insert(crate::edge::conn_limits::ClientAddr(client));
        if let Some(sid) = websocket_upgrade_sid(req.uri()) {
            self.connections.bind_sid(sid, &self.handle);
        }
        req.extensions_mut().insert(self.handle);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        if hyper::body::Body::is_end_stream(req.body()) {
            return self.router.oneshot(req.map(axum::body::Body::new)).await;
        }
        let start = tokio::time::Instant::now();
        let (parts, body) = req.into_parts();
        let (body, progress) = TimedBody::new(body);
        let req = Request::from_parts(parts, axum::body::Body::new(body));
        tokio::select! {
            res = self.router.oneshot(req) => res,
            // The handler is dropped here, with what it had read of the body.
            broken = overdue(&progress, self.limits.body, start) => {
                tracing::debug!(peer = %self.peer, rule = broken.as_str(), "request body too slow; closing");
                crate::metrics::limit_hit(broken.as_str());
                crate::edge::trim::soon();
                Ok(broken.response())
            }
        }
    }
}

/// The answer to a request over a per-address limit (the connection closes).
fn refusal(refused: crate::edge::conn_limits::Refused) -> Response<axum::body::Body> {
    let text = refused.response();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    json_then_close(StatusCode::TOO_MANY_REQUESTS, body)
}

/// `sid` of a websocket request that upgrades an existing polling session.
fn websocket_upgrade_sid(uri: &axum::http::Uri) -> Option<&str> {
    let query = uri.query()?;
    if !query.split('&').any(|p| p == "transport=websocket") {
        return None;
    }
    query.split('&').find_map(|p| p.strip_prefix("sid="))
}
