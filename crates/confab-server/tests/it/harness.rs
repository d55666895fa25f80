//! A test server and a protocol-level WebSocket client.
//!
//! A [`TestServer`] is reached over real TCP ([`TestServer::start`]) or, for
//! tests of session logic rather than sockets, over in-memory pipes
//! ([`TestServer::start_duplex`]): each client is one end of a
//! `tokio::io::duplex` whose other end the server serves through its
//! [`Connector`]. A duplex server is meant for tests with paused time
//! (`#[tokio::test(start_paused = true)]`), where its sleeps and timeouts cost
//! no real time; for that it keeps the server's wall clock on tokio's clock
//! ([`PausedClock`]) and holds tokio's clock still while the store works
//! ([`TimeHeldStore`]).

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use confab_server::{AppConfig, Clock, Config, Connector, Options, Server, SystemClock};
use confab_store::{
    AppRecord, Appended, AppendedRoom, AttributeChange, AttributesChanged, ExpiredMember,
    HistoryMessage, HistoryQuery, InboxPage, Joined, Left, MemberRecord, NewPeerMessage, NewRoom,
    NewRoomMessage, RoomError, RoomLimits, RoomRecord, SqliteConfig, SqliteStore, Store,
    StoreError, StoredRoomMessage,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

pub(crate) const APP: u32 = 1_234_567_890;
pub(crate) const SECRET: &str = "fa94dd0f974cf2e293728a526b028271";
pub(crate) const APP2: u32 = 42;
pub(crate) const SECRET2: &str = "0123456789abcdef0123456789abcdef";
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// Bytes a duplex pipe buffers each way before its writer waits (what a socket's
/// buffers are to a TCP connection).
const DUPLEX_BUFFER: usize = 256 * 1024;

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub(crate) fn token_for(app: u32, secret: &str, user: &str, ttl: u64) -> String {
    token_made_at(unix_now(), app, secret, user, ttl)
}

pub(crate) fn token(user: &str) -> String {
    token_for(APP, SECRET, user, 3600)
}

/// A GCM token made at `now` (Unix seconds), valid for `ttl` seconds.
fn token_made_at(now: i64, app: u32, secret: &str, user: &str, ttl: u64) -> String {
    let secret = confab_token::Secret::new(secret).unwrap();
    confab_token::generate(&secret, app, user, ttl, confab_token::Mode::Gcm, now).unwrap()
}

/// A token that expires `secs_left` seconds after `now` (Unix seconds).
fn token_expiring_at(now: i64, user: &str, secs_left: i64) -> String {
    let secret = confab_token::Secret::new(SECRET).unwrap();
    let ttl = 3600;
    let made = now + secs_left - ttl;
    confab_token::generate(
        &secret,
        APP,
        user,
        ttl as u64,
        confab_token::Mode::Cbc,
        made,
    )
    .unwrap()
}

/// The server's wall clock in tests with paused time: the real time when it was
/// made, plus the time tokio's clock has advanced since. A token "expiring in
/// 2 s" then expires when 2 paused seconds have passed, with the server's
/// timers (which run on tokio's clock).
#[derive(Debug)]
pub(crate) struct PausedClock {
    start_ms: i64,
    start: tokio::time::Instant,
}

impl PausedClock {
    pub(crate) fn new() -> PausedClock {
        PausedClock {
            start_ms: SystemClock.now_ms(),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for PausedClock {
    fn now_ms(&self) -> i64 {
        self.start_ms + i64::try_from(self.start.elapsed().as_millis()).unwrap()
    }
}

/// Keeps tokio's paused clock from advancing while any store call is in flight.
///
/// With paused time, tokio advances the clock to the next timer whenever the
/// runtime has nothing to run. A store call that waits for another thread (the
/// SQLite writer answers over a oneshot) leaves the runtime idle, and the clock
/// would jump past session pings, idle timeouts and login deadlines while a
/// write commits. Tokio does not advance it from the spawning of a
/// `spawn_blocking` task until the task ends (on a current-thread runtime,
/// which paused time needs), so while calls are in flight one blocking task
/// waits for them all to end.
/// The calls themselves still run in their callers' tasks, so a store's
/// [`Store::appends_in_call_order`] holds as before.
#[derive(Debug, Default)]
struct HoldTime {
    /// Calls in flight, and whether a blocking task is holding the clock.
    state: Mutex<(usize, bool)>,
    all_done: Condvar,
}

/// One call in flight (see [`HoldTime`]).
struct Held(Arc<HoldTime>);

impl HoldTime {
    fn enter(self: &Arc<Self>) -> Held {
        let mut state = self.state.lock().unwrap();
        state.0 += 1;
        if !state.1 {
            state.1 = true;
            let hold = Arc::clone(self);
            // Spawning is what stops the clock (until the task has ended).
            drop(tokio::task::spawn_blocking(move || {
                let mut state = hold.state.lock().unwrap();
                while state.0 > 0 {
                    state = hold.all_done.wait(state).unwrap();
                }
                state.1 = false;
            }));
        }
        Held(Arc::clone(self))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap();
        state.0 -= 1;
        if state.0 == 0 {
            self.0.all_done.notify_all();
        }
    }
}

/// A store whose calls hold tokio's paused clock still until they end (see
/// [`HoldTime`]).
pub(crate) struct TimeHeldStore {
    inner: Arc<dyn Store>,
    hold: Arc<HoldTime>,
}

impl TimeHeldStore {
    pub(crate) fn new(inner: Arc<dyn Store>) -> TimeHeldStore {
        TimeHeldStore {
            inner,
            hold: Arc::default(),
        }
    }

    async fn held<T>(&self, call: impl Future<Output = T>) -> T {
        let _held = self.hold.enter();
        call.await
    }
}

#[async_trait]
impl Store for TimeHeldStore {
    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.held(self.inner.list_apps()).await
    }
    async fn put_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        self.held(self.inner.put_app(app)).await
    }
    async fn touch_user(&self, a: u32, u: &str, n: &str, t: i64) -> Result<(), StoreError> {
        self.held(self.inner.touch_user(a, u, n, t)).await
    }
    async fn append_peer(&self, msg: NewPeerMessage) -> Result<Appended, StoreError> {
        self.held(self.inner.append_peer(msg)).await
    }
    fn appends_in_call_order(&self) -> bool {
        self.inner.appends_in_call_order()
    }
    fn single_node(&self) -> bool {
        self.inner.single_node()
    }
    async fn inbox_after(
        &self,
        a: u32,
        u: &str,
        after: u64,
        limit: usize,
    ) -> Result<InboxPage, StoreError> {
        self.held(self.inner.inbox_after(a, u, after, limit)).await
    }
    async fn ack_inbox(&self, a: u32, u: &str, s: u64) -> Result<(), StoreError> {
        self.held(self.inner.ack_inbox(a, u, s)).await
    }
    async fn inbox_acked(&self, a: u32, u: &str) -> Result<u64, StoreError> {
        self.held(self.inner.inbox_acked(a, u)).await
    }
    async fn purge_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        self.held(self.inner.purge_before(cutoff)).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.held(self.inner.ping()).await
    }
    async fn create_room(
        &self,
        room: NewRoom,
        limits: RoomLimits,
    ) -> Result<RoomRecord, RoomError> {
        self.held(self.inner.create_room(room, limits)).await
    }
    async fn join_room(
        &self,
        a: u32,
        r: &str,
        u: &str,
        n: &str,
        now: i64,
        limits: RoomLimits,
    ) -> Result<Joined, RoomError> {
        self.held(self.inner.join_room(a, r, u, n, now, limits))
            .await
    }
    async fn leave_room(&self, a: u32, r: &str, u: &str, now: i64) -> Result<Left, RoomError> {
        self.held(self.inner.leave_room(a, r, u, now)).await
    }
    async fn room(&self, a: u32, r: &str) -> Result<Option<RoomRecord>, StoreError> {
        self.held(self.inner.room(a, r)).await
    }
    async fn is_member(&self, a: u32, r: &str, u: &str) -> Result<bool, StoreError> {
        self.held(self.inner.is_member(a, r, u)).await
    }
    async fn room_members(
        &self,
        a: u32,
        r: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MemberRecord>, StoreError> {
        self.held(self.inner.room_members(a, r, after, limit)).await
    }
    async fn room_member_count(&self, a: u32, r: &str) -> Result<u64, StoreError> {
        self.held(self.inner.room_member_count(a, r)).await
    }
    async fn user_rooms(&self, a: u32, u: &str) -> Result<Vec<RoomRecord>, StoreError> {
        self.held(self.inner.user_rooms(a, u)).await
    }
    async fn set_member_offline(
        &self,
        a: u32,
        u: &str,
        since: Option<i64>,
    ) -> Result<(), StoreError> {
        self.held(self.inner.set_member_offline(a, u, since)).await
    }
    async fn expire_members(&self, cutoff: i64) -> Result<Vec<ExpiredMember>, StoreError> {
        self.held(self.inner.expire_members(cutoff)).await
    }
    async fn destroy_empty_rooms(&self, now: i64) -> Result<Vec<(u32, String)>, StoreError> {
        self.held(self.inner.destroy_empty_rooms(now)).await
    }
    async fn change_room_attributes(
        &self,
        a: u32,
        r: &str,
        u: &str,
        change: AttributeChange,
        limits: RoomLimits,
    ) -> Result<AttributesChanged, RoomError> {
        self.held(self.inner.change_room_attributes(a, r, u, change, limits))
            .await
    }
    async fn room_attributes(&self, a: u32, r: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.held(self.inner.room_attributes(a, r)).await
    }
    async fn append_room(&self, msg: NewRoomMessage) -> Result<AppendedRoom, RoomError> {
        self.held(self.inner.append_room(msg)).await
    }
    async fn room_messages_after(
        &self,
        a: u32,
        r: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredRoomMessage>, StoreError> {
        self.held(self.inner.room_messages_after(a, r, after, limit))
            .await
    }
    async fn history(&self, q: HistoryQuery) -> Result<Vec<HistoryMessage>, StoreError> {
        self.held(self.inner.history(q)).await
    }
}

/// A store that fails on purpose while `failing` is set.
pub(crate) struct FlakyStore {
    pub(crate) inner: Arc<dyn Store>,
    pub(crate) failing: std::sync::atomic::AtomicBool,
}

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable("failing on purpose".into()));
        }
        Ok(())
    }
    pub(crate) fn set_failing(&self, on: bool) {
        self.failing.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.inner.list_apps().await
    }
    async fn put_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        self.inner.put_app(app).await
    }
    async fn touch_user(&self, a: u32, u: &str, n: &str, t: i64) -> Result<(), StoreError> {
        self.check()?;
        self.inner.touch_user(a, u, n, t).await
    }
    async fn append_peer(&self, msg: NewPeerMessage) -> Result<Appended, StoreError> {
        self.check()?;
        self.inner.append_peer(msg).await
    }
    fn appends_in_call_order(&self) -> bool {
        self.inner.appends_in_call_order()
    }
    fn single_node(&self) -> bool {
        self.inner.single_node()
    }
    async fn inbox_after(
        &self,
        a: u32,
        u: &str,
        after: u64,
        limit: usize,
    ) -> Result<InboxPage, StoreError> {
        self.check()?;
        self.inner.inbox_after(a, u, after, limit).await
    }
    async fn ack_inbox(&self, a: u32, u: &str, s: u64) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ack_inbox(a, u, s).await
    }
    async fn inbox_acked(&self, a: u32, u: &str) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.inbox_acked(a, u).await
    }
    async fn purge_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        self.inner.purge_before(cutoff).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ping().await
    }
    async fn create_room(
        &self,
        room: NewRoom,
        limits: RoomLimits,
    ) -> Result<RoomRecord, RoomError> {
        self.check()?;
        self.inner.create_room(room, limits).await
    }
    async fn join_room(
        &self,
        a: u32,
        r: &str,
        u: &str,
        n: &str,
        now: i64,
        limits: RoomLimits,
    ) -> Result<Joined, RoomError> {
        self.check()?;
        self.inner.join_room(a, r, u, n, now, limits).await
    }
    async fn leave_room(&self, a: u32, r: &str, u: &str, now: i64) -> Result<Left, RoomError> {
        self.check()?;
        self.inner.leave_room(a, r, u, now).await
    }
    async fn room(&self, a: u32, r: &str) -> Result<Option<RoomRecord>, StoreError> {
        self.check()?;
        self.inner.room(a, r).await
    }
    async fn is_member(&self, a: u32, r: &str, u: &str) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.is_member(a, r, u).await
    }
    async fn room_members(
        &self,
        a: u32,
        r: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MemberRecord>, StoreError> {
        self.check()?;
        self.inner.room_members(a, r, after, limit).await
    }
    async fn room_member_count(&self, a: u32, r: &str) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.room_member_count(a, r).await
    }
    async fn user_rooms(&self, a: u32, u: &str) -> Result<Vec<RoomRecord>, StoreError> {
        self.check()?;
        self.inner.user_rooms(a, u).await
    }
    async fn set_member_offline(
        &self,
        a: u32,
        u: &str,
        since: Option<i64>,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.set_member_offline(a, u, since).await
    }
    async fn expire_members(&self, cutoff: i64) -> Result<Vec<ExpiredMember>, StoreError> {
        self.inner.expire_members(cutoff).await
    }
    async fn destroy_empty_rooms(&self, now: i64) -> Result<Vec<(u32, String)>, StoreError> {
        self.inner.destroy_empty_rooms(now).await
    }
    async fn change_room_attributes(
        &self,
        a: u32,
        r: &str,
        u: &str,
        change: AttributeChange,
        limits: RoomLimits,
    ) -> Result<AttributesChanged, RoomError> {
        self.check()?;
        self.inner
            .change_room_attributes(a, r, u, change, limits)
            .await
    }
    async fn room_attributes(&self, a: u32, r: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.check()?;
        self.inner.room_attributes(a, r).await
    }
    async fn append_room(&self, msg: NewRoomMessage) -> Result<AppendedRoom, RoomError> {
        self.check()?;
        self.inner.append_room(msg).await
    }
    async fn room_messages_after(
        &self,
        a: u32,
        r: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredRoomMessage>, StoreError> {
        self.check()?;
        self.inner.room_messages_after(a, r, after, limit).await
    }
    async fn history(&self, q: HistoryQuery) -> Result<Vec<HistoryMessage>, StoreError> {
        self.check()?;
        self.inner.history(q).await
    }
}

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) data: PathBuf,
    _dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// How clients connect: `None` over TCP, else over duplex pipes served here.
    connector: Option<Connector>,
    /// The server's wall clock.
    clock: Arc<dyn Clock>,
}

