//! Apps, users, peer messages and inboxes. Writes run inside the transaction that
//! [`PgStore::write`](crate::PgStore) opens (and commits, or rolls back on `Err`);
//! reads are single statements, each one consistent snapshot.

use confab_store::backend::{
    PeerMessageRow, app_from_sql, appended_peer, clamp_to_sql, conversation_pair, first_held,
    limit_to_sql, local_to_sql, seq_from_sql,
};
use confab_store::{AppRecord, Appended, InboxPage, NewPeerMessage, StoredPeerMessage};
use tokio_postgres::Row;

use crate::pool::Conn;
use crate::{Fail, col, text_col};

pub(crate) async fn list_apps(c: &mut Conn) -> Result<Vec<AppRecord>, Fail> {
    const WHAT: &str = "list apps";
    let rows = c
        .query(
            WHAT,
            "SELECT app_id, secret, name, created_ms FROM apps ORDER BY app_id",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(AppRecord {
                app_id: app_from_sql(col(row, 0, WHAT)?)?,
                secret: col(row, 1, WHAT)?,
                name: col(row, 2, WHAT)?,
                created_ms: col(row, 3, WHAT)?,
            })
        })
        .collect()
}

pub(crate) async fn put_app(c: &mut Conn, app: &AppRecord) -> Result<(), Fail> {
    c.execute(
        "put app",
        "INSERT INTO apps (app_id, secret, name, created_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (app_id) DO UPDATE SET
            secret = excluded.secret, name = excluded.name, created_ms = excluded.created_ms",
        &[
            &i64::from(app.app_id),
            &app.secret,
            &app.name,
            &app.created_ms,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn touch_user(
    c: &mut Conn,
    app_id: u32,
    user_id: &str,
    user_name: &str,
    now_ms: i64,
) -> Result<(), Fail> {
    c.execute(
        "touch user",
        "INSERT INTO users (app_id, user_id, user_name, first_seen_ms, last_seen_ms)
         VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT (app_id, user_id) DO UPDATE SET
            user_name = excluded.user_name,
            last_seen_ms = greatest(users.last_seen_ms, excluded.last_seen_ms)",
        &[&i64::from(app_id), &user_id, &user_name.as_bytes(), &now_ms],
    )
    .await?;
    Ok(())
}

/// Appends a peer message, or answers the first one stored under its
/// (app, sender, local id). See the crate docs for how concurrent nodes are handled.
pub(crate) async fn append_peer(c: &mut Conn, m: &NewPeerMessage) -> Result<Appended, Fail> {
    let app = i64::from(m.app_id);
    let local = local_to_sql(m.local_message_id);
    if let Some(row) = c
        .query_opt(
            "append: look for a previous send",
            concat!(
                "SELECT ",
                peer_columns!(),
                " FROM peer_messages WHERE app_id = $1 AND sender = $2 AND local_message_id = $3"
            ),
            &[&app, &m.sender, &local],
        )
        .await?
    {
        return Ok(Appended {
            message: stored_peer(&row)?,
            duplicate: true,
        });
    }

    let (conv_a, conv_b) = conversation_pair(&m.sender, &m.receiver);
    // Conversation first, then inbox: every append locks in this order.
    let conversation_seq: i64 = col(
        &c.query_one(
            "append: advance the conversation seq",
            "INSERT INTO conversations (app_id, conv_a, conv_b, last_seq) VALUES ($1, $2, $3, 1)
             ON CONFLICT (app_id, conv_a, conv_b)
                DO UPDATE SET last_seq = conversations.last_seq + 1
             RETURNING last_seq",
            &[&app, &conv_a, &conv_b],
        )
        .await?,
        0,
        "append: advance the conversation seq",
    )?;
    let inbox_seq: i64 = col(
        &c.query_one(
            "append: advance the inbox seq",
            "INSERT INTO inboxes (app_id, user_id, head_seq, acked_seq) VALUES ($1, $2, 1, 0)
             ON CONFLICT (app_id, user_id) DO UPDATE SET head_seq = inboxes.head_seq + 1
             RETURNING head_seq",
            &[&app, &m.receiver],
        )
        .await?,
        0,
        "append: advance the inbox seq",
    )?;
    let inserted = c
        .query_opt(
            "append: insert the message",
            "INSERT INTO peer_messages (message_id, app_id, sender, receiver, conv_a, conv_b,
                conversation_seq, inbox_seq, kind, body, local_message_id, timestamp_ms, priority)
             VALUES (nextval('message_ids'), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (app_id, sender, local_message_id) DO NOTHING
             RETURNING message_id",
            &[
                &app,
                &m.sender,
                &m.receiver,
                &conv_a,
                &conv_b,
                &conversation_seq,
                &inbox_seq,
                &i16::from(m.kind),
                &m.body.as_bytes(),
                &local,
                &m.timestamp_ms,
                &i16::from(m.priority),
            ],
        )
        .await?;
    let Some(row) = inserted else {
        // Another node stored this send since the look-up: roll back (giving the
        // positions back) and run again, which answers its message as a duplicate.
        return Err(Fail::Raced {
            what: "append peer message",
        });
    };
    let message_id: i64 = col(&row, 0, "append: insert the message")?;
    Ok(Appended {
        message: appended_peer(m.clone(), message_id, conversation_seq, inbox_seq)?,
        duplicate: false,
    })
}

/// The inbox page, its head and its first held position, from ONE statement (one
/// snapshot): the head and the messages always agree.
pub(crate) async fn inbox_after(
    c: &mut Conn,
    app_id: u32,
    user_id: &str,
    after: u64,
    limit: usize,
) -> Result<InboxPage, Fail> {
    const WHAT: &str = "read inbox";
    let rows = c
        .query(
            WHAT,
            concat!(
                "SELECT h.head, h.first_held, m.* FROM
                    (SELECT coalesce((SELECT head_seq FROM inboxes
                                      WHERE app_id = $1 AND user_id = $2), 0) AS head,
                            (SELECT min(inbox_seq) FROM peer_messages
                             WHERE app_id = $1 AND receiver = $2) AS first_held) h
                 LEFT JOIN LATERAL (SELECT ",
                peer_columns!(),
                " FROM peer_messages
                    WHERE app_id = $1 AND receiver = $2 AND inbox_seq > $3
                    ORDER BY inbox_seq LIMIT $4) m ON true
                 ORDER BY m.inbox_seq"
            ),
            &[
                &i64::from(app_id),
                &user_id,
                &clamp_to_sql(after),
                &limit_to_sql(limit),
            ],
        )
        .await?;
    let Some(first) = rows.first() else {
        return Err(Fail::Store(confab_store::StoreError::Corrupt(
            "read inbox: the statement returned no row".into(),
        )));
    };
    let head = seq_from_sql(col(first, 0, WHAT)?, "head_seq")?;
    let first_held = first_held(head, col(first, 1, WHAT)?)?;
    let mut messages = Vec::with_capacity(rows.len());
    for row in &rows {
        // The message columns are NULL on the one row of an empty page.
        let message_id: Option<i64> = col(row, 2, WHAT)?;
        if message_id.is_some() {
            messages.push(stored_peer_at(row, 2)?);
        }
    }
    Ok(InboxPage {
        messages,
        head,
        first_held,
    })
}

pub(crate) async fn ack_inbox(
    c: &mut Conn,
    app_id: u32,
    user_id: &str,
    seq: i64,
) -> Result<(), Fail> {
    c.execute(
        "ack inbox",
        "INSERT INTO inboxes (app_id, user_id, head_seq, acked_seq) VALUES ($1, $2, 0, $3)
         ON CONFLICT (app_id, user_id) DO UPDATE SET
            acked_seq = greatest(inboxes.acked_seq, excluded.acked_seq)",
        &[&i64::from(app_id), &user_id, &seq],
    )
    .await?;
    Ok(())
}

pub(crate) async fn inbox_acked(c: &mut Conn, app_id: u32, user_id: &str) -> Result<u64, Fail> {
    const WHAT: &str = "read inbox ack";
    let row = c
        .query_opt(
            WHAT,
            "SELECT acked_seq FROM inboxes WHERE app_id = $1 AND user_id = $2",
            &[&i64::from(app_id), &user_id],
        )
        .await?;
    match row {
        Some(row) => Ok(seq_from_sql(col(&row, 0, WHAT)?, "acked_seq")?),
        None => Ok(0),
    }
}

pub(crate) async fn purge_before(c: &mut Conn, cutoff_ms: i64) -> Result<u64, Fail> {
    let peer = c
        .execute(
            "purge peer messages",
            "DELETE FROM peer_messages WHERE timestamp_ms < $1",
            &[&cutoff_ms],
        )
        .await?;
    let room = c
        .execute(
            "purge room messages",
            "DELETE FROM room_messages WHERE timestamp_ms < $1",
            &[&cutoff_ms],
        )
        .await?;
    Ok(peer.saturating_add(room))
}

pub(crate) async fn ping(c: &mut Conn) -> Result<(), Fail> {
    c.query_one("ping", "SELECT 1", &[]).await?;
    Ok(())
}

fn stored_peer(row: &Row) -> Result<StoredPeerMessage, Fail> {
    stored_peer_at(row, 0)
}

/// A peer message from the [`peer_columns`] starting at column `at`.
fn stored_peer_at(row: &Row, at: usize) -> Result<StoredPeerMessage, Fail> {
    const WHAT: &str = "read a peer message";
    let raw = PeerMessageRow {
        message_id: col(row, at, WHAT)?,
        conversation_seq: col(row, at + 1, WHAT)?,
        inbox_seq: col(row, at + 2, WHAT)?,
        app_id: col(row, at + 3, WHAT)?,
        sender: col(row, at + 4, WHAT)?,
        receiver: col(row, at + 5, WHAT)?,
        kind: i64::from(col::<i16>(row, at + 6, WHAT)?),
        body: text_col(row, at + 7, WHAT)?,
        local_message_id: col(row, at + 8, WHAT)?,
        timestamp_ms: col(row, at + 9, WHAT)?,
        priority: i64::from(col::<i16>(row, at + 10, WHAT)?),
    };
    Ok(raw.into_stored()?)
}
