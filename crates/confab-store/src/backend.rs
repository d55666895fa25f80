//! What every [`Store`](crate::Store) backend does the same way around its SQL:
//! the argument checks, the conversions between the trait's values and integer
//! columns, the rows of messages and rooms as a database returns them (before
//! range checks), and the key of a membership. Hidden from the docs: for backends,
//! not for callers. The room rules (limits, attribute ownership) are beside
//! [`RoomLimits`](crate::RoomLimits).
//!
//! Columns are SQL's signed 64-bit integers: app ids hold a `u32`, positions,
//! counts and message ids a non-negative `i64`, `local_message_id` the `u64`
//! bit-cast (so every value round-trips; only equality is ever asked of it).

use crate::{
    HistoryMessage, HistoryQuery, NewPeerMessage, NewRoomMessage, RoomRecord, StoreError,
    StoredPeerMessage, StoredRoomMessage,
};

// ---------------------------------------------------------------------------------
// Argument checks and values given to the database

/// A write naming AppID 0 fails, and stores nothing.
///
/// # Errors
/// [`StoreError::Invalid`].
pub fn check_app(app_id: u32) -> Result<(), StoreError> {
    if app_id == 0 {
        return Err(StoreError::Invalid("AppID 0 is not a valid app".into()));
    }
    Ok(())
}

/// An inbox position to store (an ack): it must fit a column.
///
/// # Errors
/// [`StoreError::Invalid`] beyond `i64::MAX`.
pub fn inbox_seq_to_sql(inbox_seq: u64) -> Result<i64, StoreError> {
    i64::try_from(inbox_seq)
        .map_err(|_| StoreError::Invalid(format!("inbox position {inbox_seq} is out of range")))
}

/// `local_message_id` as stored: the u64 bit-cast to i64.
pub fn local_to_sql(local: u64) -> i64 {
    i64::from_ne_bytes(local.to_ne_bytes())
}

/// A position or count to compare with stored ones: those beyond i64 are beyond
/// every stored one.
pub fn clamp_to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A page size for `LIMIT`.
pub fn limit_to_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The two users of a peer conversation in the order it is stored under
/// (`conv_a <= conv_b`), whichever of them is named first.
pub fn conversation_pair<'a>(x: &'a str, y: &'a str) -> (&'a str, &'a str) {
    if x <= y { (x, y) } else { (y, x) }
}

/// The most messages one history page holds.
pub const MAX_HISTORY_PAGE: usize = 100;

/// The seq bound and the `LIMIT` of a history page: forward, `seq > anchor` (none
/// = from the start); reverse, `seq < anchor` (none = from the newest); at most
/// [`MAX_HISTORY_PAGE`] and at least one message. Anchors beyond i64 are beyond
/// every stored seq.
pub fn history_bounds(q: &HistoryQuery) -> (i64, i64) {
    let count = limit_to_sql(q.count.clamp(1, MAX_HISTORY_PAGE));
    let anchor = match (q.reverse, q.anchor) {
        (false, a) => clamp_to_sql(a.unwrap_or(0)),
        (true, Some(a)) => clamp_to_sql(a),
        (true, None) => i64::MAX,
    };
    (anchor, count)
}

/// A user in a room of an app: the key of a membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The app.
    pub app_id: u32,
    /// The room.
    pub room_id: String,
    /// The user.
    pub user_id: String,
}

impl Member {
    /// The membership of `user_id` in `room_id` of `app_id`.
    pub fn new(app_id: u32, room_id: &str, user_id: &str) -> Self {
        Self {
            app_id,
            room_id: room_id.to_owned(),
            user_id: user_id.to_owned(),
        }
    }
}

// ---------------------------------------------------------------------------------
// Values read from the database

/// `local_message_id` as read: the inverse of [`local_to_sql`].
pub fn local_from_sql(stored: i64) -> u64 {
    u64::from_ne_bytes(stored.to_ne_bytes())
}

