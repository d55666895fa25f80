//! [`RedisBroker`]: confab's [`Broker`] over Redis pub/sub, for several `confab serve`
//! nodes sharing one Redis.
//!
//! Each node holds two connections to Redis: a multiplexed one for `PUBLISH` and
//! `PING`, and a pub/sub one on which it `SUBSCRIBE`s to the topics it has local
//! interest in. A reader task hands every message of the pub/sub connection, in
//! order, to the node's [`Handler`].
//!
//! - **Channels** are `{prefix}{topic}`: the prefix isolates deployments (or tests)
//!   sharing one Redis. Redis pub/sub ignores the database number, so the prefix is
//!   the only isolation; choose prefixes none of which starts another (e.g.
//!   `confab:{deployment}:`). Topics are matched exactly (`SUBSCRIBE`, never
//!   `PSUBSCRIBE`).
//! - **Subscriptions** are counted per node: Redis is told on 0 → 1 (`SUBSCRIBE`,
//!   awaiting its confirmation before `subscribe` returns) and on 1 → 0
//!   (`UNSUBSCRIBE`, likewise). A subscribe whose caller stops waiting (its future
//!   dropped) completes on its own and is then undone, so the count stays exact.
//! - **Failures:** every Redis call is bounded by [`CALL_TIMEOUT`]. A connection
//!   that fails is dropped and re-established in the background with a bounded
//!   backoff (up to [`RECONNECT_BACKOFF_MAX`]); a new pub/sub connection subscribes
//!   again to every counted topic. Meanwhile `ping`, `publish` and `subscribe`
//!   return [`BrokerError::Unavailable`] at once; `unsubscribe` still succeeds (the
//!   count drops, and the new connection will not subscribe to the topic).
//!   Publications made while a node's pub/sub connection is down are lost for it;
//!   once it is back in sync the node's [`Handler::on_reconnected`] is called, so
//!   the node can catch up from its store.
//! - **Local first:** a publication reaches the publishing node's own handler at
//!   once, before it goes to Redis (if the node is subscribed to the topic), and
//!   the copy Redis echoes back is skipped (every payload on Redis starts with
//!   a mark byte and the publishing node's random id; see `MARK` for nodes of
//!   an earlier version). So a node's own sessions keep getting its
//!   publications while Redis is down; `publish` then still fails, for the other
//!   nodes.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use confab_broker::{Broker, BrokerError, BrokerFactory, Handler};
use futures_util::StreamExt;
use futures_util::future::join_all;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, RedisError, Value};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The bound on every call to Redis: connecting, `PUBLISH`, `SUBSCRIBE`,
/// `UNSUBSCRIBE`, `PING`.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The first delay between two attempts to reconnect; it doubles after each failed
/// attempt, up to [`RECONNECT_BACKOFF_MAX`].
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);

/// The longest delay between two attempts to reconnect: a node is back within
/// about this long of Redis's return (and then catches up from its store).
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How often an idle node pings both its connections, to notice one that died
/// silently.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// How many topics a reconnected node subscribes to again at once (pipelined, one
/// channel per `SUBSCRIBE` so that each confirmation answers one request).
const RESYNC_BATCH: usize = 256;

/// A [`Broker`] node on Redis pub/sub. See the [crate documentation](crate).
///
/// Dropping the node closes its connections (its subscriptions go with them).
pub struct RedisBroker {
    inner: Arc<Inner>,
    supervisor: JoinHandle<()>,
}

struct Inner {
    client: Client,
    /// `host:port` (or socket path) of the server, for messages: never the URL,
    /// which may hold a password.
    addr: String,
    prefix: Arc<str>,
    handler: Arc<dyn Handler>,
    conn: Mutex<Conn>,
    /// The generation of the live pub/sub connection (a copy of
    /// `Conn::pubsub_gen`), checked by its reader before each delivery.
    live: Arc<AtomicU64>,
    /// The topics with a subscription count, or an operation on it under way.
    topics: Mutex<HashMap<String, Arc<Slot>>>,
    /// Wakes the supervisor when a connection was dropped.
    wake: Notify,
    /// This node's id, first in every payload it publishes on Redis, so its
    /// reader skips the echo of what it delivered locally.
    origin: u64,
}

