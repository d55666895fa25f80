//! Room requests of a session: create, join, enter, leave, members, attributes,
//! room messages and history, and the room side of login and logout.

use std::collections::BTreeMap;

use bytes::Bytes;
use confab_proto::ErrorCode;
use confab_proto::frame::{
    BatchRoomAttributesRequest, ConversationType, CreateRoomRequest, DeleteRoomAttributesRequest,
    EnterRoomRequest, JoinRoomRequest, Message as WireMessage, MessageType, Push,
    QueryHistoryReply, QueryHistoryRequest, QueryRoomMemberListReply, QueryRoomMemberListRequest,
    ReceiveRoomMessage, Reply, RoomAdvancedConfig, RoomAttributesOperatedReply,
    RoomAttributesReply, RoomAttributesSetConfig, RoomAttributesUpdateInfo, RoomAttributesUpdated,
    RoomCountReply, RoomIdRequest, RoomInfo, RoomJoinedReply, RoomStateChanged, RoomSyncGap,
    SendMessageReply, SendRoomMessageRequest, SetRoomAttributesRequest, UserInfo, encode_push,
};
use confab_store::{
    AttributeChange, Conversation, HistoryQuery, NewRoom, RoomError, StoredRoomMessage,
};

use super::{Ending, Session, slow};
use crate::envelope::{
    Envelope, RoomClass, publish_attribute_deletes, publish_room_event, room_topic,
};
use crate::send::{self, Outgoing, Target};
use crate::state::Metrics;
use crate::validate;
use crate::wire::{wire_history, wire_room};
use confab_conn::outbox::Class;

/// Longest room destroy delay: 3 hours (SPEC §4).
const MAX_DESTROY_DELAY_SECS: u32 = 3 * 3600;
/// Room messages pushed per catch-up read.
const CATCH_UP_PAGE: usize = 256;
/// How many times a join catches up again to where the room is on this node
/// before it joins anyway (a room far busier than a catch-up is fast).
const MAX_JOIN_ROUNDS: u32 = 8;
/// Bytes of message bodies per catch-up frame.
const CATCH_UP_FRAME_BYTES: usize = 64 * 1024;

/// The `receiveRoomMessage` envelope of an unstored room send.
fn live_room_envelope(
    room_id: &str,
    send: &Outgoing,
    sender: &str,
    message_id: u64,
    now_ms: i64,
    class: RoomClass,
) -> Bytes {
    let push = Push::ReceiveRoomMessage(ReceiveRoomMessage {
        from_room_id: room_id.to_owned(),
        message_list: vec![WireMessage {
            kind: send.kind,
            message: send.body.clone(),
            message_id,
            local_message_id: send.local_message_id,
            sender_user_id: sender.to_owned(),
            timestamp: now_ms,
            conversation_id: room_id.to_owned(),
            conversation_type: ConversationType::Room,
            conversation_seq: 0,
            inbox_seq: None,
            priority: send.priority,
        }],
    });
    Envelope::Room {
        class,
        sender: sender.to_owned(),
        frame: Bytes::from(encode_push(&push)),
    }
    .encode()
}

fn attribute_updates(
    set: &[(String, String)],
    deleted: &[String],
) -> Vec<RoomAttributesUpdateInfo> {
    let mut infos = Vec::new();
    if !set.is_empty() {
        infos.push(RoomAttributesUpdateInfo {
            action: 0,
            room_attributes: set.iter().cloned().collect(),
        });
    }
    if !deleted.is_empty() {
        infos.push(RoomAttributesUpdateInfo {
            action: 1,
            room_attributes: deleted.iter().map(|k| (k.clone(), String::new())).collect(),
        });
    }
    infos
}

impl Session {
    fn app_user(&self) -> Option<(std::sync::Arc<crate::state::App>, String)> {
        self.login
            .as_ref()
            .map(|l| (l.app.clone(), l.user_id.clone()))
    }

    fn user_name(&self) -> String {
        self.login
            .as_ref()
            .map(|l| l.user_name.clone())
            .unwrap_or_default()
    }