/// A position, count or message id read from the database.
///
/// # Errors
/// [`StoreError::Corrupt`] if it is negative.
pub fn seq_from_sql(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("stored {what} {v} is negative")))
}

/// An app id read from the database.
///
/// # Errors
/// [`StoreError::Corrupt`] if it is not a u32.
pub fn app_from_sql(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("stored app_id {v} is not a u32")))
}

/// A message's kind or priority read from the database.
///
/// # Errors
/// [`StoreError::Corrupt`] if it is not a u8.
pub fn small_from_sql<T>(v: T, what: &str) -> Result<u8, StoreError>
where
    T: Copy + std::fmt::Display,
    u8: TryFrom<T>,
{
    u8::try_from(v).map_err(|_| StoreError::Corrupt(format!("stored {what} {v} is not a u8")))
}

/// An inbox's first held position: the oldest stored (`min_held`), or `head + 1`
/// when it holds none.
///
/// # Errors
/// [`StoreError::Corrupt`] for a negative stored position.
pub fn first_held(head: u64, min_held: Option<i64>) -> Result<u64, StoreError> {
    match min_held {
        Some(seq) => seq_from_sql(seq, "inbox_seq"),
        None => Ok(head + 1),
    }
}

/// A room that its own write found and then did not: the data contradicts the
/// transaction.
pub fn room_vanished(room_id: &str) -> StoreError {
    StoreError::Corrupt(format!("room {room_id} vanished inside its own write"))
}

/// The peer message an append stored: `m` with the ids the append took.
///
/// # Errors
/// [`StoreError::Corrupt`] for a negative id.
pub fn appended_peer(
    m: NewPeerMessage,
    message_id: i64,
    conversation_seq: i64,
    inbox_seq: i64,
) -> Result<StoredPeerMessage, StoreError> {
    Ok(StoredPeerMessage {
        message_id: seq_from_sql(message_id, "message_id")?,
        conversation_seq: seq_from_sql(conversation_seq, "conversation_seq")?,
        inbox_seq: seq_from_sql(inbox_seq, "inbox_seq")?,
        app_id: m.app_id,
        sender: m.sender,
        receiver: m.receiver,
        kind: m.kind,
        body: m.body,
        local_message_id: m.local_message_id,
        timestamp_ms: m.timestamp_ms,
        priority: m.priority,
    })
}

/// The room message an append stored: `m` with the id and seq the append took.
///
/// # Errors
/// [`StoreError::Corrupt`] for a negative id or seq.
pub fn appended_room(
    m: NewRoomMessage,
    message_id: i64,
    seq: i64,
) -> Result<StoredRoomMessage, StoreError> {
    Ok(StoredRoomMessage {
        message_id: seq_from_sql(message_id, "message_id")?,
        seq: seq_from_sql(seq, "room seq")?,
        room_id: m.room_id,
        sender: m.sender,
        kind: m.kind,
        body: m.body,
        local_message_id: m.local_message_id,
        timestamp_ms: m.timestamp_ms,
        priority: m.priority,
    })
}

/// A stored peer message as the database returns it, before range checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerMessageRow {
    /// `message_id`.
    pub message_id: i64,
    /// `conversation_seq`.
    pub conversation_seq: i64,
    /// `inbox_seq`.
    pub inbox_seq: i64,
    /// `app_id`.
    pub app_id: i64,
    /// `sender`.
    pub sender: String,
    /// `receiver`.
    pub receiver: String,
    /// `kind`.
    pub kind: i64,
    /// `body`.
    pub body: String,
    /// `local_message_id`, bit-cast.
    pub local_message_id: i64,
    /// `timestamp_ms`.
    pub timestamp_ms: i64,
    /// `priority`.
    pub priority: i64,
}

