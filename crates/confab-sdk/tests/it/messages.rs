//! Peer messages: round trip, offline delivery, acknowledgement, history, and the
//! SDK's rate limit.

use std::time::Duration;

use confab_sdk::{
    ConversationType, ErrorCode, MessageContent, MessageDirection, MessageSentStatus, MessageType,
    Priority, SendConfig, ZimEvent,
};

use crate::harness::*;

fn text(s: &str) -> MessageContent {
    MessageContent::Text(s.into())
}

#[tokio::test]
async fn peer_messages_round_trip_with_events() {
    let server = TestServer::start().await;
    let alice = Sdk::login(&server.url(), "alice").await;
    let mut bob = Sdk::login(&server.url(), "bob").await;

    let sent = alice
        .zim
        .send_peer_message(text("hello bob"), "bob", SendConfig::default())
        .await
        .unwrap();
    assert_eq!(sent.direction, MessageDirection::Send);
    assert_eq!(sent.sent_status, MessageSentStatus::Success);
    assert_eq!(sent.kind(), MessageType::Text);
    assert_eq!(sent.sender_user_id, "alice");
    assert_eq!(sent.conversation_id, "bob");
    assert_eq!(sent.conversation_type, ConversationType::Peer);
    assert_eq!(sent.conversation_seq, 1);
    assert!(sent.message_id > 0 && sent.timestamp > 0 && sent.local_message_id > 0);

    let (list, from) = bob
        .wait_for("ReceivePeerMessage", |e| match e {
            ZimEvent::ReceivePeerMessage {
                message_list,
                from_user_id,
            } => Some((message_list.clone(), from_user_id.clone())),
            _ => None,
        })
        .await;
    assert_eq!(from, "alice");
    assert_eq!(list.len(), 1);
    let got = &list[0];
    assert_eq!(got.text(), Some("hello bob"));
    assert_eq!(got.message_id, sent.message_id);
    assert_eq!(got.local_message_id, sent.local_message_id);
    assert_eq!(got.direction, MessageDirection::Receive);
    assert_eq!(got.conversation_id, "alice");
    assert_eq!(got.conversation_seq, 1);
    assert_eq!(got.inbox_seq, Some(1));

    // Command: bytes, live, priority kept.
    let config = SendConfig {
        priority: Priority::High,
    };
    let cmd = alice
        .zim
        .send_peer_message(MessageContent::Command(vec![1, 2, 3, 0]), "bob", config)
        .await
        .unwrap();
    assert_eq!(cmd.conversation_seq, 0);
    let got = bob.peer_messages(1).await.remove(0);
    assert_eq!(got.content, MessageContent::Command(vec![1, 2, 3, 0]));
    assert_eq!(got.priority, Priority::High);
    assert_eq!(got.inbox_seq, None);

    // Bob answers; both see the conversation in history, in order.
    bob.zim
        .send_peer_message(text("hi alice"), "alice", SendConfig::default())
        .await
        .unwrap();
    let history = alice
        .zim
        .query_history_message("bob", ConversationType::Peer, None, 10, false)
        .await
        .unwrap();
    let texts: Vec<_> = history.iter().map(|m| m.text().unwrap()).collect();
    assert_eq!(texts, ["hello bob", "hi alice"]);
    assert_eq!(history[0].direction, MessageDirection::Send);
    assert_eq!(history[1].direction, MessageDirection::Receive);
    let newest = alice
        .zim
        .query_history_message("bob", ConversationType::Peer, None, 1, true)
        .await
        .unwrap();
    assert_eq!(newest[0].text(), Some("hi alice"));

    // Locally invalid sends.
    for (content, to) in [
        (text("x"), ""),
        (MessageContent::Barrage("x".into()), "bob"),
        (
            MessageContent::Other {
                kind: 11,
                message: "x".into(),
            },
            "bob",
        ),
    ] {
        let err = alice
            .zim
            .send_peer_message(content, to, SendConfig::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ParamInvalid, "{err}");
    }
    // The server is the authority on the rest (here, the size).
    let err = alice
        .zim
        .send_peer_message(text(&"x".repeat(40_000)), "bob", SendConfig::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ParamInvalid, "{err}");
    server.stop().await;
}

#[tokio::test]
async fn offline_messages_arrive_once_in_order_and_are_acknowledged() {
    let server = TestServer::start().await;
    let alice = Sdk::login(&server.url(), "alice").await;
    for i in 1..=3 {
        alice
            .zim
            .send_peer_message(
                text(&format!("offline {i}")),
                "carol",
                SendConfig::default(),
            )
            .await
            .unwrap();
    }
    // Carol has never logged in; she gets all three at her first login.
    let mut carol = Sdk::login(&server.url(), "carol").await;
    let got = carol.peer_messages(3).await;
    let texts: Vec<_> = got.iter().map(|m| m.text().unwrap()).collect();
    assert_eq!(texts, ["offline 1", "offline 2", "offline 3"]);
    let seqs: Vec<_> = got.iter().map(|m| m.inbox_seq.unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    // Let the SDK acknowledge them, then come back as a new instance: nothing is
    // delivered twice.
    tokio::time::sleep(Duration::from_millis(700)).await;
    carol.zim.destroy();
    let mut carol2 = Sdk::login(&server.url(), "carol").await;
    alice
        .zim
        .send_peer_message(text("fresh"), "carol", SendConfig::default())
        .await
        .unwrap();
    let got = carol2.peer_messages(1).await;
    assert_eq!(got[0].text(), Some("fresh"));
    assert_eq!(got[0].inbox_seq, Some(4));
    assert!(
        !carol2
            .sees(Duration::from_millis(300), |e| matches!(
                e,
                ZimEvent::ReceivePeerMessage { .. }
            ))
            .await
    );
    server.stop().await;
}

#[tokio::test]
async fn the_sdk_limits_text_and_command_sends_to_10_per_second() {
    let server = TestServer::start().await;
    let alice = Sdk::login(&server.url(), "alice").await;
    let sends = (0..15).map(|i| {
        let zim = alice.zim.clone();
        async move {
            let content = if i % 2 == 0 {
                text(&format!("burst {i}"))
            } else {
                MessageContent::Command(vec![i])
            };
            zim.send_peer_message(content, "bob", SendConfig::default())
                .await
        }
    });
    let results = futures_util::future::join_all(sends).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let limited: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .inspect(|e| assert_eq!(e.code, ErrorCode::SdkRateLimit, "{e}"))
        .collect();
    assert_eq!((ok, limited.len()), (10, 5), "{results:#?}");
    // Barrage is not limited by the SDK (it needs a room).
    alice
        .zim
        .create_room(
            confab_sdk::RoomInfo {
                room_id: "r".into(),
                room_name: String::new(),
            },
            None,
        )
        .await
        .unwrap();
    alice
        .zim
        .send_room_message(
            MessageContent::Barrage("wave".into()),
            "r",
            SendConfig::default(),
        )
        .await
        .unwrap();
    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(250)).await;
    alice
        .zim
        .send_peer_message(text("later"), "bob", SendConfig::default())
        .await
        .unwrap();
    server.stop().await;
}
