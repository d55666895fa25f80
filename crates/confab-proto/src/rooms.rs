//! Payloads of room requests, replies and pushes (SPEC §4), with ZIM's names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::frame::{Message, MessageType, Priority};

/// `{roomID, roomName}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// 1–128 bytes of ASCII letters, digits and `!#$%&()+-:;<=.>?@[]^_{}|~`.
    #[serde(rename = "roomID")]
    pub room_id: String,
    /// At most 64 bytes of UTF-8.
    #[serde(rename = "roomName", default)]
    pub room_name: String,
}

/// Options of `createRoom` and `enterRoom`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RoomAdvancedConfig {
    /// Initial attributes, owned by the creator.
    #[serde(rename = "roomAttributes", default)]
    pub room_attributes: BTreeMap<String, String>,
    /// Seconds the room lives on after its last member leaves (0–10800).
    #[serde(rename = "roomDestroyDelayTime", default)]
    pub room_destroy_delay_time: u32,
}

/// `createRoom`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRoomRequest {
    /// The room to create.
    #[serde(rename = "roomInfo")]
    pub room_info: RoomInfo,
    /// Options.
    #[serde(default)]
    pub config: RoomAdvancedConfig,
}

/// `joinRoom`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRoomRequest {
    /// The room.
    #[serde(rename = "roomID")]
    pub room_id: String,
    /// The last room seq this client saw (after a reconnect); missed messages follow.
    #[serde(rename = "lastSeq", default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
}

/// `enterRoom`: create the room if it does not exist, else join it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnterRoomRequest {
    /// The room.
    #[serde(rename = "roomInfo")]
    pub room_info: RoomInfo,
    /// Options, used if the room is created.
    #[serde(default)]
    pub config: RoomAdvancedConfig,
    /// As for `joinRoom`.
    #[serde(rename = "lastSeq", default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
}

/// Reply to `createRoom`, `joinRoom` and `enterRoom`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomJoinedReply {
    /// The room.
    #[serde(rename = "roomInfo")]
    pub room_info: RoomInfo,
    /// The room's newest message seq at the time of joining.
    #[serde(rename = "roomSeq")]
    pub room_seq: u64,
    /// Whether this request created the room.
    pub created: bool,
}

/// A request naming only a room: `leaveRoom`, `queryRoomOnlineMemberCount`,
/// `queryRoomAllAttributes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomIdRequest {
    /// The room.
    #[serde(rename = "roomID")]
    pub room_id: String,
}

/// Paging of `queryRoomMemberList`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberQueryConfig {
    /// Opaque; empty for the first page.
    #[serde(rename = "nextFlag", default)]
    pub next_flag: String,
    /// 1–100.
    pub count: u32,
}

/// `queryRoomMemberList`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRoomMemberListRequest {
    /// The room.
    #[serde(rename = "roomID")]
    pub room_id: String,
    /// Paging.
    pub config: MemberQueryConfig,
}

/// `{userID, userName}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The user.
    #[serde(rename = "userID")]
    pub user_id: String,
    /// Display name.
    #[serde(rename = "userName", default)]
    pub user_name: String,
}

/// Reply to `queryRoomMemberList`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRoomMemberListReply {
    /// The room.
    #[serde(rename = "roomID")]
    pub room_id: String,
    /// This page.
    #[serde(rename = "memberList")]
    pub member_list: Vec<UserInfo>,
    /// Pass back for the next page; empty when this is the last page.
    #[serde(rename = "nextFlag")]
    pub next_flag: String,
}

/// Reply to `queryRoomOnlineMemberCount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomCountReply {
    /// The room.
    #[serde(rename = "roomID")]
    pub room_id: String,
    /// Members in the room (including members within their reconnect grace period).
    pub count: u64,
}

/// Options of attribute changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RoomAttributesSetConfig {
    /// Change keys owned by other members too.
    #[serde(rename = "isForce", default)]
    pub is_force: bool,
    /// Take ownership of keys set.
    #[serde(rename = "isUpdateOwner", default)]
    pub is_update_owner: bool,
    /// Remove the keys set when the caller leaves the room.
    #[serde(rename = "isDeleteAfterOwnerLeft", default)]
    pub is_delete_after_owner_left: bool,
}

