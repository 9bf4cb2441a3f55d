//! A client that floods: refused with `rate_limited`, then disconnected,
//! while a well-behaved client's acks stay quick.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{Proc, in_room, metric};

/// Ack latencies of `n` sends, one every `every`.
async fn paced_sends(
    c: &mut crate::Client,
    room: &str,
    n: usize,
    every: Duration,
) -> Vec<Duration> {
    let mut out = Vec::new();
    for i in 0..n {
        let start = Instant::now();
        let a = c
            .ack(
                "chat:send",
                json!({ "roomId": room, "content": format!("calm {i}") }),
            )
            .await;
        assert_eq!(a["success"], true, "{a}");
        out.push(start.elapsed());
        tokio::time::sleep(every).await;
    }
    out
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_limited_then_disconnected_and_others_stay_quick() {
    // Defaults: 20 messages/s per user (burst 60), 100 events/s per socket
    // (burst 300), disconnect after more than 100 refusals in 10 s.
    let p = Proc::start(&["--database-url", "memory"]);
    let mut calm = in_room(&p, "calm", "quiet").await;
    let unloaded = p99(paced_sends(&mut calm, "quiet", 40, Duration::from_millis(25)).await);

    let mut flood = in_room(&p, "flood", "noisy").await;
    let acks: Vec<_> = (0..3000)
        .map(|i| {
            flood.emit_ack(
                "chat:send",
                json!({ "roomId": "noisy", "content": format!("x{i}") }),
            )
        })
        .collect();
    let calm_task = tokio::spawn(async move {
        let l = paced_sends(&mut calm, "quiet", 40, Duration::from_millis(25)).await;
        (calm, l)
    });
    let (mut ok, mut limited, mut unanswered) = (0, 0, 0);
    // One deadline for all the acks.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for rx in acks {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(a)) if a["success"] == true => ok += 1,
            Ok(Ok(a)) => {
                assert_eq!(a["code"], "rate_limited", "{a}");
                limited += 1;
            }
            _ => unanswered += 1,
        }
    }
    let closing = flood
        .try_recv("server:closing", Duration::from_secs(2))
        .await;
    let closed = flood.closed(Duration::from_secs(5)).await;
    let (_calm, loaded) = calm_task.await.unwrap();
    let loaded = p99(loaded);
    println!(
        "flood of 3000 sends: {ok} accepted, {limited} rate_limited, {unanswered} after the disconnect; calm client's ack p99 {unloaded:?} unloaded, {loaded:?} during the flood"
    );
    assert!(
        ok <= 60 + 40,
        "accepted {ok}: more than the burst and the rate allow"
    );
    assert!(limited >= 100, "{limited} refusals");
    // Sends that reached the server after its disconnect go unanswered.
    // The disconnect waits until the client has been quiet for 500 ms, so
    // usually there are none (before the fix: ~2,800); but this client's
    // writer can stall that long when the whole suite shares two cores, so
    // "every send answered" is asserted with the real socket.io-client in
    // client-compat/test/lifecycle.test.mjs instead.
    println!("{unanswered} sends unanswered");
    assert_eq!(closing.expect("server:closing")["reason"], "rate_limited");
    assert!(closed, "the flooding socket is still connected");
    assert!(
        loaded <= (unloaded * 3).max(Duration::from_millis(50)),
        "calm p99 {loaded:?} during the flood, {unloaded:?} before"
    );
    assert!(
        metric(
            p.addr,
            "switchboard_server_disconnects_total{reason=\"rate_limited\"}"
        )
        .await
            >= 1.0
    );
    crate::assert_no_panic(&p);
}

/// Many tokens from one address add up to one address's worth of messages
/// (`--address-messages-per-sec`), although each user stays within its own
/// limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tokens_from_one_address_share_its_message_rate() {
    let p = Proc::start(&[
        "--database-url",
        "memory",
        "--address-messages-per-sec",
        "50",
        "--address-message-burst",
        "100",
    ]);
    let users = 30;
    let per_user = 30; // under the per-user burst of 60
    let mut clients = Vec::new();
    for u in 0..users {
        clients.push(in_room(&p, &format!("u{u}"), "shared").await);
    }
    let start = Instant::now();
    let mut pending = Vec::new();
    for (u, c) in clients.iter_mut().enumerate() {
        for i in 0..per_user {
            pending.push(c.emit_ack(
                "chat:send",
                json!({ "roomId": "shared", "content": format!("u{u} m{i}") }),
            ));
        }
    }
    let (mut ok, mut by_address) = (0, 0);
    for rx in pending {
        let a = tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .expect("every send is answered")
            .unwrap();
        if a["success"] == true {
            ok += 1;
        } else {
            assert_eq!(a["code"], "rate_limited", "{a}");
            assert!(a["error"].as_str().unwrap().contains("address"), "{a}");
            by_address += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{users} tokens x {per_user} messages from one address in {secs:.2} s: {ok} accepted, {by_address} refused for the address"
    );
    assert!(
        (ok as f64) <= 100.0 + 50.0 * secs + 5.0,
        "{ok} accepted in {secs:.2} s: more than the address's burst and rate"
    );
    assert!(ok >= 100, "{ok}: the burst was not granted");
    assert!(
        metric(
            p.addr,
            "switchboard_limit_hits_total{limit=\"address_messages_per_sec\"}"
        )
        .await
            >= by_address as f64
    );
    crate::assert_no_panic(&p);
}
