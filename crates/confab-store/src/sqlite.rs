//! [`SqliteStore`]: the embedded default [`Store`], one SQLite file in WAL mode.
//!
//! Writes go to ONE writer thread that owns the only write connection. Callers put a
//! request on a bounded queue and await a oneshot reply; the writer takes up to
//! `max_batch` queued requests, runs them in one transaction (each inside its own
//! SAVEPOINT, so a failing request fails alone; message appends, which refuse
//! before they write, without one — see [`Savepoint`]), commits — with `synchronous=FULL`
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
//! The rooms half of the store (rooms, members, attributes, room messages, history)
//! is in [`rooms`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use tokio::sync::{mpsc, oneshot, watch};

use crate::backend::{
    Member, PeerMessageRow, app_from_sql, appended_peer, check_app, clamp_to_sql,
    conversation_pair, first_held, inbox_seq_to_sql, limit_to_sql, local_to_sql, seq_from_sql,
};
use crate::{
    AppRecord, Appended, AppendedRoom, AttributeChange, AttributesChanged, ExpiredMember,
    HistoryMessage, HistoryQuery, InboxPage, Joined, Left, MemberRecord, NewPeerMessage, NewRoom,
    NewRoomMessage, RoomError, RoomLimits, RoomRecord, Store, StoreError, StoredRoomMessage,
};

mod rooms;

/// The schema version this build creates and understands (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 2;

/// Prepared statements kept per connection: more than the store uses, so none
/// is parsed twice (rusqlite keeps 16 by default).
const STATEMENT_CACHE: usize = 64;

/// Most reads running at once, each on its own read connection (kept open
/// between reads). More wait their turn: a login storm must not open hundreds of
/// SQLite connections (each with its own page cache) on as many blocking threads.
const MAX_READERS: usize = 4;

