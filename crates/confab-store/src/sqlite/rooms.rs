//! The rooms half of [`SqliteStore`](super::SqliteStore): rooms, members and
//! attributes, room messages, and the history of peer and room conversations. Writes
//! run on the writer thread inside their request's savepoint, so an `Err` from any
//! of them undoes everything it did (checks and changes are one atomic step) —
//! but for [`append_room`], which runs without one and refuses (duplicate, no
//! room, not a member) before its first write.
//!
//! How this store reads the trait's contract where the contract leaves room:
//! - A room row exists from create until [`destroy_empty_rooms`] removes it, empty
//!   or not: `create_room` of an empty room still waiting for its destroy delay is
//!   [`RoomError::Exists`] (enterRoom then joins it), and such rooms count against
//!   the app's room limit. Memberships count against the per-user limit whether the
//!   member is online or offline (in its reconnect grace).
//! - Limits are checked in the order Exists / NotFound, app rooms, user rooms, room
//!   members, attributes; the creator of a room always fits in it.
//! - Attribute limits are checked on the attribute set a request would leave, for
//!   the keys the request sets (non-empty, key and value sizes), and, when it sets
//!   any, for the whole set (key count and total bytes). A request that only
//!   deletes is never refused for size. Deleting a key that does not exist is a
//!   no-op: the key is neither `deleted` nor an error key. These rules, and who may
//!   set, overwrite or delete a key, are code that every backend shares
//!   ([`AttributeChange::plan`], [`initial_attributes`], [`RoomLimits`]'s checks):
//!   this module reads the rows they decide on and writes what they decide.
//! - `expire_members` removes each member as `leave_room` at time `cutoff_ms` would:
//!   a room it leaves empty gets `empty_since_ms = cutoff_ms` (the store has no
//!   clock of its own; the destroy delay counts from the cutoff).
//! - Destroying a room removes it, its attributes (and members, of which it has
//!   none); its messages stay for history and retention, its seq counter stays so
//!   that a re-created roomID continues its seqs.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, ToSql, params, params_from_iter};

use super::db;
use super::peer::{bump_counter, next_message_id};
use crate::backend::{
    HistoryRow, Member, RoomMessageRow, RoomRow, app_from_sql, appended_room, clamp_to_sql,
    conversation_pair, history_bounds, limit_to_sql, local_to_sql, room_vanished, seq_from_sql,
};
use crate::{
    AppendedRoom, AttributeChange, AttributesChanged, Conversation, ExpiredMember, HistoryMessage,
    HistoryQuery, Joined, Left, MemberRecord, NewRoom, NewRoomMessage, RoomError, RoomLimits,
    RoomRecord, StoreError, StoredAttribute, StoredRoomMessage, initial_attributes,
};

// ---------------------------------------------------------------------------------
// Writes (run on the writer thread)

pub(super) fn create_room(
    conn: &Connection,
    room: NewRoom,
    limits: &RoomLimits,
) -> Result<RoomRecord, RoomError> {
    let NewRoom {
        app_id,
        room_id,
        room_name,
        creator,
        creator_name,
        attributes,
        destroy_delay_secs,
        now_ms,
    } = room;
    if member_count_of(conn, app_id, &room_id)?.is_some() {
        return Err(RoomError::Exists);
    }
    let rooms: i64 = conn
        .prepare_cached("SELECT count(*) FROM rooms WHERE app_id = ?1")
        .and_then(|mut s| s.query_row([app_id], |r| r.get(0)))
        .map_err(db("create room: count the app's rooms"))?;
    limits.check_app_rooms(rooms)?;
    limits.check_user_rooms(user_room_count(conn, app_id, &creator)?)?;
    let attrs = initial_attributes(&creator, attributes, limits)?;

    conn.prepare_cached(
        "INSERT INTO rooms (app_id, room_id, room_name, created_ms, destroy_delay_secs,
            empty_since_ms, member_count)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL, 1)",
    )
    .and_then(|mut s| {
        s.execute(params![
            app_id,
            room_id,
            room_name,
            now_ms,
            destroy_delay_secs
        ])
    })
    .map_err(db("create room: insert the room"))?;
    insert_member(conn, app_id, &room_id, &creator, &creator_name, now_ms)?;
    for (key, attr) in &attrs {
        write_attribute(conn, app_id, &room_id, key, attr)?;
    }
    Ok(read_room(conn, app_id, &room_id)?.ok_or_else(|| room_vanished(&room_id))?)
}

