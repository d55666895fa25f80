//! `confab serve` as a real process: what it prints, the development app kept in
//! the data directory, graceful shutdown on SIGTERM, and `kill -9` losing no
//! acknowledged message (RELIABILITY.md's crash test).
//!
//! Every test starts the binary on a free port with a temporary data directory,
//! talks to it over real WebSockets (docs/protocol.md), bounds every wait, and
//! kills its children when it ends, passing or not.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) const APP: u32 = 1_234_567_890;
pub(crate) const SECRET: &str = "fa94dd0f974cf2e293728a526b028271";
/// How long any single step may take.
const WAIT: Duration = Duration::from_secs(10);
/// How long a whole test may take.
const TEST_LIMIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------
// The server process

/// A running `confab serve`; killed (SIGKILL) when dropped, so a failing test never
/// leaves a server behind.
pub(crate) struct ServerProc {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    /// What it printed on stdout up to and including "Press Ctrl-C".
    banner: Vec<String>,
    /// Its stderr (the log).
    log: PathBuf,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        // A no-op when the child has already been reaped.
        let _ = self.child.start_kill();
    }
}

static STARTS: AtomicUsize = AtomicUsize::new(0);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Starts `confab serve --listen 127.0.0.1:PORT --data DATA` plus `extra` flags and
/// `env`, and waits for its banner. Logs go to a file beside `data`. Retries with
/// another port when the chosen one was taken in the meantime.
pub(crate) async fn start(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> ServerProc {
    for _ in 0..5 {
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let log = data.with_file_name(format!("server-{n}.log"));
        let listen = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_confab"));
        cmd.args(["serve", "--listen", &listen, "--data"])
            .arg(data)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("create the log file"))
            .kill_on_drop(true);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CONFAB_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("start confab serve");
        let pid = child.id().expect("pid");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut banner = Vec::new();
        let finished = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                let done = line.starts_with("Press Ctrl-C");
                banner.push(line);
                if done {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no banner within {WAIT:?}; got {banner:?}; log:\n{}",
                read_log(&log)
            )
        });
        if !finished {
            let status = tokio::time::timeout(WAIT, child.wait()).await;
            let text = read_log(&log);
            if text.contains("cannot listen") {
                continue; // the port was taken after we probed it
            }
            panic!("confab serve ended ({status:?}) before its banner: {banner:?}; log:\n{text}");
        }
        // Keep draining stdout so that a later print never hits a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        return ServerProc {
            child,
            pid,
            addr: listen.parse().expect("listen address"),
            banner,
            log,
        };
    }
    panic!("could not find a free port in 5 tries");
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

impl ServerProc {
    pub(crate) fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The value after `label` on the banner line that has it.
    fn banner_value(&self, label: &str) -> String {
        self.banner
            .iter()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {label:?} line in the banner: {:#?}", self.banner))
    }

    /// Sends `signal` with the `kill` command.
    async fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}: {status}", self.pid);
    }

    /// Waits for the process to end.
    async fn wait(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for confab serve"),
            Err(_) => panic!(
                "confab serve still running {limit:?} later; log:\n{}",
                read_log(&self.log)
            ),
        }
    }

    /// SIGTERM, then the exit status and how long the exit took.
    async fn stop(&mut self) -> (ExitStatus, Duration) {
        let began = Instant::now();
        self.signal("-TERM").await;
        let status = self.wait(WAIT).await;
        (status, began.elapsed())
    }

    async fn login(&self, app: u32, secret: &str, user: &str) -> Client {
        let mut c = Client::connect(&self.url()).await;
        let r = c.login(app, user, &token(app, secret, user)).await;
        assert_eq!(r["code"], 0, "login of {user}: {r}");
        c
    }
}

/// Runs a test body with an overall time limit.
async fn bounded<F: std::future::Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .unwrap_or_else(|_| panic!("the test took more than {TEST_LIMIT:?}"));
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit i64")
}

fn token(app: u32, secret: &str, user: &str) -> String {
    let secret = confab_token::Secret::new(secret).expect("secret");
    confab_token::generate(
        &secret,
        app,
        user,
        3600,
        confab_token::Mode::Gcm,
        unix_now(),
    )
    .expect("token")
}

/// GET over a raw TCP connection; returns (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write request");
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("read response");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (status, body)
}

// ---------------------------------------------------------------------------------
// A protocol-level client

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Pushes received while waiting for something else.
    pushes: VecDeque<Value>,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq)]
