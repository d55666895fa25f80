//! One WebSocket connection, from upgrade to close: login, the token's lifetime,
//! heartbeats, requests, and delivery of what the hub hands it.
//!
//! A session is one task that owns the read half of the socket and a [`Outbox`]
//! feeding a writer task (which runs only while there is something to write).
//! Requests are answered in order; a durable send is answered only after the
//! store has committed it, which is what makes the reply an acknowledgement
//! (with a store that keeps call order, up to 64 of them are in flight at once,
//! and any other request waits for them).
//!
//! Invariant: a session delivers stored peer messages to its client in inbox order,
//! each once: live publications below the delivered position are skipped, and a
//! publication beyond the next position makes the session fill the gap from the
//! store first.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use confab_proto::ErrorCode;
use confab_proto::frame::{
    AckInboxRequest, ConversationType, Disconnect, DisconnectReason, Empty, LoginReply,
    LoginRequest, Message as WireMessage, MessageType, Push, ReceivePeerMessage, RenewTokenReply,
    RenewTokenRequest, Reply, Request, RequestFrame, SendMessageReply, SendPeerMessageRequest,
    SyncComplete, SyncGap, TokenWillExpire, encode_push,
};
use confab_store::StoredPeerMessage;
use tokio::time::Instant;

mod rooms;

use std::collections::BTreeSet;

use crate::envelope::{Envelope, user_topic};
use crate::hub::{Event, SessionLink};
use crate::send::{self, Outgoing, StoredSends, Target};
use crate::state::{App, ConnectionGuard, Metrics, Shared};
use crate::validate;
use crate::wire::wire_peer;
use confab_conn::outbox::{self, Class, Outbox, Slow};
use confab_conn::queue;
use confab_conn::ws::{self, Incoming, ReadError, SocketReader, Utf8Bytes};

/// Messages fetched from the store per page during catch-up.
const CATCH_UP_PAGE: usize = 256;
/// Bytes of message bodies per catch-up frame (a frame must fit the outbound queue).
const CATCH_UP_FRAME_BYTES: usize = 64 * 1024;
/// How many times a session's catch-up after a broker outage reads a failing
/// store before it leaves the rest to the next publication or reconnect.
const CATCH_UP_TRIES: u8 = 5;
/// Unstored sends remembered per session for idempotent retries.
const LIVE_DEDUP: usize = 256;

/// Why a session ends, when the server ends it.
type Ending = Option<(DisconnectReason, String)>;

struct LoggedIn {
    app: Arc<App>,
    user_id: String,
    user_name: String,
    topic: String,
    /// Expiry of the current token, Unix seconds.
    token_expire: i64,
    /// Whether `tokenWillExpire` was pushed for the current token.
    warned: bool,
    /// The highest inbox position delivered to the client.
    delivered: u64,
}

/// Runs a connection to its end.
///
/// Not an `async fn`: the socket is split before the future is made, so the
/// future (which every idle connection keeps) holds the halves only, not the
/// socket it was given as well.
pub(crate) fn run(
    connection: ConnectionGuard,
    mut stream: SocketReader,
    sink: ws::SocketWriter,
) -> impl Future<Output = ()> + Send {
    let shared = Arc::clone(connection.shared());
    let limits = &shared.config.limits;
    let (outbox, closer) = outbox::start(
        sink,
        limits.outbound_queue_frames,
        limits.outbound_queue_bytes,
    );
    let (events_tx, events_rx) = queue::bounded(limits.outbound_queue_frames);
    let mut session = Session {
        id: shared.next_session_id(),
        shared,
        outbox,
        login: None,
        events_tx,
        events_rx,
        live_sent: VecDeque::new(),
        rooms: BTreeSet::new(),
        unsubscribed_rooms: Vec::new(),
        pending_end: None,
        login_ms: 0,
        sends: StoredSends::default(),
    };
    // An async block, not an `async fn`: the arguments of an `async fn` are
    // kept twice in its future, as arguments and as locals.
    async move {
        let ending = session.serve(&mut stream).await;
        let server_closed = ending.is_some();
        // Boxed, as what follows: the task's future is as large as its largest
        // state, and it spends its life in `serve`.
        Box::pin(session.finish(ending)).await;
        if let Some(code) = stream.close_received() {
            // Answer the client's close frame, repeating its status code.
            Box::pin(session.outbox.close(code.unwrap_or(1000), String::new())).await;
        }
        drop(session);
        Box::pin(closer.finish()).await;
        if server_closed {
            // Complete the closing handshake: read until the client's close frame
            // (or a short timeout), so the socket is not reset under data the
            // client has not read yet, such as the `disconnect` push that says why.
            let _ = Box::pin(tokio::time::timeout(
                Duration::from_secs(2),
                stream.wait_for_close(),
            ))
            .await;
        }
        // Only now, with the socket written and closed, is the connection
        // gone: a server that waits for its connections to end (shutdown)
        // must not exit under a `disconnect` push still being written.
        drop(connection);
    }
}

