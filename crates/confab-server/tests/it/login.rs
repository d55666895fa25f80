//! Login, the token's lifetime, single session, and what comes before login.
//!
//! Over in-memory pipes with paused time (heartbeats, deadlines and token
//! lifetimes cost no real time), except a test that asks `/readyz` over HTTP
//! and the race of two simultaneous logins (see there).

use std::time::Duration;

use confab_server::Options;
use serde_json::json;

use crate::harness::*;

#[tokio::test(start_paused = true)]
async fn every_login_code_in_its_real_situation() {
    let server = TestServer::start_duplex().await;
    let mut c = server.connect().await;

    // Before login, anything else is 6000121.
    let r = c
        .request(
            "sendPeerMessage",
            json!({"toUserID":"bob","type":1,"message":"x","localMessageID":1}),
        )
        .await;
    assert_eq!(r["code"], 6000121, "{r}");
    assert!(r["message"].as_str().unwrap().contains("login"), "{r}");

    // Unknown AppID: 6000004.
    let r = c.login(999, "alice", &server.token("alice"), None).await;
    assert_eq!(r["code"], 6000004, "{r}");
    // Version: 6000107.
    let r = c.login(APP, "alice", "03AAAA", None).await;
    assert_eq!(r["code"], 6000107, "{r}");
    // Undecodable: 6000103.
    let r = c.login(APP, "alice", "04!!!", None).await;
    assert_eq!(r["code"], 6000103, "{r}");
    // Signed with another app's secret: 6000103.
    let r = c
        .login(
            APP,
            "alice",
            &server.token_for(APP, SECRET2, "alice", 60),
            None,
        )
        .await;
    assert_eq!(r["code"], 6000103, "{r}");
    // Someone else's token: 6000101.
    let r = c.login(APP, "alice", &server.token("bob"), None).await;
    assert_eq!(r["code"], 6000101, "{r}");
    // Expired: 6000106.
    let r = c
        .login(APP, "alice", &server.token_expiring_in("alice", -5), None)
        .await;
    assert_eq!(r["code"], 6000106, "{r}");
    // A valid token for an invalid userID: 6000001, naming the field.
    let bad = "has space";
    let r = c.login(APP, bad, &server.token(bad), None).await;
    assert_eq!(r["code"], 6000001, "{r}");
    assert!(r["message"].as_str().unwrap().contains("userID"), "{r}");
    // Name too long: 6000001.
    let r = c
        .request("login", json!({"appID": APP, "userID": "alice", "userName": "x".repeat(65), "token": server.token("alice")}))
        .await;
    assert_eq!(r["code"], 6000001, "{r}");
    assert!(r["message"].as_str().unwrap().contains("userName"), "{r}");

    // Success, then a second login on the same connection: 6000111.
    let r = c.login(APP, "alice", &server.token("alice"), None).await;
    assert_eq!(r["code"], 0, "{r}");
    assert_eq!(r["data"]["userID"], "alice");
    assert_eq!(r["data"]["inboxSeq"], 0);
    assert!(r["data"]["tokenExpire"].as_i64().unwrap() > server.unix_now());
    c.push("syncComplete").await;
    let r = c.login(APP, "alice", &server.token("alice"), None).await;
    assert_eq!(r["code"], 6000111, "{r}");
    assert!(c.alive().await);
}

