//! Rooms, members and attributes, room messages, and the history of peer and room
//! conversations. Writes run inside the transaction that
//! [`PgStore::write`](crate::PgStore) opens, so an `Err` from any of them undoes
//! everything it did: checks and changes are one atomic step.
//!
//! The semantics are the SQLite store's (`confab_store`'s `sqlite::rooms` docs): a
//! room row lives from create until `destroy_empty_rooms`, empty or not; limits are
//! checked in the order Exists / NotFound, app rooms, user rooms, room members,
//! attributes; memberships count against the per-user limit online or offline; the
//! attribute limits apply to the set a request would leave, and only when it sets a
//! key; `expire_members` removes a member as a leave at `cutoff_ms` would; a destroy
//! keeps the room's messages and its seq counter.
//!
//! Locks (see the crate docs): app → user → room, each taken at most once per
//! transaction in that order, so concurrent nodes cannot deadlock on them.

use std::collections::BTreeMap;

use confab_store::backend::{
    HistoryRow, Member, RoomMessageRow, RoomRow, app_from_sql, appended_room, clamp_to_sql,
    conversation_pair, history_bounds, limit_to_sql, local_to_sql, room_vanished, seq_from_sql,
};
use confab_store::{
    AppendedRoom, AttributeChange, AttributesChanged, Conversation, ExpiredMember, HistoryMessage,
    HistoryQuery, Joined, Left, MemberRecord, NewRoom, NewRoomMessage, RoomError, RoomLimits,
    RoomRecord, StoredAttribute, StoredRoomMessage, initial_attributes,
};
use tokio_postgres::Row;

use crate::pool::Conn;
use crate::{Fail, col, text_col};

/// The arguments of a join.
#[derive(Debug)]
pub(crate) struct JoinArgs {
    pub(crate) member: Member,
    pub(crate) user_name: String,
    pub(crate) now_ms: i64,
    pub(crate) limits: RoomLimits,
}

// ---------------------------------------------------------------------------------
// Writes (inside the call's transaction)

pub(crate) async fn create_room(
    c: &mut Conn,
    room: &NewRoom,
    limits: &RoomLimits,
) -> Result<RoomRecord, Fail> {
    let app = i64::from(room.app_id);
    // The app's creates take turns: its room count below is exact until commit.
    lock_app(c, app).await?;
    if room_exists(c, app, &room.room_id).await? {
        return Err(RoomError::Exists.into());
    }
    let rooms: i64 = col(
        &c.query_one(
            "create room: count the app's rooms",
            "SELECT count(*) FROM rooms WHERE app_id = $1",
            &[&app],
        )
        .await?,
        0,
        "create room: count the app's rooms",
    )?;
    limits.check_app_rooms(rooms)?;
    lock_user(c, app, &room.creator).await?;
    limits.check_user_rooms(user_room_count(c, app, &room.creator).await?)?;
    let attrs = initial_attributes(&room.creator, room.attributes.iter().cloned(), limits)?;

    let inserted = c
        .query_opt(
            "create room: insert the room",
            "INSERT INTO rooms (app_id, room_id, room_name, created_ms, destroy_delay_secs,
                empty_since_ms, member_count)
             VALUES ($1, $2, $3, $4, $5, NULL, 1)
             ON CONFLICT (app_id, room_id) DO NOTHING
             RETURNING 1",
            &[
                &app,
                &room.room_id,
                &room.room_name.as_bytes(),
                &room.now_ms,
                &i64::from(room.destroy_delay_secs),
            ],
        )
        .await?;
    if inserted.is_none() {
        return Err(RoomError::Exists.into());
    }
    insert_member(
        c,
        app,
        &room.room_id,
        &room.creator,
        &room.creator_name,
        room.now_ms,
    )
    .await?;
    for (key, attr) in &attrs {
        write_attribute(c, app, &room.room_id, key, attr).await?;
    }
    read_room(c, room.app_id, &room.room_id)
        .await?
        .ok_or_else(|| room_vanished(&room.room_id).into())
}