struct Session {
    id: u64,
    shared: Arc<Shared>,
    outbox: Outbox,
    login: Option<LoggedIn>,
    /// Publications and kills from the hub (see [`Event`]).
    events_tx: queue::Sender<Event>,
    events_rx: queue::Receiver<Event>,
    /// Recent unstored sends: (localMessageID, reply), for idempotent retries.
    live_sent: VecDeque<(u64, SendMessageReply)>,
    /// Rooms this connection is attached to (a member receiving live messages).
    rooms: BTreeSet<String>,
    /// Of those, the rooms whose broker subscription failed (the broker was
    /// down): subscribed when it is back (see `catch_up`), and never
    /// unsubscribed, since they hold no count.
    unsubscribed_rooms: Vec<String>,
    /// An ending decided inside a request that still answers normally (a failed
    /// room catch-up): applied after the reply.
    pending_end: Ending,
    /// When this session logged in (ms): a kick only removes older sessions.
    login_ms: i64,
    /// Stored sends (peer and room) in flight, oldest first (see `send`).
    sends: StoredSends,
}

fn slow() -> Ending {
    Some((
        DisconnectReason::SlowConsumer,
        "the connection could not keep up with its messages; reconnect to catch up".into(),
    ))
}

impl Session {
    /// How the hub reaches this session.
    fn link(&self) -> SessionLink {
        SessionLink {
            id: self.id,
            events: self.events_tx.clone(),
            outbox: self.outbox.clone(),
            user_id: self
                .login
                .as_ref()
                .map(|l| l.user_id.clone())
                .unwrap_or_default(),
        }
    }

    /// The first reply of an unstored send with this localMessageID, if recent.
    fn live_duplicate(&self, local_message_id: u64) -> Option<SendMessageReply> {
        self.live_sent
            .iter()
            .find(|(local, _)| *local == local_message_id)
            .map(|(_, reply)| reply.clone())
    }

    fn remember_live(&mut self, local_message_id: u64, reply: SendMessageReply) {
        if self.live_sent.len() >= LIVE_DEDUP {
            self.live_sent.pop_front();
        }
        self.live_sent.push_back((local_message_id, reply));
    }

