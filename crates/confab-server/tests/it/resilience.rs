//! Limits on connections, slow consumers, oversize frames, restarts.
//!
//! What concerns the socket, the WebSocket framing or HTTP runs over TCP; slow
//! consumers, parked writers and restarts over in-memory pipes with paused time.

use std::time::Duration;

use base64::Engine as _;
use confab_server::Options;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

#[tokio::test]
async fn oversize_frames_close_the_connection() {
    let server = TestServer::start().await;
    let mut c = server.login("alice").await;
    let huge = format!(
        r#"{{"v":1,"id":5,"op":"sendPeerMessage","data":{{"toUserID":"bob","type":1,"localMessageID":1,"message":"{}"}}}}"#,
        "x".repeat(200 * 1024)
    );
    c.send_raw(&huge).await;
    let closed = c.closed(WAIT).await;
    assert_eq!(
        closed.reason.as_deref(),
        Some("frameTooLarge"),
        "{closed:?}"
    );
    assert_eq!(closed.code, Some(4006));
    // The server is fine.
    let mut d = server.login("bob").await;
    assert!(d.alive().await);
}

#[tokio::test]
async fn binary_frames_are_a_protocol_error() {
    let server = TestServer::start().await;
    let mut c = server.login("alice").await;
    c.send_message(Message::binary(vec![1, 2, 3])).await;
    let closed = c.closed(WAIT).await;
    assert_eq!(closed.reason.as_deref(), Some("protocolError"));
    assert_eq!(closed.code, Some(4007));
}

#[tokio::test]
async fn a_clients_ping_is_answered_and_its_close_frame_echoed() {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let server = TestServer::start().await;
    let mut c = server.login("alice").await;
    c.send_message(Message::Ping(bytes::Bytes::from_static(b"are you there")))
        .await;
    // (After the pushes that follow a login.)
    let pong = loop {
        match c.next_frame(WAIT).await {
            Some(Message::Text(_)) => {}
            other => break other,
        }
    };
    assert_eq!(
        pong,
        Some(Message::Pong(bytes::Bytes::from_static(b"are you there")))
    );
    assert!(c.alive().await);
    c.send_message(Message::Close(Some(CloseFrame {
        code: 4321.into(),
        reason: "leaving".into(),
    })))
    .await;
    // The server answers with the same code, then ends the connection.
    let closed = c.closed(WAIT).await;
    assert_eq!(
        closed,
        Closed {
            reason: None,
            code: Some(4321)
        }
    );
}

