//! [`SqliteStore`]: the embedded default [`Store`], one SQLite file in WAL mode.
//!
//! Writes go to ONE writer thread that owns the only write connection. Callers put a
//! request on a bounded queue and await a oneshot reply; the writer takes up to
//! `max_batch` queued requests, runs them in one transaction (each inside its own
//! SAVEPOINT, so a failing request fails alone; message appends, which refuse
//! before they write, without one — see [`Savepoint`](writer::Savepoint)), commits — with `synchronous=FULL`
//! the commit is the fsync — and only then answers every request of the batch. That
//! is group commit: under load one fsync acknowledges many writes, and nothing is
//! ever acknowledged from memory. Because one thread does every write, sequence
//! numbers are assigned without races.
//!
//! Reads run on tokio's blocking pool over a small pool of read-only connections;
//! WAL lets them proceed while the writer commits, so reads never queue behind writes.
//!
//! Message ids: peer and room messages draw their ids from ONE counter, the single
//! row of `message_ids`, advanced on the writer thread by every append, so an id is
//! never given to two messages of either kind, and purging never lets one be reused.
//!
//! The modules, as in the PostgreSQL store: [`schema`] (the migrations, opening and
//! migrating the file), [`writer`] (the writer thread: its queue, group commit,
//! savepoints), [`pool`] (the read connections), [`peer`] (the SQL of apps, users,
//! peer messages and inboxes) and [`rooms`] (the SQL of rooms, members,
//! attributes, room messages and history). This module holds the store and its
//! [`Store`] impl, which hands each call to the writer or a read connection.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use crate::backend::{Member, check_app, inbox_seq_to_sql};
use crate::{
    AppRecord, Appended, AppendedRoom, AttributeChange, AttributesChanged, ExpiredMember,
    HistoryMessage, HistoryQuery, InboxPage, Joined, Left, MemberRecord, NewPeerMessage, NewRoom,
    NewRoomMessage, RoomError, RoomLimits, RoomRecord, Store, StoreError, StoredRoomMessage,
};

use self::pool::{MAX_READERS, Readers};
use self::writer::{Counters, Job, Queued, WakeOnExit, writer_loop};

mod peer;
mod pool;
mod rooms;
mod schema;
mod writer;

/// Prepared statements kept per connection: more than the store uses, so none
/// is parsed twice (rusqlite keeps 16 by default).
const STATEMENT_CACHE: usize = 64;

/// Configuration of a [`SqliteStore`]: one struct, every field with its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// The database file. Its parent directories are created if missing. It must be
    /// a real file (not `:memory:`): readers open it separately.
    pub path: PathBuf,
    /// The most write requests committed in one transaction (one fsync). Default 256.
    pub max_batch: usize,
    /// Requests the writer's queue holds before further writes wait
    /// (asynchronously) for room instead of failing. Message appends never wait
    /// (a caller's appends must reach the queue in call order,
    /// `Store::appends_in_call_order`); they are bounded by their callers (a
    /// session keeps at most 64 in flight) and the send rate limits. Default 8192.
    pub queue: usize,
    /// `PRAGMA synchronous=FULL` (default `true`): every commit is fsync'd, so an
    /// acknowledged write survives a power loss. `false` selects `NORMAL`, which in
    /// WAL mode survives a crash of the process but not of the machine.
    pub synchronous_full: bool,
    /// How long a connection waits for a lock held by another connection (another
    /// process on the same file, a checkpoint) before failing. Default 5 s.
    pub busy_timeout: Duration,
}

impl SqliteConfig {
    /// Default for [`SqliteConfig::max_batch`].
    pub const DEFAULT_MAX_BATCH: usize = 256;
    /// Default for [`SqliteConfig::queue`].
    pub const DEFAULT_QUEUE: usize = 8192;
    /// Default for [`SqliteConfig::busy_timeout`].
    pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

