//! The MessageStore contract, on every backend: memory, SQLite on disk,
//! PostgreSQL in a throwaway database.

mod common;

use std::sync::Arc;

use common::PgDb;
use switchboard::store::{self, Appended, Conversation, MessageStore, NewMessage, Page, StoreUrl};

fn msg(conv: &Conversation, sender: &str, content: &str, cid: Option<&str>) -> NewMessage {
    NewMessage {
        conversation: conv.clone(),
        sender_id: sender.into(),
        sender_name: sender.to_uppercase(),
        to_user_id: None,
        content: content.into(),
        kind: "text".into(),
        client_msg_id: cid.map(String::from),
    }
}

/// Runs `body` against each backend with a fresh store (and a way to reopen it).
macro_rules! on_every_backend {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                let s = store::open(&StoreUrl::Memory).await.unwrap();
                ($body)(s, None::<StoreUrl>).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let url = StoreUrl::Sqlite(format!("sqlite://{}/chat.db", dir.path().display()));
                let s = store::open(&url).await.unwrap();
                ($body)(s, Some(url)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = PgDb::create().await;
                let url = StoreUrl::Postgres(db.url.clone());
                let s = store::open(&url).await.unwrap();
                ($body)(s, Some(url)).await;
                db.drop_db().await;
            }
        }
    };
}