#[tokio::test(start_paused = true)]
async fn malformed_frames_get_6000001_to_the_right_id() {
    let server = TestServer::start_duplex().await;
    let mut c = server.connect().await;
    c.send_raw(r#"{"v":1,"id":77,"op":"teleport"}"#).await;
    let r = c.reply_to(77).await;
    assert_eq!(r["code"], 6000001);
    assert!(r["message"].as_str().unwrap().contains("teleport"), "{r}");
    c.send_raw(r#"{"v":9,"id":78,"op":"ping"}"#).await;
    let r = c.reply_to(78).await;
    assert_eq!(r["code"], 6000001);
    assert!(r["message"].as_str().unwrap().contains("version"), "{r}");
    c.send_raw("this is not json").await;
    let r = c.reply_to(0).await;
    assert_eq!(r["code"], 6000001);
    assert!(c.alive().await, "bad input must not end the connection");
}

#[tokio::test]
async fn internal_failure_at_login_is_6000102() {
    let dir = tempfile::tempdir().unwrap();
    let store = flaky_store(dir.path());
    let options = Options {
        store: Some(store.clone()),
        ..Options::default()
    };
    let server = TestServer::start_in(dir.path(), |_| {}, options).await;
    store.set_failing(true);
    let mut c = server.connect().await;
    let r = c.login(APP, "alice", &token("alice"), None).await;
    assert_eq!(r["code"], 6000102, "{r}");
    // Readiness reports the store.
    let (status, body) = http_get(server.addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store"), "{body}");
    store.set_failing(false);
    let r = c.login(APP, "alice", &token("alice"), None).await;
    assert_eq!(r["code"], 0, "{r}");
    assert_eq!(http_get(server.addr, "/readyz").await.0, 200);
}

#[tokio::test(start_paused = true)]
async fn a_second_login_kicks_the_first() {
    let server = TestServer::start_duplex().await;
    let mut first = server.login("alice").await;
    let mut second = server.login("alice").await;
    let closed = first.closed(WAIT).await;
    assert_eq!(closed.reason.as_deref(), Some("kickedOut"));
    assert_eq!(closed.code, Some(4001));
    assert!(second.alive().await);
    // Another user is unaffected, and messages reach the new session.
    let mut bob = server.login("bob").await;
    assert_eq!(bob.send_text("alice", "hi", 1).await["code"], 0);
    let m = second.peer_messages(1).await;
    assert_eq!(m[0]["message"], "hi");
}

#[tokio::test(start_paused = true)]
async fn token_will_expire_then_expired_close() {
    let server = TestServer::start_duplex().await;
    let mut c = server.connect().await;
    let r = c
        .login(APP, "alice", &server.token_expiring_in("alice", 2), None)
        .await;
    assert_eq!(r["code"], 0, "{r}");
    let warn = c.push("tokenWillExpire").await;
    let second = warn["data"]["second"].as_u64().unwrap();
    assert!(second <= 2, "{warn}");
    let closed = c.closed(Duration::from_secs(5)).await;
    assert_eq!(closed.reason.as_deref(), Some("tokenExpired"));
    assert_eq!(closed.code, Some(4002));
}

#[tokio::test(start_paused = true)]
async fn renew_token_extends_the_session() {
    let server = TestServer::start_duplex().await;
    let mut c = server.connect().await;
    let r = c
        .login(APP, "alice", &server.token_expiring_in("alice", 2), None)
        .await;
    assert_eq!(r["code"], 0, "{r}");
    c.push("tokenWillExpire").await;
    // A token for someone else is refused with the login code.
    let r = c
        .request("renewToken", json!({"token": server.token("bob")}))
        .await;
    assert_eq!(r["code"], 6000101, "{r}");
    let fresh = server.token("alice");
    let r = c.request("renewToken", json!({"token": fresh})).await;
    assert_eq!(r["code"], 0, "{r}");
    assert_eq!(r["data"]["token"], fresh);
    assert!(r["data"]["tokenExpire"].as_i64().unwrap() > server.unix_now() + 3000);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        c.alive().await,
        "the renewed session must outlive the old token"
    );
}

#[tokio::test(start_paused = true)]
async fn logout_closes_with_its_reason() {
    let server = TestServer::start_duplex().await;
    let mut c = server.login("alice").await;
    let r = c.request("logout", json!({})).await;
    assert_eq!(r["code"], 0);
    let closed = c.closed(WAIT).await;
    assert_eq!(closed.reason.as_deref(), Some("logout"));
    assert_eq!(closed.code, Some(4000));
}

#[tokio::test(start_paused = true)]
async fn login_deadline_closes_idle_connections() {
    let server =
        TestServer::start_duplex_with(|c| c.limits.login_timeout_secs = 1, Options::default())
            .await;
    let mut c = server.connect().await;
    let closed = c.closed(Duration::from_secs(4)).await;
    assert_eq!(closed.reason.as_deref(), Some("loginTimeout"));
    assert_eq!(closed.code, Some(4003));
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_live_peers_and_drop_dead_ones() {
    let server = TestServer::start_duplex_with(
        |c| {
            c.limits.ping_interval_secs = 1;
            c.limits.idle_timeout_secs = 2;
        },
        Options::default(),
    )
    .await;
    // A client that reads answers the server's pings (tungstenite auto-pongs).
    let mut live = server.login("alice").await;
    // A client that never reads never pongs: the server must notice.
    let _dead = server.login("bob").await;
    assert_eq!(server.metric("confab_sessions").await, 2);
    assert!(
        live.try_push("nothing", Duration::from_secs(4))
            .await
            .is_none()
    );
    assert_eq!(
        server.metric("confab_sessions").await,
        1,
        "the silent session is gone after the idle timeout"
    );
    assert!(
        live.alive().await,
        "a client answering pings stays connected"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_learns_why_it_was_dropped() {
    let server = TestServer::start_duplex_with(
        |c| {
            c.limits.ping_interval_secs = 1;
            c.limits.idle_timeout_secs = 2;
        },
        Options::default(),
    )
    .await;
    // Reading is what answers pings, so this client stays silent until it looks.
    let mut c = server.login("bob").await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let closed = c.closed(Duration::from_secs(3)).await;
    assert_eq!(closed.reason.as_deref(), Some("heartbeatTimeout"));
    assert_eq!(closed.code, Some(4004));
}

/// With paused time the server's clock stands still while both logins run,
/// so they log in at the same millisecond; a session that subscribed after
/// the other's kick went out must still go (it hears the later login's kick
/// again when the later session hears its own). Before that, both stayed in
/// about one run in six of five rounds.
#[tokio::test(start_paused = true)]
async fn simultaneous_logins_at_one_instant_leave_exactly_one_session() {
    let server = TestServer::start_duplex().await;
    twin_logins_leave_one_session(&server, 100).await;
}

// The same over TCP with real time.
#[tokio::test]
async fn simultaneous_logins_of_one_user_leave_exactly_one_session() {
    let server = TestServer::start().await;
    twin_logins_leave_one_session(&server, 5).await;
}

/// `rounds` times, one user logs in on two connections at once: exactly one
/// session survives each round.
async fn twin_logins_leave_one_session(server: &TestServer, rounds: usize) {
    for round in 0..rounds {
        let user = format!("twin{round}");
        let (mut a, mut b) = tokio::join!(server.connect(), server.connect());
        let tok = server.token(&user);
        let (ra, rb) = tokio::join!(
            a.login(APP, &user, &tok, None),
            b.login(APP, &user, &tok, None)
        );
        assert_eq!(
            (ra["code"].as_u64(), rb["code"].as_u64()),
            (Some(0), Some(0))
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (alive_a, alive_b) = tokio::join!(a.alive(), b.alive());
        assert!(
            alive_a ^ alive_b,
            "round {round}: exactly one session survives (a: {alive_a}, b: {alive_b})"
        );
    }
}
