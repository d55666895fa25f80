//! The shared suite, exactly as another backend would run it: each check on a fresh
//! database file.

use std::sync::atomic::{AtomicUsize, Ordering};

use confab_store::{SqliteConfig, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let made = AtomicUsize::new(0);
    confab_store::conformance::run_all(|| {
        let path = dir
            .path()
            .join(format!("check-{}.db", made.fetch_add(1, Ordering::Relaxed)));
        async move { SqliteStore::open(SqliteConfig::new(path)).expect("open") }
    })
    .await;
    assert!(
        made.load(Ordering::Relaxed) >= 31,
        "every check got its own store"
    );
}