on_every_backend!(pagination, async |s: Arc<dyn MessageStore>, _| {
    let c = Conversation::room("/", "general");
    for i in 1..=30u64 {
        let a = s
            .append(msg(&c, "alice", &format!("m{i}"), None))
            .await
            .unwrap();
        assert_eq!(a.message().seq, i);
    }
    let seqs = |v: Vec<store::Message>| v.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(s.history(&c, Page::Latest, 100).await.unwrap()),
        (1..=30).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(s.history(&c, Page::Latest, 3).await.unwrap()),
        [28, 29, 30]
    );
    assert_eq!(
        seqs(s.history(&c, Page::Before(28), 3).await.unwrap()),
        [25, 26, 27]
    );
    assert_eq!(seqs(s.history(&c, Page::Before(2), 10).await.unwrap()), [1]);
    assert!(s.history(&c, Page::Before(1), 10).await.unwrap().is_empty());
    // Forward, from the last seq a client holds: oldest first, no gap.
    assert_eq!(
        seqs(s.history(&c, Page::After(0), 3).await.unwrap()),
        [1, 2, 3]
    );
    assert_eq!(
        seqs(s.history(&c, Page::After(25), 10).await.unwrap()),
        [26, 27, 28, 29, 30]
    );
    assert!(s.history(&c, Page::After(30), 10).await.unwrap().is_empty());
    assert!(
        s.history(&c, Page::After(u64::MAX), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.history(&Conversation::room("/", "other"), Page::Latest, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.history(&Conversation::room("/acme", "general"), Page::Latest, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let m = &s.history(&c, Page::Before(2), 1).await.unwrap()[0];
    assert_eq!(
        (m.content.as_str(), m.sender_name.as_str()),
        ("m1", "ALICE")
    );
    assert_eq!(m.room_id.as_deref(), Some("general"));
});

on_every_backend!(
    concurrent_senders_get_gap_free_seq,
    async |s: Arc<dyn MessageStore>, _| {
        let c = Conversation::room("/", "busy");
        let mut tasks = Vec::new();
        for sender in 0..20 {
            let s = s.clone();
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..25 {
                    let a = s
                        .append(msg(&c, &format!("u{sender}"), &format!("{i}"), None))
                        .await
                        .unwrap();
                    seqs.push(a.message().seq);
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            let seqs = t.await.unwrap();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "one sender's seqs rise: {seqs:?}"
            );
            all.extend(seqs);
        }
        all.sort();
        assert_eq!(all, (1..=500).collect::<Vec<_>>());
        let h = s.history(&c, Page::Latest, 100).await.unwrap();
        assert_eq!(h.len(), 100);
        assert_eq!(h.last().unwrap().seq, 500);
    }
);

on_every_backend!(
    appends_are_ordered_when_queued_together,
    async |s: Arc<dyn MessageStore>, _| {
        // Futures taken in order but awaited later (pipelining) keep their order.
        let c = Conversation::room("/", "pipe");
        let futs: Vec<_> = (0..200)
            .map(|i| s.append(msg(&c, "a", &format!("{i}"), None)))
            .collect();
        for (i, f) in futs.into_iter().enumerate() {
            let m = f.await.unwrap();
            assert_eq!(m.message().seq, i as u64 + 1);
            assert_eq!(m.message().content, i.to_string());
        }
    }
);

on_every_backend!(
    client_msg_id_dedup,
    async |s: Arc<dyn MessageStore>, url: Option<StoreUrl>| {
        let c = Conversation::room("/", "general");
        // Two retries queued together land in one batch.
        let f1 = s.append(msg(&c, "alice", "once", Some("cid-1")));
        let f2 = s.append(msg(&c, "alice", "once again", Some("cid-1")));
        let (a, b) = (f1.await.unwrap(), f2.await.unwrap());
        assert!(matches!(a, Appended::New(_)));
        assert_eq!(b, Appended::Duplicate(a.message().clone()));
        // Another user, or another namespace, may use the same id.
        let other = s
            .append(msg(&c, "bob", "mine", Some("cid-1")))
            .await
            .unwrap();
        assert!(matches!(other, Appended::New(_)));
        let tenant = Conversation::room("/acme", "general");
        assert!(matches!(
            s.append(msg(&tenant, "alice", "x", Some("cid-1")))
                .await
                .unwrap(),
            Appended::New(_)
        ));
        // The same user in another room: still the first message (ids are per user).
        let elsewhere = s
            .append(msg(
                &Conversation::room("/", "random"),
                "alice",
                "?",
                Some("cid-1"),
            ))
            .await
            .unwrap();
        assert_eq!(elsewhere, Appended::Duplicate(a.message().clone()));
        assert_eq!(s.history(&c, Page::Latest, 10).await.unwrap().len(), 2);
        // After a restart the first message is still found.
        if let Some(url) = url {
            drop(s);
            let reopened = store::open(&url).await.unwrap();
            let again = reopened
                .append(msg(&c, "alice", "after restart", Some("cid-1")))
                .await
                .unwrap();
            assert_eq!(again, Appended::Duplicate(a.message().clone()));
            let next = reopened
                .append(msg(&c, "alice", "new", None))
                .await
                .unwrap();
            assert_eq!(next.message().seq, 3, "counter survives the restart");
        }
    }
);

on_every_backend!(direct_conversations, async |s: Arc<dyn MessageStore>, _| {
    let ab = Conversation::direct("/", "alice", "bob");
    assert_eq!(ab, Conversation::direct("/", "bob", "alice"));
    let mut m = msg(&ab, "alice", "psst", None);
    m.to_user_id = Some("bob".into());
    let a = s.append(m).await.unwrap();
    assert_eq!(a.message().seq, 1);
    assert_eq!(a.message().room_id, None);
    assert_eq!(a.message().to_user_id.as_deref(), Some("bob"));
    let h = s
        .history(&Conversation::direct("/", "bob", "alice"), Page::Latest, 10)
        .await
        .unwrap();
    assert_eq!(h.len(), 1);
    assert!(
        s.history(
            &Conversation::direct("/", "alice", "carol"),
            Page::Latest,
            10
        )
        .await
        .unwrap()
        .is_empty()
    );
    assert!(
        s.history(&Conversation::room("/", "alice"), Page::Latest, 10)
            .await
            .unwrap()
            .is_empty()
    );
});

on_every_backend!(
    recovery_sessions,
    async |s: Arc<dyn MessageStore>, reopen: Option<StoreUrl>| {
        use switchboard::store::SavedSession;
        let saved = |pid: &str, user: &str, expires_ms: u64| SavedSession {
            pid: pid.into(),
            user_key: format!("/|{user}"),
            expires_ms,
            body: format!("{{\"pid\":\"{pid}\"}}"),
        };
        let now = store::now_ms();
        let later = now + 60_000;
        // Three of alice's, bound 2: the oldest goes.
        s.save_sessions(
            &[
                saved("a1", "alice", later),
                saved("a2", "alice", later + 1),
                saved("b1", "bob", now - 1),
            ],
            &[],
            2,
        )
        .await
        .unwrap();
        s.save_sessions(&[saved("a3", "alice", later + 2)], &[], 2)
            .await
            .unwrap();
        assert_eq!(
            s.load_session("a1", now).await.unwrap(),
            None,
            "the oldest went"
        );
        assert_eq!(
            s.load_session("a3", now).await.unwrap(),
            Some(saved("a3", "alice", later + 2))
        );
        assert_eq!(s.load_session("b1", now).await.unwrap(), None, "expired");
        // Saved again under the same pid: replaced, not doubled.
        s.save_sessions(&[saved("a3", "alice", later + 5)], &["a2".into()], 2)
            .await
            .unwrap();
        assert_eq!(s.load_session("a2", now).await.unwrap(), None, "forgotten");
        assert_eq!(
            s.load_session("a3", now).await.unwrap().unwrap().expires_ms,
            later + 5
        );
        assert_eq!(s.sweep_sessions(now).await.unwrap(), 1, "b1 swept, a3 left");
        // Sessions outlive a restart.
        if let Some(url) = reopen {
            drop(s);
            let s = store::open(&url).await.unwrap();
            assert!(s.load_session("a3", now).await.unwrap().is_some());
        }
    }
);

on_every_backend!(direct_since, async |s: Arc<dyn MessageStore>, _| {
    let dm = |from: &str, to: &str, content: &str| {
        let mut m = msg(&Conversation::direct("/", from, to), from, content, None);
        m.to_user_id = Some(to.into());
        m
    };
    s.append(dm("bob", "alice", "old")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let since = store::now_ms();
    s.append(dm("bob", "alice", "b1")).await.unwrap();
    s.append(dm("alice", "carol", "c1")).await.unwrap();
    s.append(dm("bob", "alice", "b2")).await.unwrap();
    s.append(dm("bob", "carol", "not alice's")).await.unwrap();
    s.append(msg(&Conversation::room("/", "r"), "bob", "a room", None))
        .await
        .unwrap();
    let mut got: Vec<(String, u64)> = s
        .direct_since("/", "alice", since, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.content, m.seq))
        .collect();
    got.sort();
    assert_eq!(got, [("b1".into(), 2), ("b2".into(), 3), ("c1".into(), 1)]);
    assert_eq!(
        s.direct_since("/", "alice", since, 2).await.unwrap().len(),
        2
    );
    assert!(
        s.direct_since("/t", "alice", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
});

on_every_backend!(
    webhook_outbox,
    async |s: Arc<dyn MessageStore>, url: Option<StoreUrl>| {
        use switchboard::documents::store::{
            Commit, CommitError, DocKey, DocStore, MemoryDocs, StoredOp,
        };
        use switchboard::store::{OutboxEvent, document_event};
        let ids = |v: Vec<OutboxEvent>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        let plain = |n: u64| OutboxEvent::new("member.joined", serde_json::json!({ "n": n }));
        let version_of = |e: &OutboxEvent| {
            serde_json::from_str::<serde_json::Value>(&e.body).unwrap()["data"]["version"].as_u64()
        };
        let (a, b) = (plain(1), plain(2));
        s.outbox_push(&[a.clone(), b.clone()]).await.unwrap();
        // A document's edits fold into one event, due a minute after the first.
        let d1 = document_event("/", "doc", 1, 60_000);
        s.outbox_push(std::slice::from_ref(&d1)).await.unwrap();
        let c = plain(3);
        s.outbox_push(std::slice::from_ref(&c)).await.unwrap();
        let d2 = document_event("/", "doc", 2, 60_000);
        s.outbox_push(std::slice::from_ref(&d2)).await.unwrap();
        let now = store::now_ms();
        assert_eq!(
            ids(s.outbox_next(10, now).await.unwrap()),
            [a.id.clone(), b.id.clone(), c.id.clone()],
            "not due yet"
        );
        let due = s.outbox_next(10, d1.due_ms).await.unwrap();
        assert_eq!(due.len(), 4, "one event for the document");
        let folded = &due[3];
        assert_eq!(folded.id, d2.id);
        assert_eq!(version_of(folded), Some(2), "the latest version");
        assert_eq!(
            (folded.created_ms, folded.due_ms),
            (d1.created_ms, d1.due_ms)
        );
        // An edit while the folded event is being sent: a delivery of what
        // was read removes that, and the newer one stays.
        let d3 = document_event("/", "doc", 3, 60_000);
        s.outbox_push(std::slice::from_ref(&d3)).await.unwrap();
        let sent: Vec<String> = due.iter().map(|e| e.id.clone()).collect();
        s.outbox_done(&sent).await.unwrap();
        let left = s.outbox_next(10, u64::MAX >> 2).await.unwrap();
        assert_eq!(ids(left.clone()), vec![d3.id.clone()]);
        assert_eq!(version_of(&left[0]), Some(3));
        s.outbox_done(std::slice::from_ref(&d3.id)).await.unwrap();
        // An edit to an event already due (maybe on its way) waits a
        // debounce of its own.
        let mut due_now = document_event("/", "late", 1, 0);
        due_now.due_ms = 1;
        s.outbox_push(std::slice::from_ref(&due_now)).await.unwrap();
        let after = document_event("/", "late", 2, 60_000);
        s.outbox_push(std::slice::from_ref(&after)).await.unwrap();
        let got = s.outbox_next(10, u64::MAX >> 2).await.unwrap();
        assert_eq!(ids(got.clone()), vec![after.id.clone()]);
        assert_eq!(
            (got[0].created_ms, got[0].due_ms),
            (after.created_ms, after.due_ms)
        );
        assert!(
            s.outbox_next(10, after.due_ms - 1)
                .await
                .unwrap()
                .is_empty()
        );
        s.outbox_done(std::slice::from_ref(&after.id))
            .await
            .unwrap();
        // The key is free again: the next edit waits a debounce of its own.
        let d4 = document_event("/", "doc", 4, 60_000);
        s.outbox_push(std::slice::from_ref(&d4)).await.unwrap();
        assert!(s.outbox_next(10, d4.due_ms - 1).await.unwrap().is_empty());
        assert_eq!(
            ids(s.outbox_next(10, d4.due_ms).await.unwrap()),
            vec![d4.id.clone()]
        );
        // Bounded: the oldest beyond the size go, then nothing is left.
        let many: Vec<OutboxEvent> = (0..5).map(plain).collect();
        s.outbox_push(&many).await.unwrap();
        assert_eq!(s.outbox_trim(0, 3).await.unwrap(), (3, 3));
        assert_eq!(
            ids(s.outbox_next(10, u64::MAX >> 2).await.unwrap()),
            [many[2].id.clone(), many[3].id.clone(), many[4].id.clone()]
        );
        assert_eq!(s.outbox_trim(u64::MAX >> 2, 100).await.unwrap(), (3, 0));

        // A document commit writes its event in its own transaction: a
        // commit that loses the version race writes none.
        let docs: Arc<dyn DocStore> = match &url {
            Some(u) => switchboard::documents::open_both(u).await.unwrap().1,
            None => Arc::new(MemoryDocs::with_outbox(s.clone())),
        };
        let key = DocKey::new("/", "d");
        let op = |v: u64| StoredOp {
            version: v,
            op: switchboard::documents::ot::Op::Insert {
                pos: 0,
                text: "x".into(),
            },
            user_id: "alice".into(),
            op_id: None,
        };
        let commit = |expected: u64, e: Option<&OutboxEvent>| {
            let ops = vec![op(expected + 1)];
            let docs = docs.clone();
            let key = key.clone();
            let e = e.cloned();
            async move {
                docs.commit(Commit {
                    key: &key,
                    expected,
                    ops: &ops,
                    snapshot: None,
                    prune_through: None,
                    event: e.as_ref(),
                })
                .await
            }
        };
        let won = document_event("/", "d", 1, 0);
        commit(0, Some(&won)).await.unwrap();
        let lost = document_event("/", "d", 99, 0);
        assert!(matches!(
            commit(0, Some(&lost)).await,
            Err(CommitError::Conflict)
        ));
        let got = s.outbox_next(10, u64::MAX >> 2).await.unwrap();
        assert_eq!(ids(got.clone()), vec![won.id.clone()]);
        assert_eq!(version_of(&got[0]), Some(1));
    }
);

on_every_backend!(
    yjs_documents,
    async |s: Arc<dyn MessageStore>, url: Option<StoreUrl>| {
        use switchboard::documents::store::{DocKey, DocStore, MemoryDocs};
        let open = async |u: &Option<StoreUrl>| -> Arc<dyn DocStore> {
            match u {
                Some(u) => switchboard::documents::open_both(u).await.unwrap().1,
                None => Arc::new(MemoryDocs::with_outbox(s.clone())),
            }
        };
        let docs = open(&url).await;
        let key = DocKey::new("/", "y");
        let empty = docs.yjs_load(&key, 0).await.unwrap();
        assert_eq!((empty.seq, empty.updates.len()), (0, 0), "never stored");
        for i in 1..=5u8 {
            assert_eq!(docs.yjs_append(&key, &[i, i]).await.unwrap(), i as u64);
        }
        // Another document has seqs of its own; a tenant's is apart.
        assert_eq!(
            docs.yjs_append(&DocKey::new("/", "z"), &[9]).await.unwrap(),
            1
        );
        assert_eq!(
            docs.yjs_append(&DocKey::new("/t", "y"), &[8])
                .await
                .unwrap(),
            1
        );
        let all = docs.yjs_load(&key, 0).await.unwrap();
        assert_eq!(all.seq, 5);
        assert_eq!(
            all.updates,
            (1..=5u8).map(|i| vec![i, i]).collect::<Vec<_>>()
        );
        // A snapshot through 3 leaves 4 and 5 after it.
        docs.yjs_compact(&key, b"state-3", 3).await.unwrap();
        let after = docs.yjs_load(&key, 0).await.unwrap();
        assert_eq!(after.snapshot, b"state-3");
        assert_eq!((after.snapshot_seq, after.seq), (3, 5));
        assert_eq!(after.updates, vec![vec![4, 4], vec![5, 5]]);
        // A reader that has everything through 4 gets 5 alone; one that
        // has through 2 (the snapshot holds more) gets the snapshot too.
        let tail = docs.yjs_load(&key, 4).await.unwrap();
        assert_eq!((tail.snapshot.len(), tail.seq), (0, 5));
        assert_eq!(tail.updates, vec![vec![5, 5]]);
        let behind = docs.yjs_load(&key, 2).await.unwrap();
        assert_eq!(behind.snapshot, b"state-3");
        assert_eq!((behind.seq, behind.updates.len()), (5, 2));
        let current = docs.yjs_load(&key, 5).await.unwrap();
        assert_eq!(
            (current.snapshot.len(), current.updates.len(), current.seq),
            (0, 0, 5)
        );
        // An older snapshot (a slower node's) does not go back.
        docs.yjs_compact(&key, b"state-2", 2).await.unwrap();
        assert_eq!(docs.yjs_load(&key, 0).await.unwrap().snapshot, b"state-3");
        assert_eq!(docs.yjs_append(&key, &[6]).await.unwrap(), 6);
        // What was stored is there after a reopen.
        if url.is_some() {
            let again = open(&url).await.yjs_load(&key, 0).await.unwrap();
            assert_eq!(again.snapshot, b"state-3");
            assert_eq!(again.updates, vec![vec![4, 4], vec![5, 5], vec![6]]);
        }
    }
);
