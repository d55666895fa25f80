//! Apps, users, peer messages and inboxes: the SQL. Writes run on the writer thread
//! inside their request's transaction; reads on a read connection.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::db;
use crate::backend::{
    PeerMessageRow, app_from_sql, appended_peer, clamp_to_sql, conversation_pair, first_held,
    limit_to_sql, local_to_sql, seq_from_sql,
};
use crate::{AppRecord, Appended, InboxPage, NewPeerMessage, StoreError};

// ---------------------------------------------------------------------------------
// Writes (run on the writer thread)

pub(super) fn put_app(conn: &Connection, app: &AppRecord) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO apps (app_id, secret, name, created_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (app_id) DO UPDATE SET
            secret = excluded.secret, name = excluded.name,
            created_ms = excluded.created_ms",
    )
    .and_then(|mut s| s.execute(params![app.app_id, app.secret, app.name, app.created_ms]))
    .map_err(db("put app"))?;
    Ok(())
}

pub(super) fn touch_user(
    conn: &Connection,
    app_id: u32,
    user_id: &str,
    user_name: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO users (app_id, user_id, user_name, first_seen_ms, last_seen_ms)
         VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (app_id, user_id) DO UPDATE SET
            user_name = excluded.user_name,
            last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
    )
    .and_then(|mut s| s.execute(params![app_id, user_id, user_name, now_ms]))
    .map_err(db("touch user"))?;
    Ok(())
}

pub(super) fn append_peer(conn: &Connection, m: NewPeerMessage) -> Result<Appended, StoreError> {
    let local = local_to_sql(m.local_message_id);
    let existing = conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM peer_messages
             WHERE app_id = ?1 AND sender = ?2 AND local_message_id = ?3"
        ))
        .and_then(|mut s| {
            s.query_row(params![m.app_id, m.sender, local], read_peer_message)
                .optional()
        })
        .map_err(db("append: look for a previous send"))?;
    if let Some(raw) = existing {
        return Ok(Appended {
            message: raw.into_stored()?,
            duplicate: true,
        });
    }

    let (conv_a, conv_b) = conversation_pair(&m.sender, &m.receiver);
    let conversation_seq = bump_counter(
        conn,
        "INSERT INTO conversations (app_id, conv_a, conv_b, last_seq) VALUES (?1, ?2, ?3, 1)
         ON CONFLICT (app_id, conv_a, conv_b) DO UPDATE SET last_seq = last_seq + 1",
        "SELECT last_seq FROM conversations WHERE app_id = ?1 AND conv_a = ?2 AND conv_b = ?3",
        params![m.app_id, conv_a, conv_b],
    )
    .map_err(db("append: advance the conversation seq"))?;
    let inbox_seq = bump_counter(
        conn,
        "INSERT INTO inboxes (app_id, user_id, head_seq, acked_seq) VALUES (?1, ?2, 1, 0)
         ON CONFLICT (app_id, user_id) DO UPDATE SET head_seq = head_seq + 1",
        "SELECT head_seq FROM inboxes WHERE app_id = ?1 AND user_id = ?2",
        params![m.app_id, m.receiver],
    )
    .map_err(db("append: advance the inbox seq"))?;
    let message_id = next_message_id(conn)?;
    conn.prepare_cached(
        "INSERT INTO peer_messages (message_id, app_id, sender, receiver, conv_a, conv_b,
            conversation_seq, inbox_seq, kind, body, local_message_id, timestamp_ms, priority)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .and_then(|mut s| {
        s.execute(params![
            message_id,
            m.app_id,
            m.sender,
            m.receiver,
            conv_a,
            conv_b,
            conversation_seq,
            inbox_seq,
            m.kind,
            m.body,
            local,
            m.timestamp_ms,
            m.priority,
        ])
    })
    .map_err(db("append: insert the message"))?;

    Ok(Appended {
        message: appended_peer(m, message_id, conversation_seq, inbox_seq)?,
        duplicate: false,
    })
}