pub(super) fn join_room(
    conn: &Connection,
    m: &Member,
    user_name: &str,
    now_ms: i64,
    limits: &RoomLimits,
) -> Result<Joined, RoomError> {
    let Some(members) = member_count_of(conn, m.app_id, &m.room_id)? else {
        return Err(RoomError::NotFound);
    };
    let rejoined = conn
        .prepare_cached(
            "UPDATE room_members SET offline_since_ms = NULL
             WHERE app_id = ?1 AND room_id = ?2 AND user_id = ?3",
        )
        .and_then(|mut s| s.execute(params![m.app_id, m.room_id, m.user_id]))
        .map_err(db("join room: mark the member online"))?;
    let already_member = rejoined > 0;
    if !already_member {
        limits.check_user_rooms(user_room_count(conn, m.app_id, &m.user_id)?)?;
        limits.check_room_members(members)?;
        insert_member(conn, m.app_id, &m.room_id, &m.user_id, user_name, now_ms)?;
        conn.prepare_cached(
            "UPDATE rooms SET member_count = member_count + 1, empty_since_ms = NULL
             WHERE app_id = ?1 AND room_id = ?2",
        )
        .and_then(|mut s| s.execute(params![m.app_id, m.room_id]))
        .map_err(db("join room: count the member"))?;
    }
    let room = read_room(conn, m.app_id, &m.room_id)?.ok_or_else(|| room_vanished(&m.room_id))?;
    Ok(Joined {
        room,
        already_member,
    })
}

pub(super) fn leave_room(conn: &Connection, m: &Member, now_ms: i64) -> Result<Left, RoomError> {
    if member_count_of(conn, m.app_id, &m.room_id)?.is_none() {
        return Err(RoomError::NotFound);
    }
    remove_member(conn, m.app_id, &m.room_id, &m.user_id, now_ms)?.ok_or(RoomError::NotMember)
}

pub(super) fn set_member_offline(
    conn: &Connection,
    app_id: u32,
    user_id: &str,
    since_ms: Option<i64>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE room_members SET offline_since_ms = ?3 WHERE app_id = ?1 AND user_id = ?2",
    )
    .and_then(|mut s| s.execute(params![app_id, user_id, since_ms]))
    .map_err(db("set members offline"))?;
    Ok(())
}

