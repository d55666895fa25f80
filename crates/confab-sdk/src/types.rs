//! The SDK's public shapes: configuration, connection and room states, the
//! message object as ZIM apps know it (SPEC §7), and the events the SDK emits.
//! Wire payloads that already have ZIM's shape (room info, members, attribute
//! updates) are re-exported from `confab-proto` instead of being copied.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use confab_proto::ErrorCode;
use confab_proto::frame::{
    ConversationType, Message as WireMessage, MessageType, Priority, RoomAttributesUpdateInfo,
    UserInfo,
};

/// How to reach the server and how the SDK behaves. Build it with
/// [`ZimConfig::new`] and adjust fields; every field documents its default.
#[derive(Debug, Clone, PartialEq)]
pub struct ZimConfig {
    /// The app, as configured on the server (non-zero).
    pub app_id: u32,
    /// WebSocket URLs of the server, `ws://HOST:PORT/ws`, tried in order
    /// (failover): a login tries each once; a reconnect rotates through them.
    /// `wss://` is not supported by this SDK (put a TLS-terminating proxy's plain
    /// side in front, or use a `ws://` URL).
    pub urls: Vec<String>,
    /// How long a call waits for its reply — including time spent waiting for a
    /// reconnect — before it fails with 6000104 (6000204 for sends). Also bounds
    /// the connect + login handshake per URL. Default 10 s.
    pub request_timeout: Duration,
    /// Send an application `ping` when nothing was sent for this long. Default
    /// 25 s (the server drops connections silent for 35 s).
    pub heartbeat_interval: Duration,
    /// First reconnect delay; it doubles per failed attempt, with jitter
    /// (each delay is drawn from `[d/2, d]`). Default 500 ms.
    pub reconnect_min_delay: Duration,
    /// Cap of the reconnect delay. Default 30 s.
    pub reconnect_max_delay: Duration,
    /// Stop reconnecting after this long without a connection; the state becomes
    /// Disconnected with event LoginTimeout. `None` retries forever. Default 5 min.
    pub reconnect_give_up_after: Option<Duration>,
    /// The SDK's own limit on Text + Command sends, per second (a token bucket with
    /// a burst of the same size); past it a send fails with 6000005 without
    /// touching the network. 0 turns the SDK limit off. Default 10, half the
    /// server's default 20/s, so normal use never sees the server's 6000003.
    pub send_rate_per_second: u32,
    /// Capacity of the event channel ([`crate::Zim::events`]). Default 1024.
    /// When it is full the SDK waits for the app to drain it (see the crate docs).
    pub event_capacity: usize,
    /// How often, at most, the SDK acknowledges delivered peer messages to the
    /// server (`ackInbox`), so a later login elsewhere does not get them again.
    /// Default 1 s.
    pub ack_interval: Duration,
}

impl ZimConfig {
    /// A configuration for `app_id` on the servers at `urls`, with every other
    /// field at its default.
    #[must_use]
    pub fn new(app_id: u32, urls: Vec<String>) -> ZimConfig {
        ZimConfig {
            app_id,
            urls,
            request_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(25),
            reconnect_min_delay: Duration::from_millis(500),
            reconnect_max_delay: Duration::from_secs(30),
            reconnect_give_up_after: Some(Duration::from_secs(300)),
            send_rate_per_second: 10,
            event_capacity: 1024,
            ack_interval: Duration::from_secs(1),
        }
    }
}

/// Where and how much the SDK logs (ZIM's `setLogConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The directory for the SDK's log; the file is `confab-sdk.log` in it, its one
    /// backup `confab-sdk.log.1`. Created if missing.
    pub log_path: PathBuf,
    /// Largest size of the log file in bytes before it is rotated to the backup
    /// (at least 1024). Default 5 MB (5,242,880).
    pub log_size: u64,
}

impl LogConfig {
    /// The default size cap: 5 MB.
    pub const DEFAULT_LOG_SIZE: u64 = 5 * 1024 * 1024;