/// Takes the next message id, for a peer or a room message (see the module docs).
pub(super) fn next_message_id(conn: &Connection) -> Result<i64, StoreError> {
    let bumped = conn
        .prepare_cached("UPDATE message_ids SET last_id = last_id + 1 WHERE id = 0")
        .and_then(|mut s| s.execute([]))
        .map_err(db("take a message id"))?;
    if bumped == 0 {
        return Err(StoreError::Corrupt(
            "the message id counter is missing".into(),
        ));
    }
    conn.prepare_cached("SELECT last_id FROM message_ids WHERE id = 0")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db("take a message id"))
}

/// Advances a counter with `bump` (an upsert) and reads it with `read`, both
/// given `params`. Not one statement with `RETURNING`: SQLite collects a
/// RETURNING statement's rows in an ephemeral table, opened and closed on every
/// run, which cost an append more than the second statement does.
pub(super) fn bump_counter(
    conn: &Connection,
    bump: &str,
    read: &str,
    params: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<i64> {
    conn.prepare_cached(bump)?.execute(params)?;
    conn.prepare_cached(read)?.query_row(params, |r| r.get(0))
}

pub(super) fn ack_inbox(
    conn: &Connection,
    app_id: u32,
    user_id: &str,
    seq: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO inboxes (app_id, user_id, head_seq, acked_seq) VALUES (?1, ?2, 0, ?3)
         ON CONFLICT (app_id, user_id) DO UPDATE SET
            acked_seq = max(acked_seq, excluded.acked_seq)",
    )
    .and_then(|mut s| s.execute(params![app_id, user_id, seq]))
    .map_err(db("ack inbox"))?;
    Ok(())
}

