//! The read connections: at most [`MAX_READERS`] reads at once, each on a
//! read-only connection of its own, kept open between reads; reads run on tokio's
//! blocking pool, and WAL lets them proceed while the writer commits.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{STATEMENT_CACHE, SqliteStore, closed, db, lock};
use crate::StoreError;

/// Most reads running at once, each on its own read connection (kept open
/// between reads). More wait their turn: a login storm must not open hundreds of
/// SQLite connections (each with its own page cache) on as many blocking threads.
pub(super) const MAX_READERS: usize = 4;

/// The read connections: idle ones are kept for reuse, more are opened on demand.
#[derive(Debug)]
pub(super) struct Readers {
    pub(super) path: PathBuf,
    pub(super) busy_timeout: Duration,
    pub(super) idle: Mutex<Vec<Connection>>,
    /// One permit per read in progress (at most [`MAX_READERS`]).
    pub(super) permits: Arc<tokio::sync::Semaphore>,
    /// Read connections opened so far.
    pub(super) opened: AtomicUsize,
    /// Set by close: no new reads, no connection kept.
    pub(super) closed: AtomicBool,
}

impl Readers {
    pub(super) fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db("open a read connection"))?;
        conn.busy_timeout(self.busy_timeout)
            .map_err(db("set busy_timeout on a read connection"))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(conn)
    }

    pub(super) fn with<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = lock(&self.idle).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = work(&mut conn);
        // A connection that just failed is dropped, in case it is the problem.
        if result.is_ok() {
            self.put_back(conn);
        }
        result
    }

    pub(super) fn put_back(&self, conn: Connection) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_READERS {
            idle.push(conn);
        }
    }
}

impl SqliteStore {
    /// Runs `work` on a read connection, on tokio's blocking pool.
    pub(super) async fn read<T, F>(&self, what: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.readers.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        // The permit goes with the blocking work, so a caller that stops
        // waiting does not let another read start beside it.
        let permit = Arc::clone(&self.readers.permits)
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let result = readers.with(work);
            drop(permit);
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("{what}: the read task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{msg, open};
    use super::*;
    use crate::Store;

    /// A burst of reads shares at most `MAX_READERS` connections.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overlapping_reads_share_a_bounded_set_of_connections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(&dir));
        store
            .append_peer(msg("alice", "bob", 1))
            .await
            .expect("append");
        let reads: Vec<_> = (0..200)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.inbox_after(1, "bob", 0, 10).await })
            })
            .collect();
        for read in reads {
            let page = read.await.expect("join").expect("read");
            assert_eq!(page.messages.len(), 1);
        }
        let opened = store.readers.opened.load(Ordering::Relaxed);
        assert!(
            (1..=MAX_READERS).contains(&opened),
            "{opened} read connections for 200 overlapping reads"
        );
    }
}