/// The first byte of a payload on Redis that carries its publisher's origin
/// id: `[MARK, origin (8 bytes), payload]`. A payload without it comes from a
/// node of an earlier version and is delivered whole; an earlier node drops
/// ours (the server's envelopes never start with this byte), so nodes of two
/// versions on one Redis miss each other's publications but never misread
/// them.
const MARK: u8 = 0xC0;

/// Bytes of the mark and the origin id before a payload on Redis.
const ORIGIN_LEN: usize = 9;

/// A random id for a node (std's per-process random hash keys, the time and
/// the process id: unique among the nodes of one Redis in practice).
fn node_origin() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// The node's connections.
#[derive(Default)]
struct Conn {
    /// Set when the node is dropped: nothing is connected any more.
    closed: bool,
    /// Bumped when a pub/sub connection is installed and when it is dropped, so
    /// that every connection has its own generation and a stale one is recognised.
    pubsub_gen: u64,
    pubsub: Option<PubSub>,
    /// Whether every counted topic is subscribed on the current pub/sub connection.
    synced: bool,
    /// Bumped when a publishing connection is installed.
    publisher_gen: u64,
    publisher: Option<MultiplexedConnection>,
}

/// A live pub/sub connection.
struct PubSub {
    sink: PubSubSink,
    /// Dropping it stops the connection's reader, which closes the connection.
    _stop: oneshot::Sender<()>,
}

/// One topic's subscription count; its lock orders the operations on the topic.
#[derive(Default)]
struct Slot {
    state: tokio::sync::Mutex<SlotState>,
    /// Whether the count is above zero, readable without the lock (for local
    /// delivery on `publish`).
    counted: std::sync::atomic::AtomicBool,
}

