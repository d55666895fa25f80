//! [`Zim`], the handle apps hold: ZIM 1.x's methods as async functions, each
//! checked locally (destroyed, parameters, logged in, the SDK's rate limit)
//! before it goes to the engine task that owns the connection.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use confab_proto::ErrorCode;
use confab_proto::frame::{
    BatchRoomAttributesRequest, ConversationType, CreateRoomRequest, DeleteRoomAttributesRequest,
    EnterRoomRequest, HistoryConfig, JoinRoomRequest, MemberQueryConfig, MessageType, NextMessage,
    QueryHistoryReply, QueryHistoryRequest, QueryRoomMemberListReply, QueryRoomMemberListRequest,
    RenewTokenReply, RenewTokenRequest, Reply, Request, RoomAdvancedConfig,
    RoomAttributesOperatedReply, RoomAttributesReply, RoomAttributesSetConfig, RoomCountReply,
    RoomIdRequest, RoomInfo, RoomJoinedReply, SendMessageReply, SendPeerMessageRequest,
    SendRoomMessageRequest, SetRoomAttributesRequest, UserInfo,
};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::engine::{self, Call, Command, Shared, is_send};
use crate::error::ZimError;
use crate::logger::now_ms;
use crate::types::{
    ConnectionState, LogConfig, Message, MessageContent, MessageDirection, MessageSentStatus,
    SendConfig, ZimConfig, ZimEvent,
};
use crate::upload;

/// Extra time a call waits beyond its deadline for the engine's own answer.
const SLACK: Duration = Duration::from_secs(1);
/// Commands that may wait for the engine.
const COMMAND_QUEUE: usize = 256;

/// A confab client: one user's connection to a confab server, ZIM 1.x style.
///
/// Create it with [`Zim::create`] (inside a Tokio runtime), take its events with
/// [`Zim::events`], then [`Zim::login`]. Cloning is cheap and every clone
/// drives the same instance. Once [`Zim::destroy`] is called — or the last clone
/// is dropped — every call fails with 6000002. (ZIM's "used before create" case
/// cannot happen: there is no `Zim` before `create` returns one.)
#[derive(Clone)]
pub struct Zim {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    cmds: mpsc::Sender<Command>,
    shutdown: watch::Sender<bool>,
    destroyed: AtomicBool,
    events: Mutex<Option<mpsc::Receiver<ZimEvent>>>,
    /// The SDK's own limit on Text + Command sends; `None` when turned off.
    limiter: Option<DefaultDirectRateLimiter>,
    /// The last localMessageID handed out.
    local_ids: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: stop the engine.
        let _ = self.shutdown.send(true);
    }
}