pub(crate) fn config(data: &Path) -> Config {
    Config {
        data_dir: data.to_owned(),
        apps: vec![
            AppConfig {
                id: APP,
                secret: SECRET.into(),
                name: "test".into(),
                limits: Default::default(),
            },
            AppConfig {
                id: APP2,
                secret: SECRET2.into(),
                name: "other".into(),
                limits: Default::default(),
            },
        ],
        ..Config::default()
    }
}

impl TestServer {
    pub(crate) async fn start() -> TestServer {
        Self::start_with(|_| {}, Options::default()).await
    }

    pub(crate) async fn start_with(
        tweak: impl FnOnce(&mut Config),
        options: Options,
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_owned();
        let mut s = Self::start_in(&data, tweak, options).await;
        s._dir = Some(dir);
        s
    }

    /// Starts a server on an existing data directory (for restarts).
    pub(crate) async fn start_in(
        data: &Path,
        tweak: impl FnOnce(&mut Config),
        options: Options,
    ) -> TestServer {
        Self::launch(data, tweak, options, false).await
    }

    /// A server whose clients connect over in-memory pipes, for tests with
    /// paused time (see the module's documentation).
    pub(crate) async fn start_duplex() -> TestServer {
        Self::start_duplex_with(|_| {}, Options::default()).await
    }