pub(super) fn expire_members(
    conn: &Connection,
    cutoff_ms: i64,
) -> Result<Vec<ExpiredMember>, StoreError> {
    let due: Vec<(i64, String, String)> = conn
        .prepare_cached(
            "SELECT app_id, room_id, user_id FROM room_members WHERE offline_since_ms < ?1
             ORDER BY app_id, room_id, user_id",
        )
        .and_then(|mut s| {
            s.query_map([cutoff_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(db("expire members: find them"))?;
    let mut expired = Vec::with_capacity(due.len());
    for (app_id, room_id, user_id) in due {
        let app_id = app_from_sql(app_id)?;
        let left =
            remove_member(conn, app_id, &room_id, &user_id, cutoff_ms)?.ok_or_else(|| {
                StoreError::Corrupt(format!("member {user_id} of {room_id} vanished"))
            })?;
        expired.push(left.expired(app_id, room_id, user_id));
    }
    Ok(expired)
}

pub(super) fn destroy_empty_rooms(
    conn: &Connection,
    now_ms: i64,
) -> Result<Vec<(u32, String)>, StoreError> {
    let due: Vec<(i64, String)> = conn
        .prepare_cached(
            "SELECT app_id, room_id FROM rooms
             WHERE empty_since_ms IS NOT NULL
               AND empty_since_ms + destroy_delay_secs * 1000 <= ?1
               AND member_count = 0
               AND NOT EXISTS (SELECT 1 FROM room_members m
                               WHERE m.app_id = rooms.app_id AND m.room_id = rooms.room_id)
             ORDER BY app_id, room_id",
        )
        .and_then(|mut s| {
            s.query_map([now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .map_err(db("destroy rooms: find them"))?;
    let mut destroyed = Vec::with_capacity(due.len());
    for (app_id, room_id) in due {
        conn.prepare_cached("DELETE FROM room_attributes WHERE app_id = ?1 AND room_id = ?2")
            .and_then(|mut s| s.execute(params![app_id, room_id]))
            .map_err(db("destroy rooms: delete attributes"))?;
        conn.prepare_cached("DELETE FROM rooms WHERE app_id = ?1 AND room_id = ?2")
            .and_then(|mut s| s.execute(params![app_id, room_id]))
            .map_err(db("destroy rooms: delete the room"))?;
        destroyed.push((app_from_sql(app_id)?, room_id));
    }
    Ok(destroyed)
}

pub(super) fn change_attributes(
    conn: &Connection,
    m: &Member,
    change: AttributeChange,
    limits: &RoomLimits,
) -> Result<AttributesChanged, RoomError> {
    require_member(conn, m)?;
    let attrs = load_attributes(conn, m.app_id, &m.room_id)?;
    let plan = change.plan(&m.user_id, attrs, limits)?;

    for (key, attr) in &plan.write {
        write_attribute(conn, m.app_id, &m.room_id, key, attr)?;
    }
    for key in &plan.delete {
        conn.prepare_cached(
            "DELETE FROM room_attributes WHERE app_id = ?1 AND room_id = ?2 AND key = ?3",
        )
        .and_then(|mut s| s.execute(params![m.app_id, m.room_id, key]))
        .map_err(db("change attributes: delete"))?;
    }
    Ok(plan.outcome)
}

pub(super) fn append_room(
    conn: &Connection,
    msg: NewRoomMessage,
) -> Result<AppendedRoom, RoomError> {
    let local = local_to_sql(msg.local_message_id);
    // A retry is answered before anything else: the first send was accepted, even
    // if the sender has left (or the room is gone) since.
    let existing = conn
        .prepare_cached(&format!(
            "SELECT {ROOM_MESSAGE_COLUMNS} FROM room_messages
             WHERE app_id = ?1 AND sender = ?2 AND local_message_id = ?3"
        ))
        .and_then(|mut s| {
            s.query_row(params![msg.app_id, msg.sender, local], read_room_message)
                .optional()
        })
        .map_err(db("append room message: look for a previous send"))?;
    if let Some(raw) = existing {
        return Ok(AppendedRoom {
            message: raw.into_stored()?,
            duplicate: true,
        });
    }
    require_member(conn, &Member::new(msg.app_id, &msg.room_id, &msg.sender))?;
    let seq = bump_counter(
        conn,
        "INSERT INTO room_seqs (app_id, room_id, last_seq) VALUES (?1, ?2, 1)
         ON CONFLICT (app_id, room_id) DO UPDATE SET last_seq = last_seq + 1",
        "SELECT last_seq FROM room_seqs WHERE app_id = ?1 AND room_id = ?2",
        params![msg.app_id, msg.room_id],
    )
    .map_err(db("append room message: advance the room seq"))?;
    let message_id = next_message_id(conn)?;
    conn.prepare_cached(
        "INSERT INTO room_messages (message_id, app_id, room_id, seq, sender, kind, body,
            local_message_id, timestamp_ms, priority)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            message_id,
            msg.app_id,
            msg.room_id,
            seq,
            msg.sender,
            msg.kind,
            msg.body,
            local,
            msg.timestamp_ms,
            msg.priority,
        ])
    })
    .map_err(db("append room message: insert the message"))?;
    Ok(AppendedRoom {
        message: appended_room(msg, message_id, seq)?,
        duplicate: false,
    })
}

// ---------------------------------------------------------------------------------
// Write helpers

/// The room's member count, or `None` if the room does not exist.
fn member_count_of(
    conn: &Connection,
    app_id: u32,
    room_id: &str,
) -> Result<Option<i64>, StoreError> {
    conn.prepare_cached("SELECT member_count FROM rooms WHERE app_id = ?1 AND room_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![app_id, room_id], |r| r.get(0))
                .optional()
        })
        .map_err(db("read the room's member count"))
}

/// How many rooms the user is a member of, in this app.
fn user_room_count(conn: &Connection, app_id: u32, user_id: &str) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT count(*) FROM room_members WHERE app_id = ?1 AND user_id = ?2")
        .and_then(|mut s| s.query_row(params![app_id, user_id], |r| r.get(0)))
        .map_err(db("count the user's rooms"))
}

/// [`RoomError::NotFound`] for a missing room, [`RoomError::NotMember`] for a
/// non-member.
fn require_member(conn: &Connection, m: &Member) -> Result<(), RoomError> {
    if member_count_of(conn, m.app_id, &m.room_id)?.is_none() {
        return Err(RoomError::NotFound);
    }
    if !is_member(conn, m)? {
        return Err(RoomError::NotMember);
    }
    Ok(())
}

fn insert_member(
    conn: &Connection,
    app_id: u32,
    room_id: &str,
    user_id: &str,
    user_name: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO room_members (app_id, room_id, user_id, user_name, joined_ms,
            offline_since_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
    )
    .and_then(|mut s| s.execute(params![app_id, room_id, user_id, user_name, now_ms]))
    .map_err(db("insert a room member"))?;
    Ok(())
}

/// Removes a membership as a leave at `now_ms` does; `None` if there was none.
fn remove_member(
    conn: &Connection,
    app_id: u32,
    room_id: &str,
    user_id: &str,
    now_ms: i64,
) -> Result<Option<Left>, StoreError> {
    let gone = conn
        .prepare_cached(
            "DELETE FROM room_members WHERE app_id = ?1 AND room_id = ?2 AND user_id = ?3",
        )
        .and_then(|mut s| s.execute(params![app_id, room_id, user_id]))
        .map_err(db("leave room: delete the member"))?;
    if gone == 0 {
        return Ok(None);
    }
    let removed_attributes: Vec<String> = conn
        .prepare_cached(
            "DELETE FROM room_attributes
             WHERE app_id = ?1 AND room_id = ?2 AND owner = ?3 AND delete_after_owner_left = 1
             RETURNING key",
        )
        .and_then(|mut s| {
            s.query_map(params![app_id, room_id, user_id], |r| r.get(0))?
                .collect()
        })
        .map_err(db("leave room: delete the member's attributes"))?;
    // The right-hand sides see the row before the update.
    let remaining: i64 = conn
        .prepare_cached(
            "UPDATE rooms SET member_count = member_count - 1,
                empty_since_ms = CASE WHEN member_count = 1 THEN ?3 ELSE empty_since_ms END
             WHERE app_id = ?1 AND room_id = ?2
             RETURNING member_count",
        )
        .and_then(|mut s| s.query_row(params![app_id, room_id, now_ms], |r| r.get(0)))
        .map_err(db("leave room: count the member out"))?;
    Ok(Some(Left::new(removed_attributes, remaining)))
}

fn load_attributes(
    conn: &Connection,
    app_id: u32,
    room_id: &str,
) -> Result<BTreeMap<String, StoredAttribute>, StoreError> {
    conn.prepare_cached(
        "SELECT key, value, owner, delete_after_owner_left FROM room_attributes
         WHERE app_id = ?1 AND room_id = ?2",
    )
    .and_then(|mut s| {
        s.query_map(params![app_id, room_id], |r| {
            Ok((
                r.get(0)?,
                StoredAttribute {
                    value: r.get(1)?,
                    owner: r.get(2)?,
                    delete_after_owner_left: r.get(3)?,
                },
            ))
        })?
        .collect()
    })
    .map_err(db("read the room's attributes"))
}

fn write_attribute(
    conn: &Connection,
    app_id: u32,
    room_id: &str,
    key: &str,
    attr: &StoredAttribute,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO room_attributes (app_id, room_id, key, value, owner, delete_after_owner_left)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (app_id, room_id, key) DO UPDATE SET
            value = excluded.value, owner = excluded.owner,
            delete_after_owner_left = excluded.delete_after_owner_left",
    )
    .and_then(|mut s| {
        s.execute(params![
            app_id,
            room_id,
            key,
            attr.value,
            attr.owner,
            attr.delete_after_owner_left
        ])
    })
    .map_err(db("write an attribute"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Reads (on a read connection, or on the writer inside a write)

const ROOM_SELECT: &str = "SELECT r.app_id, r.room_id, r.room_name, r.created_ms, \
     r.destroy_delay_secs, r.empty_since_ms, coalesce(s.last_seq, 0) \
     FROM rooms r LEFT JOIN room_seqs s ON s.app_id = r.app_id AND s.room_id = r.room_id";

/// Reads a room row selected with [`ROOM_SELECT`].
fn read_room_row(row: &Row<'_>) -> rusqlite::Result<RoomRow> {
    Ok(RoomRow {
        app_id: row.get(0)?,
        room_id: row.get(1)?,
        room_name: row.get(2)?,
        created_ms: row.get(3)?,
        destroy_delay_secs: row.get(4)?,
        empty_since_ms: row.get(5)?,
        seq_head: row.get(6)?,
    })
}

pub(super) fn read_room(
    conn: &Connection,
    app_id: u32,
    room_id: &str,
) -> Result<Option<RoomRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "{ROOM_SELECT} WHERE r.app_id = ?1 AND r.room_id = ?2"
    ))
    .and_then(|mut s| {
        s.query_row(params![app_id, room_id], read_room_row)
            .optional()
    })
    .map_err(db("read a room"))?
    .map(RoomRow::into_record)
    .transpose()
}

pub(super) fn is_member(conn: &Connection, m: &Member) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM room_members
                        WHERE app_id = ?1 AND room_id = ?2 AND user_id = ?3)",
    )
    .and_then(|mut s| s.query_row(params![m.app_id, m.room_id, m.user_id], |r| r.get(0)))
    .map_err(db("read a membership"))
}