impl Slot {
    /// Sets the count (under the slot's lock).
    fn set_count(&self, state: &mut SlotState, count: usize) {
        state.count = count;
        self.counted.store(count > 0, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct SlotState {
    count: usize,
    /// The pub/sub generation on which Redis confirmed the subscription (0: none).
    generation: u64,
}

impl RedisBroker {
    /// Connects a node to the Redis at `url` (`redis://[user:password@]host:port`),
    /// on channels `{prefix}{topic}`, delivering its publications to `handler`.
    ///
    /// Fails with [`BrokerError::Unavailable`] if `url` is invalid or Redis cannot
    /// be reached within [`CALL_TIMEOUT`]. Must be called within a Tokio runtime
    /// (the node runs background tasks on it).
    pub async fn connect(
        url: &str,
        prefix: &str,
        handler: Arc<dyn Handler>,
    ) -> Result<Self, BrokerError> {
        let client = Client::open(url)
            .map_err(|e| BrokerError::Unavailable(format!("invalid Redis URL: {e}")))?;
        let addr = client.get_connection_info().addr().to_string();
        let inner = Arc::new(Inner {
            client,
            addr,
            prefix: Arc::from(prefix),
            handler,
            conn: Mutex::new(Conn::default()),
            live: Arc::new(AtomicU64::new(0)),
            topics: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            origin: node_origin(),
        });
        let (publisher, (sink, stream)) =
            tokio::try_join!(inner.open_publisher(), inner.open_pubsub())?;
        inner.install_publisher(publisher);
        inner.install_pubsub(sink, stream);
        // No topic is counted yet: the new connection is in sync.
        inner.lock_conn().synced = true;
        let supervisor = tokio::spawn(supervise(Arc::clone(&inner)));
        Ok(Self { inner, supervisor })
    }

    /// The prefix of this node's channels.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }
}

/// A factory building [`RedisBroker`] nodes on the Redis at `url`, all on channels
/// `{prefix}{topic}` (so they see each other's publications).
pub fn factory(url: &str, prefix: &str) -> BrokerFactory {
    let url: Arc<str> = Arc::from(url);
    let prefix: Arc<str> = Arc::from(prefix);
    Arc::new(move |handler| {
        let (url, prefix) = (Arc::clone(&url), Arc::clone(&prefix));
        Box::pin(async move {
            let node: Arc<dyn Broker> =
                Arc::new(RedisBroker::connect(&url, &prefix, handler).await?);
            Ok(node)
        })
    })
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.supervisor.abort();
        let mut conn = self.inner.lock_conn();
        conn.closed = true;
        conn.synced = false;
        conn.pubsub = None;
        conn.publisher = None;
        conn.pubsub_gen += 1;
        self.inner.live.store(conn.pubsub_gen, Ordering::SeqCst);
    }
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("RedisBroker");
        s.field("addr", &self.inner.addr)
            .field("prefix", &self.inner.prefix);
        if let Ok(conn) = self.inner.conn.try_lock() {
            s.field("subscriber_up", &conn.pubsub.is_some())
                .field("synced", &conn.synced)
                .field("publisher_up", &conn.publisher.is_some());
        }
        if let Ok(topics) = self.inner.topics.try_lock() {
            s.field("topics", &topics.len());
        }
        s.finish_non_exhaustive()
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn subscribe(&self, topic: &str) -> Result<(), BrokerError> {
        // On its own task, so that a caller that gives up waiting cannot leave the
        // count and Redis out of step; what such a caller started is then undone.
        let task = {
            let (inner, topic) = (Arc::clone(&self.inner), topic.to_owned());
            tokio::spawn(async move { inner.subscribe(&topic).await })
        };
        let mut pending = UndoIfAbandoned {
            task: Some(task),
            inner: Arc::clone(&self.inner),
            topic: topic.to_owned(),
        };
        pending.wait().await
    }

    async fn unsubscribe(&self, topic: &str) -> Result<(), BrokerError> {
        // On its own task, completed even if the caller gives up waiting.
        let (inner, topic) = (Arc::clone(&self.inner), topic.to_owned());
        tokio::spawn(async move { inner.unsubscribe(&topic).await })
            .await
            .unwrap_or_else(|e| Err(self.inner.down(&format!("unsubscribe failed: {e}"))))
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BrokerError> {
        let inner = &self.inner;
        // This node's own sessions first, Redis or not (see the crate's docs).
        if inner
            .existing_slot(topic)
            .is_some_and(|slot| slot.counted.load(Ordering::SeqCst))
        {
            inner.handler.on_publication(topic, &payload);
        }
        let Some((generation, mut conn)) = inner.publisher() else {
            return Err(inner.down("the publishing connection is down"));
        };
        let mut framed = Vec::with_capacity(ORIGIN_LEN + payload.len());
        framed.push(MARK);
        framed.extend_from_slice(&inner.origin.to_be_bytes());
        framed.extend_from_slice(&payload);
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(inner.channel(topic)).arg(framed);
        let result = timeout(CALL_TIMEOUT, cmd.query_async::<i64>(&mut conn)).await;
        match result {
            Ok(Ok(_)) => Ok(()),
            failed => Err(inner.publisher_failed(generation, "PUBLISH", &failed)),
        }
    }

    async fn add_to_counter(&self, key: &str, n: u64, ttl_secs: u64) -> Result<u64, BrokerError> {
        let inner = &self.inner;
        let Some((generation, mut conn)) = inner.publisher() else {
            return Err(inner.down("the publishing connection is down"));
        };
        // INCRBY, then set the expiry only if the key has none (the window is fixed
        // by the add that created it), atomically in one round trip.
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("INCRBY")
            .arg(inner.channel(key))
            .arg(n)
            .cmd("EXPIRE")
            .arg(inner.channel(key))
            .arg(ttl_secs.max(1))
            .arg("NX")
            .ignore();
        let result = timeout(CALL_TIMEOUT, pipe.query_async::<(u64,)>(&mut conn)).await;
        match result {
            Ok(Ok((total,))) => Ok(total),
            failed => Err(inner.publisher_failed(generation, "INCRBY", &failed)),
        }
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        let inner = &self.inner;
        let (pubsub_gen, mut sink, publisher_gen, mut conn) = {
            let conn = inner.lock_conn();
            match (&conn.pubsub, &conn.publisher) {
                (Some(pubsub), Some(publisher)) if conn.synced => (
                    conn.pubsub_gen,
                    pubsub.sink.clone(),
                    conn.publisher_gen,
                    publisher.clone(),
                ),
                _ => return Err(inner.down("reconnecting")),
            }
        };
        let (subscriber, publisher) = ping_both(&mut sink, &mut conn).await;
        if subscriber.err_string().is_some() {
            return Err(inner.pubsub_failed(pubsub_gen, "PING", &subscriber));
        }
        match publisher {
            Ok(Ok(_)) => Ok(()),
            failed => Err(inner.publisher_failed(publisher_gen, "PING", &failed)),
        }
    }
}

impl Inner {
    fn lock_conn(&self) -> MutexGuard<'_, Conn> {
        // Nothing panics under these locks; a poisoned one is still consistent.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_topics(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn channel(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }

    /// [`Broker::subscribe`], run to completion on its own task.
    async fn subscribe(&self, topic: &str) -> Result<(), BrokerError> {
        loop {
            let slot = self.slot(topic);
            let mut state = slot.state.lock().await;
            if !self.is_current(topic, &slot) {
                continue; // Forgotten while we waited: start over.
            }
            let Some((generation, mut sink)) = self.sink() else {
                if state.count == 0 {
                    self.forget(topic, &slot);
                }
                return Err(self.down("the pub/sub connection is down"));
            };
            if state.count > 0 && state.generation == generation {
                let count = state.count + 1;
                slot.set_count(&mut state, count);
                return Ok(());
            }
            // 0 → 1, or counted but not yet subscribed again on a new connection.
            let result = timeout(CALL_TIMEOUT, sink.subscribe(self.channel(topic))).await;
            return match result {
                Ok(Ok(())) => {
                    let count = state.count + 1;
                    slot.set_count(&mut state, count);
                    state.generation = generation;
                    Ok(())
                }
                failed => {
                    let error = self.pubsub_failed(generation, "SUBSCRIBE", &failed);
                    if state.count == 0 {
                        self.forget(topic, &slot);
                    }
                    Err(error)
                }
            };
        }
    }

    /// [`Broker::unsubscribe`], run to completion on its own task.
    async fn unsubscribe(&self, topic: &str) -> Result<(), BrokerError> {
        loop {
            let Some(slot) = self.existing_slot(topic) else {
                return Ok(());
            };
            let mut state = slot.state.lock().await;
            if !self.is_current(topic, &slot) {
                continue;
            }
            if state.count > 1 {
                let count = state.count - 1;
                slot.set_count(&mut state, count);
                return Ok(());
            }
            slot.set_count(&mut state, 0);
            self.forget(topic, &slot);
            let Some((generation, mut sink)) = self.sink() else {
                return Ok(()); // No connection, so no subscription to undo.
            };
            if state.generation != generation {
                return Ok(()); // Not subscribed on this connection (yet).
            }
            state.generation = 0;
            let result = timeout(CALL_TIMEOUT, sink.unsubscribe(self.channel(topic))).await;
            if let Some(why) = result.err_string() {
                // Redis may still deliver the topic on this connection: drop it (its
                // reader stops delivering at once) for a new one without the topic.
                self.drop_pubsub(generation, &format!("UNSUBSCRIBE failed: {why}"));
            }
            return Ok(());
        }
    }

    fn down(&self, why: &str) -> BrokerError {
        BrokerError::Unavailable(format!("Redis at {}: {why}", self.addr))
    }

    /// The slot of `topic`, created if needed.
    fn slot(&self, topic: &str) -> Arc<Slot> {
        Arc::clone(self.lock_topics().entry(topic.to_owned()).or_default())
    }

    fn existing_slot(&self, topic: &str) -> Option<Arc<Slot>> {
        self.lock_topics().get(topic).cloned()
    }

    /// Whether `slot` is (still) the slot of `topic`.
    fn is_current(&self, topic: &str, slot: &Arc<Slot>) -> bool {
        self.lock_topics()
            .get(topic)
            .is_some_and(|s| Arc::ptr_eq(s, slot))
    }

    /// Removes `slot` (count zero, locked by the caller) from the topics.
    fn forget(&self, topic: &str, slot: &Arc<Slot>) {
        let mut topics = self.lock_topics();
        if topics.get(topic).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            topics.remove(topic);
        }
    }

    fn sink(&self) -> Option<(u64, PubSubSink)> {
        let conn = self.lock_conn();
        let pubsub = conn.pubsub.as_ref()?;
        Some((conn.pubsub_gen, pubsub.sink.clone()))
    }

    fn publisher(&self) -> Option<(u64, MultiplexedConnection)> {
        let conn = self.lock_conn();
        Some((conn.publisher_gen, conn.publisher.clone()?))
    }

    async fn open_publisher(&self) -> Result<MultiplexedConnection, BrokerError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        let connecting = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        match timeout(CALL_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            failed => Err(self.down(&format!(
                "cannot connect: {}",
                failed.err_string().unwrap_or_default()
            ))),
        }
    }

    async fn open_pubsub(&self) -> Result<(PubSubSink, PubSubStream), BrokerError> {
        match timeout(CALL_TIMEOUT, self.client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => Ok(pubsub.split()),
            failed => Err(self.down(&format!(
                "cannot connect for pub/sub: {}",
                failed.err_string().unwrap_or_default()
            ))),
        }
    }

    fn install_publisher(&self, publisher: MultiplexedConnection) {
        let mut conn = self.lock_conn();
        if !conn.closed {
            conn.publisher_gen += 1;
            conn.publisher = Some(publisher);
        }
    }

    /// Makes a new pub/sub connection the live one (not yet in sync) and starts its
    /// reader; returns its generation, or `None` if the node was dropped.
    fn install_pubsub(self: &Arc<Self>, sink: PubSubSink, stream: PubSubStream) -> Option<u64> {
        let mut conn = self.lock_conn();
        if conn.closed {
            return None;
        }
        conn.pubsub_gen += 1;
        let generation = conn.pubsub_gen;
        self.live.store(generation, Ordering::SeqCst);
        let (stop, stopped) = oneshot::channel();
        let reader = Reader {
            generation,
            live: Arc::clone(&self.live),
            prefix: Arc::clone(&self.prefix),
            handler: Arc::clone(&self.handler),
            inner: Arc::downgrade(self),
            origin: self.origin,
        };
        tokio::spawn(reader.run(stream, sink.clone(), stopped));
        conn.pubsub = Some(PubSub { sink, _stop: stop });
        conn.synced = false;
        Some(generation)
    }

    /// Drops pub/sub connection `generation` if it is still the live one, and wakes the
    /// supervisor to replace it.
    fn drop_pubsub(&self, generation: u64, why: &str) {
        let mut conn = self.lock_conn();
        if conn.pubsub_gen != generation || conn.pubsub.is_none() {
            return;
        }
        conn.pubsub_gen += 1;
        self.live.store(conn.pubsub_gen, Ordering::SeqCst);
        conn.pubsub = None;
        conn.synced = false;
        drop(conn);
        tracing::warn!(addr = %self.addr, prefix = %self.prefix, "Redis pub/sub connection lost: {why}");
        self.wake.notify_one();
    }

    /// Drops the publishing connection `generation` if it is still the live one, and wakes
    /// the supervisor to replace it.
    fn drop_publisher(&self, generation: u64, why: &str) {
        let mut conn = self.lock_conn();
        if conn.publisher_gen != generation || conn.publisher.is_none() {
            return;
        }
        conn.publisher = None;
        drop(conn);
        tracing::warn!(addr = %self.addr, prefix = %self.prefix, "Redis publishing connection lost: {why}");
        self.wake.notify_one();
    }

    /// After `what` failed on pub/sub connection `generation`: drops the connection unless
    /// Redis itself answered with an error (after a timeout the subscriptions on it
    /// are uncertain), and returns the error to report.
    fn pubsub_failed<T>(&self, generation: u64, what: &str, failed: &Timed<T>) -> BrokerError {
        let why = failed.err_string().unwrap_or_default();
        if is_fatal(failed) {
            self.drop_pubsub(generation, &format!("{what} failed: {why}"));
        }
        self.down(&format!("{what} failed: {why}"))
    }

    /// After `what` failed on publishing connection `generation`: drops the connection
    /// unless Redis itself answered with an error, and returns the error to report.
    fn publisher_failed<T>(&self, generation: u64, what: &str, failed: &Timed<T>) -> BrokerError {
        let why = failed.err_string().unwrap_or_default();
        if is_fatal(failed) {
            self.drop_publisher(generation, &format!("{what} failed: {why}"));
        }
        self.down(&format!("{what} failed: {why}"))
    }

    /// Reconnects whatever is down and brings the pub/sub connection in sync;
    /// returns whether all is up (or the node was dropped).
    async fn restore(self: &Arc<Self>) -> bool {
        let (need_publisher, need_pubsub) = {
            let conn = self.lock_conn();
            if conn.closed {
                return true;
            }
            (conn.publisher.is_none(), conn.pubsub.is_none())
        };
        let mut up = true;
        if need_publisher {
            match self.open_publisher().await {
                Ok(publisher) => {
                    self.install_publisher(publisher);
                    tracing::info!(addr = %self.addr, prefix = %self.prefix, "Redis publishing connection restored");
                }
                Err(e) => {
                    tracing::debug!(prefix = %self.prefix, "reconnecting: {e}");
                    up = false;
                }
            }
        }
        if need_pubsub {
            match self.open_pubsub().await {
                Ok((sink, stream)) => {
                    self.install_pubsub(sink, stream);
                }
                Err(e) => {
                    tracing::debug!(prefix = %self.prefix, "reconnecting: {e}");
                    up = false;
                }
            }
        }
        let Some((generation, sink)) = self.sink() else {
            return false;
        };
        if self.lock_conn().synced {
            return up;
        }
        match self.resync(generation, &sink).await {
            Ok(topics) => {
                let mut conn = self.lock_conn();
                if conn.pubsub_gen != generation {
                    return false;
                }
                conn.synced = true;
                drop(conn);
                tracing::info!(addr = %self.addr, prefix = %self.prefix, topics, "Redis pub/sub connection restored");
                // What was published while it was down never came: the node
                // catches up from its store.
                self.handler.on_reconnected();
                up
            }
            Err(why) => {
                self.drop_pubsub(generation, &format!("resubscribing failed: {why}"));
                false
            }
        }
    }

    /// Subscribes pub/sub connection `generation` to every counted topic not yet
    /// subscribed on it; returns how many it subscribed to.
    async fn resync(&self, generation: u64, sink: &PubSubSink) -> Result<usize, String> {
        let slots: Vec<(String, Arc<Slot>)> = self
            .lock_topics()
            .iter()
            .map(|(topic, slot)| (topic.clone(), Arc::clone(slot)))
            .collect();
        let mut subscribed = 0;
        for batch in slots.chunks(RESYNC_BATCH) {
            let mut pending = Vec::new();
            for (topic, slot) in batch {
                let state = slot.state.lock().await;
                if state.count > 0 && state.generation != generation {
                    pending.push((topic, state));
                }
            }
            if pending.is_empty() {
                continue;
            }
            let requests = pending.iter().map(|(topic, _)| {
                let mut sink = sink.clone();
                let channel = self.channel(topic);
                async move { sink.subscribe(channel).await }
            });
            let results = timeout(CALL_TIMEOUT, join_all(requests))
                .await
                .map_err(|_| "timed out".to_owned())?;
            if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
                return Err(e.to_string());
            }
            subscribed += pending.len();
            for (_, state) in &mut pending {
                state.generation = generation;
            }
        }
        Ok(subscribed)
    }