/// Migrations, in order: `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: apps, users, peer messages, and the sequence counters. The counters live in
    // their own tables so that purging messages never lets a position be reused.
    "
    CREATE TABLE apps (
        app_id      INTEGER PRIMARY KEY CHECK (app_id > 0),
        secret      TEXT NOT NULL,
        name        TEXT NOT NULL,
        created_ms  INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE users (
        app_id         INTEGER NOT NULL CHECK (app_id > 0),
        user_id        TEXT NOT NULL,
        user_name      TEXT NOT NULL,
        first_seen_ms  INTEGER NOT NULL,
        last_seen_ms   INTEGER NOT NULL,
        PRIMARY KEY (app_id, user_id)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE peer_messages (
        message_id        INTEGER PRIMARY KEY AUTOINCREMENT,
        app_id            INTEGER NOT NULL CHECK (app_id > 0),
        sender            TEXT NOT NULL,
        receiver          TEXT NOT NULL,
        conv_a            TEXT NOT NULL,
        conv_b            TEXT NOT NULL,
        conversation_seq  INTEGER NOT NULL CHECK (conversation_seq > 0),
        inbox_seq         INTEGER NOT NULL CHECK (inbox_seq > 0),
        kind              INTEGER NOT NULL,
        body              TEXT NOT NULL,
        local_message_id  INTEGER NOT NULL,  -- the u64, bit-cast to i64
        timestamp_ms      INTEGER NOT NULL,
        priority          INTEGER NOT NULL,
        UNIQUE (app_id, sender, local_message_id)
    ) STRICT;
    CREATE UNIQUE INDEX peer_messages_inbox
        ON peer_messages (app_id, receiver, inbox_seq);
    CREATE UNIQUE INDEX peer_messages_conversation
        ON peer_messages (app_id, conv_a, conv_b, conversation_seq);
    CREATE INDEX peer_messages_time ON peer_messages (timestamp_ms);

    CREATE TABLE conversations (
        app_id    INTEGER NOT NULL,
        conv_a    TEXT NOT NULL,
        conv_b    TEXT NOT NULL,
        last_seq  INTEGER NOT NULL,
        PRIMARY KEY (app_id, conv_a, conv_b)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE inboxes (
        app_id     INTEGER NOT NULL,
        user_id    TEXT NOT NULL,
        head_seq   INTEGER NOT NULL,
        acked_seq  INTEGER NOT NULL,
        PRIMARY KEY (app_id, user_id)
    ) STRICT, WITHOUT ROWID;
    ",
    // 2: rooms. `message_ids` is the one id counter of peer AND room messages (both
    // insert explicit ids taken from it); it starts above every peer message id ever
    // given, so databases of version 1 upgrade without reusing an id. `room_seqs`
    // outlives its room (destroy keeps it, and the room's messages, for history), so a
    // re-created roomID continues its seqs. `rooms.member_count` is kept by every
    // join and leave so that limits and counts never scan a large room.
    "
    CREATE TABLE message_ids (
        id       INTEGER PRIMARY KEY CHECK (id = 0),
        last_id  INTEGER NOT NULL CHECK (last_id >= 0)
    ) STRICT;
    INSERT INTO message_ids (id, last_id) VALUES (0, max(
        coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'peer_messages'), 0),
        coalesce((SELECT max(message_id) FROM peer_messages), 0)
    ));

    CREATE TABLE rooms (
        app_id              INTEGER NOT NULL CHECK (app_id > 0),
        room_id             TEXT NOT NULL,
        room_name           TEXT NOT NULL,
        created_ms          INTEGER NOT NULL,
        destroy_delay_secs  INTEGER NOT NULL CHECK (destroy_delay_secs >= 0),
        empty_since_ms      INTEGER,
        member_count        INTEGER NOT NULL CHECK (member_count >= 0),
        PRIMARY KEY (app_id, room_id)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX rooms_empty ON rooms (empty_since_ms) WHERE empty_since_ms IS NOT NULL;

    CREATE TABLE room_members (
        app_id            INTEGER NOT NULL,
        room_id           TEXT NOT NULL,
        user_id           TEXT NOT NULL,
        user_name         TEXT NOT NULL,
        joined_ms         INTEGER NOT NULL,
        offline_since_ms  INTEGER,
        PRIMARY KEY (app_id, room_id, user_id),
        FOREIGN KEY (app_id, room_id) REFERENCES rooms (app_id, room_id)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX room_members_user ON room_members (app_id, user_id);
    CREATE INDEX room_members_offline ON room_members (offline_since_ms)
        WHERE offline_since_ms IS NOT NULL;

    CREATE TABLE room_attributes (
        app_id                   INTEGER NOT NULL,
        room_id                  TEXT NOT NULL,
        key                      TEXT NOT NULL,
        value                    TEXT NOT NULL,
        owner                    TEXT NOT NULL,
        delete_after_owner_left  INTEGER NOT NULL CHECK (delete_after_owner_left IN (0, 1)),
        PRIMARY KEY (app_id, room_id, key),
        FOREIGN KEY (app_id, room_id) REFERENCES rooms (app_id, room_id)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE room_seqs (
        app_id    INTEGER NOT NULL,
        room_id   TEXT NOT NULL,
        last_seq  INTEGER NOT NULL,
        PRIMARY KEY (app_id, room_id)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE room_messages (
        message_id        INTEGER PRIMARY KEY AUTOINCREMENT,  -- from message_ids
        app_id            INTEGER NOT NULL CHECK (app_id > 0),
        room_id           TEXT NOT NULL,
        seq               INTEGER NOT NULL CHECK (seq > 0),
        sender            TEXT NOT NULL,
        kind              INTEGER NOT NULL,
        body              TEXT NOT NULL,
        local_message_id  INTEGER NOT NULL,  -- the u64, bit-cast to i64
        timestamp_ms      INTEGER NOT NULL,
        priority          INTEGER NOT NULL,
        UNIQUE (app_id, sender, local_message_id),
        UNIQUE (app_id, room_id, seq)
    ) STRICT;
    CREATE INDEX room_messages_time ON room_messages (timestamp_ms);
    ",
];

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

/// See [`SqliteStore::queued`].
#[derive(Debug, Default)]
struct Queued {
    jobs: AtomicUsize,
    taken: tokio::sync::Notify,
}

/// Wakes the writes waiting for room when the writer thread ends.
struct WakeOnExit(Arc<Queued>);

impl Drop for WakeOnExit {
    fn drop(&mut self) {
        self.0.taken.notify_waiters();
    }
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    largest_batch: AtomicU64,
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
        let conn = open_writer(&cfg)?;
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

    /// Runs `work` on the writer thread inside the next group commit and returns its
    /// result once the transaction holding it is durable.
    async fn write<T, F>(&self, what: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(what, work).await
    }

    /// [`SqliteStore::write`] for any error type that can carry a [`StoreError`]
    /// (room operations answer [`RoomError`]). An `Err` from `work` rolls back
    /// everything `work` did: each request runs in its own savepoint.
    async fn submit<T, E, F>(&self, what: &'static str, work: F) -> Result<T, E>
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
    async fn submit_append<T, E, F>(&self, what: &'static str, work: F) -> Result<T, E>
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

    /// Runs `work` on a read connection, on tokio's blocking pool.
    async fn read<T, F>(&self, what: &'static str, work: F) -> Result<T, StoreError>
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
        self.read("list apps", |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT app_id, secret, name, created_ms FROM apps ORDER BY app_id")
                .map_err(db("list apps: prepare"))?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .map_err(db("list apps: query"))?;
            let mut apps = Vec::new();
            for row in rows {
                let (app_id, secret, name, created_ms) = row.map_err(db("list apps: read row"))?;
                apps.push(AppRecord {
                    app_id: app_from_sql(app_id)?,
                    secret,
                    name,
                    created_ms,
                });
            }
            Ok(apps)
        })
        .await
    }

    async fn put_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        check_app(app.app_id)?;
        let app = app.clone();
        self.write("put app", move |conn| {
            conn.prepare_cached(
                "INSERT INTO apps (app_id, secret, name, created_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (app_id) DO UPDATE SET
                    secret = excluded.secret, name = excluded.name,
                    created_ms = excluded.created_ms",
            )
            .and_then(|mut s| s.execute(params![app.app_id, app.secret, app.name, app.created_ms]))
            .map_err(db("put app"))?;
            Ok(())
        })
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
            conn.prepare_cached(
                "INSERT INTO users (app_id, user_id, user_name, first_seen_ms, last_seen_ms)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (app_id, user_id) DO UPDATE SET
                    user_name = excluded.user_name,
                    last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
            )
            .and_then(|mut s| s.execute(params![app_id, user_id, user_name, now_ms]))
            .map_err(db("touch user"))?;
            Ok(())
        })
        .await
    }

    async fn append_peer(&self, msg: NewPeerMessage) -> Result<Appended, StoreError> {
        check_app(msg.app_id)?;
        self.submit_append("append peer message", move |conn| append_peer(conn, msg))
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
            inbox_after(conn, app_id, &user_id, after, limit)
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
            conn.prepare_cached(
                "INSERT INTO inboxes (app_id, user_id, head_seq, acked_seq) VALUES (?1, ?2, 0, ?3)
                 ON CONFLICT (app_id, user_id) DO UPDATE SET
                    acked_seq = max(acked_seq, excluded.acked_seq)",
            )
            .and_then(|mut s| s.execute(params![app_id, user_id, seq]))
            .map_err(db("ack inbox"))?;
            Ok(())
        })
        .await
    }

    async fn inbox_acked(&self, app_id: u32, user_id: &str) -> Result<u64, StoreError> {
        let user_id = user_id.to_owned();
        self.read("read inbox ack", move |conn| {
            let acked: Option<i64> = conn
                .prepare_cached("SELECT acked_seq FROM inboxes WHERE app_id = ?1 AND user_id = ?2")
                .and_then(|mut s| {
                    s.query_row(params![app_id, user_id], |r| r.get(0))
                        .optional()
                })
                .map_err(db("read inbox ack"))?;
            seq_from_sql(acked.unwrap_or(0), "acked_seq")
        })
        .await
    }

    async fn purge_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        self.write("purge messages", move |conn| {
            let peer = conn
                .prepare_cached("DELETE FROM peer_messages WHERE timestamp_ms < ?1")
                .and_then(|mut s| s.execute([cutoff_ms]))
                .map_err(db("purge peer messages"))?;
            let room = conn
                .prepare_cached("DELETE FROM room_messages WHERE timestamp_ms < ?1")
                .and_then(|mut s| s.execute([cutoff_ms]))
                .map_err(db("purge room messages"))?;
            Ok(u64::try_from(peer + room).unwrap_or(u64::MAX))
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
        self.read("ping", |conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(db("ping"))?;
            Ok(())
        })
        .await
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
// Writes (run on the writer thread)

fn append_peer(conn: &Connection, m: NewPeerMessage) -> Result<Appended, StoreError> {
    let local = local_to_sql(m.local_message_id);
    let existing = conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM peer_messages
             WHERE app_id = ?1 AND sender = ?2 AND local_message_id = ?3"
        ))
        .and_then(|mut s| {
            s.query_row(params![m.app_id, m.sender, local], read_peer_message)
                .optional()
        })
        .map_err(db("append: look for a previous send"))?;
    if let Some(raw) = existing {
        return Ok(Appended {
            message: raw.into_stored()?,
            duplicate: true,
        });
    }

    let (conv_a, conv_b) = conversation_pair(&m.sender, &m.receiver);
    let conversation_seq = bump_counter(
        conn,
        "INSERT INTO conversations (app_id, conv_a, conv_b, last_seq) VALUES (?1, ?2, ?3, 1)
         ON CONFLICT (app_id, conv_a, conv_b) DO UPDATE SET last_seq = last_seq + 1",
        "SELECT last_seq FROM conversations WHERE app_id = ?1 AND conv_a = ?2 AND conv_b = ?3",
        params![m.app_id, conv_a, conv_b],
    )
    .map_err(db("append: advance the conversation seq"))?;
    let inbox_seq = bump_counter(
        conn,
        "INSERT INTO inboxes (app_id, user_id, head_seq, acked_seq) VALUES (?1, ?2, 1, 0)
         ON CONFLICT (app_id, user_id) DO UPDATE SET head_seq = head_seq + 1",
        "SELECT head_seq FROM inboxes WHERE app_id = ?1 AND user_id = ?2",
        params![m.app_id, m.receiver],
    )
    .map_err(db("append: advance the inbox seq"))?;
    let message_id = next_message_id(conn)?;
    conn.prepare_cached(
        "INSERT INTO peer_messages (message_id, app_id, sender, receiver, conv_a, conv_b,
            conversation_seq, inbox_seq, kind, body, local_message_id, timestamp_ms, priority)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .and_then(|mut s| {
        s.execute(params![
            message_id,
            m.app_id,
            m.sender,
            m.receiver,
            conv_a,
            conv_b,
            conversation_seq,
            inbox_seq,
            m.kind,
            m.body,
            local,
            m.timestamp_ms,
            m.priority,
        ])
    })
    .map_err(db("append: insert the message"))?;

    Ok(Appended {
        message: appended_peer(m, message_id, conversation_seq, inbox_seq)?,
        duplicate: false,
    })
}

