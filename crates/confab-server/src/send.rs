//! The one way through a stored send, for peer and room messages alike:
//! validation, rate limit, sequencing ticket, append, reply, publication.
//!
//! ```text
//! Outgoing::peer / ::room      the request, with its target
//!   .validate(limits)          target ID and body      → 6000001
//! check_rate(shared, app, u)   per user, per app        → 6000003
//! begin(shared, app, u, send)  a room's Sequencer ticket first (its head read
//!                              if this node does not sequence it yet), then
//!                              the append, polled once so the store queues it
//!                              in request order        → InFlight
//! finish(shared, done)         publish (a peer's topic; a room's in seq order,
//!                              through its ticket), then the reply: the
//!                              acknowledgement that the message is durable
//! ```
//!
//! A session keeps its stored sends in [`StoredSends`]: with a store that
//! applies appends in call order (`Store::appends_in_call_order`) up to
//! [`MAX_IN_FLIGHT`] are in flight at once, so one commit carries many, and
//! they are finished (published, answered) in request order. Anything that is
//! answered without being stored (a refusal, another request) is answered
//! after the sends before it: [`StoredSends::drain`] first.
//!
//! Live (unstored) sends share the validation and the rate limit; they are
//! published by the session directly.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use confab_conn::outbox::{Class, Outbox, Slow};
use confab_conn::ws::Utf8Bytes;
use confab_proto::ErrorCode;
use confab_proto::frame::{
    MessageType, Priority, Push, ReceivePeerMessage, Reply, SendMessageReply,
    SendPeerMessageRequest, SendRoomMessageRequest, encode_push,
};
use confab_store::{NewPeerMessage, NewRoomMessage, RoomError};

use crate::envelope::{Envelope, user_topic};
use crate::sequencer::{RoomKey, Started, Ticket, poll_once};
use crate::state::{App, Metrics, Shared};
use crate::validate;
use crate::wire::{room_message_frame, wire_peer};

/// Most stored sends a session keeps in flight.
pub(crate) const MAX_IN_FLIGHT: usize = 64;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// To one user (`toUserID`).
    Peer(String),
    /// To every member of a room (`roomID`).
    Room(String),
}

/// A message a session sends, as the request gave it.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The request's id (the reply's).
    pub(crate) id: u64,
    pub(crate) to: Target,
    pub(crate) kind: MessageType,
    pub(crate) body: String,
    pub(crate) local_message_id: u64,
    pub(crate) priority: Priority,
}

impl Outgoing {
    pub(crate) fn peer(id: u64, req: SendPeerMessageRequest) -> Outgoing {
        Outgoing {
            id,
            to: Target::Peer(req.to_user_id),
            kind: req.kind,
            body: req.message,
            local_message_id: req.local_message_id,
            priority: req.priority,
        }
    }

    pub(crate) fn room(id: u64, req: SendRoomMessageRequest) -> Outgoing {
        Outgoing {
            id,
            to: Target::Room(req.room_id),
            kind: req.kind,
            body: req.message,
            local_message_id: req.local_message_id,
            priority: req.priority,
        }
    }

    /// Checks the target's ID and the body; `Err` names the field (6000001).
    pub(crate) fn validate(&self, limits: &crate::config::Limits) -> Result<(), String> {
        match &self.to {
            Target::Peer(to) => validate::user_id("toUserID", to)
                .and_then(|()| validate::body(self.kind, &self.body, false, limits)),
            Target::Room(room) => validate::room_id("roomID", room)
                .and_then(|()| validate::body(self.kind, &self.body, true, limits)),
        }
    }
}

