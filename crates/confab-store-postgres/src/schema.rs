//! The schema and its migrations.
//!
//! Everything lives in one PostgreSQL schema (namespace) of the store's choosing; every
//! connection has `search_path` set to it, so the SQL names no schema. The schema's
//! `schema_version` table holds one row: the version the schema is at.
//!
//! [`migrate`] runs when a store connects, in ONE transaction that first takes a
//! transaction-scoped advisory lock derived from the schema name: when several nodes
//! start at once, one migrates and the others wait, then find the schema current and
//! change nothing. Running it again on a current schema is a no-op.

use confab_store::StoreError;

use crate::Fail;
use crate::pool::Conn;

/// The schema version this build creates and understands (the one row of the
/// schema's `schema_version` table).
pub const SCHEMA_VERSION: i32 = 1;

/// How long the migration transaction may wait for another node's migration (the
/// advisory lock) and run its statements; ordinary statements get the store's
/// shorter statement timeout.
const MIGRATION_TIMEOUT: &str = "60s";

/// Migrations, in order: `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
///
/// Conventions: app ids are `BIGINT` (a `u32`); positions and ids `BIGINT`;
/// `local_message_id` is the `u64` bit-cast to `BIGINT`. IDs (users, rooms) are
/// `TEXT COLLATE "C"`, so they order and compare bytewise, as Rust's `str` and the
/// SQLite store do, whatever the database's collation. Free text that may hold any
/// Unicode, NUL included (bodies, display names, room names, attribute keys and
/// values), is `BYTEA` holding the UTF-8 bytes: PostgreSQL `TEXT` cannot hold NUL.
const MIGRATIONS: &[&str] = &[
    // 1: everything. Counters (`conversations`, `inboxes`, `room_seqs`) are rows of
    // their own, advanced with `INSERT .. ON CONFLICT DO UPDATE .. RETURNING` in the
    // transaction that inserts the message: the row lock serializes writers of one
    // conversation / inbox / room, and purging or destroying never lets a position be
    // reused. `message_ids` is the one sequence of peer AND room message ids, capped
    // below 2^53. `room_app_locks` and `room_user_locks` hold no data: their rows are
    // locked to serialize the checks of an app's room limit and a user's room limit.
    r#"
    CREATE SEQUENCE message_ids AS BIGINT MINVALUE 1 MAXVALUE 9007199254740991 NO CYCLE;

    CREATE TABLE apps (
        app_id      BIGINT PRIMARY KEY CHECK (app_id BETWEEN 1 AND 4294967295),
        secret      TEXT NOT NULL,
        name        TEXT NOT NULL,
        created_ms  BIGINT NOT NULL
    );

    CREATE TABLE users (
        app_id         BIGINT NOT NULL CHECK (app_id > 0),
        user_id        TEXT COLLATE "C" NOT NULL,
        user_name      BYTEA NOT NULL,
        first_seen_ms  BIGINT NOT NULL,
        last_seen_ms   BIGINT NOT NULL,
        PRIMARY KEY (app_id, user_id)
    );

    CREATE TABLE peer_messages (
        message_id        BIGINT PRIMARY KEY,
        app_id            BIGINT NOT NULL CHECK (app_id > 0),
        sender            TEXT COLLATE "C" NOT NULL,
        receiver          TEXT COLLATE "C" NOT NULL,
        conv_a            TEXT COLLATE "C" NOT NULL,
        conv_b            TEXT COLLATE "C" NOT NULL,
        conversation_seq  BIGINT NOT NULL CHECK (conversation_seq > 0),
        inbox_seq         BIGINT NOT NULL CHECK (inbox_seq > 0),
        kind              SMALLINT NOT NULL,
        body              BYTEA NOT NULL,
        local_message_id  BIGINT NOT NULL,
        timestamp_ms      BIGINT NOT NULL,
        priority          SMALLINT NOT NULL,
        UNIQUE (app_id, sender, local_message_id)
    );
    CREATE UNIQUE INDEX peer_messages_inbox ON peer_messages (app_id, receiver, inbox_seq);
    CREATE UNIQUE INDEX peer_messages_conversation
        ON peer_messages (app_id, conv_a, conv_b, conversation_seq);
    CREATE INDEX peer_messages_time ON peer_messages (timestamp_ms);

    CREATE TABLE conversations (
        app_id    BIGINT NOT NULL,
        conv_a    TEXT COLLATE "C" NOT NULL,
        conv_b    TEXT COLLATE "C" NOT NULL,
        last_seq  BIGINT NOT NULL,
        PRIMARY KEY (app_id, conv_a, conv_b)
    );

    CREATE TABLE inboxes (
        app_id     BIGINT NOT NULL,
        user_id    TEXT COLLATE "C" NOT NULL,
        head_seq   BIGINT NOT NULL,
        acked_seq  BIGINT NOT NULL,
        PRIMARY KEY (app_id, user_id)
    );

    CREATE TABLE room_app_locks (
        app_id  BIGINT PRIMARY KEY
    );

    CREATE TABLE room_user_locks (
        app_id   BIGINT NOT NULL,
        user_id  TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (app_id, user_id)
    );

    CREATE TABLE rooms (
        app_id              BIGINT NOT NULL CHECK (app_id > 0),
        room_id             TEXT COLLATE "C" NOT NULL,
        room_name           BYTEA NOT NULL,
        created_ms          BIGINT NOT NULL,
        destroy_delay_secs  BIGINT NOT NULL CHECK (destroy_delay_secs >= 0),
        empty_since_ms      BIGINT,
        member_count        BIGINT NOT NULL CHECK (member_count >= 0),
        PRIMARY KEY (app_id, room_id)
    );
    CREATE INDEX rooms_empty ON rooms (empty_since_ms) WHERE empty_since_ms IS NOT NULL;

    CREATE TABLE room_members (
        app_id            BIGINT NOT NULL,
        room_id           TEXT COLLATE "C" NOT NULL,
        user_id           TEXT COLLATE "C" NOT NULL,
        user_name         BYTEA NOT NULL,
        joined_ms         BIGINT NOT NULL,
        offline_since_ms  BIGINT,
        PRIMARY KEY (app_id, room_id, user_id),
        FOREIGN KEY (app_id, room_id) REFERENCES rooms (app_id, room_id)
    );
    CREATE INDEX room_members_user ON room_members (app_id, user_id);
    CREATE INDEX room_members_offline ON room_members (offline_since_ms)
        WHERE offline_since_ms IS NOT NULL;

    CREATE TABLE room_attributes (
        app_id                   BIGINT NOT NULL,
        room_id                  TEXT COLLATE "C" NOT NULL,
        key                      BYTEA NOT NULL,
        value                    BYTEA NOT NULL,
        owner                    TEXT COLLATE "C" NOT NULL,
        delete_after_owner_left  BOOLEAN NOT NULL,
        PRIMARY KEY (app_id, room_id, key),
        FOREIGN KEY (app_id, room_id) REFERENCES rooms (app_id, room_id) ON DELETE CASCADE
    );

    CREATE TABLE room_seqs (
        app_id    BIGINT NOT NULL,
        room_id   TEXT COLLATE "C" NOT NULL,
        last_seq  BIGINT NOT NULL,
        PRIMARY KEY (app_id, room_id)
    );

    CREATE TABLE room_messages (
        message_id        BIGINT PRIMARY KEY,
        app_id            BIGINT NOT NULL CHECK (app_id > 0),
        room_id           TEXT COLLATE "C" NOT NULL,
        seq               BIGINT NOT NULL CHECK (seq > 0),
        sender            TEXT COLLATE "C" NOT NULL,
        kind              SMALLINT NOT NULL,
        body              BYTEA NOT NULL,
        local_message_id  BIGINT NOT NULL,
        timestamp_ms      BIGINT NOT NULL,
        priority          SMALLINT NOT NULL,
        UNIQUE (app_id, sender, local_message_id),
        UNIQUE (app_id, room_id, seq)
    );
    CREATE INDEX room_messages_time ON room_messages (timestamp_ms);
    "#,
];

