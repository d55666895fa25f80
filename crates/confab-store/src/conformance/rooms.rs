//! The room checks of the conformance suite: rooms and their limits, members,
//! attributes, room messages, expiry and destroy, history of peer and room
//! conversations, app isolation, and limits under concurrent callers. Re-exported
//! by [`super`]; [`super::run_all`] runs them all.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::{APP, Started, append, assert_call_order, poll_once, text};
use crate::{
    AttributeChange, AttributesChanged, Conversation, HistoryMessage, HistoryQuery, Joined, Left,
    MemberRecord, NewRoom, NewRoomMessage, RoomError, RoomLimits, RoomRecord, Store, StoreError,
    StoredRoomMessage,
};

// ---------------------------------------------------------------------------------
// Helpers

fn limits() -> RoomLimits {
    RoomLimits::default()
}

fn name_of(user: &str) -> String {
    format!("{user} (display name)")
}

fn new_room(app_id: u32, room_id: &str, creator: &str, now_ms: i64) -> NewRoom {
    NewRoom {
        app_id,
        room_id: room_id.to_owned(),
        room_name: format!("{room_id} room"),
        creator: creator.to_owned(),
        creator_name: name_of(creator),
        attributes: Vec::new(),
        destroy_delay_secs: 0,
        now_ms,
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

async fn create<S: Store>(store: &S, room: NewRoom) -> RoomRecord {
    create_with(store, room, limits()).await
}

async fn create_with<S: Store>(store: &S, room: NewRoom, limits: RoomLimits) -> RoomRecord {
    store
        .create_room(room.clone(), limits)
        .await
        .unwrap_or_else(|e| panic!("create_room {room:?} failed: {e}"))
}

async fn join<S: Store>(store: &S, app_id: u32, room_id: &str, user: &str, now_ms: i64) -> Joined {
    join_with(store, app_id, room_id, user, now_ms, limits()).await
}

async fn join_with<S: Store>(
    store: &S,
    app_id: u32,
    room_id: &str,
    user: &str,
    now_ms: i64,
    limits: RoomLimits,
) -> Joined {
    store
        .join_room(app_id, room_id, user, &name_of(user), now_ms, limits)
        .await
        .unwrap_or_else(|e| panic!("join_room {app_id}/{room_id} by {user} failed: {e}"))
}

async fn leave<S: Store>(store: &S, app_id: u32, room_id: &str, user: &str, now_ms: i64) -> Left {
    store
        .leave_room(app_id, room_id, user, now_ms)
        .await
        .unwrap_or_else(|e| panic!("leave_room {app_id}/{room_id} by {user} failed: {e}"))
}

async fn room_of<S: Store>(store: &S, app_id: u32, room_id: &str) -> Option<RoomRecord> {
    store.room(app_id, room_id).await.expect("room")
}

async fn member<S: Store>(store: &S, app_id: u32, room_id: &str, user: &str) -> bool {
    store
        .is_member(app_id, room_id, user)
        .await
        .expect("is_member")
}

async fn count<S: Store>(store: &S, app_id: u32, room_id: &str) -> u64 {
    store
        .room_member_count(app_id, room_id)
        .await
        .expect("room_member_count")
}

/// Every member of the room, read in pages of 7.
async fn all_members<S: Store>(store: &S, app_id: u32, room_id: &str) -> Vec<MemberRecord> {
    let mut all: Vec<MemberRecord> = Vec::new();
    loop {
        let after = all.last().map(|m| m.user_id.clone());
        let page = store
            .room_members(app_id, room_id, after.as_deref(), 7)
            .await
            .expect("room_members");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

async fn member_ids<S: Store>(store: &S, app_id: u32, room_id: &str) -> Vec<String> {
    all_members(store, app_id, room_id)
        .await
        .into_iter()
        .map(|m| m.user_id)
        .collect()
}

async fn room_ids<S: Store>(store: &S, app_id: u32, user: &str) -> Vec<String> {
    store
        .user_rooms(app_id, user)
        .await
        .expect("user_rooms")
        .into_iter()
        .map(|r| r.room_id)
        .collect()
}

async fn attributes<S: Store>(store: &S, app_id: u32, room_id: &str) -> Vec<(String, String)> {
    store
        .room_attributes(app_id, room_id)
        .await
        .expect("room_attributes")
}

/// A plain change: no force, no owner update, not deleted after the owner leaves.
fn change(set: &[(&str, &str)], delete: &[&str]) -> AttributeChange {
    AttributeChange {
        set: pairs(set),
        delete: strings(delete),
        is_force: false,
        is_update_owner: false,
        is_delete_after_owner_left: false,
    }
}

async fn change_attrs<S: Store>(
    store: &S,
    room_id: &str,
    user: &str,
    change: AttributeChange,
) -> AttributesChanged {
    change_attrs_with(store, room_id, user, change, limits())
        .await
        .unwrap_or_else(|e| panic!("change_room_attributes in {room_id} by {user} failed: {e}"))
}

async fn change_attrs_with<S: Store>(
    store: &S,
    room_id: &str,
    user: &str,
    change: AttributeChange,
    limits: RoomLimits,
) -> Result<AttributesChanged, RoomError> {
    store
        .change_room_attributes(APP, room_id, user, change, limits)
        .await
}

fn changed(set: &[(&str, &str)], deleted: &[&str], error_keys: &[&str]) -> AttributesChanged {
    AttributesChanged {
        error_keys: strings(error_keys),
        set: pairs(set),
        deleted: strings(deleted),
    }
}

fn room_text(app_id: u32, room_id: &str, sender: &str, local: u64, ts: i64) -> NewRoomMessage {
    NewRoomMessage {
        app_id,
        room_id: room_id.to_owned(),
        sender: sender.to_owned(),
        kind: 1,
        body: format!("{app_id}:{sender}@{room_id}#{local}"),
        local_message_id: local,
        timestamp_ms: ts,
        priority: 2,
    }
}

async fn append_room<S: Store>(store: &S, msg: NewRoomMessage) -> StoredRoomMessage {
    let appended = store
        .append_room(msg.clone())
        .await
        .unwrap_or_else(|e| panic!("append_room {msg:?} failed: {e}"));
    assert!(
        !appended.duplicate,
        "a first room send was reported as a duplicate: {msg:?}"
    );
    appended.message
}

fn is_invalid<T>(r: &Result<T, RoomError>) -> bool {
    matches!(r, Err(RoomError::Store(StoreError::Invalid(_))))
}

fn history_query(
    app_id: u32,
    conversation: Conversation,
    anchor: Option<u64>,
    count: usize,
    reverse: bool,
) -> HistoryQuery {
    HistoryQuery {
        app_id,
        conversation,
        anchor,
        count,
        reverse,
    }
}

async fn history_seqs<S: Store>(store: &S, query: HistoryQuery) -> Vec<u64> {
    store
        .history(query.clone())
        .await
        .unwrap_or_else(|e| panic!("history {query:?} failed: {e}"))
        .iter()
        .map(|m| m.seq)
        .collect()
}

// ---------------------------------------------------------------------------------
// Checks

/// create_room stores the room and its creator as first member with the initial
/// attributes; a second create is `Exists` (also while the room is empty and waiting
/// for its destroy delay); the app's room limit counts live rooms (empty ones too),
/// per app; the per-user limit counts created and joined rooms; AppID 0 is refused.
pub async fn room_create_exists_and_limits<S: Store>(store: &S) {
    assert_eq!(room_of(store, APP, "r1").await, None, "no room yet");
    let created = create(
        store,
        NewRoom {
            attributes: pairs(&[("k", "v")]),
            destroy_delay_secs: 30,
            ..new_room(APP, "r1", "alice", 1_000)
        },
    )
    .await;
    let expected = RoomRecord {
        app_id: APP,
        room_id: "r1".into(),
        room_name: "r1 room".into(),
        created_ms: 1_000,
        destroy_delay_secs: 30,
        empty_since_ms: None,
        seq_head: 0,
    };
    assert_eq!(created, expected, "create returns the room");
    assert_eq!(room_of(store, APP, "r1").await, Some(expected.clone()));
    assert!(
        member(store, APP, "r1", "alice").await,
        "the creator joined"
    );
    assert_eq!(count(store, APP, "r1").await, 1);
    assert_eq!(
        all_members(store, APP, "r1").await,
        vec![MemberRecord {
            user_id: "alice".into(),
            user_name: name_of("alice"),
            joined_ms: 1_000
        }]
    );
    assert_eq!(attributes(store, APP, "r1").await, pairs(&[("k", "v")]));
    assert_eq!(
        store.user_rooms(APP, "alice").await.expect("user_rooms"),
        vec![expected.clone()]
    );

    let again = store
        .create_room(new_room(APP, "r1", "bob", 2_000), limits())
        .await;
    assert!(
        matches!(again, Err(RoomError::Exists)),
        "a second create: {again:?}"
    );
    assert!(
        !member(store, APP, "r1", "bob").await,
        "a refused create joins no one"
    );
    assert_eq!(
        room_of(store, APP, "r1").await,
        Some(expected),
        "the room is unchanged"
    );

    // The app's room limit.
    let three = RoomLimits {
        max_rooms_per_app: 3,
        ..limits()
    };
    create_with(store, new_room(APP, "r2", "bob", 3_000), three).await;
    create_with(store, new_room(APP, "r3", "carol", 3_000), three).await;
    let full = store
        .create_room(new_room(APP, "r4", "dave", 3_000), three)
        .await;
    assert!(
        matches!(full, Err(RoomError::AppRoomLimit(3))),
        "the 4th room of an app limited to 3: {full:?}"
    );
    assert_eq!(room_of(store, APP, "r4").await, None);
    assert!(room_ids(store, APP, "dave").await.is_empty());
    // An empty room waiting for its destroy delay is still a room.
    let left = leave(store, APP, "r3", "carol", 4_000).await;
    assert!(left.room_empty);
    let still = store
        .create_room(new_room(APP, "r4", "dave", 4_000), three)
        .await;
    assert!(
        matches!(still, Err(RoomError::AppRoomLimit(3))),
        "an empty room counts until destroyed: {still:?}"
    );
    let pending = store
        .create_room(new_room(APP, "r3", "dave", 4_000), limits())
        .await;
    assert!(
        matches!(pending, Err(RoomError::Exists)),
        "an empty room not yet destroyed exists: {pending:?}"
    );
    // Another app has its own count.
    create_with(store, new_room(2, "r4", "dave", 4_000), three).await;

    // The per-user limit counts created and joined rooms.
    let two = RoomLimits {
        max_rooms_per_user: 2,
        ..limits()
    };
    create_with(store, new_room(APP, "e1", "erin", 5_000), two).await;
    join_with(store, APP, "r1", "erin", 5_000, two).await;
    let over = store
        .create_room(new_room(APP, "e2", "erin", 5_000), two)
        .await;
    assert!(
        matches!(over, Err(RoomError::UserRoomLimit(2))),
        "a 3rd room for a user limited to 2: {over:?}"
    );
    assert_eq!(
        room_of(store, APP, "e2").await,
        None,
        "a refused create leaves nothing"
    );
    let over = store.join_room(APP, "r2", "erin", "Erin", 5_000, two).await;
    assert!(
        matches!(over, Err(RoomError::UserRoomLimit(2))),
        "a 3rd join for a user limited to 2: {over:?}"
    );
    assert!(!member(store, APP, "r2", "erin").await);
    assert_eq!(room_ids(store, APP, "erin").await, strings(&["e1", "r1"]));
    leave(store, APP, "r1", "erin", 6_000).await;
    create_with(store, new_room(APP, "e2", "erin", 6_000), two).await;
    assert_eq!(room_ids(store, APP, "erin").await, strings(&["e1", "e2"]));

    let zero = store
        .create_room(new_room(0, "z", "alice", 1), limits())
        .await;
    assert!(is_invalid(&zero), "AppID 0 is invalid: {zero:?}");
}

/// join_room: `NotFound` for a missing room; a join adds a member; a second join is
/// `already_member` and changes nothing (no limit applies to it); `RoomFull` at the
/// member limit. leave_room: `NotFound`, `NotMember`; the last leave sets
/// `empty_since_ms`, a later join clears it.
pub async fn room_join_and_leave<S: Store>(store: &S) {
    let missing = store
        .join_room(APP, "nope", "bob", "Bob", 1, limits())
        .await;
    assert!(
        matches!(missing, Err(RoomError::NotFound)),
        "join of a missing room: {missing:?}"
    );
    let missing = store.leave_room(APP, "nope", "bob", 1).await;
    assert!(
        matches!(missing, Err(RoomError::NotFound)),
        "leave of a missing room: {missing:?}"
    );

    create(store, new_room(APP, "r", "alice", 1_000)).await;
    let joined = join(store, APP, "r", "bob", 2_000).await;
    assert!(!joined.already_member, "a first join");
    assert_eq!(Some(joined.room.clone()), room_of(store, APP, "r").await);
    assert_eq!(joined.room.empty_since_ms, None);
    let again = store
        .join_room(APP, "r", "bob", "another name", 3_000, limits())
        .await
        .expect("join again");
    assert!(again.already_member, "a second join is a rejoin");
    assert_eq!(count(store, APP, "r").await, 2);
    assert_eq!(
        all_members(store, APP, "r").await[1],
        MemberRecord {
            user_id: "bob".into(),
            user_name: name_of("bob"),
            joined_ms: 2_000
        },
        "a rejoin changes nothing"
    );

    let three = RoomLimits {
        max_room_members: 3,
        ..limits()
    };
    join_with(store, APP, "r", "carol", 3_000, three).await;
    let full = store
        .join_room(APP, "r", "dave", "Dave", 3_000, three)
        .await;
    assert!(
        matches!(full, Err(RoomError::RoomFull(3))),
        "a 4th member in a room of 3: {full:?}"
    );
    assert!(!member(store, APP, "r", "dave").await);
    assert_eq!(count(store, APP, "r").await, 3);
    let rejoin = RoomLimits {
        max_room_members: 3,
        max_rooms_per_user: 1,
        ..limits()
    };
    create(store, new_room(APP, "other", "bob", 3_000)).await;
    assert!(
        join_with(store, APP, "r", "bob", 3_000, rejoin)
            .await
            .already_member,
        "a rejoin is not limited (room full, user at its limit)"
    );

    let not = store.leave_room(APP, "r", "dave", 4_000).await;
    assert!(
        matches!(not, Err(RoomError::NotMember)),
        "leave by a non-member: {not:?}"
    );
    assert_eq!(
        leave(store, APP, "r", "carol", 4_000).await,
        Left {
            removed_attributes: vec![],
            room_empty: false
        }
    );
    assert!(!member(store, APP, "r", "carol").await);
    let twice = store.leave_room(APP, "r", "carol", 4_000).await;
    assert!(
        matches!(twice, Err(RoomError::NotMember)),
        "a second leave: {twice:?}"
    );
    assert!(!leave(store, APP, "r", "bob", 5_000).await.room_empty);
    assert!(leave(store, APP, "r", "alice", 6_000).await.room_empty);
    let empty = room_of(store, APP, "r")
        .await
        .expect("an empty room lives on");
    assert_eq!(empty.empty_since_ms, Some(6_000), "the last leave's time");
    assert_eq!(count(store, APP, "r").await, 0);
    assert!(all_members(store, APP, "r").await.is_empty());

    let back = join(store, APP, "r", "carol", 7_000).await;
    assert!(!back.already_member);
    assert_eq!(back.room.empty_since_ms, None, "a join clears empty_since");
    assert_eq!(
        room_of(store, APP, "r").await.expect("room").empty_since_ms,
        None
    );

    let zero = store.join_room(0, "r", "bob", "Bob", 1, limits()).await;
    assert!(is_invalid(&zero), "AppID 0 join: {zero:?}");
    let zero = store.leave_room(0, "r", "carol", 1).await;
    assert!(is_invalid(&zero), "AppID 0 leave: {zero:?}");
}

/// Members page by userID after `after_user`; counts and user_rooms follow joins and
/// leaves; unknown rooms and users read as empty.
pub async fn room_member_pages_counts_and_user_rooms<S: Store>(store: &S) {
    create(store, new_room(APP, "hall", "u12", 1_000)).await;
    // Joined out of order; listed by userID.
    for i in (0..25).rev().filter(|i| *i != 12) {
        join(store, APP, "hall", &format!("u{i:02}"), 2_000 + i).await;
    }
    let expected: Vec<String> = (0..25).map(|i| format!("u{i:02}")).collect();
    assert_eq!(count(store, APP, "hall").await, 25);
    let mut after: Option<String> = None;
    let mut seen = Vec::new();
    for size in [10, 10, 5, 0] {
        let page = store
            .room_members(APP, "hall", after.as_deref(), 10)
            .await
            .expect("room_members");
        assert_eq!(page.len(), size, "page after {after:?}");
        after = page.last().map(|m| m.user_id.clone());
        seen.extend(page);
    }
    assert_eq!(
        seen.iter().map(|m| m.user_id.clone()).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(
        seen[3],
        MemberRecord {
            user_id: "u03".into(),
            user_name: name_of("u03"),
            joined_ms: 2_003
        }
    );
    assert_eq!(seen[12].joined_ms, 1_000, "the creator joined at creation");
    let middle = store
        .room_members(APP, "hall", Some("u05"), 3)
        .await
        .expect("room_members");
    assert_eq!(
        middle
            .iter()
            .map(|m| m.user_id.as_str())
            .collect::<Vec<_>>(),
        ["u06", "u07", "u08"]
    );
    let between = store
        .room_members(APP, "hall", Some("u05a"), 1)
        .await
        .expect("room_members");
    assert_eq!(between[0].user_id, "u06", "after_user need not be a member");
    assert!(
        store
            .room_members(APP, "hall", None, 0)
            .await
            .expect("room_members")
            .is_empty()
    );
    assert!(
        store
            .room_members(APP, "nowhere", None, 10)
            .await
            .expect("room_members")
            .is_empty()
    );
    assert_eq!(count(store, APP, "nowhere").await, 0);

    leave(store, APP, "hall", "u07", 3_000).await;
    assert_eq!(count(store, APP, "hall").await, 24);
    let middle = store
        .room_members(APP, "hall", Some("u05"), 3)
        .await
        .expect("room_members");
    assert_eq!(
        middle
            .iter()
            .map(|m| m.user_id.as_str())
            .collect::<Vec<_>>(),
        ["u06", "u08", "u09"]
    );

    create(store, new_room(APP, "b", "u03", 4_000)).await;
    create(store, new_room(APP, "a", "u01", 4_000)).await;
    join(store, APP, "a", "u03", 4_000).await;
    assert_eq!(
        room_ids(store, APP, "u03").await,
        strings(&["a", "b", "hall"])
    );
    let rooms = store.user_rooms(APP, "u03").await.expect("user_rooms");
    assert_eq!(
        rooms[2],
        room_of(store, APP, "hall").await.expect("room"),
        "user_rooms returns the rooms"
    );
    assert!(room_ids(store, APP, "u07").await.is_empty(), "u07 left");
    assert!(room_ids(store, APP, "nobody").await.is_empty());
    assert!(
        room_ids(store, 2, "u03").await.is_empty(),
        "another app's user"
    );
}

/// Attribute ownership: another member's key is refused (`error_keys`) unless
/// `is_force`; a forced set keeps the owner unless `is_update_owner`; deletes follow
/// the same rule; deleting a missing key is a no-op; a request sets, then deletes;
/// `NotMember` and `NotFound`; AppID 0 is refused.
pub async fn room_attribute_ownership<S: Store>(store: &S) {
    create(
        store,
        NewRoom {
            attributes: pairs(&[("a", "1")]),
            ..new_room(APP, "r", "alice", 1_000)
        },
    )
    .await;
    join(store, APP, "r", "bob", 1_000).await;

    let refused = change_attrs(store, "r", "bob", change(&[("a", "2")], &[])).await;
    assert_eq!(
        refused,
        changed(&[], &[], &["a"]),
        "bob may not set alice's key"
    );
    assert_eq!(attributes(store, APP, "r").await, pairs(&[("a", "1")]));
    let mixed = change_attrs(store, "r", "bob", change(&[("a", "3"), ("b", "x")], &[])).await;
    assert_eq!(
        mixed,
        changed(&[("b", "x")], &[], &["a"]),
        "the rest of a request goes through"
    );
    assert_eq!(
        attributes(store, APP, "r").await,
        pairs(&[("a", "1"), ("b", "x")])
    );
    let refused = change_attrs(store, "r", "alice", change(&[], &["b", "nope"])).await;
    assert_eq!(
        refused,
        changed(&[], &[], &["b"]),
        "alice may not delete bob's key; a missing key is no error"
    );

    // Forced, without taking ownership: bob still owns b.
    let forced = AttributeChange {
        is_force: true,
        ..change(&[("b", "y")], &[])
    };
    assert_eq!(
        change_attrs(store, "r", "alice", forced).await,
        changed(&[("b", "y")], &[], &[])
    );
    assert_eq!(
        change_attrs(store, "r", "alice", change(&[("b", "z")], &[])).await,
        changed(&[], &[], &["b"]),
        "still bob's"
    );
    assert_eq!(
        change_attrs(store, "r", "bob", change(&[("b", "w")], &[])).await,
        changed(&[("b", "w")], &[], &[]),
        "bob still owns b"
    );
    // Forced and taking ownership: alice owns b now.
    let take = AttributeChange {
        is_force: true,
        is_update_owner: true,
        ..change(&[("b", "v")], &[])
    };
    change_attrs(store, "r", "alice", take).await;
    assert_eq!(
        change_attrs(store, "r", "bob", change(&[("b", "u")], &[])).await,
        changed(&[], &[], &["b"]),
        "b is alice's now"
    );
    assert_eq!(
        change_attrs(store, "r", "alice", change(&[("b", "t")], &[])).await,
        changed(&[("b", "t")], &[], &[])
    );
    // Forced delete.
    change_attrs(store, "r", "bob", change(&[("c", "1")], &[])).await;
    let forced = AttributeChange {
        is_force: true,
        ..change(&[], &["c"])
    };
    assert_eq!(
        change_attrs(store, "r", "alice", forced).await,
        changed(&[], &["c"], &[])
    );
    // Set, then delete, in one request.
    assert_eq!(
        change_attrs(store, "r", "bob", change(&[("t", "1")], &["t"])).await,
        changed(&[("t", "1")], &["t"], &[])
    );
    assert_eq!(
        attributes(store, APP, "r").await,
        pairs(&[("a", "1"), ("b", "t")]),
        "ascending by key"
    );
    // The owner deletes its own key.
    assert_eq!(
        change_attrs(store, "r", "alice", change(&[], &["a"])).await,
        changed(&[], &["a"], &[])
    );
    assert_eq!(attributes(store, APP, "r").await, pairs(&[("b", "t")]));

    let outsider =
        change_attrs_with(store, "r", "carol", change(&[("x", "1")], &[]), limits()).await;
    assert!(
        matches!(outsider, Err(RoomError::NotMember)),
        "a non-member: {outsider:?}"
    );
    let missing =
        change_attrs_with(store, "nope", "alice", change(&[("x", "1")], &[]), limits()).await;
    assert!(
        matches!(missing, Err(RoomError::NotFound)),
        "a missing room: {missing:?}"
    );
    let zero = store
        .change_room_attributes(0, "r", "alice", change(&[("x", "1")], &[]), limits())
        .await;
    assert!(is_invalid(&zero), "AppID 0: {zero:?}");
    assert_eq!(attributes(store, APP, "r").await, pairs(&[("b", "t")]));
    assert!(attributes(store, APP, "nope").await.is_empty());
}

/// Keys set with `is_delete_after_owner_left` go when their owner leaves (and are
/// reported); others stay; setting a key again without the flag clears it; a forced
/// set that keeps the owner keeps the owner's flag.
pub async fn room_attributes_deleted_after_owner_left<S: Store>(store: &S) {
    create(
        store,
        NewRoom {
            attributes: pairs(&[("init", "0")]),
            ..new_room(APP, "r", "alice", 1_000)
        },
    )
    .await;
    for user in ["bob", "carol", "dave"] {
        join(store, APP, "r", user, 1_000).await;
    }
    let flagged = |set: &[(&str, &str)]| AttributeChange {
        is_delete_after_owner_left: true,
        ..change(set, &[])
    };
    change_attrs(store, "r", "bob", change(&[("keep", "1")], &[])).await;
    change_attrs(
        store,
        "r",
        "bob",
        flagged(&[("gone2", "2"), ("gone1", "3")]),
    )
    .await;
    change_attrs(store, "r", "alice", flagged(&[("mine", "4")])).await;
    change_attrs(store, "r", "alice", change(&[("mine", "5")], &[])).await;
    change_attrs(store, "r", "carol", flagged(&[("c", "6")])).await;
    // dave forces c without taking it: carol still owns it, flag and all.
    let forced = AttributeChange {
        is_force: true,
        ..change(&[("c", "7")], &[])
    };
    change_attrs(store, "r", "dave", forced).await;
    // dave takes gone1 over: it is dave's now, without the flag.
    let take = AttributeChange {
        is_force: true,
        is_update_owner: true,
        ..change(&[("gone1", "8")], &[])
    };
    change_attrs(store, "r", "dave", take).await;

    assert_eq!(
        leave(store, APP, "r", "bob", 2_000).await,
        Left {
            removed_attributes: strings(&["gone2"]),
            room_empty: false
        }
    );
    assert_eq!(
        leave(store, APP, "r", "carol", 2_000)
            .await
            .removed_attributes,
        strings(&["c"]),
        "a forced set kept carol's ownership and flag"
    );
    assert_eq!(
        leave(store, APP, "r", "alice", 2_000)
            .await
            .removed_attributes,
        Vec::<String>::new(),
        "alice's second set cleared the flag"
    );
    assert_eq!(
        leave(store, APP, "r", "dave", 2_000).await,
        Left {
            removed_attributes: vec![],
            room_empty: true
        }
    );
    assert_eq!(
        attributes(store, APP, "r").await,
        pairs(&[("gone1", "8"), ("init", "0"), ("keep", "1"), ("mine", "5")]),
        "the room keeps its other attributes until destroyed"
    );
}

/// Every attribute limit (empty key, key bytes, value bytes, key count, total bytes;
/// bytes, not characters) refuses the whole request with `AttributeLimit` naming the
/// numbers, and changes nothing; a request that only deletes is never refused for
/// size; create_room's initial attributes obey the same limits.
pub async fn room_attribute_limits<S: Store>(store: &S) {
    let small = RoomLimits {
        max_attr_keys: 3,
        max_attr_key_bytes: 4,
        max_attr_value_bytes: 8,
        max_attr_total_bytes: 22,
        ..limits()
    };
    create(store, new_room(APP, "r", "alice", 1_000)).await;
    let refused = |result: Result<AttributesChanged, RoomError>, numbers: &[&str], what: &str| {
        let Err(RoomError::AttributeLimit(message)) = &result else {
            panic!("{what}: expected AttributeLimit, got {result:?}");
        };
        for n in numbers {
            assert!(
                message.contains(n),
                "{what}: the message names {n}: {message}"
            );
        }
    };

    refused(
        change_attrs_with(store, "r", "alice", change(&[("", "v")], &[]), small).await,
        &[],
        "an empty key",
    );
    refused(
        change_attrs_with(store, "r", "alice", change(&[("abcde", "v")], &[]), small).await,
        &["5", "4"],
        "a 5-byte key",
    );
    refused(
        change_attrs_with(store, "r", "alice", change(&[("ééé", "v")], &[]), small).await,
        &["6", "4"],
        "a 3-character, 6-byte key",
    );
    refused(
        change_attrs_with(
            store,
            "r",
            "alice",
            change(&[("k", "123456789")], &[]),
            small,
        )
        .await,
        &["9", "8"],
        "a 9-byte value",
    );
    assert!(
        attributes(store, APP, "r").await.is_empty(),
        "nothing was set"
    );

    let ok = change_attrs_with(
        store,
        "r",
        "alice",
        change(&[("abcd", "12345678"), ("éé", "v")], &[]),
        small,
    )
    .await
    .expect("at the key and value limits");
    assert_eq!(ok.set.len(), 2);
    // 3 keys: 4+8 + 4+1 + 1+1 = 19 bytes.
    change_attrs_with(store, "r", "alice", change(&[("x", "1")], &[]), small)
        .await
        .expect("a 3rd key");
    refused(
        change_attrs_with(store, "r", "alice", change(&[("y", "2")], &[]), small).await,
        &["4", "3"],
        "a 4th key",
    );
    // Replacing a value keeps the count; the total grows to 23.
    refused(
        change_attrs_with(store, "r", "alice", change(&[("x", "12345")], &[]), small).await,
        &["23", "22"],
        "a total of 23 bytes",
    );
    change_attrs_with(store, "r", "alice", change(&[("x", "1234")], &[]), small)
        .await
        .expect("a total of exactly 22 bytes");

    // Atomic: a valid set, a delete and one bad key: nothing happens.
    let before = attributes(store, APP, "r").await;
    refused(
        change_attrs_with(
            store,
            "r",
            "alice",
            change(&[("x", "9"), ("toolong", "v")], &["abcd"]),
            small,
        )
        .await,
        &["7", "4"],
        "one bad key in a request",
    );
    assert_eq!(
        attributes(store, APP, "r").await,
        before,
        "the whole request rolled back"
    );
    // A swap within the limits: delete one key, add another.
    change_attrs_with(store, "r", "alice", change(&[("y", "2")], &["x"]), small)
        .await
        .expect("the resulting set is what counts");

    // Deleting is never refused, even under tighter limits than the set was made with.
    let tighter = RoomLimits {
        max_attr_keys: 1,
        max_attr_total_bytes: 1,
        ..small
    };
    let deleted = change_attrs_with(store, "r", "alice", change(&[], &["y"]), tighter)
        .await
        .expect("a delete");
    assert_eq!(deleted.deleted, strings(&["y"]));
    assert_eq!(
        attributes(store, APP, "r").await,
        pairs(&[("abcd", "12345678"), ("éé", "v")])
    );

    // Initial attributes of create_room.
    for (bad, what) in [
        (pairs(&[("abcde", "v")]), "a long key"),
        (pairs(&[("k", "123456789")]), "a long value"),
        (
            pairs(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]),
            "4 keys",
        ),
        (pairs(&[("", "v")]), "an empty key"),
    ] {
        let room = NewRoom {
            attributes: bad,
            ..new_room(APP, "new", "bob", 2_000)
        };
        let result = store.create_room(room, small).await;
        assert!(
            matches!(result, Err(RoomError::AttributeLimit(_))),
            "create with {what}: {result:?}"
        );
        assert_eq!(
            room_of(store, APP, "new").await,
            None,
            "no room after {what}"
        );
        assert!(room_ids(store, APP, "bob").await.is_empty());
    }
    let room = NewRoom {
        attributes: pairs(&[("a", "1"), ("b", "2"), ("c", "3")]),
        ..new_room(APP, "new", "bob", 2_000)
    };
    create_with(store, room, small).await;
    assert_eq!(attributes(store, APP, "new").await.len(), 3);
}

/// A store that claims [`Store::single_node`] numbers a room's messages without
/// gaps: retries and refused appends take no seq.
///
/// # Panics
/// When a seq is skipped.
pub async fn single_node_room_seqs_have_no_gaps<S: Store>(store: &S) {
    if !store.single_node() {
        return;
    }
    create(store, new_room(APP, "gapless", "alice", 1_000)).await;
    let mut seqs = Vec::new();
    for i in 0..20u64 {
        let m = append_room(store, room_text(APP, "gapless", "alice", 100 + i, 2_000)).await;
        seqs.push(m.seq);
        let retry = store
            .append_room(room_text(APP, "gapless", "alice", 100 + i, 2_000))
            .await
            .expect("retry");
        assert!(retry.duplicate, "a retry is a duplicate");
        let refused = store
            .append_room(room_text(APP, "gapless", "mallory", 500 + i, 2_000))
            .await;
        assert!(
            matches!(refused, Err(RoomError::NotMember)),
            "an outsider: {refused:?}"
        );
    }
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>(), "no gaps");
}

/// A store that claims [`Store::appends_in_call_order`] keeps call order across
/// room and peer appends started together: room seqs and inbox seqs both follow
/// the order of the first polls.
///
/// # Panics
/// When the order differs.
pub async fn pipelined_room_appends_keep_call_order<S: Store>(store: &S) {
    if !store.appends_in_call_order() {
        return;
    }
    create(store, new_room(APP, "piped", "alice", 1_000)).await;
    enum Seq {
        Inbox(u64),
        Room(u64),
    }
    let mut pending = Vec::new();
    // As in `pipelined_appends_keep_call_order`: more first polls than tokio's
    // cooperative budget, then a yield.
    for i in 0..300u64 {
        if i == 250 {
            tokio::task::yield_now().await;
        }
        let local = 5_000 + i;
        let append: Started<'_, (u64, Seq)> = if i % 3 == 0 {
            let append = store.append_peer(text("alice", "bob", local, 7_000));
            Box::pin(async move {
                let m = append.await.expect("peer append").message;
                (m.local_message_id, Seq::Inbox(m.inbox_seq))
            })
        } else {
            let append = store.append_room(room_text(APP, "piped", "alice", local, 7_000));
            Box::pin(async move {
                let m = append.await.expect("room append").message;
                (m.local_message_id, Seq::Room(m.seq))
            })
        };
        pending.push((local, poll_once(append).await));
    }
    let (mut room_seqs, mut inbox_seqs) = (Vec::new(), Vec::new());
    for (local, append) in pending {
        let (got, seq) = append.await;
        assert_eq!(got, local);
        match seq {
            Seq::Inbox(seq) => inbox_seqs.push(seq),
            Seq::Room(seq) => room_seqs.push(seq),
        }
    }
    assert_call_order("room", &room_seqs);
    assert_call_order("inbox", &inbox_seqs);
}

/// Room messages: `NotFound`, `NotMember`, AppID 0 refused; seqs per room from 1;
/// fields round-trip; a retry (even to another room, even after the sender left)
/// returns the first message and writes nothing; local ids of peer and room messages
/// are separate; message ids are unique across peer and room messages.
pub async fn room_messages_seq_dedup_and_membership<S: Store>(store: &S) {
    let missing = store.append_room(room_text(APP, "r", "alice", 1, 1)).await;
    assert!(
        matches!(missing, Err(RoomError::NotFound)),
        "a missing room: {missing:?}"
    );
    create(store, new_room(APP, "r", "alice", 1_000)).await;
    create(store, new_room(APP, "s", "alice", 1_000)).await;
    join(store, APP, "r", "bob", 1_000).await;
    let outsider = store.append_room(room_text(APP, "r", "carol", 1, 1)).await;
    assert!(
        matches!(outsider, Err(RoomError::NotMember)),
        "a non-member: {outsider:?}"
    );
    let zero = store.append_room(room_text(0, "r", "alice", 1, 1)).await;
    assert!(is_invalid(&zero), "AppID 0: {zero:?}");

    let first = NewRoomMessage {
        body: "😀 ünïcödé \u{0}".into(),
        kind: 1,
        priority: 3,
        ..room_text(APP, "r", "alice", u64::MAX, i64::MAX)
    };
    let m1 = append_room(store, first.clone()).await;
    assert_eq!(
        (
            m1.seq,
            m1.room_id.as_str(),
            m1.sender.as_str(),
            m1.body.as_str()
        ),
        (1, "r", "alice", first.body.as_str())
    );
    assert_eq!(
        (m1.kind, m1.local_message_id, m1.timestamp_ms, m1.priority),
        (1, u64::MAX, i64::MAX, 3)
    );
    assert!(m1.message_id > 0 && m1.message_id < (1 << 53));
    let peer = append(store, text("alice", "bob", u64::MAX, 5), "room messages").await;
    let m2 = append_room(store, room_text(APP, "r", "bob", 1, 2_000)).await;
    let m3 = append_room(store, room_text(APP, "r", "alice", 2, 3_000)).await;
    let s1 = append_room(store, room_text(APP, "s", "alice", 3, 3_000)).await;
    assert_eq!((m2.seq, m3.seq), (2, 3), "seqs count up per room");
    assert_eq!(s1.seq, 1, "another room counts on its own");
    let ids: HashSet<u64> = [
        m1.message_id,
        m2.message_id,
        m3.message_id,
        s1.message_id,
        peer.message_id,
    ]
    .into();
    assert_eq!(ids.len(), 5, "message ids are unique across peer and room");
    assert!(
        m2.message_id > peer.message_id,
        "message ids grow with time"
    );

    for retry in [
        NewRoomMessage {
            body: "another body".into(),
            timestamp_ms: 9,
            ..room_text(APP, "r", "alice", u64::MAX, 9)
        },
        room_text(APP, "s", "alice", u64::MAX, 9),
    ] {
        let again = store.append_room(retry).await.expect("retry");
        assert!(again.duplicate, "a retry is a duplicate");
        assert_eq!(again.message, m1, "a retry returns the first message");
    }
    leave(store, APP, "r", "bob", 4_000).await;
    let after_leave = store
        .append_room(room_text(APP, "r", "bob", 1, 9))
        .await
        .expect("a retry after leaving");
    assert!(after_leave.duplicate);
    assert_eq!(after_leave.message, m2);
    let gone = store.append_room(room_text(APP, "r", "bob", 2, 9)).await;
    assert!(
        matches!(gone, Err(RoomError::NotMember)),
        "a new send after leaving: {gone:?}"
    );

    assert_eq!(
        room_of(store, APP, "r").await.expect("room").seq_head,
        3,
        "retries and refusals consumed no seq"
    );
    let all = store
        .room_messages_after(APP, "r", 0, 10)
        .await
        .expect("room_messages_after");
    assert_eq!(all, vec![m1, m2.clone(), m3.clone()]);
    assert_eq!(
        store
            .room_messages_after(APP, "r", 1, 1)
            .await
            .expect("page"),
        vec![m2]
    );
    assert!(
        store
            .room_messages_after(APP, "r", 0, 0)
            .await
            .expect("page")
            .is_empty()
    );
    assert!(
        store
            .room_messages_after(APP, "r", u64::MAX, 10)
            .await
            .expect("page")
            .is_empty()
    );
    let m4 = append_room(store, room_text(APP, "r", "alice", 4, 5_000)).await;
    assert_eq!(m4.seq, 4);
    assert_eq!(
        store
            .room_messages_after(APP, "r", 2, 10)
            .await
            .expect("page"),
        vec![m3, m4]
    );
    let peer_inbox = store.inbox_after(APP, "bob", 0, 10).await.expect("inbox");
    assert_eq!(
        peer_inbox.messages,
        vec![peer],
        "room sends are not peer messages"
    );
}

/// Rooms empty for their destroy delay are destroyed with their attributes; the
/// roomID can be created again, and its seqs continue; the messages stay readable;
/// purging removes old room messages and seqs still continue.
pub async fn room_seqs_continue_after_destroy<S: Store>(store: &S) {
    create(
        store,
        NewRoom {
            attributes: pairs(&[("k", "v")]),
            ..new_room(APP, "r", "alice", 1_000)
        },
    )
    .await;
    let m1 = append_room(store, room_text(APP, "r", "alice", 1, 1_000)).await;
    let m2 = append_room(store, room_text(APP, "r", "alice", 2, 2_000)).await;
    assert!(leave(store, APP, "r", "alice", 5_000).await.room_empty);
    assert_eq!(
        store.destroy_empty_rooms(4_999).await.expect("destroy"),
        vec![],
        "not before it is empty"
    );
    assert_eq!(
        store.destroy_empty_rooms(5_000).await.expect("destroy"),
        vec![(APP, "r".to_owned())]
    );
    assert_eq!(room_of(store, APP, "r").await, None, "destroyed");
    assert!(attributes(store, APP, "r").await.is_empty());
    assert_eq!(
        store.destroy_empty_rooms(9_000).await.expect("destroy"),
        vec![],
        "once"
    );
    let join = store
        .join_room(APP, "r", "bob", "Bob", 6_000, limits())
        .await;
    assert!(
        matches!(join, Err(RoomError::NotFound)),
        "a destroyed room: {join:?}"
    );
    assert_eq!(
        store
            .room_messages_after(APP, "r", 0, 10)
            .await
            .expect("read"),
        vec![m1, m2],
        "messages outlive the room"
    );

    let again = create(store, new_room(APP, "r", "bob", 7_000)).await;
    assert_eq!(again.seq_head, 2, "the seq head survives");
    assert_eq!(again.created_ms, 7_000);
    assert!(
        attributes(store, APP, "r").await.is_empty(),
        "old attributes are gone"
    );
    let m3 = append_room(store, room_text(APP, "r", "bob", 1, 8_000)).await;
    assert_eq!(m3.seq, 3, "seqs continue");

    // Retention: purge takes room messages too, and seqs still continue.
    let purged = store.purge_before(2_001).await.expect("purge");
    assert_eq!(purged, 2, "the two oldest room messages");
    assert_eq!(
        store
            .room_messages_after(APP, "r", 0, 10)
            .await
            .expect("read"),
        vec![m3]
    );
    let m4 = append_room(store, room_text(APP, "r", "bob", 2, 9_000)).await;
    assert_eq!(m4.seq, 4);
    let purged_retry = store
        .append_room(room_text(APP, "r", "alice", 2, 9_500))
        .await;
    assert!(
        matches!(purged_retry, Err(RoomError::NotMember)),
        "a retry of a purged send is a new send (alice is no member now): {purged_retry:?}"
    );
    assert_eq!(room_of(store, APP, "r").await.expect("room").seq_head, 4);
}

/// Offline members keep their rooms until expired; a rejoin or `None` brings them
/// back; expiry removes them as a leave would (attributes, emptiness); destroy waits
/// for each room's delay and spares rooms with members.
pub async fn room_members_expire_and_rooms_destroy<S: Store>(store: &S) {
    create(
        store,
        NewRoom {
            destroy_delay_secs: 60,
            ..new_room(APP, "r1", "alice", 1_000)
        },
    )
    .await;
    create(store, new_room(APP, "r2", "erin", 1_000)).await;
    create(store, new_room(2, "r1", "bob", 1_000)).await;
    for user in ["bob", "carol", "dave", "erin"] {
        join(store, APP, "r1", user, 1_000).await;
    }
    let flagged = AttributeChange {
        is_delete_after_owner_left: true,
        ..change(&[("bob", "here")], &[])
    };
    change_attrs(store, "r1", "bob", flagged).await;

    store
        .set_member_offline(APP, "bob", Some(10_000))
        .await
        .expect("offline");
    store
        .set_member_offline(APP, "carol", Some(15_000))
        .await
        .expect("offline");
    store
        .set_member_offline(APP, "dave", Some(12_000))
        .await
        .expect("offline");
    store
        .set_member_offline(APP, "erin", Some(16_000))
        .await
        .expect("offline");
    assert!(
        member(store, APP, "r1", "bob").await,
        "offline members stay members"
    );
    assert_eq!(count(store, APP, "r1").await, 5);
    assert_eq!(
        store.expire_members(10_000).await.expect("expire"),
        vec![],
        "offline since before the cutoff, strictly"
    );
    let expired = store.expire_members(10_001).await.expect("expire");
    assert_eq!(expired.len(), 1, "{expired:?}");
    let bob = &expired[0];
    assert_eq!(
        (bob.app_id, bob.room_id.as_str(), bob.user_id.as_str()),
        (APP, "r1", "bob")
    );
    assert_eq!(bob.removed_attributes, strings(&["bob"]));
    assert!(!bob.room_empty);
    assert!(!member(store, APP, "r1", "bob").await);
    assert!(attributes(store, APP, "r1").await.is_empty());
    assert!(
        member(store, 2, "r1", "bob").await,
        "the same user in another app is untouched"
    );

    // A rejoin brings carol back online; `None` brings dave back.
    assert!(join(store, APP, "r1", "carol", 16_000).await.already_member);
    store
        .set_member_offline(APP, "dave", None)
        .await
        .expect("online");
    let expired = store.expire_members(20_000).await.expect("expire");
    let who: Vec<(&str, &str)> = expired
        .iter()
        .map(|e| (e.room_id.as_str(), e.user_id.as_str()))
        .collect();
    assert_eq!(
        who,
        [("r1", "erin"), ("r2", "erin")],
        "erin, from both rooms"
    );
    assert!(!expired[0].room_empty);
    assert!(expired[1].room_empty, "erin was r2's only member");
    let r2_empty = room_of(store, APP, "r2")
        .await
        .expect("r2")
        .empty_since_ms
        .expect("r2 is empty");
    assert!(
        (16_000..=20_000).contains(&r2_empty),
        "r2 is empty since erin's removal: {r2_empty}"
    );
    assert_eq!(
        store.expire_members(i64::MAX).await.expect("expire"),
        vec![],
        "everyone left is online"
    );
    assert_eq!(
        member_ids(store, APP, "r1").await,
        strings(&["alice", "carol", "dave"])
    );

    for user in ["alice", "carol", "dave"] {
        leave(store, APP, "r1", user, 30_000).await;
    }
    let r1 = room_of(store, APP, "r1").await.expect("r1");
    assert_eq!(r1.empty_since_ms, Some(30_000));
    // r2 (no delay) is due at its empty time; r1 waits 60 s.
    assert_eq!(
        store.destroy_empty_rooms(89_999).await.expect("destroy"),
        vec![(APP, "r2".to_owned())]
    );
    assert!(room_of(store, APP, "r1").await.is_some(), "r1 waits 60 s");
    // A join during the delay saves the room.
    join(store, APP, "r1", "frank", 50_000).await;
    assert_eq!(
        store.destroy_empty_rooms(200_000).await.expect("destroy"),
        vec![],
        "a room with members is never destroyed"
    );
    leave(store, APP, "r1", "frank", 300_000).await;
    assert_eq!(
        store.destroy_empty_rooms(359_999).await.expect("destroy"),
        vec![],
        "the delay restarts at the last leave"
    );
    assert_eq!(
        store.destroy_empty_rooms(360_000).await.expect("destroy"),
        vec![(APP, "r1".to_owned())]
    );
    assert!(
        room_of(store, 2, "r1").await.is_some(),
        "another app's room of the same name lives on"
    );
    let zero = store.set_member_offline(0, "bob", Some(1)).await;
    assert!(
        matches!(zero, Err(StoreError::Invalid(_))),
        "AppID 0: {zero:?}"
    );
}

/// Peer history: the conversation of two users (either order), by conversation seq,
/// forward from the start or after an anchor, reverse from the newest or before an
/// anchor, `count` clamped to 1..=100; messages as stored, target = receiver.
pub async fn history_pages_peer_conversations<S: Store>(store: &S) {
    let mut sent = Vec::new();
    for i in 1..=7_u64 {
        let (from, to) = if i % 2 == 0 {
            ("bob", "alice")
        } else {
            ("alice", "bob")
        };
        sent.push(
            append(
                store,
                text(from, to, i, i64::try_from(i).expect("small")),
                "history",
            )
            .await,
        );
        append(store, text("alice", "carol", 100 + i, 1), "history").await;
    }
    let peer = |anchor, count, reverse| {
        history_query(
            APP,
            Conversation::Peer("bob".into(), "alice".into()),
            anchor,
            count,
            reverse,
        )
    };
    for (anchor, count, expected) in [
        (None, 3, vec![1, 2, 3]),
        (Some(0), 3, vec![1, 2, 3]),
        (Some(3), 3, vec![4, 5, 6]),
        (Some(6), 3, vec![7]),
        (Some(7), 3, vec![]),
        (Some(u64::MAX), 3, vec![]),
        (None, 0, vec![1]),
        (None, 1_000, (1..=7).collect()),
    ] {
        assert_eq!(
            history_seqs(store, peer(anchor, count, false)).await,
            expected,
            "forward from {anchor:?}, {count}"
        );
    }
    for (anchor, count, expected) in [
        (None, 3, vec![7, 6, 5]),
        (Some(5), 3, vec![4, 3, 2]),
        (Some(2), 3, vec![1]),
        (Some(1), 3, vec![]),
        (Some(0), 3, vec![]),
        (Some(u64::MAX), 2, vec![7, 6]),
        (None, 0, vec![7]),
    ] {
        assert_eq!(
            history_seqs(store, peer(anchor, count, true)).await,
            expected,
            "reverse from {anchor:?}, {count}"
        );
    }
    let page = store
        .history(history_query(
            APP,
            Conversation::Peer("alice".into(), "bob".into()),
            None,
            100,
            false,
        ))
        .await
        .expect("history");
    let expected: Vec<HistoryMessage> = sent
        .iter()
        .map(|m| HistoryMessage {
            message_id: m.message_id,
            seq: m.conversation_seq,
            sender: m.sender.clone(),
            target: m.receiver.clone(),
            kind: m.kind,
            body: m.body.clone(),
            local_message_id: m.local_message_id,
            timestamp_ms: m.timestamp_ms,
            priority: m.priority,
        })
        .collect();
    assert_eq!(page, expected, "history returns the messages as stored");
    assert_eq!(
        history_seqs(
            store,
            history_query(
                APP,
                Conversation::Peer("carol".into(), "alice".into()),
                None,
                100,
                true
            )
        )
        .await,
        (1..=7).rev().collect::<Vec<_>>(),
        "another conversation"
    );
    for conversation in [
        Conversation::Peer("bob".into(), "carol".into()),
        Conversation::Room("alice".into()),
    ] {
        assert!(
            history_seqs(store, history_query(APP, conversation, None, 10, false))
                .await
                .is_empty()
        );
    }
    assert!(
        history_seqs(
            store,
            history_query(
                2,
                Conversation::Peer("alice".into(), "bob".into()),
                None,
                10,
                false
            )
        )
        .await
        .is_empty(),
        "another app"
    );
    // Purged messages are gone from history.
    store.purge_before(4).await.expect("purge");
    assert_eq!(
        history_seqs(store, peer(None, 3, false)).await,
        vec![4, 5, 6]
    );
}

/// Room history: by room seq, in both directions, at most 100, target = roomID,
/// readable after the room is destroyed.
pub async fn history_pages_rooms<S: Store>(store: &S) {
    create(store, new_room(APP, "r", "alice", 1_000)).await;
    create(store, new_room(APP, "other", "alice", 1_000)).await;
    join(store, APP, "r", "bob", 1_000).await;
    let mut sent = Vec::new();
    for i in 1..=105_u64 {
        let sender = if i % 3 == 0 { "bob" } else { "alice" };
        sent.push(append_room(store, room_text(APP, "r", sender, i, 1_000)).await);
    }
    append_room(store, room_text(APP, "other", "alice", 1_000, 1_000)).await;
    let room = |anchor, count, reverse| {
        history_query(APP, Conversation::Room("r".into()), anchor, count, reverse)
    };
    assert_eq!(
        history_seqs(store, room(None, 1_000, false)).await,
        (1..=100).collect::<Vec<_>>(),
        "at most 100"
    );
    assert_eq!(
        history_seqs(store, room(None, 1_000, true)).await,
        (6..=105).rev().collect::<Vec<_>>(),
        "at most 100, newest first"
    );
    assert_eq!(
        history_seqs(store, room(Some(100), 10, false)).await,
        (101..=105).collect::<Vec<_>>()
    );
    assert_eq!(
        history_seqs(store, room(Some(50), 3, true)).await,
        vec![49, 48, 47]
    );
    assert_eq!(history_seqs(store, room(Some(105), 3, false)).await, vec![]);
    assert_eq!(history_seqs(store, room(Some(1), 3, true)).await, vec![]);
    assert_eq!(history_seqs(store, room(None, 0, true)).await, vec![105]);
    let page = store
        .history(room(Some(2), 1, false))
        .await
        .expect("history");
    let m = &sent[2];
    assert_eq!(
        page,
        vec![HistoryMessage {
            message_id: m.message_id,
            seq: 3,
            sender: "bob".into(),
            target: "r".into(),
            kind: m.kind,
            body: m.body.clone(),
            local_message_id: 3,
            timestamp_ms: 1_000,
            priority: m.priority,
        }]
    );
    assert!(
        history_seqs(
            store,
            history_query(2, Conversation::Room("r".into()), None, 10, false)
        )
        .await
        .is_empty(),
        "another app"
    );
    leave(store, APP, "r", "alice", 2_000).await;
    leave(store, APP, "r", "bob", 2_000).await;
    store.destroy_empty_rooms(2_000).await.expect("destroy");
    assert_eq!(room_of(store, APP, "r").await, None);
    assert_eq!(
        history_seqs(store, room(Some(102), 10, false)).await,
        vec![103, 104, 105],
        "history outlives the room"
    );
}

/// The same roomID in two apps is two rooms: members, counts, limits, attributes,
/// messages, seqs, retries, leave and destroy are each app's own.
pub async fn rooms_are_isolated_between_apps<S: Store>(store: &S) {
    let (one, two) = (11, 22);
    let one_room = RoomLimits {
        max_rooms_per_app: 1,
        max_rooms_per_user: 1,
        ..limits()
    };
    create_with(
        store,
        NewRoom {
            attributes: pairs(&[("k", "one")]),
            ..new_room(one, "lobby", "alice", 1_000)
        },
        one_room,
    )
    .await;
    // App one is at its room limit and alice at her room limit there: app two is not.
    let created = create_with(
        store,
        NewRoom {
            attributes: pairs(&[("k", "two")]),
            ..new_room(two, "lobby", "alice", 2_000)
        },
        one_room,
    )
    .await;
    assert_eq!((created.app_id, created.created_ms), (two, 2_000));
    join(store, one, "lobby", "bob", 1_000).await;
    assert!(member(store, one, "lobby", "bob").await);
    assert!(!member(store, two, "lobby", "bob").await);
    assert_eq!(
        (
            count(store, one, "lobby").await,
            count(store, two, "lobby").await
        ),
        (2, 1)
    );
    assert_eq!(member_ids(store, two, "lobby").await, strings(&["alice"]));
    assert!(room_ids(store, two, "bob").await.is_empty());
    assert_eq!(
        attributes(store, one, "lobby").await,
        pairs(&[("k", "one")])
    );
    assert_eq!(
        attributes(store, two, "lobby").await,
        pairs(&[("k", "two")])
    );
    store
        .change_room_attributes(two, "lobby", "alice", change(&[("k", "2")], &[]), limits())
        .await
        .expect("change");
    assert_eq!(
        attributes(store, one, "lobby").await,
        pairs(&[("k", "one")])
    );
    let not = store
        .change_room_attributes(two, "lobby", "bob", change(&[("x", "1")], &[]), limits())
        .await;
    assert!(
        matches!(not, Err(RoomError::NotMember)),
        "bob is a member in app one only: {not:?}"
    );

    let a1 = append_room(store, room_text(one, "lobby", "alice", 1, 1)).await;
    let a2 = append_room(store, room_text(one, "lobby", "alice", 2, 1)).await;
    let b1 = store
        .append_room(room_text(two, "lobby", "alice", 1, 1))
        .await
        .expect("append");
    assert!(!b1.duplicate, "the same (sender, local id) in another app");
    assert_eq!(
        (a2.seq, b1.message.seq),
        (2, 1),
        "each app counts on its own"
    );
    assert_ne!(a1.message_id, b1.message.message_id);
    assert_eq!(
        store
            .room_messages_after(two, "lobby", 0, 10)
            .await
            .expect("read"),
        vec![b1.message]
    );

    leave(store, one, "lobby", "bob", 3_000).await;
    assert!(leave(store, one, "lobby", "alice", 3_000).await.room_empty);
    assert_eq!(
        room_of(store, two, "lobby")
            .await
            .expect("room")
            .empty_since_ms,
        None
    );
    assert_eq!(
        store.destroy_empty_rooms(3_000).await.expect("destroy"),
        vec![(one, "lobby".to_owned())]
    );
    assert!(room_of(store, two, "lobby").await.is_some());
    assert_eq!(attributes(store, two, "lobby").await, pairs(&[("k", "2")]));
    let missing = store
        .join_room(33, "lobby", "bob", "Bob", 1, limits())
        .await;
    assert!(
        matches!(missing, Err(RoomError::NotFound)),
        "an unknown app has no rooms: {missing:?}"
    );
}

/// 50 distinct users join a room of at most 31 members (creator included) at once:
/// exactly 30 get in, the others get `RoomFull`, and the room has 31 members.
///
/// # Panics
/// On failure, or outside a tokio runtime.
pub async fn concurrent_joins_fill_a_room_exactly<S: Store>(store: S) {
    let store = Arc::new(store);
    let cap = RoomLimits {
        max_room_members: 31,
        ..limits()
    };
    create_with(&*store, new_room(APP, "r", "owner", 1), cap).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let user = format!("user-{i:02}");
            let result = store.join_room(APP, "r", &user, "U", 2, cap).await;
            (user, result)
        });
    }
    let mut joined = Vec::new();
    let mut full = 0;
    while let Some(done) = tasks.join_next().await {
        match done.expect("a joining task panicked") {
            (user, Ok(j)) => {
                assert!(!j.already_member);
                joined.push(user);
            }
            (_, Err(RoomError::RoomFull(31))) => full += 1,
            (user, Err(e)) => panic!("join of {user}: unexpected {e:?}"),
        }
    }
    assert_eq!((joined.len(), full), (30, 20), "exactly 30 fit");
    assert_eq!(count(&*store, APP, "r").await, 31);
    joined.push("owner".into());
    joined.sort();
    assert_eq!(member_ids(&*store, APP, "r").await, joined);
}

