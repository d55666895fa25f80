//! Rooms over WebSockets: every room code in its situation, fan-out, member
//! events, attributes, lifetime, reconnect grace, history, isolation.
//!
//! Over in-memory pipes with paused time (grace periods and quiet spells cost no
//! real time), except the tests that need a multi-thread runtime (which paused
//! time cannot have): those run over TCP.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use confab_server::Options;
use serde_json::{Value, json};

use crate::harness::*;

async fn create(c: &mut Client, room: &str) -> Value {
    c.request(
        "createRoom",
        json!({"roomInfo": {"roomID": room, "roomName": format!("Room {room}")}}),
    )
    .await
}

async fn join(c: &mut Client, room: &str) -> Value {
    c.request("joinRoom", json!({"roomID": room})).await
}

async fn send_room(
    c: &mut Client,
    room: &str,
    kind: u8,
    text: &str,
    local: u64,
    priority: u8,
) -> Value {
    c.request(
        "sendRoomMessage",
        json!({"roomID": room, "type": kind, "message": text, "localMessageID": local, "priority": priority}),
    )
    .await
}

/// Room messages received until `n` arrived.
async fn room_messages(c: &mut Client, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let p = c.push("receiveRoomMessage").await;
        out.extend(p["data"]["messageList"].as_array().unwrap().iter().cloned());
    }
    out
}

/// `got` holds the messages `"{s}:{i}"` of `senders` senders, `i` in
/// `0..each`: each sender's, in the order it sent them.
fn assert_each_sender_in_send_order(got: &[Value], senders: usize, each: u64) {
    for s in 0..senders {
        let mine: Vec<&str> = got
            .iter()
            .map(|m| m["message"].as_str().unwrap())
            .filter(|t| t.starts_with(&format!("{s}:")))
            .collect();
        let expected: Vec<String> = (0..each).map(|i| format!("{s}:{i}")).collect();
        assert_eq!(mine, expected, "sender {s} in send order");
    }
}

#[tokio::test(start_paused = true)]
async fn room_codes_in_their_situations() {
    let server = TestServer::start_duplex_with(
        |c| {
            c.limits.max_rooms_per_app = 4;
            c.limits.max_rooms_per_user = 2;
        },
        Options::default(),
    )
    .await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;

    let r = create(&mut alice, "r1").await;
    assert_eq!(r["code"], 0, "{r}");
    assert_eq!(r["data"]["roomInfo"]["roomID"], "r1");
    assert_eq!(r["data"]["created"], true);
    assert_eq!(create(&mut bob, "r1").await["code"], 6000311);
    assert_eq!(join(&mut bob, "nope").await["code"], 6000304);
    let r = bob.request("leaveRoom", json!({"roomID": "nope"})).await;
    assert_eq!(r["code"], 6000301, "{r}");
    let r = bob.request("leaveRoom", json!({"roomID": "r1"})).await;
    assert_eq!(r["code"], 6000305, "{r}");
    // Non-member and missing-room answers of member-only operations.
    for (op, data) in [
        (
            "sendRoomMessage",
            json!({"roomID": "r1", "type": 1, "message": "x", "localMessageID": 1}),
        ),
        (
            "queryRoomMemberList",
            json!({"roomID": "r1", "config": {"nextFlag": "", "count": 10}}),
        ),
        ("queryRoomOnlineMemberCount", json!({"roomID": "r1"})),
        ("queryRoomAllAttributes", json!({"roomID": "r1"})),
        (
            "setRoomAttributes",
            json!({"roomID": "r1", "roomAttributes": {"k": "v"}}),
        ),
    ] {
        let r = bob.request(op, data.clone()).await;
        assert_eq!(r["code"], 6000205, "{op}: {r}");
        let mut missing = data;
        missing["roomID"] = "ghost".into();
        let r = bob.request(op, missing).await;
        assert_eq!(r["code"], 6000301, "{op}: {r}");
    }
    // Per-user limit (2): alice is in r1; r2 ok; r3 refused, for create and join.
    assert_eq!(create(&mut alice, "r2").await["code"], 0);
    assert_eq!(create(&mut bob, "r3").await["code"], 0);
    let r = create(&mut alice, "r4").await;
    assert_eq!(r["code"], 6000321, "{r}");
    let r = join(&mut alice, "r3").await;
    assert_eq!(r["code"], 6000321, "{r}");
    let r = alice
        .request("enterRoom", json!({"roomInfo": {"roomID": "r3"}}))
        .await;
    assert_eq!(r["code"], 6000321, "{r}");
    // Per-app limit (4): bob makes the fourth room, then the app is full.
    assert_eq!(create(&mut bob, "r4").await["code"], 0);
    let mut carol = server.login("carol").await;
    let r = create(&mut carol, "r5").await;
    assert_eq!(r["code"], 6000312, "{r}");
    let r = carol
        .request("enterRoom", json!({"roomInfo": {"roomID": "r5"}}))
        .await;
    assert_eq!(r["code"], 6000312, "{r}");
    // Bad input.
    let r = create(&mut carol, &"x".repeat(129)).await;
    assert_eq!(r["code"], 6000001, "{r}");
    assert!(r["message"].as_str().unwrap().contains("roomID"), "{r}");
    let r = carol
        .request(
            "createRoom",
            json!({"roomInfo": {"roomID": "ok", "roomName": "n".repeat(65)}}),
        )
        .await;
    assert_eq!(r["code"], 6000001, "{r}");
    let r = carol
        .request(
            "createRoom",
            json!({"roomInfo": {"roomID": "ok"}, "config": {"roomDestroyDelayTime": 10801}}),
        )
        .await;
    assert_eq!(r["code"], 6000001, "{r}");
    // enterRoom joins an existing room.
    let r = carol
        .request("enterRoom", json!({"roomInfo": {"roomID": "r1"}}))
        .await;
    assert_eq!(r["code"], 0, "{r}");
    assert_eq!(r["data"]["created"], false);
}

