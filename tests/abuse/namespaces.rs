//! Namespace churn: made-up names under a pattern namespace, without a token.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::{Proc, metric, raw, rss_kib};

/// Sends `count` CONNECTs to fresh `/t-…` names on `conns` websockets and
/// waits for every refusal.
async fn churn(p: &Proc, start: usize, count: usize, conns: usize) {
    let per = count / conns;
    let mut tasks = Vec::new();
    for c in 0..conns {
        let addr = p.addr;
        tasks.push(tokio::spawn(async move {
            let mut s = raw::upgrade(addr).await;
            let mut batch = Vec::new();
            for i in 0..per {
                let name = format!("/t-x{}", start + c * per + i);
                batch.extend(raw::text(&format!(r#"40{name},{{"token":"forged"}}"#)));
            }
            s.write_all(&batch).await.unwrap();
            raw::read_texts(
                &mut s,
                per,
                |t| t.starts_with("44/t-x"),
                Duration::from_secs(60),
            )
            .await
            .len()
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    assert_eq!(
        refused,
        per * conns,
        "every CONNECT answered with connect_error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_namespace_churn_leaves_memory_flat() {
    let p = Proc::start(&[
        "--database-url",
        "memory",
        "--namespace",
        "/t-{tenant}",
        "--connect-timeout-ms",
        "120000",
    ]);
    // Rounds of 20,000 fresh names. The first four set the allocator's high
    // water mark (queued answers, read buffers, arenas: measured to level off
    // by 80,000 names); memory kept per name would show as growth across the
    // next six (about 0.7 KiB a name before: some 84 MB).
    let mut rss = Vec::new();
    for round in 0..10 {
        churn(&p, round * 100_000, 20_000, 10).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        rss.push(rss_kib(p.child.id()) as i64);
    }
    // Allocator warm-up can take a few rounds on a busy machine; over the
    // last 100,000 names memory must be flat (before the fix: ~70 MB).
    let grown = rss[9] - rss[4];
    let removed = metric(p.addr, "switchboard_namespaces_removed_total").await;
    println!(
        "namespace churn: RSS after each 20,000 names {rss:?} KiB; grew {grown} KiB over the last 100,000; {removed} namespaces removed"
    );
    assert!(removed >= 200_000.0, "removed {removed}");
    // 16 MiB: allocator noise reached 9 MiB on a slow VM; the bug was ~70 MB.
    assert!(
        grown < 16 * 1024,
        "RSS grew {grown} KiB for 100,000 made-up names"
    );
    // A real tenant still connects, and its namespace stays while in use.
    let t = switchboard::mint_hs256(
        crate::common::SECRET.as_bytes(),
        &switchboard::TokenSpec {
            sub: "alice".into(),
            ttl_secs: 600,
            tenant: Some("t-acme".into()),
            ..Default::default()
        },
    );
    let mut a = crate::Client::connect(p.addr, "/t-acme", Some(serde_json::json!({ "token": t })))
        .await
        .unwrap();
    let ack = a.ack("room:join", serde_json::json!("r")).await;
    assert_eq!(ack["success"], true, "{ack}");
    crate::assert_no_panic(&p);
}

/// Authenticated sockets in thousands of made-up child namespaces add no
/// metric series: the children are counted under their pattern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_namespace_names_add_no_metric_series() {
    let p = Proc::start(&[
        "--database-url",
        "memory",
        "--namespace",
        "/t-{tenant}",
        // One user in every namespace: the per-user cap is not the subject.
        "--max-connections-per-user",
        "0",
    ]);
    let token = crate::token("alice");
    let names = 2_000;
    let mut s = raw::upgrade(p.addr).await;
    let mut batch = Vec::new();
    for i in 0..names {
        batch.extend(raw::text(&format!(r#"40/t-n{i},{{"token":"{token}"}}"#)));
    }
    s.write_all(&batch).await.unwrap();
    let connected = raw::read_texts(
        &mut s,
        names,
        |t| t.starts_with("40/t-n"),
        Duration::from_secs(60),
    )
    .await
    .len();
    assert_eq!(connected, names, "every CONNECT accepted");
    let text = reqwest::get(format!("http://{}/metrics", p.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("switchboard_connections{"))
        .collect();
    println!(
        "{names} child namespaces with a socket each: {} switchboard_connections series: {:?}",
        series.len(),
        series.iter().take(3).collect::<Vec<_>>()
    );
    assert!(series.len() <= 2, "{} series", series.len());
    assert_eq!(
        metric(p.addr, "switchboard_connections{namespace=\"/t-{tenant}\"}").await,
        names as f64
    );
    drop(s);
    crate::assert_no_panic(&p);
}
