//! The engine: one background task that owns the WebSocket and all connection
//! state. The [`crate::Zim`] handle talks to it over a command channel; it talks
//! to the app over the event channel.
//!
//! It matches replies to requests by id with a deadline per request, sends
//! heartbeats, reconnects with exponential backoff and jitter across the URL
//! list, logs in again with `lastInboxSeq` and `roomSeqs`, restores rooms, and
//! dedupes what the server replays so the app sees each stored message once and
//! in order.
//!
//! Invariants:
//! - A call is answered exactly once: with its reply, or with an error when its
//!   deadline passes, the connection ends for good, or the instance is destroyed.
//! - Calls are written in the order they were made (queued calls by call order).
//! - Only retry-safe requests are resent after a reconnect: stored (Text) sends —
//!   the server dedups them by `localMessageID` — and requests that change
//!   nothing or are idempotent (queries, `joinRoom`, `renewToken`). Everything
//!   else in flight when the connection drops fails with 6000104 / 6000204,
//!   because it may or may not have taken effect.
//! - Peer messages reach the app once each, in inbox order (dedupe by
//!   `inboxSeq`); stored room messages once each, in seq order (dedupe by
//!   `(roomID, conversationSeq)`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confab_proto::ErrorCode;
use confab_proto::frame::{
    AckInboxRequest, DisconnectReason, Empty, JoinRoomRequest, LoginReply, LoginRequest, Push,
    Reply, Request, RequestFrame, RoomJoinedReply, ServerFrame, UserInfo,
};
use futures_util::{SinkExt as _, StreamExt as _};
use rand::Rng as _;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::ZimError;
use crate::logger::Logger;
use crate::types::{
    ConnectionEvent, ConnectionState, Message, RoomEvent, RoomState, ZimConfig, ZimEvent,
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type HandshakeResult = Result<(Box<Ws>, LoginReply), HandshakeError>;
type Handshake = Pin<Box<dyn Future<Output = HandshakeResult> + Send>>;

/// How often the engine checks deadlines, heartbeats and acknowledgements.
const TICK: Duration = Duration::from_millis(100);

/// State shared by the handle and the engine.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The configuration the instance was created with.
    pub(crate) config: ZimConfig,
    /// The SDK's log.
    pub(crate) logger: Logger,
    /// The current [`ConnectionState`], as its code.
    state: AtomicU8,
    /// The user, token and URL of the current or most recent login (for uploads).
    credentials: Mutex<Option<Credentials>>,
}

/// Who is (or was last) logged in, and where.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) user_id: String,
    pub(crate) token: String,
    pub(crate) url: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user_id", &self.user_id)
            .field("token", &"<redacted>")
            .field("url", &self.url)
            .finish()
    }
}

impl Shared {
    pub(crate) fn new(config: ZimConfig) -> Shared {
        Shared {
            config,
            logger: Logger::default(),
            state: AtomicU8::new(ConnectionState::Disconnected.code()),
            credentials: Mutex::new(None),
        }
    }

    pub(crate) fn state(&self) -> ConnectionState {
        ConnectionState::from_code(self.state.load(Ordering::SeqCst))
            .unwrap_or(ConnectionState::Disconnected)
    }

    pub(crate) fn credentials(&self) -> Option<Credentials> {
        self.credentials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_credentials(&self, update: impl FnOnce(&mut Option<Credentials>)) {
        update(
            &mut self
                .credentials
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }
}

/// What the handle asks of the engine.
#[derive(Debug)]
pub(crate) enum Command {
    /// Log in (answered when the login reply arrives, or the login fails).
    Login {
        user: UserInfo,
        token: String,
        reply: oneshot::Sender<Result<(), ZimError>>,
    },
    /// Log out.
    Logout {
        reply: oneshot::Sender<Result<(), ZimError>>,
    },
    /// Any other request.
    Call(Call),
}

/// A request of the app, waiting for its reply.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) request: Request,
    /// When it fails with a network code if it has no reply yet.
    pub(crate) deadline: Instant,
    pub(crate) reply: oneshot::Sender<Result<Reply, ZimError>>,
}

/// Whether a request sends a message (its network failures are 6000204).
pub(crate) fn is_send(request: &Request) -> bool {
    matches!(
        request,
        Request::SendPeerMessage(_) | Request::SendRoomMessage(_)
    )
}

/// Whether a request may be written again after the connection dropped with it
/// in flight: the server dedups stored sends, and the others change nothing or
/// are idempotent.
fn is_retry_safe(request: &Request) -> bool {
    match request {
        Request::SendPeerMessage(r) => r.kind.is_stored(),
        Request::SendRoomMessage(r) => r.kind.is_stored(),
        Request::Ping(_)
        | Request::RenewToken(_)
        | Request::JoinRoom(_)
        | Request::QueryRoomMemberList(_)
        | Request::QueryRoomOnlineMemberCount(_)
        | Request::QueryRoomAllAttributes(_)
        | Request::QueryHistoryMessage(_) => true,
        _ => false,
    }
}

/// An op and its harmless parameters, for the log: never tokens or bodies.
fn describe(request: &Request) -> String {
    let op = request.name();
    match request {
        Request::SendPeerMessage(r) => format!(
            "{op} toUserID={} type={} localMessageID={}",
            r.to_user_id,
            r.kind.code(),
            r.local_message_id
        ),
        Request::SendRoomMessage(r) => format!(
            "{op} roomID={} type={} localMessageID={}",
            r.room_id,
            r.kind.code(),
            r.local_message_id
        ),
        Request::CreateRoom(r) => format!("{op} roomID={}", r.room_info.room_id),
        Request::EnterRoom(r) => format!("{op} roomID={}", r.room_info.room_id),
        Request::JoinRoom(r) => format!("{op} roomID={} lastSeq={:?}", r.room_id, r.last_seq),
        Request::LeaveRoom(r)
        | Request::QueryRoomOnlineMemberCount(r)
        | Request::QueryRoomAllAttributes(r) => format!("{op} roomID={}", r.room_id),
        Request::AckInbox(r) => format!("{op} inboxSeq={}", r.inbox_seq),
        _ => op.to_owned(),
    }
}

/// The wire name of a disconnect reason (`kickedOut`, ...).
fn reason_name(reason: DisconnectReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{reason:?}"))
}

#[derive(Debug)]
enum HandshakeError {
    /// The server could not be reached or did not answer.
    Network(String),
    /// The server refused the login.
    Rejected(ZimError),
}

/// Connects to `url` and logs in; the connection is returned right after the
/// login reply, with the catch-up pushes still unread.
async fn handshake(url: String, id: u64, login: LoginRequest, limit: Duration) -> HandshakeResult {
    let work = async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| HandshakeError::Network(format!("cannot connect to {url}: {e}")))?;
        let frame = RequestFrame {
            id,
            request: Request::Login(login),
        }
        .encode();
        ws.send(WsMessage::text(frame))
            .await
            .map_err(|e| HandshakeError::Network(format!("sending login to {url} failed: {e}")))?;
        loop {
            let text = match ws.next().await {
                None => {
                    return Err(HandshakeError::Network(format!(
                        "{url} closed the connection during login"
                    )));
                }
                Some(Err(e)) => {
                    return Err(HandshakeError::Network(format!(
                        "reading from {url} failed during login: {e}"
                    )));
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    return Err(HandshakeError::Network(format!(
                        "{url} closed the connection during login: {why}"
                    )));
                }
                Some(Ok(WsMessage::Text(text))) => text,
                Some(Ok(_)) => continue,
            };
            match ServerFrame::decode(text.as_str()) {
                Ok(ServerFrame::Reply(reply)) if reply.id == id => {
                    if !reply.code.is_success() {
                        return Err(HandshakeError::Rejected(ZimError::new(
                            reply.code,
                            reply.message,
                        )));
                    }
                    let data: LoginReply = reply.data_as().map_err(|e| {
                        HandshakeError::Network(format!("unreadable login reply: {e}"))
                    })?;
                    return Ok((Box::new(ws), data));
                }
                Ok(ServerFrame::Push(Push::Disconnect(d))) => {
                    return Err(HandshakeError::Network(format!(
                        "{url} disconnected during login: {}: {}",
                        reason_name(d.reason),
                        d.message
                    )));
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(HandshakeError::Network(format!(
            "no login reply within {limit:?}"
        )))
    })
}

/// Closes a connection politely without holding up the engine.
fn close_in_background(ws: Box<Ws>) {
    tokio::spawn(async move {
        let mut ws = ws;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = WebSocketStream::close(&mut *ws, None).await;
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    });
}

/// A login the app asked for, while it tries the URLs.
#[derive(Debug)]
struct LoginAttempt {
    reply: oneshot::Sender<Result<(), ZimError>>,
    /// URLs tried so far, this one included.
    tried: usize,
}

/// The connection, as far as there is one.
enum Link {
    /// No connection and none wanted (Disconnected), or between steps.
    Idle,
    /// Connecting and logging in; `login` is the app's login, `None` a reconnect.
    Connecting {
        handshake: Handshake,
        url: usize,
        login: Option<LoginAttempt>,
    },
    /// Waiting before the next reconnect attempt.
    Backoff { until: Instant },
    /// Logged in.
    Online {
        ws: Box<Ws>,
        phase: Phase,
        /// When a frame was last written, for heartbeats.
        last_sent: Instant,
    },
}

/// How far a logged-in connection is from serving the app's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Calls go out as they come.
    Ready,
    /// After a re-login: waiting for the barrier ping's reply, which comes after
    /// the server's catch-up and room restoration.
    Restoring,
    /// Re-joining rooms the server did not restore; `left` replies to go.
    Rejoining { left: usize },
}

