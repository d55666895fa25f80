//! The browser side: the demo page, the web SDK bundle and development tokens.

use serde_json::Value;

use crate::harness::*;

async fn post_json(server: &TestServer, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = http_request(
        server.addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await;
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, json)
}

#[tokio::test]
async fn serves_the_demo_page_and_the_sdk_module() {
    let server = TestServer::start().await;
    let (status, page) = http_get(server.addr, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "not a page: {page:.200}");
    assert!(page.contains("/sdk/zim.js"), "the page must load the SDK");
    let (status, sdk) = http_get(server.addr, "/sdk/zim.js").await;
    assert_eq!(status, 200);
    assert!(
        sdk.contains("export") && sdk.contains("ZIM"),
        "the SDK must be an ES module exporting ZIM"
    );
    let (status, dts) = http_get(server.addr, "/sdk/zim.d.ts").await;
    assert_eq!(status, 200);
    assert!(dts.contains("ZIM"), "typings: {dts:.200}");
    for file in ["api", "enums", "types"] {
        let (status, body) = http_get(server.addr, &format!("/sdk/{file}.d.ts")).await;
        assert_eq!(status, 200, "/sdk/{file}.d.ts");
        assert!(body.contains("export"), "/sdk/{file}.d.ts: {body:.200}");
    }
    assert_eq!(http_get(server.addr, "/sdk/nothing.d.ts").await.0, 404);
    assert_eq!(http_get(server.addr, "/no-such-page").await.0, 404);
}

#[tokio::test]
async fn configured_apps_get_no_development_tokens() {
    let server = TestServer::start().await;
    let (status, text) = http_get(server.addr, "/dev/app").await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["code"], 6000004, "{v}");
    assert!(v["message"].as_str().unwrap().contains("backend"), "{v}");
    let (status, v) = post_json(&server, "/dev/token", r#"{"userID":"alice"}"#).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["code"], 6000004, "{v}");
}

#[tokio::test]
async fn the_development_app_mints_tokens_that_log_in() {
    let server = TestServer::start_with(|c| c.apps.clear(), Default::default()).await;
    let (status, text) = http_get(server.addr, "/dev/app").await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let app_id = u32::try_from(v["appID"].as_u64().unwrap()).unwrap();
    assert_eq!(v["devTokens"], true);

    let (status, v) = post_json(
        &server,
        "/dev/token",
        r#"{"userID":"alice","effectiveTimeInSeconds":600}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["appID"], app_id);
    assert_eq!(v["userID"], "alice");
    assert_eq!(v["expiresIn"], 600);
    let token = v["token"].as_str().unwrap().to_owned();
    let mut c = server.connect().await;
    let r = c.login(app_id, "alice", &token, None).await;
    assert_eq!(r["code"], 0, "login with a development token: {r}");
    // The token is alice's, not bob's.
    let mut c = server.connect().await;
    let r = c.login(app_id, "bob", &token, None).await;
    assert_ne!(r["code"], 0, "{r}");
}

#[tokio::test]
async fn bad_token_requests_name_the_problem() {
    let server = TestServer::start_with(|c| c.apps.clear(), Default::default()).await;
    for (body, needle) in [
        (r#"{"userID":""}"#, "userID"),
        (r#"{"userID":"has space"}"#, "userID"),
        (
            r#"{"userID":"alice","effectiveTimeInSeconds":0}"#,
            "effectiveTimeInSeconds",
        ),
        (
            r#"{"userID":"alice","effectiveTimeInSeconds":99999999}"#,
            "effectiveTimeInSeconds",
        ),
        ("not json", "JSON"),
        (r#"{"user":"alice"}"#, "JSON"),
    ] {
        let (status, v) = post_json(&server, "/dev/token", body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["code"], 6000001, "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
}
