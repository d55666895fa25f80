//! Two `PgStore`s on one schema are two `confab serve` nodes sharing PostgreSQL: what
//! one process cannot serialize, the database must.

use std::collections::BTreeMap;
use std::sync::Arc;

use confab_store::{NewRoom, NewRoomMessage, RoomError, RoomLimits, Store, StoredPeerMessage};
use confab_store_postgres::PgStore;

use crate::{text, with_db};

/// Two nodes on one fresh schema.
async fn two_nodes(db: &crate::TestDb) -> [Arc<PgStore>; 2] {
    let schema = db.fresh_schema();
    [
        Arc::new(db.store(&schema).await),
        Arc::new(db.store(&schema).await),
    ]
}

fn room(room_id: &str, creator: &str) -> NewRoom {
    NewRoom {
        app_id: 1,
        room_id: room_id.to_owned(),
        room_name: room_id.to_owned(),
        creator: creator.to_owned(),
        creator_name: creator.to_owned(),
        attributes: vec![],
        destroy_delay_secs: 0,
        now_ms: 1,
    }
}

/// Both nodes retry the same (sender, localMessageID) at once, over and over: each
/// send is stored once, everyone gets that one message, and the inbox counts it once.
/// The same for room messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_on_two_nodes_store_once() {
    with_db(|db| async move {
        let nodes = two_nodes(&db).await;
        const ROUNDS: u64 = 10;
        const TASKS: usize = 8;
        for local in 1..=ROUNDS {
            let mut tasks = tokio::task::JoinSet::new();
            for t in 0..TASKS {
                let node = Arc::clone(&nodes[t % 2]);
                tasks.spawn(async move {
                    let ts = i64::try_from(t).expect("small");
                    node.append_peer(text("alice", "bob", local, ts)).await
                });
            }
            let results: Vec<_> = tasks
                .join_all()
                .await
                .into_iter()
                .map(|r| r.expect("append"))
                .collect();
            let originals: Vec<_> = results.iter().filter(|r| !r.duplicate).collect();
            assert_eq!(
                originals.len(),
                1,
                "round {local}: stored once: {results:?}"
            );
            let first = &originals[0].message;
            assert!(
                results.iter().all(|r| &r.message == first),
                "round {local}: every node answers the first message"
            );
            assert_eq!(
                first.inbox_seq, local,
                "round {local}: one position per send"
            );
        }
        for node in &nodes {
            let page = node.inbox_after(1, "bob", 0, 100).await.expect("inbox");
            assert_eq!(page.head, ROUNDS);
            assert_eq!(
                page.messages
                    .iter()
                    .map(|m| m.inbox_seq)
                    .collect::<Vec<_>>(),
                (1..=ROUNDS).collect::<Vec<_>>()
            );
        }

        nodes[0]
            .create_room(room("r", "alice"), RoomLimits::default())
            .await
            .expect("create");
        for local in 1..=ROUNDS {
            let mut tasks = tokio::task::JoinSet::new();
            for t in 0..TASKS {
                let node = Arc::clone(&nodes[t % 2]);
                tasks.spawn(async move {
                    node.append_room(NewRoomMessage {
                        app_id: 1,
                        room_id: "r".into(),
                        sender: "alice".into(),
                        kind: 1,
                        body: format!("try {t}"),
                        local_message_id: local,
                        timestamp_ms: 1,
                        priority: 2,
                    })
                    .await
                });
            }
            let results: Vec<_> = tasks
                .join_all()
                .await
                .into_iter()
                .map(|r| r.expect("append room"))
                .collect();
            assert_eq!(
                results.iter().filter(|r| !r.duplicate).count(),
                1,
                "room round {local}: stored once"
            );
            assert!(results.iter().all(|r| r.message == results[0].message));
            assert_eq!(results[0].message.seq, local);
        }
        let head = nodes[1]
            .room(1, "r")
            .await
            .expect("room")
            .expect("exists")
            .seq_head;
        assert_eq!(head, ROUNDS, "retries consumed no room seq");
    })
    .await;
}

