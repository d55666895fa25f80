//! The frames that cross the WebSocket, as JSON text frames.
//!
//! Three shapes, each carrying the protocol version `v`:
//!
//! * a client **request**: `{"v":1,"id":7,"op":"login","data":{...}}`;
//! * the server's **reply** to it, with the same `id`:
//!   `{"v":1,"id":7,"code":0,"message":"ok","data":{...}}`;
//! * a server **push**, not asked for: `{"v":1,"push":"receivePeerMessage","data":{...}}`.
//!
//! Requests and pushes are closed enums ([`Request`], [`Push`]) generated from one
//! table each, so the op name, its payload type and its documentation cannot drift
//! apart. Replies carry their payload as raw JSON; the caller knows which op it
//! sent and decodes the payload with [`Reply::data_as`].

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ErrorCode;

pub use crate::message::*;
pub use crate::ops::*;
pub use crate::rooms::*;

/// The protocol version this crate speaks. Every frame carries it as `v`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Why a frame could not be decoded. The server answers it with
/// [`ErrorCode::ParamInvalid`] and [`DecodeError::to_string`] as the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The text is not a JSON object of the frame's shape.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The frame's `v` is not [`PROTOCOL_VERSION`].
    #[error("unsupported protocol version {found} (this server speaks {PROTOCOL_VERSION})")]
    Version {
        /// The version the frame named.
        found: u32,
    },
    /// The `op` (or `push`) names nothing this side knows.
    #[error("unknown {kind} \"{name}\"")]
    UnknownName {
        /// `op` or `push`.
        kind: &'static str,
        /// The name as received (truncated to 64 bytes).
        name: String,
    },
    /// The `data` does not fit the op's payload type.
    #[error("invalid data for {name}: {reason}")]
    Data {
        /// The op or push name.
        name: &'static str,
        /// serde's description of what was wrong.
        reason: String,
    },
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn parse_data<'a, T: Deserialize<'a>>(
    name: &'static str,
    data: Option<&'a RawValue>,
) -> Result<T, DecodeError> {
    let text = data.map_or("{}", RawValue::get);
    serde_json::from_str(text).map_err(|e| DecodeError::Data {
        name,
        reason: e.to_string(),
    })
}

macro_rules! frame_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $Enum:ident / $Names:ident ($kind:literal) {
            $( $(#[$doc:meta])* $Variant:ident($Payload:ty) = $name:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        $vis enum $Enum {
            $( $(#[$doc])* $Variant($Payload), )*
        }

        impl $Enum {
            /// Every wire name of this enum, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($name,)*];

            /// The wire name (`op` or `push`) of this value.
            #[must_use]
            pub fn name(&self) -> &'static str {
                match self { $( $Enum::$Variant(_) => $name, )* }
            }

            /// Builds a value from its wire name and raw `data` (absent data is `{}`).
            ///
            /// # Errors
            /// [`DecodeError::UnknownName`] for a name not in the table,
            /// [`DecodeError::Data`] when `data` does not fit the payload type.
            pub fn from_parts(name: &str, data: Option<&RawValue>) -> Result<Self, DecodeError> {
                match name {
                    $( $name => Ok($Enum::$Variant(parse_data($name, data)?)), )*
                    other => Err(DecodeError::UnknownName { kind: $kind, name: truncate(other, 64) }),
                }
            }

            fn serialize_data<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self { $( $Enum::$Variant(p) => p.serialize(s), )* }
            }
        }
    };
}