/// Checks the send rate limits of the user and of the app (shared by every
/// node through the broker when there are several); `Err` says which (6000003).
pub(crate) async fn check_rate(shared: &Shared, app: &App, user_id: &str) -> Result<(), String> {
    if app.user_sends.check_key(&user_id.to_owned()).is_err() {
        Metrics::inc(&shared.metrics.rate_limited_total);
        return Err(format!(
            "rate limit: at most {} messages per second per user (burst {})",
            app.limits.user_send_rate, app.limits.user_send_burst
        ));
    }
    let app_ok = if shared.config.broker == "local" {
        app.app_sends.check().is_ok()
    } else {
        // Several nodes: the per-app limit is shared through the broker.
        app.global_sends
            .allow(
                shared.broker.as_ref(),
                app.id,
                app.limits.app_send_rate,
                shared.clock.now_secs(),
            )
            .await
    };
    if !app_ok {
        Metrics::inc(&shared.metrics.rate_limited_total);
        return Err(format!(
            "rate limit: at most {} messages per second for this app",
            app.limits.app_send_rate
        ));
    }
    Ok(())
}

/// A stored send whose append finished (see [`finish`]).
pub(crate) enum Finished {
    Peer {
        id: u64,
        app_id: u32,
        to_user_id: String,
        result: Result<confab_store::Appended, confab_store::StoreError>,
    },
    Room {
        id: u64,
        key: RoomKey,
        ticket: Ticket,
        sender: String,
        result: Result<confab_store::AppendedRoom, RoomError>,
    },
}

/// A stored send whose append is under way: await it, then [`finish`] it.
pub(crate) type InFlight = Started<Finished>;

/// Starts the append of a validated, rate-checked stored send from `sender`:
/// for a room, under a ticket of its [`crate::sequencer::Sequencer`]. The
/// append is polled once, so the store has queued it when this returns.
///
/// # Errors
/// The reply refusing the send when the room is unknown or cannot be looked up.
pub(crate) async fn begin(
    shared: &Shared,
    app_id: u32,
    sender: &str,
    send: Outgoing,
) -> Result<InFlight, Reply> {
    let timestamp_ms = shared.clock.now_ms();
    let store = shared.store.clone();
    let id = send.id;
    match send.to {
        Target::Peer(to_user_id) => {
            let msg = NewPeerMessage {
                app_id,
                sender: sender.to_owned(),
                receiver: to_user_id.clone(),
                kind: send.kind.code(),
                body: send.body,
                local_message_id: send.local_message_id,
                timestamp_ms,
                priority: send.priority.code(),
            };
            Ok(poll_once(Box::pin(async move {
                let result = store.append_peer(msg).await;
                Finished::Peer {
                    id,
                    app_id,
                    to_user_id,
                    result,
                }
            }))
            .await)
        }
        Target::Room(room_id) => {
            let key = (app_id, room_id.clone());
            let msg = NewRoomMessage {
                app_id,
                room_id,
                sender: sender.to_owned(),
                kind: send.kind.code(),
                body: send.body,
                local_message_id: send.local_message_id,
                timestamp_ms,
                priority: send.priority.code(),
            };
            let sender = sender.to_owned();
            let append_key = key.clone();
            let append = move |ticket| -> InFlight {
                Box::pin(async move {
                    let result = store.append_room(msg).await;
                    Finished::Room {
                        id,
                        key: append_key,
                        ticket,
                        sender,
                        result,
                    }
                })
            };
            let sequencer = &shared.rooms.sequencer;
            // The room's head is read only when this node does not sequence
            // the room yet.
            match sequencer.try_start(&key, append).await {
                Ok(started) => Ok(started),
                Err(append) => match shared.store.room(app_id, &key.1).await {
                    Ok(Some(room)) => Ok(sequencer.start(&key, room.seq_head, append).await),
                    Ok(None) => Err(Reply::error(
                        id,
                        ErrorCode::RoomNotExist,
                        format!("room {} does not exist", key.1),
                    )),
                    Err(e) => Err(Reply::error(
                        id,
                        ErrorCode::MessageInternalError,
                        format!("room lookup failed: {e}"),
                    )),
                },
            }
        }
    }
}

