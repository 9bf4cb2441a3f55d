//! What one client can pin: a large message must not keep its size in the
//! connection's buffers after it was handled (tungstenite's read buffer kept
//! ~920 KB per connection that had sent one 900 KB event).

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::{Proc, raw, rss_kib, token};

const CLIENTS: usize = 50;

/// Documented bound (docs/configuration.md, "Limits and abuse"): memory a
/// connection keeps after one large message, beyond an idle one's.
const KEPT_PER_CONNECTION_KIB: i64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_large_message_does_not_pin_its_size() {
    let p = Proc::start(&["--database-url", "memory"]);
    let mut sockets = Vec::new();
    for i in 0..CLIENTS {
        let mut s = raw::socket(p.addr, &token(&format!("big{i}"))).await;
        // One small event first, so that what any first event sets up (the
        // user's rate limits) is in the baseline.
        s.write_all(&raw::text(
            r#"420["chat:send",{"roomId":"r","content":"hi"}]"#,
        ))
        .await
        .unwrap();
        let ack = raw::read_texts(
            &mut s,
            1,
            |t| t.starts_with("430["),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(ack.len(), 1, "no ack for the small event");
        sockets.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(p.child.id()) as i64;
    // Each sends one 900 KB event, refused as too large, and then idles.
    let content = "x".repeat(900_000);
    let event = format!(r#"421["chat:send",{{"roomId":"r","content":"{content}"}}]"#);
    let mut tasks = Vec::new();
    for mut s in sockets {
        let frame = raw::text(&event);
        tasks.push(tokio::spawn(async move {
            s.write_all(&frame).await.unwrap();
            let ack = raw::read_texts(
                &mut s,
                1,
                |t| t.starts_with("431["),
                Duration::from_secs(30),
            )
            .await;
            assert_eq!(ack.len(), 1, "no ack for the large event");
            assert!(ack[0].contains("too_large"), "{}", ack[0]);
            s
        }));
    }
    let mut sockets = Vec::new();
    for t in tasks {
        sockets.push(t.await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = rss_kib(p.child.id()) as i64;
    let per = (after - before) / CLIENTS as i64;
    println!(
        "{CLIENTS} clients x one 900 KB event: RSS {before} KiB before, {after} KiB after ({per} KiB kept per connection)"
    );
    // A large message still arrives whole, and the connections still work.
    let pad = "y".repeat(200_000);
    for s in sockets.iter_mut().take(5) {
        let ping = format!(r#"422["ping",{{"ts":7,"pad":"{pad}"}}]"#);
        s.write_all(&raw::text(&ping)).await.unwrap();
        let ack = raw::read_texts(s, 1, |t| t.starts_with("432["), Duration::from_secs(10)).await;
        assert_eq!(ack.len(), 1, "no ack for the ping");
        assert!(ack[0].contains(r#""ts":7"#), "{}", ack[0]);
    }
    assert!(
        per < KEPT_PER_CONNECTION_KIB,
        "{per} KiB kept per connection after one 900 KB message (bound {KEPT_PER_CONNECTION_KIB} KiB)"
    );
    crate::assert_no_panic(&p);
}
