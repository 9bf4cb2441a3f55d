//! Event names with JSON escapes (`"a\"b"`, `"\u00e9"`) are refused with an
//! error ack; the connection stays open. Raw Unicode names are plain names.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{Proc, assert_no_panic, token, user};

const NAMES: &[&str] = &[r#""a\"b""#, r#""\u00e9""#, r#""back\\slash""#];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_event_names_get_an_error_ack_over_websocket() {
    let p = Proc::start(&["--database-url", "memory"]);
    let mut c = user(&p, "alice").await;
    for name in NAMES {
        let a = c.ack_text(&format!("[{name},{{}}]")).await;
        assert_eq!(a["success"], false, "{name}: {a}");
        assert_eq!(a["code"], "invalid_payload", "{name}: {a}");
    }
    // Unicode without escapes is an ordinary (unknown) name.
    let a = c.ack("é ünï", json!({})).await;
    assert_eq!(a["code"], "not_found", "{a}");
    // Still connected, and served.
    let a = c.ack("room:join", json!("r1")).await;
    assert_eq!(a["success"], true, "{a}");
    assert!(!c.closed(Duration::from_millis(200)).await);
    assert_no_panic(&p);
}

/// One long-polling request; the packets of the answer.
async fn poll(http: &reqwest::Client, url: &str, body: Option<String>) -> Vec<String> {
    let r = match body {
        Some(b) => http.post(url).body(b).send().await.unwrap(),
        None => http.get(url).send().await.unwrap(),
    };
    assert!(r.status().is_success(), "{url}: {}", r.status());
    let text = r.text().await.unwrap();
    text.split('\u{1e}').map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_event_names_get_an_error_ack_over_long_polling() {
    let p = Proc::start(&["--database-url", "memory"]);
    let http = reqwest::Client::new();
    let base = format!("http://{}/socket.io/?EIO=4&transport=polling", p.addr);
    let open = poll(&http, &base, None).await;
    let open: Value = serde_json::from_str(&open[0][1..]).unwrap();
    let url = format!("{base}&sid={}", open["sid"].as_str().unwrap());
    poll(
        &http,
        &url,
        Some(format!("40{}", json!({ "token": token("bob") }))),
    )
    .await;
    let mut connected = Vec::new();
    for _ in 0..5 {
        connected.extend(poll(&http, &url, None).await);
        if connected.iter().any(|p| p.starts_with("40{")) {
            break;
        }
    }
    assert!(
        connected.iter().any(|p| p.starts_with("40{")),
        "{connected:?}"
    );
    // All three in one body, then one that must still be served.
    let body: Vec<String> = NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| format!("42{}[{name},{{}}]", i + 1))
        .chain(["429[\"room:join\",\"r1\"]".to_string()])
        .collect();
    poll(&http, &url, Some(body.join("\u{1e}"))).await;
    let mut acks = Vec::new();
    for _ in 0..10 {
        let packets = poll(&http, &url, None).await;
        if packets.iter().any(|p| p == "2") {
            poll(&http, &url, Some("3".into())).await;
        }
        acks.extend(packets.into_iter().filter(|p| p.starts_with("43")));
        if acks.len() == NAMES.len() + 1 {
            break;
        }
    }
    acks.sort();
    assert_eq!(acks.len(), NAMES.len() + 1, "{acks:?}");
    for (i, ack) in acks.iter().take(NAMES.len()).enumerate() {
        assert!(ack.starts_with(&format!("43{}[", i + 1)), "{ack}");
        assert!(ack.contains("invalid_payload"), "{ack}");
    }
    assert!(acks[NAMES.len()].contains(r#""success":true"#), "{acks:?}");
    assert_no_panic(&p);
}
