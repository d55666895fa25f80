//! The writer thread: the one write connection, its queue of requests (jobs),
//! and group commit — up to `max_batch` requests in one transaction, each in its
//! own savepoint (message appends without one, see [`Savepoint`]), answered only
//! once the commit is durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{SqliteStore, closed, lock};
use crate::StoreError;

/// See [`SqliteStore::queued`].
#[derive(Debug, Default)]
pub(super) struct Queued {
    pub(super) jobs: AtomicUsize,
    pub(super) taken: tokio::sync::Notify,
}

/// Wakes the writes waiting for room when the writer thread ends.
pub(super) struct WakeOnExit(pub(super) Arc<Queued>);

impl Drop for WakeOnExit {
    fn drop(&mut self) {
        self.0.taken.notify_waiters();
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) commits: AtomicU64,
    pub(super) writes: AtomicU64,
    pub(super) largest_batch: AtomicU64,
}

impl SqliteStore {
    /// Runs `work` on the writer thread inside the next group commit and returns its
    /// result once the transaction holding it is durable.
    pub(super) async fn write<T, F>(&self, what: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(what, work).await
    }

    /// [`SqliteStore::write`] for any error type that can carry a [`StoreError`]
    /// (room operations answer [`RoomError`](crate::RoomError)). An `Err` from `work` rolls back
    /// everything `work` did: each request runs in its own savepoint.
    pub(super) async fn submit<T, E, F>(&self, what: &'static str, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.submit_with(what, Savepoint::Own, work).await
    }

    /// [`SqliteStore::submit`] for a message append, which runs without a
    /// savepoint of its own (copying the batch's hot pages into one per message
    /// was a large part of the writer's time). `work` must find every reason to
    /// refuse (a duplicate, a missing room or membership) before it writes; if it
    /// still fails after writing (an I/O-class error), the whole batch is rolled
    /// back and every request in it fails; clients retry with the same
    /// localMessageID, so a pipelining sender's retried message may then be
    /// stored after its next one, which had gone into the following batch.
    pub(super) async fn submit_append<T, E, F>(&self, what: &'static str, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.submit_with(what, Savepoint::None, work).await
    }

    async fn submit_with<T, E, F>(
        &self,
        what: &'static str,
        savepoint: Savepoint,
        work: F,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let sender = lock(&self.writer).clone().ok_or_else(closed)?;
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Request {
            what,
            savepoint,
            work: Some(work),
            result: None,
            reply,
        });
        // An append is queued by its first poll, with no await before it, so a
        // caller's appends reach the writer in call order
        // (`Store::appends_in_call_order`); a bounded channel could not promise
        // that once full (a freed slot goes to whichever waiting sender is polled
        // first). Other writes wait while the queue is over its limit.
        if savepoint == Savepoint::Own {
            self.room_in_queue(&sender).await;
        }
        self.queued.jobs.fetch_add(1, Ordering::AcqRel);
        if sender.send(job).is_err() {
            self.queued.jobs.fetch_sub(1, Ordering::AcqRel);
            return Err(
                StoreError::Unavailable(format!("{what}: the store writer has stopped")).into(),
            );
        }
        drop(sender);
        answer.await.map_err(|_| {
            StoreError::Unavailable(format!("{what}: the store writer stopped before answering"))
        })?
    }

    /// Waits until the writer's queue holds fewer than `queue_limit` jobs, or
    /// the writer is gone (the send then fails).
    async fn room_in_queue(&self, sender: &mpsc::UnboundedSender<Box<dyn Job>>) {
        loop {
            let taken = self.queued.taken.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            if self.queued.jobs.load(Ordering::Acquire) < self.queue_limit || sender.is_closed() {
                return;
            }
            taken.await;
        }
    }
}

// ---------------------------------------------------------------------------------
// The writer thread

/// How a request is isolated inside its batch's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Savepoint {
    /// In its own savepoint: a failure rolls back this request alone.
    Own,
    /// None: the request refuses before it writes; a failure after writing rolls
    /// back the whole batch (see [`SqliteStore::submit_append`]).
    None,
}