#[tokio::test]
async fn frames_that_break_the_websocket_protocol_end_the_session_saying_why() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    for (frame, problem) in [
        // Not UTF-8, in a text frame.
        (
            Frame::message(vec![b'{', 0xff, b'}'], OpCode::Data(Data::Text), true),
            "UTF-8",
        ),
        // A continuation with nothing to continue.
        (
            Frame::message(b"x".to_vec(), OpCode::Data(Data::Continue), true),
            "continuation",
        ),
    ] {
        let server = TestServer::start().await;
        let mut c = server.login("alice").await;
        c.send_message(Message::Frame(frame)).await;
        let disconnect = c.push("disconnect").await;
        assert_eq!(
            disconnect["data"]["reason"], "protocolError",
            "{disconnect}"
        );
        let message = disconnect["data"]["message"].as_str().unwrap();
        assert!(message.contains(problem), "{problem}: {message}");
        assert_eq!(c.closed(WAIT).await.code, Some(4007));
        // The server is fine.
        assert!(server.login("bob").await.alive().await);
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_consumer_is_disconnected_not_buffered() {
    let server = TestServer::start_duplex_with(
        |c| {
            c.limits.outbound_queue_frames = 16;
            c.limits.outbound_queue_bytes = 64 * 1024;
            c.limits.user_send_rate = 100_000;
            c.limits.user_send_burst = 100_000;
            c.limits.app_send_rate = 100_000;
        },
        Options::default(),
    )
    .await;
    let mut alice = server.login("alice").await;
    // Bob logs in and then stops reading.
    let mut bob = server.login("bob").await;
    let body = base64::engine::general_purpose::STANDARD.encode([7u8; 5000]);
    let mut sent = 0;
    for i in 0..4000u64 {
        let r = alice
            .request(
                "sendPeerMessage",
                json!({"toUserID":"bob","type":2,"message":body,"localMessageID":i,"priority":3}),
            )
            .await;
        assert_eq!(r["code"], 0, "{r}");
        sent += 1;
        if i % 200 == 199 && server.metric("confab_slow_disconnects_total").await > 0 {
            break;
        }
    }
    assert_eq!(
        server.metric("confab_slow_disconnects_total").await,
        1,
        "after {sent} sends"
    );
    assert!(sent < 4000);
    // Bob's connection ends (after whatever the socket buffers held).
    let mut received = 0;
    while bob
        .try_push("receivePeerMessage", Duration::from_secs(3))
        .await
        .is_some()
    {
        received += 1;
    }
    assert!(received < sent, "received {received} of {sent}");
    assert!(alice.alive().await, "the sender is unaffected");
}

#[tokio::test]
async fn an_idle_connection_keeps_one_task_and_wakes_for_a_message() {
    let server = TestServer::start().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let settle = |want: usize| {
        let metrics = metrics.clone();
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let alive = metrics.num_alive_tasks();
                if alive == want || tokio::time::Instant::now() >= deadline {
                    return alive;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    // The server's own tasks and one idle logged-in connection's, once its
    // writer could park (a writer stays a second after its last write).
    let mut bob = server.login("bob").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let base = steady_task_count(&metrics).await;
    let mut idle = Vec::new();
    for i in 0..10 {
        idle.push(server.login(&format!("idle{i}")).await);
    }
    // Each idle connection keeps its session task only: its writer task ended
    // once the login reply was written.
    assert_eq!(
        settle(base + 10).await,
        base + 10,
        "tasks per idle connection"
    );
    // A message to an idle connection starts its writer again.
    let r = idle[3].send_text("bob", "wake up", 1).await;
    assert_eq!(r["code"], 0, "{r}");
    let push = bob.push("receivePeerMessage").await;
    assert_eq!(push["data"]["messageList"][0]["message"], "wake up");
    assert_eq!(
        settle(base + 10).await,
        base + 10,
        "tasks after the message"
    );
    for c in &mut idle {
        assert!(c.alive().await);
    }
}

/// The runtime's task count once it held still for 300 ms.
async fn steady_task_count(metrics: &tokio::runtime::RuntimeMetrics) -> usize {
    let mut last = metrics.num_alive_tasks();
    let mut same_since = tokio::time::Instant::now();
    let deadline = same_since + WAIT;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = metrics.num_alive_tasks();
        if now != last {
            last = now;
            same_since = tokio::time::Instant::now();
        } else if same_since.elapsed() >= Duration::from_millis(300) {
            break;
        }
    }
    last
}

#[tokio::test(start_paused = true)]
async fn connections_whose_writers_parked_still_get_their_disconnect() {
    let server = TestServer::start_duplex().await;
    let mut first = server.login("alice").await;
    let mut idle = server.login("carol").await;
    idle.push("syncComplete").await;
    first.push("syncComplete").await;
    // Past the writers' linger: both connections' writers have parked.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A kick reaches a parked writer...
    let mut second = server.login("alice").await;
    let closed = first.closed(WAIT).await;
    assert_eq!(closed.reason.as_deref(), Some("kickedOut"), "{closed:?}");
    assert_eq!(closed.code, Some(4001));
    assert!(second.alive().await);
    // ...and so does a shutdown.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopping = tokio::spawn(server.stop());
    for c in [&mut idle, &mut second] {
        let closed = c.closed(WAIT).await;
        assert_eq!(
            closed.reason.as_deref(),
            Some("serverShutdown"),
            "{closed:?}"
        );
        assert_eq!(closed.code, Some(4008));
    }
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("the server stops")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn stored_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_duplex_in(dir.path(), |_| {}, Options::default()).await;
    let mut alice = server.login("alice").await;
    for i in 1..=20u64 {
        let r = alice.send_text("bob", &format!("m{i}"), i).await;
        assert_eq!(r["code"], 0);
    }
    drop(alice);
    server.stop().await;

    let server = TestServer::start_duplex_in(dir.path(), |_| {}, Options::default()).await;
    let mut bob = server.login("bob").await;
    let got = bob.peer_messages(20).await;
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m["message"], format!("m{}", i + 1));
        assert_eq!(m["inboxSeq"], i as u64 + 1);
    }
    // Seqs continue after the restart.
    let mut alice = server.login("alice").await;
    let r = alice.send_text("bob", "after", 21).await;
    assert_eq!(r["data"]["conversationSeq"], 21);
    // A retry of a pre-restart message is still recognized.
    let r = alice.send_text("bob", "m3", 3).await;
    assert_eq!(r["data"]["conversationSeq"], 3);
}

#[tokio::test]
async fn shutdown_tells_clients_to_reconnect() {
    let server = TestServer::start().await;
    let mut c = server.login("alice").await;
    c.push("syncComplete").await;
    let stopping = tokio::spawn(server.stop());
    let closed = c.closed(WAIT).await;
    assert_eq!(closed.reason.as_deref(), Some("serverShutdown"));
    assert_eq!(closed.code, Some(4008));
    stopping.await.unwrap();
}

#[tokio::test]
async fn connection_limit_refuses_with_a_reason() {
    let server = TestServer::start_with(|c| c.limits.max_connections = 2, Options::default()).await;
    let _a = server.connect().await;
    let _b = server.connect().await;
    let err = tokio_tungstenite::connect_async(server.url())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
}