/// Takes the next message id, for a peer or a room message (see the module docs).
fn next_message_id(conn: &Connection) -> Result<i64, StoreError> {
    let bumped = conn
        .prepare_cached("UPDATE message_ids SET last_id = last_id + 1 WHERE id = 0")
        .and_then(|mut s| s.execute([]))
        .map_err(db("take a message id"))?;
    if bumped == 0 {
        return Err(StoreError::Corrupt(
            "the message id counter is missing".into(),
        ));
    }
    conn.prepare_cached("SELECT last_id FROM message_ids WHERE id = 0")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db("take a message id"))
}

/// Advances a counter with `bump` (an upsert) and reads it with `read`, both
/// given `params`. Not one statement with `RETURNING`: SQLite collects a
/// RETURNING statement's rows in an ephemeral table, opened and closed on every
/// run, which cost an append more than the second statement does.
pub(crate) fn bump_counter(
    conn: &Connection,
    bump: &str,
    read: &str,
    params: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<i64> {
    conn.prepare_cached(bump)?.execute(params)?;
    conn.prepare_cached(read)?.query_row(params, |r| r.get(0))
}

// ---------------------------------------------------------------------------------
// Reads (run on a read connection)

fn inbox_after(
    conn: &mut Connection,
    app_id: u32,
    user_id: &str,
    after: u64,
    limit: usize,
) -> Result<InboxPage, StoreError> {
    // One read transaction: messages, head and first held are one snapshot.
    let tx = conn.transaction().map_err(db("read inbox: begin"))?;
    let head: Option<i64> = tx
        .prepare_cached("SELECT head_seq FROM inboxes WHERE app_id = ?1 AND user_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![app_id, user_id], |r| r.get(0))
                .optional()
        })
        .map_err(db("read inbox: head"))?;
    let head = seq_from_sql(head.unwrap_or(0), "head_seq")?;
    let min_held: Option<i64> = tx
        .prepare_cached(
            "SELECT min(inbox_seq) FROM peer_messages WHERE app_id = ?1 AND receiver = ?2",
        )
        .and_then(|mut s| s.query_row(params![app_id, user_id], |r| r.get(0)))
        .map_err(db("read inbox: first held"))?;
    let first_held = first_held(head, min_held)?;

    let mut messages = Vec::new();
    if limit > 0 {
        let after = clamp_to_sql(after);
        let limit = limit_to_sql(limit);
        let mut stmt = tx
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM peer_messages
                 WHERE app_id = ?1 AND receiver = ?2 AND inbox_seq > ?3
                 ORDER BY inbox_seq LIMIT ?4"
            ))
            .map_err(db("read inbox: prepare"))?;
        let rows = stmt
            .query_map(params![app_id, user_id, after, limit], read_peer_message)
            .map_err(db("read inbox: query"))?;
        for row in rows {
            messages.push(row.map_err(db("read inbox: read row"))?.into_stored()?);
        }
    }
    drop(tx); // read-only: rolling back is ending it
    Ok(InboxPage {
        messages,
        head,
        first_held,
    })
}

