//! The plain HTTP endpoints: health, readiness, metrics, log upload, origins.

use std::io::Write as _;
use std::time::Duration;

use crate::harness::*;

#[tokio::test]
async fn health_ready_and_metrics() {
    let server = TestServer::start().await;
    assert_eq!(http_get(server.addr, "/healthz").await.0, 200);
    assert_eq!(http_get(server.addr, "/readyz").await.0, 200);
    let _c = server.login("alice").await;
    assert_eq!(server.metric("confab_logins_total").await, 1);
    assert_eq!(server.metric("confab_sessions").await, 1);
}

fn upload_headers<'a>(user: &'a str, token: &'a str) -> Vec<(&'static str, String)> {
    vec![
        ("X-Confab-App-Id", APP.to_string()),
        ("X-Confab-User-Id", user.to_owned()),
        ("Authorization", format!("Bearer {token}")),
    ]
}

async fn upload(
    server: &TestServer,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, serde_json::Value) {
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, text) = http_request(server.addr, "POST", "/v1/logs", &h, body).await;
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, json)
}

#[tokio::test]
async fn log_upload_stores_per_app_and_user_with_a_cap() {
    let server =
        TestServer::start_with(|c| c.limits.max_log_bytes = 64 * 1024, Default::default()).await;
    let tok = token("alice");
    let (status, r) = upload(&server, &upload_headers("alice", &tok), b"line 1\nline 2\n").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["code"], 0);
    let dir = server.data.join("logs").join(APP.to_string()).join("alice");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1);
    let stored = std::fs::read(files[0].as_ref().unwrap().path()).unwrap();
    assert_eq!(stored, b"line 1\nline 2\n");

    // gzip is accepted and decompressed.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"zipped log\n").unwrap();
    let mut h = upload_headers("alice", &tok);
    h.push(("Content-Encoding", "gzip".into()));
    let (status, r) = upload(&server, &h, &gz.finish().unwrap()).await;
    assert_eq!((status, r["code"].as_u64()), (200, Some(0)), "{r}");

    // Failures are 6000010 with a reason.
    let (status, r) = upload(&server, &upload_headers("alice", &token("bob")), b"x").await;
    assert_eq!((status, r["code"].as_u64()), (401, Some(6000010)), "{r}");
    assert!(r["message"].as_str().unwrap().contains("6000101"), "{r}");
    let (_, r) = upload(&server, &upload_headers("alice", &tok)[..2], b"x").await;
    assert_eq!(r["code"], 6000010);
    let big = vec![b'a'; 65 * 1024];
    let (_, r) = upload(&server, &upload_headers("alice", &tok), &big).await;
    assert_eq!(r["code"], 6000010, "{r}");
    // A gzip bomb is cut at the cap.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 10 * 1024 * 1024]).unwrap();
    let mut h = upload_headers("alice", &tok);
    h.push(("Content-Encoding", "gzip".into()));
    let (_, r) = upload(&server, &h, &gz.finish().unwrap()).await;
    assert_eq!(r["code"], 6000010, "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("decompressed"),
        "{r}"
    );
}

#[tokio::test]
async fn foreign_browser_origins_are_refused() {
    let server = TestServer::start().await;
    let (status, body) = http_request(
        server.addr,
        "GET",
        "/ws",
        &[
            ("Origin", "https://evil.example"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade, close"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        b"",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("origin"), "{body}");
}

#[tokio::test]
async fn a_websocket_handshake_that_is_not_one_is_refused_saying_why() {
    let server = TestServer::start().await;
    let good = [
        ("Upgrade", "websocket"),
        ("Connection", "keep-alive, Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    for (drop, status_wanted, expected) in [
        ("Upgrade", 400, "Upgrade header"),
        ("Connection", 400, "Connection header"),
        ("Sec-WebSocket-Version", 426, "Version header must be 13"),
        (
            "Sec-WebSocket-Key",
            400,
            "Sec-WebSocket-Key header is missing",
        ),
    ] {
        let headers: Vec<_> = good.iter().filter(|(h, _)| *h != drop).copied().collect();
        let (status, body) = http_request(server.addr, "GET", "/ws", &headers, b"").await;
        assert_eq!(status, status_wanted, "without {drop}: {body}");
        assert!(body.contains(expected), "without {drop}: {body}");
    }
    let (status, body) = http_request(server.addr, "GET", "/ws", &good, b"frames?").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no body"), "{body}");
    // With all of them (Connection as a list, Upgrade in any case) it upgrades.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: WebSocket\r\n\
         Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.addr
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed during the handshake");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // RFC 6455's own example key and answer.
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
}

/// A connection that sends nothing, or a request head that never ends, is
/// closed after the header-read timeout (10 s) instead of holding a task and a
/// socket for ever.
#[tokio::test]
async fn a_connection_that_never_finishes_a_request_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for (name, s) in [("silent", &mut silent), ("slow", &mut slow)] {
        let mut buf = [0u8; 1024];
        // The server may answer 408 before it closes; then it closes.
        loop {
            match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    assert!(text.starts_with("HTTP/1.1 408"), "{name}: {text}");
                }
                Err(_) => panic!("{name}: still open after {:?}", started.elapsed()),
            }
        }
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9),
        "closed after {waited:?}, before the timeout"
    );
    // The server still serves others.
    let (status, _) = http_request(server.addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(status, 200);
}
