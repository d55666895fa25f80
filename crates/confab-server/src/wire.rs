//! The wire form of stored messages (confab-proto's `Message`), as their
//! receivers see them: built in one place for live pushes and catch-ups.

use confab_proto::frame::{ConversationType, Message as WireMessage, MessageType, Priority};
use confab_store::{StoredPeerMessage, StoredRoomMessage};

/// The wire form of a stored peer message, as its receiver sees it.
pub(crate) fn wire_peer(m: StoredPeerMessage) -> WireMessage {
    WireMessage {
        kind: MessageType::from_code(m.kind),
        message: m.body,
        message_id: m.message_id,
        local_message_id: m.local_message_id,
        conversation_id: m.sender.clone(),
        sender_user_id: m.sender,
        timestamp: m.timestamp_ms,
        conversation_type: ConversationType::Peer,
        conversation_seq: m.conversation_seq,
        inbox_seq: Some(m.inbox_seq),
        priority: Priority::from_code(m.priority).unwrap_or_default(),
    }
}

/// The wire form of a stored room message.
pub(crate) fn wire_room(m: StoredRoomMessage) -> WireMessage {
    WireMessage {
        kind: MessageType::from_code(m.kind),
        message: m.body,
        message_id: m.message_id,
        local_message_id: m.local_message_id,
        sender_user_id: m.sender,
        timestamp: m.timestamp_ms,
        conversation_id: m.room_id,
        conversation_type: ConversationType::Room,
        conversation_seq: m.seq,
        inbox_seq: None,
        priority: Priority::from_code(m.priority).unwrap_or_default(),
    }
}