    /// [`TestServer::start_with`] over in-memory pipes.
    pub(crate) async fn start_duplex_with(
        tweak: impl FnOnce(&mut Config),
        options: Options,
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_owned();
        let mut s = Self::start_duplex_in(&data, tweak, options).await;
        s._dir = Some(dir);
        s
    }

    /// [`TestServer::start_in`] over in-memory pipes. The store (the one in
    /// `options`, or the configured one) is wrapped in a [`TimeHeldStore`], and
    /// the server's clock is a [`PausedClock`] unless `options` has one.
    pub(crate) async fn start_duplex_in(
        data: &Path,
        tweak: impl FnOnce(&mut Config),
        options: Options,
    ) -> TestServer {
        Self::launch(data, tweak, options, true).await
    }

    async fn launch(
        data: &Path,
        tweak: impl FnOnce(&mut Config),
        mut options: Options,
        duplex: bool,
    ) -> TestServer {
        let mut cfg = config(data);
        tweak(&mut cfg);
        if duplex {
            let store = match options.store.take() {
                Some(store) => store,
                None => confab_server::open_store(&cfg).await.unwrap(),
            };
            options.store = Some(Arc::new(TimeHeldStore::new(store)));
            options
                .clock
                .get_or_insert_with(|| Arc::new(PausedClock::new()));
        }
        let clock = options
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(SystemClock));
        // A duplex server still runs on a listener, which no test connects to.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::prepare(cfg, options).await.unwrap();
        let connector = duplex.then(|| server.connector());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            data: data.to_owned(),
            _dir: None,
            stop: Some(stop),
            task: Some(task),
            connector,
            clock,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub(crate) async fn connect(&self) -> Client {
        match &self.connector {
            None => Client::connect(&self.url()).await,
            Some(connector) => Client::over_duplex(connector).await,
        }
    }

