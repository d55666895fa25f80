//! Connections that break: every acknowledged message arrives once and in order,
//! sends during an outage complete once or fail with 6000204, rooms come back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use confab_sdk::{
    ConnectionEvent, ConnectionState, ErrorCode, LogConfig, Message, MessageContent, RoomEvent,
    RoomInfo, RoomState, SendConfig, ZimError, ZimEvent,
};

use crate::harness::*;

const SENDS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_mid_stream_loses_and_duplicates_nothing() {
    let server = TestServer::start().await;
    let alice_link = Proxy::start(server.addr).await;
    let bob_link = Proxy::start(server.addr).await;
    let mut bob = Sdk::login(&bob_link.url(), "bob").await;
    let alice = Sdk::login(&alice_link.url(), "alice").await;
    let logs = tempfile::tempdir().unwrap();
    alice
        .zim
        .set_log_config(&LogConfig::new(logs.path()))
        .unwrap();
    alice
        .zim
        .create_room(
            RoomInfo {
                room_id: "lobby".into(),
                room_name: String::new(),
            },
            None,
        )
        .await
        .unwrap();
    bob.zim.join_room("lobby").await.unwrap();

    // Alice keeps sending (peer and room, alternately, ~8 per second, each send
    // on its own task so sends pile up during the outage) ...
    let zim = alice.zim.clone();
    let sender = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for i in 0..SENDS {
            let zim = zim.clone();
            tasks.push(tokio::spawn(async move {
                let content = MessageContent::Text(format!("m{i}"));
                let result = if i % 2 == 0 {
                    zim.send_peer_message(content, "bob", SendConfig::default())
                        .await
                } else {
                    zim.send_room_message(content, "lobby", SendConfig::default())
                        .await
                };
                (i, result)
            }));
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    // ... while her link first swallows the server's replies (the server stores
    // her messages, she never hears back) and then breaks; bob's link breaks
    // too, for longer, so he must catch up from the store.
    let at = |ms| tokio::time::sleep(Duration::from_millis(ms));
    at(1000).await;
    alice_link.set(Mode::Stalled);
    at(600).await;
    alice_link.set(Mode::Down);
    at(400).await;
    bob_link.set(Mode::Down);
    at(600).await;
    alice_link.set(Mode::Open);
    at(900).await;
    bob_link.set(Mode::Open);
    let results: Vec<(usize, Result<Message, ZimError>)> = sender.await.unwrap();

    let mut acked = BTreeMap::new();
    let mut failed = BTreeSet::new();
    for (i, r) in results {
        match r {
            Ok(m) => {
                acked.insert(format!("m{i}"), m);
            }
            Err(e) => {
                assert_eq!(e.code, ErrorCode::MessageNetworkError, "m{i}: {e}");
                failed.insert(format!("m{i}"));
            }
        }
    }
    assert!(
        acked.len() >= SENDS / 2,
        "most sends should survive a 1.5 s outage: {failed:?}"
    );

    // Bob sees every acked message exactly once, peer and room each in order.
    let mut peer: Vec<Message> = Vec::new();
    let mut room: Vec<Message> = Vec::new();
    let seen = |peer: &Vec<Message>, room: &Vec<Message>| {
        peer.iter()
            .chain(room)
            .filter_map(|m| m.text().map(str::to_owned))
            .collect::<BTreeSet<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !acked.keys().all(|k| seen(&peer, &room).contains(k)) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(event) = bob.next(left).await else {
            let missing: Vec<_> = acked
                .keys()
                .filter(|k| !seen(&peer, &room).contains(*k))
                .collect();
            panic!("bob never got {missing:?}");
        };
        match event {
            ZimEvent::ReceivePeerMessage { message_list, .. } => peer.extend(message_list),
            ZimEvent::ReceiveRoomMessage { message_list, .. } => room.extend(message_list),
            other => bob.skipped.push(other),
        }
    }
    // Give duplicates a chance to show up.
    while let Some(event) = bob.next(Duration::from_millis(700)).await {
        match event {
            ZimEvent::ReceivePeerMessage { message_list, .. } => peer.extend(message_list),
            ZimEvent::ReceiveRoomMessage { message_list, .. } => room.extend(message_list),
            other => bob.skipped.push(other),
        }
    }
    let texts: Vec<String> = peer
        .iter()
        .chain(&room)
        .map(|m| m.text().unwrap().to_owned())
        .collect();
    let unique: BTreeSet<_> = texts.iter().cloned().collect();
    assert_eq!(texts.len(), unique.len(), "duplicates: {texts:?}");
    for (text, sent) in &acked {
        let got = peer
            .iter()
            .chain(&room)
            .find(|m| m.text() == Some(text.as_str()))
            .unwrap();
        assert_eq!(got.message_id, sent.message_id, "{text}");
        assert_eq!(got.conversation_seq, sent.conversation_seq, "{text}");
    }
    for text in &unique {
        assert!(
            acked.contains_key(text) || failed.contains(text),
            "{text} was neither sent nor failed"
        );
    }
    let inbox: Vec<u64> = peer.iter().map(|m| m.inbox_seq.unwrap()).collect();
    assert!(
        inbox.windows(2).all(|w| w[0] < w[1]),
        "peer order {inbox:?}"
    );
    let seqs: Vec<u64> = room.iter().map(|m| m.conversation_seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "room order {seqs:?}");
    // Sent order is kept too: a peer message with a higher index has a higher seq.
    let by_index = |m: &Message| m.text().unwrap()[1..].parse::<usize>().unwrap();
    assert!(peer.windows(2).all(|w| by_index(&w[0]) < by_index(&w[1])));

    // Sends in flight when alice's link broke were resent with the same
    // localMessageID (and the server answered with the first result).
    let log = std::fs::read_to_string(logs.path().join("confab-sdk.log")).unwrap();
    let mut ids: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("op=send"))
        .filter_map(|l| l.split("localMessageID=").nth(1))
        .collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert!(total > ids.len(), "no send was in flight at the cut: {log}");

    // Bob went through Reconnecting, and the room came back.
    bob.wait_state(
        ConnectionState::Reconnecting,
        ConnectionEvent::LoginInterrupted,
    )
    .await;
    bob.wait_for("lobby Connecting", |e| match e {
        ZimEvent::RoomStateChanged {
            state: RoomState::Connecting,
            event: RoomEvent::NetworkInterrupted,
            room_id,
        } if room_id == "lobby" => Some(()),
        _ => None,
    })
    .await;
    bob.wait_for("lobby Connected again", |e| match e {
        ZimEvent::RoomStateChanged {
            state: RoomState::Connected,
            event: RoomEvent::Success,
            room_id,
        } if room_id == "lobby" => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(bob.zim.connection_state(), ConnectionState::Connected);
    assert_eq!(
        bob.zim
            .query_room_online_member_count("lobby")
            .await
            .unwrap(),
        2
    );
    server.stop().await;
}

#[tokio::test]
async fn a_server_restart_on_the_same_port_and_data_is_survived() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let url = server.url();
    let mut config = sdk_config(vec![url.clone()]);
    config.request_timeout = Duration::from_secs(2);
    config.reconnect_max_delay = Duration::from_millis(300);
    let mut alice = Sdk::login_with(config, "alice").await;
    let mut bob = Sdk::login(&url, "bob").await;
    alice
        .zim
        .enter_room(
            RoomInfo {
                room_id: "kept".into(),
                room_name: String::new(),
            },
            None,
        )
        .await
        .unwrap();

    // A graceful stop says "serverShutdown, reconnect": both start reconnecting.
    let dir = server.stop().await.unwrap();
    alice
        .wait_state(
            ConnectionState::Reconnecting,
            ConnectionEvent::LoginInterrupted,
        )
        .await;
    // A send with no server for longer than its timeout fails with 6000204 ...
    let err = alice
        .zim
        .send_peer_message(
            MessageContent::Text("lost".into()),
            "bob",
            SendConfig::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::MessageNetworkError, "{err}");
    let err = alice
        .zim
        .query_room_online_member_count("kept")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NetworkError, "{err}");

    // ... one made just before the server comes back waits and succeeds once.
    let zim = alice.zim.clone();
    let pending = tokio::spawn(async move {
        zim.send_peer_message(
            MessageContent::Text("waited".into()),
            "bob",
            SendConfig::default(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server = TestServer::start_at(addr, dir.path()).await;
    let sent = pending.await.unwrap().unwrap();
    alice
        .wait_state(ConnectionState::Connected, ConnectionEvent::Success)
        .await;
    alice
        .wait_for("kept Connected", |e| match e {
            ZimEvent::RoomStateChanged {
                state: RoomState::Connected,
                event: RoomEvent::Success,
                room_id,
            } if room_id == "kept" => Some(()),
            _ => None,
        })
        .await;
    let got = bob.peer_messages(1).await;
    assert_eq!(got[0].text(), Some("waited"));
    assert_eq!(got[0].message_id, sent.message_id);
    assert!(
        !bob.sees(Duration::from_millis(500), |e| matches!(
            e,
            ZimEvent::ReceivePeerMessage { .. }
        ))
        .await
    );
    server.stop().await;
    drop(dir);
}