/// What a request on the wire is waiting for.
#[derive(Debug)]
enum Waiting {
    Call(Call),
    Logout(oneshot::Sender<Result<(), ZimError>>),
    /// The ping after a re-login.
    Barrier,
    /// A room re-joined after a re-login.
    Rejoin(String),
    Ack(u64),
    Heartbeat,
}

#[derive(Debug)]
struct Pending {
    /// The call's order (0 for the engine's own requests).
    seq: u64,
    deadline: Instant,
    what: Waiting,
}

/// The logged-in user, while logged in (including while reconnecting).
#[derive(Debug)]
struct Session {
    user: UserInfo,
    token: String,
}

#[derive(Debug)]
struct Reconnect {
    /// When the connection was lost (for giving up).
    since: Instant,
    /// Failed attempts so far (for the backoff).
    attempt: u32,
}

enum Event {
    Shutdown,
    Command(Command),
    Handshake(HandshakeResult),
    Frame(Option<Result<WsMessage, tungstenite::Error>>),
    BackoffDone,
    Tick,
}

async fn link_event(link: &mut Link) -> Event {
    match link {
        Link::Idle => std::future::pending().await,
        Link::Connecting { handshake, .. } => Event::Handshake(handshake.as_mut().await),
        Link::Backoff { until } => {
            sleep_until(*until).await;
            Event::BackoffDone
        }
        Link::Online { ws, .. } => Event::Frame(ws.next().await),
    }
}

/// Starts the engine task.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<ZimEvent>,
    shutdown: watch::Receiver<bool>,
) {
    let engine = Engine {
        shared,
        cmds,
        events,
        shutdown,
        stopping: false,
        link: Link::Idle,
        session: None,
        queued: BTreeMap::new(),
        pending: HashMap::new(),
        next_id: 1,
        next_seq: 1,
        next_url: 0,
        reconnect: None,
        disconnect_hint: None,
        seqs_user: None,
        last_inbox_seq: None,
        acked_inbox_seq: 0,
        ack_in_flight: false,
        last_ack: Instant::now(),
        last_received: Instant::now(),
        heartbeat_in_flight: false,
        room_seqs: HashMap::new(),
        room_seen: HashMap::new(),
        joined: BTreeSet::new(),
        restored: BTreeSet::new(),
    };
    tokio::spawn(engine.run());
}

struct Engine {
    shared: Arc<Shared>,
    cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<ZimEvent>,
    shutdown: watch::Receiver<bool>,
    /// Set when shutdown was noticed somewhere other than the main loop.
    stopping: bool,
    link: Link,
    session: Option<Session>,
    /// Calls waiting for a ready connection, by call order.
    queued: BTreeMap<u64, Call>,
    /// Requests on the wire, by request id.
    pending: HashMap<u64, Pending>,
    next_id: u64,
    next_seq: u64,
    /// The URL to use for the next connection attempt.
    next_url: usize,
    /// Set while reconnecting (from the loss until the connection is ready).
    reconnect: Option<Reconnect>,
    /// The server's reason, when it announced a disconnect it wants us to recover from.
    disconnect_hint: Option<String>,
    /// The user the delivery positions below belong to.
    seqs_user: Option<String>,
    /// The highest peer inbox position delivered to the app (or skipped by a gap).
    last_inbox_seq: Option<u64>,
    /// The highest position acknowledged to the server.
    acked_inbox_seq: u64,
    ack_in_flight: bool,
    last_ack: Instant,
    /// When the server last sent anything: proof that the connection is alive
    /// even while the engine's own requests wait behind a long catch-up.
    last_received: Instant,
    heartbeat_in_flight: bool,
    /// Per room, the seq up to which every stored message has been seen (a
    /// contiguous watermark: what a catch-up resumes after).
    room_seqs: HashMap<String, u64>,
    /// Per room, seqs above the watermark already seen. Messages of one room sent
    /// through different server nodes may arrive out of seq order; a message is
    /// new unless it is at or below the watermark or in this set.
    room_seen: HashMap<String, BTreeSet<u64>>,
    /// Rooms this user is in, as far as the SDK knows.
    joined: BTreeSet<String>,
    /// Rooms the server restored after the current login.
    restored: BTreeSet<String>,
}

