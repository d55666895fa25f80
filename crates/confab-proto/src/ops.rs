//! Payloads of requests, replies and pushes. Field names are ZIM's (camelCase,
//! `ID` upper-case); unknown fields are ignored so newer clients can talk to
//! older servers.

use serde::{Deserialize, Serialize};

use crate::frame::Message;

/// A payload with no fields: `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Empty {}

/// `login`: authenticate this connection as one user of one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    /// The app, as configured on the server.
    #[serde(rename = "appID")]
    pub app_id: u32,
    /// 1–32 bytes of ASCII letters, digits and `!#$%&()+-:;<=.>?@[]^_{}|~`.
    #[serde(rename = "userID")]
    pub user_id: String,
    /// Display name, at most 64 bytes of UTF-8.
    #[serde(rename = "userName", default)]
    pub user_name: String,
    /// A Token04 made with the app's ServerSecret for this AppID and userID.
    pub token: String,
    /// The last peer-inbox position this client has seen (from a previous session).
    /// When absent the server resumes from the last position the user acknowledged.
    #[serde(
        rename = "lastInboxSeq",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_inbox_seq: Option<u64>,
    /// After a reconnect: the last seq this client saw in each room it was in. The
    /// server restores the rooms the user is still a member of and pushes what was
    /// missed after these seqs.
    #[serde(
        rename = "roomSeqs",
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty"
    )]
    pub room_seqs: std::collections::BTreeMap<String, u64>,
}

/// Reply to `login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginReply {
    /// The logged-in user.
    #[serde(rename = "userID")]
    pub user_id: String,
    /// Server time in milliseconds since the Unix epoch.
    #[serde(rename = "serverTime")]
    pub server_time: i64,
    /// When the token expires, in seconds since the Unix epoch.
    #[serde(rename = "tokenExpire")]
    pub token_expire: i64,
    /// The newest position in this user's peer inbox. Messages after the resume
    /// position follow as `receivePeerMessage` pushes, then `syncComplete`.
    #[serde(rename = "inboxSeq")]
    pub inbox_seq: u64,
    /// How often the server pings, in milliseconds.
    #[serde(rename = "heartbeatIntervalMs")]
    pub heartbeat_interval_ms: u64,
}

/// `renewToken`: replace the session's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewTokenRequest {
    /// The new token, for the same AppID and userID.
    pub token: String,
}

/// Reply to `renewToken`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewTokenReply {
    /// The token now in force.
    pub token: String,
    /// Its expiry, in seconds since the Unix epoch.
    #[serde(rename = "tokenExpire")]
    pub token_expire: i64,
}

/// `sendPeerMessage`: send one message to one user of the same app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendPeerMessageRequest {
    /// The receiver; it need not be online, or ever have logged in.
    #[serde(rename = "toUserID")]
    pub to_user_id: String,
    /// Text (1) or Command (2).
    #[serde(rename = "type")]
    pub kind: crate::frame::MessageType,
    /// Text, or base64 bytes for Command.
    pub message: String,
    /// The sender's id for this message; a retry with the same id returns the
    /// first result and is never stored or delivered twice.
    #[serde(rename = "localMessageID")]
    pub local_message_id: u64,
    /// Priority of the live push (Command only).
    #[serde(default)]
    pub priority: crate::frame::Priority,
}

/// Reply to a message send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessageReply {
    /// The server's id for the message.
    #[serde(rename = "messageID")]
    pub message_id: u64,
    /// Echo of the request's localMessageID.
    #[serde(rename = "localMessageID")]
    pub local_message_id: u64,
    /// Server time of acceptance (ms).
    pub timestamp: i64,
    /// Position in the conversation; 0 for unstored types.
    #[serde(rename = "conversationSeq")]
    pub conversation_seq: u64,
}

/// `ackInbox`: the client has received every peer message up to `inboxSeq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckInboxRequest {
    /// The newest inbox position received.
    #[serde(rename = "inboxSeq")]
    pub inbox_seq: u64,
}

/// Push `tokenWillExpire`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenWillExpire {
    /// Seconds left before the token expires.
    pub second: u64,
}

/// Push `receivePeerMessage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivePeerMessage {
    /// Messages from one sender, oldest first.
    #[serde(rename = "messageList")]
    pub message_list: Vec<Message>,
    /// The sender.
    #[serde(rename = "fromUserID")]
    pub from_user_id: String,
}

/// Push `syncGap`: peer messages in `[fromInboxSeq, toInboxSeq]` were missed and
/// are no longer held by the server (retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncGap {
    /// First missing position.
    #[serde(rename = "fromInboxSeq")]
    pub from_inbox_seq: u64,
    /// Last missing position.
    #[serde(rename = "toInboxSeq")]
    pub to_inbox_seq: u64,
}

/// Push `syncComplete`: catch-up after login is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncComplete {
    /// The inbox position the client is now caught up to.
    #[serde(rename = "inboxSeq")]
    pub inbox_seq: u64,
}

/// Why the server closes a connection. Sent in a `disconnect` push just before
/// the WebSocket close frame, whose code is [`DisconnectReason::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client logged out.
    Logout,
    /// The same user logged in elsewhere (ZIM's KickedOut).
    KickedOut,
    /// The session's token expired without being renewed.
    TokenExpired,
    /// The client did not log in in time after connecting.
    LoginTimeout,
    /// The client stopped answering heartbeats.
    HeartbeatTimeout,
    /// The client could not keep up with its outbound queue; reconnect and catch up.
    SlowConsumer,
    /// A frame exceeded the maximum size.
    FrameTooLarge,
    /// The client broke the protocol (binary frames, repeated garbage).
    ProtocolError,
    /// The server is shutting down; reconnect (to another node, if any).
    ServerShutdown,
    /// The server holds too many connections.
    ServerFull,
}

impl DisconnectReason {
    /// The WebSocket close code used with this reason (4000–4999 is the
    /// application range of RFC 6455).
    #[must_use]
    pub const fn close_code(self) -> u16 {
        match self {
            DisconnectReason::Logout => 4000,
            DisconnectReason::KickedOut => 4001,
            DisconnectReason::TokenExpired => 4002,
            DisconnectReason::LoginTimeout => 4003,
            DisconnectReason::HeartbeatTimeout => 4004,
            DisconnectReason::SlowConsumer => 4005,
            DisconnectReason::FrameTooLarge => 4006,
            DisconnectReason::ProtocolError => 4007,
            DisconnectReason::ServerShutdown => 4008,
            DisconnectReason::ServerFull => 4009,
        }
    }

    /// Whether a client should reconnect on its own after this reason.
    #[must_use]
    pub const fn should_reconnect(self) -> bool {
        matches!(
            self,
            DisconnectReason::HeartbeatTimeout
                | DisconnectReason::SlowConsumer
                | DisconnectReason::ServerShutdown
                | DisconnectReason::ServerFull
        )
    }
}

/// Push `disconnect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnect {
    /// Why.
    pub reason: DisconnectReason,
    /// Human-readable detail.
    pub message: String,
    /// Whether the client should reconnect by itself.
    pub reconnect: bool,
}
