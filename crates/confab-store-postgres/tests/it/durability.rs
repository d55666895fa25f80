//! What a write returned `Ok` for is there for a store connected afresh (a restarted
//! node), and sequences continue from it.

use confab_store::{
    AppRecord, AttributeChange, Conversation, HistoryQuery, NewRoom, NewRoomMessage, RoomLimits,
    Store, StoreError,
};

use crate::{text, with_db};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_a_fresh_connect() {
    with_db(|db| async move {
        let schema = db.fresh_schema();
        let app = AppRecord {
            app_id: 7,
            secret: "0123456789abcdef0123456789abcdef".into(),
            name: "durable app".into(),
            created_ms: 42,
        };
        let nul_body = "body with \u{0} NUL and 😀".to_owned();
        let (peer, room_msg) = {
            let first = db.store(&schema).await;
            first.put_app(&app).await.expect("put app");
            first
                .touch_user(7, "alice", "Alice \u{0}", 1)
                .await
                .expect("touch");
            let peer = first
                .append_peer(confab_store::NewPeerMessage {
                    app_id: 7,
                    body: nul_body.clone(),
                    ..text("alice", "bob", u64::MAX, 1_000)
                })
                .await
                .expect("append")
                .message;
            first.ack_inbox(7, "bob", 1).await.expect("ack");
            first
                .create_room(
                    NewRoom {
                        app_id: 7,
                        room_id: "r".into(),
                        room_name: "room \u{0} name".into(),
                        creator: "alice".into(),
                        creator_name: "Alice \u{0}".into(),
                        attributes: vec![("k\u{0}".into(), "v\u{0}é".into())],
                        destroy_delay_secs: 60,
                        now_ms: 2_000,
                    },
                    RoomLimits::default(),
                )
                .await
                .expect("create room");
            first
                .change_room_attributes(
                    7,
                    "r",
                    "alice",
                    AttributeChange {
                        set: vec![("gone".into(), "x".into())],
                        delete: vec![],
                        is_force: false,
                        is_update_owner: false,
                        is_delete_after_owner_left: true,
                    },
                    RoomLimits::default(),
                )
                .await
                .expect("attributes");
            let room_msg = first
                .append_room(NewRoomMessage {
                    app_id: 7,
                    room_id: "r".into(),
                    sender: "alice".into(),
                    kind: 1,
                    body: nul_body.clone(),
                    local_message_id: 5,
                    timestamp_ms: 3_000,
                    priority: 3,
                })
                .await
                .expect("append room")
                .message;
            first.close();
            assert!(matches!(
                first.ping().await,
                Err(StoreError::Unavailable(_))
            ));
            (peer, room_msg)
        };

        let second = db.store(&schema).await;
        assert_eq!(second.list_apps().await.expect("apps"), vec![app]);
        let inbox = second.inbox_after(7, "bob", 0, 10).await.expect("inbox");
        assert_eq!(inbox.messages, vec![peer.clone()]);
        assert_eq!(inbox.messages[0].body, nul_body, "NUL survives");
        assert_eq!(second.inbox_acked(7, "bob").await.expect("acked"), 1);
        let room = second.room(7, "r").await.expect("room").expect("exists");
        assert_eq!(
            (
                room.room_name.as_str(),
                room.seq_head,
                room.destroy_delay_secs
            ),
            ("room \u{0} name", 1, 60)
        );
        let members = second
            .room_members(7, "r", None, 10)
            .await
            .expect("members");
        assert_eq!(members[0].user_name, "Alice \u{0}");
        assert_eq!(
            second.room_attributes(7, "r").await.expect("attributes"),
            vec![
                ("gone".to_owned(), "x".to_owned()),
                ("k\u{0}".to_owned(), "v\u{0}é".to_owned())
            ]
        );
        assert_eq!(
            second
                .room_messages_after(7, "r", 0, 10)
                .await
                .expect("room messages"),
            vec![room_msg.clone()]
        );
        let history = second
            .history(HistoryQuery {
                app_id: 7,
                conversation: Conversation::Peer("bob".into(), "alice".into()),
                anchor: None,
                count: 10,
                reverse: true,
            })
            .await
            .expect("history");
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].message_id, peer.message_id);

        // The retry of the first send is still recognised; positions continue.
        let retry = second
            .append_peer(confab_store::NewPeerMessage {
                app_id: 7,
                ..text("alice", "bob", u64::MAX, 9)
            })
            .await
            .expect("retry");
        assert!(retry.duplicate);
        assert_eq!(retry.message, peer);
        let next = second
            .append_peer(confab_store::NewPeerMessage {
                app_id: 7,
                ..text("bob", "alice", 1, 4_000)
            })
            .await
            .expect("append")
            .message;
        assert_eq!(next.conversation_seq, 2);
        assert!(next.message_id > room_msg.message_id);
        let left = second
            .leave_room(7, "r", "alice", 5_000)
            .await
            .expect("leave");
        assert_eq!(left.removed_attributes, vec!["gone".to_owned()]);
        assert!(left.room_empty);
    })
    .await;
}