/// Seqs remembered above a room's watermark before the oldest gap is given up on
/// (a message the server will never push again, e.g. one sent before joining).
const ROOM_SEEN_MAX: usize = 4096;

/// Gap-tolerant duplicate detection: `last` is the contiguous watermark, `seen` the
/// seqs above it already delivered. Returns whether `seq` is new, and records it.
fn mark_seq(last: &mut u64, seen: &mut BTreeSet<u64>, seq: u64) -> bool {
    if seq <= *last || !seen.insert(seq) {
        return false;
    }
    while seen.remove(&(*last + 1)) {
        *last += 1;
    }
    while seen.len() > ROOM_SEEN_MAX {
        // Give up on the oldest gap: move the watermark to the next seen seq.
        let Some(first) = seen.pop_first() else { break };
        *last = first;
        while seen.remove(&(*last + 1)) {
            *last += 1;
        }
    }
    true
}

impl Engine {
    /// Records a stored room message's seq; false if it was seen before.
    fn mark_room_seq(&mut self, room: &str, seq: u64) -> bool {
        let last = self.room_seqs.entry(room.to_owned()).or_insert(0);
        let seen = self.room_seen.entry(room.to_owned()).or_default();
        mark_seq(last, seen, seq)
    }

    /// Moves a room's watermark to at least `seq` (after a gap or a join).
    fn advance_room_watermark(&mut self, room: &str, seq: u64) {
        let last = self.room_seqs.entry(room.to_owned()).or_insert(0);
        *last = (*last).max(seq);
        if let Some(seen) = self.room_seen.get_mut(room) {
            seen.retain(|s| *s > *last);
            while seen.remove(&(*last + 1)) {
                *last += 1;
            }
        }
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if self.stopping || *self.shutdown.borrow() {
                self.stop();
                return;
            }
            let event = tokio::select! {
                _ = self.shutdown.changed() => Event::Shutdown,
                cmd = self.cmds.recv() => cmd.map_or(Event::Shutdown, Event::Command),
                event = link_event(&mut self.link) => event,
                _ = tick.tick() => Event::Tick,
            };
            match event {
                Event::Shutdown => self.stopping = true,
                Event::Command(cmd) => self.on_command(cmd).await,
                Event::Handshake(result) => self.on_handshake(result).await,
                Event::Frame(frame) => self.on_frame(frame).await,
                Event::BackoffDone => self.on_backoff_done().await,
                Event::Tick => self.on_tick().await,
            }
        }
    }

    // ----- small helpers -------------------------------------------------

    fn log(&self, msg: &str) {
        self.shared.logger.info(msg);
    }

    fn warn(&self, msg: &str) {
        self.shared.logger.warn(msg);
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn me(&self) -> String {
        self.session
            .as_ref()
            .map(|s| s.user.user_id.clone())
            .or_else(|| self.seqs_user.clone())
            .unwrap_or_default()
    }

    fn timeout(&self) -> Duration {
        self.shared.config.request_timeout
    }

    fn is_ready(&self) -> bool {
        matches!(
            self.link,
            Link::Online {
                phase: Phase::Ready,
                ..
            }
        )
    }

    /// Hands an event to the app, waiting for room in the channel (backpressure);
    /// gives up only when the instance is being destroyed.
    async fn emit(&mut self, event: ZimEvent) {
        if self.stopping {
            return;
        }
        tokio::select! {
            biased;
            sent = self.events.send(event) => {
                // An app that dropped its receiver does not want events.
                let _ = sent;
            }
            _ = self.shutdown.changed() => self.stopping = true,
        }
    }

    async fn set_state(
        &mut self,
        state: ConnectionState,
        event: ConnectionEvent,
        extended: String,
    ) {
        self.shared.state.store(state.code(), Ordering::SeqCst);
        self.log(&format!("state {state:?} event {event:?} {extended}"));
        self.emit(ZimEvent::ConnectionStateChanged {
            state,
            event,
            extended,
        })
        .await;
    }

    async fn emit_room_state(&mut self, room_id: String, state: RoomState, event: RoomEvent) {
        self.log(&format!("room {room_id} state {state:?} event {event:?}"));
        self.emit(ZimEvent::RoomStateChanged {
            state,
            event,
            room_id,
        })
        .await;
    }

    /// Writes a text frame on the current connection.
    async fn write_text(&mut self, text: String) -> Result<(), String> {
        let limit = self.timeout();
        let Link::Online { ws, last_sent, .. } = &mut self.link else {
            return Err("not connected".into());
        };
        match tokio::time::timeout(limit, ws.send(WsMessage::text(text))).await {
            Ok(Ok(())) => {
                *last_sent = Instant::now();
                Ok(())
            }
            Ok(Err(e)) => Err(format!("writing to the server failed: {e}")),
            Err(_) => Err(format!("writing to the server took over {limit:?}")),
        }
    }

    /// Writes one of the engine's own requests; on failure the connection is lost.
    async fn send_internal(&mut self, request: Request, what: Waiting) -> bool {
        let id = self.next_id();
        self.log(&format!("request id={id} op={}", describe(&request)));
        let text = RequestFrame { id, request }.encode();
        match self.write_text(text).await {
            Ok(()) => {
                let deadline = Instant::now() + self.timeout();
                self.pending.insert(
                    id,
                    Pending {
                        seq: 0,
                        deadline,
                        what,
                    },
                );
                true
            }
            Err(e) => {
                self.connection_lost(&e).await;
                false
            }
        }
    }

    // ----- commands ------------------------------------------------------

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Login { user, token, reply } => self.login(user, token, reply).await,
            Command::Logout { reply } => self.logout(reply).await,
            Command::Call(call) => self.call(call).await,
        }
    }

    async fn login(
        &mut self,
        user: UserInfo,
        token: String,
        reply: oneshot::Sender<Result<(), ZimError>>,
    ) {
        if self.session.is_some() || !matches!(self.link, Link::Idle) {
            let _ = reply.send(Err(ZimError::new(
                ErrorCode::AlreadyLoggedIn,
                "already logged in (or a login or logout is in progress); call logout first",
            )));
            return;
        }
        if self.seqs_user.as_deref() != Some(user.user_id.as_str()) {
            // Delivery positions belong to one user.
            self.seqs_user = Some(user.user_id.clone());
            self.last_inbox_seq = None;
            self.acked_inbox_seq = 0;
            self.room_seqs.clear();
            self.room_seen.clear();
        }
        let url = self.shared.config.urls[self.next_url].clone();
        self.shared.set_credentials(|c| {
            *c = Some(Credentials {
                user_id: user.user_id.clone(),
                token: token.clone(),
                url,
            });
        });
        self.log(&format!("login userID={}", user.user_id));
        self.session = Some(Session { user, token });
        self.set_state(
            ConnectionState::Connecting,
            ConnectionEvent::ActiveLogin,
            String::new(),
        )
        .await;
        self.connect(Some(LoginAttempt { reply, tried: 1 }));
    }

    async fn logout(&mut self, reply: oneshot::Sender<Result<(), ZimError>>) {
        if self.session.is_none() {
            let _ = reply.send(Err(ZimError::not_logged_in("logout")));
            return;
        }
        self.log("logout");
        if matches!(self.link, Link::Online { .. }) {
            // Acknowledge what the app has received first, so the user's next
            // session (here or elsewhere) does not get it again. The server handles
            // a connection's requests in order, so this lands before the logout.
            if let Some(seq) = self.last_inbox_seq.filter(|s| *s > self.acked_inbox_seq) {
                self.ack_in_flight = true;
                self.send_internal(
                    Request::AckInbox(AckInboxRequest { inbox_seq: seq }),
                    Waiting::Ack(seq),
                )
                .await;
            }
            // From now on calls get 6000121; the link goes when the reply comes.
            self.session = None;
            let id = self.next_id();
            self.log(&format!("request id={id} op=logout"));
            let text = RequestFrame {
                id,
                request: Request::Logout(Empty {}),
            }
            .encode();
            match self.write_text(text).await {
                Ok(()) => {
                    let deadline = Instant::now() + self.timeout();
                    self.pending.insert(
                        id,
                        Pending {
                            seq: 0,
                            deadline,
                            what: Waiting::Logout(reply),
                        },
                    );
                }
                Err(e) => {
                    self.connection_lost(&e).await;
                    let _ = reply.send(Ok(()));
                }
            }
        } else {
            // Not connected: log out locally. The server keeps the rooms for its
            // grace period, then removes the member.
            self.go_idle(
                ConnectionEvent::Success,
                "logged out while not connected".into(),
            )
            .await;
            let _ = reply.send(Ok(()));
        }
    }

    async fn call(&mut self, call: Call) {
        if self.session.is_none() {
            let err = ZimError::not_logged_in(call.request.name());
            let _ = call.reply.send(Err(err));
            return;
        }
        if let Request::RenewToken(r) = &call.request {
            if !self.is_ready() {
                // A re-login in the meantime should already use the new token.
                self.update_token(&r.token);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.is_ready() {
            self.send_call(seq, call).await;
        } else {
            self.queued.insert(seq, call);
        }
    }

    fn update_token(&mut self, token: &str) {
        if let Some(session) = self.session.as_mut() {
            session.token = token.to_owned();
        }
        self.shared.set_credentials(|c| {
            if let Some(c) = c.as_mut() {
                c.token = token.to_owned();
            }
        });
    }

    async fn send_call(&mut self, seq: u64, call: Call) {
        if call.reply.is_closed() {
            // The caller gave up waiting: do not send what it no longer expects.
            return;
        }
        if Instant::now() >= call.deadline {
            self.fail_call(call, "no connection in time");
            return;
        }
        let id = self.next_id();
        self.log(&format!("request id={id} op={}", describe(&call.request)));
        if let Request::LeaveRoom(r) = &call.request {
            // Not restored or re-joined after a reconnect from here on, whatever
            // becomes of this request: if the leave never reached the server, the
            // server still restores the room at the next login.
            self.joined.remove(&r.room_id);
        }
        let text = RequestFrame {
            id,
            request: call.request.clone(),
        }
        .encode();
        match self.write_text(text).await {
            Ok(()) => {
                self.pending.insert(
                    id,
                    Pending {
                        seq,
                        deadline: call.deadline,
                        what: Waiting::Call(call),
                    },
                );
            }
            Err(e) => {
                if is_retry_safe(&call.request) {
                    self.queued.insert(seq, call);
                } else {
                    self.fail_call(call, &e);
                }
                self.connection_lost(&e).await;
            }
        }
    }

    fn fail_call(&self, call: Call, why: &str) {
        let err = ZimError::network(
            is_send(&call.request),
            format!("{}: {why}", call.request.name()),
        );
        self.log(&format!(
            "call {} failed: {}",
            call.request.name(),
            err.code.code()
        ));
        let _ = call.reply.send(Err(err));
    }

    async fn flush_queue(&mut self) {
        while self.is_ready() {
            let Some((seq, call)) = self.queued.pop_first() else {
                break;
            };
            self.send_call(seq, call).await;
        }
    }

    // ----- connecting ----------------------------------------------------

    /// Starts connecting to `next_url` and logging in.
    fn connect(&mut self, login: Option<LoginAttempt>) {
        let Some(session) = self.session.as_ref() else {
            return;
        };
        let room_seqs = self
            .joined
            .iter()
            .map(|room| (room.clone(), self.room_seqs.get(room).copied().unwrap_or(0)))
            .collect();
        let request = LoginRequest {
            app_id: self.shared.config.app_id,
            user_id: session.user.user_id.clone(),
            user_name: session.user.user_name.clone(),
            token: session.token.clone(),
            last_inbox_seq: self.last_inbox_seq,
            room_seqs,
        };
        let url_index = self.next_url;
        let url = self.shared.config.urls[url_index].clone();
        let id = self.next_id();
        self.log(&format!(
            "connecting to {url}: request id={id} op=login userID={} lastInboxSeq={:?} rooms={}",
            request.user_id,
            request.last_inbox_seq,
            request.room_seqs.len()
        ));
        self.disconnect_hint = None;
        self.link = Link::Connecting {
            handshake: Box::pin(handshake(url, id, request, self.timeout())),
            url: url_index,
            login,
        };
    }

    async fn on_handshake(&mut self, result: HandshakeResult) {
        let Link::Connecting { url, login, .. } = std::mem::replace(&mut self.link, Link::Idle)
        else {
            return;
        };
        let urls = self.shared.config.urls.len();
        match &result {
            Ok(_) => self.log("login reply code=0 (Success)"),
            Err(HandshakeError::Rejected(e)) => self.log(&format!(
                "login reply code={} ({})",
                e.code.code(),
                e.code.name()
            )),
            Err(HandshakeError::Network(_)) => {}
        }
        match result {
            Ok((ws, reply)) => {
                self.next_url = url;
                let url_text = self.shared.config.urls[url].clone();
                self.shared.set_credentials(|c| {
                    if let Some(c) = c.as_mut() {
                        c.url = url_text.clone();
                    }
                });
                self.log(&format!(
                    "logged in at {url_text}: inboxSeq={} tokenExpire={}",
                    reply.inbox_seq, reply.token_expire
                ));
                self.heartbeat_in_flight = false;
                self.ack_in_flight = false;
                self.restored.clear();
                let now = Instant::now();
                self.last_received = now;
                if let Some(attempt) = login {
                    self.link = Link::Online {
                        ws,
                        phase: Phase::Ready,
                        last_sent: now,
                    };
                    self.set_state(
                        ConnectionState::Connected,
                        ConnectionEvent::Success,
                        String::new(),
                    )
                    .await;
                    let _ = attempt.reply.send(Ok(()));
                    self.flush_queue().await;
                } else {
                    self.link = Link::Online {
                        ws,
                        phase: Phase::Restoring,
                        last_sent: now,
                    };
                    // The server answers this after its catch-up pushes and room
                    // restoration: then the SDK knows which rooms came back.
                    self.send_internal(Request::Ping(Empty {}), Waiting::Barrier)
                        .await;
                }
            }
            Err(HandshakeError::Rejected(err)) => match login {
                Some(attempt) => {
                    self.go_idle(ConnectionEvent::LoginInterrupted, err.to_string())
                        .await;
                    let _ = attempt.reply.send(Err(err));
                }
                None => match err.code {
                    ErrorCode::TokenExpired => {
                        self.go_idle(ConnectionEvent::TokenExpired, err.to_string())
                            .await;
                    }
                    ErrorCode::LoginInternalError
                    | ErrorCode::ServerRateLimit
                    | ErrorCode::Failed => self.schedule_reconnect(false).await,
                    _ => {
                        self.go_idle(ConnectionEvent::LoginInterrupted, err.to_string())
                            .await;
                    }
                },
            },
            Err(HandshakeError::Network(msg)) => {
                self.warn(&msg);
                self.next_url = (url + 1) % urls;
                match login {
                    Some(attempt) if attempt.tried < urls => {
                        self.connect(Some(LoginAttempt {
                            reply: attempt.reply,
                            tried: attempt.tried + 1,
                        }));
                    }
                    Some(attempt) => {
                        self.go_idle(ConnectionEvent::LoginTimeout, msg.clone())
                            .await;
                        let _ = attempt
                            .reply
                            .send(Err(ZimError::network(false, format!("login: {msg}"))));
                    }
                    None => self.schedule_reconnect(false).await,
                }
            }
        }
    }

    /// Waits (with backoff) before the next reconnect attempt, or gives up.
    async fn schedule_reconnect(&mut self, first: bool) {
        let config = &self.shared.config;
        let (min, max, give_up) = (
            config.reconnect_min_delay,
            config.reconnect_max_delay,
            config.reconnect_give_up_after,
        );
        let since = self
            .reconnect
            .get_or_insert(Reconnect {
                since: Instant::now(),
                attempt: 0,
            })
            .since;
        if let Some(limit) = give_up {
            if !first && since.elapsed() >= limit {
                self.go_idle(
                    ConnectionEvent::LoginTimeout,
                    format!("no connection for {limit:?}: gave up reconnecting"),
                )
                .await;
                return;
            }
        }
        let Some(rc) = self.reconnect.as_mut() else {
            return;
        };
        let base = min
            .saturating_mul(1u32 << rc.attempt.min(16))
            .min(max)
            .max(Duration::from_millis(1));
        let delay = rand::thread_rng().gen_range(base / 2..=base);
        rc.attempt += 1;
        let attempt = rc.attempt;
        self.log(&format!("reconnect attempt {attempt} in {delay:?}"));
        self.link = Link::Backoff {
            until: Instant::now() + delay,
        };
    }

    async fn on_backoff_done(&mut self) {
        let give_up = self.shared.config.reconnect_give_up_after;
        if let (Some(limit), Some(rc)) = (give_up, self.reconnect.as_ref()) {
            if rc.since.elapsed() >= limit {
                self.go_idle(
                    ConnectionEvent::LoginTimeout,
                    format!("no connection for {limit:?}: gave up reconnecting"),
                )
                .await;
                return;
            }
        }
        self.link = Link::Idle;
        self.connect(None);
    }

    /// The connection broke (or the server asked us to reconnect): requeue what is
    /// safe to resend, fail the rest, and start reconnecting.
    async fn connection_lost(&mut self, why: &str) {
        let old = std::mem::replace(&mut self.link, Link::Idle);
        let Link::Online { ws, .. } = old else {
            self.link = old;
            return;
        };
        close_in_background(ws);
        let why = self
            .disconnect_hint
            .take()
            .unwrap_or_else(|| why.to_owned());
        self.warn(&format!("connection lost: {why}"));
        if self.session.is_none() {
            // A logout was in flight: it is done as far as the app is concerned.
            self.go_idle(ConnectionEvent::Success, "logged out".into())
                .await;
            return;
        }
        let now = Instant::now();
        let mut pending: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        pending.sort_by_key(|p| p.seq);
        for p in pending {
            match p.what {
                Waiting::Call(call) => {
                    if is_retry_safe(&call.request)
                        && now < call.deadline
                        && !call.reply.is_closed()
                    {
                        self.queued.insert(p.seq, call);
                    } else {
                        self.fail_call(call, &format!("the connection was lost ({why})"));
                    }
                }
                Waiting::Logout(reply) => {
                    let _ = reply.send(Ok(()));
                }
                _ => {}
            }
        }
        self.ack_in_flight = false;
        self.heartbeat_in_flight = false;
        let first = self.reconnect.is_none();
        if first {
            self.set_state(
                ConnectionState::Reconnecting,
                ConnectionEvent::LoginInterrupted,
                why,
            )
            .await;
            let rooms: Vec<String> = self.joined.iter().cloned().collect();
            for room in rooms {
                self.emit_room_state(room, RoomState::Connecting, RoomEvent::NetworkInterrupted)
                    .await;
            }
        }
        self.schedule_reconnect(first).await;
    }

    /// Ends the session: no connection, no reconnect, every waiting call answered.
    async fn go_idle(&mut self, event: ConnectionEvent, extended: String) {
        match std::mem::replace(&mut self.link, Link::Idle) {
            Link::Online { ws, .. } => close_in_background(ws),
            Link::Connecting {
                login: Some(attempt),
                ..
            } => {
                let _ = attempt.reply.send(Err(ZimError::new(
                    ErrorCode::NotLoggedIn,
                    "the login was cancelled",
                )));
            }
            _ => {}
        }
        self.session = None;
        self.reconnect = None;
        self.restored.clear();
        self.ack_in_flight = false;
        self.heartbeat_in_flight = false;
        let why = format!("the session ended ({extended})");
        for (_, p) in std::mem::take(&mut self.pending) {
            match p.what {
                Waiting::Call(call) => self.fail_call(call, &why),
                Waiting::Logout(reply) => {
                    let _ = reply.send(Ok(()));
                }
                _ => {}
            }
        }
        for (_, call) in std::mem::take(&mut self.queued) {
            self.fail_call(call, &why);
        }
        let room_event = match event {
            ConnectionEvent::KickedOut => RoomEvent::KickedOut,
            ConnectionEvent::Success => RoomEvent::Success,
            _ => RoomEvent::NetworkDisconnected,
        };
        let rooms = std::mem::take(&mut self.joined);
        self.set_state(ConnectionState::Disconnected, event, extended)
            .await;
        for room in rooms {
            self.emit_room_state(room, RoomState::Disconnected, room_event)
                .await;
        }
    }

    // ----- restoring after a re-login -------------------------------------

    async fn rejoin_rooms(&mut self) {
        if self.session.is_none() {
            // A logout was sent meanwhile.
            return;
        }
        let missing: Vec<String> = self.joined.difference(&self.restored).cloned().collect();
        if missing.is_empty() {
            self.become_ready().await;
            return;
        }
        if let Link::Online { phase, .. } = &mut self.link {
            *phase = Phase::Rejoining {
                left: missing.len(),
            };
        }
        for room in missing {
            let last_seq = self.room_seqs.get(&room).copied().unwrap_or(0);
            let request = Request::JoinRoom(JoinRoomRequest {
                room_id: room.clone(),
                last_seq: Some(last_seq),
            });
            if !self.send_internal(request, Waiting::Rejoin(room)).await {
                return;
            }
        }
    }

    async fn on_rejoined(&mut self, room: String, reply: &Reply) {
        if reply.code.is_success() {
            if let Ok(r) = reply.data_as::<RoomJoinedReply>() {
                self.advance_room_watermark(&room, r.room_seq);
            }
            self.emit_room_state(room, RoomState::Connected, RoomEvent::Success)
                .await;
        } else {
            self.joined.remove(&room);
            let event = match reply.code {
                ErrorCode::RoomJoinNotExist | ErrorCode::RoomNotExist => RoomEvent::RoomNotExist,
                _ => RoomEvent::EnterFailed,
            };
            self.emit_room_state(room, RoomState::Disconnected, event)
                .await;
        }
        let done = match &mut self.link {
            Link::Online {
                phase: Phase::Rejoining { left },
                ..
            } => {
                *left = left.saturating_sub(1);
                *left == 0
            }
            _ => false,
        };
        if done {
            self.become_ready().await;
        }
    }

    async fn become_ready(&mut self) {
        if self.session.is_none() {
            return;
        }
        let Link::Online { phase, .. } = &mut self.link else {
            return;
        };
        *phase = Phase::Ready;
        self.reconnect = None;
        self.set_state(
            ConnectionState::Connected,
            ConnectionEvent::Success,
            "reconnected".into(),
        )
        .await;
        self.flush_queue().await;
    }

    // ----- what the server sends -------------------------------------------

    async fn on_frame(&mut self, frame: Option<Result<WsMessage, tungstenite::Error>>) {
        self.last_received = Instant::now();
        match frame {
            None => {
                self.connection_lost("the connection ended").await;
            }
            Some(Err(e)) => {
                self.connection_lost(&format!("reading from the server failed: {e}"))
                    .await;
            }
            Some(Ok(WsMessage::Text(text))) => match ServerFrame::decode(text.as_str()) {
                Ok(ServerFrame::Reply(reply)) => self.on_reply(reply).await,
                Ok(ServerFrame::Push(push)) => self.on_push(push).await,
                Err(confab_proto::frame::DecodeError::UnknownName { name, .. }) => {
                    // A newer server's push: skip it.
                    self.log(&format!("ignoring unknown push {name}"));
                }
                Err(e) => {
                    self.warn(&format!("unreadable frame from the server: {e}"));
                    self.emit(ZimEvent::Error {
                        code: ErrorCode::Failed,
                        message: format!("unreadable frame from the server: {e}"),
                    })
                    .await;
                }
            },
            Some(Ok(WsMessage::Close(frame))) => {
                let why = match frame {
                    Some(f) => {
                        format!("closed by the server ({}: {})", u16::from(f.code), f.reason)
                    }
                    None => "closed by the server".into(),
                };
                self.connection_lost(&why).await;
            }
            // Pings are answered by tungstenite while reading.
            Some(Ok(_)) => {}
        }
    }

    async fn on_reply(&mut self, reply: Reply) {
        self.log(&format!(
            "reply id={} code={} ({})",
            reply.id,
            reply.code.code(),
            reply.code.name()
        ));
        let Some(pending) = self.pending.remove(&reply.id) else {
            // A reply after its call's deadline: the call was already answered.
            return;
        };
        match pending.what {
            Waiting::Call(call) => {
                let result = if reply.code.is_success() {
                    self.after_success(&call.request, &reply).await;
                    Ok(reply)
                } else {
                    Err(ZimError::new(reply.code, reply.message))
                };
                let _ = call.reply.send(result);
            }
            Waiting::Logout(done) => {
                self.go_idle(ConnectionEvent::Success, "logged out".into())
                    .await;
                let _ = done.send(Ok(()));
            }
            Waiting::Barrier => self.rejoin_rooms().await,
            Waiting::Rejoin(room) => self.on_rejoined(room, &reply).await,
            Waiting::Ack(seq) => {
                self.ack_in_flight = false;
                if reply.code.is_success() {
                    self.acked_inbox_seq = self.acked_inbox_seq.max(seq);
                } else {
                    self.emit(ZimEvent::Error {
                        code: reply.code,
                        message: format!("ackInbox {seq} was refused: {}", reply.message),
                    })
                    .await;
                }
            }
            Waiting::Heartbeat => self.heartbeat_in_flight = false,
        }
    }

    /// Bookkeeping after a call succeeded.
    async fn after_success(&mut self, request: &Request, reply: &Reply) {
        match request {
            Request::RenewToken(r) => self.update_token(&r.token),
            Request::CreateRoom(_) | Request::JoinRoom(_) | Request::EnterRoom(_) => {
                let Ok(joined) = reply.data_as::<RoomJoinedReply>() else {
                    return;
                };
                let room = joined.room_info.room_id;
                self.advance_room_watermark(&room, joined.room_seq);
                self.joined.insert(room.clone());
                let event = if joined.created {
                    RoomEvent::ActiveCreate
                } else {
                    RoomEvent::ActiveEnter
                };
                self.emit_room_state(room, RoomState::Connected, event)
                    .await;
            }
            Request::LeaveRoom(r) => {
                self.room_seqs.remove(&r.room_id);
                self.room_seen.remove(&r.room_id);
                self.emit_room_state(
                    r.room_id.clone(),
                    RoomState::Disconnected,
                    RoomEvent::Success,
                )
                .await;
            }
            Request::SendRoomMessage(r) => {
                // The server never pushes our own messages back live: count them as
                // seen so the room's watermark can move past them.
                if let Ok(sent) = reply.data_as::<confab_proto::frame::SendMessageReply>() {
                    if sent.conversation_seq > 0 {
                        self.mark_room_seq(&r.room_id, sent.conversation_seq);
                    }
                }
            }
            _ => {}
        }
    }

    async fn on_push(&mut self, push: Push) {
        match push {
            Push::ReceivePeerMessage(p) => {
                let me = self.me();
                let total = p.message_list.len();
                let mut list = Vec::with_capacity(total);
                for m in p.message_list {
                    if let Some(seq) = m.inbox_seq {
                        if self.last_inbox_seq.is_some_and(|last| seq <= last) {
                            continue;
                        }
                        self.last_inbox_seq = Some(seq);
                    }
                    list.push(Message::from_wire(m, &me));
                }
                self.log(&format!(
                    "push receivePeerMessage fromUserID={} count={total} new={} lastInboxSeq={:?}",
                    p.from_user_id,
                    list.len(),
                    self.last_inbox_seq
                ));
                if !list.is_empty() {
                    self.emit(ZimEvent::ReceivePeerMessage {
                        message_list: list,
                        from_user_id: p.from_user_id,
                    })
                    .await;
                }
            }
            Push::SyncComplete(s) => {
                self.log(&format!("push syncComplete inboxSeq={}", s.inbox_seq));
                self.last_inbox_seq = Some(self.last_inbox_seq.unwrap_or(0).max(s.inbox_seq));
            }
            Push::SyncGap(g) => {
                self.warn(&format!(
                    "push syncGap {}..={}",
                    g.from_inbox_seq, g.to_inbox_seq
                ));
                self.last_inbox_seq = Some(self.last_inbox_seq.unwrap_or(0).max(g.to_inbox_seq));
                self.emit(ZimEvent::PeerMessageGap {
                    from_inbox_seq: g.from_inbox_seq,
                    to_inbox_seq: g.to_inbox_seq,
                })
                .await;
            }
            Push::Disconnect(d) => {
                let reason = reason_name(d.reason);
                self.warn(&format!(
                    "push disconnect reason={reason} reconnect={}",
                    d.reconnect
                ));
                let extended = format!("{reason}: {}", d.message);
                if d.reconnect {
                    self.disconnect_hint = Some(extended);
                } else {
                    let event = match d.reason {
                        DisconnectReason::KickedOut => ConnectionEvent::KickedOut,
                        DisconnectReason::TokenExpired => ConnectionEvent::TokenExpired,
                        DisconnectReason::Logout => ConnectionEvent::Success,
                        _ => ConnectionEvent::LoginInterrupted,
                    };
                    self.go_idle(event, extended).await;
                }
            }
            Push::TokenWillExpire(t) => {
                self.log(&format!("push tokenWillExpire second={}", t.second));
                self.emit(ZimEvent::TokenWillExpire { second: t.second })
                    .await;
            }
            Push::ReceiveRoomMessage(r) => {
                let me = self.me();
                let total = r.message_list.len();
                let mut list = Vec::with_capacity(total);
                for m in r.message_list {
                    if m.conversation_seq > 0
                        && !self.mark_room_seq(&r.from_room_id, m.conversation_seq)
                    {
                        continue;
                    }
                    // The server replays the sender's own stored messages during a
                    // room catch-up; the sender already has them.
                    if m.sender_user_id == me {
                        continue;
                    }
                    list.push(Message::from_wire(m, &me));
                }
                let last = self.room_seqs.get(&r.from_room_id).copied().unwrap_or(0);
                self.log(&format!(
                    "push receiveRoomMessage roomID={} count={total} new={} lastSeq={last}",
                    r.from_room_id,
                    list.len()
                ));
                if !list.is_empty() {
                    self.emit(ZimEvent::ReceiveRoomMessage {
                        message_list: list,
                        from_room_id: r.from_room_id,
                    })
                    .await;
                }
            }
            Push::RoomMemberJoined(m) => {
                self.log(&format!(
                    "push roomMemberJoined roomID={} count={}",
                    m.room_id,
                    m.member_list.len()
                ));
                self.emit(ZimEvent::RoomMemberJoined {
                    member_list: m.member_list,
                    room_id: m.room_id,
                })
                .await;
            }
            Push::RoomMemberLeft(m) => {
                self.log(&format!(
                    "push roomMemberLeft roomID={} count={}",
                    m.room_id,
                    m.member_list.len()
                ));
                self.emit(ZimEvent::RoomMemberLeft {
                    member_list: m.member_list,
                    room_id: m.room_id,
                })
                .await;
            }
            Push::RoomStateChanged(s) => {
                let (Some(state), Some(event)) =
                    (RoomState::from_code(s.state), RoomEvent::from_code(s.event))
                else {
                    self.warn(&format!(
                        "push roomStateChanged with unknown state {} / event {}",
                        s.state, s.event
                    ));
                    return;
                };
                match state {
                    RoomState::Connected => {
                        self.joined.insert(s.room_id.clone());
                        self.restored.insert(s.room_id.clone());
                        self.room_seqs
                            .entry(s.room_id.clone())
                            .or_insert(s.room_seq);
                    }
                    RoomState::Disconnected => {
                        self.joined.remove(&s.room_id);
                    }
                    RoomState::Connecting => {}
                }
                self.emit_room_state(s.room_id, state, event).await;
            }
            Push::RoomAttributesUpdated(u) => {
                self.log(&format!("push roomAttributesUpdated roomID={}", u.room_id));
                self.emit(ZimEvent::RoomAttributesUpdated {
                    room_id: u.room_id,
                    infos: u.infos,
                })
                .await;
            }
            Push::RoomAttributesBatchUpdated(u) => {
                self.log(&format!(
                    "push roomAttributesBatchUpdated roomID={}",
                    u.room_id
                ));
                self.emit(ZimEvent::RoomAttributesBatchUpdated {
                    room_id: u.room_id,
                    infos: u.infos,
                })
                .await;
            }
            Push::RoomSyncGap(g) => {
                self.warn(&format!(
                    "push roomSyncGap roomID={} {}..={}",
                    g.room_id, g.from_seq, g.to_seq
                ));
                self.advance_room_watermark(&g.room_id, g.to_seq);
                self.emit(ZimEvent::RoomMessageGap {
                    room_id: g.room_id,
                    from_seq: g.from_seq,
                    to_seq: g.to_seq,
                })
                .await;
            }
            other => self.log(&format!("ignoring push {}", other.name())),
        }
    }

    // ----- timers ------------------------------------------------------------

    async fn on_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .queued
            .iter()
            .filter(|(_, c)| now >= c.deadline || c.reply.is_closed())
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            if let Some(call) = self.queued.remove(&seq) {
                let limit = self.timeout();
                self.fail_call(call, &format!("no connection within {limit:?}"));
            }
        }
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(id, _)| *id)
            .collect();
        let mut dead = false;
        let quiet = now.duration_since(self.last_received) >= self.timeout();
        for id in expired {
            let Some(mut p) = self.pending.remove(&id) else {
                continue;
            };
            match p.what {
                Waiting::Call(call) => {
                    let limit = self.timeout();
                    self.fail_call(call, &format!("no reply within {limit:?}"));
                }
                Waiting::Logout(done) => {
                    self.go_idle(
                        ConnectionEvent::Success,
                        "logged out (the server did not answer)".into(),
                    )
                    .await;
                    let _ = done.send(Ok(()));
                    return;
                }
                // The engine's own requests: the connection is dead only if the
                // server has been silent too; otherwise the reply is just queued
                // behind other frames.
                _ if quiet => dead = true,
                _ => {
                    p.deadline = now + self.timeout();
                    self.pending.insert(id, p);
                }
            }
        }
        if dead {
            self.connection_lost("the server stopped answering").await;
            return;
        }
        let heartbeat = self.shared.config.heartbeat_interval;
        let idle = match &self.link {
            Link::Online { last_sent, .. } => now.duration_since(*last_sent) >= heartbeat,
            _ => false,
        };
        if idle && !self.heartbeat_in_flight {
            self.heartbeat_in_flight = true;
            if !self
                .send_internal(Request::Ping(Empty {}), Waiting::Heartbeat)
                .await
            {
                return;
            }
        }
        if self.is_ready()
            && !self.ack_in_flight
            && now.duration_since(self.last_ack) >= self.shared.config.ack_interval
        {
            if let Some(seq) = self.last_inbox_seq.filter(|s| *s > self.acked_inbox_seq) {
                self.ack_in_flight = true;
                self.last_ack = now;
                self.send_internal(
                    Request::AckInbox(AckInboxRequest { inbox_seq: seq }),
                    Waiting::Ack(seq),
                )
                .await;
            }
        }
    }

    /// The instance is destroyed: close, and answer everything with 6000002.
    fn stop(&mut self) {
        self.log("destroyed");
        match std::mem::replace(&mut self.link, Link::Idle) {
            Link::Online { ws, .. } => close_in_background(ws),
            Link::Connecting {
                login: Some(attempt),
                ..
            } => {
                let _ = attempt.reply.send(Err(ZimError::destroyed()));
            }
            _ => {}
        }
        for (_, p) in std::mem::take(&mut self.pending) {
            match p.what {
                Waiting::Call(call) => {
                    let _ = call.reply.send(Err(ZimError::destroyed()));
                }
                Waiting::Logout(done) => {
                    let _ = done.send(Err(ZimError::destroyed()));
                }
                _ => {}
            }
        }
        for (_, call) in std::mem::take(&mut self.queued) {
            let _ = call.reply.send(Err(ZimError::destroyed()));
        }
        self.cmds.close();
        while let Ok(cmd) = self.cmds.try_recv() {
            let reply = match cmd {
                Command::Login { reply, .. } | Command::Logout { reply } => {
                    let _ = reply.send(Err(ZimError::destroyed()));
                    continue;
                }
                Command::Call(call) => call.reply,
            };
            let _ = reply.send(Err(ZimError::destroyed()));
        }
        let was = self.shared.state();
        self.shared
            .state
            .store(ConnectionState::Disconnected.code(), Ordering::SeqCst);
        if was != ConnectionState::Disconnected {
            // Best effort: the app may have stopped draining.
            let _ = self.events.try_send(ZimEvent::ConnectionStateChanged {
                state: ConnectionState::Disconnected,
                event: ConnectionEvent::Success,
                extended: "destroyed".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_seqs_arriving_out_of_order_are_delivered_once() {
        let (mut last, mut seen) = (0, BTreeSet::new());
        // Messages of one room relayed by two nodes: 2 arrives before 1.
        assert!(mark_seq(&mut last, &mut seen, 2));
        assert_eq!(last, 0);
        assert!(mark_seq(&mut last, &mut seen, 1));
        assert_eq!(last, 2, "the watermark moves over the filled gap");
        assert!(seen.is_empty());
        assert!(
            !mark_seq(&mut last, &mut seen, 1),
            "a duplicate below the watermark"
        );
        assert!(mark_seq(&mut last, &mut seen, 5));
        assert!(
            !mark_seq(&mut last, &mut seen, 5),
            "a duplicate above the watermark"
        );
        assert!(mark_seq(&mut last, &mut seen, 4));
        assert!(mark_seq(&mut last, &mut seen, 3));
        assert_eq!(last, 5);
        // A gap that never fills is given up on once too much is waiting behind it.
        for seq in 7..(7 + ROOM_SEEN_MAX as u64 + 1) {
            assert!(mark_seq(&mut last, &mut seen, seq));
        }
        assert!(last >= 7, "watermark {last}");
        assert!(seen.len() <= ROOM_SEEN_MAX);
    }
    use confab_proto::frame::{MessageType, Priority, SendPeerMessageRequest};

    #[test]
    fn only_safe_requests_are_resent() {
        let send = |kind| {
            Request::SendPeerMessage(SendPeerMessageRequest {
                to_user_id: "bob".into(),
                kind,
                message: "secret body".into(),
                local_message_id: 7,
                priority: Priority::Low,
            })
        };
        assert!(is_retry_safe(&send(MessageType::Text)));
        assert!(!is_retry_safe(&send(MessageType::Command)));
        assert!(is_send(&send(MessageType::Command)));
        assert!(!is_retry_safe(&Request::Logout(Empty {})));
        let text = describe(&send(MessageType::Text));
        assert!(!text.contains("secret"), "{text}");
        assert_eq!(reason_name(DisconnectReason::KickedOut), "kickedOut");
    }
}
