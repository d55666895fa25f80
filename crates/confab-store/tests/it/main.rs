//! The integration tests of `confab-store`, one binary (see matklad's "Delete Cargo
//! Integration Tests"): the conformance suite against [`SqliteStore`], and what only
//! SQLite can show — durability across reopen and `kill -9`, group commit, failures.

#[cfg(feature = "conformance")]
mod conformance;
mod crash;
mod durability;
mod failure;
mod group_commit;

use confab_store::{NewPeerMessage, SqliteConfig, SqliteStore};

/// A store on a new file in `dir`.
fn open_in(dir: &tempfile::TempDir, name: &str) -> SqliteStore {
    SqliteStore::open(SqliteConfig::new(dir.path().join(name))).expect("open the store")
}

/// A Text message in app 1.
fn text(sender: &str, receiver: &str, local_message_id: u64, timestamp_ms: i64) -> NewPeerMessage {
    NewPeerMessage {
        app_id: 1,
        sender: sender.to_owned(),
        receiver: receiver.to_owned(),
        kind: 1,
        body: format!("{sender}->{receiver}#{local_message_id}"),
        local_message_id,
        timestamp_ms,
        priority: 2,
    }
}
