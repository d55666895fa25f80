//! The [`Store`] trait: everything confab keeps — apps, users, messages, inboxes —
//! in the shape the server thinks of it, and [`SqliteStore`], the embedded default.
//!
//! Backends live in their own crates (PostgreSQL later) and prove themselves with
//! the same suite, [`conformance`] (feature `conformance`), that the SQLite store
//! passes. Nothing outside backend crates and the one place that picks a backend
//! names a database.

#[doc(hidden)]
pub mod backend;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod rooms;
mod sqlite;

use async_trait::async_trait;

pub use rooms::{
    AppendedRoom, AttributeChange, AttributesChanged, Conversation, ExpiredMember, HistoryMessage,
    HistoryQuery, Joined, Left, MemberRecord, NewRoom, NewRoomMessage, RoomError, RoomLimits,
    RoomRecord, StoredRoomMessage,
};
#[doc(hidden)]
pub use rooms::{AttributePlan, StoredAttribute, initial_attributes};
pub use sqlite::{SqliteConfig, SqliteStore, WriterStats};

/// A configured app, as the store keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct AppRecord {
    /// Non-zero AppID.
    pub app_id: u32,
    /// The 32-character ServerSecret. Never logged; `Debug` redacts it.
    pub secret: String,
    /// Human-readable name ("development app").
    pub name: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
}

impl std::fmt::Debug for AppRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppRecord")
            .field("app_id", &self.app_id)
            .field("secret", &"<redacted>")
            .field("name", &self.name)
            .field("created_ms", &self.created_ms)
            .finish()
    }
}

/// A peer message to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPeerMessage {
    /// The app both users belong to.
    pub app_id: u32,
    /// The sender (always the sending session's user).
    pub sender: String,
    /// The receiver.
    pub receiver: String,
    /// ZIM message type number (1 = Text; only stored types are appended).
    pub kind: u8,
    /// The body as sent on the wire (text, or base64 for bytes).
    pub body: String,
    /// The sender's id for the message; (app, sender, local_message_id) is unique.
    pub local_message_id: u64,
    /// Acceptance time, ms since the Unix epoch (from the server's clock).
    pub timestamp_ms: i64,
    /// Priority number (1..=3), kept for delivery.
    pub priority: u8,
}

/// A stored peer message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPeerMessage {
    /// Unique per app (in fact per store), positive, below 2^53.
    pub message_id: u64,
    /// Position in the conversation of the two users, starting at 1, strictly
    /// increasing, shared by both directions.
    pub conversation_seq: u64,
    /// Position in the receiver's inbox, starting at 1, strictly increasing.
    pub inbox_seq: u64,
    /// As appended.
    pub app_id: u32,
    /// As appended.
    pub sender: String,
    /// As appended.
    pub receiver: String,
    /// As appended.
    pub kind: u8,
    /// As appended.
    pub body: String,
    /// As appended.
    pub local_message_id: u64,
    /// As appended (of the first append, for a duplicate).
    pub timestamp_ms: i64,
    /// As appended.
    pub priority: u8,
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The stored message (the first one, for a duplicate).
    pub message: StoredPeerMessage,
    /// True if (app, sender, local_message_id) was already stored: nothing new was
    /// written, and the caller must not deliver it again.
    pub duplicate: bool,
}

/// A page of a user's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InboxPage {
    /// Messages with `inbox_seq` greater than the asked position, ascending, at most
    /// the asked limit.
    pub messages: Vec<StoredPeerMessage>,
    /// The newest inbox position of the user (0 if the inbox has never had a message).
    pub head: u64,
    /// The oldest inbox position still held (`head + 1` if none is held). Positions
    /// after the asked one and below this were removed by retention: a gap.
    pub first_held: u64,
}