/// Publishes a stored send whose append finished (a peer message to its
/// receiver's topic; a room message in seq order, through its ticket) and
/// makes its reply: the acknowledgement, or the error that says why the
/// message was not stored. A duplicate (the same localMessageID again) is
/// answered with the first result and not published again.
pub(crate) async fn finish(shared: &Shared, done: Finished) -> Reply {
    match done {
        Finished::Peer {
            id,
            app_id,
            to_user_id,
            result,
        } => {
            let appended = match result {
                Ok(appended) => appended,
                Err(e) => {
                    tracing::error!(app = app_id, error = %e, "storing a peer message failed");
                    return Reply::error(
                        id,
                        ErrorCode::MessageInternalError,
                        "the message could not be stored; retry with the same localMessageID",
                    );
                }
            };
            let m = appended.message;
            let reply = SendMessageReply {
                message_id: m.message_id,
                local_message_id: m.local_message_id,
                timestamp: m.timestamp_ms,
                conversation_seq: m.conversation_seq,
            };
            if !appended.duplicate {
                Metrics::inc(&shared.metrics.messages_stored_total);
                let topic = user_topic(m.app_id, &to_user_id);
                let inbox_seq = m.inbox_seq;
                let push = Push::ReceivePeerMessage(ReceivePeerMessage {
                    from_user_id: m.sender.clone(),
                    message_list: vec![wire_peer(m)],
                });
                let envelope = Envelope::Stored {
                    inbox_seq,
                    frame: Bytes::from(encode_push(&push)),
                };
                // Tried again while the broker cannot take it; stored, so the
                // receiver gets it at its next catch-up in any case.
                shared
                    .republish
                    .publish(shared.broker.as_ref(), &topic, envelope.encode())
                    .await;
            }
            Reply::ok(id, &reply)
        }
        Finished::Room {
            id,
            key,
            ticket,
            sender,
            result,
        } => {
            let (publish, result) = match result {
                Ok(a) => {
                    let m = a.message;
                    let reply = SendMessageReply {
                        message_id: m.message_id,
                        local_message_id: m.local_message_id,
                        timestamp: m.timestamp_ms,
                        conversation_seq: m.seq,
                    };
                    let publish = (!a.duplicate).then(|| {
                        let seq = m.seq;
                        let envelope = Envelope::RoomMessage {
                            seq,
                            sender,
                            frame: Bytes::from(room_message_frame(m)),
                        };
                        (seq, envelope.encode())
                    });
                    (publish, Ok(reply))
                }
                Err(e) => (None, Err(e)),
            };
            if publish.is_some() {
                Metrics::inc(&shared.metrics.messages_stored_total);
            }
            shared
                .rooms
                .sequencer
                .finish(
                    shared.broker.as_ref(),
                    &shared.republish,
                    shared.store.single_node(),
                    &key,
                    ticket,
                    publish,
                )
                .await;
            let room_id = &key.1;
            match result {
                Ok(reply) => Reply::ok(id, &reply),
                Err(RoomError::NotFound) => Reply::error(
                    id,
                    ErrorCode::RoomNotExist,
                    format!("room {room_id} does not exist"),
                ),
                Err(RoomError::NotMember) => Reply::error(
                    id,
                    ErrorCode::NotInRoom,
                    format!("you are not a member of room {room_id}"),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "storing a room message failed");
                    Reply::error(
                        id,
                        ErrorCode::MessageInternalError,
                        "the message could not be stored; retry with the same localMessageID",
                    )
                }
            }
        }
    }
}

/// Queues a reply on the connection; `Err(Slow)` when it cannot take it.
fn answer(out: &Outbox, reply: &Reply) -> Result<(), Slow> {
    out.push(Utf8Bytes::from(reply.encode()), Class::Keep)
        .map(|_| ())
}

/// A session's stored sends in flight, oldest first, answered in request
/// order on its connection.
#[derive(Default)]
pub(crate) struct StoredSends {
    /// Only ever used through `&mut`, so the session stays `Sync` (it is
    /// shared by reference across awaits) whatever the futures are.
    in_flight: std::sync::Mutex<VecDeque<InFlight>>,
    /// The room of the newest stored room send started (see [`StoredSends::start`]).
    pipelined_room: Option<String>,
}

