//! The message object as it travels in pushes and history, with ZIM's field names
//! and numbers (SPEC §7).

use serde::{Deserialize, Serialize};

/// A message's type, as its ZIM number. Unknown numbers are kept (not rejected at
/// decode time) so the server can answer them with a precise `ParamInvalid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 1: UTF-8 text up to 32 KiB; stored.
    Text,
    /// 2: bytes up to 5 KiB, base64 in JSON; not stored.
    Command,
    /// 20: room-only text up to 5 KiB; not stored, unreliable.
    Barrage,
    /// Any other number (0 Unknown, 11 Image, 12 File, 13 Audio, 14 Video, 30 System, ...).
    Other(u8),
}

impl MessageType {
    /// The ZIM number.
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            MessageType::Text => 1,
            MessageType::Command => 2,
            MessageType::Barrage => 20,
            MessageType::Other(n) => n,
        }
    }

    /// The type with this ZIM number.
    #[must_use]
    pub const fn from_code(n: u8) -> MessageType {
        match n {
            1 => MessageType::Text,
            2 => MessageType::Command,
            20 => MessageType::Barrage,
            n => MessageType::Other(n),
        }
    }

    /// ZIM's name for the type, for error messages.
    #[must_use]
    pub const fn zim_name(self) -> &'static str {
        match self.code() {
            0 => "Unknown",
            1 => "Text",
            2 => "Command",
            11 => "Image",
            12 => "File",
            13 => "Audio",
            14 => "Video",
            20 => "Barrage",
            30 => "System",
            _ => "unknown",
        }
    }

    /// Whether messages of this type are stored (and so get a conversation seq).
    #[must_use]
    pub const fn is_stored(self) -> bool {
        matches!(self, MessageType::Text)
    }
}

impl Serialize for MessageType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for MessageType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u8::deserialize(d).map(MessageType::from_code)
    }
}

/// Delivery priority of live pushes of unstored types (SPEC §3): under overload
/// Barrage goes first, then Low, then Medium; High is never dropped while the
/// receiver is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// 1 (the default, as in ZIM).
    #[default]
    Low,
    /// 2.
    Medium,
    /// 3.
    High,
}

impl Priority {
    /// The ZIM number.
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Priority::Low => 1,
            Priority::Medium => 2,
            Priority::High => 3,
        }
    }

    /// The priority with this number.
    #[must_use]
    pub const fn from_code(n: u8) -> Option<Priority> {
        match n {
            1 => Some(Priority::Low),
            2 => Some(Priority::Medium),
            3 => Some(Priority::High),
            _ => None,
        }
    }
}

impl Serialize for Priority {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u8::deserialize(d)?;
        Priority::from_code(n).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "priority must be 1 (Low), 2 (Medium) or 3 (High), got {n}"
            ))
        })
    }
}

/// Peer (0) or Room (1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConversationType {
    /// 0: one-to-one.
    Peer,
    /// 1: a room.
    Room,
}

impl Serialize for ConversationType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(match self {
            ConversationType::Peer => 0,
            ConversationType::Room => 1,
        })
    }
}

impl<'de> Deserialize<'de> for ConversationType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            0 => Ok(ConversationType::Peer),
            1 => Ok(ConversationType::Room),
            n => Err(serde::de::Error::custom(format!(
                "conversationType must be 0 (Peer) or 1 (Room), got {n}"
            ))),
        }
    }
}

/// A message as the server delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The message type.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// Text for Text and Barrage; standard base64 of the bytes for Command.
    pub message: String,
    /// Server-assigned, unique per app; below 2^53 so JavaScript can hold it.
    #[serde(rename = "messageID")]
    pub message_id: u64,
    /// The sender's own id for the message, used to make retries idempotent.
    #[serde(rename = "localMessageID")]
    pub local_message_id: u64,
    /// Who sent it (always the sending session's user).
    #[serde(rename = "senderUserID")]
    pub sender_user_id: String,
    /// Server time of acceptance, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// For the receiver of a peer message, the sender's userID; for a room message, the roomID.
    #[serde(rename = "conversationID")]
    pub conversation_id: String,
    /// Peer or Room.
    #[serde(rename = "conversationType")]
    pub conversation_type: ConversationType,
    /// Position in the conversation, strictly increasing; 0 for unstored types.
    #[serde(rename = "conversationSeq")]
    pub conversation_seq: u64,
    /// Position in the receiver's peer inbox, for `ackInbox` and resuming after a
    /// reconnect; absent for unstored types and room messages.
    #[serde(rename = "inboxSeq", default, skip_serializing_if = "Option::is_none")]
    pub inbox_seq: Option<u64>,
    /// Delivery priority.
    #[serde(default)]
    pub priority: Priority,
}