    /// Pings both connections; drops those that do not answer.
    async fn health_check(&self) {
        let (Some((pubsub_gen, mut sink)), Some((publisher_gen, mut conn))) =
            (self.sink(), self.publisher())
        else {
            return;
        };
        let (subscriber, publisher) = ping_both(&mut sink, &mut conn).await;
        if let Some(why) = subscriber.err_string() {
            self.drop_pubsub(pubsub_gen, &format!("PING failed: {why}"));
        }
        if let Some(why) = publisher.err_string() {
            self.drop_publisher(publisher_gen, &format!("PING failed: {why}"));
        }
    }
}

/// A subscription under way on its own task. If the caller stops waiting for it,
/// the subscription, should it succeed, is undone: the caller never learnt of it,
/// so it will not unsubscribe.
struct UndoIfAbandoned {
    task: Option<JoinHandle<Result<(), BrokerError>>>,
    inner: Arc<Inner>,
    topic: String,
}

impl UndoIfAbandoned {
    async fn wait(&mut self) -> Result<(), BrokerError> {
        let Some(task) = self.task.as_mut() else {
            return Ok(());
        };
        let outcome = task.await;
        self.task = None;
        outcome.unwrap_or_else(|e| Err(self.inner.down(&format!("subscribe failed: {e}"))))
    }
}

