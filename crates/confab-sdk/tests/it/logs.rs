//! The SDK's own log: what it holds (never tokens or bodies) and its upload.

use confab_sdk::{ErrorCode, LogConfig, MessageContent, SendConfig};

use crate::harness::*;

const BODY: &str = "TOP-SECRET-BODY-7f3a";

fn read_dir_text(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        out.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    out
}

#[tokio::test]
async fn the_log_has_ops_and_codes_but_no_tokens_or_bodies_and_uploads() {
    let server = TestServer::start().await;
    let logs = tempfile::tempdir().unwrap();
    let alice_dir = logs.path().join("alice");
    let bob_dir = logs.path().join("bob");

    let mut alice = Sdk::new(sdk_config(vec![server.url()]));
    alice
        .zim
        .set_log_config(&LogConfig {
            log_path: alice_dir.clone(),
            log_size: 64 * 1024,
        })
        .unwrap();
    let alice_token = token("alice");
    alice
        .zim
        .login(user("alice"), alice_token.clone())
        .await
        .unwrap();
    let mut bob = Sdk::new(sdk_config(vec![server.url()]));
    bob.zim.set_log_config(&LogConfig::new(&bob_dir)).unwrap();
    let bob_token = token("bob");
    bob.zim.login(user("bob"), bob_token.clone()).await.unwrap();

    alice
        .zim
        .send_peer_message(
            MessageContent::Text(BODY.into()),
            "bob",
            SendConfig::default(),
        )
        .await
        .unwrap();
    alice
        .zim
        .send_peer_message(
            MessageContent::Command(BODY.as_bytes().to_vec()),
            "bob",
            SendConfig::default(),
        )
        .await
        .unwrap();
    let got = bob.peer_messages(2).await;
    assert_eq!(got[0].text(), Some(BODY));
    let err = alice.zim.renew_token("04not-a-token").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::TokenInvalid);
    let _ = &mut alice;

    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(BODY)
    };
    for (dir, tok) in [(&alice_dir, &alice_token), (&bob_dir, &bob_token)] {
        let text = read_dir_text(dir);
        assert!(text.contains("op=login"), "{text}");
        assert!(text.contains("sendPeerMessage") || text.contains("receivePeerMessage"));
        assert!(text.contains("code=0"), "{text}");
        assert!(!text.contains(tok.as_str()), "a token leaked into the log");
        assert!(!text.contains(&tok[..24]), "part of a token leaked");
        assert!(!text.contains(BODY), "a message body leaked into the log");
        assert!(!text.contains(&b64), "a command body leaked into the log");
        assert!(!text.contains("04not-a-token"));
    }
    let alice_text = read_dir_text(&alice_dir);
    assert!(alice_text.contains("code=6000103"), "{alice_text}");

    // Upload: the server stores it per app and user.
    alice.zim.upload_log().await.unwrap();
    let stored_dir = server.data.join("logs").join(APP.to_string()).join("alice");
    let stored = read_dir_text(&stored_dir);
    assert!(stored.contains("op=login"), "{stored}");
    assert!(!stored.contains(BODY));

    // Unreachable server: 6000010.
    let dir = server.stop().await;
    let err = alice.zim.upload_log().await.unwrap_err();
    assert_eq!(err.code, ErrorCode::LogUploadFailed, "{err}");
    drop(dir);
}