pub(super) fn room_members(
    conn: &Connection,
    app_id: u32,
    room_id: &str,
    after_user: Option<&str>,
    limit: usize,
) -> Result<Vec<MemberRecord>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let limit = limit_to_sql(limit);
    // `?3 IS NULL OR user_id > ?3`: one cached statement for the first and later pages.
    conn.prepare_cached(
        "SELECT user_id, user_name, joined_ms FROM room_members
         WHERE app_id = ?1 AND room_id = ?2 AND (?3 IS NULL OR user_id > ?3)
         ORDER BY user_id LIMIT ?4",
    )
    .and_then(|mut s| {
        s.query_map(params![app_id, room_id, after_user, limit], |r| {
            Ok(MemberRecord {
                user_id: r.get(0)?,
                user_name: r.get(1)?,
                joined_ms: r.get(2)?,
            })
        })?
        .collect()
    })
    .map_err(db("read room members"))
}

pub(super) fn member_count(
    conn: &Connection,
    app_id: u32,
    room_id: &str,
) -> Result<u64, StoreError> {
    seq_from_sql(
        member_count_of(conn, app_id, room_id)?.unwrap_or(0),
        "member_count",
    )
}

pub(super) fn user_rooms(
    conn: &Connection,
    app_id: u32,
    user_id: &str,
) -> Result<Vec<RoomRecord>, StoreError> {
    let rows: Vec<RoomRow> = conn
        .prepare_cached(&format!(
            "{ROOM_SELECT} JOIN room_members m ON m.app_id = r.app_id AND m.room_id = r.room_id
             WHERE m.app_id = ?1 AND m.user_id = ?2
             ORDER BY r.room_id"
        ))
        .and_then(|mut s| {
            s.query_map(params![app_id, user_id], read_room_row)?
                .collect()
        })
        .map_err(db("read the user's rooms"))?;
    rows.into_iter().map(RoomRow::into_record).collect()
}