    pub(crate) async fn login(&self, user: &str) -> Client {
        let mut c = self.connect().await;
        let r = c.login(APP, user, &self.token(user), None).await;
        assert_eq!(r["code"], 0, "login of {user}: {r}");
        c
    }

    /// The server's time, in Unix seconds.
    pub(crate) fn unix_now(&self) -> i64 {
        self.clock.now_secs()
    }

    /// [`token`] by the server's clock.
    pub(crate) fn token(&self, user: &str) -> String {
        self.token_for(APP, SECRET, user, 3600)
    }

    /// [`token_for`] by the server's clock.
    pub(crate) fn token_for(&self, app: u32, secret: &str, user: &str, ttl: u64) -> String {
        token_made_at(self.unix_now(), app, secret, user, ttl)
    }

    /// A token that expires `secs_left` seconds from now by the server's clock.
    pub(crate) fn token_expiring_in(&self, user: &str, secs_left: i64) -> String {
        token_expiring_at(self.unix_now(), user, secs_left)
    }

    /// Stops the server gracefully and waits for it.
    pub(crate) async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        self._dir.take()
    }

    pub(crate) async fn metric(&self, name: &str) -> u64 {
        let text = match &self.connector {
            None => http_get(self.addr, "/metrics").await.1,
            // No real I/O with paused time: it would let the clock run on.
            Some(connector) => connector.metrics_text(),
        };
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} not found in {text}"))
    }
}

