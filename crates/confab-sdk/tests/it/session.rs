//! Login, logout and the SDK's own codes.

use std::time::Duration;

use confab_sdk::{
    ConnectionEvent, ConnectionState, ErrorCode, MessageContent, SendConfig, UserInfo, ZimEvent,
};

use crate::harness::*;

fn text(s: &str) -> MessageContent {
    MessageContent::Text(s.into())
}

#[tokio::test]
async fn login_logout_and_session_codes() {
    let server = TestServer::start().await;
    let mut alice = Sdk::new(sdk_config(vec![server.url()]));
    let zim = alice.zim.clone();
    assert_eq!(zim.connection_state(), ConnectionState::Disconnected);

    // Calls that need a login, before it: 6000121.
    let err = zim
        .send_peer_message(text("hi"), "bob", SendConfig::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotLoggedIn, "{err}");
    assert_eq!(zim.logout().await.unwrap_err().code, ErrorCode::NotLoggedIn);
    assert_eq!(
        zim.join_room("lobby").await.unwrap_err().code,
        ErrorCode::NotLoggedIn
    );

    // Obvious parameter errors are caught locally; the server decides the rest.
    let err = zim.login(user(""), token("alice")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ParamInvalid);
    assert!(err.message.contains("userID"), "{err}");
    let err = zim.login(user("alice"), "04garbage").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::TokenInvalid, "{err}");
    let err = zim.login(user("alice"), token("bob")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::LoginTokenMismatch, "{err}");
    alice
        .wait_state(
            ConnectionState::Disconnected,
            ConnectionEvent::LoginInterrupted,
        )
        .await;

    zim.login(user("alice"), token("alice")).await.unwrap();
    alice
        .wait_state(ConnectionState::Connecting, ConnectionEvent::ActiveLogin)
        .await;
    alice
        .wait_state(ConnectionState::Connected, ConnectionEvent::Success)
        .await;
    assert_eq!(zim.connection_state(), ConnectionState::Connected);

    // Login while logged in: 6000111.
    let err = zim.login(user("alice"), token("alice")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyLoggedIn, "{err}");
    let renewed = zim.renew_token(token("alice")).await.unwrap();
    assert!(renewed.token_expire > unix_now());

    zim.logout().await.unwrap();
    alice
        .wait_state(ConnectionState::Disconnected, ConnectionEvent::Success)
        .await;
    let err = zim
        .send_room_message(text("hi"), "lobby", SendConfig::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotLoggedIn);

    // Logging in again works; then destroy makes everything 6000002.
    zim.login(user("alice"), token("alice")).await.unwrap();
    zim.destroy();
    zim.destroy();
    for err in [
        zim.login(user("alice"), token("alice")).await.unwrap_err(),
        zim.logout().await.unwrap_err(),
        zim.send_peer_message(text("x"), "bob", SendConfig::default())
            .await
            .unwrap_err(),
        zim.query_room_online_member_count("lobby")
            .await
            .unwrap_err(),
        zim.upload_log().await.unwrap_err(),
    ] {
        assert_eq!(err.code, ErrorCode::NotInitialized, "{err}");
    }
    let shown = zim.logout().await.unwrap_err().to_string();
    assert!(shown.starts_with("6000002 NotInitialized: "), "{shown}");
    server.stop().await;
}

#[tokio::test]
async fn unreachable_server_is_6000104_and_urls_fail_over() {
    let dead = format!("ws://{}/ws", dead_addr().await);
    let mut sdk = Sdk::new(sdk_config(vec![dead.clone()]));
    // Before any login there is no token to upload the log with.
    assert_eq!(
        sdk.zim.upload_log().await.unwrap_err().code,
        ErrorCode::NotLoggedIn
    );
    let err = sdk
        .zim
        .login(user("alice"), token("alice"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NetworkError, "{err}");
    sdk.wait_state(ConnectionState::Disconnected, ConnectionEvent::LoginTimeout)
        .await;
    // The log of a failed login is worth uploading; here the server is gone.
    let err = sdk.zim.upload_log().await.unwrap_err();
    assert_eq!(err.code, ErrorCode::LogUploadFailed, "{err}");

    let server = TestServer::start().await;
    let sdk = Sdk::login_with(sdk_config(vec![dead, server.url()]), "alice").await;
    assert_eq!(sdk.zim.connection_state(), ConnectionState::Connected);
    sdk.zim.logout().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_second_login_elsewhere_kicks_the_first_which_stays_out() {
    let server = TestServer::start().await;
    let mut first = Sdk::login(&server.url(), "alice").await;
    let second = Sdk::login(&server.url(), "alice").await;
    let extended = first
        .wait_for("KickedOut", |e| match e {
            ZimEvent::ConnectionStateChanged {
                state: ConnectionState::Disconnected,
                event: ConnectionEvent::KickedOut,
                extended,
            } => Some(extended.clone()),
            _ => None,
        })
        .await;
    assert!(extended.contains("kickedOut"), "{extended}");
    first.skipped.clear();
    // It does not reconnect (that would kick the second in turn).
    let reconnected = first
        .sees(Duration::from_millis(1500), |e| {
            matches!(
                e,
                ZimEvent::ConnectionStateChanged {
                    state: ConnectionState::Reconnecting | ConnectionState::Connecting,
                    ..
                }
            )
        })
        .await;
    assert!(!reconnected, "the kicked instance tried to reconnect");
    assert_eq!(first.zim.connection_state(), ConnectionState::Disconnected);
    assert_eq!(second.zim.connection_state(), ConnectionState::Connected);
    let err = first
        .zim
        .send_peer_message(text("x"), "bob", SendConfig::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotLoggedIn);
    second
        .zim
        .send_peer_message(text("still here"), "bob", SendConfig::default())
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn token_expiry_warns_then_disconnects_without_reconnecting() {
    let server = TestServer::start().await;
    let mut sdk = Sdk::new(sdk_config(vec![server.url()]));
    sdk.zim
        .login(
            UserInfo {
                user_id: "alice".into(),
                user_name: String::new(),
            },
            token_expiring_in("alice", 2),
        )
        .await
        .unwrap();
    let second = sdk
        .wait_for("TokenWillExpire", |e| match e {
            ZimEvent::TokenWillExpire { second } => Some(*second),
            _ => None,
        })
        .await;
    assert!(second <= 2, "{second}");
    sdk.wait_state(ConnectionState::Disconnected, ConnectionEvent::TokenExpired)
        .await;
    assert!(
        !sdk.sees(Duration::from_millis(800), |e| matches!(
            e,
            ZimEvent::ConnectionStateChanged {
                state: ConnectionState::Reconnecting,
                ..
            }
        ))
        .await
    );
    // The upload authenticates with the expired token: the server refuses it.
    let err = sdk.zim.upload_log().await.unwrap_err();
    assert_eq!(err.code, ErrorCode::LogUploadFailed, "{err}");
    assert!(err.message.contains("expired"), "{err}");
    server.stop().await;
}
