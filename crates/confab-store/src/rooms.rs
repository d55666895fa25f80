//! The domain types of rooms: the room, its members, its attributes and its
//! stored messages, and the outcomes of room operations.

/// A live room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// The app it belongs to.
    pub app_id: u32,
    /// 1–128 bytes.
    pub room_id: String,
    /// At most 64 bytes.
    pub room_name: String,
    /// Creation time (ms).
    pub created_ms: i64,
    /// Seconds the room lives on after its last member leaves (0–10,800).
    pub destroy_delay_secs: u32,
    /// When the last member left (ms), while the room is empty.
    pub empty_since_ms: Option<i64>,
    /// The newest room message seq (0 if none). Seqs continue across a destroy and
    /// re-create of the same roomID: they are never reused.
    pub seq_head: u64,
}

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// The user.
    pub user_id: String,
    /// Display name given at join.
    pub user_name: String,
    /// Join time (ms).
    pub joined_ms: i64,
}

/// Limits a room operation must respect, from the app's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// Rooms per app (6000312).
    pub max_rooms_per_app: u32,
    /// Rooms one user may be in (6000321).
    pub max_rooms_per_user: u32,
    /// Members per room.
    pub max_room_members: u32,
    /// Attribute keys per room (SPEC: 20).
    pub max_attr_keys: usize,
    /// Bytes per attribute key (SPEC: 16).
    pub max_attr_key_bytes: usize,
    /// Bytes per attribute value (SPEC: 1024).
    pub max_attr_value_bytes: usize,
    /// Bytes of all keys and values together (SPEC: 5120).
    pub max_attr_total_bytes: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits {
            max_rooms_per_app: 10_000,
            max_rooms_per_user: 5,
            max_room_members: 100_000,
            max_attr_keys: 20,
            max_attr_key_bytes: 16,
            max_attr_value_bytes: 1024,
            max_attr_total_bytes: 5120,
        }
    }
}

impl RoomLimits {
    /// Checks the attribute set a request would leave (`attrs`, whose values
    /// `value` reads): each key the request sets (`touched`, if still present)
    /// against the key and value limits, and, if it sets any, the whole set against
    /// the key count and total size. A delete-only request is never refused. Every
    /// backend applies this one rule.
    ///
    /// # Errors
    /// [`RoomError::AttributeLimit`] naming the limit and the numbers.
    pub fn check_attributes<V>(
        &self,
        attrs: &std::collections::BTreeMap<String, V>,
        value: impl Fn(&V) -> &str,
        touched: &std::collections::BTreeSet<String>,
    ) -> Result<(), RoomError> {
        let refuse = |why: String| Err(RoomError::AttributeLimit(why));
        let mut any = false;
        for (key, attr) in touched.iter().filter_map(|k| Some((k, attrs.get(k)?))) {
            any = true;
            let len = value(attr).len();
            if key.is_empty() {
                return refuse("a room attribute key must not be empty".into());
            }
            if key.len() > self.max_attr_key_bytes {
                return refuse(format!(
                    "room attribute key {} is {} bytes; the limit is {} bytes per key",
                    shown(key),
                    key.len(),
                    self.max_attr_key_bytes
                ));
            }
            if len > self.max_attr_value_bytes {
                return refuse(format!(
                    "the value of room attribute {} is {len} bytes; the limit is {} bytes per value",
                    shown(key),
                    self.max_attr_value_bytes
                ));
            }
        }
        if !any {
            return Ok(());
        }
        if attrs.len() > self.max_attr_keys {
            return refuse(format!(
                "the room would have {} attribute keys; the limit is {} keys per room",
                attrs.len(),
                self.max_attr_keys
            ));
        }
        let total: usize = attrs.iter().map(|(k, a)| k.len() + value(a).len()).sum();
        if total > self.max_attr_total_bytes {
            return refuse(format!(
                "the room's attributes would total {total} bytes of keys and values; the limit is {} bytes per room",
                self.max_attr_total_bytes
            ));
        }
        Ok(())
    }
}

/// A user-supplied key for an error message: quoted, and cut if long.
fn shown(key: &str) -> String {
    const MAX_CHARS: usize = 24;
    if key.chars().count() <= MAX_CHARS {
        format!("{key:?}")
    } else {
        let head: String = key.chars().take(MAX_CHARS).collect();
        format!("{head:?}…")
    }
}

/// A room to create; the creator joins it in the same step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoom {
    /// The app.
    pub app_id: u32,
    /// The room.
    pub room_id: String,
    /// Its name.
    pub room_name: String,
    /// The creator, who becomes its first member.
    pub creator: String,
    /// The creator's display name.
    pub creator_name: String,
    /// Initial attributes, owned by the creator.
    pub attributes: Vec<(String, String)>,
    /// See [`RoomRecord::destroy_delay_secs`].
    pub destroy_delay_secs: u32,
    /// Now (ms).
    pub now_ms: i64,
}