/// 4 tasks on each of 2 nodes send to one receiver at once: the inbox is exactly
/// `1..=N`, each sender's messages keep their order with conversation seqs `1..`,
/// message ids are unique, and both nodes read the same inbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_on_two_nodes_share_one_inbox_sequence() {
    with_db(|db| async move {
        let nodes = two_nodes(&db).await;
        const TASKS_PER_NODE: usize = 4;
        const EACH: u64 = 25;
        let mut tasks = tokio::task::JoinSet::new();
        for (n, node) in nodes.iter().enumerate() {
            for t in 0..TASKS_PER_NODE {
                let node = Arc::clone(node);
                tasks.spawn(async move {
                    let sender = format!("node{n}-task{t}");
                    let mut stored = Vec::new();
                    for i in 1..=EACH {
                        let m = node
                            .append_peer(text(&sender, "bob", i, 1))
                            .await
                            .expect("append");
                        assert!(!m.duplicate);
                        stored.push(m.message);
                    }
                    stored
                });
            }
        }
        let mut by_sender: BTreeMap<String, Vec<StoredPeerMessage>> = BTreeMap::new();
        for stored in tasks.join_all().await {
            by_sender.insert(stored[0].sender.clone(), stored);
        }
        let total = EACH * u64::try_from(2 * TASKS_PER_NODE).expect("small");
        let mut seqs: Vec<u64> = by_sender.values().flatten().map(|m| m.inbox_seq).collect();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=total).collect::<Vec<_>>(),
            "inbox seqs are 1..=N"
        );
        let mut ids: Vec<u64> = by_sender.values().flatten().map(|m| m.message_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len() as u64, total, "message ids are unique");
        for (sender, stored) in &by_sender {
            assert!(
                stored.windows(2).all(|w| w[0].inbox_seq < w[1].inbox_seq),
                "{sender}'s sends keep their order"
            );
            assert_eq!(
                stored
                    .iter()
                    .map(|m| m.conversation_seq)
                    .collect::<Vec<_>>(),
                (1..=EACH).collect::<Vec<_>>(),
                "{sender}'s conversation seqs"
            );
        }
        let a = nodes[0]
            .inbox_after(1, "bob", 0, 1_000)
            .await
            .expect("inbox");
        let b = nodes[1]
            .inbox_after(1, "bob", 0, 1_000)
            .await
            .expect("inbox");
        assert_eq!(a, b, "both nodes read the same inbox");
        assert_eq!(
            a.messages.iter().map(|m| m.inbox_seq).collect::<Vec<_>>(),
            (1..=total).collect::<Vec<_>>()
        );
        assert_eq!((a.head, a.first_held), (total, 1));
    })
    .await;
}

/// Room limits hold when the callers are spread over two nodes: a room's member
/// cap, an app's room cap, a user's room cap; and one roomID created on both nodes
/// at once is created once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn room_limits_hold_across_two_nodes() {
    with_db(|db| async move {
        let nodes = two_nodes(&db).await;
        let cap = RoomLimits {
            max_room_members: 11,
            ..RoomLimits::default()
        };
        nodes[0]
            .create_room(room("hall", "owner"), cap)
            .await
            .expect("create");
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..30 {
            let node = Arc::clone(&nodes[i % 2]);
            tasks.spawn(async move {
                node.join_room(1, "hall", &format!("u{i:02}"), "U", 2, cap)
                    .await
            });
        }
        let mut joined = 0;
        for result in tasks.join_all().await {
            match result {
                Ok(j) => {
                    assert!(!j.already_member);
                    joined += 1;
                }
                Err(RoomError::RoomFull(11)) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(joined, 10, "exactly 10 fit beside the owner");
        assert_eq!(
            nodes[1].room_member_count(1, "hall").await.expect("count"),
            11
        );

        let seven = RoomLimits {
            max_rooms_per_app: 7,
            ..RoomLimits::default()
        };
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            let node = Arc::clone(&nodes[i % 2]);
            tasks.spawn(async move {
                let mut r = room(&format!("room-{i:02}"), &format!("c{i}"));
                r.app_id = 2;
                node.create_room(r, seven).await
            });
        }
        let created = tasks
            .join_all()
            .await
            .into_iter()
            .filter(|r| match r {
                Ok(_) => true,
                Err(RoomError::AppRoomLimit(7)) => false,
                Err(e) => panic!("unexpected {e:?}"),
            })
            .count();
        assert_eq!(created, 7, "exactly 7 rooms in the app");

        for i in 0..12 {
            nodes[i % 2]
                .create_room(room(&format!("r{i:02}"), &format!("host{i}")), cap)
                .await
                .expect("create");
        }
        let five = RoomLimits {
            max_rooms_per_user: 5,
            ..RoomLimits::default()
        };
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..12 {
            let node = Arc::clone(&nodes[i % 2]);
            tasks.spawn(async move {
                node.join_room(1, &format!("r{i:02}"), "roamer", "R", 2, five)
                    .await
            });
        }
        let joined = tasks
            .join_all()
            .await
            .into_iter()
            .filter(|r| match r {
                Ok(_) => true,
                Err(RoomError::UserRoomLimit(5)) => false,
                Err(e) => panic!("unexpected {e:?}"),
            })
            .count();
        assert_eq!(joined, 5, "exactly 5 rooms for one user");
        assert_eq!(
            nodes[0].user_rooms(1, "roamer").await.expect("rooms").len(),
            5
        );

        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..10 {
            let node = Arc::clone(&nodes[i % 2]);
            tasks.spawn(async move {
                node.create_room(room("same", &format!("creator{i}")), RoomLimits::default())
                    .await
            });
        }
        let winners = tasks
            .join_all()
            .await
            .into_iter()
            .filter(|r| match r {
                Ok(_) => true,
                Err(RoomError::Exists) => false,
                Err(e) => panic!("unexpected {e:?}"),
            })
            .count();
        assert_eq!(winners, 1, "one create of a roomID wins");
        assert_eq!(nodes[1].room_member_count(1, "same").await.expect("n"), 1);
    })
    .await;
}