    /// Logs into `log_path` with the default size cap.
    #[must_use]
    pub fn new(log_path: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            log_path: log_path.into(),
            log_size: Self::DEFAULT_LOG_SIZE,
        }
    }
}

macro_rules! numbered_enum {
    (
        $(#[$meta:meta])*
        pub enum $Enum:ident { $( $(#[$doc:meta])* $Variant:ident = $n:literal, )* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $Enum {
            $( $(#[$doc])* $Variant, )*
        }

        impl $Enum {
            /// ZIM's number for this value.
            #[must_use]
            pub const fn code(self) -> u8 {
                match self { $( $Enum::$Variant => $n, )* }
            }

            /// The value with ZIM's number `n`.
            #[must_use]
            pub const fn from_code(n: u8) -> Option<$Enum> {
                match n { $( $n => Some($Enum::$Variant), )* _ => None }
            }
        }
    };
}

numbered_enum! {
    /// The SDK's connection state (ZIM's `ZIMConnectionState`).
    pub enum ConnectionState {
        /// 0: not logged in (never, after logout, or after a disconnect the SDK does
        /// not recover from).
        Disconnected = 0,
        /// 1: `login` is in progress.
        Connecting = 1,
        /// 2: logged in and connected.
        Connected = 2,
        /// 3: the connection was lost; the SDK is reconnecting by itself.
        Reconnecting = 3,
    }
}

numbered_enum! {
    /// Why the connection state changed (ZIM's `ZIMConnectionEvent`, plus
    /// TokenExpired).
    pub enum ConnectionEvent {
        /// 0: a login or reconnect succeeded, or the app logged out.
        Success = 0,
        /// 1: the app called `login`.
        ActiveLogin = 1,
        /// 2: the server could not be reached in time (a login that reached no URL,
        /// or reconnecting gave up).
        LoginTimeout = 2,
        /// 3: the connection was interrupted (the SDK reconnects), or a login or
        /// re-login was refused.
        LoginInterrupted = 3,
        /// 4: the same user logged in elsewhere; the SDK does not reconnect.
        KickedOut = 4,
        /// 5: the token expired; log in again with a new token.
        TokenExpired = 5,
    }
}

numbered_enum! {
    /// The state of the SDK's membership in a room.
    pub enum RoomState {
        /// 0: not in the room (anymore).
        Disconnected = 0,
        /// 1: the connection is down; the SDK restores the room when it is back.
        Connecting = 1,
        /// 2: in the room and receiving its messages.
        Connected = 2,
    }
}

numbered_enum! {
    /// Why a room's state changed (ZIM's `ZIMRoomEvent`).
    pub enum RoomEvent {
        /// 0: the room is (back) in order.
        Success = 0,
        /// 1: the connection was interrupted.
        NetworkInterrupted = 1,
        /// 2: the connection was lost for good (logout, or restoring failed).
        NetworkDisconnected = 2,
        /// 3: the room no longer exists.
        RoomNotExist = 3,
        /// 4: the app created the room.
        ActiveCreate = 4,
        /// 5: creating the room failed.
        CreateFailed = 5,
        /// 6: the app joined or entered the room.
        ActiveEnter = 6,
        /// 7: joining the room failed.
        EnterFailed = 7,
        /// 8: the user was kicked out (logged in elsewhere).
        KickedOut = 8,
    }
}

numbered_enum! {
    /// Whether a message was sent or received by this user.
    pub enum MessageDirection {
        /// 0: sent by this user.
        Send = 0,
        /// 1: received from someone else.
        Receive = 1,
    }
}

numbered_enum! {
    /// A message's send status.
    pub enum MessageSentStatus {
        /// 0: on its way.
        Sending = 0,
        /// 1: the server accepted it (stored, for Text).
        Success = 1,
        /// 2: it could not be sent.
        Failed = 2,
    }
}

/// What a message carries. Text and Barrage are strings; Command is bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageContent {
    /// Type 1: UTF-8 text up to 32 KiB; stored, and delivered to offline receivers.
    Text(String),
    /// Type 2: bytes up to 5 KiB; not stored, delivered to online receivers only.
    Command(Vec<u8>),
    /// Type 20: room-only text up to 5 KiB; not stored, unreliable.
    Barrage(String),
    /// A type this SDK does not know (from history or a newer server); it cannot
    /// be sent.
    Other {
        /// The ZIM type number.
        kind: u8,
        /// The message as it came.
        message: String,
    },
}

impl MessageContent {
    /// The ZIM message type.
    #[must_use]
    pub fn kind(&self) -> MessageType {
        match self {
            MessageContent::Text(_) => MessageType::Text,
            MessageContent::Command(_) => MessageType::Command,
            MessageContent::Barrage(_) => MessageType::Barrage,
            MessageContent::Other { kind, .. } => MessageType::from_code(*kind),
        }
    }

    /// The wire form: the type and the `message` string (base64 for Command).
    pub(crate) fn to_wire(&self) -> (MessageType, String) {
        match self {
            MessageContent::Text(t) => (MessageType::Text, t.clone()),
            MessageContent::Command(b) => (MessageType::Command, STANDARD.encode(b)),
            MessageContent::Barrage(t) => (MessageType::Barrage, t.clone()),
            MessageContent::Other { kind, message } => {
                (MessageType::from_code(*kind), message.clone())
            }
        }
    }

    /// The content of a wire message.
    pub(crate) fn from_wire(kind: MessageType, message: String) -> MessageContent {
        match kind {
            MessageType::Text => MessageContent::Text(message),
            MessageType::Barrage => MessageContent::Barrage(message),
            MessageType::Command => match STANDARD.decode(message.as_bytes()) {
                Ok(bytes) => MessageContent::Command(bytes),
                Err(_) => MessageContent::Other { kind: 2, message },
            },
            MessageType::Other(kind) => MessageContent::Other { kind, message },
        }
    }
}

/// Options of a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendConfig {
    /// How live pushes of unstored types are treated under overload: Low (the
    /// default) is shed before Medium; High is never shed while the receiver is
    /// connected. Stored Text is never shed.
    pub priority: Priority,
}

/// A message, with ZIM's fields (SPEC §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The content (its type is [`MessageContent::kind`]).
    pub content: MessageContent,
    /// The server's id, unique per app.
    pub message_id: u64,
    /// The sender's own id for the message (the SDK makes one per send).
    pub local_message_id: u64,
    /// Who sent it.
    pub sender_user_id: String,
    /// Server time of acceptance, ms since the Unix epoch.
    pub timestamp: i64,
    /// For a peer message the other user's ID; for a room message the room's ID.
    pub conversation_id: String,
    /// Peer (0) or Room (1).
    pub conversation_type: ConversationType,
    /// Send for this user's own messages, Receive for others'.
    pub direction: MessageDirection,
    /// Success for messages from the server (sent or received).
    pub sent_status: MessageSentStatus,
    /// Sorts messages of one conversation: the `conversation_seq` for stored
    /// messages; 0 for unstored types (Command, Barrage), which have no place in
    /// the conversation's order.
    pub order_key: i64,
    /// Position in the conversation, strictly increasing; 0 for unstored types.
    pub conversation_seq: u64,
    /// Position in this user's peer inbox (received stored peer messages only).
    pub inbox_seq: Option<u64>,
    /// Delivery priority.
    pub priority: Priority,
}

impl Message {
    /// The ZIM message type.
    #[must_use]
    pub fn kind(&self) -> MessageType {
        self.content.kind()
    }

    /// The text of a Text or Barrage message.
    #[must_use]
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            MessageContent::Text(t) | MessageContent::Barrage(t) => Some(t),
            _ => None,
        }
    }

    /// A message from the server, as seen by `me`.
    pub(crate) fn from_wire(m: WireMessage, me: &str) -> Message {
        let direction = if m.sender_user_id == me {
            MessageDirection::Send
        } else {
            MessageDirection::Receive
        };
        Message {
            content: MessageContent::from_wire(m.kind, m.message),
            message_id: m.message_id,
            local_message_id: m.local_message_id,
            sender_user_id: m.sender_user_id,
            timestamp: m.timestamp,
            conversation_id: m.conversation_id,
            conversation_type: m.conversation_type,
            direction,
            sent_status: MessageSentStatus::Success,
            order_key: i64::try_from(m.conversation_seq).unwrap_or(i64::MAX),
            conversation_seq: m.conversation_seq,
            inbox_seq: m.inbox_seq,
            priority: m.priority,
        }
    }
}