#[tokio::test(start_paused = true)]
async fn internal_failures_are_6000303_and_6000302() {
    let dir = tempfile::tempdir().unwrap();
    let store = flaky_store(dir.path());
    let options = Options {
        store: Some(store.clone()),
        ..Options::default()
    };
    let server = TestServer::start_duplex_in(dir.path(), |_| {}, options).await;
    let mut alice = server.login("alice").await;
    assert_eq!(create(&mut alice, "ok").await["code"], 0);
    store.set_failing(true);
    assert_eq!(create(&mut alice, "r").await["code"], 6000303);
    let mut bob_fail = join(&mut alice, "other").await;
    assert_eq!(bob_fail["code"].take(), 6000302);
    let r = send_room(&mut alice, "ok", 1, "x", 1, 1).await;
    assert_eq!(r["code"], 6000202, "{r}");
    let r = alice.request("leaveRoom", json!({"roomID": "ok"})).await;
    assert_eq!(r["code"], 6000302, "{r}");
    store.set_failing(false);
}

#[tokio::test(start_paused = true)]
async fn room_messages_reach_every_member_but_the_sender() {
    let server = TestServer::start_duplex().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;
    assert_eq!(create(&mut alice, "lobby").await["code"], 0);
    assert_eq!(join(&mut bob, "lobby").await["code"], 0);
    assert_eq!(join(&mut carol, "lobby").await["code"], 0);
    for i in 1..=3u64 {
        let r = send_room(&mut alice, "lobby", 1, &format!("t{i}"), i, 1).await;
        assert_eq!(r["code"], 0, "{r}");
        assert_eq!(r["data"]["conversationSeq"], i);
    }
    let cmd = base64::engine::general_purpose::STANDARD.encode([9u8]);
    assert_eq!(send_room(&mut bob, "lobby", 2, &cmd, 1, 3).await["code"], 0);
    assert_eq!(
        send_room(&mut bob, "lobby", 20, "woo", 2, 1).await["code"],
        0
    );
    // A retry of a stored message is not delivered again.
    assert_eq!(
        send_room(&mut alice, "lobby", 1, "t1", 1, 1).await["data"]["conversationSeq"],
        1
    );
    let got = room_messages(&mut carol, 5).await;
    let texts: Vec<_> = got.iter().map(|m| m["message"].as_str().unwrap()).collect();
    assert_eq!(texts, ["t1", "t2", "t3", cmd.as_str(), "woo"]);
    assert_eq!(got[0]["conversationID"], "lobby");
    assert_eq!(got[0]["conversationType"], 1);
    assert_eq!(got[3]["type"], 2);
    assert_eq!(got[4]["type"], 20);
    let got = room_messages(&mut bob, 3).await;
    assert!(
        got.iter().all(|m| m["senderUserID"] == "alice"),
        "bob never gets his own"
    );
    let got = room_messages(&mut alice, 2).await;
    assert!(
        got.iter().all(|m| m["senderUserID"] == "bob"),
        "alice never gets her own"
    );
    assert!(
        alice
            .try_push("receiveRoomMessage", Duration::from_millis(300))
            .await
            .is_none()
    );
}

