//! The domain types of rooms: the room, its members, its attributes and its
//! stored messages, and the outcomes of room operations; and the rules every
//! backend applies the same way — the limits ([`RoomLimits`]) and who may set,
//! overwrite and delete an attribute ([`AttributeChange::plan`],
//! [`initial_attributes`]) — so that a backend's SQL only reads the rows these
//! rules decide on and writes what they decide.

use std::collections::{BTreeMap, BTreeSet};

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
        attrs: &BTreeMap<String, V>,
        value: impl Fn(&V) -> &str,
        touched: &BTreeSet<String>,
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

impl RoomLimits {
    /// Checks that the app may have one more room, given the `rooms` it has now
    /// (every room row, empty rooms waiting for their destroy delay included).
    ///
    /// # Errors
    /// [`RoomError::AppRoomLimit`].
    #[doc(hidden)]
    pub fn check_app_rooms(&self, rooms: i64) -> Result<(), RoomError> {
        if rooms >= i64::from(self.max_rooms_per_app) {
            return Err(RoomError::AppRoomLimit(self.max_rooms_per_app));
        }
        Ok(())
    }

    /// Checks that a user in `rooms` rooms (memberships online or offline) may
    /// enter one more, by creating or joining it.
    ///
    /// # Errors
    /// [`RoomError::UserRoomLimit`].
    #[doc(hidden)]
    pub fn check_user_rooms(&self, rooms: i64) -> Result<(), RoomError> {
        if rooms >= i64::from(self.max_rooms_per_user) {
            return Err(RoomError::UserRoomLimit(self.max_rooms_per_user));
        }
        Ok(())
    }