/// A minimal HTTP/1.1 request over a fresh connection; returns (status, body).
pub(crate) async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        req.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    // Read until the server closes (or resets) the connection.
    while let Ok(Ok(n)) = tokio::time::timeout(WAIT, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, &[], b"").await
}

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Closed {
    /// The `disconnect` push's reason, if one came.
    pub(crate) reason: Option<String>,
    /// The close frame's code, if one came.
    pub(crate) code: Option<u16>,
}

/// A client's byte stream: a TCP connection or one end of a duplex pipe.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) struct Client {
    ws: WebSocketStream<Box<dyn Io>>,
    next_id: u64,
    /// Pushes received while waiting for replies.
    pushes: VecDeque<Value>,
    /// Replies received while waiting for something else.
    replies: VecDeque<Value>,
}

impl Client {
    /// Connects to `url` (`ws://host:port/path`) over TCP.
    pub(crate) async fn connect(url: &str) -> Client {
        let host = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("not a ws:// URL: {url}"));
        let tcp: Box<dyn Io> = Box::new(TcpStream::connect(host).await.unwrap());
        let (ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
        Client::over(ws)
    }

    /// Connects over a fresh duplex pipe whose other end `connector` serves
    /// (a WebSocket without an opening handshake: none is needed in memory).
    pub(crate) async fn over_duplex(connector: &Connector) -> Client {
        let (ours, theirs) = tokio::io::duplex(DUPLEX_BUFFER);
        connector
            .serve_websocket(theirs)
            .expect("the server has room for another connection");
        let ours: Box<dyn Io> = Box::new(ours);
        Client::over(WebSocketStream::from_raw_socket(ours, Role::Client, None).await)
    }