pub(crate) async fn join_room(c: &mut Conn, a: &JoinArgs) -> Result<Joined, Fail> {
    let m = &a.member;
    let app = i64::from(m.app_id);
    lock_user(c, app, &m.user_id).await?;
    let Some(members) = lock_room(c, app, &m.room_id).await? else {
        return Err(RoomError::NotFound.into());
    };
    let rejoined = c
        .execute(
            "join room: mark the member online",
            "UPDATE room_members SET offline_since_ms = NULL
             WHERE app_id = $1 AND room_id = $2 AND user_id = $3",
            &[&app, &m.room_id, &m.user_id],
        )
        .await?;
    let already_member = rejoined > 0;
    if !already_member {
        a.limits
            .check_user_rooms(user_room_count(c, app, &m.user_id).await?)?;
        a.limits.check_room_members(members)?;
        insert_member(c, app, &m.room_id, &m.user_id, &a.user_name, a.now_ms).await?;
        c.execute(
            "join room: count the member",
            "UPDATE rooms SET member_count = member_count + 1, empty_since_ms = NULL
             WHERE app_id = $1 AND room_id = $2",
            &[&app, &m.room_id],
        )
        .await?;
    }
    let room = read_room(c, m.app_id, &m.room_id)
        .await?
        .ok_or_else(|| room_vanished(&m.room_id))?;
    Ok(Joined {
        room,
        already_member,
    })
}

pub(crate) async fn leave_room(c: &mut Conn, m: &Member, now_ms: i64) -> Result<Left, Fail> {
    let app = i64::from(m.app_id);
    if lock_room(c, app, &m.room_id).await?.is_none() {
        return Err(RoomError::NotFound.into());
    }
    remove_member(c, app, &m.room_id, &m.user_id, now_ms, None)
        .await?
        .ok_or_else(|| RoomError::NotMember.into())
}

pub(crate) async fn set_member_offline(
    c: &mut Conn,
    app_id: u32,
    user_id: &str,
    since_ms: Option<i64>,
) -> Result<(), Fail> {
    // The user's memberships are locked in roomID order, so two nodes doing this for
    // one user at once cannot deadlock.
    c.execute(
        "set members offline",
        "UPDATE room_members m SET offline_since_ms = $3
         FROM (SELECT room_id FROM room_members WHERE app_id = $1 AND user_id = $2
               ORDER BY room_id FOR NO KEY UPDATE) l
         WHERE m.app_id = $1 AND m.user_id = $2 AND m.room_id = l.room_id",
        &[&i64::from(app_id), &user_id, &since_ms],
    )
    .await?;
    Ok(())
}

/// Removes, in one transaction, every member offline since before `cutoff_ms`, each
/// as a leave at `cutoff_ms` would. Rooms are locked in (app, roomID) order; a member
/// that came back online or was removed by another node meanwhile is skipped, so
/// nodes expiring at once report each removal once.
pub(crate) async fn expire_members(
    c: &mut Conn,
    cutoff_ms: i64,
) -> Result<Vec<ExpiredMember>, Fail> {
    const WHAT: &str = "expire members: find them";
    let due = c
        .query(
            WHAT,
            "SELECT app_id, room_id, user_id FROM room_members WHERE offline_since_ms < $1
             ORDER BY app_id, room_id, user_id",
            &[&cutoff_ms],
        )
        .await?;
    let mut expired = Vec::with_capacity(due.len());
    for row in &due {
        let app: i64 = col(row, 0, WHAT)?;
        let room_id: String = col(row, 1, WHAT)?;
        let user_id: String = col(row, 2, WHAT)?;
        if lock_room(c, app, &room_id).await?.is_none() {
            continue;
        }
        let Some(left) =
            remove_member(c, app, &room_id, &user_id, cutoff_ms, Some(cutoff_ms)).await?
        else {
            continue;
        };
        expired.push(left.expired(app_from_sql(app)?, room_id, user_id));
    }
    Ok(expired)
}