    /// Checks that a room of `members` members may take one more (a join; the
    /// creator of a room always fits in it).
    ///
    /// # Errors
    /// [`RoomError::RoomFull`].
    #[doc(hidden)]
    pub fn check_room_members(&self, members: i64) -> Result<(), RoomError> {
        if members >= i64::from(self.max_room_members) {
            return Err(RoomError::RoomFull(self.max_room_members));
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

impl Left {
    /// The outcome of removing a member: `removed_attributes`, the keys the
    /// removal deleted (those the member owned that were set with
    /// `is_delete_after_owner_left`; in any order, sorted here), and the members
    /// the room has left (`remaining_members`).
    #[doc(hidden)]
    pub fn new(mut removed_attributes: Vec<String>, remaining_members: i64) -> Self {
        removed_attributes.sort_unstable();
        Left {
            removed_attributes,
            room_empty: remaining_members == 0,
        }
    }

    /// This removal as [`crate::Store::expire_members`] reports it.
    #[doc(hidden)]
    pub fn expired(self, app_id: u32, room_id: String, user_id: String) -> ExpiredMember {
        ExpiredMember {
            app_id,
            room_id,
            user_id,
            removed_attributes: self.removed_attributes,
            room_empty: self.room_empty,
        }
    }
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

/// One stored room attribute, as a backend keeps it: one row per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAttribute {
    /// The value.
    pub value: String,
    /// The member that owns the key.
    pub owner: String,
    /// Whether the key is removed when its owner leaves the room.
    pub delete_after_owner_left: bool,
}

/// What an [`AttributeChange`] does to a room's stored attributes, as
/// [`AttributeChange::plan`] decides it: the backend writes `write`, deletes
/// `delete`, and answers `outcome`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttributePlan {
    /// The answer to the caller.
    pub outcome: AttributesChanged,
    /// Rows to insert or overwrite, ascending by key.
    pub write: Vec<(String, StoredAttribute)>,
    /// Keys whose rows to delete, ascending.
    pub delete: Vec<String>,
}

impl AttributeChange {
    /// Applies this change, asked by member `user_id`, to the room's stored
    /// attributes `attrs` (all of them, by key), and checks the set it would leave
    /// against `limits`. The rules, for every backend:
    /// - Sets apply first, in request order, then deletes.
    /// - A key owned by another member is refused — listed once in
    ///   `error_keys`, left as it is — unless `is_force`.
    /// - A set key is owned by the caller, with the request's
    ///   `is_delete_after_owner_left` — except a key of another member forced
    ///   without `is_update_owner`: its owner keeps it, with the owner's own
    ///   delete-after-left choice.
    /// - Deleting a key that does not exist is a no-op: the key is neither
    ///   `deleted` nor an error key.
    /// - [`RoomLimits::check_attributes`] then checks the resulting set for the
    ///   keys written (a delete-only request is never refused for size).
    ///
    /// # Errors
    /// [`RoomError::AttributeLimit`]: nothing may be written.
    #[doc(hidden)]
    pub fn plan(
        self,
        user_id: &str,
        mut attrs: BTreeMap<String, StoredAttribute>,
        limits: &RoomLimits,
    ) -> Result<AttributePlan, RoomError> {
        let AttributeChange {
            set,
            delete,
            is_force,
            is_update_owner,
            is_delete_after_owner_left,
        } = self;
        let mut outcome = AttributesChanged::default();
        // Keys to write and keys to delete, once the whole request has been applied.
        let mut written = BTreeSet::new();
        let mut removed = BTreeSet::new();
        let refuse = |outcome: &mut AttributesChanged, key: String| {
            if !outcome.error_keys.contains(&key) {
                outcome.error_keys.push(key);
            }
        };

        for (key, value) in set {
            let (owner, delete_after_owner_left) = match attrs.get(&key) {
                Some(a) if a.owner != user_id && !is_force => {
                    refuse(&mut outcome, key);
                    continue;
                }
                // Forced onto another's key without taking it over: its owner keeps it,
                // with the owner's own delete-after-left choice.
                Some(a) if a.owner != user_id && !is_update_owner => {
                    (a.owner.clone(), a.delete_after_owner_left)
                }
                _ => (user_id.to_owned(), is_delete_after_owner_left),
            };
            attrs.insert(
                key.clone(),
                StoredAttribute {
                    value: value.clone(),
                    owner,
                    delete_after_owner_left,
                },
            );
            removed.remove(&key);
            written.insert(key.clone());
            outcome.set.push((key, value));
        }
        for key in delete {
            match attrs.get(&key) {
                None => {}
                Some(a) if a.owner != user_id && !is_force => refuse(&mut outcome, key),
                Some(_) => {
                    attrs.remove(&key);
                    written.remove(&key);
                    removed.insert(key.clone());
                    outcome.deleted.push(key);
                }
            }
        }
        limits.check_attributes(&attrs, |a| a.value.as_str(), &written)?;

        let write = written
            .into_iter()
            .filter_map(|key| {
                let attr = attrs.remove(&key)?;
                Some((key, attr))
            })
            .collect();
        Ok(AttributePlan {
            outcome,
            write,
            delete: removed.into_iter().collect(),
        })
    }
}

/// The attributes a new room starts with: `attributes` owned by `creator`, not
/// removed when it leaves; a repeated key keeps its last value. Checked against
/// `limits` as a request that sets every key.
///
/// # Errors
/// [`RoomError::AttributeLimit`].
#[doc(hidden)]
pub fn initial_attributes(
    creator: &str,
    attributes: impl IntoIterator<Item = (String, String)>,
    limits: &RoomLimits,
) -> Result<Vec<(String, StoredAttribute)>, RoomError> {
    let mut attrs = BTreeMap::new();
    for (key, value) in attributes {
        attrs.insert(
            key,
            StoredAttribute {
                value,
                owner: creator.to_owned(),
                delete_after_owner_left: false,
            },
        );
    }
    let touched: BTreeSet<String> = attrs.keys().cloned().collect();
    limits.check_attributes(&attrs, |a| a.value.as_str(), &touched)?;
    Ok(attrs.into_iter().collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(value: &str, owner: &str, delete_after_owner_left: bool) -> StoredAttribute {
        StoredAttribute {
            value: value.into(),
            owner: owner.into(),
            delete_after_owner_left,
        }
    }

    /// `a` (owned by alice, kept when she leaves) and `b` (owned by bob, removed
    /// when he leaves).
    fn room() -> BTreeMap<String, StoredAttribute> {
        BTreeMap::from([
            ("a".to_owned(), attr("1", "alice", false)),
            ("b".to_owned(), attr("2", "bob", true)),
        ])
    }

    fn change(set: &[(&str, &str)], delete: &[&str]) -> AttributeChange {
        AttributeChange {
            set: set
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            delete: delete.iter().map(|k| (*k).to_owned()).collect(),
            is_force: false,
            is_update_owner: false,
            is_delete_after_owner_left: false,
        }
    }

    fn plan(c: AttributeChange, user: &str) -> AttributePlan {
        c.plan(user, room(), &RoomLimits::default())
            .expect("within limits")
    }

    fn strings(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    #[test]
    fn members_set_and_delete_their_own_and_new_keys() {
        let p = plan(
            AttributeChange {
                is_delete_after_owner_left: true,
                ..change(&[("c", "3"), ("a", "9")], &["missing"])
            },
            "alice",
        );
        assert_eq!(
            p.write,
            vec![
                ("a".to_owned(), attr("9", "alice", true)),
                ("c".to_owned(), attr("3", "alice", true)),
            ]
        );
        assert!(p.delete.is_empty(), "a missing key is no delete");
        assert_eq!(
            p.outcome,
            AttributesChanged {
                error_keys: vec![],
                set: vec![("c".into(), "3".into()), ("a".into(), "9".into())],
                deleted: vec![],
            }
        );
        let p = plan(change(&[], &["a"]), "alice");
        assert_eq!((p.write, p.delete), (vec![], strings(&["a"])));
        assert_eq!(p.outcome.deleted, strings(&["a"]));
    }

    #[test]
    fn another_members_keys_are_refused_without_force_and_listed_once() {
        let p = plan(change(&[("b", "x"), ("c", "3")], &["b", "a"]), "alice");
        assert_eq!(p.outcome.error_keys, strings(&["b"]));
        assert_eq!(p.outcome.set, vec![("c".to_owned(), "3".to_owned())]);
        assert_eq!(p.outcome.deleted, strings(&["a"]));
        assert_eq!(p.write, vec![("c".to_owned(), attr("3", "alice", false))]);
        assert_eq!(p.delete, strings(&["a"]));
    }

    #[test]
    fn force_overwrites_and_update_owner_takes_over() {
        let forced = AttributeChange {
            is_force: true,
            is_delete_after_owner_left: false,
            ..change(&[("b", "x")], &[])
        };
        // Without is_update_owner, bob keeps his key and his choice to remove it.
        let p = plan(forced.clone(), "alice");
        assert_eq!(p.write, vec![("b".to_owned(), attr("x", "bob", true))]);
        assert!(p.outcome.error_keys.is_empty());
        let p = plan(
            AttributeChange {
                is_update_owner: true,
                ..forced
            },
            "alice",
        );
        assert_eq!(p.write, vec![("b".to_owned(), attr("x", "alice", false))]);
        let p = plan(
            AttributeChange {
                is_force: true,
                ..change(&[], &["b"])
            },
            "alice",
        );
        assert_eq!(p.delete, strings(&["b"]));
    }

    #[test]
    fn sets_apply_before_deletes() {
        let p = plan(change(&[("c", "3")], &["c"]), "alice");
        assert!(p.write.is_empty());
        assert_eq!(p.delete, strings(&["c"]));
        assert_eq!(p.outcome.set, vec![("c".to_owned(), "3".to_owned())]);
        assert_eq!(p.outcome.deleted, strings(&["c"]));
    }

    #[test]
    fn limits_apply_to_the_set_left_and_only_when_a_key_is_written() {
        let tight = RoomLimits {
            max_attr_keys: 2,
            ..RoomLimits::default()
        };
        let err = change(&[("c", "3")], &[])
            .plan("alice", room(), &tight)
            .expect_err("three keys");
        assert!(
            matches!(&err, RoomError::AttributeLimit(m)
                if m == "the room would have 3 attribute keys; the limit is 2 keys per room"),
            "{err}"
        );
        // Replacing one key with another leaves two.
        let p = change(&[("c", "3")], &["a"])
            .plan("alice", room(), &tight)
            .expect("two keys");
        assert_eq!(p.write.len(), 1);
        // A delete-only request, or one whose every set is refused, is never
        // refused for size, even on a room already over the limit.
        let over = RoomLimits {
            max_attr_keys: 1,
            ..RoomLimits::default()
        };
        assert!(
            change(&[], &["missing"])
                .plan("alice", room(), &over)
                .is_ok()
        );
        assert!(
            change(&[("b", "x")], &[])
                .plan("alice", room(), &over)
                .is_ok()
        );
        assert!(
            change(&[("", "x")], &[])
                .plan("alice", room(), &RoomLimits::default())
                .is_err(),
            "empty key"
        );
    }

    #[test]
    fn initial_attributes_are_the_creators_and_the_last_value_wins() {
        let attrs = initial_attributes(
            "alice",
            [("b", "1"), ("a", "2"), ("b", "3")].map(|(k, v)| (k.to_owned(), v.to_owned())),
            &RoomLimits::default(),
        )
        .expect("within limits");
        assert_eq!(
            attrs,
            vec![
                ("a".to_owned(), attr("2", "alice", false)),
                ("b".to_owned(), attr("3", "alice", false)),
            ]
        );
        let err = initial_attributes(
            "alice",
            [("k".to_owned(), "x".repeat(1025))],
            &RoomLimits::default(),
        )
        .expect_err("value too long");
        assert!(
            matches!(&err, RoomError::AttributeLimit(m)
                if m == "the value of room attribute \"k\" is 1025 bytes; the limit is 1024 bytes per value"),
            "{err}"
        );
    }

    #[test]
    fn room_and_member_limits() {
        let limits = RoomLimits {
            max_rooms_per_app: 2,
            max_rooms_per_user: 1,
            max_room_members: 3,
            ..RoomLimits::default()
        };
        assert!(limits.check_app_rooms(1).is_ok());
        assert!(matches!(
            limits.check_app_rooms(2),
            Err(RoomError::AppRoomLimit(2))
        ));
        assert!(limits.check_user_rooms(0).is_ok());
        assert!(matches!(
            limits.check_user_rooms(1),
            Err(RoomError::UserRoomLimit(1))
        ));
        assert!(limits.check_room_members(2).is_ok());
        assert!(matches!(
            limits.check_room_members(3),
            Err(RoomError::RoomFull(3))
        ));
    }

    #[test]
    fn a_leave_reports_sorted_keys_and_whether_the_room_is_empty() {
        let left = Left::new(strings(&["z", "a"]), 0);
        assert_eq!(left.removed_attributes, strings(&["a", "z"]));
        assert!(left.room_empty);
        assert!(!Left::new(vec![], 2).room_empty);
        let expired = left.expired(1, "r".into(), "u".into());
        assert_eq!(
            expired,
            ExpiredMember {
                app_id: 1,
                room_id: "r".into(),
                user_id: "u".into(),
                removed_attributes: strings(&["a", "z"]),
                room_empty: true,
            }
        );
    }
}