    /// The server's limits (connection-level settings: timeouts, heartbeats,
    /// frame size), whatever app the session logs in to.
    fn server_limits(&self) -> &crate::config::Limits {
        &self.shared.config.limits
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.server_limits().idle_timeout_secs)
    }

    fn ping_every(&self) -> Duration {
        Duration::from_secs(self.server_limits().ping_interval_secs)
    }

    fn limits(&self) -> &crate::config::Limits {
        self.login
            .as_ref()
            .map_or(&self.shared.config.limits, |l| &l.app.limits)
    }

    /// When the current token should be warned about and when it expires.
    fn token_deadlines(&self) -> Option<(Instant, Instant)> {
        let login = self.login.as_ref()?;
        let now_ms = self.shared.clock.now_ms();
        let until = |unix_ms: i64| {
            Instant::now() + Duration::from_millis(u64::try_from(unix_ms - now_ms).unwrap_or(0))
        };
        let expire_ms = login.token_expire.saturating_mul(1000);
        let warn_ms =
            expire_ms - i64::try_from(self.limits().token_warning_secs * 1000).unwrap_or(0);
        Some((until(warn_ms), until(expire_ms)))
    }

    /// Serves the connection until it ends. Every deadline (login, idle, ping,
    /// token warning and expiry) shares one timer, set to the earliest: the
    /// future that waits for an idle client stays small.
    async fn serve(&mut self, stream: &mut SocketReader) -> Ending {
        // Settings are read where they are used and deadlines worked out
        // before each wait, not kept across it: every idle connection's future
        // holds what lives across the wait.
        let login_deadline =
            Instant::now() + Duration::from_secs(self.server_limits().login_timeout_secs);
        let mut idle_at = Instant::now() + self.idle_timeout();
        let mut ping_at = Instant::now() + self.ping_every();
        let timer = tokio::time::sleep_until(ping_at);
        tokio::pin!(timer);
        let mut shutdown = self.shared.shutdown.clone();
        if *shutdown.borrow() {
            return Some((
                DisconnectReason::ServerShutdown,
                "the server is shutting down".into(),
            ));
        }
        loop {
            let logged_in = self.login.is_some();
            let warned = self.login.as_ref().is_some_and(|l| l.warned);
            {
                // Token deadlines only while logged in; the login deadline before.
                let (warn_at, expire_at) = self.token_deadlines().unwrap_or((idle_at, idle_at));
                let mut wake = idle_at.min(ping_at);
                if !logged_in {
                    wake = wake.min(login_deadline);
                } else {
                    if !warned {
                        wake = wake.min(warn_at);
                    }
                    wake = wake.min(expire_at);
                }
                if timer.deadline() != wake {
                    timer.as_mut().reset(wake);
                }
            }
            let has_sends = !self.sends.is_empty();
            tokio::select! {
                biased;
                Some(event) = self.events_rx.recv() => {
                    match event {
                        Event::Kill(DisconnectReason::SlowConsumer) => return slow(),
                        Event::Kill(reason) => {
                            return Some((reason, "disconnected by the server".into()));
                        }
                        Event::Envelope(envelope) if logged_in => {
                            if let Some(end) = Box::pin(self.on_envelope(envelope)).await {
                                return Some(end);
                            }
                            // Publications are rare per user: keep no room between them.
                            self.events_rx.shrink_if_empty(0);
                        }
                        Event::CatchUp(attempt) if logged_in => {
                            if let Some(end) = Box::pin(self.catch_up(attempt)).await {
                                return Some(end);
                            }
                        }
                        // Publications for a login that has ended: the next login
                        // catches up from the store.
                        Event::Envelope(_) | Event::CatchUp(_) => {}
                    }
                }
                _ = shutdown.changed() => {
                    return Some((DisconnectReason::ServerShutdown, "the server is shutting down; reconnect".into()));
                }
                // Before new requests: other senders' room messages may wait for
                // these to be published.
                done = self.sends.next(), if has_sends => {
                    let reply = Box::pin(send::finish(&self.shared, *done)).await;
                    if let Some(end) = self.reply(&reply) {
                        return Some(end);
                    }
                }
                msg = stream.next() => {
                    idle_at = Instant::now() + self.idle_timeout();
                    match msg {
                        None | Some(Ok(Incoming::Close(_))) => return None,
                        Some(Err(ReadError::TooLarge { .. })) => {
                            return Some((DisconnectReason::FrameTooLarge, format!(
                                "a frame exceeded the limit of {} bytes",
                                self.server_limits().max_frame_bytes
                            )));
                        }
                        Some(Err(ReadError::Protocol(problem))) => {
                            return Some((DisconnectReason::ProtocolError, problem.to_owned()));
                        }
                        Some(Err(e @ ReadError::Io(_))) => {
                            tracing::debug!(session = self.id, error = %e, "read failed");
                            return None;
                        }
                        Some(Ok(Incoming::Text(text))) => {
                            // Boxed: a request's future is large and short-lived; the
                            // session's own future stays small while it waits.
                            if let Some(end) = Box::pin(self.handle_text(text.as_str())).await {
                                return Some(end);
                            }
                        }
                        Some(Ok(Incoming::Binary)) => {
                            return Some((DisconnectReason::ProtocolError,
                                "binary frames are not part of the protocol; send JSON text frames".into()));
                        }
                        Some(Ok(Incoming::Ping(payload))) => self.outbox.pong(payload),
                        Some(Ok(Incoming::Pong)) => {}
                    }
                }
                () = &mut timer => {
                    // Deadlines first: one that passed counts as now, and `now`
                    // must not be earlier than it.
                    let (warn_at, expire_at) = self.token_deadlines().unwrap_or((idle_at, idle_at));
                    let now = Instant::now();
                    if now >= ping_at {
                        self.outbox.ping();
                        self.events_rx.shrink_if_empty(0);
                        ping_at = now + self.ping_every();
                    }
                    if now >= idle_at {
                        return Some((DisconnectReason::HeartbeatTimeout, format!(
                            "nothing heard from the client for {} s",
                            self.server_limits().idle_timeout_secs
                        )));
                    }
                    if !logged_in && now >= login_deadline {
                        return Some((DisconnectReason::LoginTimeout, format!(
                            "no login within {} s of connecting",
                            self.server_limits().login_timeout_secs
                        )));
                    }
                    if logged_in && !warned && now >= warn_at {
                        let left = self.login.as_ref().map_or(0, |l| l.token_expire - self.shared.clock.now_secs());
                        let push = Push::TokenWillExpire(TokenWillExpire { second: u64::try_from(left).unwrap_or(0) });
                        if self.push(&push, Class::Keep).is_err() {
                            return slow();
                        }
                        if let Some(l) = self.login.as_mut() {
                            l.warned = true;
                        }
                    }
                    if logged_in && now >= expire_at {
                        return Some((DisconnectReason::TokenExpired, "the token expired; log in again with a new token".into()));
                    }
                }
            }
        }
    }

    /// Pushes a frame; `Err` means the client is too slow.
    fn push(&self, push: &Push, class: Class) -> Result<bool, Slow> {
        self.outbox.push(Utf8Bytes::from(encode_push(push)), class)
    }

    fn reply(&self, reply: &Reply) -> Ending {
        match self
            .outbox
            .push(Utf8Bytes::from(reply.encode()), Class::Keep)
        {
            Ok(_) => None,
            Err(Slow) => slow(),
        }
    }

    fn error(&self, id: u64, code: ErrorCode, message: impl Into<String>) -> Ending {
        self.reply(&Reply::error(id, code, message))
    }

    async fn handle_text(&mut self, text: &str) -> Ending {
        let end = self.handle_request(text).await;
        end.or_else(|| self.pending_end.take())
    }

    async fn handle_request(&mut self, text: &str) -> Ending {
        let frame = match RequestFrame::decode(text) {
            Ok(frame) => frame,
            Err(e) => {
                return self
                    .refuse(e.id.unwrap_or(0), ErrorCode::ParamInvalid, e.to_string())
                    .await;
            }
        };
        let id = frame.id;
        let stored_send = match &frame.request {
            Request::SendPeerMessage(r) => r.kind.is_stored(),
            Request::SendRoomMessage(r) => r.kind.is_stored(),
            _ => false,
        };
        if !stored_send {
            // Everything else sees the stored sends before it answered first.
            if let Some(end) = self.drain_sends().await {
                return Some(end);
            }
        }
        match (self.login.is_some(), frame.request) {
            (false, Request::Login(req)) => self.login(id, req).await,
            (false, other) => self.error(
                id,
                ErrorCode::NotLoggedIn,
                format!("{} needs a login: send login first", other.name()),
            ),
            (true, Request::Login(_)) => self.error(
                id,
                ErrorCode::AlreadyLoggedIn,
                "this connection is already logged in",
            ),
            (true, Request::Logout(_)) => {
                let end = self.reply(&Reply::ok(id, &Empty {}));
                end.or_else(|| Some((DisconnectReason::Logout, "logged out".into())))
            }
            (true, Request::Ping(_)) => self.reply(&Reply::ok(id, &Empty {})),
            (true, Request::RenewToken(req)) => self.renew(id, &req),
            (true, Request::SendPeerMessage(req)) => self.send_peer(id, req).await,
            (true, Request::AckInbox(req)) => self.ack(id, req).await,
            (true, Request::CreateRoom(req)) => self.create_room(id, req).await,
            (true, Request::JoinRoom(req)) => self.join_room(id, req).await,
            (true, Request::EnterRoom(req)) => self.enter_room(id, req).await,
            (true, Request::LeaveRoom(req)) => self.leave_room(id, req).await,
            (true, Request::QueryRoomMemberList(req)) => self.query_members(id, req).await,
            (true, Request::QueryRoomOnlineMemberCount(req)) => self.query_count(id, req).await,
            (true, Request::SetRoomAttributes(req)) => self.set_attributes(id, req).await,
            (true, Request::DeleteRoomAttributes(req)) => self.delete_attributes(id, req).await,
            (true, Request::BatchRoomAttributes(req)) => self.batch_attributes(id, req).await,
            (true, Request::QueryRoomAllAttributes(req)) => self.query_attributes(id, req).await,
            (true, Request::SendRoomMessage(req)) => self.send_room(id, req).await,
            (true, Request::QueryHistoryMessage(req)) => self.query_history(id, req).await,
            (true, other) => self.error(
                id,
                ErrorCode::ParamInvalid,
                format!("op {} is not handled by this server", other.name()),
            ),
        }
    }

    async fn login(&mut self, id: u64, req: LoginRequest) -> Ending {
        let shared = self.shared.clone();
        let fail = |code: ErrorCode, message: String| {
            Metrics::inc(&shared.metrics.login_failures_total);
            Reply::error(id, code, message)
        };
        let Some(app) = shared.apps.get(&req.app_id).cloned() else {
            return self.reply(&fail(
                ErrorCode::InvalidAppId,
                format!("appID {} is not configured on this server", req.app_id),
            ));
        };
        let now = shared.clock.now_secs();
        let claims = match confab_token::verify(&req.token, &app.secret, app.id, &req.user_id, now)
        {
            Ok(claims) => claims,
            Err(e) => return self.reply(&fail(e.code(), format!("token: {e}"))),
        };
        if let Err(msg) = validate::user_id("userID", &req.user_id)
            .and_then(|()| validate::name("userName", &req.user_name))
        {
            return self.reply(&fail(ErrorCode::ParamInvalid, msg));
        }
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            tracing::error!(app = app.id, error = %e, "login failed: {what}");
            fail(
                ErrorCode::LoginInternalError,
                format!("login failed: {what}"),
            )
        };
        let store = &shared.store;
        if let Err(e) = store
            .touch_user(app.id, &req.user_id, &req.user_name, shared.clock.now_ms())
            .await
        {
            return self.reply(&internal("the store is unavailable", &e));
        }
        // Become the user's one session: register, listen, and kick the others —
        // before reading the inbox, so a message stored meanwhile is either in what
        // we read or arrives as a publication (duplicates are skipped by position).
        let topic = user_topic(app.id, &req.user_id);
        let mut link = self.link();
        link.user_id.clone_from(&req.user_id);
        shared.hub.insert(app.id, &req.user_id, link);
        if let Err(e) = shared.broker.subscribe(&topic).await {
            shared.hub.remove(app.id, &req.user_id, self.id);
            return self.reply(&internal("the broker is unavailable", &e));
        }
        let login_ms = shared.clock.now_ms();
        self.login_ms = login_ms;
        let kick = Envelope::Kick {
            session_id: self.id,
            login_ms,
        };
        if let Err(e) = shared.broker.publish(&topic, kick.encode()).await {
            tracing::warn!(error = %e, "could not publish the kick of older sessions");
        }

        // Resume position: the client's word (which also acknowledges), else the
        // last acknowledged one; never beyond the inbox's head.
        let resume = async {
            let claimed = match req.last_inbox_seq {
                Some(seq) => seq,
                None => store.inbox_acked(app.id, &req.user_id).await?,
            };
            // One read serves both: past the head the page is empty anyway.
            let first = store
                .inbox_after(app.id, &req.user_id, claimed, CATCH_UP_PAGE)
                .await?;
            let cursor = claimed.min(first.head);
            if req.last_inbox_seq.is_some() {
                store.ack_inbox(app.id, &req.user_id, cursor).await?;
            }
            Ok::<_, confab_store::StoreError>((cursor, first))
        };
        let (cursor, first) = match resume.await {
            Ok(x) => x,
            Err(e) => {
                shared.hub.remove(app.id, &req.user_id, self.id);
                if let Err(e) = shared.broker.unsubscribe(&topic).await {
                    tracing::warn!(error = %e, "unsubscribe failed");
                }
                return self.reply(&internal("the store is unavailable", &e));
            }
        };
        Metrics::inc(&shared.metrics.logins_total);

        let head = first.head;
        let reply = LoginReply {
            user_id: req.user_id.clone(),
            server_time: shared.clock.now_ms(),
            token_expire: claims.expire,
            inbox_seq: head,
            heartbeat_interval_ms: shared.config.limits.ping_interval_secs * 1000,
        };
        self.login = Some(LoggedIn {
            app,
            user_id: req.user_id,
            user_name: req.user_name,
            topic,
            token_expire: claims.expire,
            warned: false,
            delivered: cursor.min(head),
        });
        if let Some(end) = self.reply(&Reply::ok(id, &reply)) {
            return Some(end);
        }
        tracing::debug!(session = self.id, "logged in");
        // Catch up: everything after the cursor, in order, then syncComplete.
        if let Some(end) = self.deliver_page(first).await {
            return Some(end);
        }
        if let Some(end) = self.fill_to(head).await {
            return Some(end);
        }
        let delivered = self.login.as_ref().map_or(0, |l| l.delivered);
        if self
            .push(
                &Push::SyncComplete(SyncComplete {
                    inbox_seq: delivered,
                }),
                Class::Keep,
            )
            .is_err()
        {
            return slow();
        }
        // Rooms kept through the reconnect grace period come back.
        self.restore_rooms(&req.room_seqs).await
    }

    /// Pushes a page of stored messages (announcing a gap first if retention removed
    /// some), grouped by sender, and advances `delivered`.
    async fn deliver_page(&mut self, page: confab_store::InboxPage) -> Ending {
        let login = self.login.as_mut()?;
        let next = login.delivered + 1;
        if page.first_held > next && next <= page.head {
            let to = (page.first_held - 1).min(page.head);
            login.delivered = to;
            let gap = Push::SyncGap(SyncGap {
                from_inbox_seq: next,
                to_inbox_seq: to,
            });
            if self.push_paced(&gap).await.is_err() {
                return slow();
            }
        }
        let login = self.login.as_mut()?;
        let mut messages: Vec<StoredPeerMessage> = page
            .messages
            .into_iter()
            .filter(|m| m.inbox_seq > login.delivered)
            .collect();
        if let Some(last) = messages.last() {
            login.delivered = last.inbox_seq;
        }
        while !messages.is_empty() {
            // One frame per run of one sender, cut at CATCH_UP_FRAME_BYTES.
            let sender = messages[0].sender.clone();
            let mut bytes = 0;
            let run = messages
                .iter()
                .take_while(|m| {
                    bytes += m.body.len();
                    m.sender == sender && (bytes <= CATCH_UP_FRAME_BYTES || bytes == m.body.len())
                })
                .count()
                .max(1);
            let batch: Vec<WireMessage> = messages.drain(..run).map(wire_peer).collect();
            let push = Push::ReceivePeerMessage(ReceivePeerMessage {
                message_list: batch,
                from_user_id: sender,
            });
            if self.push_paced(&push).await.is_err() {
                return slow();
            }
        }
        None
    }

    /// Queues a catch-up push, paced by the client's reading (see [`Outbox::push_paced`]).
    async fn push_paced(&self, push: &Push) -> Result<(), Slow> {
        let patience = Duration::from_secs(self.limits().idle_timeout_secs);
        self.outbox
            .push_paced(Utf8Bytes::from(encode_push(push)), patience)
            .await
    }

    /// Delivers whatever the store holds beyond what was delivered (after a
    /// broker outage, whose publications never came), and subscribes the
    /// rooms whose subscription failed meanwhile.
    async fn catch_up(&mut self, attempt: u8) -> Ending {
        self.subscribe_failed_rooms().await;
        let login = self.login.as_ref()?;
        let page = match self
            .shared
            .store
            .inbox_after(login.app.id, &login.user_id, login.delivered, CATCH_UP_PAGE)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "catch-up after a broker outage failed");
                if attempt < CATCH_UP_TRIES {
                    // Again in 0.5-1.5 s (spread: every session of the node
                    // caught up at once), through the event queue.
                    let events = self.events_tx.clone();
                    let wait = Duration::from_millis(500 + rand::random::<u64>() % 1000);
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = events.try_push(Event::CatchUp(attempt + 1));
                    });
                }
                return None;
            }
        };
        let head = page.head;
        if let Some(end) = self.deliver_page(page).await {
            return Some(end);
        }
        self.fill_to(head).await
    }

    /// Delivers from the store until `delivered >= target`.
    async fn fill_to(&mut self, target: u64) -> Ending {
        loop {
            let login = self.login.as_ref()?;
            if login.delivered >= target {
                return None;
            }
            let page = match self
                .shared
                .store
                .inbox_after(login.app.id, &login.user_id, login.delivered, CATCH_UP_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "catch-up read failed");
                    return Some((
                        DisconnectReason::ServerShutdown,
                        "the server could not read stored messages; reconnect to catch up".into(),
                    ));
                }
            };
            let before = login.delivered;
            let empty = page.messages.is_empty();
            if let Some(end) = self.deliver_page(page).await {
                return Some(end);
            }
            let after = self.login.as_ref().map_or(0, |l| l.delivered);
            if empty && after == before {
                // The store holds nothing more below the target (a gap it no longer
                // knows about, or the target was never committed): stop here.
                return None;
            }
        }
    }

    async fn on_envelope(&mut self, envelope: Envelope) -> Ending {
        match envelope {
            Envelope::Kick {
                session_id,
                login_ms,
            } => self.on_kick(login_ms, session_id).await,
            // Room frames go straight to the outbox from the hub.
            Envelope::Room { .. } | Envelope::RoomMessage { .. } => None,
            Envelope::Live { priority, frame } => {
                let class = crate::envelope::live_class(priority);
                match utf8(frame) {
                    Some(text) => match self.outbox.push(text, class) {
                        Ok(_) => None,
                        Err(Slow) => slow(),
                    },
                    None => None,
                }
            }
            Envelope::Stored { inbox_seq, frame } => {
                let delivered = self.login.as_ref().map_or(u64::MAX, |l| l.delivered);
                if inbox_seq <= delivered {
                    return None;
                }
                if inbox_seq == delivered + 1 {
                    let text = utf8(frame)?;
                    if self.outbox.push(text, Class::Keep).is_err() {
                        return slow();
                    }
                    if let Some(l) = self.login.as_mut() {
                        l.delivered = inbox_seq;
                    }
                    return None;
                }
                self.fill_to(inbox_seq).await
            }
        }
    }

    /// Another session of the user logged in at `login_ms`: one session per
    /// user, the one with the latest `(login_ms, session id)` — on every node,
    /// whatever order the kicks arrive in. The later login stays; an earlier
    /// one goes. A session that hears an earlier login's kick says its own
    /// again: two logins at the same moment may each have published before
    /// the other listened (across nodes, or on one), and the earlier one must
    /// still hear the later. So the loser goes within one more trip through
    /// the broker after the later login's subscription.
    async fn on_kick(&mut self, login_ms: i64, session_id: u64) -> Ending {
        let theirs = (login_ms, session_id);
        let ours = (self.login_ms, self.id);
        if theirs > ours {
            return Some((
                DisconnectReason::KickedOut,
                "this user logged in on another connection".into(),
            ));
        }
        if theirs < ours {
            if let Some(login) = self.login.as_ref() {
                let kick = Envelope::Kick {
                    session_id: self.id,
                    login_ms: self.login_ms,
                };
                if let Err(e) = self
                    .shared
                    .broker
                    .publish(&login.topic, kick.encode())
                    .await
                {
                    tracing::warn!(error = %e, "could not repeat the kick of an earlier session");
                }
            }
        }
        None
    }

    fn renew(&mut self, id: u64, req: &RenewTokenRequest) -> Ending {
        let login = self.login.as_ref()?;
        let now = self.shared.clock.now_secs();
        match confab_token::verify(
            &req.token,
            &login.app.secret,
            login.app.id,
            &login.user_id,
            now,
        ) {
            Ok(claims) => {
                if let Some(l) = self.login.as_mut() {
                    l.token_expire = claims.expire;
                    l.warned = false;
                }
                self.reply(&Reply::ok(
                    id,
                    &RenewTokenReply {
                        token: req.token.clone(),
                        token_expire: claims.expire,
                    },
                ))
            }
            Err(e) => self.error(id, e.code(), format!("token: {e}")),
        }
    }

    async fn ack(&mut self, id: u64, req: AckInboxRequest) -> Ending {
        let login = self.login.as_ref()?;
        let store = &self.shared.store;
        let head = match store.inbox_after(login.app.id, &login.user_id, 0, 0).await {
            Ok(page) => page.head,
            Err(e) => {
                return self.error(id, ErrorCode::Failed, format!("ackInbox failed: {e}"));
            }
        };
        if req.inbox_seq > head {
            return self.error(
                id,
                ErrorCode::ParamInvalid,
                format!(
                    "inboxSeq: {} is beyond the newest inbox position {head}",
                    req.inbox_seq
                ),
            );
        }
        match store
            .ack_inbox(login.app.id, &login.user_id, req.inbox_seq)
            .await
        {
            Ok(()) => self.reply(&Reply::ok(id, &Empty {})),
            Err(e) => self.error(id, ErrorCode::Failed, format!("ackInbox failed: {e}")),
        }
    }

    /// Answers with an error after the stored sends in flight, so replies keep
    /// the order of the requests.
    async fn refuse(&mut self, id: u64, code: ErrorCode, message: impl Into<String>) -> Ending {
        let reply = Reply::error(id, code, message);
        let refused = self.sends.refuse(&self.shared, &self.outbox, &reply).await;
        refused.err().and_then(|Slow| slow())
    }

    /// Finishes every stored send in flight, in order.
    async fn drain_sends(&mut self) -> Ending {
        let drained = self.sends.drain(&self.shared, &self.outbox).await;
        drained.err().and_then(|Slow| slow())
    }

    /// Stores a validated, rate-checked send and publishes it (see `send`).
    async fn send_stored(&mut self, app: &Arc<App>, sender: &str, send: Outgoing) -> Ending {
        let started = self
            .sends
            .start(&self.shared, &self.outbox, app, sender, send)
            .await;
        started.err().and_then(|Slow| slow())
    }

    async fn send_peer(&mut self, id: u64, req: SendPeerMessageRequest) -> Ending {
        let login = self.login.as_ref()?;
        let app = login.app.clone();
        let sender = login.user_id.clone();
        let send = Outgoing::peer(id, req);
        if let Err(msg) = send.validate(&app.limits) {
            return self.refuse(id, ErrorCode::ParamInvalid, msg).await;
        }
        if send.kind == MessageType::Command {
            if let Some(first) = self.live_duplicate(send.local_message_id) {
                return self.reply(&Reply::ok(id, &first));
            }
        }
        if let Err(msg) = send::check_rate(&self.shared, &app, &sender).await {
            return self.refuse(id, ErrorCode::ServerRateLimit, msg).await;
        }
        if send.kind.is_stored() {
            return self.send_stored(&app, &sender, send).await;
        }
        let now_ms = self.shared.clock.now_ms();
        let Target::Peer(to_user_id) = send.to else {
            return None;
        };
        // Command: not stored, delivered live to an online receiver.
        let topic = user_topic(app.id, &to_user_id);
        let message_id = self.shared.next_live_message_id();
        let wire = WireMessage {
            kind: send.kind,
            message: send.body,
            message_id,
            local_message_id: send.local_message_id,
            sender_user_id: sender.clone(),
            timestamp: now_ms,
            conversation_id: sender.clone(),
            conversation_type: ConversationType::Peer,
            conversation_seq: 0,
            inbox_seq: None,
            priority: send.priority,
        };
        let push = Push::ReceivePeerMessage(ReceivePeerMessage {
            message_list: vec![wire],
            from_user_id: sender,
        });
        let envelope = Envelope::Live {
            priority: send.priority,
            frame: Bytes::from(encode_push(&push)),
        };
        if let Err(e) = self.shared.broker.publish(&topic, envelope.encode()).await {
            tracing::warn!(error = %e, "live delivery failed");
            return self.error(
                id,
                ErrorCode::MessageSendFailed,
                "the message could not be delivered: the broker is unavailable",
            );
        }
        Metrics::inc(&self.shared.metrics.messages_live_total);
        let reply = SendMessageReply {
            message_id,
            local_message_id: send.local_message_id,
            timestamp: now_ms,
            conversation_seq: 0,
        };
        self.remember_live(send.local_message_id, reply.clone());
        self.reply(&Reply::ok(id, &reply))
    }

    /// Tells the client why (when the server ends the session), closes, and leaves
    /// the hub and the broker topic.
    async fn finish(&mut self, ending: Ending) {
        // Sends in flight are stored whatever happens: publish every one.
        self.sends.finish_all(&self.shared, &self.outbox).await;
        let reason = ending.as_ref().map(|(r, _)| *r);
        self.release_rooms(
            reason == Some(DisconnectReason::Logout),
            reason == Some(DisconnectReason::KickedOut),
        )
        .await;
        if let Some(login) = self.login.take() {
            self.shared
                .hub
                .remove(login.app.id, &login.user_id, self.id);
            if let Err(e) = self.shared.broker.unsubscribe(&login.topic).await {
                tracing::warn!(error = %e, "unsubscribe failed");
            }
        }
        if let Some((reason, message)) = ending {
            if reason == DisconnectReason::SlowConsumer {
                Metrics::inc(&self.shared.metrics.slow_disconnects_total);
            }
            tracing::debug!(session = self.id, ?reason, %message, "disconnecting");
            let push = Push::Disconnect(Disconnect {
                reason,
                message: message.clone(),
                reconnect: reason.should_reconnect(),
            });
            if reason == DisconnectReason::SlowConsumer {
                // Its queue is full and not draining: skip it and close now.
                self.outbox.abort(reason.close_code(), message);
            } else {
                let _ = self.push(&push, Class::Keep);
                self.outbox.close(reason.close_code(), message).await;
            }
        }
    }
}

fn utf8(frame: Bytes) -> Option<Utf8Bytes> {
    Utf8Bytes::try_from(frame).ok()
}