/// Creates the schema if missing and brings it to [`SCHEMA_VERSION`], in one
/// transaction under the schema's advisory lock. `schema` must be a validated name.
pub(crate) async fn migrate(conn: &mut Conn, schema: &str) -> Result<(), Fail> {
    conn.batch(
        "migrate: begin",
        &format!(
            "BEGIN; SET LOCAL statement_timeout = '{MIGRATION_TIMEOUT}'; \
             SET LOCAL lock_timeout = '{MIGRATION_TIMEOUT}'"
        ),
    )
    .await?;
    match migrate_in_transaction(conn, schema).await {
        Ok(()) => conn.batch("migrate: commit", "COMMIT").await,
        Err(e) => {
            if conn.batch("migrate: roll back", "ROLLBACK").await.is_err() {
                conn.mark_broken();
            }
            Err(e)
        }
    }
}

async fn migrate_in_transaction(conn: &mut Conn, schema: &str) -> Result<(), Fail> {
    conn.query_uncached(
        "migrate: take the migration lock",
        "SELECT pg_advisory_xact_lock($1)",
        &[&lock_key(schema)],
    )
    .await?;
    conn.batch(
        "migrate: create the schema and its version table",
        &format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             SET LOCAL search_path TO {schema};
             CREATE TABLE IF NOT EXISTS schema_version (
                 id       INTEGER PRIMARY KEY CHECK (id = 0),
                 version  INTEGER NOT NULL CHECK (version >= 0)
             );
             INSERT INTO schema_version (id, version) VALUES (0, 0) ON CONFLICT (id) DO NOTHING;"
        ),
    )
    .await?;
    let rows = conn
        .query_uncached(
            "migrate: read the schema version",
            "SELECT version FROM schema_version WHERE id = 0",
            &[],
        )
        .await?;
    let mut version: i32 = match rows.first() {
        Some(row) => row
            .try_get(0)
            .map_err(crate::db("migrate: read the schema version"))?,
        None => {
            return Err(Fail::Store(StoreError::Corrupt(format!(
                "schema {schema}: schema_version has no row"
            ))));
        }
    };
    if version > SCHEMA_VERSION {
        return Err(Fail::Store(StoreError::Corrupt(format!(
            "schema {schema} is at version {version}; this build knows up to {SCHEMA_VERSION}"
        ))));
    }
    while version < SCHEMA_VERSION {
        let index = usize::try_from(version).map_err(|_| {
            Fail::Store(StoreError::Corrupt(format!(
                "schema {schema}: negative schema version {version}"
            )))
        })?;
        let next = version + 1;
        let Some(sql) = MIGRATIONS.get(index) else {
            return Err(Fail::Store(StoreError::Corrupt(format!(
                "no migration to schema version {next}"
            ))));
        };
        conn.batch("migrate: apply a migration", sql).await?;
        conn.query_uncached(
            "migrate: record the schema version",
            "UPDATE schema_version SET version = $1 WHERE id = 0",
            &[&next],
        )
        .await?;
        tracing::info!(schema, version = next, "postgres schema migrated");
        version = next;
    }
    Ok(())
}

