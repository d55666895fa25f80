//! Failures end in a `StoreError` that says what failed: no panic, no hang.

use std::time::Duration;

use confab_store::{SqliteConfig, SqliteStore, Store, StoreError};
use rusqlite::Connection;

use crate::text;

/// Bounds every call: a failure must come back, not hang.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("the store call hung")
}

#[tokio::test]
async fn append_after_close_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::open_in(&dir, "confab.db");
    bounded(store.append_peer(text("a", "b", 1, 1)))
        .await
        .expect("append while open");
    store.close().await;
    let err = bounded(store.append_peer(text("a", "b", 2, 1)))
        .await
        .expect_err("closed");
    assert!(
        matches!(err, StoreError::Unavailable(ref m) if m.contains("closed")),
        "{err}"
    );
    let err = bounded(store.ack_inbox(1, "b", 1))
        .await
        .expect_err("closed");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
}

/// While another connection holds the write lock, writes fail after the busy
/// timeout with an error naming the cause, reads keep working, and writes succeed
/// again once the lock is gone.
#[tokio::test]
async fn a_locked_database_fails_writes_then_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("confab.db");
    let cfg = SqliteConfig {
        busy_timeout: Duration::from_millis(100),
        ..SqliteConfig::new(&path)
    };
    let store = SqliteStore::open(cfg).expect("open");
    bounded(store.append_peer(text("a", "b", 1, 1)))
        .await
        .expect("append");

    let other = Connection::open(&path).expect("second connection");
    other
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("take the write lock");
    let err = bounded(store.append_peer(text("a", "b", 2, 1)))
        .await
        .expect_err("locked");
    let StoreError::Unavailable(message) = &err else {
        panic!("unexpected {err:?}")
    };
    assert!(
        message.contains("begin") && message.contains("locked"),
        "{message}"
    );
    let page = bounded(store.inbox_after(1, "b", 0, 10))
        .await
        .expect("reads are not blocked");
    assert_eq!(page.head, 1, "the failed write left nothing");

    other.execute_batch("ROLLBACK").expect("release the lock");
    let next = bounded(store.append_peer(text("a", "b", 2, 1)))
        .await
        .expect("append again");
    assert_eq!(
        next.message.inbox_seq, 2,
        "the failed attempt consumed no position"
    );
    bounded(store.ping()).await.expect("healthy again");
}

#[test]
fn open_fails_cleanly_on_a_bad_path_or_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let err =
        SqliteStore::open(SqliteConfig::new(file.join("confab.db"))).expect_err("parent is a file");
    assert!(
        matches!(err, StoreError::Unavailable(ref m) if m.contains("directory")),
        "{err}"
    );

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a_u8; 8192]).expect("write");
    let err = SqliteStore::open(SqliteConfig::new(&garbage)).expect_err("not a database");
    assert!(
        matches!(err, StoreError::Unavailable(ref m) if m.contains("not a database")),
        "{err}"
    );
}
