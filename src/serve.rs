//! The accept loop. axum's `serve` cannot configure hyper; this one caps the
//! HTTP/1 read buffer at hyper's minimum (8 KiB). hyper grows that buffer to
//! 16 KiB on the first reads and keeps it for the life of an upgraded
//! websocket, which made it the largest part of an idle connection's memory.

use std::future::Future;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// hyper's smallest allowed HTTP/1 buffer.
pub const HTTP1_MAX_BUF: usize = 8192;

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for the open HTTP connections to finish (upgraded
/// websockets are closed separately, by closing the Socket.IO server).
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
    // HTTP/1 only: browsers speak HTTP/2 only over TLS, which a proxy ends;
    // skipping the version sniff saves a buffer per connection.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().max_buf_size(HTTP1_MAX_BUF);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small frames (acks, typing) must not wait for Nagle + delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let service = TowerToHyperService::new(router.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    graceful.shutdown().await;
}