    /// Validates a room's ID and name.
    fn check_room_info(info: &RoomInfo) -> Result<(), String> {
        validate::room_id("roomID", &info.room_id)?;
        validate::name("roomName", &info.room_name)
    }

    /// The code for a room that this session is not in: 6000301 if it does not
    /// exist, else `not_member`.
    async fn not_in_room(&self, id: u64, room_id: &str, not_member: ErrorCode) -> Ending {
        let (app, _) = self.app_user()?;
        match self.shared.store.room(app.id, room_id).await {
            Ok(None) => self.error(
                id,
                ErrorCode::RoomNotExist,
                format!("room {room_id} does not exist"),
            ),
            Ok(Some(_)) => self.error(
                id,
                not_member,
                format!("you are not a member of room {room_id}"),
            ),
            Err(e) => self.error(
                id,
                ErrorCode::RoomInternalError,
                format!("room lookup failed: {e}"),
            ),
        }
    }

    /// Makes this session a local member of the room: listens to its topic and,
    /// when `last_seq` is given, pushes what was missed after it, in order, before
    /// any live message.
    pub(super) async fn attach_room(
        &mut self,
        room_id: &str,
        head: u64,
        last_seq: Option<u64>,
    ) -> Ending {
        let (app, _) = self.app_user()?;
        let key = (app.id, room_id.to_owned());
        let hold = self.shared.rooms.sequencer.hold(&key, head).await;
        let upto = hold.last_published().max(head);
        // A busy room may hold messages up to `upto` for its members (this
        // session among them when it rejoins): out before the catch-up.
        self.shared.hub.flush_room(app.id, room_id);
        // The room may already be further on this node than this catch-up
        // went (other members, other nodes' messages): catch up to where it
        // is, then join, so the session misses nothing in between.
        let mut upto = upto;
        let mut after = last_seq;
        let mut rounds = 0;
        loop {
            if let Some(after) = after.as_mut() {
                if self.room_catch_up(room_id, after, upto).await.is_err() {
                    return slow();
                }
            }
            let must_follow = after.is_some() && rounds < MAX_JOIN_ROUNDS;
            match self
                .shared
                .hub
                .join_room(app.id, room_id, self.link(), upto, must_follow)
            {
                Ok(()) => break,
                Err(room_last) => {
                    upto = room_last;
                    rounds += 1;
                }
            }
        }
        drop(hold);
        if self.rooms.insert(room_id.to_owned()) {
            if let Err(e) = self
                .shared
                .broker
                .subscribe(&room_topic(app.id, room_id))
                .await
            {
                // The broker is down: subscribed when it is back.
                tracing::warn!(error = %e, "room subscribe failed; retried when the broker is back");
                self.unsubscribed_rooms.push(room_id.to_owned());
            }
            // What other nodes published before this node listened (its first
            // member's join) never came: the room reads the store once.
            self.shared.hub.check_room(app.id, room_id);
        }
        None
    }

