//! `confab send`, `confab listen` and `confab chat` against a real `confab serve`.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::serve::{APP, SECRET, ServerProc, start};

const APP_FLAG: &str = "1234567890";

async fn server(dir: &tempfile::TempDir) -> ServerProc {
    start(
        &dir.path().join("data"),
        &["--app", &format!("{APP}:{SECRET}")],
        &[],
    )
    .await
}

fn conn<'a>(url: &'a str, user: &'a str) -> Vec<&'a str> {
    vec![
        "--url", url, "--app-id", APP_FLAG, "--secret", SECRET, "--user", user,
    ]
}

/// Runs `confab ARGS` to completion: (exit code, stdout lines as JSON).
async fn run(args: &[&str]) -> (i32, Vec<Value>) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(env!("CARGO_BIN_EXE_confab"))
            .args(args)
            .env_remove("CONFAB_SECRET")
            .output(),
    )
    .await
    .expect("confab finished in time")
    .expect("run confab");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    (out.status.code().unwrap_or(-1), lines)
}

/// A running `confab listen`; its stdout lines as they come.
struct Listener {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Listener {
    async fn start(args: &[&str]) -> Listener {
        let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
            .arg("listen")
            .args(args)
            .env_remove("CONFAB_SECRET")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start confab listen");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut l = Listener { child, lines };
        let ready = l.next().await.expect("a ready line");
        assert_eq!(ready["event"], "ready", "{ready}");
        l
    }

    async fn next(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(Duration::from_secs(15), self.lines.next_line())
            .await
            .expect("a line in time")
            .expect("read");
        line.map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
    }

    /// The next `message` line, skipping events.
    async fn message(&mut self) -> Value {
        loop {
            let v = self.next().await.expect("listen ended early");
            if v["event"] == "message" {
                return v;
            }
        }
    }

    async fn exit_code(mut self) -> i32 {
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("listen exited in time")
            .expect("wait")
            .code()
            .unwrap_or(-1)
    }
}

#[tokio::test]
async fn send_and_listen_peer_and_room() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let url = server.url();

    // Peer: bob listens for one message; alice sends it.
    let mut args = conn(&url, "bob");
    args.extend(["--count", "1", "--timeout", "20"]);
    let mut bob = Listener::start(&args).await;
    let mut send = conn(&url, "alice");
    send.extend(["--to", "bob", "hello bob"]);
    let mut cmd = vec!["send"];
    cmd.extend(send);
    let (code, out) = run(&cmd).await;
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["seq"], 1);
    assert!(out[0]["messageID"].as_u64().unwrap() > 0);
    let m = bob.message().await;
    assert_eq!(m["message"], "hello bob");
    assert_eq!(m["from"], "alice");
    assert_eq!(m["conversationType"], "peer");
    assert_eq!(bob.exit_code().await, 0, "--count reached");

    // Room: carol listens in lobby (entering it); dave sends without joining first.
    let mut args = conn(&url, "carol");
    args.extend([
        "--room",
        "lobby",
        "--enter",
        "--count",
        "2",
        "--timeout",
        "20",
    ]);
    let mut carol = Listener::start(&args).await;
    let mut cmd = vec!["send"];
    cmd.extend(conn(&url, "dave"));
    cmd.extend(["--room", "lobby", "not a member yet"]);
    let (code, out) = run(&cmd).await;
    assert_ne!(code, 0);
    assert_eq!(out[0]["code"], 6000205, "{out:?}");
    assert_eq!(out[0]["name"], "NotInRoom");
    let mut cmd = vec!["send"];
    cmd.extend(conn(&url, "dave"));
    cmd.extend(["--room", "lobby", "--join", "hi lobby"]);
    let (code, out) = run(&cmd).await;
    assert_eq!(code, 0, "{out:?}");
    let mut cmd = vec!["send"];
    cmd.extend(conn(&url, "erin"));
    cmd.extend([
        "--room",
        "lobby",
        "--join",
        "--type",
        "command",
        "--priority",
        "high",
        "ping",
    ]);
    let (code, out) = run(&cmd).await;
    assert_eq!(code, 0, "{out:?}");
    let first = carol.message().await;
    assert_eq!(first["message"], "hi lobby");
    assert_eq!(first["conversationType"], "room");
    let second = carol.message().await;
    assert_eq!(second["type"], 2);
    assert_eq!(carol.exit_code().await, 0);

    // Missing room with no step: 6000301.
    let mut cmd = vec!["send"];
    cmd.extend(conn(&url, "dave"));
    cmd.extend(["--room", "nowhere", "x"]);
    let (_, out) = run(&cmd).await;
    assert_eq!(out[0]["code"], 6000301, "{out:?}");
}

#[tokio::test]
async fn client_errors_are_json_with_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let url = server.url();
    // Unknown app.
    let (code, out) = run(&[
        "send", "--url", &url, "--app-id", "99", "--secret", SECRET, "--user", "a", "--to", "b",
        "x",
    ])
    .await;
    assert_ne!(code, 0);
    assert_eq!(out[0]["code"], 6000004, "{out:?}");
    // Nobody listening there.
    let (code, out) = run(&[
        "send",
        "--url",
        "ws://127.0.0.1:1/ws",
        "--app-id",
        APP_FLAG,
        "--secret",
        SECRET,
        "--user",
        "a",
        "--to",
        "b",
        "x",
    ])
    .await;
    assert_ne!(code, 0);
    assert_eq!(out[0]["code"], 6000104, "{out:?}");
    // listen: errors exit 2; a timeout exits 1.
    let (code, out) = run(&[
        "listen", "--url", &url, "--app-id", APP_FLAG, "--secret", SECRET, "--user", "a", "--room",
        "ghost", "--join",
    ])
    .await;
    assert_eq!(code, 2, "{out:?}");
    assert_eq!(out.last().unwrap()["code"], 6000304);
    let (code, out) = run(&[
        "listen",
        "--url",
        &url,
        "--app-id",
        APP_FLAG,
        "--secret",
        SECRET,
        "--user",
        "a",
        "--timeout",
        "1",
    ])
    .await;
    assert_eq!(code, 1, "{out:?}");
    assert_eq!(out[0]["event"], "ready");
}

#[tokio::test]
async fn chat_sends_receives_and_scrolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let url = server.url();
    let mut args = conn(&url, "bob");
    args.extend([
        "--room",
        "lounge",
        "--enter",
        "--count",
        "2",
        "--timeout",
        "20",
    ]);
    let mut bob = Listener::start(&args).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
        .arg("chat")
        .args(conn(&url, "alice"))
        .env_remove("CONFAB_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start confab chat");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            b"/help\n/enter lounge\nhello from chat\n/history 5\n/members\n/to bob\npsst\n/quit\n",
        )
        .await
        .unwrap();
    let m = bob.message().await;
    assert_eq!(m["message"], "hello from chat");
    assert_eq!(m["from"], "alice");
    assert_eq!(m["conversationType"], "room");
    let m = bob.message().await;
    assert_eq!(m["message"], "psst");
    assert_eq!(m["conversationType"], "peer");
    assert_eq!(bob.exit_code().await, 0);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("chat exited")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("logged in as alice"), "{text}");
    assert!(text.contains("/history"), "help text: {text}");
    assert!(text.contains("joined lounge"), "{text}");
    assert!(
        text.contains("alice: hello from chat"),
        "history shows the message: {text}"
    );
    assert!(text.contains("in lounge: "), "members: {text}");
}