frame_enum! {
    /// A request from a client. Each is answered by exactly one [`Reply`] with the
    /// request's id. The sender of anything is always the session's own user: no
    /// request names its sender.
    pub enum Request / RequestNames ("op") {
        /// Log in on this connection. Must be the first request.
        Login(LoginRequest) = "login",
        /// Log out; the server replies, then closes the connection.
        Logout(Empty) = "logout",
        /// Replace the session's token with a fresh one before it expires.
        RenewToken(RenewTokenRequest) = "renewToken",
        /// Application-level heartbeat (WebSocket pings work too).
        Ping(Empty) = "ping",
        /// Send a one-to-one message.
        SendPeerMessage(SendPeerMessageRequest) = "sendPeerMessage",
        /// Acknowledge receipt of peer messages up to an inbox position.
        AckInbox(AckInboxRequest) = "ackInbox",
        /// Create a room and join it.
        CreateRoom(CreateRoomRequest) = "createRoom",
        /// Join an existing room.
        JoinRoom(JoinRoomRequest) = "joinRoom",
        /// Create the room if needed, then join it.
        EnterRoom(EnterRoomRequest) = "enterRoom",
        /// Leave a room.
        LeaveRoom(RoomIdRequest) = "leaveRoom",
        /// A page of a room's members.
        QueryRoomMemberList(QueryRoomMemberListRequest) = "queryRoomMemberList",
        /// How many members a room has.
        QueryRoomOnlineMemberCount(RoomIdRequest) = "queryRoomOnlineMemberCount",
        /// Set room attributes.
        SetRoomAttributes(SetRoomAttributesRequest) = "setRoomAttributes",
        /// Delete room attributes.
        DeleteRoomAttributes(DeleteRoomAttributesRequest) = "deleteRoomAttributes",
        /// Set and delete room attributes in one step.
        BatchRoomAttributes(BatchRoomAttributesRequest) = "batchRoomAttributes",
        /// All attributes of a room.
        QueryRoomAllAttributes(RoomIdRequest) = "queryRoomAllAttributes",
        /// Send a message to a room.
        SendRoomMessage(SendRoomMessageRequest) = "sendRoomMessage",
        /// A page of a conversation's stored messages.
        QueryHistoryMessage(QueryHistoryRequest) = "queryHistoryMessage",
    }
}

frame_enum! {
    /// A frame the server sends without being asked.
    pub enum Push / PushNames ("push") {
        /// The session's token expires soon; call `renewToken`.
        TokenWillExpire(TokenWillExpire) = "tokenWillExpire",
        /// One or more peer messages from one sender.
        ReceivePeerMessage(ReceivePeerMessage) = "receivePeerMessage",
        /// The client missed peer messages the server no longer holds.
        SyncGap(SyncGap) = "syncGap",
        /// Catch-up after login is complete: everything before `inboxSeq` was sent.
        SyncComplete(SyncComplete) = "syncComplete",
        /// The server is about to close the connection, and why.
        Disconnect(Disconnect) = "disconnect",
        /// One or more messages of one room.
        ReceiveRoomMessage(ReceiveRoomMessage) = "receiveRoomMessage",
        /// Members joined a room (batched).
        RoomMemberJoined(RoomMembersChanged) = "roomMemberJoined",
        /// Members left a room (batched).
        RoomMemberLeft(RoomMembersChanged) = "roomMemberLeft",
        /// The state of the client's membership in a room changed.
        RoomStateChanged(RoomStateChanged) = "roomStateChanged",
        /// A room's attributes changed (one update).
        RoomAttributesUpdated(RoomAttributesUpdated) = "roomAttributesUpdated",
        /// A room's attributes changed (a batch of updates).
        RoomAttributesBatchUpdated(RoomAttributesUpdated) = "roomAttributesBatchUpdated",
        /// Room messages were missed and are no longer held.
        RoomSyncGap(RoomSyncGap) = "roomSyncGap",
    }
}

/// A request with its envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestFrame {
    /// Chosen by the client, echoed in the reply. Unique per connection while pending.
    pub id: u64,
    /// What is asked.
    pub request: Request,
}

#[derive(Deserialize)]
struct RawRequest<'a> {
    v: Option<u32>,
    id: Option<u64>,
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// The envelope of a request, as far as it could be read, for answering a frame
/// that failed to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestDecodeError {
    /// The request id, when the frame had a readable one; answer to it (or to 0).
    pub id: Option<u64>,
    /// What was wrong.
    pub error: DecodeError,
}

impl fmt::Display for RequestDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for RequestDecodeError {}