    /// The defaults for the database file at `path`: batches of up to 256 writes, a
    /// queue of 8192, `synchronous=FULL`, a 5 s busy timeout.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_batch: Self::DEFAULT_MAX_BATCH,
            queue: Self::DEFAULT_QUEUE,
            synchronous_full: true,
            busy_timeout: Self::DEFAULT_BUSY_TIMEOUT,
        }
    }

    fn validate(&self) -> Result<(), StoreError> {
        if self.max_batch == 0 {
            return Err(StoreError::Invalid(
                "sqlite max_batch must be at least 1".into(),
            ));
        }
        if self.queue == 0 {
            return Err(StoreError::Invalid(
                "sqlite queue must be at least 1".into(),
            ));
        }
        if self.path.as_os_str().is_empty() || self.path == Path::new(":memory:") {
            return Err(StoreError::Invalid(format!(
                "sqlite path must name a file, not `{}`",
                self.path.display()
            )));
        }
        Ok(())
    }
}

/// Counters of the writer thread, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Transactions committed (each one fsync with `synchronous=FULL`).
    pub commits: u64,
    /// Write requests run (whether they succeeded or not).
    pub writes: u64,
    /// The most requests seen in one batch.
    pub largest_batch: u64,
}

/// The embedded default [`Store`]: one SQLite file, one writer thread doing group
/// commit, a pool of read connections. See the module docs.
///
/// [`SqliteStore::close`] (or dropping the store) stops accepting requests, lets the
/// writer commit and answer everything already queued, and stops it. After that,
/// every method fails with [`StoreError::Unavailable`].
pub struct SqliteStore {
    path: PathBuf,
    /// The writer's queue; `None` once the store is closed.
    writer: Mutex<Option<mpsc::UnboundedSender<Box<dyn Job>>>>,
    /// Jobs queued for the writer and not yet taken, and the wake-up for writes
    /// waiting for that to drop under `queue_limit`.
    queued: Arc<Queued>,
    /// `SqliteConfig::queue`.
    queue_limit: usize,
    /// The writer thread, joined on drop.
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    /// Becomes `true` (or its sender is dropped) when the writer thread has stopped.
    writer_done: watch::Receiver<bool>,
    readers: Arc<Readers>,
    stats: Arc<Counters>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("closed", &self.readers.closed.load(Ordering::Acquire))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
impl SqliteStore {
    /// Opens (creating if needed) the database at `cfg.path`: creates its parent
    /// directories, sets WAL mode, `synchronous`, the busy timeout and foreign keys,
    /// brings the schema up to date, and starts the writer thread.
    ///
    /// This blocks on file I/O (and fsyncs when it creates the schema): call it at
    /// start-up, or from `spawn_blocking`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a bad configuration, [`StoreError::Unavailable`]
    /// if the file cannot be created or opened or set up, [`StoreError::Corrupt`] if
    /// it holds a schema newer than this build knows.
    pub fn open(cfg: SqliteConfig) -> Result<Self, StoreError> {
        cfg.validate()?;
        if let Some(parent) = cfg.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot create the directory {} for the database: {e}",
                    parent.display()
                ))
            })?;
        }
        let conn = schema::open_writer(&cfg)?;
        let readers = Arc::new(Readers {
            path: cfg.path.clone(),
            busy_timeout: cfg.busy_timeout,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
            opened: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        });
        // Fail now, not on the first read, if read connections cannot be opened.
        let first_reader = readers.open()?;
        readers.put_back(first_reader);

        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(Queued::default());
        let writer_queued = Arc::clone(&queued);
        let (done_tx, done_rx) = watch::channel(false);
        let stats = Arc::new(Counters::default());
        let thread_stats = Arc::clone(&stats);
        let max_batch = cfg.max_batch;
        let handle = std::thread::Builder::new()
            .name("confab-store-writer".into())
            .spawn(move || {
                // However the thread ends (even by a panic), writes waiting for
                // room in the queue wake up and find the writer gone.
                let _wake = WakeOnExit(Arc::clone(&writer_queued));
                writer_loop(conn, rx, &writer_queued, max_batch, &thread_stats);
                done_tx.send_replace(true);
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        tracing::info!(path = %cfg.path.display(), "sqlite store open");
        Ok(Self {
            path: cfg.path,
            writer: Mutex::new(Some(tx)),
            queued,
            queue_limit: cfg.queue,
            writer_thread: Mutex::new(Some(handle)),
            writer_done: done_rx,
            readers,
            stats,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer's counters so far.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.stats.commits.load(Ordering::Relaxed),
            writes: self.stats.writes.load(Ordering::Relaxed),
            largest_batch: self.stats.largest_batch.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting requests, waits until the writer has committed and answered
    /// every request already queued, and closes the connections. Idempotent; every
    /// later call on the store fails with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.stop_accepting();
        let mut done = self.writer_done.clone();
        // An error means the sender is gone, i.e. the writer thread ended: also done.
        let _ = done.wait_for(|stopped| *stopped).await;
        if let Some(handle) = lock(&self.writer_thread).take() {
            // Already finished (it signalled `done`), so this does not block.
            if handle.join().is_err() {
                tracing::error!("sqlite writer thread panicked");
            }
        }
    }

    fn stop_accepting(&self) {
        self.readers.closed.store(true, Ordering::Release);
        self.readers.permits.close();
        lock(&self.readers.idle).clear();
        if lock(&self.writer).take().is_some() {
            tracing::info!(path = %self.path.display(), "sqlite store closing");
        }
    }
}

impl Drop for SqliteStore {
    /// Stops accepting requests and joins the writer after it has committed what was
    /// queued (bounded by the queue's capacity).
    fn drop(&mut self) {
        self.stop_accepting();
        if let Some(handle) = lock(&self.writer_thread).take() {
            if handle.join().is_err() {
                tracing::error!("sqlite writer thread panicked");
            }
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.read("list apps", |conn| peer::list_apps(conn)).await
    }

    async fn put_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        check_app(app.app_id)?;
        let app = app.clone();
        self.write("put app", move |conn| peer::put_app(conn, &app))
            .await
    }

    async fn touch_user(
        &self,
        app_id: u32,
        user_id: &str,
        user_name: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        check_app(app_id)?;
        let (user_id, user_name) = (user_id.to_owned(), user_name.to_owned());
        self.write("touch user", move |conn| {
            peer::touch_user(conn, app_id, &user_id, &user_name, now_ms)
        })
        .await
    }

    async fn append_peer(&self, msg: NewPeerMessage) -> Result<Appended, StoreError> {
        check_app(msg.app_id)?;
        self.submit_append("append peer message", move |conn| {
            peer::append_peer(conn, msg)
        })
        .await
    }

    /// The first poll of an append puts it on the writer's FIFO queue, with
    /// nothing to wait for before (appends never wait for room,
    /// [`SqliteConfig::queue`]), and the writer applies its queue in order.
    fn appends_in_call_order(&self) -> bool {
        true
    }

    /// A SQLite file has one writer process (this one), and room seqs come from a
    /// counter that only successful appends advance.
    fn single_node(&self) -> bool {
        true
    }

    async fn inbox_after(
        &self,
        app_id: u32,
        user_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<InboxPage, StoreError> {
        let user_id = user_id.to_owned();
        self.read("read inbox", move |conn| {
            peer::inbox_after(conn, app_id, &user_id, after, limit)
        })
        .await
    }

    async fn ack_inbox(
        &self,
        app_id: u32,
        user_id: &str,
        inbox_seq: u64,
    ) -> Result<(), StoreError> {
        check_app(app_id)?;
        let seq = inbox_seq_to_sql(inbox_seq)?;
        let user_id = user_id.to_owned();
        self.write("ack inbox", move |conn| {
            peer::ack_inbox(conn, app_id, &user_id, seq)
        })
        .await
    }

    async fn inbox_acked(&self, app_id: u32, user_id: &str) -> Result<u64, StoreError> {
        let user_id = user_id.to_owned();
        self.read("read inbox ack", move |conn| {
            peer::inbox_acked(conn, app_id, &user_id)
        })
        .await
    }

    async fn purge_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        self.write("purge messages", move |conn| {
            peer::purge_before(conn, cutoff_ms)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // The writer must be alive (its queue open) and the file readable.
        let writer_alive = lock(&self.writer)
            .as_ref()
            .is_some_and(|tx| !tx.is_closed());
        if !writer_alive {
            return Err(if self.readers.closed.load(Ordering::Acquire) {
                closed()
            } else {
                StoreError::Unavailable("the store writer has stopped".into())
            });
        }
        self.read("ping", |conn| peer::ping(conn)).await
    }

    // ---- Rooms: each write is one request of the group commit (in its own
    // savepoint, but for `append_room`), each read one read connection; the SQL
    // is in `rooms`.

    async fn create_room(
        &self,
        room: NewRoom,
        limits: RoomLimits,
    ) -> Result<RoomRecord, RoomError> {
        check_app(room.app_id)?;
        self.submit("create room", move |conn| {
            rooms::create_room(conn, room, &limits)
        })
        .await
    }

    async fn join_room(
        &self,
        app_id: u32,
        room_id: &str,
        user_id: &str,
        user_name: &str,
        now_ms: i64,
        limits: RoomLimits,
    ) -> Result<Joined, RoomError> {
        check_app(app_id)?;
        let member = Member::new(app_id, room_id, user_id);
        let user_name = user_name.to_owned();
        self.submit("join room", move |conn| {
            rooms::join_room(conn, &member, &user_name, now_ms, &limits)
        })
        .await
    }

    async fn leave_room(
        &self,
        app_id: u32,
        room_id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<Left, RoomError> {
        check_app(app_id)?;
        let member = Member::new(app_id, room_id, user_id);
        self.submit("leave room", move |conn| {
            rooms::leave_room(conn, &member, now_ms)
        })
        .await
    }

    async fn room(&self, app_id: u32, room_id: &str) -> Result<Option<RoomRecord>, StoreError> {
        let room_id = room_id.to_owned();
        self.read("read room", move |conn| {
            rooms::read_room(conn, app_id, &room_id)
        })
        .await
    }

    async fn is_member(
        &self,
        app_id: u32,
        room_id: &str,
        user_id: &str,
    ) -> Result<bool, StoreError> {
        let member = Member::new(app_id, room_id, user_id);
        self.read("read membership", move |conn| {
            rooms::is_member(conn, &member)
        })
        .await
    }

    async fn room_members(
        &self,
        app_id: u32,
        room_id: &str,
        after_user: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MemberRecord>, StoreError> {
        let room_id = room_id.to_owned();
        let after_user = after_user.map(str::to_owned);
        self.read("read room members", move |conn| {
            rooms::room_members(conn, app_id, &room_id, after_user.as_deref(), limit)
        })
        .await
    }

    async fn room_member_count(&self, app_id: u32, room_id: &str) -> Result<u64, StoreError> {
        let room_id = room_id.to_owned();
        self.read("count room members", move |conn| {
            rooms::member_count(conn, app_id, &room_id)
        })
        .await
    }

    async fn user_rooms(&self, app_id: u32, user_id: &str) -> Result<Vec<RoomRecord>, StoreError> {
        let user_id = user_id.to_owned();
        self.read("read the user's rooms", move |conn| {
            rooms::user_rooms(conn, app_id, &user_id)
        })
        .await
    }

    async fn set_member_offline(
        &self,
        app_id: u32,
        user_id: &str,
        since_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        check_app(app_id)?;
        let user_id = user_id.to_owned();
        self.write("set members offline", move |conn| {
            rooms::set_member_offline(conn, app_id, &user_id, since_ms)
        })
        .await
    }

    async fn expire_members(&self, cutoff_ms: i64) -> Result<Vec<ExpiredMember>, StoreError> {
        self.write("expire room members", move |conn| {
            rooms::expire_members(conn, cutoff_ms)
        })
        .await
    }

    async fn destroy_empty_rooms(&self, now_ms: i64) -> Result<Vec<(u32, String)>, StoreError> {
        self.write("destroy empty rooms", move |conn| {
            rooms::destroy_empty_rooms(conn, now_ms)
        })
        .await
    }

    async fn change_room_attributes(
        &self,
        app_id: u32,
        room_id: &str,
        user_id: &str,
        change: AttributeChange,
        limits: RoomLimits,
    ) -> Result<AttributesChanged, RoomError> {
        check_app(app_id)?;
        let member = Member::new(app_id, room_id, user_id);
        self.submit("change room attributes", move |conn| {
            rooms::change_attributes(conn, &member, change, &limits)
        })
        .await
    }

    async fn room_attributes(
        &self,
        app_id: u32,
        room_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let room_id = room_id.to_owned();
        self.read("read room attributes", move |conn| {
            rooms::room_attributes(conn, app_id, &room_id)
        })
        .await
    }

    async fn append_room(&self, msg: NewRoomMessage) -> Result<AppendedRoom, RoomError> {
        check_app(msg.app_id)?;
        self.submit_append("append room message", move |conn| {
            rooms::append_room(conn, msg)
        })
        .await
    }

    async fn room_messages_after(
        &self,
        app_id: u32,
        room_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredRoomMessage>, StoreError> {
        let room_id = room_id.to_owned();
        self.read("read room messages", move |conn| {
            rooms::room_messages_after(conn, app_id, &room_id, after, limit)
        })
        .await
    }

    async fn history(&self, query: HistoryQuery) -> Result<Vec<HistoryMessage>, StoreError> {
        self.read("read history", move |conn| rooms::history(conn, &query))
            .await
    }
}

// ---------------------------------------------------------------------------------
// Errors

/// Maps a database error to [`StoreError::Unavailable`], saying what failed.
fn db(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Unavailable(format!("sqlite: {what}: {e}"))
}

fn closed() -> StoreError {
    StoreError::Unavailable("the store is closed".into())
}

/// Locks, ignoring poisoning: every guarded value stays consistent across a panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #[cfg(not(feature = "conformance"))]
    use std::sync::atomic::AtomicU64;

    use super::*;

    pub(super) fn msg(sender: &str, receiver: &str, local: u64) -> NewPeerMessage {
        NewPeerMessage {
            app_id: 1,
            sender: sender.into(),
            receiver: receiver.into(),
            kind: 1,
            body: format!("{sender}->{receiver} {local}"),
            local_message_id: local,
            timestamp_ms: 1_000,
            priority: 2,
        }
    }

    pub(super) fn open(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(SqliteConfig::new(dir.path().join("confab.db"))).expect("open")
    }

    /// Without the `conformance` feature the `it` test binary cannot see the suite,
    /// so it runs here; with the feature it runs there (once is enough).
    #[cfg(not(feature = "conformance"))]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let counter = AtomicU64::new(0);
        crate::conformance::run_all(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let path = dir.path().join(format!("check-{n}.db"));
            async move { SqliteStore::open(SqliteConfig::new(path)).expect("open") }
        })
        .await;
    }

    #[test]
    fn config_defaults_and_validation() {
        let cfg = SqliteConfig::new("/x/y.db");
        assert_eq!(cfg.max_batch, 256);
        assert_eq!(cfg.queue, 8192);
        assert!(cfg.synchronous_full);
        assert_eq!(cfg.busy_timeout, Duration::from_secs(5));
        for bad in [
            SqliteConfig {
                max_batch: 0,
                ..cfg.clone()
            },
            SqliteConfig {
                queue: 0,
                ..cfg.clone()
            },
            SqliteConfig::new(":memory:"),
            SqliteConfig::new(""),
        ] {
            assert!(matches!(
                SqliteStore::open(bad),
                Err(StoreError::Invalid(_))
            ));
        }
    }

    #[tokio::test]
    async fn close_is_idempotent_and_everything_fails_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir);
        store.ping().await.expect("ping while open");
        store.close().await;
        store.close().await;
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.append_peer(msg("a", "b", 1)).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.list_apps().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.inbox_after(1, "b", 0, 1).await,
            Err(StoreError::Unavailable(_))
        ));
        let shown = format!("{store:?}");
        assert!(shown.contains("closed: true"), "{shown}");
    }

    #[tokio::test]
    async fn out_of_range_arguments_are_invalid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir);
        let err = store
            .ack_inbox(1, "b", u64::MAX)
            .await
            .expect_err("too big");
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        // Reading past any representable position is simply empty.
        let page = store
            .inbox_after(1, "b", u64::MAX, usize::MAX)
            .await
            .expect("inbox");
        assert_eq!((page.messages.len(), page.head, page.first_held), (0, 0, 1));
    }
}