impl StoredSends {
    fn queue(&mut self) -> &mut VecDeque<InFlight> {
        self.in_flight
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether no stored send is in flight.
    pub(crate) fn is_empty(&mut self) -> bool {
        self.queue().is_empty()
    }

    /// Starts a validated, rate-checked stored send of `sender` and, when the
    /// store does not keep call order, finishes it at once. A refusal is
    /// answered after the sends in flight.
    pub(crate) async fn start(
        &mut self,
        shared: &Shared,
        out: &Outbox,
        app: &Arc<App>,
        sender: &str,
        send: Outgoing,
    ) -> Result<(), Slow> {
        let pipelined = shared.store.appends_in_call_order();
        if pipelined {
            if let Target::Room(room_id) = &send.to {
                // Sends to another room wait for this session's appends first:
                // the room's lock may be held a while (a member joining with a
                // long catch-up), and appends left unfinished meanwhile would
                // hold back every other sender's messages in their room.
                if self.pipelined_room.as_deref() != Some(room_id.as_str()) {
                    self.drain(shared, out).await?;
                    self.pipelined_room = Some(room_id.clone());
                }
            }
            // Room for one more in flight: the oldest finishes first.
            if self.queue().len() >= MAX_IN_FLIGHT {
                self.finish_oldest(shared, out).await?;
            }
        }
        match begin(shared, app.id, sender, send).await {
            Ok(started) if pipelined => {
                self.queue().push_back(started);
                Ok(())
            }
            // Only appends awaited one after another keep a sender's order.
            Ok(started) => answer(out, &finish(shared, started.await).await),
            Err(refusal) => self.refuse(shared, out, &refusal).await,
        }
    }

    /// The oldest send in flight, once its append finished (never resolves
    /// when none is in flight). Cancel-safe: dropped before it resolves, the
    /// send stays in flight.
    ///
    /// Boxed: a finished append is large, and the session's future would
    /// otherwise keep room for one while it waits for anything.
    pub(crate) async fn next(&mut self) -> Box<Finished> {
        let queue = self.queue();
        let Some(oldest) = queue.front_mut() else {
            return std::future::pending().await;
        };
        let done = Box::new(oldest.as_mut().await);
        queue.pop_front();
        done
    }

    /// Finishes the oldest send in flight; `Ok(false)` when there is none.
    async fn finish_oldest(&mut self, shared: &Shared, out: &Outbox) -> Result<bool, Slow> {
        let Some(mut oldest) = self.queue().pop_front() else {
            return Ok(false);
        };
        let done = oldest.as_mut().await;
        answer(out, &finish(shared, done).await)?;
        Ok(true)
    }

    /// Finishes every send in flight, in order (before anything else is
    /// answered). Stops at a connection that cannot take a reply; what is
    /// left is finished by [`StoredSends::finish_all`].
    pub(crate) async fn drain(&mut self, shared: &Shared, out: &Outbox) -> Result<(), Slow> {
        while self.finish_oldest(shared, out).await? {}
        Ok(())
    }

    /// Answers `reply` after the sends in flight, so replies keep the order
    /// of the requests.
    pub(crate) async fn refuse(
        &mut self,
        shared: &Shared,
        out: &Outbox,
        reply: &Reply,
    ) -> Result<(), Slow> {
        self.drain(shared, out).await?;
        answer(out, reply)
    }

    /// At the end of a session: the sends in flight are stored whatever
    /// happens, so every one is published; replies go out if the connection
    /// still takes them.
    pub(crate) async fn finish_all(&mut self, shared: &Shared, out: &Outbox) {
        while let Some(mut oldest) = self.queue().pop_front() {
            let done = oldest.as_mut().await;
            let _ = answer(out, &finish(shared, done).await);
        }
    }
}