/// Destroys the rooms empty for their delay: one statement that locks them in
/// (app, roomID) order, re-checks each after its lock (a join meanwhile saves it),
/// and deletes them with their attributes (`ON DELETE CASCADE`).
pub(crate) async fn destroy_empty_rooms(
    c: &mut Conn,
    now_ms: i64,
) -> Result<Vec<(u32, String)>, Fail> {
    const WHAT: &str = "destroy empty rooms";
    let rows = c
        .query(
            WHAT,
            "WITH due AS (
                SELECT app_id, room_id FROM rooms
                WHERE empty_since_ms IS NOT NULL AND member_count = 0
                  AND empty_since_ms::numeric + destroy_delay_secs::numeric * 1000 <= $1::bigint
                ORDER BY app_id, room_id
                FOR UPDATE)
             DELETE FROM rooms r USING due
             WHERE r.app_id = due.app_id AND r.room_id = due.room_id
             RETURNING r.app_id, r.room_id",
            &[&now_ms],
        )
        .await?;
    let mut destroyed = rows
        .iter()
        .map(|row| Ok((app_from_sql(col(row, 0, WHAT)?)?, col(row, 1, WHAT)?)))
        .collect::<Result<Vec<(u32, String)>, Fail>>()?;
    destroyed.sort_unstable();
    Ok(destroyed)
}

pub(crate) async fn change_attributes(
    c: &mut Conn,
    m: &Member,
    change: &AttributeChange,
    limits: &RoomLimits,
) -> Result<AttributesChanged, Fail> {
    let app = i64::from(m.app_id);
    // The room's lock serializes its attribute changes: the limits are checked on
    // the set as it is.
    if lock_room(c, app, &m.room_id).await?.is_none() {
        return Err(RoomError::NotFound.into());
    }
    if !is_member(c, m).await? {
        return Err(RoomError::NotMember.into());
    }
    let attrs = load_attributes(c, app, &m.room_id).await?;
    let plan = change.clone().plan(&m.user_id, attrs, limits)?;

    for (key, attr) in &plan.write {
        write_attribute(c, app, &m.room_id, key, attr).await?;
    }
    for key in &plan.delete {
        c.execute(
            "change attributes: delete",
            "DELETE FROM room_attributes WHERE app_id = $1 AND room_id = $2 AND key = $3",
            &[&app, &m.room_id, &key.as_bytes()],
        )
        .await?;
    }
    Ok(plan.outcome)
}