/// Expiry and destroy run by both nodes at once report each removal once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweeps_on_two_nodes_report_each_removal_once() {
    with_db(|db| async move {
        let nodes = two_nodes(&db).await;
        let roomy = RoomLimits {
            max_rooms_per_user: 10,
            ..RoomLimits::default()
        };
        for i in 0..6 {
            let owner = format!("owner{i}");
            nodes[0]
                .create_room(room(&format!("r{i}"), &owner), RoomLimits::default())
                .await
                .expect("create");
            nodes[1]
                .join_room(1, &format!("r{i}"), "guest", "G", 1, roomy)
                .await
                .expect("join");
            nodes[0]
                .set_member_offline(1, &owner, Some(10))
                .await
                .expect("offline");
        }
        nodes[1]
            .set_member_offline(1, "guest", Some(10))
            .await
            .expect("offline");
        let (a, b) = tokio::join!(nodes[0].expire_members(100), nodes[1].expire_members(100));
        let mut expired: Vec<(String, String)> = a
            .expect("expire")
            .into_iter()
            .chain(b.expect("expire"))
            .map(|e| (e.room_id, e.user_id))
            .collect();
        expired.sort();
        let mut expected: Vec<(String, String)> = (0..6)
            .flat_map(|i| {
                [
                    (format!("r{i}"), "guest".to_owned()),
                    (format!("r{i}"), format!("owner{i}")),
                ]
            })
            .collect();
        expected.sort();
        assert_eq!(expired, expected, "each member expired once");

        let (a, b) = tokio::join!(
            nodes[0].destroy_empty_rooms(100),
            nodes[1].destroy_empty_rooms(100)
        );
        let mut destroyed: Vec<(u32, String)> = a
            .expect("destroy")
            .into_iter()
            .chain(b.expect("destroy"))
            .collect();
        destroyed.sort();
        assert_eq!(
            destroyed,
            (0..6).map(|i| (1, format!("r{i}"))).collect::<Vec<_>>(),
            "each room destroyed once"
        );
    })
    .await;
}

/// Several nodes starting at once on a new schema all come up; it is migrated once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_together_migrate_once() {
    with_db(|db| async move {
        let schema = db.fresh_schema();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let config = db.config(&schema);
            tasks.spawn(async move { PgStore::connect_with(config).await });
        }
        let stores: Vec<PgStore> = tasks
            .join_all()
            .await
            .into_iter()
            .map(|r| r.expect("every node connects"))
            .collect();
        let admin = db.admin().await;
        let rows = admin
            .query(&format!("SELECT version FROM {schema}.schema_version"), &[])
            .await
            .expect("version");
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].get::<_, i32>(0),
            confab_store_postgres::SCHEMA_VERSION
        );
        let appended = stores[3]
            .append_peer(text("a", "b", 1, 1))
            .await
            .expect("append");
        let seen = stores[0].inbox_after(1, "b", 0, 10).await.expect("inbox");
        assert_eq!(seen.messages, vec![appended.message]);
    })
    .await;
}
