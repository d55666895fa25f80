//! Many concurrent writes share fsyncs: group commit.

use std::sync::Arc;
use std::time::Instant;

use confab_store::Store;

use crate::{open_in, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_batched_into_few_commits() {
    const WRITES: u64 = 2_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open_in(&dir, "confab.db"));
    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITES)
        .map(|i| {
            let store = Arc::clone(&store);
            let sender = format!("sender-{}", i % 50);
            tokio::spawn(async move { store.append_peer(text(&sender, "bob", i, 1)).await })
        })
        .collect();
    for task in tasks {
        let appended = task.await.expect("join").expect("append");
        assert!(!appended.duplicate);
    }
    let elapsed = started.elapsed();
    let stats = store.stats();
    eprintln!(
        "group commit: {WRITES} appends in {} commits (largest batch {}), {} ms",
        stats.commits,
        stats.largest_batch,
        elapsed.as_millis()
    );
    assert_eq!(stats.writes, WRITES);
    assert!(
        stats.commits * 4 <= stats.writes,
        "writes were batched: {stats:?}"
    );
    let page = store.inbox_after(1, "bob", 0, 5_000).await.expect("inbox");
    assert_eq!(page.head, WRITES);
    assert_eq!(page.messages.len() as u64, WRITES);
}