impl RequestFrame {
    /// Decodes a client's text frame.
    ///
    /// # Errors
    /// A [`RequestDecodeError`] that keeps the id when one could be read, so the
    /// server can answer the right request.
    pub fn decode(text: &str) -> Result<Self, RequestDecodeError> {
        let raw: RawRequest<'_> = serde_json::from_str(text).map_err(|e| RequestDecodeError {
            id: None,
            error: DecodeError::Malformed(e.to_string()),
        })?;
        let fail = |error| RequestDecodeError { id: raw.id, error };
        let v = raw
            .v
            .ok_or_else(|| fail(DecodeError::Malformed("missing field `v`".into())))?;
        if v != PROTOCOL_VERSION {
            return Err(fail(DecodeError::Version { found: v }));
        }
        let id = raw
            .id
            .ok_or_else(|| fail(DecodeError::Malformed("missing field `id`".into())))?;
        let op = raw
            .op
            .as_deref()
            .ok_or_else(|| fail(DecodeError::Malformed("missing field `op`".into())))?;
        let request = Request::from_parts(op, raw.data).map_err(fail)?;
        Ok(RequestFrame { id, request })
    }

    /// Encodes the frame as JSON text.
    #[must_use]
    pub fn encode(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            v: u32,
            id: u64,
            op: &'static str,
            data: DataOf<'a, Request>,
        }
        serde_json::to_string(&Out {
            v: PROTOCOL_VERSION,
            id: self.id,
            op: self.request.name(),
            data: DataOf(&self.request),
        })
        .expect("request payloads always serialize")
    }
}

struct DataOf<'a, T>(&'a T);

impl Serialize for DataOf<'_, Request> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_data(s)
    }
}

impl Serialize for DataOf<'_, Push> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_data(s)
    }
}

/// The answer to one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// Protocol version.
    pub v: u32,
    /// The id of the request this answers (0 when the request's id was unreadable).
    pub id: u64,
    /// [`ErrorCode::Success`] or the reason it failed.
    pub code: ErrorCode,
    /// Human-readable detail; names the offending field for [`ErrorCode::ParamInvalid`].
    pub message: String,
    /// The op's result payload, present on success (see each op's `*Reply` type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

impl PartialEq for Reply {
    fn eq(&self, other: &Self) -> bool {
        self.v == other.v
            && self.id == other.id
            && self.code == other.code
            && self.message == other.message
            && self.data.as_deref().map(RawValue::get) == other.data.as_deref().map(RawValue::get)
    }
}

impl Reply {
    /// A success reply carrying `data`.
    #[must_use]
    pub fn ok<T: Serialize>(id: u64, data: &T) -> Reply {
        let json = serde_json::to_string(data).expect("reply payloads always serialize");
        Reply {
            v: PROTOCOL_VERSION,
            id,
            code: ErrorCode::Success,
            message: "ok".into(),
            data: Some(RawValue::from_string(json).expect("serde_json output is valid JSON")),
        }
    }

    /// A failure reply.
    #[must_use]
    pub fn error(id: u64, code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply {
            v: PROTOCOL_VERSION,
            id,
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Decodes the payload as the reply type of the op that was sent.
    ///
    /// # Errors
    /// When the payload does not fit `T` (an absent payload reads as `{}`).
    pub fn data_as<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.data.as_deref().map_or("{}", RawValue::get))
    }

    /// Encodes the reply as JSON text.
    #[must_use]
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("replies always serialize")
    }
}

/// Encodes a push as JSON text.
#[must_use]
pub fn encode_push(push: &Push) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        v: u32,
        push: &'static str,
        data: DataOf<'a, Push>,
    }
    serde_json::to_string(&Out {
        v: PROTOCOL_VERSION,
        push: push.name(),
        data: DataOf(push),
    })
    .expect("push payloads always serialize")
}

/// Anything the server sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    /// The answer to a request.
    Reply(Reply),
    /// A frame not asked for.
    Push(Push),
}

#[derive(Deserialize)]
struct RawServer<'a> {
    v: Option<u32>,
    id: Option<u64>,
    #[serde(borrow)]
    push: Option<Cow<'a, str>>,
    code: Option<ErrorCode>,
    message: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

impl ServerFrame {
    /// Decodes a server's text frame (for clients).
    ///
    /// # Errors
    /// When the text is not a reply or push of this protocol version.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let raw: RawServer<'_> =
            serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        match raw.v {
            Some(PROTOCOL_VERSION) => {}
            Some(found) => return Err(DecodeError::Version { found }),
            None => return Err(DecodeError::Malformed("missing field `v`".into())),
        }
        if let Some(name) = raw.push {
            return Ok(ServerFrame::Push(Push::from_parts(&name, raw.data)?));
        }
        let (Some(id), Some(code)) = (raw.id, raw.code) else {
            return Err(DecodeError::Malformed(
                "a server frame needs `push`, or `id` and `code`".into(),
            ));
        };
        Ok(ServerFrame::Reply(Reply {
            v: PROTOCOL_VERSION,
            id,
            code,
            message: raw.message.unwrap_or_default(),
            data: raw.data.map(RawValue::to_owned),
        }))
    }
}