/// Sends a room message without waiting for its reply; returns the request id.
async fn send_room_nowait(c: &mut Client, room: &str, kind: u8, text: &str, local: u64) -> u64 {
    c.send(
        "sendRoomMessage",
        json!({"roomID": room, "type": kind, "message": text, "localMessageID": local, "priority": 3}),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn pipelined_room_sends_keep_request_order_for_replies_and_members() {
    let server = duplex_server_without_user_send_limit().await;
    let mut alice = server.login("alice").await;
    let mut carol = server.login("carol").await;
    let mut bob = server.login("bob").await;
    assert_eq!(create(&mut alice, "lobby").await["code"], 0);
    assert_eq!(join(&mut carol, "lobby").await["code"], 0);
    assert_eq!(join(&mut bob, "lobby").await["code"], 0);
    // Two senders, 150 stored sends each without waiting; alice's stream also
    // holds a live Command, a send to a room she is not in and a bad send.
    let cmd = base64::engine::general_purpose::STANDARD.encode([7u8]);
    let mut alice_ids = Vec::new();
    let mut carol_ids = Vec::new();
    for i in 0..150u64 {
        alice_ids.push(send_room_nowait(&mut alice, "lobby", 1, &format!("a{i}"), i + 1).await);
        carol_ids.push(send_room_nowait(&mut carol, "lobby", 1, &format!("c{i}"), i + 1).await);
        if i == 50 {
            alice_ids.push(send_room_nowait(&mut alice, "lobby", 2, &cmd, 1_000).await);
        }
        if i == 70 {
            alice_ids.push(send_room_nowait(&mut alice, "elsewhere", 1, "x", 1_001).await);
        }
        if i == 90 {
            alice_ids.push(send_room_nowait(&mut alice, "", 1, "x", 1_002).await);
        }
    }
    let ping = alice.send("ping", json!({})).await;
    let mut last_seq = 0;
    let mut refused = Vec::new();
    for id in &alice_ids {
        let r = alice.next_reply().await;
        assert_eq!(r["id"], *id, "replies come in request order: {r}");
        match r["code"].as_u64().unwrap() {
            0 => {
                let seq = r["data"]["conversationSeq"].as_u64().unwrap();
                if seq > 0 {
                    assert!(seq > last_seq, "a sender's seqs rise: {r}");
                    last_seq = seq;
                }
            }
            code @ (6000301 | 6000001) => refused.push(code),
            other => panic!("unexpected code {other}: {r}"),
        }
    }
    assert_eq!(
        refused,
        [6000301, 6000001],
        "the send to a missing room, then the bad one"
    );
    assert_eq!(alice.next_reply().await["id"], ping);
    for id in &carol_ids {
        let r = carol.next_reply().await;
        assert_eq!(r["id"], *id, "replies come in request order: {r}");
        assert_eq!(r["code"], 0, "{r}");
    }
    // Bob sees 301 messages: the stored ones in seq order 1..=300, each
    // sender's in send order.
    let got = room_messages(&mut bob, 301).await;
    let stored: Vec<&Value> = got.iter().filter(|m| m["type"] == 1).collect();
    let seqs: Vec<u64> = stored
        .iter()
        .map(|m| m["conversationSeq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=300).collect::<Vec<_>>(),
        "published in seq order"
    );
    for (who, prefix) in [("alice", 'a'), ("carol", 'c')] {
        let texts: Vec<&str> = stored
            .iter()
            .filter(|m| m["senderUserID"] == who)
            .map(|m| m["message"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (0..150).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(texts, expected, "{who}'s messages in send order");
    }
    assert_eq!(got.iter().filter(|m| m["type"] == 2).count(), 1);
}

/// A busy room merges messages into fewer pushes: members still get every stored
/// message once, in seq order, each sender's in send order, and a sender's own
/// sessions get none of its messages; a member who joins mid-stream gets what
/// was published after its join from the live stream, with no gap to its
/// catch-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_room_merges_messages_without_losing_or_reordering_any() {
    let server = TestServer::start_with(
        |c| {
            c.limits.user_send_rate = 10_000;
            c.limits.user_send_burst = 10_000;
            // Every room is busy; messages within 30 ms of a delivery merge.
            c.limits.room_merge_above = 1;
            c.limits.room_merge_window_ms = 30;
        },
        Options::default(),
    )
    .await;
    let mut owner = server.login("owner").await;
    assert_eq!(create(&mut owner, "lobby").await["code"], 0);
    let mut senders = Vec::new();
    for name in ["s0", "s1"] {
        let mut c = server.login(name).await;
        assert_eq!(join(&mut c, "lobby").await["code"], 0);
        senders.push(c);
    }
    const EACH: u64 = 150;
    let mut late = None;
    for i in 0..EACH {
        for (s, c) in senders.iter_mut().enumerate() {
            send_room_nowait(c, "lobby", 1, &format!("{s}:{i}"), i + 1).await;
        }
        if i == EACH / 2 {
            let mut c = server.login("late").await;
            // Joins with lastSeq 0: a catch-up of everything so far, then live.
            let r = c
                .request("joinRoom", json!({"roomID": "lobby", "lastSeq": 0}))
                .await;
            assert_eq!(r["code"], 0, "{r}");
            late = Some(c);
        }
    }
    for c in &mut senders {
        for _ in 0..EACH {
            assert_eq!(c.next_reply().await["code"], 0);
        }
    }
    let total = 2 * EACH;
    let mut frames = 0;
    let mut got = Vec::new();
    while got.len() < total as usize {
        let p = owner.push("receiveRoomMessage").await;
        frames += 1;
        got.extend(p["data"]["messageList"].as_array().unwrap().iter().cloned());
    }
    let seqs: Vec<u64> = got
        .iter()
        .map(|m| m["conversationSeq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "every message once, in seq order"
    );
    assert!(
        frames < total,
        "{frames} pushes for {total} messages: nothing merged"
    );
    assert!(server.metric("confab_room_merged_pushes_total").await > 0);
    assert!(server.metric("confab_room_merged_messages_total").await >= 2);
    assert_each_sender_in_send_order(&got, 2, EACH);
    // A sender gets only the other sender's messages, in seq order.
    let s0 = senders[0]
        .messages_until_quiet("receiveRoomMessage", Duration::from_millis(300))
        .await;
    assert!(
        s0.iter().all(|m| m["senderUserID"] == "s1"),
        "own messages came back"
    );
    assert_eq!(s0.len(), EACH as usize);
    // The late member: catch-up then live, each message once in seq order once
    // repeats are dropped by seq (as the SDKs do; a message committed but not
    // yet published at the join may come both ways).
    let mut late = late.unwrap();
    let mut seen: Vec<u64> = Vec::new();
    for m in late
        .messages_until_quiet("receiveRoomMessage", Duration::from_millis(300))
        .await
    {
        let seq = m["conversationSeq"].as_u64().unwrap();
        if seen.last().is_none_or(|&last| seq > last) {
            seen.push(seq);
        } else {
            assert!(
                seen.contains(&seq),
                "seq {seq} after {seen:?}: out of order"
            );
        }
    }
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "catch-up and live, no gap"
    );
}

/// Several sessions pipelining into one room while the store's writer queue is
/// full (2 slots): appends reach the store in an order no session controls, and
/// members still get the room in seq order, every sender's messages in send
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pipelined_senders_with_a_full_store_queue_keep_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = confab_store::SqliteStore::open(confab_store::SqliteConfig {
        queue: 2,
        ..confab_store::SqliteConfig::new(dir.path().join("confab.db"))
    })
    .unwrap();
    let options = Options {
        store: Some(std::sync::Arc::new(store)),
        ..Options::default()
    };
    let server = TestServer::start_in(
        dir.path(),
        |c| {
            c.limits.user_send_rate = 10_000;
            c.limits.user_send_burst = 10_000;
        },
        options,
    )
    .await;
    let mut owner = server.login("owner").await;
    assert_eq!(create(&mut owner, "lobby").await["code"], 0);
    let names = ["s0", "s1", "s2", "s3"];
    let mut senders = Vec::new();
    for name in names {
        let mut c = server.login(name).await;
        assert_eq!(join(&mut c, "lobby").await["code"], 0);
        senders.push(c);
    }
    const EACH: u64 = 100;
    for i in 0..EACH {
        for (s, c) in senders.iter_mut().enumerate() {
            send_room_nowait(c, "lobby", 1, &format!("{s}:{i}"), i + 1).await;
        }
    }
    for c in &mut senders {
        for _ in 0..EACH {
            let r = c.next_reply().await;
            assert_eq!(r["code"], 0, "{r}");
        }
    }
    let got = room_messages(&mut owner, 4 * EACH as usize).await;
    let seqs: Vec<u64> = got
        .iter()
        .map(|m| m["conversationSeq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=4 * EACH).collect::<Vec<_>>(), "seq order");
    assert_each_sender_in_send_order(&got, names.len(), EACH);
}

#[tokio::test(start_paused = true)]
async fn a_room_sender_that_leaves_mid_pipeline_still_publishes_what_was_stored() {
    let server = duplex_server_without_user_send_limit().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    assert_eq!(create(&mut alice, "lobby").await["code"], 0);
    assert_eq!(join(&mut bob, "lobby").await["code"], 0);
    for i in 0..80u64 {
        send_room_nowait(&mut alice, "lobby", 1, &format!("m{i}"), i + 1).await;
    }
    // Gone without reading a single reply.
    drop(alice);
    assert_stored_sends_were_delivered(&mut bob, "receiveRoomMessage", "lobby", 1).await;
    // The room's sequencer is not stuck: a new message still goes out.
    let mut carol = server.login("carol").await;
    assert_eq!(join(&mut carol, "lobby").await["code"], 0);
    assert_eq!(
        send_room(&mut carol, "lobby", 1, "after", 1, 1).await["code"],
        0
    );
    let next = room_messages(&mut bob, 1).await;
    assert_eq!(next[0]["message"], "after");
}

#[tokio::test(start_paused = true)]
async fn members_paging_count_and_batched_events() {
    let server = TestServer::start_duplex().await;
    let mut owner = server.login("owner").await;
    assert_eq!(create(&mut owner, "big").await["code"], 0);
    let mut others = Vec::new();
    for i in 0..60 {
        let user = format!("m{i:02}");
        let mut c = server.login(&user).await;
        assert_eq!(join(&mut c, "big").await["code"], 0);
        others.push(c);
    }
    // The owner hears of 60 joins in a few batched frames, not 60. (A list may
    // also name the owner itself, right after it made the room: not counted. A
    // join still pending when its member leaves is never announced, so the
    // leave below must come after the last join went out.)
    let mut joined = BTreeSet::new();
    let mut frames = 0;
    while joined.len() < 60 {
        let p = owner.push("roomMemberJoined").await;
        frames += 1;
        for m in p["data"]["memberList"].as_array().unwrap() {
            let user = m["userID"].as_str().unwrap();
            if user != "owner" {
                joined.insert(user.to_owned());
            }
        }
    }
    assert!(frames < 30, "{frames} frames for 60 joins");
    let r = owner
        .request("queryRoomOnlineMemberCount", json!({"roomID": "big"}))
        .await;
    assert_eq!(r["data"]["count"], 61, "{r}");
    assert_eq!(r["data"]["roomID"], "big");
    // Paging through all members with nextFlag.
    let mut seen = Vec::new();
    let mut flag = String::new();
    loop {
        let r = owner
            .request(
                "queryRoomMemberList",
                json!({"roomID": "big", "config": {"nextFlag": flag, "count": 25}}),
            )
            .await;
        assert_eq!(r["code"], 0, "{r}");
        let list = r["data"]["memberList"].as_array().unwrap();
        assert!(list.len() <= 25);
        seen.extend(
            list.iter()
                .map(|m| m["userID"].as_str().unwrap().to_owned()),
        );
        flag = r["data"]["nextFlag"].as_str().unwrap().to_owned();
        if flag.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 61);
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>().len(),
        61,
        "no member twice"
    );
    let r = owner
        .request(
            "queryRoomMemberList",
            json!({"roomID": "big", "config": {"nextFlag": "", "count": 101}}),
        )
        .await;
    assert_eq!(r["code"], 6000001);
    // Leaves are announced too.
    let mut leaver = others.pop().unwrap();
    assert_eq!(
        leaver.request("leaveRoom", json!({"roomID": "big"})).await["code"],
        0
    );
    let p = owner.push("roomMemberLeft").await;
    assert_eq!(p["data"]["memberList"][0]["userID"], "m59");
}

#[tokio::test(start_paused = true)]
async fn attributes_ownership_limits_and_events() {
    let server = TestServer::start_duplex().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let r = alice
        .request(
            "createRoom",
            json!({"roomInfo": {"roomID": "a"}, "config": {"roomAttributes": {"topic": "rust"}}}),
        )
        .await;
    assert_eq!(r["code"], 0, "{r}");
    assert_eq!(join(&mut bob, "a").await["code"], 0);
    // Bob cannot change alice's key without isForce.
    let r = bob
        .request(
            "setRoomAttributes",
            json!({"roomID": "a", "roomAttributes": {"topic": "go", "mood": "ok"}}),
        )
        .await;
    assert_eq!(r["code"], 0, "{r}");
    assert_eq!(r["data"]["errorKeys"], json!(["topic"]));
    let r = alice
        .request("queryRoomAllAttributes", json!({"roomID": "a"}))
        .await;
    assert_eq!(
        r["data"]["roomAttributes"],
        json!({"topic": "rust", "mood": "ok"})
    );
    let p = alice.push("roomAttributesUpdated").await;
    assert_eq!(p["data"]["infos"][0]["action"], 0);
    assert_eq!(
        p["data"]["infos"][0]["roomAttributes"],
        json!({"mood": "ok"})
    );
    // isForce overrides; deleting someone else's key needs it too.
    let r = bob
        .request(
            "setRoomAttributes",
            json!({"roomID": "a", "roomAttributes": {"topic": "go"}, "config": {"isForce": true}}),
        )
        .await;
    assert_eq!(r["data"]["errorKeys"], json!([]));
    let r = alice
        .request(
            "deleteRoomAttributes",
            json!({"roomID": "a", "keys": ["mood"]}),
        )
        .await;
    assert_eq!(r["data"]["errorKeys"], json!(["mood"]));
    // Batch: set and delete together, one batch event.
    let r = bob
        .request(
            "batchRoomAttributes",
            json!({"roomID": "a", "roomAttributes": {"x": "1"}, "keys": ["mood"]}),
        )
        .await;
    assert_eq!(r["code"], 0, "{r}");
    let p = alice.push("roomAttributesBatchUpdated").await;
    assert_eq!(p["data"]["infos"].as_array().unwrap().len(), 2, "{p}");
    // Size limits → 6000001 naming the limit; nothing changes.
    let r = bob
        .request(
            "setRoomAttributes",
            json!({"roomID": "a", "roomAttributes": {"k".repeat(17): "v"}}),
        )
        .await;
    assert_eq!(r["code"], 6000001, "{r}");
    let r = bob
        .request(
            "setRoomAttributes",
            json!({"roomID": "a", "roomAttributes": {"k": "v".repeat(1025)}}),
        )
        .await;
    assert_eq!(r["code"], 6000001, "{r}");
    let many: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("k{i}"), json!("v"))).collect();
    let r = bob
        .request(
            "setRoomAttributes",
            json!({"roomID": "a", "roomAttributes": many}),
        )
        .await;
    assert_eq!(r["code"], 6000001, "{r}");
    let big: serde_json::Map<String, Value> = (0..6)
        .map(|i| (format!("b{i}"), json!("v".repeat(1000))))
        .collect();
    let r = bob
        .request(
            "setRoomAttributes",
            json!({"roomID": "a", "roomAttributes": big}),
        )
        .await;
    assert_eq!(r["code"], 6000001, "{r}");
    // isDeleteAfterOwnerLeft: bob's key goes when bob leaves.
    let r = bob
        .request("setRoomAttributes", json!({"roomID": "a", "roomAttributes": {"temp": "1"}, "config": {"isDeleteAfterOwnerLeft": true}}))
        .await;
    assert_eq!(r["code"], 0);
    assert_eq!(
        bob.request("leaveRoom", json!({"roomID": "a"})).await["code"],
        0
    );
    let r = alice
        .request("queryRoomAllAttributes", json!({"roomID": "a"}))
        .await;
    let attrs = r["data"]["roomAttributes"].as_object().unwrap();
    assert!(!attrs.contains_key("temp"), "{r}");
    assert!(attrs.contains_key("x"), "{r}");
}

#[tokio::test(start_paused = true)]
async fn rooms_are_destroyed_after_the_last_member_leaves() {
    let server = TestServer::start_duplex().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    assert_eq!(create(&mut alice, "short").await["code"], 0);
    let r = alice
        .request("createRoom", json!({"roomInfo": {"roomID": "lingers"}, "config": {"roomDestroyDelayTime": 30, "roomAttributes": {"k": "v"}}}))
        .await;
    assert_eq!(r["code"], 0, "{r}");
    assert_eq!(
        alice.request("leaveRoom", json!({"roomID": "short"})).await["code"],
        0
    );
    assert_eq!(
        alice
            .request("leaveRoom", json!({"roomID": "lingers"}))
            .await["code"],
        0
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        join(&mut bob, "short").await["code"],
        6000304,
        "destroyed with no delay"
    );
    let r = join(&mut bob, "lingers").await;
    assert_eq!(r["code"], 0, "kept for its delay: {r}");
    let r = bob
        .request("queryRoomAllAttributes", json!({"roomID": "lingers"}))
        .await;
    assert_eq!(r["data"]["roomAttributes"], json!({"k": "v"}));
    // Re-created rooms continue their seqs.
    assert_eq!(create(&mut alice, "short").await["code"], 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_member_keeps_its_rooms_for_the_grace_period() {
    let server =
        TestServer::start_duplex_with(|c| c.limits.room_grace_secs = 2, Options::default()).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    assert_eq!(create(&mut alice, "g").await["code"], 0);
    assert_eq!(join(&mut bob, "g").await["code"], 0);
    assert_eq!(
        send_room(&mut alice, "g", 1, "before", 1, 1).await["code"],
        0
    );
    let seen = room_messages(&mut bob, 1).await;
    let last = seen[0]["conversationSeq"].as_u64().unwrap();
    drop(bob); // connection lost, no logout
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        send_room(&mut alice, "g", 1, "missed 1", 2, 1).await["code"],
        0
    );
    assert_eq!(
        send_room(&mut alice, "g", 1, "missed 2", 3, 1).await["code"],
        0
    );
    // Bob comes back within the grace period: rooms restored, missed messages pushed.
    let mut bob = server.connect().await;
    let r = bob
        .request(
            "login",
            json!({"appID": APP, "userID": "bob", "token": server.token("bob"), "roomSeqs": {"g": last}}),
        )
        .await;
    assert_eq!(r["code"], 0, "{r}");
    let got = room_messages(&mut bob, 2).await;
    let texts: Vec<_> = got.iter().map(|m| m["message"].as_str().unwrap()).collect();
    assert_eq!(texts, ["missed 1", "missed 2"]);
    let state = bob.push("roomStateChanged").await;
    assert_eq!(state["data"]["roomID"], "g");
    assert_eq!(state["data"]["state"], 2);
    assert_eq!(send_room(&mut alice, "g", 1, "live", 4, 1).await["code"], 0);
    assert_eq!(room_messages(&mut bob, 1).await[0]["message"], "live");
    assert!(
        alice
            .try_push("roomMemberLeft", Duration::from_millis(2500))
            .await
            .is_none(),
        "no leave within grace"
    );
    // Now bob drops for longer than the grace period: the others are told.
    drop(bob);
    let p = alice
        .try_push("roomMemberLeft", Duration::from_secs(6))
        .await
        .expect("left after grace");
    assert_eq!(p["data"]["memberList"][0]["userID"], "bob");
    let r = alice
        .request("queryRoomOnlineMemberCount", json!({"roomID": "g"}))
        .await;
    assert_eq!(r["data"]["count"], 1);
}

#[tokio::test(start_paused = true)]
async fn history_pages_peer_and_room_conversations() {
    let server = TestServer::start_duplex().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    for i in 1..=5 {
        alice.send_text("bob", &format!("p{i}"), i).await;
    }
    assert_eq!(create(&mut alice, "h").await["code"], 0);
    assert_eq!(join(&mut bob, "h").await["code"], 0);
    for i in 1..=5 {
        send_room(&mut bob, "h", 1, &format!("r{i}"), i, 1).await;
    }
    let page = |kind: u8, id: &str, next: Option<u64>, count: u32, reverse: bool| {
        let mut config = json!({"count": count, "reverse": reverse});
        if let Some(n) = next {
            config["nextMessage"] = json!({"conversationSeq": n});
        }
        json!({"conversationID": id, "conversationType": kind, "config": config})
    };
    let texts = |r: &Value| -> Vec<String> {
        r["data"]["messageList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["message"].as_str().unwrap().to_owned())
            .collect()
    };
    let r = bob
        .request("queryHistoryMessage", page(0, "alice", None, 2, false))
        .await;
    assert_eq!(r["code"], 0, "{r}");
    assert_eq!(texts(&r), ["p1", "p2"]);
    assert_eq!(r["data"]["messageList"][0]["conversationID"], "alice");
    let r = bob
        .request("queryHistoryMessage", page(0, "alice", Some(2), 2, false))
        .await;
    assert_eq!(texts(&r), ["p3", "p4"]);
    let r = alice
        .request("queryHistoryMessage", page(0, "bob", None, 3, true))
        .await;
    assert_eq!(texts(&r), ["p5", "p4", "p3"]);
    let r = alice
        .request("queryHistoryMessage", page(1, "h", Some(3), 10, true))
        .await;
    assert_eq!(texts(&r), ["r2", "r1"]);
    let mut carol = server.login("carol").await;
    let r = carol
        .request("queryHistoryMessage", page(1, "h", None, 10, false))
        .await;
    assert_eq!(r["code"], 6000205, "{r}");
    let r = carol
        .request("queryHistoryMessage", page(0, "alice", None, 10, false))
        .await;
    assert_eq!(
        texts(&r),
        Vec::<String>::new(),
        "carol has no conversation with alice"
    );
    let r = carol
        .request("queryHistoryMessage", page(0, "alice", None, 0, false))
        .await;
    assert_eq!(r["code"], 6000001);
}

#[tokio::test(start_paused = true)]
async fn apps_with_identical_room_ids_stay_apart() {
    let server = TestServer::start_duplex().await;
    let mut a = server.login("alice").await;
    let mut b = server.connect().await;
    assert_eq!(
        b.login(
            APP2,
            "alice",
            &server.token_for(APP2, SECRET2, "alice", 600),
            None
        )
        .await["code"],
        0
    );
    assert_eq!(create(&mut a, "same").await["code"], 0);
    assert_eq!(
        create(&mut b, "same").await["code"],
        0,
        "the other app has no room 'same'"
    );
    let mut a2 = server.login("bob").await;
    assert_eq!(join(&mut a2, "same").await["code"], 0);
    assert_eq!(
        send_room(&mut a2, "same", 1, "app one only", 1, 1).await["code"],
        0
    );
    assert_eq!(room_messages(&mut a, 1).await[0]["message"], "app one only");
    assert!(
        b.try_push("receiveRoomMessage", Duration::from_millis(400))
            .await
            .is_none()
    );
    let r = b
        .request("queryRoomOnlineMemberCount", json!({"roomID": "same"}))
        .await;
    assert_eq!(r["data"]["count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_members_receive_every_high_message() {
    const MEMBERS: usize = 1000;
    const MESSAGES: usize = 20;
    let server = TestServer::start_with(
        |c| {
            c.limits.user_send_rate = 10_000;
            c.limits.user_send_burst = 10_000;
        },
        Options::default(),
    )
    .await;
    let mut sender = server.login("sender").await;
    assert_eq!(create(&mut sender, "stage").await["code"], 0);
    let url = server.url();
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(MEMBERS);
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    for i in 0..MEMBERS {
        let (url, ready_tx) = (url.clone(), ready_tx.clone());
        tasks.push(tokio::spawn(async move {
            let user = format!("u{i}");
            let mut c = Client::connect(&url).await;
            assert_eq!(c.login(APP, &user, &token(&user), None).await["code"], 0);
            assert_eq!(join(&mut c, "stage").await["code"], 0);
            ready_tx.send(()).await.unwrap();
            let mut got = Vec::new();
            while got.len() < MESSAGES {
                let p = c.push("receiveRoomMessage").await;
                for m in p["data"]["messageList"].as_array().unwrap() {
                    got.push(m["localMessageID"].as_u64().unwrap());
                }
            }
            got
        }));
    }
    for _ in 0..MEMBERS {
        ready_rx.recv().await.unwrap();
    }
    go.notify_waiters();
    let cmd = base64::engine::general_purpose::STANDARD.encode(b"high");
    for i in 0..MESSAGES as u64 {
        let (kind, body) = if i % 2 == 0 {
            (2, cmd.as_str())
        } else {
            (1, "stored")
        };
        let r = send_room(&mut sender, "stage", kind, body, i + 1, 3).await;
        assert_eq!(r["code"], 0, "{r}");
    }
    for t in tasks {
        let got = t.await.unwrap();
        assert_eq!(
            got,
            (1..=MESSAGES as u64).collect::<Vec<_>>(),
            "every member, every message, in order"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn overload_sheds_low_priority_but_disconnects_for_high() {
    let server = TestServer::start_duplex_with(
        |c| {
            c.limits.outbound_queue_frames = 32;
            c.limits.outbound_queue_bytes = 64 * 1024;
            c.limits.user_send_rate = 100_000;
            c.limits.user_send_burst = 100_000;
            c.limits.app_send_rate = 100_000;
        },
        Options::default(),
    )
    .await;
    let mut alice = server.login("alice").await;
    assert_eq!(create(&mut alice, "flood").await["code"], 0);
    // Bob joins and then stops reading.
    let mut bob = server.login("bob").await;
    assert_eq!(join(&mut bob, "flood").await["code"], 0);
    let body = base64::engine::general_purpose::STANDARD.encode([1u8; 4000]);
    for i in 0..3000u64 {
        let r = send_room(&mut alice, "flood", 2, &body, i + 1, 1).await;
        assert_eq!(r["code"], 0, "{r}");
    }
    for i in 0..300u64 {
        assert_eq!(
            send_room(&mut alice, "flood", 20, "barrage", 10_000 + i, 1).await["code"],
            0
        );
    }
    assert_eq!(
        server.metric("confab_slow_disconnects_total").await,
        0,
        "Low and Barrage pushes are shed, not a reason to disconnect"
    );
    // High is never shed: the same flood at High priority disconnects the reader.
    let mut sent = 0;
    for i in 0..3000u64 {
        let r = send_room(&mut alice, "flood", 2, &body, 20_000 + i, 3).await;
        assert_eq!(r["code"], 0, "{r}");
        sent += 1;
        if i % 100 == 99 && server.metric("confab_slow_disconnects_total").await > 0 {
            break;
        }
    }
    assert_eq!(
        server.metric("confab_slow_disconnects_total").await,
        1,
        "after {sent} High sends"
    );
    drop(bob);
    assert!(alice.alive().await);
}