impl PeerMessageRow {
    /// The message, range-checked.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a value out of its range.
    pub fn into_stored(self) -> Result<StoredPeerMessage, StoreError> {
        Ok(StoredPeerMessage {
            message_id: seq_from_sql(self.message_id, "message_id")?,
            conversation_seq: seq_from_sql(self.conversation_seq, "conversation_seq")?,
            inbox_seq: seq_from_sql(self.inbox_seq, "inbox_seq")?,
            app_id: app_from_sql(self.app_id)?,
            sender: self.sender,
            receiver: self.receiver,
            kind: small_from_sql(self.kind, "kind")?,
            body: self.body,
            local_message_id: local_from_sql(self.local_message_id),
            timestamp_ms: self.timestamp_ms,
            priority: small_from_sql(self.priority, "priority")?,
        })
    }
}

/// A stored room message as the database returns it, before range checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMessageRow {
    /// `message_id`.
    pub message_id: i64,
    /// `seq`.
    pub seq: i64,
    /// `room_id`.
    pub room_id: String,
    /// `sender`.
    pub sender: String,
    /// `kind`.
    pub kind: i64,
    /// `body`.
    pub body: String,
    /// `local_message_id`, bit-cast.
    pub local_message_id: i64,
    /// `timestamp_ms`.
    pub timestamp_ms: i64,
    /// `priority`.
    pub priority: i64,
}

impl RoomMessageRow {
    /// The message, range-checked.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a value out of its range.
    pub fn into_stored(self) -> Result<StoredRoomMessage, StoreError> {
        Ok(StoredRoomMessage {
            message_id: seq_from_sql(self.message_id, "message_id")?,
            seq: seq_from_sql(self.seq, "room seq")?,
            room_id: self.room_id,
            sender: self.sender,
            kind: small_from_sql(self.kind, "kind")?,
            body: self.body,
            local_message_id: local_from_sql(self.local_message_id),
            timestamp_ms: self.timestamp_ms,
            priority: small_from_sql(self.priority, "priority")?,
        })
    }
}

/// A message of a history page (peer or room) as the database returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// `message_id`.
    pub message_id: i64,
    /// The conversation seq.
    pub seq: i64,
    /// `sender`.
    pub sender: String,
    /// The receiver (peer) or the roomID (room).
    pub target: String,
    /// `kind`.
    pub kind: i64,
    /// `body`.
    pub body: String,
    /// `local_message_id`, bit-cast.
    pub local_message_id: i64,
    /// `timestamp_ms`.
    pub timestamp_ms: i64,
    /// `priority`.
    pub priority: i64,
}

impl HistoryRow {
    /// The message, range-checked.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a value out of its range.
    pub fn into_message(self) -> Result<HistoryMessage, StoreError> {
        Ok(HistoryMessage {
            message_id: seq_from_sql(self.message_id, "message_id")?,
            seq: seq_from_sql(self.seq, "seq")?,
            sender: self.sender,
            target: self.target,
            kind: small_from_sql(self.kind, "kind")?,
            body: self.body,
            local_message_id: local_from_sql(self.local_message_id),
            timestamp_ms: self.timestamp_ms,
            priority: small_from_sql(self.priority, "priority")?,
        })
    }
}

/// A room with its seq head as the database returns it, before range checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRow {
    /// `app_id`.
    pub app_id: i64,
    /// `room_id`.
    pub room_id: String,
    /// `room_name`.
    pub room_name: String,
    /// `created_ms`.
    pub created_ms: i64,
    /// `destroy_delay_secs`.
    pub destroy_delay_secs: i64,
    /// `empty_since_ms`.
    pub empty_since_ms: Option<i64>,
    /// The room's last seq (0 if none).
    pub seq_head: i64,
}