    fn over(ws: WebSocketStream<Box<dyn Io>>) -> Client {
        Client {
            ws,
            next_id: 1,
            pushes: VecDeque::new(),
            replies: VecDeque::new(),
        }
    }

    pub(crate) async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub(crate) async fn send_message(&mut self, msg: Message) {
        self.ws.send(msg).await.unwrap();
    }

    /// The next frame of any kind, as it came (None on end, error or timeout).
    pub(crate) async fn next_frame(&mut self, timeout: Duration) -> Option<Message> {
        tokio::time::timeout(timeout, self.ws.next())
            .await
            .ok()??
            .ok()
    }

    /// Sends a request, returns its id.
    pub(crate) async fn send(&mut self, op: &str, data: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let frame = json!({"v": 1, "id": id, "op": op, "data": data});
        self.send_raw(&frame.to_string()).await;
        id
    }

    /// Reads one frame (None on close/error/timeout).
    async fn read(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match msg {
                Message::Text(t) => return Some(serde_json::from_str(t.as_str()).unwrap()),
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    pub(crate) async fn reply_to(&mut self, id: u64) -> Value {
        if let Some(pos) = self.replies.iter().position(|r| r["id"] == id) {
            return self.replies.remove(pos).unwrap();
        }
        loop {
            let v = self
                .read(WAIT)
                .await
                .unwrap_or_else(|| panic!("no reply to request {id}"));
            if v.get("push").is_some() {
                self.pushes.push_back(v);
            } else if v["id"] == id {
                return v;
            } else {
                self.replies.push_back(v);
            }
        }
    }

    /// The next reply in arrival order (pushes are kept for later).
    pub(crate) async fn next_reply(&mut self) -> Value {
        if let Some(r) = self.replies.pop_front() {
            return r;
        }
        loop {
            let v = self.read(WAIT).await.expect("a reply");
            if v.get("push").is_some() {
                self.pushes.push_back(v);
            } else {
                return v;
            }
        }
    }

    pub(crate) async fn request(&mut self, op: &str, data: Value) -> Value {
        let id = self.send(op, data).await;
        self.reply_to(id).await
    }

    pub(crate) async fn login(
        &mut self,
        app: u32,
        user: &str,
        token: &str,
        last: Option<u64>,
    ) -> Value {
        let mut data = json!({"appID": app, "userID": user, "userName": user, "token": token});
        if let Some(last) = last {
            data["lastInboxSeq"] = last.into();
        }
        self.request("login", data).await
    }

    /// The next push of `name`, skipping none (other pushes are kept for later).
    pub(crate) async fn push(&mut self, name: &str) -> Value {
        self.try_push(name, WAIT)
            .await
            .unwrap_or_else(|| panic!("no {name} push within {WAIT:?}"))
    }

    /// The messages of every `name` push (their `messageList`s, in order) until
    /// `quiet` passes without one.
    pub(crate) async fn messages_until_quiet(&mut self, name: &str, quiet: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(p) = self.try_push(name, quiet).await {
            out.extend(p["data"]["messageList"].as_array().unwrap().iter().cloned());
        }
        out
    }

    pub(crate) async fn try_push(&mut self, name: &str, timeout: Duration) -> Option<Value> {
        if let Some(pos) = self.pushes.iter().position(|p| p["push"] == name) {
            return self.pushes.remove(pos);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.read(left).await?;
            if v["push"] == name {
                return Some(v);
            }
            if v.get("push").is_some() {
                self.pushes.push_back(v);
            } else {
                self.replies.push_back(v);
            }
        }
    }

    /// Collects peer messages (from receivePeerMessage pushes) until `n` arrived.
    pub(crate) async fn peer_messages(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let p = self.push("receivePeerMessage").await;
            out.extend(p["data"]["messageList"].as_array().unwrap().iter().cloned());
        }
        assert_eq!(out.len(), n, "more messages than expected: {out:?}");
        out
    }

    /// Sends a Text peer message and returns the reply.
    pub(crate) async fn send_text(&mut self, to: &str, text: &str, local: u64) -> Value {
        let id = self.send_text_nowait(to, text, local).await;
        self.reply_to(id).await
    }

    /// Sends a Text peer message without waiting for the reply; returns its id.
    pub(crate) async fn send_text_nowait(&mut self, to: &str, text: &str, local: u64) -> u64 {
        self.send(
            "sendPeerMessage",
            json!({"toUserID": to, "type": 1, "message": text, "localMessageID": local}),
        )
        .await
    }

    /// Reads until the connection ends; returns the disconnect reason and close code.
    pub(crate) async fn closed(&mut self, timeout: Duration) -> Closed {
        match self.closed_within(timeout).await {
            Some(closed) => closed,
            None => panic!(
                "connection still open after {timeout:?} (reason so far {:?})",
                self.disconnect_reason()
            ),
        }
    }

    /// The reason of the `disconnect` push received so far, if any.
    fn disconnect_reason(&self) -> Option<String> {
        self.pushes
            .iter()
            .find(|p| p["push"] == "disconnect")
            .map(|p| p["data"]["reason"].as_str().unwrap_or("").to_owned())
    }

    /// The disconnect reason and close code when the connection ends within
    /// `timeout`; `None` if it is still open then (what it read meanwhile is
    /// kept for later reads).
    pub(crate) async fn closed_within(&mut self, timeout: Duration) -> Option<Closed> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let code = match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return None,
                Ok(None | Some(Err(_))) => None,
                Ok(Some(Ok(Message::Close(frame)))) => frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v.get("push").is_some() {
                        self.pushes.push_back(v);
                    } else {
                        self.replies.push_back(v);
                    }
                    continue;
                }
                Ok(Some(Ok(_))) => continue,
            };
            return Some(Closed {
                reason: self.disconnect_reason(),
                code,
            });
        }
    }

    /// Whether the connection is still open (answers a ping request).
    pub(crate) async fn alive(&mut self) -> bool {
        let id = self.send("ping", json!({})).await;
        loop {
            match self.read(WAIT).await {
                None => return false,
                // Any answer proves the connection is open (ping needs a login).
                Some(v) if v["id"] == id => return true,
                Some(v) if v.get("push").is_some() => self.pushes.push_back(v),
                Some(v) => self.replies.push_back(v),
            }
        }
    }
}