/// Appends a room message, or answers the first one stored under its
/// (app, sender, local id) among room messages.
pub(crate) async fn append_room(c: &mut Conn, msg: &NewRoomMessage) -> Result<AppendedRoom, Fail> {
    let app = i64::from(msg.app_id);
    let local = local_to_sql(msg.local_message_id);
    // A retry is answered before anything else: the first send was accepted, even
    // if the sender has left (or the room is gone) since.
    if let Some(row) = c
        .query_opt(
            "append room message: look for a previous send",
            concat!(
                "SELECT ",
                room_message_columns!(),
                " FROM room_messages WHERE app_id = $1 AND sender = $2 AND local_message_id = $3"
            ),
            &[&app, &msg.sender, &local],
        )
        .await?
    {
        return Ok(AppendedRoom {
            message: stored_room(&row)?,
            duplicate: true,
        });
    }
    // The membership is share-locked until commit: a concurrent leave waits, so no
    // message is stored from a sender that has already left.
    let member = c
        .query_opt(
            "append room message: check the membership",
            "SELECT 1 FROM room_members WHERE app_id = $1 AND room_id = $2 AND user_id = $3
             FOR KEY SHARE",
            &[&app, &msg.room_id, &msg.sender],
        )
        .await?;
    if member.is_none() {
        return Err(if room_exists(c, app, &msg.room_id).await? {
            RoomError::NotMember.into()
        } else {
            RoomError::NotFound.into()
        });
    }
    let seq: i64 = col(
        &c.query_one(
            "append room message: advance the room seq",
            "INSERT INTO room_seqs (app_id, room_id, last_seq) VALUES ($1, $2, 1)
             ON CONFLICT (app_id, room_id) DO UPDATE SET last_seq = room_seqs.last_seq + 1
             RETURNING last_seq",
            &[&app, &msg.room_id],
        )
        .await?,
        0,
        "append room message: advance the room seq",
    )?;
    let inserted = c
        .query_opt(
            "append room message: insert the message",
            "INSERT INTO room_messages (message_id, app_id, room_id, seq, sender, kind, body,
                local_message_id, timestamp_ms, priority)
             VALUES (nextval('message_ids'), $1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (app_id, sender, local_message_id) DO NOTHING
             RETURNING message_id",
            &[
                &app,
                &msg.room_id,
                &seq,
                &msg.sender,
                &i16::from(msg.kind),
                &msg.body.as_bytes(),
                &local,
                &msg.timestamp_ms,
                &i16::from(msg.priority),
            ],
        )
        .await?;
    let Some(row) = inserted else {
        // Another node stored this send since the look-up: roll back and run again.
        return Err(Fail::Raced {
            what: "append room message",
        });
    };
    let message_id: i64 = col(&row, 0, "append room message: insert the message")?;
    Ok(AppendedRoom {
        message: appended_room(msg.clone(), message_id, seq)?,
        duplicate: false,
    })
}

// ---------------------------------------------------------------------------------
// Write helpers

/// Locks the app's row of `room_app_locks` until commit (creating it if needed).
async fn lock_app(c: &mut Conn, app: i64) -> Result<(), Fail> {
    c.execute(
        "lock the app's rooms",
        "INSERT INTO room_app_locks (app_id) VALUES ($1)
         ON CONFLICT (app_id) DO UPDATE SET app_id = excluded.app_id",
        &[&app],
    )
    .await?;
    Ok(())
}

/// Locks the user's row of `room_user_locks` until commit (creating it if needed).
async fn lock_user(c: &mut Conn, app: i64, user_id: &str) -> Result<(), Fail> {
    c.execute(
        "lock the user's rooms",
        "INSERT INTO room_user_locks (app_id, user_id) VALUES ($1, $2)
         ON CONFLICT (app_id, user_id) DO UPDATE SET user_id = excluded.user_id",
        &[&app, &user_id],
    )
    .await?;
    Ok(())
}

/// Locks the room's row until commit; its member count, or `None` if there is no room.
async fn lock_room(c: &mut Conn, app: i64, room_id: &str) -> Result<Option<i64>, Fail> {
    const WHAT: &str = "lock the room";
    c.query_opt(
        WHAT,
        "SELECT member_count FROM rooms WHERE app_id = $1 AND room_id = $2 FOR UPDATE",
        &[&app, &room_id],
    )
    .await?
    .map(|row| col(&row, 0, WHAT))
    .transpose()
}

async fn room_exists(c: &mut Conn, app: i64, room_id: &str) -> Result<bool, Fail> {
    Ok(c.query_opt(
        "look for the room",
        "SELECT 1 FROM rooms WHERE app_id = $1 AND room_id = $2",
        &[&app, &room_id],
    )
    .await?
    .is_some())
}

/// How many rooms the user is a member of, in this app.
async fn user_room_count(c: &mut Conn, app: i64, user_id: &str) -> Result<i64, Fail> {
    const WHAT: &str = "count the user's rooms";
    col(
        &c.query_one(
            WHAT,
            "SELECT count(*) FROM room_members WHERE app_id = $1 AND user_id = $2",
            &[&app, &user_id],
        )
        .await?,
        0,
        WHAT,
    )
}