/// Why a room operation was refused. Each maps to one ZIM code in the server.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// createRoom of an existing room (6000311).
    #[error("the room already exists")]
    Exists,
    /// The app has its maximum number of rooms (6000312).
    #[error("the app has reached its maximum of {0} rooms")]
    AppRoomLimit(u32),
    /// The user is in its maximum number of rooms (6000321).
    #[error("the user is already in the maximum of {0} rooms")]
    UserRoomLimit(u32),
    /// The room has its maximum number of members.
    #[error("the room is full ({0} members)")]
    RoomFull(u32),
    /// The room does not exist (6000301, 6000304 for join).
    #[error("the room does not exist")]
    NotFound,
    /// The user is not a member (6000205, 6000305 for leave).
    #[error("the user is not a member of the room")]
    NotMember,
    /// Attributes would exceed a size limit (6000001); says which.
    #[error("{0}")]
    AttributeLimit(String),
    /// The backend failed (6000302/6000303).
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

/// The result of a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The room after the join.
    pub room: RoomRecord,
    /// True if the user was already a member (a rejoin after a reconnect): nothing changed
    /// except that the member is online again.
    pub already_member: bool,
}

/// The result of a leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    /// Attribute keys removed because their owner left with `delete_after_owner_left`.
    pub removed_attributes: Vec<String>,
    /// True if the room has no members now.
    pub room_empty: bool,
}

/// One attribute change request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeChange {
    /// Set these keys to these values.
    pub set: Vec<(String, String)>,
    /// Delete these keys.
    pub delete: Vec<String>,
    /// Change keys owned by someone else too.
    pub is_force: bool,
    /// Make the caller the owner of the keys it sets (for keys that had another owner).
    pub is_update_owner: bool,
    /// Remove the keys the caller sets when it leaves the room.
    pub is_delete_after_owner_left: bool,
}

/// The outcome of an attribute change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttributesChanged {
    /// Keys that could not be changed (owned by another member, without `is_force`).
    pub error_keys: Vec<String>,
    /// Keys set, with their new values.
    pub set: Vec<(String, String)>,
    /// Keys deleted.
    pub deleted: Vec<String>,
}

/// A room message to append (Text only: the stored type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoomMessage {
    /// The app.
    pub app_id: u32,
    /// The room.
    pub room_id: String,
    /// The sender (a member).
    pub sender: String,
    /// ZIM type number.
    pub kind: u8,
    /// Body as on the wire.
    pub body: String,
    /// Sender's id; (app, sender, local_message_id) is unique among room messages.
    pub local_message_id: u64,
    /// Acceptance time (ms).
    pub timestamp_ms: i64,
    /// Priority number.
    pub priority: u8,
}

/// A stored message of a room or of a peer conversation, for history and catch-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoomMessage {
    /// Unique per store.
    pub message_id: u64,
    /// Position in the room, strictly increasing from 1.
    pub seq: u64,
    /// The room.
    pub room_id: String,
    /// As appended.
    pub sender: String,
    /// As appended.
    pub kind: u8,
    /// As appended.
    pub body: String,
    /// As appended.
    pub local_message_id: u64,
    /// As appended.
    pub timestamp_ms: i64,
    /// As appended.
    pub priority: u8,
}

/// The result of a room append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedRoom {
    /// The stored message (the first one, for a duplicate).
    pub message: StoredRoomMessage,
    /// True if it was stored before; deliver nothing.
    pub duplicate: bool,
}

/// Which stored conversation a history query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversation {
    /// The peer conversation of two users (either order).
    Peer(String, String),
    /// A room.
    Room(String),
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// The app.
    pub app_id: u32,
    /// The conversation.
    pub conversation: Conversation,
    /// Start after (forward) or before (reverse) this seq; `None` = from the start
    /// (forward) or the newest (reverse).
    pub anchor: Option<u64>,
    /// At most this many (1..=100).
    pub count: usize,
    /// Newest first when true.
    pub reverse: bool,
}

/// One message of a history page (peer or room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryMessage {
    /// Unique per store.
    pub message_id: u64,
    /// Conversation seq.
    pub seq: u64,
    /// The sender.
    pub sender: String,
    /// For peer conversations, the receiver; for rooms, the roomID.
    pub target: String,
    /// ZIM type number.
    pub kind: u8,
    /// Body.
    pub body: String,
    /// Sender's id.
    pub local_message_id: u64,
    /// Time (ms).
    pub timestamp_ms: i64,
    /// Priority number.
    pub priority: u8,
}

/// A member removed by [`crate::Store::expire_members`] after its grace period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredMember {
    /// The app.
    pub app_id: u32,
    /// The room it left.
    pub room_id: String,
    /// The user.
    pub user_id: String,
    /// Attribute keys removed with it (`delete_after_owner_left`).
    pub removed_attributes: Vec<String>,
    /// True if the room is empty now.
    pub room_empty: bool,
}