const MESSAGE_COLUMNS: &str = "message_id, conversation_seq, inbox_seq, app_id, sender, receiver, \
     kind, body, local_message_id, timestamp_ms, priority";

/// Reads a `peer_messages` row selected with [`MESSAGE_COLUMNS`].
fn read_peer_message(row: &Row<'_>) -> rusqlite::Result<PeerMessageRow> {
    Ok(PeerMessageRow {
        message_id: row.get(0)?,
        conversation_seq: row.get(1)?,
        inbox_seq: row.get(2)?,
        app_id: row.get(3)?,
        sender: row.get(4)?,
        receiver: row.get(5)?,
        kind: row.get(6)?,
        body: row.get(7)?,
        local_message_id: row.get(8)?,
        timestamp_ms: row.get(9)?,
        priority: row.get(10)?,
    })
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

// ---------------------------------------------------------------------------------
// Connections

fn open_writer(cfg: &SqliteConfig) -> Result<Connection, StoreError> {
    let what = |step: &str| {
        let path = cfg.path.display().to_string();
        let step = step.to_owned();
        move |e: rusqlite::Error| StoreError::Unavailable(format!("sqlite {path}: {step}: {e}"))
    };
    let conn = Connection::open_with_flags(
        &cfg.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(what("open"))?;
    conn.busy_timeout(cfg.busy_timeout)
        .map_err(what("set busy_timeout"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(what("set journal_mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "sqlite {}: journal_mode is {mode}, WAL is required",
            cfg.path.display()
        )));
    }
    let sync = if cfg.synchronous_full {
        "FULL"
    } else {
        "NORMAL"
    };
    // temp_store stays at its default (files): a large purge's savepoint may hold
    // many pages, and message appends run without a savepoint anyway.
    // The WAL is checkpointed every 1000 pages (SQLite's default): larger
    // checkpoints measured no faster now that appends run without savepoints, and
    // each one stalls the writer (and the room messages behind it) longer.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
    ))
    .map_err(what("set synchronous and foreign_keys"))?;
    migrate(&conn).map_err(|e| match e {
        StoreError::Unavailable(m) => {
            StoreError::Unavailable(format!("sqlite {}: {m}", cfg.path.display()))
        }
        other => other,
    })?;
    Ok(conn)
}