impl Drop for UndoIfAbandoned {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (inner, topic) = (Arc::clone(&self.inner), std::mem::take(&mut self.topic));
        runtime.spawn(async move {
            if let Ok(Ok(())) = task.await {
                let _ = inner.unsubscribe(&topic).await;
            }
        });
    }
}

/// Pings a pub/sub connection and a publishing one, concurrently.
async fn ping_both(
    sink: &mut PubSubSink,
    conn: &mut MultiplexedConnection,
) -> (Timed<Value>, Timed<Value>) {
    let ping = redis::cmd("PING");
    tokio::join!(
        timeout(CALL_TIMEOUT, sink.ping::<Value>()),
        timeout(CALL_TIMEOUT, ping.query_async::<Value>(conn)),
    )
}

/// Keeps the node connected: reconnects what was dropped, with a bounded backoff,
/// and pings idle connections now and then.
async fn supervise(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            () = inner.wake.notified() => {}
            () = tokio::time::sleep(HEALTH_INTERVAL) => inner.health_check().await,
        }
        let mut backoff = RECONNECT_BACKOFF_MIN;
        while !inner.restore().await {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
        }
    }
}

/// Hands the messages of one pub/sub connection to the handler, in order.
struct Reader {
    generation: u64,
    live: Arc<AtomicU64>,
    prefix: Arc<str>,
    handler: Arc<dyn Handler>,
    inner: Weak<Inner>,
    /// The node's own id: its publications were delivered locally already.
    origin: u64,
}