pub(super) fn room_attributes(
    conn: &Connection,
    app_id: u32,
    room_id: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    conn.prepare_cached(
        "SELECT key, value FROM room_attributes WHERE app_id = ?1 AND room_id = ?2 ORDER BY key",
    )
    .and_then(|mut s| {
        s.query_map(params![app_id, room_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
    })
    .map_err(db("read room attributes"))
}

pub(super) fn room_messages_after(
    conn: &Connection,
    app_id: u32,
    room_id: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredRoomMessage>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let after = clamp_to_sql(after);
    let limit = limit_to_sql(limit);
    let rows: Vec<RoomMessageRow> = conn
        .prepare_cached(&format!(
            "SELECT {ROOM_MESSAGE_COLUMNS} FROM room_messages
             WHERE app_id = ?1 AND room_id = ?2 AND seq > ?3
             ORDER BY seq LIMIT ?4"
        ))
        .and_then(|mut s| {
            s.query_map(params![app_id, room_id, after, limit], read_room_message)?
                .collect()
        })
        .map_err(db("read room messages"))?;
    rows.into_iter().map(RoomMessageRow::into_stored).collect()
}

pub(super) fn history(
    conn: &Connection,
    q: &HistoryQuery,
) -> Result<Vec<HistoryMessage>, StoreError> {
    let (anchor, count) = history_bounds(q);
    let (bound, order) = if q.reverse {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    let (a, b);
    let (sql, params): (String, Vec<&dyn ToSql>) = match &q.conversation {
        Conversation::Peer(x, y) => {
            (a, b) = conversation_pair(x, y);
            (
                format!(
                    "SELECT message_id, conversation_seq, sender, receiver, kind, body,
                        local_message_id, timestamp_ms, priority
                     FROM peer_messages
                     WHERE app_id = ?1 AND conv_a = ?2 AND conv_b = ?3
                       AND conversation_seq {bound} ?4
                     ORDER BY conversation_seq {order} LIMIT ?5"
                ),
                vec![&q.app_id, &a, &b, &anchor, &count],
            )
        }
        Conversation::Room(room_id) => (
            format!(
                "SELECT message_id, seq, sender, room_id, kind, body,
                    local_message_id, timestamp_ms, priority
                 FROM room_messages
                 WHERE app_id = ?1 AND room_id = ?2 AND seq {bound} ?3
                 ORDER BY seq {order} LIMIT ?4"
            ),
            vec![&q.app_id, room_id, &anchor, &count],
        ),
    };
    let rows: Vec<HistoryRow> = conn
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(params_from_iter(params), read_history)?
                .collect()
        })
        .map_err(db("read history"))?;
    rows.into_iter().map(HistoryRow::into_message).collect()
}

const ROOM_MESSAGE_COLUMNS: &str =
    "message_id, seq, room_id, sender, kind, body, local_message_id, timestamp_ms, priority";

/// Reads a row selected with [`ROOM_MESSAGE_COLUMNS`].
fn read_room_message(row: &Row<'_>) -> rusqlite::Result<RoomMessageRow> {
    Ok(RoomMessageRow {
        message_id: row.get(0)?,
        seq: row.get(1)?,
        room_id: row.get(2)?,
        sender: row.get(3)?,
        kind: row.get(4)?,
        body: row.get(5)?,
        local_message_id: row.get(6)?,
        timestamp_ms: row.get(7)?,
        priority: row.get(8)?,
    })
}

/// Reads a history row (peer or room).
fn read_history(row: &Row<'_>) -> rusqlite::Result<HistoryRow> {
    Ok(HistoryRow {
        message_id: row.get(0)?,
        seq: row.get(1)?,
        sender: row.get(2)?,
        target: row.get(3)?,
        kind: row.get(4)?,
        body: row.get(5)?,
        local_message_id: row.get(6)?,
        timestamp_ms: row.get(7)?,
        priority: row.get(8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::open;
    use super::*;
    use crate::Store;

    /// `expire_members` removes a member as a leave at `cutoff_ms` would: a room it
    /// leaves empty is empty since the cutoff, and its destroy delay counts from there.
    #[tokio::test]
    async fn expiry_empties_rooms_as_of_the_cutoff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir);
        store
            .create_room(
                NewRoom {
                    app_id: 1,
                    room_id: "r".into(),
                    room_name: "R".into(),
                    creator: "a".into(),
                    creator_name: "A".into(),
                    attributes: vec![],
                    destroy_delay_secs: 10,
                    now_ms: 1_000,
                },
                RoomLimits::default(),
            )
            .await
            .expect("create");
        store
            .set_member_offline(1, "a", Some(2_000))
            .await
            .expect("offline");
        let expired = store.expire_members(50_000).await.expect("expire");
        assert_eq!(expired.len(), 1);
        assert!(expired[0].room_empty);
        let room = store.room(1, "r").await.expect("room").expect("exists");
        assert_eq!(room.empty_since_ms, Some(50_000));
        assert!(
            store
                .destroy_empty_rooms(59_999)
                .await
                .expect("destroy")
                .is_empty()
        );
        assert_eq!(
            store.destroy_empty_rooms(60_000).await.expect("destroy"),
            vec![(1, "r".to_owned())]
        );
    }
}
