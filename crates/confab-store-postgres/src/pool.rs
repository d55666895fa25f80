//! A small pool of PostgreSQL connections, each with its own cache of prepared
//! statements.
//!
//! At most `size` connections exist at once: a caller first takes one of `size`
//! semaphore permits (waiting at most `acquire_timeout`), then an idle connection
//! that is still open, or opens a new one (again within `acquire_timeout`). A
//! connection goes back to the idle list only through [`Pool::put_back`], which the
//! store calls when a call finished normally (committed or cleanly rolled back). A
//! call abandoned half-way (its deadline passed, its task was cancelled) drops its
//! connection instead, closing the socket: the server then rolls back whatever that
//! connection had open, and nothing of unknown state is ever reused.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use confab_store::StoreError;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use crate::{Fail, db, describe};

/// Query parameters, as tokio-postgres takes them.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(crate) struct Pool {
    config: Config,
    /// `postgres://user@host:port/db`, without the password: for messages.
    target: String,
    size: usize,
    acquire_timeout: Duration,
    permits: Semaphore,
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    pub(crate) fn new(
        config: Config,
        target: String,
        size: usize,
        acquire_timeout: Duration,
    ) -> Self {
        Self {
            config,
            target,
            size,
            acquire_timeout,
            permits: Semaphore::new(size),
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn idle(&self) -> usize {
        lock(&self.idle).len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.permits.is_closed()
    }

    /// A connection and the permit that lets the caller hold it. Drop both when done;
    /// hand the connection to [`Pool::put_back`] first if it is fit for reuse.
    pub(crate) async fn get(&self) -> Result<(SemaphorePermit<'_>, Conn), StoreError> {
        let permit = match tokio::time::timeout(self.acquire_timeout, self.permits.acquire()).await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(closed()),
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "postgres {}: no connection of the pool of {} became free within {:?}",
                    self.target, self.size, self.acquire_timeout
                )));
            }
        };
        let pooled = loop {
            match lock(&self.idle).pop() {
                // Closed while idle (the server restarted, the network dropped it).
                Some(conn) if conn.is_closed() => {}
                other => break other,
            }
        };
        let conn = match pooled {
            Some(conn) => conn,
            None => self.open().await?,
        };
        Ok((permit, conn))
    }

    /// Returns a connection for reuse, unless it is closed or broken, or the pool is.
    pub(crate) fn put_back(&self, conn: Conn) {
        if conn.broken || conn.is_closed() || self.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < self.size {
            idle.push(conn);
        }
    }

    /// Opens a new connection (within `acquire_timeout`) and starts its I/O task.
    pub(crate) async fn open(&self) -> Result<Conn, StoreError> {
        let (client, connection) =
            match tokio::time::timeout(self.acquire_timeout, self.config.connect(NoTls)).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => {
                    return Err(StoreError::Unavailable(format!(
                        "postgres {}: cannot connect: {}",
                        self.target,
                        describe(&e)
                    )));
                }
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "postgres {}: connecting took longer than {:?}",
                        self.target, self.acquire_timeout
                    )));
                }
            };
        let target = self.target.clone();
        // Ends when the client is dropped or the server goes away.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(%target, error = %describe(&e), "postgres connection lost");
            }
        });
        Ok(Conn {
            client,
            statements: HashMap::new(),
            broken: false,
        })
    }

    /// Refuses every later [`Pool::get`] and closes the idle connections.
    pub(crate) fn close(&self) {
        self.permits.close();
        lock(&self.idle).clear();
    }
}

pub(crate) fn closed() -> StoreError {
    StoreError::Unavailable("the postgres store is closed".into())
}

/// One connection, with the statements it has prepared (by SQL text).
pub(crate) struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    /// Set when the connection's state is unknown (a rollback failed): not reused.
    broken: bool,
}

impl Conn {
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub(crate) fn mark_broken(&mut self) {
        self.broken = true;
    }

    async fn statement(
        &mut self,
        what: &'static str,
        sql: &'static str,
    ) -> Result<Statement, Fail> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await.map_err(db(what))?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    /// Runs a statement (prepared once per connection), returning its rows.
    pub(crate) async fn query(
        &mut self,
        what: &'static str,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, Fail> {
        let statement = self.statement(what, sql).await?;
        self.client
            .query(&statement, params)
            .await
            .map_err(db(what))
    }

    /// At most one row.
    pub(crate) async fn query_opt(
        &mut self,
        what: &'static str,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, Fail> {
        let statement = self.statement(what, sql).await?;
        self.client
            .query_opt(&statement, params)
            .await
            .map_err(db(what))
    }

    /// Exactly one row; none is a [`StoreError::Corrupt`].
    pub(crate) async fn query_one(
        &mut self,
        what: &'static str,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Row, Fail> {
        self.query_opt(what, sql, params).await?.ok_or_else(|| {
            Fail::Store(StoreError::Corrupt(format!(
                "postgres: {what}: the statement returned no row"
            )))
        })
    }

    /// Runs a statement, returning how many rows it changed.
    pub(crate) async fn execute(
        &mut self,
        what: &'static str,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<u64, Fail> {
        let statement = self.statement(what, sql).await?;
        self.client
            .execute(&statement, params)
            .await
            .map_err(db(what))
    }

    /// Runs statements as one simple query, without preparing or caching them.
    pub(crate) async fn batch(&self, what: &'static str, sql: &str) -> Result<(), Fail> {
        self.client.batch_execute(sql).await.map_err(db(what))
    }

    /// One statement with parameters, without caching it (for the migrations, whose
    /// tables may not exist yet, or may vanish if the migration rolls back).
    pub(crate) async fn query_uncached(
        &self,
        what: &'static str,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, Fail> {
        self.client.query(sql, params).await.map_err(db(what))
    }
}

/// Locks, ignoring poisoning: the idle list stays consistent across a panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
