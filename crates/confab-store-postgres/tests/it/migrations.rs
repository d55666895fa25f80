//! The schema: created at connect, migrated once, refused when newer than this build;
//! and how values are laid out in it.

use confab_store::{Store, StoreError};
use confab_store_postgres::{PgConfig, PgStore, SCHEMA_VERSION};

use crate::{text, with_db};

/// The schema's tables and the version row, as the catalog shows them.
async fn catalog(client: &tokio_postgres::Client, schema: &str) -> (Vec<String>, Vec<i32>) {
    let tables = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = $1 ORDER BY table_name",
            &[&schema],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let versions = client
        .query(&format!("SELECT version FROM {schema}.schema_version"), &[])
        .await
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    (tables, versions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_twice_is_a_no_op() {
    with_db(|db| async move {
        let schema = db.fresh_schema();
        let admin = db.admin().await;
        let first = db.store(&schema).await;
        let stored = first
            .append_peer(text("a", "b", 1, 1))
            .await
            .expect("append")
            .message;
        let before = catalog(&admin, &schema).await;
        assert_eq!(before.1, vec![SCHEMA_VERSION]);
        assert!(
            before.0.contains(&"peer_messages".to_owned()) && before.0.len() > 10,
            "{before:?}"
        );

        let second = db.store(&schema).await;
        let third = db.store(&schema).await;
        assert_eq!(catalog(&admin, &schema).await, before, "nothing changed");
        let page = third.inbox_after(1, "b", 0, 10).await.expect("inbox");
        assert_eq!(page.messages, vec![stored], "data untouched");
        let next = second
            .append_peer(text("a", "b", 2, 2))
            .await
            .expect("append");
        assert_eq!(next.message.inbox_seq, 2);
        assert_eq!(first.schema(), schema);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    with_db(|db| async move {
        let schema = db.fresh_schema();
        drop(db.store(&schema).await);
        db.admin()
            .await
            .batch_execute(&format!("UPDATE {schema}.schema_version SET version = 99"))
            .await
            .expect("bump");
        let err = PgStore::connect_with(db.config(&schema))
            .await
            .expect_err("must refuse");
        assert!(
            matches!(err, StoreError::Corrupt(ref m) if m.contains("99")),
            "{err}"
        );
    })
    .await;
}

/// Local ids are stored bit-cast (u64::MAX is -1), bodies as UTF-8 bytes; IDs with
/// NUL are refused as invalid, not failed in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_laid_out_as_documented() {
    with_db(|db| async move {
        let schema = db.fresh_schema();
        let store = db.store(&schema).await;
        store
            .append_peer(confab_store::NewPeerMessage {
                body: "é\u{0}".into(),
                ..text("a", "b", u64::MAX, 1)
            })
            .await
            .expect("append");
        let row = db
            .admin()
            .await
            .query_one(
                &format!("SELECT local_message_id, body FROM {schema}.peer_messages"),
                &[],
            )
            .await
            .expect("row");
        assert_eq!(row.get::<_, i64>(0), -1);
        assert_eq!(row.get::<_, Vec<u8>>(1), "é\u{0}".as_bytes());

        for result in [
            store
                .append_peer(text("a\u{0}", "b", 1, 1))
                .await
                .map(|_| ()),
            store.touch_user(1, "x\u{0}", "X", 1).await,
            store.inbox_after(1, "\u{0}", 0, 1).await.map(|_| ()),
        ] {
            assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
        }
        let bad_room = store.room(1, "r\u{0}").await;
        assert!(
            matches!(bad_room, Err(StoreError::Invalid(_))),
            "{bad_room:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn bad_configurations_are_invalid() {
    for cfg in [
        PgConfig {
            schema: "Not-Valid".into(),
            ..PgConfig::new("postgres://postgres@127.0.0.1:5432/test")
        },
        PgConfig {
            pool_size: 0,
            ..PgConfig::new("postgres://postgres@127.0.0.1:5432/test")
        },
        PgConfig::new("this is = not a url"),
    ] {
        let err = PgStore::connect_with(cfg.clone())
            .await
            .expect_err("invalid");
        assert!(matches!(err, StoreError::Invalid(_)), "{cfg:?}: {err}");
    }
}