/// Brings the schema to [`SCHEMA_VERSION`], one migration per transaction.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let mut version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db("read user_version"))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {version}; this build knows up to {SCHEMA_VERSION}"
        )));
    }
    while version < SCHEMA_VERSION {
        let index = usize::try_from(version)
            .map_err(|_| StoreError::Corrupt(format!("negative schema version {version}")))?;
        let next = version + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {} PRAGMA user_version = {next}; COMMIT;",
            MIGRATIONS[index]
        ))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            StoreError::Unavailable(format!("migrate the schema to version {next}: {e}"))
        })?;
        tracing::info!(version = next, "sqlite schema migrated");
        version = next;
    }
    Ok(())
}

/// The read connections: idle ones are kept for reuse, more are opened on demand.
#[derive(Debug)]
struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    /// One permit per read in progress (at most [`MAX_READERS`]).
    permits: Arc<tokio::sync::Semaphore>,
    /// Read connections opened so far.
    opened: AtomicUsize,
    /// Set by close: no new reads, no connection kept.
    closed: AtomicBool,
}

impl Readers {
    fn open(&self) -> Result<Connection, StoreError> {
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

    fn with<T>(
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

    fn put_back(&self, conn: Connection) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_READERS {
            idle.push(conn);
        }
    }
}

// ---------------------------------------------------------------------------------
// The writer thread

/// How a request is isolated inside its batch's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Savepoint {
    /// In its own savepoint: a failure rolls back this request alone.
    Own,
    /// None: the request refuses before it writes; a failure after writing rolls
    /// back the whole batch (see [`SqliteStore::submit_append`]).
    None,
}