struct Closed {
    /// The `disconnect` push, if one came.
    disconnect: Option<Value>,
    /// The close frame's code, if one came.
    code: Option<u16>,
}

impl Client {
    async fn connect(url: &str) -> Client {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        Client {
            ws,
            next_id: 1,
            pushes: VecDeque::new(),
        }
    }

    /// Sends a request; returns its id, or `None` when the connection is gone.
    async fn try_send(&mut self, op: &str, data: Value) -> Option<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = json!({"v": 1, "id": id, "op": op, "data": data});
        self.ws.send(Message::text(frame.to_string())).await.ok()?;
        Some(id)
    }

    /// Reads one JSON frame; `None` on close, error or timeout.
    async fn read(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match msg {
                Message::Text(t) => {
                    return Some(serde_json::from_str(t.as_str()).expect("a JSON frame"));
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    async fn request(&mut self, op: &str, data: Value) -> Value {
        let id = self
            .try_send(op, data)
            .await
            .unwrap_or_else(|| panic!("cannot send {op}: connection closed"));
        loop {
            let v = self
                .read(WAIT)
                .await
                .unwrap_or_else(|| panic!("no reply to {op} (request {id})"));
            if v.get("push").is_some() {
                self.pushes.push_back(v);
            } else {
                assert_eq!(v["id"], id, "a reply to a request not sent: {v}");
                return v;
            }
        }
    }

    async fn login(&mut self, app: u32, user: &str, token: &str) -> Value {
        self.request(
            "login",
            json!({"appID": app, "userID": user, "userName": user, "token": token}),
        )
        .await
    }

    async fn send_text(&mut self, to: &str, local: u64) -> Value {
        self.request("sendPeerMessage", text_message(to, local))
            .await
    }

    /// Pushes from now until (and including) the next `name`.
    async fn pushes_until(&mut self, name: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let v = match self.pushes.pop_front() {
                Some(v) => v,
                None => self
                    .read(WAIT)
                    .await
                    .unwrap_or_else(|| panic!("no {name} push; got {out:?}")),
            };
            assert!(v.get("push").is_some(), "a reply nobody asked for: {v}");
            let done = v["push"] == name;
            out.push(v);
            if done {
                return out;
            }
        }
    }

    /// Reads until the connection ends.
    async fn closed(&mut self, timeout: Duration) -> Closed {
        let mut disconnect = self
            .pushes
            .iter()
            .find(|p| p["push"] == "disconnect")
            .cloned();
        let mut code = None;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("connection still open after {timeout:?}"),
                Ok(None | Some(Err(_))) => return Closed { disconnect, code },
                Ok(Some(Ok(Message::Close(frame)))) => {
                    // Keep reading: that answers the close and completes the handshake.
                    code = frame.map(|f| u16::from(f.code));
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("a JSON frame");
                    if v["push"] == "disconnect" {
                        disconnect = Some(v);
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

fn body(local: u64) -> String {
    format!("message {local}")
}

fn text_message(to: &str, local: u64) -> Value {
    json!({"toUserID": to, "type": 1, "message": body(local), "localMessageID": local})
}

// ---------------------------------------------------------------------------------
// 1. The banner and the development app

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_no_app_flags_prints_dev_app_and_url() {
    bounded(async {
        let began = Instant::now();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let mut server = start(&data, &[], &[]).await;

        let url = server.banner_value("WebSocket endpoint:");
        assert_eq!(
            url,
            format!("ws://{}/ws", server.addr),
            "{:#?}",
            server.banner
        );
        assert_eq!(
            server.banner_value("data directory:"),
            data.display().to_string()
        );
        let app_id: u32 = server
            .banner_value("AppID:")
            .parse()
            .unwrap_or_else(|e| panic!("AppID is not a u32 ({e}): {:#?}", server.banner));
        assert_ne!(app_id, 0);
        let secret = server.banner_value("ServerSecret:");
        assert_eq!(secret.len(), 32, "ServerSecret {secret:?}");
        assert!(
            secret.chars().all(|c| c.is_ascii_alphanumeric()),
            "ServerSecret {secret:?}"
        );
        let hint = server.banner_value("make a token:");
        assert!(
            hint.contains(&format!("--app-id {app_id} --secret {secret}")),
            "{hint}"
        );

        let (status, text) = http_get(server.addr, "/healthz").await;
        assert_eq!(status, 200, "GET /healthz: {text}");

        // The printed app really is served: a token made with it logs in ...
        let mut alice = Client::connect(&url).await;
        let r = alice
            .login(app_id, "alice", &token(app_id, &secret, "alice"))
            .await;
        assert_eq!(r["code"], 0, "{r}");
        assert_eq!(r["data"]["userID"], "alice", "{r}");
        let pushes = alice.pushes_until("syncComplete").await;
        assert_eq!(
            pushes.len(),
            1,
            "a new user has nothing to catch up: {pushes:?}"
        );
        // ... and nothing else is: no 1234567890 without --app.
        let mut other = Client::connect(&url).await;
        let r = other
            .login(APP, "alice", &token(APP, SECRET, "alice"))
            .await;
        assert_eq!(r["code"], 6_000_004, "{r}");
        // A token for the right app made with another secret does not log in.
        let r = other
            .login(app_id, "carol", &token(app_id, SECRET, "carol"))
            .await;
        assert_eq!(r["code"], 6_000_103, "{r}");
        drop((alice, other));

        let (status, took) = server.stop().await;
        assert!(status.success(), "exit after SIGTERM: {status}");
        drop(server);

        // Restart on the same data directory: the same app, still usable.
        let server = start(&data, &[], &[]).await;
        assert_eq!(
            server.banner_value("AppID:"),
            app_id.to_string(),
            "the development app changed across a restart"
        );
        assert_eq!(
            server.banner_value("ServerSecret:"),
            secret,
            "the development secret changed across a restart"
        );
        let token_before = token(app_id, &secret, "bob");
        let mut bob = Client::connect(&server.url()).await;
        let r = bob.login(app_id, "bob", &token_before).await;
        assert_eq!(r["code"], 0, "{r}");

        // Given --app, the development app is not served (and not printed).
        drop((bob, server));
        let server = start(&data, &["--app", &format!("{APP}:{SECRET}")], &[]).await;
        assert!(
            !server.banner.iter().any(|l| l.contains("ServerSecret")),
            "{:#?}",
            server.banner
        );
        assert!(
            server.banner.iter().any(|l| l.contains(&APP.to_string())),
            "the banner should name the configured app: {:#?}",
            server.banner
        );
        let mut bob = Client::connect(&server.url()).await;
        let r = bob.login(app_id, "bob", &token_before).await;
        assert_eq!(r["code"], 6_000_004, "{r}");
        eprintln!(
            "serve banner test: first stop took {took:?}, whole test {:?}",
            began.elapsed()
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------
// 2. SIGTERM

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let app = format!("{APP}:{SECRET}");
        let mut server = start(&data, &["--app", &app], &[]).await;
        assert!(
            !server.banner.iter().any(|l| l.contains("ServerSecret")),
            "configured apps must not be printed with secrets: {:#?}",
            server.banner
        );
        let mut alice = server.login(APP, SECRET, "alice").await;
        alice.pushes_until("syncComplete").await;
        let r = alice.send_text("bob", 1).await;
        assert_eq!(r["code"], 0, "{r}");
        let acked = r["data"].clone();

        let (status, took) = server.stop().await;
        let closed = alice.closed(WAIT).await;
        let disconnect = closed
            .disconnect
            .unwrap_or_else(|| panic!("no disconnect push before the close ({:?})", closed.code));
        assert_eq!(
            disconnect["data"]["reason"], "serverShutdown",
            "{disconnect}"
        );
        assert_eq!(disconnect["data"]["reconnect"], true, "{disconnect}");
        assert_eq!(closed.code, Some(4008), "close code");
        assert!(
            status.success(),
            "exit status after SIGTERM: {status}; log:\n{}",
            read_log(&server.log)
        );
        assert!(took < Duration::from_secs(10), "exit took {took:?}");
        drop(server);

        // What was acknowledged before the shutdown is there after it.
        let server = start(&data, &["--app", &app], &[]).await;
        let mut bob = server.login(APP, SECRET, "bob").await;
        let pushes = bob.pushes_until("syncComplete").await;
        let got = peer_messages(&pushes);
        assert_eq!(got.len(), 1, "{pushes:?}");
        assert_eq!(got[0]["messageID"], acked["messageID"], "{pushes:?}");
        assert_eq!(got[0]["message"], body(1), "{pushes:?}");
        eprintln!("sigterm test: exit {took:?} after SIGTERM");
    })
    .await;
}

/// The messages of every `receivePeerMessage` push, in order.
fn peer_messages(pushes: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for p in pushes.iter().filter(|p| p["push"] == "receivePeerMessage") {
        let list = p["data"]["messageList"].as_array().expect("messageList");
        assert!(!list.is_empty(), "an empty push: {p}");
        for m in list {
            assert_eq!(
                m["senderUserID"], p["data"]["fromUserID"],
                "a push mixes senders"
            );
            out.push(m.clone());
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// 3. kill -9 during a message stream

/// Kill cycles (each followed by a restart on the same data directory).
const CYCLES: usize = 3;
/// Acknowledgements (of all senders together) to see in a cycle before the kill.
const ACKS_BEFORE_KILL: usize = 300;
/// Requests each sender keeps outstanding.
const WINDOW: usize = 16;
/// Who sends to bob. Two, so that the store's group commit has batches to make.
const SENDERS: [&str; 2] = ["alice", "carol"];
/// No rate limit in the way of the stream.
const UNLIMITED: &[(&str, &str)] = &[
    ("CONFAB_LIMITS_USER_SEND_RATE", "1000000"),
    ("CONFAB_LIMITS_USER_SEND_BURST", "1000000"),
    ("CONFAB_LIMITS_APP_SEND_RATE", "1000000"),
];

/// An acknowledged send: what the reply said.
#[derive(Debug, Clone, PartialEq)]
struct Ack {
    message_id: u64,
    conversation_seq: u64,
    timestamp: u64,
}

impl Ack {
    fn from_reply(local: u64, reply: &Value) -> Ack {
        assert_eq!(reply["code"], 0, "send of {local}: {reply}");
        let d = &reply["data"];
        assert_eq!(d["localMessageID"], local, "{reply}");
        Ack {
            message_id: d["messageID"].as_u64().expect("messageID"),
            conversation_seq: d["conversationSeq"].as_u64().expect("conversationSeq"),
            timestamp: d["timestamp"].as_u64().expect("timestamp"),
        }
    }
}

/// What one sender sent and what the server acknowledged, over every cycle.
#[derive(Debug, Default)]
struct Ledger {
    /// localMessageID → its acknowledgement.
    acked: BTreeMap<u64, Ack>,
    /// The localMessageIDs sent in each cycle.
    sent: Vec<RangeInclusive<u64>>,
}

impl Ledger {
    fn next_local(&self) -> u64 {
        self.sent.last().map_or(1, |r| r.end() + 1)
    }

    fn sent_count(&self) -> u64 {
        self.sent.iter().map(|r| r.end() - r.start() + 1).sum()
    }
}

/// One sender's stream in one cycle.
#[derive(Debug)]
struct Stream {
    acked: usize,
    /// Acknowledgements that arrived after the kill was ordered.
    acked_after_kill_order: usize,
    /// Sends that never got a reply.
    unanswered: usize,
}

/// What all senders share during a stream.
#[derive(Debug)]
struct KillSwitch {
    pid: u32,
    acks: AtomicUsize,
    ordered: AtomicBool,
}

/// `user` sends to offline bob with localMessageIDs after the ledger's, keeping
/// [`WINDOW`] requests outstanding. The send that brings all senders' acks to
/// [`ACKS_BEFORE_KILL`] orders `kill -9`; everyone goes on sending until their
/// connection dies.
async fn stream_until_killed(
    mut client: Client,
    user: &'static str,
    mut ledger: Ledger,
    switch: Arc<KillSwitch>,
) -> (&'static str, Ledger, Stream) {
    let first = ledger.next_local();
    let mut next = first;
    let mut waiting: BTreeMap<u64, u64> = BTreeMap::new(); // request id → local
    let mut stream = Stream {
        acked: 0,
        acked_after_kill_order: 0,
        unanswered: 0,
    };
    let mut killer = None;
    let mut open = true;
    loop {
        while open && waiting.len() < WINDOW {
            match client
                .try_send("sendPeerMessage", text_message("bob", next))
                .await
            {
                Some(id) => {
                    waiting.insert(id, next);
                    next += 1;
                }
                None => open = false,
            }
        }
        let Some(v) = client.read(WAIT).await else {
            assert!(
                switch.ordered.load(Ordering::SeqCst),
                "{user}'s connection ended before the kill, after {} acks",
                stream.acked
            );
            break;
        };
        assert!(v.get("push").is_none(), "a push to {user}: {v}");
        let id = v["id"].as_u64().expect("reply id");
        let local = waiting
            .remove(&id)
            .unwrap_or_else(|| panic!("a reply to a request not outstanding: {v}"));
        let ack = Ack::from_reply(local, &v);
        assert!(
            ledger.acked.insert(local, ack).is_none(),
            "{user}'s {local} acked twice"
        );
        stream.acked += 1;
        if switch.ordered.load(Ordering::SeqCst) {
            stream.acked_after_kill_order += 1;
        }
        if switch.acks.fetch_add(1, Ordering::SeqCst) + 1 == ACKS_BEFORE_KILL {
            switch.ordered.store(true, Ordering::SeqCst);
            let pid = switch.pid.to_string();
            // Killing takes a moment; the senders keep sending meanwhile.
            killer = Some(tokio::spawn(async move {
                let status = Command::new("kill")
                    .args(["-9", &pid])
                    .status()
                    .await
                    .expect("run kill");
                assert!(status.success(), "kill -9 {pid}: {status}");
            }));
        }
    }
    if let Some(killer) = killer {
        killer.await.expect("the kill task");
    }
    ledger.sent.push(first..=next - 1);
    stream.unanswered = waiting.len();
    (user, ledger, stream)
}

/// After a restart, `user` retries across the crash: the first send of the last
/// cycle that got no reply (stored once, whether or not the crash kept it; bob's
/// check tells), and some acknowledged ones, which must answer as the first time.
async fn retry_after_crash(client: &mut Client, user: &str, ledger: &mut Ledger) {
    let Some(last) = ledger.sent.last().cloned() else {
        return;
    };
    if let Some(first_unacked) = last.clone().find(|l| !ledger.acked.contains_key(l)) {
        let r = client.send_text("bob", first_unacked).await;
        ledger
            .acked
            .insert(first_unacked, Ack::from_reply(first_unacked, &r));
    }
    let mut again = vec![1, *last.start()];
    again.extend(ledger.acked.range(last).next_back().map(|(l, _)| *l));
    for local in again {
        let r = client.send_text("bob", local).await;
        assert_eq!(
            Ack::from_reply(local, &r),
            ledger.acked[&local],
            "{user}'s retry of acknowledged {local} after the crash answered differently"
        );
    }
}

/// Logs bob in and checks his whole inbox (he never acknowledges, so every login
/// replays everything) against the ledgers. Returns how many messages of each
/// sender are stored.
async fn check_bob(
    server: &ServerProc,
    ledgers: &BTreeMap<&str, Ledger>,
) -> BTreeMap<String, usize> {
    let mut bob = Client::connect(&server.url()).await;
    let r = bob.login(APP, "bob", &token(APP, SECRET, "bob")).await;
    assert_eq!(r["code"], 0, "{r}");
    let pushes = bob.pushes_until("syncComplete").await;
    assert!(
        pushes
            .iter()
            .all(|p| p["push"] == "receivePeerMessage" || p["push"] == "syncComplete"),
        "unexpected pushes: {:?}",
        pushes.iter().map(|p| &p["push"]).collect::<Vec<_>>()
    );
    let messages = peer_messages(&pushes);
    let n = messages.len() as u64;
    assert_eq!(r["data"]["inboxSeq"], n, "login reply vs messages pushed");
    assert_eq!(pushes.last().expect("syncComplete")["data"]["inboxSeq"], n);

    let mut stored: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut ids = HashSet::new();
    for (i, m) in messages.iter().enumerate() {
        let sender = m["senderUserID"].as_str().expect("senderUserID");
        let ledger = ledgers
            .get(sender)
            .unwrap_or_else(|| panic!("a message from a stranger: {m}"));
        let locals = stored.entry(sender.to_owned()).or_default();
        let local = m["localMessageID"].as_u64().expect("localMessageID");
        let seq = locals.len() as u64 + 1;
        assert_eq!(
            m["inboxSeq"],
            i as u64 + 1,
            "inboxSeq has a gap or repeat at {m}"
        );
        assert_eq!(
            m["conversationSeq"], seq,
            "conversationSeq has a gap or repeat at {m}"
        );
        assert_eq!(m["conversationID"], sender, "{m}");
        assert_eq!(m["type"], 1, "{m}");
        assert_eq!(m["message"], body(local), "{m}");
        if let Some(&prev) = locals.last() {
            assert!(
                local > prev,
                "{sender}: out of send order or duplicated: {local} after {prev}"
            );
        }
        let id = m["messageID"].as_u64().expect("messageID");
        assert!(ids.insert(id), "messageID {id} twice");
        if let Some(ack) = ledger.acked.get(&local) {
            let seen = Ack {
                message_id: id,
                conversation_seq: seq,
                timestamp: m["timestamp"].as_u64().expect("timestamp"),
            };
            assert_eq!(
                &seen, ack,
                "{sender}'s {local}: what is stored differs from its ack"
            );
        }
        assert!(
            ledger.sent.iter().any(|r| r.contains(&local)),
            "{sender}'s {local} is stored but was never sent"
        );
        locals.push(local);
    }
    let mut counts = BTreeMap::new();
    for (sender, ledger) in ledgers {
        let kept: HashSet<u64> = stored
            .get(*sender)
            .map(|l| l.iter().copied().collect())
            .unwrap_or_default();
        let lost: Vec<u64> = ledger
            .acked
            .keys()
            .copied()
            .filter(|l| !kept.contains(l))
            .collect();
        assert!(
            lost.is_empty(),
            "{sender}: acknowledged but lost: {lost:?} (of {} acked)",
            ledger.acked.len()
        );
        // A sender's requests are handled in order, so what a crash kept of each
        // cycle is a prefix of what was sent in it.
        for range in &ledger.sent {
            let got: Vec<u64> = range.clone().filter(|l| kept.contains(l)).collect();
            let prefix: Vec<u64> = (*range.start()..).take(got.len()).collect();
            assert_eq!(
                got, prefix,
                "{sender}: what survived of {range:?} is not a prefix"
            );
        }
        counts.insert((*sender).to_owned(), kept.len());
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_acknowledged_message() {
    bounded(async {
        let began = Instant::now();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let app = format!("{APP}:{SECRET}");
        let mut ledgers: BTreeMap<&'static str, Ledger> =
            SENDERS.iter().map(|s| (*s, Ledger::default())).collect();
        let mut stored = BTreeMap::new();
        for cycle in 0..=CYCLES {
            let cycle_began = Instant::now();
            let mut server = start(&data, &["--app", &app], UNLIMITED).await;
            let mut clients = Vec::new();
            for user in SENDERS {
                let mut client = server.login(APP, SECRET, user).await;
                client.pushes_until("syncComplete").await;
                let ledger = ledgers.get_mut(user).expect("ledger");
                retry_after_crash(&mut client, user, ledger).await;
                clients.push(client);
            }
            stored = check_bob(&server, &ledgers).await;
            let checked = cycle_began.elapsed();
            if cycle == CYCLES {
                let (status, _) = server.stop().await;
                assert!(status.success(), "final SIGTERM: {status}");
                eprintln!("kill test, last start: retries and check took {checked:?}");
                break;
            }
            let switch = Arc::new(KillSwitch {
                pid: server.pid,
                acks: AtomicUsize::new(0),
                ordered: AtomicBool::new(false),
            });
            let tasks: Vec<_> = SENDERS
                .into_iter()
                .zip(clients)
                .map(|(user, client)| {
                    let ledger = ledgers.remove(user).expect("ledger");
                    tokio::spawn(stream_until_killed(client, user, ledger, switch.clone()))
                })
                .collect();
            for task in tasks {
                let (user, ledger, stream) = task.await.expect("a sender panicked");
                eprintln!(
                    "kill test, cycle {cycle}, {user}: sent {:?}, {} acked ({} after the kill \
                     was ordered), {} unanswered",
                    ledger.sent.last().expect("sent"),
                    stream.acked,
                    stream.acked_after_kill_order,
                    stream.unanswered,
                );
                ledgers.insert(user, ledger);
            }
            let status = server.wait(WAIT).await;
            assert_eq!(
                status.signal(),
                Some(9),
                "the server died of kill -9: {status}"
            );
            eprintln!(
                "kill test, cycle {cycle}: restart, retries and check took {checked:?}, \
                 the whole cycle {:?}",
                cycle_began.elapsed()
            );
        }
        for (user, ledger) in &ledgers {
            let kept = stored[*user];
            assert!(kept >= ledger.acked.len(), "{user}");
            assert!(kept as u64 <= ledger.sent_count(), "{user}");
            eprintln!(
                "kill test, {user}: {} sent, {} acked (retries included), {kept} stored",
                ledger.sent_count(),
                ledger.acked.len(),
            );
        }
        let acked: usize = ledgers.values().map(|l| l.acked.len()).sum();
        assert!(acked >= CYCLES * ACKS_BEFORE_KILL, "{acked} acked in all");
        eprintln!("kill test: {:?} in all", began.elapsed());
    })
    .await;
}
