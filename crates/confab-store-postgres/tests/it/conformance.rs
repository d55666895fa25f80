//! The shared suite, exactly as the SQLite store runs it: each check on a fresh,
//! empty schema.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::with_db;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_passes_the_conformance_suite() {
    with_db(|db| async move {
        let made = Arc::new(AtomicUsize::new(0));
        confab_store::conformance::run_all(|| {
            made.fetch_add(1, Ordering::Relaxed);
            let db = db.clone();
            async move { db.fresh_store().await }
        })
        .await;
        assert!(
            made.load(Ordering::Relaxed) >= 31,
            "every check got its own store"
        );
    })
    .await;
}
