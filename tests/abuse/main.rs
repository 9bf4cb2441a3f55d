//! The abuse suite: the real binary, attacked as a hostile client would, with
//! each bound asserted (docs/configuration.md, "Limits and abuse"). One file per concern.

#[path = "../realtime/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "../common/mod.rs"]
mod common;
mod raw;

mod api;
mod auth;
mod bodies;
mod escapes;
mod flood;
mod memory;
mod namespaces;
mod redis_stall;
mod slow;
mod static_links;
mod users;

mod transport;

pub use client::Client;
pub use common::{Proc, metric, token};
use serde_json::json;

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Connects `sub` to `/` on the process.
pub async fn user(p: &Proc, sub: &str) -> Client {
    Client::connect(p.addr, "/", Some(json!({ "token": token(sub) })))
        .await
        .unwrap_or_else(|e| panic!("connect {sub}: {e:?}"))
}

/// Connects `sub` and joins `room`.
pub async fn in_room(p: &Proc, sub: &str, room: &str) -> Client {
    let mut c = user(p, sub).await;
    let a = c.ack("room:join", json!(room)).await;
    assert_eq!(a["success"], true, "{a}");
    c
}

/// No log line of the process says that something panicked.
pub fn assert_no_panic(p: &Proc) {
    let log = p.log();
    assert!(!log.contains("panicked"), "a panic in the log:\n{log}");
}