/// One queued write request, type-erased so that one queue carries every kind.
pub(super) trait Job: Send {
    /// How this request is isolated.
    fn savepoint(&self) -> Savepoint;
    /// Runs the write inside the current transaction; `true` if it succeeded.
    fn execute(&mut self, conn: &Connection) -> bool;
    /// Answers the caller. `failure` is why the transaction did not commit (`None`
    /// if it did); a request that failed by itself reports its own error.
    fn answer(self: Box<Self>, failure: Option<&str>);
}

struct Request<T, E, F> {
    what: &'static str,
    savepoint: Savepoint,
    work: Option<F>,
    result: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> Job for Request<T, E, F>
where
    T: Send,
    E: From<StoreError> + Send,
    F: FnOnce(&Connection) -> Result<T, E> + Send,
{
    fn savepoint(&self) -> Savepoint {
        self.savepoint
    }

    fn execute(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = work(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, failure: Option<&str>) {
        let what = self.what;
        let outcome = match (self.result, failure) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), None) => Ok(value),
            (_, Some(why)) => Err(StoreError::Unavailable(format!("{what}: {why}")).into()),
            (None, None) => {
                Err(StoreError::Unavailable(format!("{what}: the write was not run")).into())
            }
        };
        // The caller may have given up waiting; the write stands regardless.
        let _ = self.reply.send(outcome);
    }
}

pub(super) fn writer_loop(
    conn: Connection,
    mut queue: mpsc::UnboundedReceiver<Box<dyn Job>>,
    queued: &Queued,
    max_batch: usize,
    stats: &Counters,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch.min(1024));
    // Ends when every sender is gone (the store closed) and the queue is drained.
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        queued.jobs.fetch_sub(batch.len(), Ordering::AcqRel);
        queued.taken.notify_waiters();
        commit_batch(&conn, &mut batch, stats);
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "sqlite writer connection did not close cleanly");
    }
    tracing::debug!("sqlite writer stopped");
}

/// Runs `batch` in one transaction, each request in its own savepoint (appends
/// without one, see [`Savepoint`]), commits, and then answers every request.
fn commit_batch(conn: &Connection, batch: &mut Vec<Box<dyn Job>>, stats: &Counters) {
    let size = batch.len() as u64;
    stats.writes.fetch_add(size, Ordering::Relaxed);
    stats.largest_batch.fetch_max(size, Ordering::Relaxed);

    let outcome = run_transaction(conn, batch);
    match &outcome {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        Err(why) => {
            tracing::warn!(error = %why, writes = size, "sqlite write batch failed");
            if !conn.is_autocommit() {
                if let Err(e) = conn.execute_batch("ROLLBACK") {
                    tracing::warn!(error = %e, "sqlite rollback failed");
                }
            }
        }
    }
    let failure = outcome.err();
    for job in batch.drain(..) {
        job.answer(failure.as_deref());
    }
}