async fn insert_member(
    c: &mut Conn,
    app: i64,
    room_id: &str,
    user_id: &str,
    user_name: &str,
    now_ms: i64,
) -> Result<(), Fail> {
    c.execute(
        "insert a room member",
        "INSERT INTO room_members (app_id, room_id, user_id, user_name, joined_ms,
            offline_since_ms)
         VALUES ($1, $2, $3, $4, $5, NULL)",
        &[&app, &room_id, &user_id, &user_name.as_bytes(), &now_ms],
    )
    .await?;
    Ok(())
}

/// Removes a membership as a leave at `now_ms` does (the caller holds the room's
/// lock); `None` if there was none — or, with `offline_before`, none offline since
/// before it.
async fn remove_member(
    c: &mut Conn,
    app: i64,
    room_id: &str,
    user_id: &str,
    now_ms: i64,
    offline_before: Option<i64>,
) -> Result<Option<Left>, Fail> {
    const WHAT: &str = "leave room: delete the member's attributes";
    let gone = c
        .execute(
            "leave room: delete the member",
            "DELETE FROM room_members
             WHERE app_id = $1 AND room_id = $2 AND user_id = $3
               AND ($4::bigint IS NULL OR offline_since_ms < $4::bigint)",
            &[&app, &room_id, &user_id, &offline_before],
        )
        .await?;
    if gone == 0 {
        return Ok(None);
    }
    let rows = c
        .query(
            WHAT,
            "DELETE FROM room_attributes
             WHERE app_id = $1 AND room_id = $2 AND owner = $3 AND delete_after_owner_left
             RETURNING key",
            &[&app, &room_id, &user_id],
        )
        .await?;
    let removed_attributes = rows
        .iter()
        .map(|row| text_col(row, 0, WHAT))
        .collect::<Result<Vec<String>, Fail>>()?;
    // The right-hand sides see the row before the update.
    let remaining: i64 = col(
        &c.query_one(
            "leave room: count the member out",
            "UPDATE rooms SET member_count = member_count - 1,
                empty_since_ms = CASE WHEN member_count = 1 THEN $3 ELSE empty_since_ms END
             WHERE app_id = $1 AND room_id = $2
             RETURNING member_count",
            &[&app, &room_id, &now_ms],
        )
        .await?,
        0,
        "leave room: count the member out",
    )?;
    Ok(Some(Left::new(removed_attributes, remaining)))
}

async fn load_attributes(
    c: &mut Conn,
    app: i64,
    room_id: &str,
) -> Result<BTreeMap<String, StoredAttribute>, Fail> {
    const WHAT: &str = "read the room's attributes";
    let rows = c
        .query(
            WHAT,
            "SELECT key, value, owner, delete_after_owner_left FROM room_attributes
             WHERE app_id = $1 AND room_id = $2",
            &[&app, &room_id],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                text_col(row, 0, WHAT)?,
                StoredAttribute {
                    value: text_col(row, 1, WHAT)?,
                    owner: col(row, 2, WHAT)?,
                    delete_after_owner_left: col(row, 3, WHAT)?,
                },
            ))
        })
        .collect()
}

