//! [`PgStore`]: confab's [`Store`] on PostgreSQL, for several `confab serve` nodes
//! that share one database for apps, users, messages, inboxes, rooms and history.
//!
//! It passes the same conformance suite as the SQLite default and follows the SQLite
//! store's documented readings of the contract (see `confab_store`'s `sqlite` and
//! `sqlite::rooms` module docs): one message-id sequence for peer and room messages;
//! room seqs that survive a destroy; the attribute rules; `expire_members` leaving as
//! of the cutoff; history anchors. The rules both stores apply the same way — the
//! room limits, attribute ownership, the conversions of column values and the
//! argument checks — are `confab_store`'s code (beside `RoomLimits`, and
//! `confab_store::backend`), called by both; this crate holds only its SQL.
//!
//! # Connections
//! A small pool of its own ([`PgConfig::pool_size`] connections, opened on demand),
//! each connection with its own prepared-statement cache and these session settings:
//! `search_path` = the store's schema (the SQL names no schema), `statement_timeout`,
//! `idle_in_transaction_session_timeout`, and `synchronous_commit = on`, so that a
//! write returned `Ok` is in the server's flushed WAL: durable. Plain connections
//! only (no TLS connector).
//!
//! # Never hang, never panic
//! Every call is bounded three ways: waiting for a pooled connection or opening one
//! ([`PgConfig::connect_timeout`]), each statement on the server
//! ([`PgConfig::statement_timeout`], lock waits included), and the whole call
//! ([`PgConfig::call_timeout`]). Every failure — unreachable server, timeout, any
//! database error — is a [`StoreError::Unavailable`] naming what failed, so a node
//! that loses PostgreSQL answers with internal-error codes; connections that died
//! (closed, cut off by a deadline, noticed dead by TCP keepalives or
//! `tcp_user_timeout`) are dropped, not reused, and new ones are opened when the
//! server is back. The bounds use tokio's timer: the runtime must have time enabled
//! (`#[tokio::main]` does).
//!
//! # Concurrency between nodes
//! Writes run in READ COMMITTED transactions and get their guarantees from row locks
//! and unique constraints, not from any one process:
//! - **Sequences.** A conversation's, an inbox's and a room's next position comes
//!   from its counter row, advanced with `INSERT .. ON CONFLICT DO UPDATE SET
//!   last_seq = last_seq + 1 RETURNING last_seq` inside the transaction that inserts
//!   the message. The row lock holds until commit, so writers of one counter take
//!   turns and commit in position order (a reader never sees position n+1 before n),
//!   and a rolled-back append gives its position back: no holes, no reuse.
//! - **Idempotent appends.** `(app, sender, local_message_id)` is `UNIQUE`; the append
//!   looks for a previous send, and otherwise inserts with `ON CONFLICT DO NOTHING`.
//!   If a concurrent node won that race the insert returns nothing: the transaction
//!   rolls back (returning the positions it took) and runs again, which then finds the
//!   winner's message and answers it as a duplicate.
//! - **Room limits.** Locks, taken always in the order app → user → room: creating a
//!   room locks the app's row in `room_app_locks` (so an app's creates take turns and
//!   `count(*)` of its rooms is exact), then the creator's row in `room_user_locks`;
//!   a join locks the user's row, then the room row (`FOR UPDATE`), whose
//!   `member_count` decides `RoomFull`; leave, expiry, destroy and attribute changes
//!   lock the room row. Releasing operations take no user or app lock: at worst a
//!   concurrent check counts a room or membership that is being removed, and refuses.
//! - Deadlocks (`40P01`) and serialization failures (`40001`), which these lock orders
//!   should prevent, are retried (the whole transaction, a few times) anyway.
//!
//! # Where the contract leaves room
//! - IDs (userID, roomID) are stored as `TEXT COLLATE "C"` (bytewise order, as
//!   Rust's `str` and the SQLite store sort), which cannot hold NUL: an ID containing
//!   NUL — or an app secret or name, also `TEXT` — is refused with
//!   [`StoreError::Invalid`] (the server never accepts such IDs). Everything else that is text of any kind — bodies, names,
//!   attribute keys and values — round-trips exactly, NUL included (`BYTEA`).
//! - Message ids have holes (a sequence gives a value to every attempted append, even
//!   one that rolls back); the contract asks only that they be unique and positive,
//!   and they also grow with time within one node.