/// The advisory lock key of a schema's migrations: FNV-1a (64 bits) of a fixed prefix
/// and the schema name, so every build and node derives the same key.
pub(crate) fn lock_key(schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"confab-store-postgres/migrate/"
        .iter()
        .chain(schema.as_bytes())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// A schema name this store accepts: 1–63 bytes of lowercase ASCII letters, digits
/// and `_`, not starting with a digit nor with `pg_` (reserved by PostgreSQL), so it
/// needs no quoting anywhere.
pub(crate) fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && !schema.starts_with("pg_")
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "postgres schema name {schema:?}: use 1-63 lowercase ASCII letters, digits and _, \
             not starting with a digit or pg_"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for good in ["confab", "a", "confab_test_12ab", "_x", &"a".repeat(63)] {
            assert!(check_schema_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Confab",
            "1abc",
            "pg_x",
            "a-b",
            "a b",
            "a;drop",
            "\"q\"",
            "é",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(check_schema_name(bad), Err(StoreError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn lock_keys_are_stable_and_per_schema() {
        assert_eq!(lock_key("confab"), lock_key("confab"));
        assert_ne!(lock_key("confab"), lock_key("confab2"));
        assert_eq!(
            MIGRATIONS.len(),
            usize::try_from(SCHEMA_VERSION).unwrap_or(0)
        );
    }
}
