//! Peer messages: delivery, offline inbox, order, idempotency, limits, isolation.

use std::time::Duration;

use base64::Engine as _;
use confab_server::Options;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn two_clients_exchange_peer_messages_one_offline_at_first() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    alice.push("syncComplete").await;
    // Bob has never logged in.
    let mut sent = Vec::new();
    for i in 1..=5u64 {
        let r = alice.send_text("bob", &format!("msg {i}"), 100 + i).await;
        assert_eq!(r["code"], 0, "{r}");
        assert_eq!(r["data"]["conversationSeq"], i);
        assert_eq!(r["data"]["localMessageID"], 100 + i);
        sent.push(r["data"]["messageID"].as_u64().unwrap());
    }
    let mut bob = server.connect().await;
    let r = bob.login(APP, "bob", &token("bob"), None).await;
    assert_eq!(r["code"], 0);
    assert_eq!(r["data"]["inboxSeq"], 5);
    let got = bob.peer_messages(5).await;
    for (i, m) in got.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(m["message"], format!("msg {n}"));
        assert_eq!(m["senderUserID"], "alice");
        assert_eq!(m["conversationID"], "alice");
        assert_eq!(m["conversationType"], 0);
        assert_eq!(m["conversationSeq"], n);
        assert_eq!(m["inboxSeq"], n);
        assert_eq!(m["messageID"], sent[i]);
        assert_eq!(m["type"], 1);
    }
    assert_eq!(bob.push("syncComplete").await["data"]["inboxSeq"], 5);

    // Now both online: replies go live, and the conversation seq is shared.
    let r = bob.send_text("alice", "hello back", 1).await;
    assert_eq!(r["data"]["conversationSeq"], 6);
    let m = alice.peer_messages(1).await;
    assert_eq!(m[0]["message"], "hello back");
    assert_eq!(m[0]["conversationSeq"], 6);
    assert_eq!(m[0]["inboxSeq"], 1);
}