/// The columns of a peer message, in the order `peer::stored_peer_at` reads them.
macro_rules! peer_columns {
    () => {
        "message_id, conversation_seq, inbox_seq, app_id, sender, receiver, kind, body, \
         local_message_id, timestamp_ms, priority"
    };
}

/// The columns of a room message, in the order `rooms::stored_room` reads them.
macro_rules! room_message_columns {
    () => {
        "message_id, seq, room_id, sender, kind, body, local_message_id, timestamp_ms, priority"
    };
}

/// A room with its seq head, as `rooms::room_record` reads it; callers add the
/// `WHERE` (and may join `room_members m`).
macro_rules! room_select {
    () => {
        "SELECT r.app_id, r.room_id, r.room_name, r.created_ms, r.destroy_delay_secs, \
         r.empty_since_ms, coalesce(s.last_seq, 0) \
         FROM rooms r LEFT JOIN room_seqs s ON s.app_id = r.app_id AND s.room_id = r.room_id"
    };
}

mod peer;
mod pool;
mod rooms;
mod schema;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use confab_store::backend::{Member, check_app, inbox_seq_to_sql};
use confab_store::{
    AppRecord, Appended, AppendedRoom, AttributeChange, AttributesChanged, ExpiredMember,
    HistoryMessage, HistoryQuery, InboxPage, Joined, Left, MemberRecord, NewPeerMessage, NewRoom,
    NewRoomMessage, RoomError, RoomLimits, RoomRecord, Store, StoreError, StoredRoomMessage,
};
use tokio_postgres::error::SqlState;

use crate::pool::{Conn, Pool};

pub use crate::schema::SCHEMA_VERSION;

/// How often a write transaction runs at most (a first try and retries after a
/// deadlock, a serialization failure, or a lost race for an idempotency key).
const MAX_ATTEMPTS: u32 = 5;

/// Configuration of a [`PgStore`]: one struct, every field with its default.
#[derive(Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// A libpq-style URL or key=value string (`postgres://user@host:5432/db`). Its
    /// `options` are kept; the store adds its own session settings after them.
    pub url: String,
    /// The PostgreSQL schema (namespace) holding the store's tables, created if
    /// missing: 1–63 lowercase ASCII letters, digits and `_`, not starting with a
    /// digit or `pg_`. Default `confab`.
    pub schema: String,
    /// The most connections open at once (at least 1). Default 16.
    pub pool_size: usize,
    /// How long a call waits for a free pooled connection, and how long opening a
    /// connection may take. Default 5 s.
    pub connect_timeout: Duration,
    /// The server-side `statement_timeout` of every statement (lock waits included).
    /// Default 5 s.
    pub statement_timeout: Duration,
    /// The bound on a whole call: pool wait, connect, every statement and every retry.
    /// Default 10 s.
    pub call_timeout: Duration,
}

impl PgConfig {
    /// Default for [`PgConfig::schema`].
    pub const DEFAULT_SCHEMA: &'static str = "confab";
    /// Default for [`PgConfig::pool_size`].
    pub const DEFAULT_POOL_SIZE: usize = 16;
    /// Default for [`PgConfig::connect_timeout`].
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default for [`PgConfig::statement_timeout`].
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default for [`PgConfig::call_timeout`].
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

