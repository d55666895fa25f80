//! Rooms: create, join, messages of every type, members, attributes, history, leave.

use std::collections::BTreeMap;

use confab_sdk::{
    ConversationType, ErrorCode, MessageContent, RoomAdvancedConfig, RoomAttributesSetConfig,
    RoomEvent, RoomInfo, RoomState, SendConfig, ZimEvent,
};

use crate::harness::*;

fn room(id: &str) -> RoomInfo {
    RoomInfo {
        room_id: id.into(),
        room_name: format!("room {id}"),
    }
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn room_messages_members_and_attributes() {
    let server = TestServer::start().await;
    let mut alice = Sdk::login(&server.url(), "alice").await;
    let mut bob = Sdk::login(&server.url(), "bob").await;

    let created = alice
        .zim
        .create_room(
            room("lobby"),
            Some(RoomAdvancedConfig {
                room_attributes: attrs(&[("topic", "rust")]),
                room_destroy_delay_time: 0,
            }),
        )
        .await
        .unwrap();
    assert!(created.created);
    alice
        .wait_for("lobby Connected", |e| match e {
            ZimEvent::RoomStateChanged {
                state: RoomState::Connected,
                event: RoomEvent::ActiveCreate,
                room_id,
            } if room_id == "lobby" => Some(()),
            _ => None,
        })
        .await;
    let err = bob.zim.create_room(room("lobby"), None).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::RoomAlreadyExists);
    let err = bob.zim.join_room("nowhere").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::RoomJoinNotExist);
    let err = bob
        .zim
        .send_room_message(
            MessageContent::Text("x".into()),
            "lobby",
            SendConfig::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotInRoom);

    let joined = bob.zim.join_room("lobby").await.unwrap();
    assert!(!joined.created);
    let members = alice
        .wait_for("RoomMemberJoined bob", |e| match e {
            ZimEvent::RoomMemberJoined {
                member_list,
                room_id,
            } if room_id == "lobby" && member_list.iter().any(|m| m.user_id == "bob") => {
                Some(member_list.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(
        members
            .iter()
            .find(|m| m.user_id == "bob")
            .unwrap()
            .user_name,
        "bob name"
    );

    // Every type reaches the other member, not the sender.
    let sent = alice
        .zim
        .send_room_message(
            MessageContent::Text("hello room".into()),
            "lobby",
            SendConfig::default(),
        )
        .await
        .unwrap();
    assert_eq!(sent.conversation_type, ConversationType::Room);
    assert_eq!(sent.conversation_seq, 1);
    alice
        .zim
        .send_room_message(
            MessageContent::Command(vec![9, 9]),
            "lobby",
            SendConfig::default(),
        )
        .await
        .unwrap();
    alice
        .zim
        .send_room_message(
            MessageContent::Barrage("woo".into()),
            "lobby",
            SendConfig::default(),
        )
        .await
        .unwrap();
    let got = bob.room_messages(3).await;
    assert_eq!(got[0].text(), Some("hello room"));
    assert_eq!(got[0].conversation_id, "lobby");
    assert_eq!(got[0].conversation_seq, 1);
    assert_eq!(got[0].sender_user_id, "alice");
    assert_eq!(got[1].content, MessageContent::Command(vec![9, 9]));
    assert_eq!(got[2].content, MessageContent::Barrage("woo".into()));
    bob.zim
        .send_room_message(
            MessageContent::Text("hi from bob".into()),
            "lobby",
            SendConfig::default(),
        )
        .await
        .unwrap();
    let got = alice.room_messages(1).await;
    assert_eq!(got[0].text(), Some("hi from bob"));
    assert_eq!(got[0].conversation_seq, 2);

    // Members and counts.
    assert_eq!(
        alice
            .zim
            .query_room_online_member_count("lobby")
            .await
            .unwrap(),
        2
    );
    let page = alice
        .zim
        .query_room_member_list("lobby", "", 1)
        .await
        .unwrap();
    assert_eq!(page.member_list.len(), 1);
    assert!(!page.next_flag.is_empty());
    let page2 = alice
        .zim
        .query_room_member_list("lobby", &page.next_flag, 100)
        .await
        .unwrap();
    let mut all: Vec<_> = page
        .member_list
        .iter()
        .chain(&page2.member_list)
        .map(|m| m.user_id.clone())
        .collect();
    all.sort();
    assert_eq!(all, ["alice", "bob"]);
    assert!(page2.next_flag.is_empty());

    // Attributes: owned keys, force, batch, delete; both members see updates.
    let force = RoomAttributesSetConfig {
        is_force: true,
        ..Default::default()
    };
    let error_keys = bob
        .zim
        .set_room_attributes(
            "lobby",
            attrs(&[("topic", "go"), ("mood", "happy")]),
            RoomAttributesSetConfig::default(),
        )
        .await
        .unwrap();
    assert_eq!(error_keys, ["topic"], "alice owns topic");
    let update = alice
        .wait_for("RoomAttributesUpdated", |e| match e {
            ZimEvent::RoomAttributesUpdated { room_id, infos } if room_id == "lobby" => {
                Some(infos.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(update[0].action, 0);
    assert_eq!(update[0].room_attributes, attrs(&[("mood", "happy")]));
    bob.zim
        .set_room_attributes("lobby", attrs(&[("topic", "go")]), force)
        .await
        .unwrap();
    alice
        .zim
        .batch_room_attributes("lobby", attrs(&[("a", "1")]), vec!["mood".into()], force)
        .await
        .unwrap();
    bob.wait_for("RoomAttributesBatchUpdated", |e| match e {
        ZimEvent::RoomAttributesBatchUpdated { room_id, .. } if room_id == "lobby" => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(
        bob.zim.query_room_all_attributes("lobby").await.unwrap(),
        attrs(&[("a", "1"), ("topic", "go")])
    );
    let error_keys = alice
        .zim
        .delete_room_attributes(
            "lobby",
            vec!["a".into()],
            RoomAttributesSetConfig::default(),
        )
        .await
        .unwrap();
    assert!(error_keys.is_empty());
    let err = alice
        .zim
        .set_room_attributes("lobby", attrs(&[("this key is far too long", "v")]), force)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ParamInvalid, "{err}");

    // History of the room, newest first.
    let history = bob
        .zim
        .query_history_message("lobby", ConversationType::Room, None, 10, true)
        .await
        .unwrap();
    let texts: Vec<_> = history.iter().map(|m| m.text().unwrap()).collect();
    assert_eq!(texts, ["hi from bob", "hello room"]);

    // Leaving.
    bob.zim.leave_room("lobby").await.unwrap();
    alice
        .wait_for("RoomMemberLeft bob", |e| match e {
            ZimEvent::RoomMemberLeft {
                member_list,
                room_id,
            } if room_id == "lobby" && member_list.iter().any(|m| m.user_id == "bob") => Some(()),
            _ => None,
        })
        .await;
    let err = bob.zim.leave_room("lobby").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::RoomLeaveFailed);
    let err = bob
        .zim
        .query_room_online_member_count("lobby")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotInRoom);

    // enter_room creates or joins.
    let entered = bob.zim.enter_room(room("side"), None).await.unwrap();
    assert!(entered.created);
    let entered = alice.zim.enter_room(room("side"), None).await.unwrap();
    assert!(!entered.created);
    server.stop().await;
}