impl RoomRow {
    /// The room, range-checked.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a value out of its range.
    pub fn into_record(self) -> Result<RoomRecord, StoreError> {
        let delay = self.destroy_delay_secs;
        Ok(RoomRecord {
            app_id: app_from_sql(self.app_id)?,
            room_id: self.room_id,
            room_name: self.room_name,
            created_ms: self.created_ms,
            destroy_delay_secs: u32::try_from(delay).map_err(|_| {
                StoreError::Corrupt(format!("stored destroy_delay_secs {delay} is not a u32"))
            })?,
            empty_since_ms: self.empty_since_ms,
            seq_head: seq_from_sql(self.seq_head, "room last_seq")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Conversation;

    #[test]
    fn local_ids_bit_cast_both_ways() {
        for v in [0, 1, u64::MAX, 1 << 63, (1 << 63) - 1] {
            assert_eq!(local_from_sql(local_to_sql(v)), v);
        }
        assert_eq!(local_to_sql(u64::MAX), -1);
        assert_eq!(local_to_sql(1 << 63), i64::MIN);
    }

    #[test]
    fn values_given_to_the_database() {
        assert!(
            matches!(check_app(0), Err(StoreError::Invalid(ref m)) if m == "AppID 0 is not a valid app")
        );
        assert!(check_app(1).is_ok());
        assert_eq!(inbox_seq_to_sql(7).ok(), Some(7));
        assert!(matches!(
            inbox_seq_to_sql(u64::MAX),
            Err(StoreError::Invalid(ref m)) if m == "inbox position 18446744073709551615 is out of range"
        ));
        assert_eq!(clamp_to_sql(u64::MAX), i64::MAX);
        assert_eq!(clamp_to_sql(5), 5);
        assert_eq!(limit_to_sql(usize::MAX), i64::MAX);
        assert_eq!(conversation_pair("b", "a"), ("a", "b"));
        assert_eq!(conversation_pair("a", "b"), ("a", "b"));
        assert_eq!(conversation_pair("a", "a"), ("a", "a"));
    }

    #[test]
    fn values_read_from_the_database() {
        assert_eq!(seq_from_sql(3, "x").ok(), Some(3));
        assert!(matches!(
            seq_from_sql(-1, "inbox_seq"),
            Err(StoreError::Corrupt(ref m)) if m == "stored inbox_seq -1 is negative"
        ));
        assert!(matches!(
            app_from_sql(1 << 32),
            Err(StoreError::Corrupt(ref m)) if m == "stored app_id 4294967296 is not a u32"
        ));
        assert_eq!(small_from_sql(3_i16, "kind").ok(), Some(3));
        assert!(matches!(
            small_from_sql(256_i64, "priority"),
            Err(StoreError::Corrupt(ref m)) if m == "stored priority 256 is not a u8"
        ));
        assert_eq!(first_held(4, None).ok(), Some(5));
        assert_eq!(first_held(4, Some(2)).ok(), Some(2));
        let row = RoomRow {
            app_id: 1,
            room_id: "r".into(),
            room_name: "R".into(),
            created_ms: 5,
            destroy_delay_secs: -1,
            empty_since_ms: None,
            seq_head: 0,
        };
        assert!(matches!(
            row.into_record(),
            Err(StoreError::Corrupt(ref m)) if m == "stored destroy_delay_secs -1 is not a u32"
        ));
    }

    #[test]
    fn history_pages_are_bounded() {
        let q = |anchor, count, reverse| HistoryQuery {
            app_id: 1,
            conversation: Conversation::Room("r".into()),
            anchor,
            count,
            reverse,
        };
        assert_eq!(history_bounds(&q(None, 10, false)), (0, 10));
        assert_eq!(history_bounds(&q(None, 0, false)), (0, 1));
        assert_eq!(history_bounds(&q(Some(7), 1000, false)), (7, 100));
        assert_eq!(history_bounds(&q(None, 5, true)), (i64::MAX, 5));
        assert_eq!(history_bounds(&q(Some(u64::MAX), 5, true)), (i64::MAX, 5));
        assert_eq!(history_bounds(&q(Some(3), 5, true)), (3, 5));
    }
}