impl std::fmt::Debug for Zim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zim")
            .field("app_id", &self.inner.shared.config.app_id)
            .field("urls", &self.inner.shared.config.urls)
            .field("state", &self.inner.shared.state())
            .field("destroyed", &self.inner.destroyed.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

/// The events of a [`Zim`] instance, oldest first: a bounded channel, usable as a
/// [`futures_util::Stream`] or through [`ZimEvents::recv`].
///
/// Drain it continuously (in its own task). When it is full the SDK waits for
/// room: it stops reading from the server meanwhile, so replies to calls wait
/// too (a call may fail with 6000104 after its timeout) and the server may
/// eventually drop the connection as a slow consumer; the SDK then reconnects
/// and catches up. Nothing stored is lost or delivered twice — the SDK never
/// drops events to make room.
#[derive(Debug)]
pub struct ZimEvents {
    rx: mpsc::Receiver<ZimEvent>,
}

impl ZimEvents {
    /// The next event; `None` once the instance is destroyed and every event was
    /// taken.
    pub async fn recv(&mut self) -> Option<ZimEvent> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<ZimEvent> {
        self.rx.try_recv().ok()
    }
}

impl futures_util::Stream for ZimEvents {
    type Item = ZimEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ZimEvent>> {
        self.rx.poll_recv(cx)
    }
}

enum Target<'a> {
    Peer(&'a str),
    Room(&'a str),
}

fn require(field: &str, value: &str) -> Result<(), ZimError> {
    if value.is_empty() {
        return Err(ZimError::param(format!("{field}: must not be empty")));
    }
    Ok(())
}

fn require_count(count: u32) -> Result<(), ZimError> {
    if count == 0 {
        return Err(ZimError::param("count: must be 1-100, got 0"));
    }
    Ok(())
}

impl Zim {
    /// Creates an instance (ZIM's `create`). Nothing is connected until
    /// [`Zim::login`].
    ///
    /// Must be called inside a Tokio runtime: the instance runs a background task.
    ///
    /// # Errors
    /// 6000001 when `app_id` is 0, `urls` is empty or a URL is not `ws://`;
    /// 6000002 when there is no Tokio runtime.
    pub fn create(config: ZimConfig) -> Result<Zim, ZimError> {
        if config.app_id == 0 {
            return Err(ZimError::param("appID: must not be 0"));
        }
        if config.urls.is_empty() {
            return Err(ZimError::param("urls: give at least one ws://HOST:PORT/ws"));
        }
        if let Some(bad) = config.urls.iter().find(|u| !u.starts_with("ws://")) {
            return Err(ZimError::param(format!(
                "urls: {bad} is not a ws:// URL (this SDK speaks plain WebSocket; put wss:// behind a TLS proxy)"
            )));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ZimError::new(
                ErrorCode::NotInitialized,
                "Zim::create must be called inside a Tokio runtime",
            ));
        }
        let limiter = NonZeroU32::new(config.send_rate_per_second)
            .map(|rate| RateLimiter::direct(Quota::per_second(rate)));
        let (events_tx, events_rx) = mpsc::channel(config.event_capacity.max(1));
        let (cmds_tx, cmds_rx) = mpsc::channel(COMMAND_QUEUE);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(config));
        shared.logger.info(&format!(
            "create appID={} urls={:?}",
            shared.config.app_id, shared.config.urls
        ));
        engine::spawn(shared.clone(), cmds_rx, events_tx, shutdown_rx);
        Ok(Zim {
            inner: Arc::new(Inner {
                shared,
                cmds: cmds_tx,
                shutdown: shutdown_tx,
                destroyed: AtomicBool::new(false),
                events: Mutex::new(Some(events_rx)),
                limiter,
                local_ids: AtomicU64::new(0),
            }),
        })
    }

    /// Takes the instance's event channel. Only the first call returns it (events
    /// are buffered until then); later calls return `None`. See [`ZimEvents`] for
    /// what happens when the app does not drain it.
    #[must_use]
    pub fn events(&self) -> Option<ZimEvents> {
        self.inner
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .map(|rx| ZimEvents { rx })
    }

    /// Destroys the instance (ZIM's `destroy`): the connection is closed without a
    /// logout (the server keeps room memberships for its grace period), waiting
    /// calls fail with 6000002, and so does every later call. Idempotent.
    pub fn destroy(&self) {
        if !self.inner.destroyed.swap(true, Ordering::SeqCst) {
            self.inner.shared.logger.info("destroy");
            let _ = self.inner.shutdown.send(true);
        }
    }

    /// The current connection state.
    #[must_use]
    pub fn connection_state(&self) -> ConnectionState {
        self.inner.shared.state()
    }

    fn check(&self) -> Result<(), ZimError> {
        if self.inner.destroyed.load(Ordering::SeqCst) {
            return Err(ZimError::destroyed());
        }
        Ok(())
    }

    fn request_timeout(&self) -> Duration {
        self.inner.shared.config.request_timeout
    }

    /// A fresh localMessageID: unique per instance and increasing — the time in
    /// microseconds-ish (ms × 1000) or the previous id + 1, whichever is larger —
    /// so a restarted app does not reuse ids the server remembers.
    fn next_local_id(&self) -> u64 {
        let now = u64::try_from(now_ms()).unwrap_or(0).saturating_mul(1000);
        let prev = self
            .inner
            .local_ids
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(0);
        now.max(prev + 1)
    }

    fn my_user_id(&self) -> String {
        self.inner
            .shared
            .credentials()
            .map(|c| c.user_id)
            .unwrap_or_default()
    }

    /// Sends a command and waits for its answer, at most until `deadline` + slack.
    async fn command<T>(
        &self,
        deadline: Instant,
        what: &str,
        is_send: bool,
        make: impl FnOnce(oneshot::Sender<Result<T, ZimError>>) -> Command,
    ) -> Result<T, ZimError> {
        self.check()?;
        let (tx, rx) = oneshot::channel();
        let exchange = async {
            if self.inner.cmds.send(make(tx)).await.is_err() {
                return Err(ZimError::destroyed());
            }
            rx.await.unwrap_or_else(|_| Err(ZimError::destroyed()))
        };
        let limit = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout_at(deadline + SLACK, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(ZimError::network(
                    is_send,
                    format!("{what}: no answer within {limit:?}"),
                ))
            })
    }

    async fn request(&self, request: Request) -> Result<Reply, ZimError> {
        let name = request.name();
        let send = is_send(&request);
        let deadline = Instant::now() + self.request_timeout();
        self.command(deadline, name, send, |reply| {
            Command::Call(Call {
                request,
                deadline,
                reply,
            })
        })
        .await
    }

    async fn request_as<T: serde::de::DeserializeOwned>(
        &self,
        request: Request,
    ) -> Result<T, ZimError> {
        let name = request.name();
        let reply = self.request(request).await?;
        reply.data_as::<T>().map_err(|e| {
            ZimError::new(
                ErrorCode::Failed,
                format!("{name}: unreadable reply from the server: {e}"),
            )
        })
    }

    /// Logs in (ZIM's `login`): connects to the first reachable URL and
    /// authenticates `user` with `token` (a Token04 for this AppID and userID).
    /// Peer messages received while offline follow as events.
    ///
    /// # Errors
    /// 6000001 for an empty userID or token; 6000111 when already logged in;
    /// 6000104 when no URL could be reached; the server's code when it refuses
    /// (6000004, 6000101, 6000103, 6000106, 6000107, ...).
    pub async fn login(&self, user: UserInfo, token: impl Into<String>) -> Result<(), ZimError> {
        self.check()?;
        let token = token.into();
        require("userID", &user.user_id)?;
        require("token", &token)?;
        let urls = u32::try_from(self.inner.shared.config.urls.len()).unwrap_or(u32::MAX);
        let deadline = Instant::now() + self.request_timeout().saturating_mul(urls);
        self.command(deadline, "login", false, |reply| Command::Login {
            user,
            token,
            reply,
        })
        .await
    }

    /// Logs out (ZIM's `logout`): leaves all rooms and closes the connection.
    ///
    /// # Errors
    /// 6000121 when not logged in.
    pub async fn logout(&self) -> Result<(), ZimError> {
        let deadline = Instant::now() + self.request_timeout();
        self.command(deadline, "logout", false, |reply| Command::Logout { reply })
            .await
    }

    /// Replaces the session's token before it expires (after
    /// [`ZimEvent::TokenWillExpire`]); reconnects use the new token.
    ///
    /// # Errors
    /// 6000121 when not logged in; the server's token codes (6000101, 6000103,
    /// 6000106, 6000107).
    pub async fn renew_token(&self, token: impl Into<String>) -> Result<RenewTokenReply, ZimError> {
        self.check()?;
        let token = token.into();
        require("token", &token)?;
        self.request_as(Request::RenewToken(RenewTokenRequest { token }))
            .await
    }

    async fn send_message(
        &self,
        content: MessageContent,
        target: Target<'_>,
        config: SendConfig,
    ) -> Result<Message, ZimError> {
        self.check()?;
        let (kind, body) = content.to_wire();
        let (conversation_id, conversation_type) = match target {
            Target::Peer(to) => {
                require("toUserID", to)?;
                (to, ConversationType::Peer)
            }
            Target::Room(room) => {
                require("roomID", room)?;
                (room, ConversationType::Room)
            }
        };
        match kind {
            MessageType::Text | MessageType::Command => {}
            MessageType::Barrage if conversation_type == ConversationType::Room => {}
            other => {
                return Err(ZimError::param(format!(
                    "type: {} ({}) cannot be sent {}",
                    other.zim_name(),
                    other.code(),
                    if conversation_type == ConversationType::Peer {
                        "to a user (Text and Command can)"
                    } else {
                        "to a room (Text, Command and Barrage can)"
                    }
                )));
            }
        }
        if self.connection_state() == ConnectionState::Disconnected {
            return Err(ZimError::not_logged_in(match conversation_type {
                ConversationType::Peer => "sendPeerMessage",
                ConversationType::Room => "sendRoomMessage",
            }));
        }
        if kind != MessageType::Barrage {
            if let Some(limiter) = &self.inner.limiter {
                if limiter.check().is_err() {
                    return Err(ZimError::new(
                        ErrorCode::SdkRateLimit,
                        format!(
                            "at most {} Text and Command messages per second may be sent",
                            self.inner.shared.config.send_rate_per_second
                        ),
                    ));
                }
            }
        }
        let local_message_id = self.next_local_id();
        let request = match conversation_type {
            ConversationType::Peer => Request::SendPeerMessage(SendPeerMessageRequest {
                to_user_id: conversation_id.to_owned(),
                kind,
                message: body,
                local_message_id,
                priority: config.priority,
            }),
            ConversationType::Room => Request::SendRoomMessage(SendRoomMessageRequest {
                room_id: conversation_id.to_owned(),
                kind,
                message: body,
                local_message_id,
                priority: config.priority,
            }),
        };
        let reply: SendMessageReply = self.request_as(request).await?;
        Ok(Message {
            content,
            message_id: reply.message_id,
            local_message_id: reply.local_message_id,
            sender_user_id: self.my_user_id(),
            timestamp: reply.timestamp,
            conversation_id: conversation_id.to_owned(),
            conversation_type,
            direction: MessageDirection::Send,
            sent_status: MessageSentStatus::Success,
            order_key: i64::try_from(reply.conversation_seq).unwrap_or(i64::MAX),
            conversation_seq: reply.conversation_seq,
            inbox_seq: None,
            priority: config.priority,
        })
    }

    /// Sends a Text or Command message to a user (ZIM's `sendPeerMessage`). Text is
    /// stored and reaches the receiver at its next login if it is offline; the
    /// call returns once it is stored. Command reaches online receivers only.
    ///
    /// A send made while the SDK is reconnecting waits for the connection (up to
    /// the request timeout) and then completes once or fails with 6000204; a Text
    /// send in flight when the connection drops is resent with the same
    /// localMessageID, which the server dedups.
    ///
    /// # Errors
    /// 6000001 (empty toUserID, Barrage or an unsupported type; the server checks
    /// sizes), 6000005 (the SDK's rate limit), 6000121, 6000204, and the server's
    /// codes (6000003, 6000202, ...).
    pub async fn send_peer_message(
        &self,
        content: MessageContent,
        to_user_id: &str,
        config: SendConfig,
    ) -> Result<Message, ZimError> {
        self.send_message(content, Target::Peer(to_user_id), config)
            .await
    }

    /// Sends a Text, Command or Barrage message to a room this user is in (ZIM's
    /// `sendRoomMessage`). Every other member receives it; Text is stored and
    /// gets the room's next seq. Reconnect behaviour as for
    /// [`Zim::send_peer_message`]; Barrage is not rate-limited by the SDK.
    ///
    /// # Errors
    /// As [`Zim::send_peer_message`], plus 6000301 and 6000205 from the server.
    pub async fn send_room_message(
        &self,
        content: MessageContent,
        room_id: &str,
        config: SendConfig,
    ) -> Result<Message, ZimError> {
        self.send_message(content, Target::Room(room_id), config)
            .await
    }

    /// Creates a room and joins it (ZIM's `createRoom`).
    ///
    /// # Errors
    /// 6000311 the room exists, 6000312, 6000321, 6000303, 6000001, 6000121.
    pub async fn create_room(
        &self,
        room_info: RoomInfo,
        config: Option<RoomAdvancedConfig>,
    ) -> Result<RoomJoinedReply, ZimError> {
        self.check()?;
        require("roomID", &room_info.room_id)?;
        self.request_as(Request::CreateRoom(CreateRoomRequest {
            room_info,
            config: config.unwrap_or_default(),
        }))
        .await
    }

    /// Joins an existing room (ZIM's `joinRoom`).
    ///
    /// # Errors
    /// 6000304 the room does not exist, 6000321, 6000001, 6000121.
    pub async fn join_room(&self, room_id: &str) -> Result<RoomJoinedReply, ZimError> {
        self.check()?;
        require("roomID", room_id)?;
        self.request_as(Request::JoinRoom(JoinRoomRequest {
            room_id: room_id.to_owned(),
            last_seq: None,
        }))
        .await
    }

    /// Joins a room, creating it first if it does not exist (ZIM's `enterRoom`);
    /// `created` in the result says which happened.
    ///
    /// # Errors
    /// As [`Zim::create_room`] and [`Zim::join_room`].
    pub async fn enter_room(
        &self,
        room_info: RoomInfo,
        config: Option<RoomAdvancedConfig>,
    ) -> Result<RoomJoinedReply, ZimError> {
        self.check()?;
        require("roomID", &room_info.room_id)?;
        self.request_as(Request::EnterRoom(EnterRoomRequest {
            room_info,
            config: config.unwrap_or_default(),
            last_seq: None,
        }))
        .await
    }

    /// Leaves a room (ZIM's `leaveRoom`).
    ///
    /// # Errors
    /// 6000301 the room does not exist, 6000305 not in it, 6000121.
    pub async fn leave_room(&self, room_id: &str) -> Result<(), ZimError> {
        self.check()?;
        require("roomID", room_id)?;
        self.request(Request::LeaveRoom(RoomIdRequest {
            room_id: room_id.to_owned(),
        }))
        .await
        .map(|_| ())
    }

    /// A page of a room's members (ZIM's `queryRoomMemberList`): pass `""` as
    /// `next_flag` for the first page, then the returned `next_flag` until it is
    /// empty. `count` is 1–100.
    ///
    /// # Errors
    /// 6000301, 6000205, 6000001, 6000121.
    pub async fn query_room_member_list(
        &self,
        room_id: &str,
        next_flag: &str,
        count: u32,
    ) -> Result<QueryRoomMemberListReply, ZimError> {
        self.check()?;
        require("roomID", room_id)?;
        require_count(count)?;
        self.request_as(Request::QueryRoomMemberList(QueryRoomMemberListRequest {
            room_id: room_id.to_owned(),
            config: MemberQueryConfig {
                next_flag: next_flag.to_owned(),
                count,
            },
        }))
        .await
    }

    /// How many members a room has (ZIM's `queryRoomOnlineMemberCount`; members
    /// within their reconnect grace period count).
    ///
    /// # Errors
    /// 6000301, 6000205, 6000121.
    pub async fn query_room_online_member_count(&self, room_id: &str) -> Result<u64, ZimError> {
        self.check()?;
        require("roomID", room_id)?;
        let reply: RoomCountReply = self
            .request_as(Request::QueryRoomOnlineMemberCount(RoomIdRequest {
                room_id: room_id.to_owned(),
            }))
            .await?;
        Ok(reply.count)
    }

    /// Sets room attributes (ZIM's `setRoomAttributes`); returns the keys that could
    /// not be changed (owned by another member, without `is_force`).
    ///
    /// # Errors
    /// 6000001 (limits: 20 keys, key ≤ 16 B, value ≤ 1024 B, 5120 B in all),
    /// 6000301, 6000205, 6000121.
    pub async fn set_room_attributes(
        &self,
        room_id: &str,
        room_attributes: BTreeMap<String, String>,
        config: RoomAttributesSetConfig,
    ) -> Result<Vec<String>, ZimError> {
        self.check()?;
        require("roomID", room_id)?;
        let reply: RoomAttributesOperatedReply = self
            .request_as(Request::SetRoomAttributes(SetRoomAttributesRequest {
                room_id: room_id.to_owned(),
                room_attributes,
                config,
            }))
            .await?;
        Ok(reply.error_keys)
    }

    /// Deletes room attributes (ZIM's `deleteRoomAttributes`); returns the keys that
    /// could not be deleted.
    ///
    /// # Errors
    /// As [`Zim::set_room_attributes`].
    pub async fn delete_room_attributes(
        &self,
        room_id: &str,
        keys: Vec<String>,
        config: RoomAttributesSetConfig,
    ) -> Result<Vec<String>, ZimError> {
        self.check()?;
        require("roomID", room_id)?;
        let reply: RoomAttributesOperatedReply = self
            .request_as(Request::DeleteRoomAttributes(DeleteRoomAttributesRequest {
                room_id: room_id.to_owned(),
                keys,
                config,
            }))
            .await?;
        Ok(reply.error_keys)
    }

    /// Sets and deletes room attributes in one step (ZIM's
    /// begin/endRoomAttributesBatchOperation); returns the keys that could not be
    /// changed.
    ///
    /// # Errors
    /// As [`Zim::set_room_attributes`].
    pub async fn batch_room_attributes(
        &self,
        room_id: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
        config: RoomAttributesSetConfig,
    ) -> Result<Vec<String>, ZimError> {
        self.check()?;
        require("roomID", room_id)?;
        let reply: RoomAttributesOperatedReply = self
            .request_as(Request::BatchRoomAttributes(BatchRoomAttributesRequest {
                room_id: room_id.to_owned(),
                room_attributes: set,
                keys: delete,
                config,
            }))
            .await?;
        Ok(reply.error_keys)
    }

    /// All attributes of a room (ZIM's `queryRoomAllAttributes`).
    ///
    /// # Errors
    /// 6000301, 6000205, 6000121.
    pub async fn query_room_all_attributes(
        &self,
        room_id: &str,
    ) -> Result<BTreeMap<String, String>, ZimError> {
        self.check()?;
        require("roomID", room_id)?;
        let reply: RoomAttributesReply = self
            .request_as(Request::QueryRoomAllAttributes(RoomIdRequest {
                room_id: room_id.to_owned(),
            }))
            .await?;
        Ok(reply.room_attributes)
    }

    /// A page of a conversation's stored messages (ZIM's `queryHistoryMessage`):
    /// for a Peer conversation with the user `conversation_id`, or a Room this user
    /// is in. Without `next_message_seq` the page starts at the oldest message
    /// (newest with `reverse`); with it, it continues after (before) that seq.
    /// `count` is 1–100. Messages come in the order asked.
    ///
    /// # Errors
    /// 6000001, 6000301, 6000205, 6000121.
    pub async fn query_history_message(
        &self,
        conversation_id: &str,
        conversation_type: ConversationType,
        next_message_seq: Option<u64>,
        count: u32,
        reverse: bool,
    ) -> Result<Vec<Message>, ZimError> {
        self.check()?;
        require("conversationID", conversation_id)?;
        require_count(count)?;
        let reply: QueryHistoryReply = self
            .request_as(Request::QueryHistoryMessage(QueryHistoryRequest {
                conversation_id: conversation_id.to_owned(),
                conversation_type,
                config: HistoryConfig {
                    next_message: next_message_seq.map(|seq| NextMessage {
                        conversation_seq: seq,
                    }),
                    count,
                    reverse,
                },
            }))
            .await?;
        let me = self.my_user_id();
        Ok(reply
            .message_list
            .into_iter()
            .map(|m| Message::from_wire(m, &me))
            .collect())
    }

    /// Starts writing the SDK's log to `config.log_path` (ZIM's `setLogConfig`):
    /// connection events, request ops and result codes — never tokens or message
    /// bodies — capped at `log_size` bytes with one `.1` backup.
    ///
    /// # Errors
    /// 6000001 when the directory or file cannot be created; 6000002 after destroy.
    pub fn set_log_config(&self, config: &LogConfig) -> Result<(), ZimError> {
        self.check()?;
        let path = self.inner.shared.logger.configure(config).map_err(|e| {
            ZimError::param(format!(
                "logPath: cannot write a log in {}: {e}",
                config.log_path.display()
            ))
        })?;
        self.inner.shared.logger.info(&format!(
            "log file {} (cap {} bytes)",
            path.display(),
            config.log_size
        ));
        Ok(())
    }

    /// Uploads the SDK's log to the server (ZIM's `uploadLog`): a gzip of the log
    /// file (with its backup), or of the recent log lines kept in memory when no
    /// file is configured, POSTed to `http://HOST:PORT/v1/logs` of the URL of the
    /// current or most recent login (even a failed one: its log is the
    /// interesting one), authenticated with that login's userID and token (the
    /// renewed one, if renewed). Plain `http` only.
    ///
    /// # Errors
    /// 6000010 when the upload fails (unreachable server, refused or expired
    /// token, too large); 6000121 when `login` was never called.
    pub async fn upload_log(&self) -> Result<(), ZimError> {
        self.check()?;
        let Some(creds) = self.inner.shared.credentials() else {
            return Err(ZimError::not_logged_in("uploadLog"));
        };
        let logger = &self.inner.shared.logger;
        let target = upload::target(&creds.url).map_err(ZimError::log_upload)?;
        let contents = logger
            .contents()
            .map_err(|e| ZimError::log_upload(format!("reading the SDK log failed: {e}")))?;
        logger.info(&format!(
            "uploadLog to {} ({} bytes)",
            target.host,
            contents.len()
        ));
        let body = upload::gzip(&contents);
        let headers = [
            (
                "X-Confab-App-Id",
                self.inner.shared.config.app_id.to_string(),
            ),
            ("X-Confab-User-Id", creds.user_id),
            ("Authorization", format!("Bearer {}", creds.token)),
            ("Content-Type", "application/octet-stream".to_owned()),
            ("Content-Encoding", "gzip".to_owned()),
        ];
        let response = upload::post(&target, "/v1/logs", &headers, &body, self.request_timeout())
            .await
            .map_err(|e| {
                logger.warn(&format!("uploadLog failed: {e}"));
                ZimError::log_upload(format!("uploadLog: {e}"))
            })?;
        let answer: serde_json::Value =
            serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null);
        if response.status == 200 && answer["code"].as_u64() == Some(0) {
            logger.info("uploadLog done");
            return Ok(());
        }
        let message = answer["message"].as_str().map_or_else(
            || String::from_utf8_lossy(&response.body).into_owned(),
            str::to_owned,
        );
        logger.warn(&format!("uploadLog refused: HTTP {}", response.status));
        Err(ZimError::log_upload(format!(
            "the server refused the log (HTTP {}): {message}",
            response.status
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_message_ids_are_unique_and_increasing() {
        let zim = Zim::create(ZimConfig::new(1, vec!["ws://127.0.0.1:9/ws".into()])).unwrap();
        let ids: Vec<u64> = (0..10_000).map(|_| zim.next_local_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids[0] < (1 << 53), "ids stay exact in JavaScript");
    }

    #[tokio::test]
    async fn create_checks_its_config() {
        let bad = |config| Zim::create(config).unwrap_err().code;
        assert_eq!(
            bad(ZimConfig::new(0, vec!["ws://h/ws".into()])),
            ErrorCode::ParamInvalid
        );
        assert_eq!(bad(ZimConfig::new(1, vec![])), ErrorCode::ParamInvalid);
        assert_eq!(
            bad(ZimConfig::new(1, vec!["wss://h/ws".into()])),
            ErrorCode::ParamInvalid
        );
        let zim = Zim::create(ZimConfig::new(1, vec!["ws://h/ws".into()])).unwrap();
        assert!(zim.events().is_some());
        assert!(
            zim.events().is_none(),
            "only the first call gets the events"
        );
    }

    #[test]
    fn create_needs_a_runtime() {
        let err = Zim::create(ZimConfig::new(1, vec!["ws://h/ws".into()])).unwrap_err();
        assert_eq!(err.code, ErrorCode::NotInitialized);
    }
}