    /// The defaults for the database at `url`: schema `confab`, 16 connections, 5 s
    /// to get a connection, 5 s per statement, 10 s per call.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: Self::DEFAULT_SCHEMA.to_owned(),
            pool_size: Self::DEFAULT_POOL_SIZE,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
        }
    }

    /// The tokio-postgres configuration with the store's session settings, and a
    /// description of the target without the password.
    fn connection_config(&self) -> Result<(tokio_postgres::Config, String), StoreError> {
        schema::check_schema_name(&self.schema)?;
        if self.pool_size == 0 {
            return Err(StoreError::Invalid(
                "postgres pool_size must be at least 1".into(),
            ));
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("statement_timeout", self.statement_timeout),
            ("call_timeout", self.call_timeout),
        ] {
            if value.as_millis() == 0 {
                return Err(StoreError::Invalid(format!(
                    "postgres {name} must be at least 1 ms"
                )));
            }
        }
        let mut config: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("postgres url: {}", describe(&e))))?;
        if config.get_hosts().is_empty() {
            return Err(StoreError::Invalid("postgres url: it names no host".into()));
        }
        let statement_ms = self.statement_timeout.as_millis();
        // A transaction is never idle for long unless its node died or hung: let the
        // server end it (and release its locks) well after any call would have.
        let idle_tx_ms = self.call_timeout.as_millis().saturating_mul(3);
        let ours = format!(
            "-c search_path={} -c statement_timeout={statement_ms} \
             -c idle_in_transaction_session_timeout={idle_tx_ms} -c synchronous_commit=on",
            self.schema
        );
        let options = match config.get_options() {
            Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
            _ => ours,
        };
        config.options(options);
        if config.get_application_name().is_none() {
            config.application_name("confab");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.connect_timeout);
        }
        // Notice dead connections: idle ones by keepalives within about a minute, busy
        // ones when sent data stays unacknowledged for a call's length. (A URL's
        // `keepalives=0` is kept.)
        config.keepalives_idle(Duration::from_secs(30));
        config.keepalives_interval(Duration::from_secs(10));
        config.keepalives_retries(3);
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(self.call_timeout);
        }
        let target = describe_target(&config);
        Ok((config, target))
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = match self.url.parse::<tokio_postgres::Config>() {
            Ok(config) => describe_target(&config),
            Err(_) => "<unparsable url>".to_owned(),
        };
        f.debug_struct("PgConfig")
            .field("url", &url)
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

