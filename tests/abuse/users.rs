//! Connections per user (`--max-connections-per-user`): one token cannot
//! open connections without end, and the count stays exact however its
//! sockets end (`socket.disconnect()` racing the transport close, a
//! transport close, a dropped TCP connection, `41` alone).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::{Client, Proc, metric, raw, token};

const CAP: usize = 3;

/// Connects `sub`, retrying while the server still counts sockets that
/// were just closed (their clean-up runs after the close).
async fn connect_soon(p: &Proc, sub: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Client::connect(p.addr, "/", Some(json!({ "token": token(sub) }))).await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.message(), "too many connections for this user");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{sub} cannot connect: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_user_are_capped_and_counted_exactly() {
    let p = Proc::start(&[
        "--database-url",
        "memory",
        "--max-connections-per-user",
        &CAP.to_string(),
    ]);
    let rounds = 10;
    for round in 0..rounds {
        // Two client sockets and one raw websocket, all alice's.
        let mut a = connect_soon(&p, "alice").await;
        let b = connect_soon(&p, "alice").await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let raw_socket = loop {
            let mut s = raw::upgrade(p.addr).await;
            let open =
                raw::read_texts(&mut s, 1, |t| t.starts_with('0'), Duration::from_secs(5)).await;
            assert_eq!(open.len(), 1);
            s.write_all(&raw::text(&format!(
                r#"40{{"token":"{}"}}"#,
                token("alice")
            )))
            .await
            .unwrap();
            let answer =
                raw::read_texts(&mut s, 1, |t| t.starts_with('4'), Duration::from_secs(5)).await;
            if answer.first().is_some_and(|t| t.starts_with("40")) {
                break s;
            }
            assert!(Instant::now() < deadline, "round {round}: {answer:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // The cap: a fourth is refused, visibly; another user is not.
        let refused = Client::connect(p.addr, "/", Some(json!({ "token": token("alice") })))
            .await
            .err()
            .unwrap_or_else(|| panic!("round {round}: a 4th connection of alice was accepted"));
        assert_eq!(refused.message(), "too many connections for this user");
        let bob = connect_soon(&p, "bob").await;
        let ack = a.ack("ping", json!({})).await;
        assert!(ack["serverTs"].is_number(), "{ack}");
        // Every way to end, at once: `socket.disconnect()` with the
        // transport closed right behind it (socketioxide closes the socket
        // twice), a plain transport close, a dropped TCP connection.
        a.send_raw("41".into());
        a.close();
        b.close();
        drop(raw_socket);
        bob.close();
        // `41` alone: the namespace socket ends, the transport stays.
        let c = connect_soon(&p, "alice").await;
        c.send_raw("41".into());
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Exactly CAP places again: not fewer (a close not counted) and
        // not more (a close counted twice).
        let held = [
            connect_soon(&p, "alice").await,
            connect_soon(&p, "alice").await,
            connect_soon(&p, "alice").await,
        ];
        let over = Client::connect(p.addr, "/", Some(json!({ "token": token("alice") }))).await;
        assert!(
            over.is_err(),
            "round {round}: more than {CAP} connections after the closes"
        );
        for h in held {
            h.close();
        }
        c.close();
    }
    let hits = metric(
        p.addr,
        "switchboard_limit_hits_total{limit=\"max_connections_per_user\"}",
    )
    .await;
    println!("{rounds} rounds: {hits} connections refused at the cap of {CAP}");
    assert!(hits >= 2.0 * rounds as f64, "{hits}");
    crate::assert_no_panic(&p);
}