    /// Pushes the room's stored messages after `*after` up to `upto`, in order
    /// (a `roomSyncGap` for what retention removed), at the client's reading
    /// pace; `Err` when the client is too slow.
    async fn room_catch_up(&mut self, room_id: &str, after: &mut u64, upto: u64) -> Result<(), ()> {
        let Some((app, _)) = self.app_user() else {
            return Ok(());
        };
        while *after < upto {
            let page = match self
                .shared
                .store
                .room_messages_after(app.id, room_id, *after, CATCH_UP_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "room catch-up failed");
                    break;
                }
            };
            let Some(first) = page.first() else {
                // Retention removed the rest.
                let gap = Push::RoomSyncGap(RoomSyncGap {
                    room_id: room_id.to_owned(),
                    from_seq: *after + 1,
                    to_seq: upto,
                });
                if self.push_paced(&gap).await.is_err() {
                    return Err(());
                }
                break;
            };
            if first.seq > *after + 1 {
                let gap = Push::RoomSyncGap(RoomSyncGap {
                    room_id: room_id.to_owned(),
                    from_seq: *after + 1,
                    to_seq: first.seq - 1,
                });
                if self.push_paced(&gap).await.is_err() {
                    return Err(());
                }
            }
            let page: Vec<StoredRoomMessage> = page.into_iter().filter(|m| m.seq <= upto).collect();
            if page.is_empty() {
                break;
            }
            // Frames cut at CATCH_UP_FRAME_BYTES of bodies, queued at the
            // client's reading pace.
            let mut batch = Vec::new();
            let mut bytes = 0;
            let count = page.len();
            for (i, m) in page.into_iter().enumerate() {
                *after = m.seq;
                bytes += m.body.len();
                batch.push(wire_room(m));
                if bytes >= CATCH_UP_FRAME_BYTES || i + 1 == count {
                    let push = Push::ReceiveRoomMessage(ReceiveRoomMessage {
                        message_list: std::mem::take(&mut batch),
                        from_room_id: room_id.to_owned(),
                    });
                    if self.push_paced(&push).await.is_err() {
                        return Err(());
                    }
                    bytes = 0;
                }
            }
        }
        Ok(())
    }

    /// Stops listening to a room locally.
    pub(super) async fn detach_room(&mut self, room_id: &str) {
        let Some((app, _)) = self.app_user() else {
            return;
        };
        self.shared.hub.leave_room(app.id, room_id, self.id);
        let never_subscribed = self.unsubscribed_rooms.iter().position(|r| r == room_id);
        if let Some(at) = never_subscribed {
            self.unsubscribed_rooms.swap_remove(at);
        }
        if self.rooms.remove(room_id) && never_subscribed.is_none() {
            if let Err(e) = self
                .shared
                .broker
                .unsubscribe(&room_topic(app.id, room_id))
                .await
            {
                tracing::warn!(error = %e, "room unsubscribe failed");
            }
        }
    }

    /// Subscribes the rooms whose subscription failed (the broker is back),
    /// each then filled from the store on this node.
    pub(super) async fn subscribe_failed_rooms(&mut self) {
        let Some((app, _)) = self.app_user() else {
            return;
        };
        for room_id in std::mem::take(&mut self.unsubscribed_rooms) {
            match self
                .shared
                .broker
                .subscribe(&room_topic(app.id, &room_id))
                .await
            {
                Ok(()) => self.shared.hub.check_room(app.id, &room_id),
                Err(e) => {
                    tracing::warn!(error = %e, "room subscribe failed again");
                    self.unsubscribed_rooms.push(room_id);
                }
            }
        }
    }

    /// After login: the user's rooms (kept through a reconnect's grace period) come
    /// back, each announced with `roomStateChanged` Connected.
    pub(super) async fn restore_rooms(&mut self, room_seqs: &BTreeMap<String, u64>) -> Ending {
        let (app, user) = self.app_user()?;
        if let Err(e) = self
            .shared
            .store
            .set_member_offline(app.id, &user, None)
            .await
        {
            tracing::warn!(error = %e, "marking the member online failed");
        }
        let rooms = match self.shared.store.user_rooms(app.id, &user).await {
            Ok(rooms) => rooms,
            Err(e) => {
                tracing::warn!(error = %e, "reading the user's rooms failed");
                return None;
            }
        };
        for room in rooms {
            let last = room_seqs.get(&room.room_id).copied();
            if let Some(end) = self.attach_room(&room.room_id, room.seq_head, last).await {
                return Some(end);
            }
            let push = Push::RoomStateChanged(RoomStateChanged {
                room_id: room.room_id,
                state: 2,
                event: 0,
                room_seq: room.seq_head,
            });
            if self.push(&push, Class::Keep).is_err() {
                return slow();
            }
        }
        None
    }

    /// At the end of a session: rooms are detached; on logout they are left, on a
    /// lost connection they are kept for the grace period.
    pub(super) async fn release_rooms(&mut self, logout: bool, kicked: bool) {
        let Some((app, user)) = self.app_user() else {
            return;
        };
        let rooms: Vec<String> = self.rooms.iter().cloned().collect();
        for room in &rooms {
            self.detach_room(room).await;
        }
        if logout {
            let now = self.shared.clock.now_ms();
            match self.shared.store.user_rooms(app.id, &user).await {
                Ok(all) => {
                    for room in all {
                        self.leave_in_store(&app, &user, &room.room_id, now)
                            .await
                            .ok();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "leaving rooms at logout failed"),
            }
        } else if !kicked && !self.shared.hub.has_other_session(app.id, &user, self.id) {
            // The connection was lost: the rooms are kept for the grace period. Not
            // when another session of the user is already here (it owns them now).
            let now = self.shared.clock.now_ms();
            if let Err(e) = self
                .shared
                .store
                .set_member_offline(app.id, &user, Some(now))
                .await
            {
                tracing::warn!(error = %e, "marking the member offline failed");
            }
        }
    }

    async fn leave_in_store(
        &self,
        app: &crate::state::App,
        user: &str,
        room_id: &str,
        now: i64,
    ) -> Result<(), RoomError> {
        let left = self
            .shared
            .store
            .leave_room(app.id, room_id, user, now)
            .await?;
        self.shared.rooms.events.left(
            app.id,
            room_id,
            UserInfo {
                user_id: user.to_owned(),
                user_name: self.user_name(),
            },
        );
        if !left.removed_attributes.is_empty() {
            publish_attribute_deletes(
                self.shared.broker.as_ref(),
                app.id,
                room_id,
                &left.removed_attributes,
            )
            .await;
        }
        Ok(())
    }

    /// Checks a room to create: its ID, name and destroy delay.
    fn check_new_room(info: &RoomInfo, config: &RoomAdvancedConfig) -> Result<(), String> {
        Self::check_room_info(info)?;
        if config.room_destroy_delay_time > MAX_DESTROY_DELAY_SECS {
            return Err(format!(
                "roomDestroyDelayTime: at most {MAX_DESTROY_DELAY_SECS} seconds, got {}",
                config.room_destroy_delay_time
            ));
        }
        Ok(())
    }

    /// Creates the room, joins it and announces the join.
    async fn create(
        &mut self,
        info: &RoomInfo,
        config: &RoomAdvancedConfig,
    ) -> Result<RoomJoinedReply, RoomError> {
        let Some((app, user)) = self.app_user() else {
            return Err(RoomError::NotMember);
        };
        let room = self
            .shared
            .store
            .create_room(
                NewRoom {
                    app_id: app.id,
                    room_id: info.room_id.clone(),
                    room_name: info.room_name.clone(),
                    creator: user.clone(),
                    creator_name: self.user_name(),
                    attributes: config.room_attributes.clone().into_iter().collect(),
                    destroy_delay_secs: config.room_destroy_delay_time,
                    now_ms: self.shared.clock.now_ms(),
                },
                app.room_limits(),
            )
            .await?;
        // Without a catch-up, attaching pushes nothing and cannot fail.
        let _ = self.attach_room(&room.room_id, room.seq_head, None).await;
        self.shared.rooms.events.joined(
            app.id,
            &room.room_id,
            UserInfo {
                user_id: user,
                user_name: self.user_name(),
            },
        );
        Ok(RoomJoinedReply {
            room_info: RoomInfo {
                room_id: room.room_id,
                room_name: room.room_name,
            },
            room_seq: room.seq_head,
            created: true,
        })
    }

    /// The code and message for a failed create (or the create step of enter).
    fn create_failure(e: &RoomError, room_id: &str, internal: ErrorCode) -> (ErrorCode, String) {
        match e {
            RoomError::Exists => (
                ErrorCode::RoomAlreadyExists,
                format!("room {room_id} already exists"),
            ),
            RoomError::AppRoomLimit(_) => (ErrorCode::RoomCountLimit, e.to_string()),
            RoomError::UserRoomLimit(_) => (ErrorCode::UserRoomLimit, e.to_string()),
            RoomError::AttributeLimit(m) => {
                (ErrorCode::ParamInvalid, format!("roomAttributes: {m}"))
            }
            _ => (internal, format!("the room could not be created: {e}")),
        }
    }

    pub(super) async fn create_room(&mut self, id: u64, req: CreateRoomRequest) -> Ending {
        if let Err(msg) = Self::check_new_room(&req.room_info, &req.config) {
            return self.error(id, ErrorCode::ParamInvalid, msg);
        }
        match self.create(&req.room_info, &req.config).await {
            Ok(reply) => self.reply(&Reply::ok(id, &reply)),
            Err(e) => {
                let (code, msg) =
                    Self::create_failure(&e, &req.room_info.room_id, ErrorCode::RoomCreateFailed);
                self.error(id, code, msg)
            }
        }
    }

    /// Joins (or rejoins) a room; `Err` carries the reply for a failure.
    async fn join(
        &mut self,
        id: u64,
        room_id: &str,
        last_seq: Option<u64>,
    ) -> Result<RoomJoinedReply, Reply> {
        let Some((app, user)) = self.app_user() else {
            return Err(Reply::error(id, ErrorCode::NotLoggedIn, "log in first"));
        };
        let joined = self
            .shared
            .store
            .join_room(
                app.id,
                room_id,
                &user,
                &self.user_name(),
                self.shared.clock.now_ms(),
                app.room_limits(),
            )
            .await
            .map_err(|e| {
                let (code, msg) = match &e {
                    RoomError::NotFound => (
                        ErrorCode::RoomJoinNotExist,
                        format!("room {room_id} does not exist"),
                    ),
                    RoomError::UserRoomLimit(_) => (ErrorCode::UserRoomLimit, e.to_string()),
                    RoomError::RoomFull(_) => (ErrorCode::Failed, e.to_string()),
                    _ => (
                        ErrorCode::RoomInternalError,
                        format!("joining the room failed: {e}"),
                    ),
                };
                Reply::error(id, code, msg)
            })?;
        let room = joined.room;
        // A rejoin without lastSeq only re-attaches (no catch-up).
        if let Some(end) = self
            .attach_room(&room.room_id, room.seq_head, last_seq)
            .await
        {
            // The client stopped reading its catch-up: it is disconnected as slow
            // after this reply and catches up again when it reconnects.
            self.pending_end = Some(end);
            return Err(Reply::error(
                id,
                ErrorCode::RoomInternalError,
                "the room's catch-up could not be delivered",
            ));
        }
        if !joined.already_member {
            self.shared.rooms.events.joined(
                app.id,
                &room.room_id,
                UserInfo {
                    user_id: user,
                    user_name: self.user_name(),
                },
            );
        }
        Ok(RoomJoinedReply {
            room_info: RoomInfo {
                room_id: room.room_id,
                room_name: room.room_name,
            },
            room_seq: room.seq_head,
            created: false,
        })
    }

    pub(super) async fn join_room(&mut self, id: u64, req: JoinRoomRequest) -> Ending {
        if let Err(msg) = validate::room_id("roomID", &req.room_id) {
            return self.error(id, ErrorCode::ParamInvalid, msg);
        }
        match self.join(id, &req.room_id, req.last_seq).await {
            Ok(reply) => self.reply(&Reply::ok(id, &reply)),
            Err(reply) => self.reply(&reply),
        }
    }

    pub(super) async fn enter_room(&mut self, id: u64, req: EnterRoomRequest) -> Ending {
        if let Err(msg) = Self::check_new_room(&req.room_info, &req.config) {
            return self.error(id, ErrorCode::ParamInvalid, msg);
        }
        // Join, else create; another member may create it in between, so retry.
        for _ in 0..3 {
            match self.join(id, &req.room_info.room_id, req.last_seq).await {
                Ok(reply) => return self.reply(&Reply::ok(id, &reply)),
                Err(reply) if reply.code == ErrorCode::RoomJoinNotExist => {}
                Err(reply) => return self.reply(&reply),
            }
            match self.create(&req.room_info, &req.config).await {
                Ok(reply) => return self.reply(&Reply::ok(id, &reply)),
                Err(RoomError::Exists) => {}
                Err(e) => {
                    let (code, msg) = Self::create_failure(
                        &e,
                        &req.room_info.room_id,
                        ErrorCode::RoomInternalError,
                    );
                    return self.error(id, code, msg);
                }
            }
        }
        self.error(
            id,
            ErrorCode::RoomInternalError,
            "the room kept appearing and disappearing; try again",
        )
    }

    pub(super) async fn leave_room(&mut self, id: u64, req: RoomIdRequest) -> Ending {
        let (app, user) = self.app_user()?;
        if let Err(msg) = validate::room_id("roomID", &req.room_id) {
            return self.error(id, ErrorCode::ParamInvalid, msg);
        }
        let now = self.shared.clock.now_ms();
        match self.leave_in_store(&app, &user, &req.room_id, now).await {
            Ok(()) => {
                self.detach_room(&req.room_id).await;
                self.reply(&Reply::ok(
                    id,
                    &RoomIdRequest {
                        room_id: req.room_id,
                    },
                ))
            }
            Err(RoomError::NotFound) => self.error(
                id,
                ErrorCode::RoomNotExist,
                format!("room {} does not exist", req.room_id),
            ),
            Err(RoomError::NotMember) => self.error(
                id,
                ErrorCode::RoomLeaveFailed,
                format!("you are not a member of room {}", req.room_id),
            ),
            Err(e) => self.error(
                id,
                ErrorCode::RoomInternalError,
                format!("leaving the room failed: {e}"),
            ),
        }
    }

    /// Checks membership for a query: `Some(ending)` answers the request.
    async fn require_member(&self, id: u64, room_id: &str) -> Option<Ending> {
        if let Err(msg) = validate::room_id("roomID", room_id) {
            return Some(self.error(id, ErrorCode::ParamInvalid, msg));
        }
        if self.rooms.contains(room_id) {
            // The store is the authority (a grace expiry may have removed the member).
            let (app, user) = self.app_user()?;
            match self.shared.store.is_member(app.id, room_id, &user).await {
                Ok(true) => return None,
                Ok(false) => {}
                Err(e) => {
                    return Some(self.error(
                        id,
                        ErrorCode::RoomInternalError,
                        format!("membership check failed: {e}"),
                    ));
                }
            }
        }
        Some(self.not_in_room(id, room_id, ErrorCode::NotInRoom).await)
    }

    pub(super) async fn query_members(
        &mut self,
        id: u64,
        req: QueryRoomMemberListRequest,
    ) -> Ending {
        if let Some(end) = self.require_member(id, &req.room_id).await {
            return end;
        }
        let (app, _) = self.app_user()?;
        if req.config.count == 0 || req.config.count > 100 {
            return self.error(
                id,
                ErrorCode::ParamInvalid,
                format!("config.count: must be 1-100, got {}", req.config.count),
            );
        }
        let after = (!req.config.next_flag.is_empty()).then_some(req.config.next_flag.as_str());
        let count = req.config.count as usize;
        match self
            .shared
            .store
            .room_members(app.id, &req.room_id, after, count + 1)
            .await
        {
            Ok(mut members) => {
                let more = members.len() > count;
                members.truncate(count);
                let next_flag = if more {
                    members
                        .last()
                        .map(|m| m.user_id.clone())
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                self.reply(&Reply::ok(
                    id,
                    &QueryRoomMemberListReply {
                        room_id: req.room_id,
                        member_list: members
                            .into_iter()
                            .map(|m| UserInfo {
                                user_id: m.user_id,
                                user_name: m.user_name,
                            })
                            .collect(),
                        next_flag,
                    },
                ))
            }
            Err(e) => self.error(
                id,
                ErrorCode::RoomInternalError,
                format!("reading members failed: {e}"),
            ),
        }
    }

    pub(super) async fn query_count(&mut self, id: u64, req: RoomIdRequest) -> Ending {
        if let Some(end) = self.require_member(id, &req.room_id).await {
            return end;
        }
        let (app, _) = self.app_user()?;
        match self
            .shared
            .store
            .room_member_count(app.id, &req.room_id)
            .await
        {
            Ok(count) => self.reply(&Reply::ok(
                id,
                &RoomCountReply {
                    room_id: req.room_id,
                    count,
                },
            )),
            Err(e) => self.error(
                id,
                ErrorCode::RoomInternalError,
                format!("counting members failed: {e}"),
            ),
        }
    }

    async fn change_attributes(
        &mut self,
        id: u64,
        room_id: String,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
        config: RoomAttributesSetConfig,
        batch: bool,
    ) -> Ending {
        if let Some(end) = self.require_member(id, &room_id).await {
            return end;
        }
        let (app, user) = self.app_user()?;
        let change = AttributeChange {
            set: set.into_iter().collect(),
            delete,
            is_force: config.is_force,
            is_update_owner: config.is_update_owner,
            is_delete_after_owner_left: config.is_delete_after_owner_left,
        };
        match self
            .shared
            .store
            .change_room_attributes(app.id, &room_id, &user, change, app.room_limits())
            .await
        {
            Ok(changed) => {
                let infos = attribute_updates(&changed.set, &changed.deleted);
                if !infos.is_empty() {
                    let data = RoomAttributesUpdated {
                        room_id: room_id.clone(),
                        infos,
                    };
                    let push = if batch {
                        Push::RoomAttributesBatchUpdated(data)
                    } else {
                        Push::RoomAttributesUpdated(data)
                    };
                    publish_room_event(self.shared.broker.as_ref(), app.id, &room_id, &push).await;
                }
                self.reply(&Reply::ok(
                    id,
                    &RoomAttributesOperatedReply {
                        room_id,
                        error_keys: changed.error_keys,
                    },
                ))
            }
            Err(RoomError::AttributeLimit(m)) => {
                self.error(id, ErrorCode::ParamInvalid, format!("roomAttributes: {m}"))
            }
            Err(RoomError::NotFound) => self.error(
                id,
                ErrorCode::RoomNotExist,
                format!("room {room_id} does not exist"),
            ),
            Err(RoomError::NotMember) => self.error(
                id,
                ErrorCode::NotInRoom,
                format!("you are not a member of room {room_id}"),
            ),
            Err(e) => self.error(
                id,
                ErrorCode::RoomInternalError,
                format!("changing attributes failed: {e}"),
            ),
        }
    }

    pub(super) async fn set_attributes(
        &mut self,
        id: u64,
        req: SetRoomAttributesRequest,
    ) -> Ending {
        if req.room_attributes.is_empty() {
            return self.error(
                id,
                ErrorCode::ParamInvalid,
                "roomAttributes: must not be empty",
            );
        }
        self.change_attributes(
            id,
            req.room_id,
            req.room_attributes,
            Vec::new(),
            req.config,
            false,
        )
        .await
    }

    pub(super) async fn delete_attributes(
        &mut self,
        id: u64,
        req: DeleteRoomAttributesRequest,
    ) -> Ending {
        if req.keys.is_empty() {
            return self.error(id, ErrorCode::ParamInvalid, "keys: must not be empty");
        }
        self.change_attributes(
            id,
            req.room_id,
            BTreeMap::new(),
            req.keys,
            req.config,
            false,
        )
        .await
    }

    pub(super) async fn batch_attributes(
        &mut self,
        id: u64,
        req: BatchRoomAttributesRequest,
    ) -> Ending {
        if req.room_attributes.is_empty() && req.keys.is_empty() {
            return self.error(
                id,
                ErrorCode::ParamInvalid,
                "roomAttributes and keys: nothing to change",
            );
        }
        self.change_attributes(
            id,
            req.room_id,
            req.room_attributes,
            req.keys,
            req.config,
            true,
        )
        .await
    }

    pub(super) async fn query_attributes(&mut self, id: u64, req: RoomIdRequest) -> Ending {
        if let Some(end) = self.require_member(id, &req.room_id).await {
            return end;
        }
        let (app, _) = self.app_user()?;
        match self
            .shared
            .store
            .room_attributes(app.id, &req.room_id)
            .await
        {
            Ok(attrs) => self.reply(&Reply::ok(
                id,
                &RoomAttributesReply {
                    room_id: req.room_id,
                    room_attributes: attrs.into_iter().collect(),
                },
            )),
            Err(e) => self.error(
                id,
                ErrorCode::RoomInternalError,
                format!("reading attributes failed: {e}"),
            ),
        }
    }

    pub(super) async fn send_room(&mut self, id: u64, req: SendRoomMessageRequest) -> Ending {
        // A stored send may arrive while earlier ones are in flight (nothing was
        // drained for it): its errors are answered after them.
        let (app, sender) = self.app_user()?;
        let send = Outgoing::room(id, req);
        if let Err(msg) = send.validate(&app.limits) {
            return self.refuse(id, ErrorCode::ParamInvalid, msg).await;
        }
        let Target::Room(room_id) = &send.to else {
            return None;
        };
        let room_id = room_id.clone();
        if !self.rooms.contains(&room_id) {
            if let Some(end) = self.drain_sends().await {
                return Some(end);
            }
            return self.not_in_room(id, &room_id, ErrorCode::NotInRoom).await;
        }
        let now_ms = self.shared.clock.now_ms();
        let topic = room_topic(app.id, &room_id);
        if send.kind == MessageType::Barrage {
            // Unreliable by definition: past the per-user rate the excess is dropped.
            let message_id = self.shared.next_live_message_id();
            if app.barrage.check_key(&sender).is_ok() {
                let envelope = live_room_envelope(
                    &room_id,
                    &send,
                    &sender,
                    message_id,
                    now_ms,
                    RoomClass::Barrage,
                );
                if let Err(e) = self.shared.broker.publish(&topic, envelope).await {
                    tracing::warn!(error = %e, "barrage publication failed");
                }
            }
            return self.reply(&Reply::ok(
                id,
                &SendMessageReply {
                    message_id,
                    local_message_id: send.local_message_id,
                    timestamp: now_ms,
                    conversation_seq: 0,
                },
            ));
        }
        if let Err(msg) = send::check_rate(&self.shared, &app, &sender).await {
            return self.refuse(id, ErrorCode::ServerRateLimit, msg).await;
        }
        if send.kind == MessageType::Command {
            if let Some(first) = self.live_duplicate(send.local_message_id) {
                return self.reply(&Reply::ok(id, &first));
            }
            let message_id = self.shared.next_live_message_id();
            let envelope = live_room_envelope(
                &room_id,
                &send,
                &sender,
                message_id,
                now_ms,
                RoomClass::Live(send.priority),
            );
            if let Err(e) = self.shared.broker.publish(&topic, envelope).await {
                tracing::warn!(error = %e, "room publication failed");
                return self.error(
                    id,
                    ErrorCode::MessageSendFailed,
                    "the broker is unavailable",
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
            return self.reply(&Reply::ok(id, &reply));
        }
        // Text: stored, then published in seq order (see `send`).
        self.send_stored(&app, &sender, send).await
    }

    pub(super) async fn query_history(&mut self, id: u64, req: QueryHistoryRequest) -> Ending {
        let (app, user) = self.app_user()?;
        if req.config.count == 0 || req.config.count > 100 {
            return self.error(
                id,
                ErrorCode::ParamInvalid,
                format!("config.count: must be 1-100, got {}", req.config.count),
            );
        }
        let conversation = match req.conversation_type {
            ConversationType::Peer => {
                if let Err(msg) = validate::user_id("conversationID", &req.conversation_id) {
                    return self.error(id, ErrorCode::ParamInvalid, msg);
                }
                Conversation::Peer(user.clone(), req.conversation_id.clone())
            }
            ConversationType::Room => {
                if let Some(end) = self.require_member(id, &req.conversation_id).await {
                    return end;
                }
                Conversation::Room(req.conversation_id.clone())
            }
        };
        let query = HistoryQuery {
            app_id: app.id,
            conversation,
            anchor: req.config.next_message.map(|m| m.conversation_seq),
            count: req.config.count as usize,
            reverse: req.config.reverse,
        };
        let page = match self.shared.store.history(query).await {
            Ok(page) => page,
            Err(e) => {
                let code = match req.conversation_type {
                    ConversationType::Room => ErrorCode::RoomInternalError,
                    ConversationType::Peer => ErrorCode::Failed,
                };
                return self.error(id, code, format!("reading history failed: {e}"));
            }
        };
        let conversation_type = req.conversation_type;
        let message_list = page
            .into_iter()
            .map(|m| wire_history(m, &req.conversation_id, conversation_type))
            .collect();
        self.reply(&Reply::ok(
            id,
            &QueryHistoryReply {
                conversation_id: req.conversation_id,
                conversation_type,
                message_list,
            },
        ))
    }
}
