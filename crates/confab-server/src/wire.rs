//! The wire form of stored messages (confab-proto's `Message`), as their
//! receivers see them: built in one place for live pushes, catch-ups, gap
//! fills and history pages.

use confab_proto::frame::{
    ConversationType, Message as WireMessage, MessageType, Priority, Push, ReceiveRoomMessage,
    encode_push,
};
use confab_store::{HistoryMessage, StoredPeerMessage, StoredRoomMessage};

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

/// The encoded `receiveRoomMessage` push of one stored room message, as the
/// room's members get it live (from its sender's node, or a gap fill).
pub(crate) fn room_message_frame(m: StoredRoomMessage) -> String {
    encode_push(&Push::ReceiveRoomMessage(ReceiveRoomMessage {
        from_room_id: m.room_id.clone(),
        message_list: vec![wire_room(m)],
    }))
}

/// The wire form of a message of a history page of the conversation
/// `conversation_id` (a peer's user ID as its reader sees it, or a room ID).
pub(crate) fn wire_history(
    m: HistoryMessage,
    conversation_id: &str,
    conversation_type: ConversationType,
) -> WireMessage {
    WireMessage {
        kind: MessageType::from_code(m.kind),
        message: m.body,
        message_id: m.message_id,
        local_message_id: m.local_message_id,
        sender_user_id: m.sender,
        timestamp: m.timestamp_ms,
        conversation_id: conversation_id.to_owned(),
        conversation_type,
        conversation_seq: m.seq,
        inbox_seq: None,
        priority: Priority::from_code(m.priority).unwrap_or_default(),
    }
}
