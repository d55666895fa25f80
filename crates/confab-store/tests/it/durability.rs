//! What was acknowledged is there after the store is closed (or dropped) and
//! reopened, and positions continue where they stopped.

use confab_store::{AppRecord, SqliteConfig, SqliteStore, Store};

use crate::text;

#[tokio::test]
async fn everything_survives_reopen_and_seqs_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("confab.db");
    let app = AppRecord {
        app_id: 9,
        secret: "0123456789abcdef0123456789abcdef".into(),
        name: "dev".into(),
        created_ms: 5,
    };

    let store = SqliteStore::open(SqliteConfig::new(&path)).expect("open");
    store.put_app(&app).await.expect("put_app");
    store.touch_user(1, "bob", "Bob", 10).await.expect("touch");
    let mut sent = Vec::new();
    for i in 1..=6 {
        let (from, to) = if i % 3 == 0 {
            ("bob", "alice")
        } else {
            ("alice", "bob")
        };
        sent.push(
            store
                .append_peer(text(from, to, i, 1_000 + i64::try_from(i).unwrap()))
                .await
                .expect("append")
                .message,
        );
    }
    store
        .append_peer(text("alice", "bob", u64::MAX, 2_000))
        .await
        .expect("append max");
    store.ack_inbox(1, "bob", 3).await.expect("ack");
    store.purge_before(1_002).await.expect("purge"); // removes bob's #1 (inbox 1)
    store.close().await;
    drop(store);

    let store = SqliteStore::open(SqliteConfig::new(&path)).expect("reopen");
    assert_eq!(store.list_apps().await.expect("apps"), vec![app]);
    assert_eq!(store.inbox_acked(1, "bob").await.expect("acked"), 3);
    let bob = store.inbox_after(1, "bob", 0, 100).await.expect("inbox");
    assert_eq!(
        (bob.head, bob.first_held),
        (5, 2),
        "head and the purge gap survive"
    );
    let expected: Vec<_> = sent
        .iter()
        .filter(|m| m.receiver == "bob" && m.inbox_seq > 1)
        .cloned()
        .collect();
    assert_eq!(
        &bob.messages[..3],
        &expected[..],
        "messages survive byte for byte"
    );
    assert_eq!(bob.messages[3].local_message_id, u64::MAX);

    // A retry of a pre-restart send is still recognised.
    let retry = store
        .append_peer(text("alice", "bob", 2, 9_999))
        .await
        .expect("retry");
    assert!(retry.duplicate);
    assert_eq!(retry.message, sent[1]);
    // Positions continue, and message ids keep growing.
    let next = store
        .append_peer(text("alice", "bob", 100, 3_000))
        .await
        .expect("append");
    assert_eq!(
        (next.message.inbox_seq, next.message.conversation_seq),
        (6, 8)
    );
    assert!(next.message.message_id > sent.iter().map(|m| m.message_id).max().unwrap());
    let alice = store.inbox_after(1, "alice", 0, 100).await.expect("inbox");
    assert_eq!((alice.head, alice.messages.len()), (2, 2));

    // Dropping (instead of closing) also flushes and stops cleanly.
    drop(store);
    let store = SqliteStore::open(SqliteConfig::new(&path)).expect("reopen after drop");
    assert_eq!(
        store
            .inbox_after(1, "bob", 0, 100)
            .await
            .expect("inbox")
            .head,
        6
    );
}

/// Writes queued when `close` is called are committed and answered, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_flushes_queued_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("confab.db");
    let store = std::sync::Arc::new(SqliteStore::open(SqliteConfig::new(&path)).expect("open"));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(
                async move { store.append_peer(text(&format!("s{i}"), "bob", 1, 1)).await },
            )
        })
        .collect();
    tokio::task::yield_now().await;
    store.close().await;
    let mut acked = 0;
    for task in tasks {
        // Each one either got in before close (and is durable) or was refused.
        if task.await.expect("join").is_ok() {
            acked += 1;
        }
    }
    drop(store);
    let store = SqliteStore::open(SqliteConfig::new(&path)).expect("reopen");
    let page = store.inbox_after(1, "bob", 0, 1_000).await.expect("inbox");
    assert_eq!(
        page.messages.len(),
        acked,
        "every acknowledged write is there, and only those"
    );
    assert_eq!(page.head, acked as u64);
}