/// One queued write request, type-erased so that one queue carries every kind.
trait Job: Send {
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

fn writer_loop(
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
    use super::*;

    fn msg(sender: &str, receiver: &str, local: u64) -> NewPeerMessage {
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

    fn open(dir: &tempfile::TempDir) -> SqliteStore {
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

    #[test]
    fn open_sets_pragmas_and_schema_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/dirs/confab.db");
        let store = SqliteStore::open(SqliteConfig::new(&path)).expect("open");
        assert!(path.exists(), "parent directories and file are created");
        drop(store);
        let conn = Connection::open(&path).expect("reopen raw");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("v");
        assert_eq!(version, SCHEMA_VERSION);
        // A second open of a migrated file migrates nothing and works.
        drop(conn);
        let _again = SqliteStore::open(SqliteConfig::new(&path)).expect("open again");
    }

    /// A version-1 database (peer messages only) upgrades to version 2 in place: its
    /// messages stay, and new ids of either kind are above every id version 1 gave,
    /// even one whose message was purged.
    #[tokio::test]
    async fn version_1_databases_upgrade_and_ids_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v1.db");
        {
            let conn = Connection::open(&path).expect("raw");
            conn.execute_batch(&format!(
                "BEGIN; {} PRAGMA user_version = 1; COMMIT;",
                MIGRATIONS[0]
            ))
            .expect("version 1 schema");
            for local in 1..=3 {
                conn.execute(
                    "INSERT INTO peer_messages (app_id, sender, receiver, conv_a, conv_b,
                        conversation_seq, inbox_seq, kind, body, local_message_id,
                        timestamp_ms, priority)
                     VALUES (1, 'a', 'b', 'a', 'b', ?1, ?1, 1, 'old', ?1, 10, 2)",
                    [local],
                )
                .expect("old message");
            }
            conn.execute_batch(
                "INSERT INTO conversations VALUES (1, 'a', 'b', 3);
                 INSERT INTO inboxes VALUES (1, 'b', 3, 0);
                 DELETE FROM peer_messages WHERE message_id = 3;",
            )
            .expect("counters, and a purge of id 3");
        }
        let store = SqliteStore::open(SqliteConfig::new(&path)).expect("open and migrate");
        let old = store.inbox_after(1, "b", 0, 10).await.expect("inbox");
        assert_eq!(
            old.messages
                .iter()
                .map(|m| m.message_id)
                .collect::<Vec<_>>(),
            vec![1, 2],
            "old messages survive the upgrade"
        );
        store
            .create_room(
                NewRoom {
                    app_id: 1,
                    room_id: "r".into(),
                    room_name: "R".into(),
                    creator: "a".into(),
                    creator_name: "A".into(),
                    attributes: vec![],
                    destroy_delay_secs: 0,
                    now_ms: 1,
                },
                RoomLimits::default(),
            )
            .await
            .expect("rooms work after the upgrade");
        let room = store
            .append_room(NewRoomMessage {
                app_id: 1,
                room_id: "r".into(),
                sender: "a".into(),
                kind: 1,
                body: "new".into(),
                local_message_id: 1,
                timestamp_ms: 20,
                priority: 2,
            })
            .await
            .expect("append room");
        assert_eq!(room.message.message_id, 4, "above the purged id 3");
        let peer = store.append_peer(msg("a", "b", 4)).await.expect("append");
        assert_eq!(peer.message.message_id, 5, "one counter for both kinds");
        assert_eq!(
            (peer.message.conversation_seq, peer.message.inbox_seq),
            (4, 4)
        );
        let path = store.path().to_owned();
        drop(store);
        let version: i64 = Connection::open(path)
            .expect("raw")
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, 2);
    }

    /// `expire_members` removes a member as a leave at `cutoff_ms` would: a room it
    /// leaves empty is empty since the cutoff, and its destroy delay counts from there.
    #[tokio::test]
    async fn expiry_empties_rooms_as_of_the_cutoff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir);
        store
            .create_room(
                NewRoom {
                    app_id: 1,
                    room_id: "r".into(),
                    room_name: "R".into(),
                    creator: "a".into(),
                    creator_name: "A".into(),
                    attributes: vec![],
                    destroy_delay_secs: 10,
                    now_ms: 1_000,
                },
                RoomLimits::default(),
            )
            .await
            .expect("create");
        store
            .set_member_offline(1, "a", Some(2_000))
            .await
            .expect("offline");
        let expired = store.expire_members(50_000).await.expect("expire");
        assert_eq!(expired.len(), 1);
        assert!(expired[0].room_empty);
        let room = store.room(1, "r").await.expect("room").expect("exists");
        assert_eq!(room.empty_since_ms, Some(50_000));
        assert!(
            store
                .destroy_empty_rooms(59_999)
                .await
                .expect("destroy")
                .is_empty()
        );
        assert_eq!(
            store.destroy_empty_rooms(60_000).await.expect("destroy"),
            vec![(1, "r".to_owned())]
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("confab.db");
        Connection::open(&path)
            .expect("raw")
            .execute_batch("PRAGMA user_version = 99")
            .expect("set");
        let err = SqliteStore::open(SqliteConfig::new(&path)).expect_err("must refuse");
        assert!(
            matches!(err, StoreError::Corrupt(ref m) if m.contains("99")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn touch_user_creates_then_updates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir);
        store
            .touch_user(1, "alice", "Alice", 100)
            .await
            .expect("touch");
        store
            .touch_user(1, "alice", "Alice B", 200)
            .await
            .expect("touch");
        store
            .touch_user(1, "alice", "Alice C", 150)
            .await
            .expect("touch (clock went back)");
        store
            .touch_user(2, "alice", "Other app", 300)
            .await
            .expect("touch");
        let path = store.path().to_owned();
        store.close().await;
        let conn = Connection::open(path).expect("raw");
        let row: (String, i64, i64) = conn
            .query_row(
                "SELECT user_name, first_seen_ms, last_seen_ms FROM users
                 WHERE app_id = 1 AND user_id = 'alice'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("row");
        assert_eq!(row, ("Alice C".to_owned(), 100, 200));
        let users: i64 = conn
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
            .expect("n");
        assert_eq!(users, 2);
    }

    #[tokio::test]
    async fn local_ids_are_stored_bit_cast() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir);
        store
            .append_peer(msg("a", "b", u64::MAX))
            .await
            .expect("append");
        let path = store.path().to_owned();
        drop(store);
        let conn = Connection::open(path).expect("raw");
        let stored: i64 = conn
            .query_row("SELECT local_message_id FROM peer_messages", [], |r| {
                r.get(0)
            })
            .expect("row");
        assert_eq!(stored, -1);
    }

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