/// A FlakyStore over SQLite in `data`.
pub(crate) fn flaky_store(data: &Path) -> Arc<FlakyStore> {
    let inner = SqliteStore::open(SqliteConfig::new(data.join("confab.db"))).unwrap();
    Arc::new(FlakyStore {
        inner: Arc::new(inner),
        failing: Default::default(),
    })
}

/// A per-user send limit no test reaches.
fn without_user_send_limit(c: &mut Config) {
    c.limits.user_send_rate = 10_000;
    c.limits.user_send_burst = 10_000;
}

/// A server whose per-user send limit no test reaches.
pub(crate) async fn server_without_user_send_limit() -> TestServer {
    TestServer::start_with(without_user_send_limit, Options::default()).await
}

/// [`server_without_user_send_limit`] over in-memory pipes.
pub(crate) async fn duplex_server_without_user_send_limit() -> TestServer {
    TestServer::start_duplex_with(without_user_send_limit, Options::default()).await
}

/// After a sender left with sends `m0, m1, …` in flight: what `receiver` got
/// live (`push` frames, until 500 ms pass without one) is exactly what the store
/// kept of the conversation, and that is a non-empty prefix of the sends, in
/// request order.
pub(crate) async fn assert_stored_sends_were_delivered(
    receiver: &mut Client,
    push: &str,
    conversation_id: &str,
    conversation_type: u8,
) {
    let live: Vec<String> = receiver
        .messages_until_quiet(push, Duration::from_millis(500))
        .await
        .iter()
        .map(|m| m["message"].as_str().unwrap().to_owned())
        .collect();
    let r = receiver
        .request(
            "queryHistoryMessage",
            json!({"conversationID": conversation_id, "conversationType": conversation_type,
                   "config": {"count": 100, "reverse": false}}),
        )
        .await;
    assert_eq!(r["code"], 0, "{r}");
    let stored: Vec<String> = r["data"]["messageList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !stored.is_empty(),
        "the server read some sends before the close"
    );
    assert_eq!(
        live, stored,
        "every stored message was delivered live, in order"
    );
    let expected: Vec<String> = (0..stored.len()).map(|i| format!("m{i}")).collect();
    assert_eq!(stored, expected, "stored in request order");
}