/// Something that happened, as the SDK reports it on [`crate::Zim::events`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ZimEvent {
    /// The connection state changed.
    ConnectionStateChanged {
        /// The new state.
        state: ConnectionState,
        /// Why.
        event: ConnectionEvent,
        /// Detail, e.g. the server's disconnect reason and message.
        extended: String,
    },
    /// The token expires in `second` seconds; call [`crate::Zim::renew_token`].
    TokenWillExpire {
        /// Seconds left.
        second: u64,
    },
    /// Peer messages from one sender, oldest first, each delivered once.
    ReceivePeerMessage {
        /// The messages.
        message_list: Vec<Message>,
        /// The sender.
        from_user_id: String,
    },
    /// Messages of one room, oldest first; stored ones once each, in seq order.
    ReceiveRoomMessage {
        /// The messages.
        message_list: Vec<Message>,
        /// The room.
        from_room_id: String,
    },
    /// Members joined a room (batched).
    RoomMemberJoined {
        /// Who joined.
        member_list: Vec<UserInfo>,
        /// The room.
        room_id: String,
    },
    /// Members left a room (batched).
    RoomMemberLeft {
        /// Who left.
        member_list: Vec<UserInfo>,
        /// The room.
        room_id: String,
    },
    /// This user's membership in a room changed state.
    RoomStateChanged {
        /// The new state.
        state: RoomState,
        /// Why.
        event: RoomEvent,
        /// The room.
        room_id: String,
    },
    /// A room's attributes changed (one update).
    RoomAttributesUpdated {
        /// The room.
        room_id: String,
        /// The updates (Set with new values, Delete with empty values).
        infos: Vec<RoomAttributesUpdateInfo>,
    },
    /// A room's attributes changed in one batch operation.
    RoomAttributesBatchUpdated {
        /// The room.
        room_id: String,
        /// The updates, in order.
        infos: Vec<RoomAttributesUpdateInfo>,
    },
    /// Peer messages at these inbox positions were missed and the server no longer
    /// holds them (retention). Never a silent gap.
    PeerMessageGap {
        /// First missed position.
        from_inbox_seq: u64,
        /// Last missed position.
        to_inbox_seq: u64,
    },
    /// Room messages with these seqs were missed and are no longer held.
    RoomMessageGap {
        /// The room.
        room_id: String,
        /// First missed seq.
        from_seq: u64,
        /// Last missed seq.
        to_seq: u64,
    },
    /// Something failed outside any call (a frame the SDK could not read, an
    /// acknowledgement the server refused).
    Error {
        /// The code.
        code: ErrorCode,
        /// What happened.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_zims() {
        assert_eq!(ConnectionState::Reconnecting.code(), 3);
        assert_eq!(ConnectionEvent::TokenExpired.code(), 5);
        assert_eq!(RoomEvent::from_code(8), Some(RoomEvent::KickedOut));
        assert_eq!(RoomState::from_code(3), None);
        assert_eq!(MessageDirection::Receive.code(), 1);
        assert_eq!(MessageSentStatus::Failed.code(), 2);
    }

    #[test]
    fn command_bytes_travel_as_base64() {
        let c = MessageContent::Command(vec![0, 1, 2, 255]);
        let (kind, wire) = c.to_wire();
        assert_eq!(kind, MessageType::Command);
        assert_eq!(wire, "AAEC/w==");
        assert_eq!(MessageContent::from_wire(kind, wire), c);
        assert_eq!(
            MessageContent::from_wire(MessageType::Command, "%%".into()),
            MessageContent::Other {
                kind: 2,
                message: "%%".into()
            }
        );
    }
}