#[tokio::test]
async fn reconnect_gets_exactly_what_was_missed() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    bob.push("syncComplete").await;
    for i in 1..=3 {
        alice.send_text("bob", &format!("a{i}"), i).await;
    }
    let got = bob.peer_messages(3).await;
    let last = got[2]["inboxSeq"].as_u64().unwrap();
    assert_eq!(last, 3);
    drop(bob);
    for i in 4..=6 {
        assert_eq!(alice.send_text("bob", &format!("a{i}"), i).await["code"], 0);
    }
    let mut bob = server.connect().await;
    assert_eq!(
        bob.login(APP, "bob", &token("bob"), Some(last)).await["code"],
        0
    );
    let got = bob.peer_messages(3).await;
    let texts: Vec<_> = got.iter().map(|m| m["message"].as_str().unwrap()).collect();
    assert_eq!(texts, ["a4", "a5", "a6"]);
    assert_eq!(bob.push("syncComplete").await["data"]["inboxSeq"], 6);
    assert!(
        bob.try_push("receivePeerMessage", Duration::from_millis(300))
            .await
            .is_none()
    );

    // Acknowledge, then log in without lastInboxSeq: nothing again.
    assert_eq!(
        bob.request("ackInbox", json!({"inboxSeq": 6})).await["code"],
        0
    );
    let r = bob.request("ackInbox", json!({"inboxSeq": 99})).await;
    assert_eq!(r["code"], 6000001, "{r}");
    drop(bob);
    let mut bob = server.connect().await;
    assert_eq!(bob.login(APP, "bob", &token("bob"), None).await["code"], 0);
    assert_eq!(bob.push("syncComplete").await["data"]["inboxSeq"], 6);
    assert!(
        bob.try_push("receivePeerMessage", Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn retried_sends_are_stored_and_delivered_once() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    bob.push("syncComplete").await;
    let first = alice.send_text("bob", "once", 7).await;
    let again = alice.send_text("bob", "once", 7).await;
    assert_eq!(first["code"], 0);
    assert_eq!(
        first["data"], again["data"],
        "a retry returns the first result"
    );
    let other = alice.send_text("bob", "twice", 8).await;
    assert_eq!(other["data"]["conversationSeq"], 2);
    let got = bob.peer_messages(2).await;
    assert_eq!(got[0]["message"], "once");
    assert_eq!(got[1]["message"], "twice");
    assert!(
        bob.try_push("receivePeerMessage", Duration::from_millis(300))
            .await
            .is_none()
    );

    // The same for Command messages.
    let cmd = base64::engine::general_purpose::STANDARD.encode([1u8, 2, 3]);
    let req = json!({"toUserID":"bob","type":2,"message":cmd,"localMessageID":9,"priority":3});
    let a = alice.request("sendPeerMessage", req.clone()).await;
    let b = alice.request("sendPeerMessage", req).await;
    assert_eq!(a["code"], 0, "{a}");
    assert_eq!(a["data"], b["data"]);
    assert_eq!(a["data"]["conversationSeq"], 0);
    let got = bob.peer_messages(1).await;
    assert_eq!(got[0]["type"], 2);
    assert_eq!(got[0]["message"], cmd);
    assert!(got[0].get("inboxSeq").is_none());
    assert!(
        bob.try_push("receivePeerMessage", Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn commands_are_live_only() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let cmd = base64::engine::general_purpose::STANDARD.encode(b"typing");
    let r = alice
        .request(
            "sendPeerMessage",
            json!({"toUserID":"bob","type":2,"message":cmd,"localMessageID":1}),
        )
        .await;
    assert_eq!(r["code"], 0, "{r}");
    let mut bob = server.connect().await;
    assert_eq!(
        bob.login(APP, "bob", &token("bob"), None).await["data"]["inboxSeq"],
        0
    );
    assert_eq!(bob.push("syncComplete").await["data"]["inboxSeq"], 0);
    assert!(
        bob.try_push("receivePeerMessage", Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn bad_messages_get_6000001_naming_the_problem() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let cases = [
        (
            json!({"toUserID":"bo b","type":1,"message":"x","localMessageID":1}),
            "toUserID",
        ),
        (
            json!({"toUserID":"bob","type":1,"message":"x".repeat(32 * 1024 + 1),"localMessageID":1}),
            "32768",
        ),
        (
            json!({"toUserID":"bob","type":2,"message":"%%%","localMessageID":1}),
            "base64",
        ),
        (
            json!({"toUserID":"bob","type":2,"message":base64::engine::general_purpose::STANDARD.encode([0u8; 5121]),"localMessageID":1}),
            "5120",
        ),
        (
            json!({"toUserID":"bob","type":20,"message":"x","localMessageID":1}),
            "rooms",
        ),
        (
            json!({"toUserID":"bob","type":11,"message":"x","localMessageID":1}),
            "Image",
        ),
        (
            json!({"toUserID":"bob","type":1,"message":"x"}),
            "localMessageID",
        ),
        (
            json!({"toUserID":"bob","type":1,"message":"x","localMessageID":1,"priority":7}),
            "priority",
        ),
    ];
    for (data, needle) in cases {
        let r = alice.request("sendPeerMessage", data.clone()).await;
        assert_eq!(r["code"], 6000001, "{data}: {r}");
        let msg = r["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    }
    // A maximal Text is fine.
    let r = alice.send_text("bob", &"y".repeat(32 * 1024), 2).await;
    assert_eq!(r["code"], 0, "{r}");
}

#[tokio::test]
async fn server_rate_limit_is_6000003() {
    let server = TestServer::start_with(
        |c| {
            c.limits.user_send_rate = 2;
            c.limits.user_send_burst = 5;
        },
        Options::default(),
    )
    .await;
    let mut alice = server.login("alice").await;
    let mut ok = 0;
    let mut limited = 0;
    for i in 0..20 {
        let r = alice.send_text("bob", "spam", i).await;
        match r["code"].as_u64().unwrap() {
            0 => ok += 1,
            6000003 => {
                limited += 1;
                assert!(r["message"].as_str().unwrap().contains("rate limit"), "{r}");
            }
            other => panic!("unexpected code {other}: {r}"),
        }
    }
    assert!(limited > 0, "no request was rate limited");
    assert!((5..=8).contains(&ok), "{ok} sends passed a burst of 5");
    // Another user has their own bucket.
    let mut carol = server.login("carol").await;
    assert_eq!(carol.send_text("bob", "hi", 1).await["code"], 0);
    assert!(server.metric("confab_rate_limited_total").await >= limited);
}

#[tokio::test]
async fn apps_are_isolated() {
    let server = TestServer::start().await;
    let mut alice_a = server.login("alice").await;
    let mut bob_b = server.connect().await;
    let r = bob_b
        .login(APP2, "bob", &token_for(APP2, SECRET2, "bob", 600), None)
        .await;
    assert_eq!(r["code"], 0, "{r}");
    bob_b.push("syncComplete").await;
    // An app-1 token does not open app 2.
    let mut x = server.connect().await;
    assert_eq!(
        x.login(APP2, "alice", &token("alice"), None).await["code"],
        6000103
    );

    assert_eq!(
        alice_a.send_text("bob", "for bob of app 1", 1).await["code"],
        0
    );
    assert!(
        bob_b
            .try_push("receivePeerMessage", Duration::from_millis(400))
            .await
            .is_none()
    );
    let mut alice_b = server.connect().await;
    alice_b
        .login(APP2, "alice", &token_for(APP2, SECRET2, "alice", 600), None)
        .await;
    let r = alice_b.send_text("bob", "for bob of app 2", 1).await;
    assert_eq!(r["data"]["conversationSeq"], 1, "seqs are per app: {r}");
    let got = bob_b.peer_messages(1).await;
    assert_eq!(got[0]["message"], "for bob of app 2");

    let mut bob_a = server.connect().await;
    bob_a.login(APP, "bob", &token("bob"), None).await;
    let got = bob_a.peer_messages(1).await;
    assert_eq!(got[0]["message"], "for bob of app 1");
    assert_eq!(bob_a.push("syncComplete").await["data"]["inboxSeq"], 1);
}

#[tokio::test]
async fn a_failing_store_answers_6000202_and_loses_nothing_acked() {
    let dir = tempfile::tempdir().unwrap();
    let store = flaky_store(dir.path());
    let options = Options {
        store: Some(store.clone()),
        ..Options::default()
    };
    let server = TestServer::start_in(dir.path(), |_| {}, options).await;
    let mut alice = server.login("alice").await;
    assert_eq!(alice.send_text("bob", "kept", 1).await["code"], 0);
    store.set_failing(true);
    let r = alice.send_text("bob", "lost?", 2).await;
    assert_eq!(r["code"], 6000202, "{r}");
    store.set_failing(false);
    let r = alice.send_text("bob", "lost?", 2).await;
    assert_eq!(r["code"], 0, "a retry after the failure succeeds: {r}");
    let mut bob = server.login("bob").await;
    let got = bob.peer_messages(2).await;
    assert_eq!(got[0]["message"], "kept");
    assert_eq!(got[1]["message"], "lost?");
}

#[tokio::test]
async fn concurrent_senders_reach_a_receiver_in_inbox_order() {
    let server = TestServer::start().await;
    let mut bob = server.login("bob").await;
    bob.push("syncComplete").await;
    let mut tasks = Vec::new();
    for s in 0..4 {
        let url = server.url();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&url).await;
            let user = format!("sender{s}");
            assert_eq!(c.login(APP, &user, &token(&user), None).await["code"], 0);
            for i in 0..15 {
                let r = c.send_text("bob", &format!("{s}:{i}"), i).await;
                assert_eq!(r["code"], 0, "{r}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = bob.peer_messages(60).await;
    let seqs: Vec<u64> = got
        .iter()
        .map(|m| m["inboxSeq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=60).collect::<Vec<_>>(),
        "inbox order, no gaps, no duplicates"
    );
    for s in 0..4 {
        let mine: Vec<u64> = got
            .iter()
            .filter(|m| m["senderUserID"] == format!("sender{s}"))
            .map(|m| m["conversationSeq"].as_u64().unwrap())
            .collect();
        assert_eq!(mine, (1..=15).collect::<Vec<_>>(), "per-sender order");
    }
}

#[tokio::test]
async fn a_backlog_larger_than_the_outbound_queue_is_delivered() {
    let server = server_without_user_send_limit().await;
    let mut alice = server.login("alice").await;
    let body = "b".repeat(30 * 1024);
    for i in 1..=60u64 {
        assert_eq!(alice.send_text("bob", &body, i).await["code"], 0);
    }
    // 60 × 30 KiB is well over the 1 MiB outbound queue: the catch-up must be paced,
    // not a reason to disconnect.
    let mut bob = server.login("bob").await;
    let got = bob.peer_messages(60).await;
    let seqs: Vec<u64> = got
        .iter()
        .map(|m| m["inboxSeq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
    assert_eq!(bob.push("syncComplete").await["data"]["inboxSeq"], 60);
    assert_eq!(server.metric("confab_slow_disconnects_total").await, 0);
}

#[tokio::test]
async fn pipelined_sends_are_answered_and_delivered_in_request_order() {
    let server = server_without_user_send_limit().await;
    let mut bob = server.login("bob").await;
    let mut alice = server.login("alice").await;
    // 200 stored sends without waiting for any reply, then a ping.
    let mut ids = Vec::new();
    for i in 0..200u64 {
        ids.push(alice.send_text_nowait("bob", &format!("m{i}"), i + 1).await);
    }
    let ping = alice.send("ping", json!({})).await;
    for (i, id) in ids.iter().enumerate() {
        let r = alice.next_reply().await;
        assert_eq!(r["id"], *id, "replies come in request order: {r}");
        assert_eq!(r["code"], 0, "{r}");
        assert_eq!(r["data"]["conversationSeq"], i as u64 + 1, "{r}");
    }
    let r = alice.next_reply().await;
    assert_eq!(
        r["id"], ping,
        "a later request is answered after the sends: {r}"
    );
    let got = bob.peer_messages(200).await;
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m["message"], format!("m{i}"), "{m}");
        assert_eq!(m["inboxSeq"], i as u64 + 1, "{m}");
    }
}

#[tokio::test]
async fn a_refused_send_is_answered_after_the_sends_before_it() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut ids = Vec::new();
    for i in 0..60u64 {
        ids.push(alice.send_text_nowait("bob", "hi", i + 1).await);
    }
    let mut refused = 0;
    for id in ids {
        let r = alice.next_reply().await;
        assert_eq!(r["id"], id, "replies come in request order: {r}");
        if r["code"] == 6000003 {
            refused += 1;
        }
    }
    assert!(
        refused > 0,
        "the default burst (40) refuses some of 60 sends"
    );
}

#[tokio::test]
async fn a_sender_that_leaves_mid_pipeline_still_delivers_what_was_stored() {
    let server = server_without_user_send_limit().await;
    let mut bob = server.login("bob").await;
    let mut alice = server.login("alice").await;
    for i in 0..80u64 {
        alice.send_text_nowait("bob", &format!("m{i}"), i + 1).await;
    }
    // Gone without reading a single reply.
    drop(alice);
    assert_stored_sends_were_delivered(&mut bob, "receivePeerMessage", "alice", 0).await;
}
