//! Slow consumers: a client that stops reading is disconnected; nobody else
//! misses anything; no ack is counted that was not sent.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::common::NO_RATE_LIMITS;
use crate::{Proc, in_room, metric, raw, token};

fn args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut a = vec!["--database-url", "memory", "--max-queued-packets", "512"];
    a.extend(NO_RATE_LIMITS);
    a.extend(extra);
    a
}

/// carol joins room `r` over a raw websocket and never reads again; returns
/// once `well` (in the room) has seen her join.
async fn stalled_member(p: &Proc, well: &crate::Client) -> tokio::net::TcpStream {
    let mut carol = raw::socket(p.addr, &token("carol")).await;
    carol
        .write_all(&raw::text(r#"42["room:join","r"]"#))
        .await
        .unwrap();
    while well.recv("room:user-joined").await["userId"] != "carol" {}
    carol
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_reading_is_disconnected_and_the_others_miss_nothing() {
    let p = Proc::start(&args(&[]));
    let well = in_room(&p, "well", "r").await;
    let mut poster = in_room(&p, "poster", "r").await;
    let mut carol = stalled_member(&p, &well).await;
    let body = "y".repeat(1500);
    let n = 20_000u64;
    for chunk in 0..(n / 500) {
        let rxs: Vec<_> = (0..500)
            .map(|i| {
                poster.emit_ack(
                    "chat:send",
                    json!({ "roomId": "r", "content": format!("{} {body}", chunk * 500 + i) }),
                )
            })
            .collect();
        for rx in rxs {
            let a = tokio::time::timeout(Duration::from_secs(30), rx)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(a["success"], true, "{a}");
        }
    }
    // The reader that keeps up gets every message, in order, no gap.
    for seq in 1..=n {
        let m = well.recv("chat:message").await;
        assert_eq!(m["seq"], seq, "gap before {seq}");
    }
    // carol was disconnected: she left the room, and her connection ends
    // with a close frame that says why.
    let left = well
        .try_recv("room:user-left", Duration::from_secs(15))
        .await;
    let log = p.log();
    let tail = &log[log.len().saturating_sub(3000)..];
    assert_eq!(
        left.unwrap_or_else(|| panic!("carol left; log: {tail}"))["userId"],
        "carol"
    );
    // Her kernel buffers are full, so the close frame only fits if she read
    // in time; otherwise the connection ends without one, 2 s later.
    let (close, texts) = raw::read_until_close(&mut carol, Duration::from_secs(30)).await;
    let got = texts.iter().filter(|t| t.contains("chat:message")).count();
    println!(
        "slow consumer: connection ended with {close:?} after {got} of {n} messages reached it"
    );
    assert!(got < n as usize, "carol got everything: she was not slow");
    if let Some((code, reason)) = close {
        assert_eq!(code, 1008);
        assert!(reason.contains("slow consumer"), "{reason}");
    }
    assert!(metric(p.addr, "switchboard_slow_consumer_disconnects_total").await >= 1.0);
    let log = p.log();
    assert_eq!(
        log.matches("slow consumer: outgoing queue full").count()
            + log
                .matches("slow consumer: websocket writes blocked")
                .count(),
        1,
        "logged once: {log}"
    );
    crate::assert_no_panic(&p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_counted_as_success_were_all_sent() {
    let p = Proc::start(&args(&["--api-key", "abuse-test-api-key-1"]));
    let mut x = raw::socket(p.addr, &token("xavier")).await;
    x.write_all(&raw::text(r#"42["room:join","x"]"#))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = metric(p.addr, "switchboard_acks_total{outcome=\"success\"}").await;
    // 30,000 acked sends, without reading a byte.
    let mut sent = 0;
    let mut batch = Vec::new();
    for i in 0..30_000 {
        batch.extend(raw::text(&format!(
            r#"42{i}["chat:send",{{"roomId":"x","content":"m{i} {}"}}]"#,
            "z".repeat(300)
        )));
        if batch.len() > 256 * 1024 {
            if x.write_all(&batch).await.is_err() {
                break;
            }
            sent = i + 1;
            batch.clear();
        }
    }
    let _ = x.write_all(&batch).await;
    // Now read what came back: acks, then the close.
    let (close, texts) = raw::read_until_close(&mut x, Duration::from_secs(60)).await;
    let acked: Vec<u64> = texts
        .iter()
        .filter(|t| t.starts_with("43"))
        .filter_map(|t| {
            let json = &t[t.find('[')?..];
            let v: serde_json::Value = serde_json::from_str(json).ok()?;
            (v[0]["success"] == true)
                .then(|| v[0]["seq"].as_u64())
                .flatten()
        })
        .collect();
    let counted = metric(p.addr, "switchboard_acks_total{outcome=\"success\"}").await - before;
    let dropped = metric(p.addr, "switchboard_acks_total{outcome=\"dropped\"}").await;
    let history = reqwest::Client::new()
        .get(format!("http://{}/api/rooms/x/messages?limit=1", p.addr))
        .bearer_auth("abuse-test-api-key-1")
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let stored = history["messages"][0]["seq"].as_u64().unwrap_or(0);
    println!(
        "ack flood: ~{sent} sent, {} acks received, {counted} counted as success, {dropped} dropped, {stored} stored, close {close:?}",
        acked.len()
    );
    assert_eq!(
        counted as usize,
        acked.len(),
        "success acks counted but never sent"
    );
    assert!(dropped >= 1.0, "the overflow was not seen");
    assert!(
        acked.iter().all(|s| *s <= stored),
        "an acked message is not stored"
    );
    // Ended: with its close frame when it fitted the peer's buffers.
    assert!(
        close.as_ref().is_none_or(|(code, _)| *code == 1008),
        "{close:?}"
    );
}

/// A backend posting to a room never hears of one member's full queue: that
/// member is closed as a slow consumer, and every post answers 201.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_posts_never_fail_because_one_member_reads_slowly() {
    const KEY: &str = "abuse-test-api-key-1";
    let p = Proc::start(&args(&["--api-key", KEY]));
    let well = in_room(&p, "well", "r").await;
    let carol = stalled_member(&p, &well).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/rooms/r/messages", p.addr);
    let body = "p".repeat(2000);
    let n = 5_000usize;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut first_error = None;
    for chunk in 0..n / 25 {
        let posts: Vec<_> = (0..25)
            .map(|i| {
                http.post(&url)
                    .bearer_auth(KEY)
                    .json(&json!({ "content": format!("{} {body}", chunk * 25 + i) }))
                    .send()
            })
            .collect();
        for post in futures_util::future::join_all(posts).await {
            let r = post.expect("post");
            let status = r.status().as_u16();
            if status >= 500 && first_error.is_none() {
                first_error = Some(r.text().await.unwrap_or_default());
            }
            *statuses.entry(status).or_default() += 1;
        }
    }
    println!(
        "{n} backend posts with a stalled member: statuses {statuses:?}, first 5xx {first_error:?}"
    );
    assert_eq!(
        statuses.get(&201),
        Some(&n),
        "{statuses:?}: {first_error:?}"
    );
    // The stalled member, not the backend, paid for it.
    let left = well
        .try_recv("room:user-left", Duration::from_secs(15))
        .await;
    assert_eq!(left.expect("carol was closed")["userId"], "carol");
    assert!(metric(p.addr, "switchboard_slow_consumer_disconnects_total").await >= 1.0);
    drop(carol);
    crate::assert_no_panic(&p);
}
