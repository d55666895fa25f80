//! The schema of the SQLite file and its migrations, and the writer's connection:
//! opening the file (WAL, `synchronous`, busy timeout, foreign keys) and bringing
//! its schema up to date.

use rusqlite::{Connection, OpenFlags};

use super::{STATEMENT_CACHE, SqliteConfig, db};
use crate::StoreError;

/// The schema version this build creates and understands (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 2;

/// Migrations, in order: `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: apps, users, peer messages, and the sequence counters. The counters live in
    // their own tables so that purging messages never lets a position be reused.
    "
    CREATE TABLE apps (
        app_id      INTEGER PRIMARY KEY CHECK (app_id > 0),
        secret      TEXT NOT NULL,
        name        TEXT NOT NULL,
        created_ms  INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE users (
        app_id         INTEGER NOT NULL CHECK (app_id > 0),
        user_id        TEXT NOT NULL,
        user_name      TEXT NOT NULL,
        first_seen_ms  INTEGER NOT NULL,
        last_seen_ms   INTEGER NOT NULL,
        PRIMARY KEY (app_id, user_id)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE peer_messages (
        message_id        INTEGER PRIMARY KEY AUTOINCREMENT,
        app_id            INTEGER NOT NULL CHECK (app_id > 0),
        sender            TEXT NOT NULL,
        receiver          TEXT NOT NULL,
        conv_a            TEXT NOT NULL,
        conv_b            TEXT NOT NULL,
        conversation_seq  INTEGER NOT NULL CHECK (conversation_seq > 0),
        inbox_seq         INTEGER NOT NULL CHECK (inbox_seq > 0),
        kind              INTEGER NOT NULL,
        body              TEXT NOT NULL,
        local_message_id  INTEGER NOT NULL,  -- the u64, bit-cast to i64
        timestamp_ms      INTEGER NOT NULL,
        priority          INTEGER NOT NULL,
        UNIQUE (app_id, sender, local_message_id)
    ) STRICT;
    CREATE UNIQUE INDEX peer_messages_inbox
        ON peer_messages (app_id, receiver, inbox_seq);
    CREATE UNIQUE INDEX peer_messages_conversation
        ON peer_messages (app_id, conv_a, conv_b, conversation_seq);
    CREATE INDEX peer_messages_time ON peer_messages (timestamp_ms);

    CREATE TABLE conversations (
        app_id    INTEGER NOT NULL,
        conv_a    TEXT NOT NULL,
        conv_b    TEXT NOT NULL,
        last_seq  INTEGER NOT NULL,
        PRIMARY KEY (app_id, conv_a, conv_b)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE inboxes (
        app_id     INTEGER NOT NULL,
        user_id    TEXT NOT NULL,
        head_seq   INTEGER NOT NULL,
        acked_seq  INTEGER NOT NULL,
        PRIMARY KEY (app_id, user_id)
    ) STRICT, WITHOUT ROWID;
    ",
    // 2: rooms. `message_ids` is the one id counter of peer AND room messages (both
    // insert explicit ids taken from it); it starts above every peer message id ever
    // given, so databases of version 1 upgrade without reusing an id. `room_seqs`
    // outlives its room (destroy keeps it, and the room's messages, for history), so a
    // re-created roomID continues its seqs. `rooms.member_count` is kept by every
    // join and leave so that limits and counts never scan a large room.
    "
    CREATE TABLE message_ids (
        id       INTEGER PRIMARY KEY CHECK (id = 0),
        last_id  INTEGER NOT NULL CHECK (last_id >= 0)
    ) STRICT;
    INSERT INTO message_ids (id, last_id) VALUES (0, max(
        coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'peer_messages'), 0),
        coalesce((SELECT max(message_id) FROM peer_messages), 0)
    ));

    CREATE TABLE rooms (
        app_id              INTEGER NOT NULL CHECK (app_id > 0),
        room_id             TEXT NOT NULL,
        room_name           TEXT NOT NULL,
        created_ms          INTEGER NOT NULL,
        destroy_delay_secs  INTEGER NOT NULL CHECK (destroy_delay_secs >= 0),
        empty_since_ms      INTEGER,
        member_count        INTEGER NOT NULL CHECK (member_count >= 0),
        PRIMARY KEY (app_id, room_id)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX rooms_empty ON rooms (empty_since_ms) WHERE empty_since_ms IS NOT NULL;

    CREATE TABLE room_members (
        app_id            INTEGER NOT NULL,
        room_id           TEXT NOT NULL,
        user_id           TEXT NOT NULL,
        user_name         TEXT NOT NULL,
        joined_ms         INTEGER NOT NULL,
        offline_since_ms  INTEGER,
        PRIMARY KEY (app_id, room_id, user_id),
        FOREIGN KEY (app_id, room_id) REFERENCES rooms (app_id, room_id)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX room_members_user ON room_members (app_id, user_id);
    CREATE INDEX room_members_offline ON room_members (offline_since_ms)
        WHERE offline_since_ms IS NOT NULL;

    CREATE TABLE room_attributes (
        app_id                   INTEGER NOT NULL,
        room_id                  TEXT NOT NULL,
        key                      TEXT NOT NULL,
        value                    TEXT NOT NULL,
        owner                    TEXT NOT NULL,
        delete_after_owner_left  INTEGER NOT NULL CHECK (delete_after_owner_left IN (0, 1)),
        PRIMARY KEY (app_id, room_id, key),
        FOREIGN KEY (app_id, room_id) REFERENCES rooms (app_id, room_id)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE room_seqs (
        app_id    INTEGER NOT NULL,
        room_id   TEXT NOT NULL,
        last_seq  INTEGER NOT NULL,
        PRIMARY KEY (app_id, room_id)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE room_messages (
        message_id        INTEGER PRIMARY KEY AUTOINCREMENT,  -- from message_ids
        app_id            INTEGER NOT NULL CHECK (app_id > 0),
        room_id           TEXT NOT NULL,
        seq               INTEGER NOT NULL CHECK (seq > 0),
        sender            TEXT NOT NULL,
        kind              INTEGER NOT NULL,
        body              TEXT NOT NULL,
        local_message_id  INTEGER NOT NULL,  -- the u64, bit-cast to i64
        timestamp_ms      INTEGER NOT NULL,
        priority          INTEGER NOT NULL,
        UNIQUE (app_id, sender, local_message_id),
        UNIQUE (app_id, room_id, seq)
    ) STRICT;
    CREATE INDEX room_messages_time ON room_messages (timestamp_ms);
    ",
];

pub(super) fn open_writer(cfg: &SqliteConfig) -> Result<Connection, StoreError> {
    let what = |step: &str| {
        let path = cfg.path.display().to_string();
        let step = step.to_owned();
        move |e: rusqlite::Error| StoreError::Unavailable(format!("sqlite {path}: {step}: {e}"))
    };
    let conn = Connection::open_with_flags(
        &cfg.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(what("open"))?;
    conn.busy_timeout(cfg.busy_timeout)
        .map_err(what("set busy_timeout"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(what("set journal_mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "sqlite {}: journal_mode is {mode}, WAL is required",
            cfg.path.display()
        )));
    }
    let sync = if cfg.synchronous_full {
        "FULL"
    } else {
        "NORMAL"
    };
    // temp_store stays at its default (files): a large purge's savepoint may hold
    // many pages, and message appends run without a savepoint anyway.
    // The WAL is checkpointed every 1000 pages (SQLite's default): larger
    // checkpoints measured no faster now that appends run without savepoints, and
    // each one stalls the writer (and the room messages behind it) longer.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
    ))
    .map_err(what("set synchronous and foreign_keys"))?;
    migrate(&conn).map_err(|e| match e {
        StoreError::Unavailable(m) => {
            StoreError::Unavailable(format!("sqlite {}: {m}", cfg.path.display()))
        }
        other => other,
    })?;
    Ok(conn)
}

/// Brings the schema to [`SCHEMA_VERSION`], one migration per transaction.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let mut version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db("read user_version"))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {version}; this build knows up to {SCHEMA_VERSION}"
        )));
    }
    while version < SCHEMA_VERSION {
        let index = usize::try_from(version)
            .map_err(|_| StoreError::Corrupt(format!("negative schema version {version}")))?;
        let next = version + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {} PRAGMA user_version = {next}; COMMIT;",
            MIGRATIONS[index]
        ))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            StoreError::Unavailable(format!("migrate the schema to version {next}: {e}"))
        })?;
        tracing::info!(version = next, "sqlite schema migrated");
        version = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use super::super::tests::msg;
    use super::*;
    use crate::{NewRoom, NewRoomMessage, RoomLimits, Store};

    #[test]
    fn open_sets_pragmas_and_schema_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/dirs/confab.db");
        let store = SqliteStore::open(SqliteConfig::new(&path)).expect("open");
        assert!(path.exists(), "parent directories and file are created");
        drop(store);
        let conn = Connection::open(&path).expect("reopen raw");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("v");
        assert_eq!(version, SCHEMA_VERSION);
        // A second open of a migrated file migrates nothing and works.
        drop(conn);
        let _again = SqliteStore::open(SqliteConfig::new(&path)).expect("open again");
    }

    /// A version-1 database (peer messages only) upgrades to version 2 in place: its
    /// messages stay, and new ids of either kind are above every id version 1 gave,
    /// even one whose message was purged.
    #[tokio::test]
    async fn version_1_databases_upgrade_and_ids_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v1.db");
        {
            let conn = Connection::open(&path).expect("raw");
            conn.execute_batch(&format!(
                "BEGIN; {} PRAGMA user_version = 1; COMMIT;",
                MIGRATIONS[0]
            ))
            .expect("version 1 schema");
            for local in 1..=3 {
                conn.execute(
                    "INSERT INTO peer_messages (app_id, sender, receiver, conv_a, conv_b,
                        conversation_seq, inbox_seq, kind, body, local_message_id,
                        timestamp_ms, priority)
                     VALUES (1, 'a', 'b', 'a', 'b', ?1, ?1, 1, 'old', ?1, 10, 2)",
                    [local],
                )
                .expect("old message");
            }
            conn.execute_batch(
                "INSERT INTO conversations VALUES (1, 'a', 'b', 3);
                 INSERT INTO inboxes VALUES (1, 'b', 3, 0);
                 DELETE FROM peer_messages WHERE message_id = 3;",
            )
            .expect("counters, and a purge of id 3");
        }
        let store = SqliteStore::open(SqliteConfig::new(&path)).expect("open and migrate");
        let old = store.inbox_after(1, "b", 0, 10).await.expect("inbox");
        assert_eq!(
            old.messages
                .iter()
                .map(|m| m.message_id)
                .collect::<Vec<_>>(),
            vec![1, 2],
            "old messages survive the upgrade"
        );
        store
            .create_room(
                NewRoom {
                    app_id: 1,
                    room_id: "r".into(),
                    room_name: "R".into(),
                    creator: "a".into(),
                    creator_name: "A".into(),
                    attributes: vec![],
                    destroy_delay_secs: 0,
                    now_ms: 1,
                },
                RoomLimits::default(),
            )
            .await
            .expect("rooms work after the upgrade");
        let room = store
            .append_room(NewRoomMessage {
                app_id: 1,
                room_id: "r".into(),
                sender: "a".into(),
                kind: 1,
                body: "new".into(),
                local_message_id: 1,
                timestamp_ms: 20,
                priority: 2,
            })
            .await
            .expect("append room");
        assert_eq!(room.message.message_id, 4, "above the purged id 3");
        let peer = store.append_peer(msg("a", "b", 4)).await.expect("append");
        assert_eq!(peer.message.message_id, 5, "one counter for both kinds");
        assert_eq!(
            (peer.message.conversation_seq, peer.message.inbox_seq),
            (4, 4)
        );
        let path = store.path().to_owned();
        drop(store);
        let version: i64 = Connection::open(path)
            .expect("raw")
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, 2);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("confab.db");
        Connection::open(&path)
            .expect("raw")
            .execute_batch("PRAGMA user_version = 99")
            .expect("set");
        let err = SqliteStore::open(SqliteConfig::new(&path)).expect_err("must refuse");
        assert!(
            matches!(err, StoreError::Corrupt(ref m) if m.contains("99")),
            "{err}"
        );
    }
}