/// What went wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable or failed (I/O, database error, writer gone).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The data contradicts the store's rules (should not happen; a bug or corruption).
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// An argument is out of the store's range (e.g. an app with AppID 0).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// Where confab keeps what must survive a restart.
///
/// Contract, for every implementation (checked by [`conformance`]):
/// - **Durability:** when a write method returns `Ok`, the write survives a crash of
///   the process (and, for the SQLite default, of the machine: it is fsync'd).
///   Implementations may batch concurrent writes into one commit (group commit).
/// - **Isolation:** every key is scoped by `app_id`; nothing of one app is visible
///   through another app's id, even with identical user IDs.
/// - **Idempotency:** appending the same (app, sender, local_message_id) again returns
///   the first stored message with `duplicate = true` and writes nothing.
/// - **Order:** `conversation_seq` is strictly increasing per conversation (the
///   unordered pair of users, per app) and `inbox_seq` per (app, receiver), both
///   starting at 1, never reused, without holes except where retention removed
///   messages; message ids are unique.
/// - **AppIDs are non-zero:** a write naming AppID 0 fails with
///   [`StoreError::Invalid`] and stores nothing.
/// - Methods are safe to call concurrently from many tasks.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// All apps, ascending by AppID.
    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError>;

    /// Inserts the app or replaces the one with the same AppID.
    async fn put_app(&self, app: &AppRecord) -> Result<(), StoreError>;

    /// Records that a user logged in (creating the user on first login) with this
    /// display name, at `now_ms`.
    async fn touch_user(
        &self,
        app_id: u32,
        user_id: &str,
        user_name: &str,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Durably appends a peer message, assigning message id, conversation seq and the
    /// receiver's inbox seq. See the trait's contract for idempotency.
    async fn append_peer(&self, msg: NewPeerMessage) -> Result<Appended, StoreError>;

    /// Whether appends are applied in the order their futures were first polled.
    ///
    /// When `true`, a caller may start several [`Store::append_peer`] and
    /// [`Store::append_room`] calls, poll each once in turn, and then await them
    /// in that same order: the store applies them, and assigns inbox and room
    /// seqs, in that order (a session pipelines one sender's messages this way).
    /// When `false` (the default), only appends awaited one after another are
    /// ordered. Nothing is promised between callers.
    fn appends_in_call_order(&self) -> bool {
        false
    }

    /// Whether this process is the store's only writer (an embedded database):
    /// then every room seq is assigned by this process's appends and a room's
    /// seqs have no gaps — its next message gets the head + 1, and duplicates and
    /// refused appends take no seq. `false` (the default) for a store that
    /// several nodes share.
    fn single_node(&self) -> bool {
        false
    }

    /// The receiver's inbox after position `after` (exclusive), at most `limit`
    /// messages, ascending.
    async fn inbox_after(
        &self,
        app_id: u32,
        user_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<InboxPage, StoreError>;

    /// Records that the user has received its inbox up to `inbox_seq`. The stored
    /// position only moves forward: a lower value is ignored.
    async fn ack_inbox(&self, app_id: u32, user_id: &str, inbox_seq: u64)
    -> Result<(), StoreError>;

    /// The last acknowledged inbox position (0 if none).
    async fn inbox_acked(&self, app_id: u32, user_id: &str) -> Result<u64, StoreError>;

    /// Removes stored messages older than `cutoff_ms`; returns how many. Positions are
    /// never reused afterwards.
    async fn purge_before(&self, cutoff_ms: i64) -> Result<u64, StoreError>;

    /// Cheap liveness check of the backend, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    // ---- Rooms. Every write below is atomic: its checks and changes happen in
    // one transaction, so limits hold under concurrent callers.

    /// Creates a room and makes the creator its first member, with the initial
    /// attributes owned by the creator. Errors: [`RoomError::Exists`] (a live room
    /// with this ID), [`RoomError::AppRoomLimit`], [`RoomError::UserRoomLimit`] (the
    /// creator is in `max_rooms_per_user` rooms), [`RoomError::AttributeLimit`].
    /// A destroyed room's ID may be created again; its seqs continue.
    async fn create_room(&self, room: NewRoom, limits: RoomLimits)
    -> Result<RoomRecord, RoomError>;

    /// Adds a member (or marks an existing member online again: `already_member`).
    /// Errors: [`RoomError::NotFound`], [`RoomError::UserRoomLimit`],
    /// [`RoomError::RoomFull`]. A join clears the room's `empty_since_ms`.
    async fn join_room(
        &self,
        app_id: u32,
        room_id: &str,
        user_id: &str,
        user_name: &str,
        now_ms: i64,
        limits: RoomLimits,
    ) -> Result<Joined, RoomError>;

    /// Removes a member, and the attributes it owns that were set with
    /// `is_delete_after_owner_left`. The last member leaving sets `empty_since_ms`.
    /// Errors: [`RoomError::NotFound`], [`RoomError::NotMember`].
    async fn leave_room(
        &self,
        app_id: u32,
        room_id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<Left, RoomError>;

    /// The live room, if it exists.
    async fn room(&self, app_id: u32, room_id: &str) -> Result<Option<RoomRecord>, StoreError>;

    /// Whether the user is a member of the room.
    async fn is_member(
        &self,
        app_id: u32,
        room_id: &str,
        user_id: &str,
    ) -> Result<bool, StoreError>;

    /// Members ordered by userID, those after `after_user` (exclusive), at most `limit`.
    async fn room_members(
        &self,
        app_id: u32,
        room_id: &str,
        after_user: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MemberRecord>, StoreError>;

    /// Number of members.
    async fn room_member_count(&self, app_id: u32, room_id: &str) -> Result<u64, StoreError>;

    /// The rooms the user is a member of, ascending by roomID.
    async fn user_rooms(&self, app_id: u32, user_id: &str) -> Result<Vec<RoomRecord>, StoreError>;

    /// Marks all the user's memberships offline since `now_ms` (`Some`) or online
    /// (`None`). Offline members keep their rooms until [`Store::expire_members`].
    async fn set_member_offline(
        &self,
        app_id: u32,
        user_id: &str,
        since_ms: Option<i64>,
    ) -> Result<(), StoreError>;

    /// Removes members offline since before `cutoff_ms` (as [`Store::leave_room`]
    /// would), returning each removal.
    async fn expire_members(&self, cutoff_ms: i64) -> Result<Vec<ExpiredMember>, StoreError>;

    /// Destroys rooms that have been empty for their destroy delay as of `now_ms`,
    /// with their attributes; returns (app, room) of each.
    async fn destroy_empty_rooms(&self, now_ms: i64) -> Result<Vec<(u32, String)>, StoreError>;

    /// Applies an attribute change for a member: sets, then deletes. Keys owned by
    /// another member are refused (listed in `error_keys`) unless `is_force`. The
    /// resulting attribute set must respect the limits, else nothing changes and
    /// [`RoomError::AttributeLimit`] names the limit. Errors also:
    /// [`RoomError::NotFound`], [`RoomError::NotMember`].
    async fn change_room_attributes(
        &self,
        app_id: u32,
        room_id: &str,
        user_id: &str,
        change: AttributeChange,
        limits: RoomLimits,
    ) -> Result<AttributesChanged, RoomError>;

    /// All attributes of the room, ascending by key.
    async fn room_attributes(
        &self,
        app_id: u32,
        room_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError>;

    /// Durably appends a room message (the sender must be a member: else
    /// [`RoomError::NotMember`]; a missing room: [`RoomError::NotFound`]), assigning
    /// message id and the room's next seq. Idempotent by (app, sender,
    /// local_message_id) among room messages, as [`Store::append_peer`].
    async fn append_room(&self, msg: NewRoomMessage) -> Result<AppendedRoom, RoomError>;

    /// Room messages with seq greater than `after`, ascending, at most `limit`.
    async fn room_messages_after(
        &self,
        app_id: u32,
        room_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredRoomMessage>, StoreError>;

    /// A page of a conversation's stored messages, as [`HistoryQuery`] says.
    async fn history(&self, query: HistoryQuery) -> Result<Vec<HistoryMessage>, StoreError>;
}