/// `postgres://user@host:port/db`, never with the password.
fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => String::new(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

/// confab's [`Store`] on PostgreSQL. See the crate docs for the schema, the
/// concurrency between nodes, and the bounds on every call.
///
/// [`PgStore::close`] (or dropping the store) closes its connections; after `close`,
/// every method fails with [`StoreError::Unavailable`].
pub struct PgStore {
    pool: Pool,
    schema: String,
    call_timeout: Duration,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.pool.target())
            .field("schema", &self.schema)
            .field("pool_size", &self.pool.size())
            .field("idle", &self.pool.idle())
            .field("closed", &self.pool.is_closed())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` with the defaults of [`PgConfig`] but the
    /// given schema and pool size, creating the schema and bringing it up to date.
    ///
    /// # Errors
    /// As [`PgStore::connect_with`].
    pub async fn connect(url: &str, schema: &str, pool_size: usize) -> Result<Self, StoreError> {
        Self::connect_with(PgConfig {
            schema: schema.to_owned(),
            pool_size,
            ..PgConfig::new(url)
        })
        .await
    }

    /// Connects as `cfg` says: opens a first connection (failing now, not on the first
    /// call, if the server cannot be reached), creates the schema if missing and
    /// applies the migrations it lacks — one transaction under an advisory lock, so
    /// nodes starting together migrate once — and keeps that connection in the pool.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a bad configuration (URL, schema name, pool size,
    /// zero timeouts); [`StoreError::Unavailable`] if the server cannot be reached or
    /// the migration fails; [`StoreError::Corrupt`] if the schema is newer than this
    /// build knows.
    pub async fn connect_with(cfg: PgConfig) -> Result<Self, StoreError> {
        let (config, target) = cfg.connection_config()?;
        let pool = Pool::new(config, target, cfg.pool_size, cfg.connect_timeout);
        // The migration may wait for another node's (60 s at most, on the server).
        let bound = cfg.connect_timeout + Duration::from_secs(75);
        let setup = async {
            let mut conn = pool.open().await?;
            schema::migrate(&mut conn, &cfg.schema)
                .await
                .map_err(StoreError::from)?;
            pool.put_back(conn);
            Ok::<(), StoreError>(())
        };
        match tokio::time::timeout(bound, setup).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "postgres {}: connecting and migrating schema {} took longer than {bound:?}",
                    pool.target(),
                    cfg.schema
                )));
            }
        }
        tracing::info!(target = pool.target(), schema = %cfg.schema, "postgres store open");
        Ok(Self {
            pool,
            schema: cfg.schema,
            call_timeout: cfg.call_timeout,
        })
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Closes the idle connections and refuses every later call (connections in use
    /// close when their call ends). Idempotent.
    pub fn close(&self) {
        if !self.pool.is_closed() {
            tracing::info!(target = self.pool.target(), schema = %self.schema, "postgres store closing");
        }
        self.pool.close();
    }

    /// Runs `op` in a transaction on a pooled connection: commits if it returns `Ok`,
    /// rolls back if it returns `Err`, and runs it again (up to [`MAX_ATTEMPTS`] in
    /// all) after a deadlock, a serialization failure or a lost idempotency race.
    async fn write<A, T, F>(&self, what: &'static str, args: A, mut op: F) -> Result<T, Fail>
    where
        A: Send + Sync,
        T: Send,
        F: for<'c> FnMut(&'c mut Conn, &'c A) -> BoxFuture<'c, Result<T, Fail>> + Send,
    {
        let work = async {
            let (permit, mut conn) = self.pool.get().await?;
            let mut attempt = 1;
            let result = loop {
                match transaction(&mut conn, &args, &mut op).await {
                    Err(fail)
                        if fail.retryable() && attempt < MAX_ATTEMPTS && !conn.is_closed() =>
                    {
                        tracing::debug!(what, attempt, reason = %StoreError::from(fail), "retrying a postgres transaction");
                        tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 3)).await;
                        attempt += 1;
                    }
                    other => break other,
                }
            };
            self.pool.put_back(conn);
            drop(permit);
            result
        };
        self.bounded(what, work).await
    }

    /// Runs `op` (single statements, no explicit transaction) on a pooled connection.
    async fn read<A, T, F>(&self, what: &'static str, args: A, op: F) -> Result<T, Fail>
    where
        A: Send + Sync,
        T: Send,
        F: for<'c> FnOnce(&'c mut Conn, &'c A) -> BoxFuture<'c, Result<T, Fail>> + Send,
    {
        let work = async {
            let (permit, mut conn) = self.pool.get().await?;
            let result = op(&mut conn, &args).await;
            self.pool.put_back(conn);
            drop(permit);
            result
        };
        self.bounded(what, work).await
    }

    /// `work`, or [`StoreError::Unavailable`] once the call timeout has passed. A call
    /// cut off drops its connection (see [`pool`]).
    async fn bounded<T>(
        &self,
        what: &'static str,
        work: impl Future<Output = Result<T, Fail>> + Send,
    ) -> Result<T, Fail> {
        match tokio::time::timeout(self.call_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(Fail::Store(StoreError::Unavailable(format!(
                "postgres {}: {what}: no answer within {:?}",
                self.pool.target(),
                self.call_timeout
            )))),
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.pool.close();
    }
}

type BoxFuture<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// One attempt of [`PgStore::write`]'s transaction.
async fn transaction<A, T, F>(conn: &mut Conn, args: &A, op: &mut F) -> Result<T, Fail>
where
    F: for<'c> FnMut(&'c mut Conn, &'c A) -> BoxFuture<'c, Result<T, Fail>>,
{
    // READ COMMITTED whatever the server's default: each statement after a lock wait
    // sees what the lock's previous holder committed (see the crate docs).
    conn.batch(
        "begin a transaction",
        "BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE",
    )
    .await?;
    match op(conn, args).await {
        Ok(value) => {
            conn.batch("commit", "COMMIT").await?;
            Ok(value)
        }
        Err(fail) => {
            if let Err(e) = conn.batch("roll back", "ROLLBACK").await {
                tracing::debug!(error = %StoreError::from(e), "postgres rollback failed");
                conn.mark_broken();
            }
            Err(fail)
        }
    }
}

// ---------------------------------------------------------------------------------
// Errors

/// Why an operation failed, inside the store: converted to [`StoreError`] or
/// [`RoomError`] at the trait's edge.
#[derive(Debug)]
pub(crate) enum Fail {
    /// A database or connection error while doing `what`.
    Db {
        what: &'static str,
        error: tokio_postgres::Error,
    },
    /// A concurrent writer stored the same idempotency key first: run again.
    Raced {
        what: &'static str,
    },
    Store(StoreError),
    Room(RoomError),
}

impl Fail {
    fn retryable(&self) -> bool {
        match self {
            Fail::Raced { .. } => true,
            Fail::Db { error, .. } => matches!(
                error.code(),
                Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE
            ),
            Fail::Store(_) | Fail::Room(_) => false,
        }
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl From<RoomError> for Fail {
    fn from(e: RoomError) -> Self {
        match e {
            RoomError::Store(e) => Fail::Store(e),
            other => Fail::Room(other),
        }
    }
}

impl From<Fail> for StoreError {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Db { what, error } => {
                StoreError::Unavailable(format!("postgres: {what}: {}", describe(&error)))
            }
            Fail::Raced { what } => StoreError::Unavailable(format!(
                "postgres: {what}: still racing concurrent writers after {MAX_ATTEMPTS} attempts"
            )),
            Fail::Store(e) => e,
            Fail::Room(e) => StoreError::Corrupt(format!("unexpected room outcome: {e}")),
        }
    }
}

impl From<Fail> for RoomError {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Room(e) => e,
            other => RoomError::Store(other.into()),
        }
    }
}

/// Maps a tokio-postgres error to [`Fail::Db`], saying what failed.
pub(crate) fn db(what: &'static str) -> impl Fn(tokio_postgres::Error) -> Fail {
    move |error| Fail::Db { what, error }
}

/// A tokio-postgres error in full: the server's message and SQLSTATE, or the error
/// with its causes (its `Display` alone says only "db error" or "error connecting").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; {detail}"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------------
// Argument checks

/// IDs (and an app's secret and name) are `TEXT`, which cannot hold NUL: refuse
/// them rather than fail in the database.
fn check_id(what: &str, id: &str) -> Result<(), StoreError> {
    if id.contains('\0') {
        return Err(StoreError::Invalid(format!(
            "{what} {id:?} contains NUL, which the postgres store cannot hold there"
        )));
    }
    Ok(())
}

fn check_ids(ids: &[(&str, &str)]) -> Result<(), StoreError> {
    ids.iter().try_for_each(|(what, id)| check_id(what, id))
}

// ---------------------------------------------------------------------------------
// The trait

#[async_trait]
impl Store for PgStore {
    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        Ok(self
            .read("list apps", (), |c, ()| Box::pin(peer::list_apps(c)))
            .await?)
    }

    async fn put_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        check_app(app.app_id)?;
        if app.secret.contains('\0') {
            // Never echo the secret.
            return Err(StoreError::Invalid(format!(
                "the secret of app {} contains NUL, which the postgres store cannot hold",
                app.app_id
            )));
        }
        check_id("app name", &app.name)?;
        Ok(self
            .write("put app", app.clone(), |c, app| {
                Box::pin(peer::put_app(c, app))
            })
            .await?)
    }

    async fn touch_user(
        &self,
        app_id: u32,
        user_id: &str,
        user_name: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        check_app(app_id)?;
        check_id("userID", user_id)?;
        let args = (app_id, user_id.to_owned(), user_name.to_owned(), now_ms);
        Ok(self
            .write("touch user", args, |c, a| {
                Box::pin(peer::touch_user(c, a.0, &a.1, &a.2, a.3))
            })
            .await?)
    }

    async fn append_peer(&self, msg: NewPeerMessage) -> Result<Appended, StoreError> {
        check_app(msg.app_id)?;
        check_ids(&[("sender", &msg.sender), ("receiver", &msg.receiver)])?;
        Ok(self
            .write("append peer message", msg, |c, m| {
                Box::pin(peer::append_peer(c, m))
            })
            .await?)
    }

    async fn inbox_after(
        &self,
        app_id: u32,
        user_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<InboxPage, StoreError> {
        check_id("userID", user_id)?;
        let args = (app_id, user_id.to_owned(), after, limit);
        Ok(self
            .read("read inbox", args, |c, a| {
                Box::pin(peer::inbox_after(c, a.0, &a.1, a.2, a.3))
            })
            .await?)
    }

    async fn ack_inbox(
        &self,
        app_id: u32,
        user_id: &str,
        inbox_seq: u64,
    ) -> Result<(), StoreError> {
        check_app(app_id)?;
        check_id("userID", user_id)?;
        let seq = inbox_seq_to_sql(inbox_seq)?;
        let args = (app_id, user_id.to_owned(), seq);
        Ok(self
            .write("ack inbox", args, |c, a| {
                Box::pin(peer::ack_inbox(c, a.0, &a.1, a.2))
            })
            .await?)
    }

    async fn inbox_acked(&self, app_id: u32, user_id: &str) -> Result<u64, StoreError> {
        check_id("userID", user_id)?;
        let args = (app_id, user_id.to_owned());
        Ok(self
            .read("read inbox ack", args, |c, a| {
                Box::pin(peer::inbox_acked(c, a.0, &a.1))
            })
            .await?)
    }

    async fn purge_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        Ok(self
            .write("purge messages", cutoff_ms, |c, cutoff| {
                Box::pin(peer::purge_before(c, *cutoff))
            })
            .await?)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(self
            .read("ping", (), |c, ()| Box::pin(peer::ping(c)))
            .await?)
    }

    // ---- Rooms: the SQL is in `rooms`.

    async fn create_room(
        &self,
        room: NewRoom,
        limits: RoomLimits,
    ) -> Result<RoomRecord, RoomError> {
        check_app(room.app_id)?;
        check_ids(&[("roomID", &room.room_id), ("userID", &room.creator)])?;
        Ok(self
            .write("create room", (room, limits), |c, a| {
                Box::pin(rooms::create_room(c, &a.0, &a.1))
            })
            .await?)
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
        check_ids(&[("roomID", room_id), ("userID", user_id)])?;
        let args = rooms::JoinArgs {
            member: Member::new(app_id, room_id, user_id),
            user_name: user_name.to_owned(),
            now_ms,
            limits,
        };
        Ok(self
            .write("join room", args, |c, a| Box::pin(rooms::join_room(c, a)))
            .await?)
    }

    async fn leave_room(
        &self,
        app_id: u32,
        room_id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<Left, RoomError> {
        check_app(app_id)?;
        check_ids(&[("roomID", room_id), ("userID", user_id)])?;
        let args = (Member::new(app_id, room_id, user_id), now_ms);
        Ok(self
            .write("leave room", args, |c, a| {
                Box::pin(rooms::leave_room(c, &a.0, a.1))
            })
            .await?)
    }

    async fn room(&self, app_id: u32, room_id: &str) -> Result<Option<RoomRecord>, StoreError> {
        check_id("roomID", room_id)?;
        let args = (app_id, room_id.to_owned());
        Ok(self
            .read("read room", args, |c, a| {
                Box::pin(rooms::read_room(c, a.0, &a.1))
            })
            .await?)
    }

    async fn is_member(
        &self,
        app_id: u32,
        room_id: &str,
        user_id: &str,
    ) -> Result<bool, StoreError> {
        check_ids(&[("roomID", room_id), ("userID", user_id)])?;
        let args = Member::new(app_id, room_id, user_id);
        Ok(self
            .read("read membership", args, |c, m| {
                Box::pin(rooms::is_member(c, m))
            })
            .await?)
    }

    async fn room_members(
        &self,
        app_id: u32,
        room_id: &str,
        after_user: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MemberRecord>, StoreError> {
        check_id("roomID", room_id)?;
        if let Some(after) = after_user {
            check_id("userID", after)?;
        }
        let args = (
            app_id,
            room_id.to_owned(),
            after_user.map(str::to_owned),
            limit,
        );
        Ok(self
            .read("read room members", args, |c, a| {
                Box::pin(rooms::room_members(c, a.0, &a.1, a.2.as_deref(), a.3))
            })
            .await?)
    }

    async fn room_member_count(&self, app_id: u32, room_id: &str) -> Result<u64, StoreError> {
        check_id("roomID", room_id)?;
        let args = (app_id, room_id.to_owned());
        Ok(self
            .read("count room members", args, |c, a| {
                Box::pin(rooms::member_count(c, a.0, &a.1))
            })
            .await?)
    }

    async fn user_rooms(&self, app_id: u32, user_id: &str) -> Result<Vec<RoomRecord>, StoreError> {
        check_id("userID", user_id)?;
        let args = (app_id, user_id.to_owned());
        Ok(self
            .read("read the user's rooms", args, |c, a| {
                Box::pin(rooms::user_rooms(c, a.0, &a.1))
            })
            .await?)
    }

    async fn set_member_offline(
        &self,
        app_id: u32,
        user_id: &str,
        since_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        check_app(app_id)?;
        check_id("userID", user_id)?;
        let args = (app_id, user_id.to_owned(), since_ms);
        Ok(self
            .write("set members offline", args, |c, a| {
                Box::pin(rooms::set_member_offline(c, a.0, &a.1, a.2))
            })
            .await?)
    }

    async fn expire_members(&self, cutoff_ms: i64) -> Result<Vec<ExpiredMember>, StoreError> {
        Ok(self
            .write("expire room members", cutoff_ms, |c, cutoff| {
                Box::pin(rooms::expire_members(c, *cutoff))
            })
            .await?)
    }

    async fn destroy_empty_rooms(&self, now_ms: i64) -> Result<Vec<(u32, String)>, StoreError> {
        Ok(self
            .write("destroy empty rooms", now_ms, |c, now| {
                Box::pin(rooms::destroy_empty_rooms(c, *now))
            })
            .await?)
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
        check_ids(&[("roomID", room_id), ("userID", user_id)])?;
        let args = (Member::new(app_id, room_id, user_id), change, limits);
        Ok(self
            .write("change room attributes", args, |c, a| {
                Box::pin(rooms::change_attributes(c, &a.0, &a.1, &a.2))
            })
            .await?)
    }

    async fn room_attributes(
        &self,
        app_id: u32,
        room_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        check_id("roomID", room_id)?;
        let args = (app_id, room_id.to_owned());
        Ok(self
            .read("read room attributes", args, |c, a| {
                Box::pin(rooms::room_attributes(c, a.0, &a.1))
            })
            .await?)
    }

    async fn append_room(&self, msg: NewRoomMessage) -> Result<AppendedRoom, RoomError> {
        check_app(msg.app_id)?;
        check_ids(&[("roomID", &msg.room_id), ("sender", &msg.sender)])?;
        Ok(self
            .write("append room message", msg, |c, m| {
                Box::pin(rooms::append_room(c, m))
            })
            .await?)
    }

    async fn room_messages_after(
        &self,
        app_id: u32,
        room_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredRoomMessage>, StoreError> {
        check_id("roomID", room_id)?;
        let args = (app_id, room_id.to_owned(), after, limit);
        Ok(self
            .read("read room messages", args, |c, a| {
                Box::pin(rooms::room_messages_after(c, a.0, &a.1, a.2, a.3))
            })
            .await?)
    }

    async fn history(&self, query: HistoryQuery) -> Result<Vec<HistoryMessage>, StoreError> {
        match &query.conversation {
            confab_store::Conversation::Peer(a, b) => {
                check_ids(&[("userID", a), ("userID", b)])?;
            }
            confab_store::Conversation::Room(room) => check_id("roomID", room)?,
        }
        Ok(self
            .read("read history", query, |c, q| Box::pin(rooms::history(c, q)))
            .await?)
    }
}

// ---------------------------------------------------------------------------------
// Reading columns (the conversions of their values are `confab_store::backend`'s)

/// Column `idx` of `row`, decoded, or a [`Fail`] naming `what`.
pub(crate) fn col<'r, T: tokio_postgres::types::FromSql<'r>>(
    row: &'r tokio_postgres::Row,
    idx: usize,
    what: &'static str,
) -> Result<T, Fail> {
    row.try_get(idx).map_err(db(what))
}

/// A `BYTEA` column holding UTF-8 text.
pub(crate) fn text_col(
    row: &tokio_postgres::Row,
    idx: usize,
    what: &'static str,
) -> Result<String, Fail> {
    let bytes: &[u8] = col(row, idx, what)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        Fail::Store(StoreError::Corrupt(format!(
            "{what}: stored text is not UTF-8"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_validation_and_redaction() {
        let cfg = PgConfig::new("postgres://alice:s3cret@db.example:6543/chat");
        assert_eq!(cfg.schema, "confab");
        assert_eq!(cfg.pool_size, 16);
        assert_eq!(cfg.connect_timeout, Duration::from_secs(5));
        assert_eq!(cfg.statement_timeout, Duration::from_secs(5));
        assert_eq!(cfg.call_timeout, Duration::from_secs(10));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://alice@db.example:6543/chat"),
            "{shown}"
        );

        let (config, target) = cfg.connection_config().expect("valid");
        assert_eq!(target, "postgres://alice@db.example:6543/chat");
        let options = config.get_options().expect("options");
        assert!(options.contains("search_path=confab"), "{options}");
        assert!(options.contains("statement_timeout=5000"), "{options}");
        assert!(options.contains("synchronous_commit=on"), "{options}");

        let kept = PgConfig::new("postgres://a@h/d?options=-c%20work_mem%3D8MB")
            .connection_config()
            .expect("valid")
            .0;
        let options = kept.get_options().expect("options");
        assert!(options.starts_with("-c work_mem=8MB "), "{options}");

        for bad in [
            PgConfig {
                pool_size: 0,
                ..cfg.clone()
            },
            PgConfig {
                schema: "Bad-Name".into(),
                ..cfg.clone()
            },
            PgConfig {
                call_timeout: Duration::ZERO,
                ..cfg.clone()
            },
            PgConfig::new("not a url at all ==="),
            PgConfig::new("postgres:///nohost"),
        ] {
            assert!(
                matches!(bad.connection_config(), Err(StoreError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ids_with_nul_are_invalid() {
        assert!(check_id("userID", "alice").is_ok());
        assert!(matches!(
            check_id("userID", "a\0b"),
            Err(StoreError::Invalid(_))
        ));
    }
}