/// `setRoomAttributes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRoomAttributesRequest {
    /// The room.
    #[serde(rename = "roomID")]
    pub room_id: String,
    /// Keys and values to set.
    #[serde(rename = "roomAttributes")]
    pub room_attributes: BTreeMap<String, String>,
    /// Options.
    #[serde(default)]
    pub config: RoomAttributesSetConfig,
}

/// `deleteRoomAttributes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRoomAttributesRequest {
    /// The room.
    #[serde(rename = "roomID")]
    pub room_id: String,
    /// Keys to delete.
    pub keys: Vec<String>,
    /// Options (`isForce` applies).
    #[serde(default)]
    pub config: RoomAttributesSetConfig,
}

/// `batchRoomAttributes`: sets and deletes applied together (ZIM's
/// begin/endRoomAttributesBatchOperation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRoomAttributesRequest {
    /// The room.
    #[serde(rename = "roomID")]
    pub room_id: String,
    /// Keys and values to set.
    #[serde(rename = "roomAttributes", default)]
    pub room_attributes: BTreeMap<String, String>,
    /// Keys to delete.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Options.
    #[serde(default)]
    pub config: RoomAttributesSetConfig,
}

/// Reply to attribute changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomAttributesOperatedReply {
    /// The room.
    #[serde(rename = "roomID")]
    pub room_id: String,
    /// Keys that could not be changed (owned by another member, without `isForce`).
    #[serde(rename = "errorKeys")]
    pub error_keys: Vec<String>,
}

/// Reply to `queryRoomAllAttributes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomAttributesReply {
    /// The room.
    #[serde(rename = "roomID")]
    pub room_id: String,
    /// All attributes.
    #[serde(rename = "roomAttributes")]
    pub room_attributes: BTreeMap<String, String>,
}

/// `sendRoomMessage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRoomMessageRequest {
    /// The room; the sender must be a member.
    #[serde(rename = "roomID")]
    pub room_id: String,
    /// Text (1), Command (2) or Barrage (20).
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// Text, or base64 bytes for Command.
    pub message: String,
    /// Idempotency key, as for peer messages.
    #[serde(rename = "localMessageID")]
    pub local_message_id: u64,
    /// Priority of live pushes.
    #[serde(default)]
    pub priority: Priority,
}

/// The message to page from in `queryHistoryMessage`: any message object with its
/// `conversationSeq` (other fields are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextMessage {
    /// The anchor position.
    #[serde(rename = "conversationSeq")]
    pub conversation_seq: u64,
}

/// Paging of `queryHistoryMessage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryConfig {
    /// Continue after (or, with `reverse`, before) this message; absent = from the
    /// start (or the newest).
    #[serde(rename = "nextMessage", default)]
    pub next_message: Option<NextMessage>,
    /// 1–100.
    pub count: u32,
    /// Newest first.
    #[serde(default)]
    pub reverse: bool,
}

/// `queryHistoryMessage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryHistoryRequest {
    /// The other user (Peer) or the room (Room).
    #[serde(rename = "conversationID")]
    pub conversation_id: String,
    /// 0 Peer, 1 Room.
    #[serde(rename = "conversationType")]
    pub conversation_type: crate::frame::ConversationType,
    /// Paging.
    pub config: HistoryConfig,
}

/// Reply to `queryHistoryMessage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryHistoryReply {
    /// As asked.
    #[serde(rename = "conversationID")]
    pub conversation_id: String,
    /// As asked.
    #[serde(rename = "conversationType")]
    pub conversation_type: crate::frame::ConversationType,
    /// The page, in the order asked.
    #[serde(rename = "messageList")]
    pub message_list: Vec<Message>,
}

/// Push `receiveRoomMessage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveRoomMessage {
    /// Messages of one room, oldest first.
    #[serde(rename = "messageList")]
    pub message_list: Vec<Message>,
    /// The room.
    #[serde(rename = "fromRoomID")]
    pub from_room_id: String,
}