/// 20 users create the same room at once: exactly one succeeds and is its only
/// member; the others get `Exists`.
///
/// # Panics
/// On failure, or outside a tokio runtime.
pub async fn concurrent_creates_of_one_room_make_one<S: Store>(store: S) {
    let store = Arc::new(store);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let creator = format!("creator-{i:02}");
            let result = store
                .create_room(new_room(APP, "same", &creator, 1), limits())
                .await;
            (creator, result)
        });
    }
    let mut winners = Vec::new();
    let mut exists = 0;
    while let Some(done) = tasks.join_next().await {
        match done.expect("a creating task panicked") {
            (creator, Ok(_)) => winners.push(creator),
            (_, Err(RoomError::Exists)) => exists += 1,
            (creator, Err(e)) => panic!("create by {creator}: unexpected {e:?}"),
        }
    }
    assert_eq!((winners.len(), exists), (1, 19), "exactly one create wins");
    assert_eq!(member_ids(&*store, APP, "same").await, winners);
}

/// Limits hold under concurrency: 20 creates of distinct rooms in an app limited to
/// 7 rooms make exactly 7; one user joining 12 rooms at once with a limit of 5 gets
/// into exactly 5.
///
/// # Panics
/// On failure, or outside a tokio runtime.
pub async fn concurrent_room_limits_hold<S: Store>(store: S) {
    let store = Arc::new(store);
    let seven = RoomLimits {
        max_rooms_per_app: 7,
        ..limits()
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            store
                .create_room(
                    new_room(2, &format!("room-{i:02}"), &format!("c{i}"), 1),
                    seven,
                )
                .await
        });
    }
    let mut created = 0;
    let mut refused = 0;
    while let Some(done) = tasks.join_next().await {
        match done.expect("a creating task panicked") {
            Ok(_) => created += 1,
            Err(RoomError::AppRoomLimit(7)) => refused += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((created, refused), (7, 13), "exactly 7 rooms");

    for i in 0..12 {
        create(
            &*store,
            new_room(APP, &format!("r{i:02}"), &format!("host-{i}"), 1),
        )
        .await;
    }
    let five = RoomLimits {
        max_rooms_per_user: 5,
        ..limits()
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..12 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            store
                .join_room(APP, &format!("r{i:02}"), "roamer", "Roamer", 2, five)
                .await
        });
    }
    let mut joined = 0;
    let mut refused = 0;
    while let Some(done) = tasks.join_next().await {
        match done.expect("a joining task panicked") {
            Ok(_) => joined += 1,
            Err(RoomError::UserRoomLimit(5)) => refused += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((joined, refused), (5, 7), "exactly 5 rooms for one user");
    assert_eq!(room_ids(&*store, APP, "roamer").await.len(), 5);
}

/// 5 members each send 20 room messages, one after another, all at once: the room's
/// seqs are exactly `1..=100`, each sender's in its send order, ids unique; a reader
/// sees the same.
///
/// # Panics
/// On failure, or outside a tokio runtime.
pub async fn concurrent_room_appends_get_distinct_seqs<S: Store>(store: S) {
    const SENDERS: u64 = 5;
    const EACH: u64 = 20;
    let store = Arc::new(store);
    create(&*store, new_room(APP, "r", "s0", 1)).await;
    for s in 1..SENDERS {
        join(&*store, APP, "r", &format!("s{s}"), 1).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let mut seqs = Vec::new();
            for i in 1..=EACH {
                let m = append_room(&*store, room_text(APP, "r", &format!("s{s}"), i, 1)).await;
                seqs.push((m.seq, m.message_id));
            }
            (format!("s{s}"), seqs)
        });
    }
    let mut by_sender = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (sender, seqs) = done.expect("an appending task panicked");
        assert!(
            seqs.windows(2).all(|w| w[0].0 < w[1].0),
            "{sender}'s sends keep their order: {seqs:?}"
        );
        by_sender.insert(sender, seqs);
    }
    let mut all: Vec<u64> = by_sender.values().flatten().map(|(seq, _)| *seq).collect();
    all.sort_unstable();
    assert_eq!(all, (1..=SENDERS * EACH).collect::<Vec<_>>());
    let ids: HashSet<u64> = by_sender.values().flatten().map(|(_, id)| *id).collect();
    assert_eq!(ids.len() as u64, SENDERS * EACH, "message ids are unique");
    let read = store
        .room_messages_after(APP, "r", 0, 1_000)
        .await
        .expect("read");
    assert_eq!(
        read.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=SENDERS * EACH).collect::<Vec<_>>()
    );
    assert_eq!(
        room_of(&*store, APP, "r").await.expect("room").seq_head,
        SENDERS * EACH
    );
}