impl Reader {
    async fn run(
        self,
        mut stream: PubSubStream,
        mut sink: PubSubSink,
        mut stopped: oneshot::Receiver<()>,
    ) {
        loop {
            let msg = tokio::select! {
                biased;
                _ = &mut stopped => break,
                msg = stream.next() => msg,
            };
            let Some(msg) = msg else {
                // The connection closed: have it replaced.
                if let Some(inner) = self.inner.upgrade() {
                    inner.drop_pubsub(self.generation, "the connection closed");
                }
                return;
            };
            if self.live.load(Ordering::SeqCst) != self.generation {
                break; // This connection was dropped.
            }
            let Some(topic) = msg.get_channel_name().strip_prefix(&*self.prefix) else {
                continue;
            };
            let bytes = msg.get_payload_bytes();
            let payload = match bytes.split_at_checked(ORIGIN_LEN) {
                Some((head, payload)) if head[0] == MARK => {
                    if head[1..] == self.origin.to_be_bytes() {
                        continue; // Delivered locally when it was published.
                    }
                    payload
                }
                // An earlier node's publication: no origin.
                _ => bytes,
            };
            let payload = Bytes::copy_from_slice(payload);
            self.handler.on_publication(topic, &payload);
        }
        // Stopped on purpose. The connection's driver notices that the stream is
        // gone when it next hears from Redis: make it hear now, so that it closes.
        drop(stream);
        let _ = timeout(CALL_TIMEOUT, sink.ping::<Value>()).await;
    }
}

impl Drop for Reader {
    /// However the reader ends (its connection closed, or the handler panicked),
    /// the connection is no longer served: have it replaced.
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.drop_pubsub(self.generation, "the connection closed");
        }
    }
}

/// The outcome of a Redis call bounded by [`CALL_TIMEOUT`].
type Timed<T> = Result<Result<T, RedisError>, tokio::time::error::Elapsed>;

/// Whether a call failed in a way that leaves its connection unusable or in an
/// unknown state (no answer, I/O error, dropped connection), rather than with an
/// error reply from Redis.
fn is_fatal<T>(outcome: &Timed<T>) -> bool {
    match outcome {
        Ok(Ok(_)) => false,
        Ok(Err(e)) => {
            e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_unrecoverable_error()
        }
        Err(_) => true,
    }
}

/// The error of a timed Redis call, if it failed.
trait ErrString {
    fn err_string(&self) -> Option<String>;
}

impl<T> ErrString for Timed<T> {
    fn err_string(&self) -> Option<String> {
        match self {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {CALL_TIMEOUT:?}")),
        }
    }
}