/// Pushes `roomMemberJoined` and `roomMemberLeft`: members, batched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMembersChanged {
    /// The room.
    #[serde(rename = "roomID")]
    pub room_id: String,
    /// Who joined or left.
    #[serde(rename = "memberList")]
    pub member_list: Vec<UserInfo>,
}

/// Push `roomStateChanged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomStateChanged {
    /// The room.
    #[serde(rename = "roomID")]
    pub room_id: String,
    /// Disconnected 0, Connecting 1, Connected 2.
    pub state: u8,
    /// Success 0, NetworkInterrupted 1, NetworkDisconnected 2, RoomNotExist 3,
    /// ActiveCreate 4, CreateFailed 5, ActiveEnter 6, EnterFailed 7, KickedOut 8.
    pub event: u8,
    /// The room's newest seq, for catch-up.
    #[serde(rename = "roomSeq", default)]
    pub room_seq: u64,
}

/// One attribute update: action Set 0 or Delete 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomAttributesUpdateInfo {
    /// Set 0, Delete 1.
    pub action: u8,
    /// The keys (and for Set, the new values; for Delete, empty strings).
    #[serde(rename = "roomAttributes")]
    pub room_attributes: BTreeMap<String, String>,
}

/// Push `roomAttributesUpdated` (one update) and `roomAttributesBatchUpdated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomAttributesUpdated {
    /// The room.
    #[serde(rename = "roomID")]
    pub room_id: String,
    /// The updates, in order.
    #[serde(rename = "infos")]
    pub infos: Vec<RoomAttributesUpdateInfo>,
}

/// Push `roomSyncGap`: room messages `[fromSeq, toSeq]` were missed and are no
/// longer held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSyncGap {
    /// The room.
    #[serde(rename = "roomID")]
    pub room_id: String,
    /// First missing seq.
    #[serde(rename = "fromSeq")]
    pub from_seq: u64,
    /// Last missing seq.
    #[serde(rename = "toSeq")]
    pub to_seq: u64,
}

/// The start of every encoded `receiveRoomMessage` push ([`crate::frame::encode_push`]).
const ROOM_PUSH_HEAD: &[u8] = br#"{"v":1,"push":"receiveRoomMessage","data":{"messageList":["#;

/// Merges encoded `receiveRoomMessage` pushes of one room into one push without
/// decoding them: a node sending a busy room's messages to many receivers builds
/// one frame for several messages, once for all receivers.
#[derive(Debug, Clone)]
pub struct RoomPushMerger {
    /// What follows the message list: `],"fromRoomID":"…"}}`.
    tail: Vec<u8>,
}

impl RoomPushMerger {
    /// For pushes of `room_id`.
    #[must_use]
    pub fn new(room_id: &str) -> RoomPushMerger {
        let mut tail = br#"],"fromRoomID":"#.to_vec();
        serde_json::to_writer(&mut tail, room_id).expect("a string always serializes");
        tail.extend_from_slice(b"}}");
        RoomPushMerger { tail }
    }

    /// The messages of `frame` (the JSON between the list's brackets, possibly
    /// empty), or `None` if `frame` is not an encoded `receiveRoomMessage` push
    /// of this room.
    #[must_use]
    pub fn messages<'a>(&self, frame: &'a [u8]) -> Option<&'a [u8]> {
        frame
            .strip_prefix(ROOM_PUSH_HEAD)?
            .strip_suffix(self.tail.as_slice())
    }

    /// One push holding the messages of every list (each from
    /// [`RoomPushMerger::messages`]), in order.
    #[must_use]
    pub fn merge<'a>(&self, lists: impl IntoIterator<Item = &'a [u8]>) -> String {
        let mut out = ROOM_PUSH_HEAD.to_vec();
        let mut first = true;
        for list in lists {
            if list.is_empty() {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(list);
        }
        out.extend_from_slice(&self.tail);
        // Valid UTF-8: the head and tail are, and each list is a slice of a
        // `str` cut at ASCII brackets.
        String::from_utf8(out).unwrap_or_default()
    }
}