pub(super) fn purge_before(conn: &Connection, cutoff_ms: i64) -> Result<u64, StoreError> {
    let peer = conn
        .prepare_cached("DELETE FROM peer_messages WHERE timestamp_ms < ?1")
        .and_then(|mut s| s.execute([cutoff_ms]))
        .map_err(db("purge peer messages"))?;
    let room = conn
        .prepare_cached("DELETE FROM room_messages WHERE timestamp_ms < ?1")
        .and_then(|mut s| s.execute([cutoff_ms]))
        .map_err(db("purge room messages"))?;
    Ok(u64::try_from(peer + room).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------------
// Reads (run on a read connection)

pub(super) fn list_apps(conn: &Connection) -> Result<Vec<AppRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT app_id, secret, name, created_ms FROM apps ORDER BY app_id")
        .map_err(db("list apps: prepare"))?;
    let rows = stmt
        .query_map([], |row| {
            Ok((row.get::<_, i64>(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .map_err(db("list apps: query"))?;
    let mut apps = Vec::new();
    for row in rows {
        let (app_id, secret, name, created_ms) = row.map_err(db("list apps: read row"))?;
        apps.push(AppRecord {
            app_id: app_from_sql(app_id)?,
            secret,
            name,
            created_ms,
        });
    }
    Ok(apps)
}

pub(super) fn inbox_after(
    conn: &mut Connection,
    app_id: u32,
    user_id: &str,
    after: u64,
    limit: usize,
) -> Result<InboxPage, StoreError> {
    // One read transaction: messages, head and first held are one snapshot.
    let tx = conn.transaction().map_err(db("read inbox: begin"))?;
    let head: Option<i64> = tx
        .prepare_cached("SELECT head_seq FROM inboxes WHERE app_id = ?1 AND user_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![app_id, user_id], |r| r.get(0))
                .optional()
        })
        .map_err(db("read inbox: head"))?;
    let head = seq_from_sql(head.unwrap_or(0), "head_seq")?;
    let min_held: Option<i64> = tx
        .prepare_cached(
            "SELECT min(inbox_seq) FROM peer_messages WHERE app_id = ?1 AND receiver = ?2",
        )
        .and_then(|mut s| s.query_row(params![app_id, user_id], |r| r.get(0)))
        .map_err(db("read inbox: first held"))?;
    let first_held = first_held(head, min_held)?;

    let mut messages = Vec::new();
    if limit > 0 {
        let after = clamp_to_sql(after);
        let limit = limit_to_sql(limit);
        let mut stmt = tx
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM peer_messages
                 WHERE app_id = ?1 AND receiver = ?2 AND inbox_seq > ?3
                 ORDER BY inbox_seq LIMIT ?4"
            ))
            .map_err(db("read inbox: prepare"))?;
        let rows = stmt
            .query_map(params![app_id, user_id, after, limit], read_peer_message)
            .map_err(db("read inbox: query"))?;
        for row in rows {
            messages.push(row.map_err(db("read inbox: read row"))?.into_stored()?);
        }
    }
    drop(tx); // read-only: rolling back is ending it
    Ok(InboxPage {
        messages,
        head,
        first_held,
    })
}

const MESSAGE_COLUMNS: &str = "message_id, conversation_seq, inbox_seq, app_id, sender, receiver, \
     kind, body, local_message_id, timestamp_ms, priority";

/// Reads a `peer_messages` row selected with [`MESSAGE_COLUMNS`].
fn read_peer_message(row: &Row<'_>) -> rusqlite::Result<PeerMessageRow> {
    Ok(PeerMessageRow {
        message_id: row.get(0)?,
        conversation_seq: row.get(1)?,
        inbox_seq: row.get(2)?,
        app_id: row.get(3)?,
        sender: row.get(4)?,
        receiver: row.get(5)?,
        kind: row.get(6)?,
        body: row.get(7)?,
        local_message_id: row.get(8)?,
        timestamp_ms: row.get(9)?,
        priority: row.get(10)?,
    })
}

pub(super) fn inbox_acked(
    conn: &Connection,
    app_id: u32,
    user_id: &str,
) -> Result<u64, StoreError> {
    let acked: Option<i64> = conn
        .prepare_cached("SELECT acked_seq FROM inboxes WHERE app_id = ?1 AND user_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![app_id, user_id], |r| r.get(0))
                .optional()
        })
        .map_err(db("read inbox ack"))?;
    seq_from_sql(acked.unwrap_or(0), "acked_seq")
}

pub(super) fn ping(conn: &Connection) -> Result<(), StoreError> {
    conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
        .map_err(db("ping"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{msg, open};
    use super::*;
    use crate::Store;

    #[tokio::test]
    async fn touch_user_creates_then_updates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir);
        store
            .touch_user(1, "alice", "Alice", 100)
            .await
            .expect("touch");
        store
            .touch_user(1, "alice", "Alice B", 200)
            .await
            .expect("touch");
        store
            .touch_user(1, "alice", "Alice C", 150)
            .await
            .expect("touch (clock went back)");
        store
            .touch_user(2, "alice", "Other app", 300)
            .await
            .expect("touch");
        let path = store.path().to_owned();
        store.close().await;
        let conn = Connection::open(path).expect("raw");
        let row: (String, i64, i64) = conn
            .query_row(
                "SELECT user_name, first_seen_ms, last_seen_ms FROM users
                 WHERE app_id = 1 AND user_id = 'alice'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("row");
        assert_eq!(row, ("Alice C".to_owned(), 100, 200));
        let users: i64 = conn
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
            .expect("n");
        assert_eq!(users, 2);
    }

    #[tokio::test]
    async fn local_ids_are_stored_bit_cast() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir);
        store
            .append_peer(msg("a", "b", u64::MAX))
            .await
            .expect("append");
        let path = store.path().to_owned();
        drop(store);
        let conn = Connection::open(path).expect("raw");
        let stored: i64 = conn
            .query_row("SELECT local_message_id FROM peer_messages", [], |r| {
                r.get(0)
            })
            .expect("row");
        assert_eq!(stored, -1);
    }
}