async fn write_attribute(
    c: &mut Conn,
    app: i64,
    room_id: &str,
    key: &str,
    attr: &StoredAttribute,
) -> Result<(), Fail> {
    c.execute(
        "write an attribute",
        "INSERT INTO room_attributes (app_id, room_id, key, value, owner, delete_after_owner_left)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (app_id, room_id, key) DO UPDATE SET
            value = excluded.value, owner = excluded.owner,
            delete_after_owner_left = excluded.delete_after_owner_left",
        &[
            &app,
            &room_id,
            &key.as_bytes(),
            &attr.value.as_bytes(),
            &attr.owner,
            &attr.delete_after_owner_left,
        ],
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Reads (single statements; also used inside writes)

fn room_record(row: &Row) -> Result<RoomRecord, Fail> {
    const WHAT: &str = "read a room";
    let raw = RoomRow {
        app_id: col(row, 0, WHAT)?,
        room_id: col(row, 1, WHAT)?,
        room_name: text_col(row, 2, WHAT)?,
        created_ms: col(row, 3, WHAT)?,
        destroy_delay_secs: col(row, 4, WHAT)?,
        empty_since_ms: col(row, 5, WHAT)?,
        seq_head: col(row, 6, WHAT)?,
    };
    Ok(raw.into_record()?)
}

pub(crate) async fn read_room(
    c: &mut Conn,
    app_id: u32,
    room_id: &str,
) -> Result<Option<RoomRecord>, Fail> {
    c.query_opt(
        "read a room",
        concat!(room_select!(), " WHERE r.app_id = $1 AND r.room_id = $2"),
        &[&i64::from(app_id), &room_id],
    )
    .await?
    .map(|row| room_record(&row))
    .transpose()
}

pub(crate) async fn is_member(c: &mut Conn, m: &Member) -> Result<bool, Fail> {
    Ok(c.query_opt(
        "read a membership",
        "SELECT 1 FROM room_members WHERE app_id = $1 AND room_id = $2 AND user_id = $3",
        &[&i64::from(m.app_id), &m.room_id, &m.user_id],
    )
    .await?
    .is_some())
}

pub(crate) async fn room_members(
    c: &mut Conn,
    app_id: u32,
    room_id: &str,
    after_user: Option<&str>,
    limit: usize,
) -> Result<Vec<MemberRecord>, Fail> {
    const WHAT: &str = "read room members";
    if limit == 0 {
        return Ok(Vec::new());
    }
    let rows = c
        .query(
            WHAT,
            "SELECT user_id, user_name, joined_ms FROM room_members
             WHERE app_id = $1 AND room_id = $2 AND ($3::text IS NULL OR user_id > $3::text)
             ORDER BY user_id LIMIT $4",
            &[
                &i64::from(app_id),
                &room_id,
                &after_user,
                &limit_to_sql(limit),
            ],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(MemberRecord {
                user_id: col(row, 0, WHAT)?,
                user_name: text_col(row, 1, WHAT)?,
                joined_ms: col(row, 2, WHAT)?,
            })
        })
        .collect()
}

pub(crate) async fn member_count(c: &mut Conn, app_id: u32, room_id: &str) -> Result<u64, Fail> {
    const WHAT: &str = "count room members";
    match c
        .query_opt(
            WHAT,
            "SELECT member_count FROM rooms WHERE app_id = $1 AND room_id = $2",
            &[&i64::from(app_id), &room_id],
        )
        .await?
    {
        Some(row) => Ok(seq_from_sql(col(&row, 0, WHAT)?, "member_count")?),
        None => Ok(0),
    }
}

pub(crate) async fn user_rooms(
    c: &mut Conn,
    app_id: u32,
    user_id: &str,
) -> Result<Vec<RoomRecord>, Fail> {
    let rows = c
        .query(
            "read the user's rooms",
            concat!(
                room_select!(),
                " JOIN room_members m ON m.app_id = r.app_id AND m.room_id = r.room_id
                 WHERE m.app_id = $1 AND m.user_id = $2
                 ORDER BY r.room_id"
            ),
            &[&i64::from(app_id), &user_id],
        )
        .await?;
    rows.iter().map(room_record).collect()
}

pub(crate) async fn room_attributes(
    c: &mut Conn,
    app_id: u32,
    room_id: &str,
) -> Result<Vec<(String, String)>, Fail> {
    const WHAT: &str = "read room attributes";
    // Keys are BYTEA holding UTF-8: byte order is the order of Rust's `str`.
    let rows = c
        .query(
            WHAT,
            "SELECT key, value FROM room_attributes WHERE app_id = $1 AND room_id = $2
             ORDER BY key",
            &[&i64::from(app_id), &room_id],
        )
        .await?;
    rows.iter()
        .map(|row| Ok((text_col(row, 0, WHAT)?, text_col(row, 1, WHAT)?)))
        .collect()
}

pub(crate) async fn room_messages_after(
    c: &mut Conn,
    app_id: u32,
    room_id: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredRoomMessage>, Fail> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let rows = c
        .query(
            "read room messages",
            concat!(
                "SELECT ",
                room_message_columns!(),
                " FROM room_messages WHERE app_id = $1 AND room_id = $2 AND seq > $3
                 ORDER BY seq LIMIT $4"
            ),
            &[
                &i64::from(app_id),
                &room_id,
                &clamp_to_sql(after),
                &limit_to_sql(limit),
            ],
        )
        .await?;
    rows.iter().map(stored_room).collect()
}

/// A page of a peer conversation; the caller adds the seq bound, order and limit.
macro_rules! peer_history {
    () => {
        "SELECT message_id, conversation_seq, sender, receiver, kind, body, local_message_id, \
         timestamp_ms, priority FROM peer_messages \
         WHERE app_id = $1 AND conv_a = $2 AND conv_b = $3"
    };
}

/// A page of a room; the caller adds the seq bound, order and limit.
macro_rules! room_history {
    () => {
        "SELECT message_id, seq, sender, room_id, kind, body, local_message_id, \
         timestamp_ms, priority FROM room_messages WHERE app_id = $1 AND room_id = $2"
    };
}

pub(crate) async fn history(c: &mut Conn, q: &HistoryQuery) -> Result<Vec<HistoryMessage>, Fail> {
    const WHAT: &str = "read history";
    let (anchor, count) = history_bounds(q);
    let app = i64::from(q.app_id);
    let rows = match &q.conversation {
        Conversation::Peer(x, y) => {
            let (a, b) = conversation_pair(x, y);
            let sql = if q.reverse {
                concat!(
                    peer_history!(),
                    " AND conversation_seq < $4 ORDER BY conversation_seq DESC LIMIT $5"
                )
            } else {
                concat!(
                    peer_history!(),
                    " AND conversation_seq > $4 ORDER BY conversation_seq ASC LIMIT $5"
                )
            };
            c.query(WHAT, sql, &[&app, &a, &b, &anchor, &count]).await?
        }
        Conversation::Room(room_id) => {
            let sql = if q.reverse {
                concat!(room_history!(), " AND seq < $3 ORDER BY seq DESC LIMIT $4")
            } else {
                concat!(room_history!(), " AND seq > $3 ORDER BY seq ASC LIMIT $4")
            };
            c.query(WHAT, sql, &[&app, room_id, &anchor, &count])
                .await?
        }
    };
    rows.iter()
        .map(|row| {
            let raw = HistoryRow {
                message_id: col(row, 0, WHAT)?,
                seq: col(row, 1, WHAT)?,
                sender: col(row, 2, WHAT)?,
                target: col(row, 3, WHAT)?,
                kind: i64::from(col::<i16>(row, 4, WHAT)?),
                body: text_col(row, 5, WHAT)?,
                local_message_id: col(row, 6, WHAT)?,
                timestamp_ms: col(row, 7, WHAT)?,
                priority: i64::from(col::<i16>(row, 8, WHAT)?),
            };
            Ok(raw.into_message()?)
        })
        .collect()
}

/// A room message from the [`room_message_columns`] of `row`.
fn stored_room(row: &Row) -> Result<StoredRoomMessage, Fail> {
    const WHAT: &str = "read a room message";
    let raw = RoomMessageRow {
        message_id: col(row, 0, WHAT)?,
        seq: col(row, 1, WHAT)?,
        room_id: col(row, 2, WHAT)?,
        sender: col(row, 3, WHAT)?,
        kind: i64::from(col::<i16>(row, 4, WHAT)?),
        body: text_col(row, 5, WHAT)?,
        local_message_id: col(row, 6, WHAT)?,
        timestamp_ms: col(row, 7, WHAT)?,
        priority: i64::from(col::<i16>(row, 8, WHAT)?),
    };
    Ok(raw.into_stored()?)
}