/// Runs one statement without results through the statement cache: the writer
/// begins and commits every batch and opens and ends a savepoint for most
/// requests, and parsing those each time cost more than many a request.
fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn run_transaction(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Result<(), String> {
    exec_cached(conn, "BEGIN IMMEDIATE")
        .map_err(|e| format!("sqlite: could not begin a write transaction: {e}"))?;
    for job in batch.iter_mut() {
        if job.savepoint() == Savepoint::None {
            let before = conn.total_changes();
            let ok = job.execute(conn);
            if conn.is_autocommit() {
                return Err("sqlite: the transaction was rolled back by an error".into());
            }
            if !ok && conn.total_changes() != before {
                return Err("sqlite: a message append failed after writing; \
                            the batch was rolled back"
                    .into());
            }
            continue;
        }
        exec_cached(conn, "SAVEPOINT request")
            .map_err(|e| format!("sqlite: could not open a savepoint: {e}"))?;
        let ok = job.execute(conn);
        // Some errors (I/O, disk full) make SQLite roll back the whole transaction.
        if conn.is_autocommit() {
            return Err("sqlite: the transaction was rolled back by an error".into());
        }
        let ended = if ok {
            exec_cached(conn, "RELEASE request")
        } else {
            exec_cached(conn, "ROLLBACK TO request")
                .and_then(|()| exec_cached(conn, "RELEASE request"))
        };
        ended.map_err(|e| format!("sqlite: could not end a savepoint: {e}"))?;
    }
    exec_cached(conn, "COMMIT").map_err(|e| format!("sqlite: commit failed: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{msg, open};
    use super::super::{SqliteConfig, db};
    use super::*;
    use crate::{Appended, NewRoomMessage, RoomError, Store};

    /// Waits until `n` requests wait in the writer's queue.
    async fn wait_until_queued(store: &SqliteStore, n: usize) {
        loop {
            let queued = lock(&store.writer)
                .as_ref()
                .map_or(0, |_| store.queued.jobs.load(Ordering::Acquire));
            if queued >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A request that fails inside a batch is rolled back alone; the others of the
    /// same transaction commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_request_fails_alone_in_its_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(&dir));
        // Hold the writer busy until the next three requests are queued, so that
        // they share one batch, in a known order.
        let (go_tx, blocker) = hold_writer(&store).await;
        let good1 = spawn_append(&store, 1);
        wait_until_queued(&store, 1).await;
        let bad = tokio::spawn({
            let store = Arc::clone(&store);
            async move { store.write("bad", insert_an_app_then_fail).await }
        });
        wait_until_queued(&store, 2).await;
        let good2 = spawn_append(&store, 2);
        wait_until_queued(&store, 3).await;
        go_tx.send(()).expect("release the writer");

        blocker.await.expect("join").expect("blocker");
        let first = good1.await.expect("join").expect("good1");
        let err = bad.await.expect("join").expect_err("bad must fail");
        let second = good2.await.expect("join").expect("good2");
        assert!(
            matches!(err, StoreError::Unavailable(ref m) if m.contains("no_such_table")),
            "{err}"
        );
        assert_eq!((first.message.inbox_seq, second.message.inbox_seq), (1, 2));
        let stats = store.stats();
        assert_eq!(stats.writes, 4);
        assert_eq!(
            stats.commits, 2,
            "blocker alone, then the three together: {stats:?}"
        );
        assert_eq!(stats.largest_batch, 3);
        assert!(
            store.list_apps().await.expect("apps").is_empty(),
            "the bad insert rolled back"
        );
        let page = store.inbox_after(1, "b", 0, 10).await.expect("inbox");
        assert_eq!(page.messages, vec![first.message, second.message]);
    }

    /// Appends `a → b` with this localMessageID from a task of its own.
    fn spawn_append(
        store: &Arc<SqliteStore>,
        local: u64,
    ) -> tokio::task::JoinHandle<Result<Appended, StoreError>> {
        let store = Arc::clone(store);
        tokio::spawn(async move { store.append_peer(msg("a", "b", local)).await })
    }

    /// A write that inserts an app, then fails in the database (the insert must
    /// not stay).
    fn insert_an_app_then_fail(conn: &Connection) -> Result<(), StoreError> {
        conn.execute("INSERT INTO apps VALUES (77, 's', 'n', 0)", [])
            .map_err(db("insert"))?;
        conn.execute("INSERT INTO no_such_table VALUES (1)", [])
            .map_err(db("bad"))?;
        Ok(())
    }

    /// Holds the writer busy with a blocker (until the returned sender is used),
    /// so the requests queued meanwhile share the next batch; returns the release
    /// and the blocker's task.
    async fn hold_writer(
        store: &Arc<SqliteStore>,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<(), StoreError>>,
    ) {
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let before = store.stats().writes;
        let blocker = tokio::spawn({
            let store = Arc::clone(store);
            async move {
                store
                    .write("block", move |_| {
                        go_rx.recv().expect("go");
                        Ok(())
                    })
                    .await
            }
        });
        while store.stats().writes == before {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (go_tx, blocker)
    }

    /// Appends are queued by their first poll even past the queue's limit, so
    /// they reach the writer in call order; other writes wait for room.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_queue_in_call_order_past_the_limit_other_writes_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            SqliteStore::open(SqliteConfig {
                queue: 1,
                ..SqliteConfig::new(dir.path().join("confab.db"))
            })
            .expect("open"),
        );
        let (go, blocker) = hold_writer(&store).await;
        let mut appends = Vec::new();
        for i in 1..=5 {
            let mut append = store.append_peer(msg("a", "b", i));
            let first =
                std::future::poll_fn(|cx| std::task::Poll::Ready(append.as_mut().poll(cx))).await;
            assert!(first.is_pending(), "the writer is held");
            appends.push(append);
        }
        assert_eq!(store.queued.jobs.load(Ordering::Acquire), 5);
        let other = tokio::spawn({
            let store = Arc::clone(&store);
            async move { store.touch_user(1, "c", "C", 1_000).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !other.is_finished(),
            "a write that is not an append waits for room"
        );
        assert_eq!(store.queued.jobs.load(Ordering::Acquire), 5);
        go.send(()).expect("release the writer");
        blocker.await.expect("join").expect("blocker");
        let mut seqs = Vec::new();
        for append in appends {
            seqs.push(append.await.expect("append").message.inbox_seq);
        }
        assert_eq!(seqs, [1, 2, 3, 4, 5], "call order");
        other.await.expect("join").expect("touch user");
    }

    /// Appends run without savepoints: one that refuses before writing (a room
    /// that does not exist) fails alone; the appends around it commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_refused_before_writing_fails_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(&dir));
        let (go, blocker) = hold_writer(&store).await;
        let good1 = spawn_append(&store, 1);
        wait_until_queued(&store, 1).await;
        let refused = tokio::spawn({
            let store = Arc::clone(&store);
            async move {
                store
                    .append_room(NewRoomMessage {
                        app_id: 1,
                        room_id: "nowhere".into(),
                        sender: "a".into(),
                        kind: 1,
                        body: "x".into(),
                        local_message_id: 9,
                        timestamp_ms: 1_000,
                        priority: 2,
                    })
                    .await
            }
        });
        wait_until_queued(&store, 2).await;
        let good2 = spawn_append(&store, 2);
        wait_until_queued(&store, 3).await;
        go.send(()).expect("release the writer");
        blocker.await.expect("join").expect("blocker");
        let first = good1.await.expect("join").expect("good1");
        let err = refused.await.expect("join").expect_err("no such room");
        let second = good2.await.expect("join").expect("good2");
        assert!(matches!(err, RoomError::NotFound), "{err}");
        assert_eq!((first.message.inbox_seq, second.message.inbox_seq), (1, 2));
        assert_eq!(store.stats().largest_batch, 3, "{:?}", store.stats());
    }

    /// An append that fails after writing takes its whole batch with it: nothing
    /// of the batch is stored, every request in it fails, and the next batch
    /// works.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_failing_after_writing_rolls_back_its_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(&dir));
        let (go, blocker) = hold_writer(&store).await;
        let good = spawn_append(&store, 1);
        wait_until_queued(&store, 1).await;
        let bad = tokio::spawn({
            let store = Arc::clone(&store);
            async move {
                store
                    .submit_append("bad append", insert_an_app_then_fail)
                    .await
            }
        });
        wait_until_queued(&store, 2).await;
        go.send(()).expect("release the writer");
        blocker.await.expect("join").expect("blocker");
        let good = good.await.expect("join");
        let bad = bad.await.expect("join");
        assert!(
            matches!(&good, Err(StoreError::Unavailable(m)) if m.contains("rolled back")),
            "{good:?}"
        );
        assert!(
            matches!(&bad, Err(StoreError::Unavailable(m)) if m.contains("no_such_table")),
            "{bad:?}"
        );
        assert!(store.list_apps().await.expect("apps").is_empty());
        assert!(
            store
                .inbox_after(1, "b", 0, 10)
                .await
                .expect("inbox")
                .messages
                .is_empty()
        );
        // The retry (same localMessageID) is stored as the first.
        let retry = store.append_peer(msg("a", "b", 1)).await.expect("retry");
        assert_eq!((retry.message.inbox_seq, retry.duplicate), (1, false));
    }

    /// A queue of one still serves many concurrent writers: they wait, not fail.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_makes_writers_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = SqliteConfig {
            queue: 1,
            max_batch: 4,
            ..SqliteConfig::new(dir.path().join("q.db"))
        };
        let store = Arc::new(SqliteStore::open(cfg).expect("open"));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.append_peer(msg(&format!("s{i}"), "r", 1)).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("join").expect("append");
        }
        let page = store.inbox_after(1, "r", 0, 100).await.expect("inbox");
        assert_eq!(page.head, 64);
        assert!(store.stats().largest_batch <= 4);
    }
}
