//! `confab bench`: a load generator for a running confab server.
//!
//! Runs on its own tokio runtime and opens plain WebSocket connections (one per
//! simulated user), speaking the JSON protocol directly: no SDK, and no full JSON
//! parse on the receive hot path (the send timestamp and sequence number are found
//! in the message body by substring search). Progress goes to stderr once a second;
//! the report goes to stdout (one JSON line with `--json`).
//!
//! `fanout` and `peer` can also drive the reference Socket.IO server
//! (`--target socketio`, see /work/shared/peers/socketio) over raw Engine.IO v4, with
//! the same message bodies, measurements and report fields.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use clap::{Args, Subcommand, ValueEnum};
use confab_token::{Mode, Secret};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Most connections one run may open (the default open-file limit is 20,000).
const MAX_CONNECTIONS: usize = 15_000;
/// Logins in progress at once.
const CONNECT_CONCURRENCY: usize = 200;
/// Histogram shards (receivers record into shard `i % SHARDS`).
const SHARDS: usize = 32;
/// Largest latency the histograms hold (10 minutes, in µs); larger values saturate.
const MAX_LATENCY_US: u64 = 600_000_000;
/// Receive loops send a ping this often so the server's heartbeat stays happy.
const PING_EVERY: Duration = Duration::from_secs(10);
/// The drain after sending ends when nothing arrived for this long.
const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// ... or at the latest after this long.
const DRAIN_MAX: Duration = Duration::from_secs(30);

/// Measure a running server: room fan-out, peer throughput, login rate.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// One room of M members; S senders (not counted as members) send R messages/s
    /// in total for T seconds. Reports deliveries/s, end-to-end latency, lost and
    /// duplicated deliveries.
    Fanout(FanoutArgs),
    /// P sender/receiver pairs of durable Text at the highest rate the server
    /// sustains (each sender keeps W requests in flight).
    Peer(PeerArgs),
    /// N clients log in as fast as possible (200 at a time), then idle 3 s.
    /// Reports logins/s and, with --server-pid, server memory per connection.
    Connect(ConnectArgs),
}

/// Where the server is and how to report.
#[derive(Debug, Clone, Args)]
struct Common {
    /// WebSocket URL of the server [default: ws://127.0.0.1:8080/ws for confab,
    /// ws://127.0.0.1:3000 for socketio].
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// The AppID (required for confab; ignored for socketio).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    app_id: Option<u32>,
    /// The app's ServerSecret (tokens are minted locally; required for confab,
    /// ignored for socketio).
    #[arg(long, value_name = "SECRET", env = "CONFAB_SECRET", hide_env_values = true,
          value_parser = parse_secret)]
    secret: Option<Secret>,
    /// Print one JSON object on one line instead of a human-readable report.
    #[arg(long)]
    json: bool,
    /// The server's process id (same machine): report its CPU seconds and RSS
    /// over the measured window.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    Secret::new(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// The server to drive.
    #[arg(long, value_enum, default_value_t = Target::Confab)]
    target: Target,
    /// Room members (receivers).
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Sending users (they enter the room too but are not counted as members).
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Message body size in bytes (before base64 for command).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Message type (confab only).
    #[arg(long = "type", value_enum, default_value_t = Kind::Text)]
    kind: Kind,
    /// Message priority (confab only).
    #[arg(long, value_enum, default_value_t = Priority::High)]
    priority: Priority,
}

#[derive(Debug, Args)]
struct PeerArgs {
    #[command(flatten)]
    common: Common,
    /// The server to drive.
    #[arg(long, value_enum, default_value_t = Target::Confab)]
    target: Target,
    /// Sender/receiver pairs.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Requests each sender keeps in flight.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
}

#[derive(Debug, Args)]
struct ConnectArgs {
    #[command(flatten)]
    common: Common,
    /// Clients to log in.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
}

/// Which server `fanout` and `peer` drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// confab's JSON protocol (login with a locally minted token).
    Confab,
    /// The reference Socket.IO server, over raw Engine.IO v4 (no auth).
    Socketio,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Confab => "confab",
            Target::Socketio => "socketio",
        }
    }
}

/// How to reach the target: URL, protocol and (for confab) credentials.
#[derive(Debug, Clone)]
struct Conn {
    target: Target,
    url: String,
    auth: Option<(u32, Arc<Secret>)>,
}

impl Conn {
    fn new(c: &Common, target: Target) -> anyhow::Result<Conn> {
        let url = c.url.clone().unwrap_or_else(|| {
            match target {
                Target::Confab => "ws://127.0.0.1:8080/ws",
                Target::Socketio => "ws://127.0.0.1:3000",
            }
            .to_owned()
        });
        let auth = match target {
            Target::Confab => {
                let (Some(app), Some(secret)) = (c.app_id, c.secret.clone()) else {
                    bail!(
                        "--app-id and --secret (or CONFAB_SECRET) are required for --target confab"
                    );
                };
                Some((app, Arc::new(secret)))
            }
            Target::Socketio => None,
        };
        Ok(Conn { target, url, auth })
    }

    /// Connects as `user` (confab: logs in and waits for `syncComplete`;
    /// socketio: completes the Engine.IO/Socket.IO handshake).
    async fn open(&self, user: &str) -> anyhow::Result<Ws> {
        match &self.auth {
            Some((app, secret)) => login(&self.url, *app, secret, user).await,
            None => sio_connect(&self.url, user).await,
        }
    }

    /// Enters `room` and waits for the success reply.
    async fn join(&self, ws: &mut Ws, room: &str) -> anyhow::Result<()> {
        match self.target {
            Target::Confab => {
                request(ws, 1, "enterRoom", json!({"roomInfo":{"roomID":room}})).await
            }
            Target::Socketio => sio_request(ws, 1, json!(["join", room])).await,
        }
    }

    /// Parses an ack/reply frame: `(id, ok)`.
    fn reply(&self, frame: &str) -> Option<(u64, bool)> {
        match self.target {
            Target::Confab => reply_id(frame),
            Target::Socketio => sio_ack(frame),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Text,
    Command,
    Barrage,
}

impl Kind {
    fn code(self) -> u32 {
        match self {
            Kind::Text => 1,
            Kind::Command => 2,
            Kind::Barrage => 20,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Command => "command",
            Kind::Barrage => "barrage",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Priority {
    Low,
    Medium,
    High,
}

impl Priority {
    fn code(self) -> u32 {
        match self {
            Priority::Low => 1,
            Priority::Medium => 2,
            Priority::High => 3,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
        }
    }
}

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the bench runtime")?;
    let report = match args.scenario {
        Scenario::Fanout(a) => {
            a.validate()?;
            rt.block_on(fanout(&a))?
        }
        Scenario::Peer(a) => {
            a.validate()?;
            rt.block_on(peer(&a))?
        }
        Scenario::Connect(a) => {
            a.validate()?;
            rt.block_on(connect(&a))?
        }
    };
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(report)
}

// ---------------------------------------------------------------- validation

fn check_connections(n: usize, what: &str) -> anyhow::Result<()> {
    if n > MAX_CONNECTIONS {
        bail!(
            "{what} would open {n} connections; at most {MAX_CONNECTIONS} per run \
             (each connection is an open file on both sides and the default limit is \
             20,000 — run several bench processes for larger loads)"
        );
    }
    if let Some(limit) = open_file_limit() {
        if n as u64 + 64 > limit {
            bail!(
                "{what} would open {n} connections but this process may only open {limit} \
                 files (raise it with `ulimit -n`)"
            );
        }
    }
    Ok(())
}

fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn check_duration(secs: u64) -> anyhow::Result<()> {
    if !(1..=600).contains(&secs) {
        bail!("--duration must be 1..=600 seconds");
    }
    Ok(())
}

impl FanoutArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if self.members == 0 {
            bail!("--members must be at least 1");
        }
        if !(1..=1000).contains(&self.senders) {
            bail!("--senders must be 1..=1000");
        }
        if !(1..=1_000_000).contains(&self.rate) {
            bail!("--rate must be 1..=1000000");
        }
        let max_payload = if self.kind == Kind::Command {
            5 * 1024
        } else {
            32 * 1024
        };
        if self.payload > max_payload {
            bail!(
                "--payload must be at most {max_payload} bytes for {}",
                self.kind.name()
            );
        }
        check_duration(self.duration)?;
        check_connections(self.members + self.senders, "this fanout run")
    }
}

impl PeerArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if self.pairs == 0 {
            bail!("--pairs must be at least 1");
        }
        if !(1..=1024).contains(&self.window) {
            bail!("--window must be 1..=1024");
        }
        if self.payload > 32 * 1024 {
            bail!("--payload must be at most 32768 bytes");
        }
        check_duration(self.duration)?;
        check_connections(self.pairs * 2, "this peer run")
    }
}

impl ConnectArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if self.clients == 0 {
            bail!("--clients must be at least 1");
        }
        check_connections(self.clients, "this connect run")
    }
}

// ---------------------------------------------------------------- server stats

/// CPU seconds and RSS of the server process.
#[derive(Debug, Clone, Copy)]
struct ServerSample {
    cpu_s: f64,
    rss_kb: u64,
}

fn sample(pid: Option<u32>) -> anyhow::Result<Option<ServerSample>> {
    let Some(pid) = pid else {
        return Ok(None);
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat (is --server-pid right?)"))?;
    let after_name = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("unexpected /proc/PID/stat")?;
    // Fields after the name start at field 3 (state); utime is 14, stime 15.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse()
            .context("bad /proc/PID/stat")
    };
    let ticks = tick(11)? + tick(12)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Some(ServerSample {
        cpu_s: ticks as f64 / 100.0,
        rss_kb,
    }))
}

/// The server's use over a measured window.
#[derive(Debug, Clone, Copy)]
struct ServerUse {
    cpu_s: f64,
    rss_before_kb: u64,
    rss_kb: u64,
}

fn server_use(before: Option<ServerSample>, after: Option<ServerSample>) -> Option<ServerUse> {
    let (b, a) = (before?, after?);
    Some(ServerUse {
        cpu_s: (a.cpu_s - b.cpu_s).max(0.0),
        rss_before_kb: b.rss_kb,
        rss_kb: a.rss_kb,
    })
}

// ---------------------------------------------------------------- helpers

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// A short id unique to this run (process id and clock), for user IDs and rooms.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:x}", std::process::id(), nanos & 0xfffff)
}

/// Latency histograms (µs), sharded so receivers rarely contend.
#[derive(Debug)]
struct Shards(Vec<Mutex<Histogram<u64>>>);

impl Shards {
    fn new() -> Shards {
        Shards((0..SHARDS).map(|_| Mutex::new(new_histogram())).collect())
    }
    fn record(&self, shard: usize, values: &[u64]) {
        if values.is_empty() {
            return;
        }
        let mut h = self.0[shard % SHARDS]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for &v in values {
            h.saturating_record(v);
        }
    }
    fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for s in &self.0 {
            let h = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            all.add(&*h).expect("histograms with equal bounds");
        }
        all
    }
}

/// A microsecond histogram with 3 significant digits, 1 µs to 10 minutes.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// p50/p99/p999/max in milliseconds (null when empty).
fn quantiles(h: &Histogram<u64>) -> [Option<f64>; 4] {
    if h.is_empty() {
        return [None; 4];
    }
    let ms = |us: u64| Some(round3(us as f64 / 1000.0));
    [
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
    ]
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms"))
}

/// A growable bit set of sequence numbers; `insert` says whether it was new.
#[derive(Debug, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn insert(&mut self, i: u64) -> bool {
        let (word, bit) = ((i / 64) as usize, i % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let was = self.0[word] & (1 << bit) != 0;
        self.0[word] |= 1 << bit;
        !was
    }
    fn contains(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// Prints `line()` to stderr once a second until dropped.
#[derive(Debug)]
struct Progress(tokio::task::JoinHandle<()>);

impl Progress {
    fn start(line: impl Fn() -> String + Send + 'static) -> Progress {
        Progress(tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!(
                    "bench [{:>4.0}s] {}",
                    started.elapsed().as_secs_f64(),
                    line()
                );
            }
        }))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Set-up progress shared by connecting tasks.
#[derive(Debug, Default)]
struct Setup {
    ready: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Setup {
    fn fail(&self, e: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if first.is_none() {
            *first = Some(format!("{e:#}"));
        }
    }
    /// Waits until `n` tasks are ready; fails on the first failure.
    async fn wait(&self, n: usize) -> anyhow::Result<()> {
        loop {
            if self.failed.load(Ordering::Relaxed) > 0 {
                let e = self
                    .first_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
                    .unwrap_or_default();
                bail!("set-up failed: {e}");
            }
            if self.ready.load(Ordering::Relaxed) >= n as u64 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Connects and logs in; returns once the server sent `syncComplete`.
async fn login(url: &str, app: u32, secret: &Secret, user: &str) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let token = confab_token::generate(secret, app, user, 3600, Mode::Gcm, unix_now())
        .context("cannot make a token")?;
    let frame = json!({"v":1,"id":0,"op":"login","data":{"appID":app,"userID":user,"token":token}});
    ws.send(Message::text(frame.to_string())).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("login of {user}: no syncComplete within 20 s"))?;
        let Some(msg) = next else {
            bail!("login of {user}: connection closed");
        };
        let Message::Text(t) = msg.with_context(|| format!("login of {user}"))? else {
            continue;
        };
        let t = t.as_str();
        if t.contains("\"push\":\"syncComplete\"") {
            return Ok(ws);
        }
        if !t.contains("\"push\"") {
            let v: Value = serde_json::from_str(t)?;
            if v["id"] == 0 && v["code"] != 0 {
                bail!("login of {user} failed: {t}");
            }
        }
    }
}

/// Sends a request and waits for its successful reply.
async fn request(ws: &mut Ws, id: u64, op: &str, data: Value) -> anyhow::Result<()> {
    let frame = json!({"v":1,"id":id,"op":op,"data":data});
    ws.send(Message::text(frame.to_string())).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("{op}: no reply within 20 s"))?;
        let Some(msg) = next else {
            bail!("{op}: connection closed");
        };
        let Message::Text(t) = msg? else { continue };
        if t.as_str().contains("\"push\"") {
            continue;
        }
        let v: Value = serde_json::from_str(t.as_str())?;
        if v["id"] == id {
            if v["code"] != 0 {
                bail!("{op} failed: {t}");
            }
            return Ok(());
        }
    }
}

/// The Engine.IO v4 WebSocket URL for `user` on a Socket.IO server at `base`.
fn sio_url(base: &str, user: &str) -> String {
    let mut url = base.trim_end_matches('/').to_owned();
    if !url.contains("/socket.io") {
        url.push_str("/socket.io/");
    }
    let user = utf8_percent_encode(user);
    if url.contains('?') {
        format!("{url}&user={user}")
    } else {
        format!("{url}?EIO=4&transport=websocket&user={user}")
    }
}

/// Percent-encodes everything but unreserved URL characters.
fn utf8_percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Next text frame before `deadline`, answering Engine.IO pings on the way.
async fn sio_next(
    ws: &mut Ws,
    deadline: tokio::time::Instant,
    what: &str,
) -> anyhow::Result<String> {
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("{what}: no answer within 20 s"))?;
        let Some(msg) = next else {
            bail!("{what}: connection closed");
        };
        let Message::Text(t) = msg.with_context(|| what.to_owned())? else {
            continue;
        };
        if t.as_str() == "2" {
            ws.send(Message::text("3")).await?;
            continue;
        }
        return Ok(t.as_str().to_owned());
    }
}

/// Connects to a Socket.IO server as `user`: waits for open (`0{...}`), sends
/// `40`, waits for `40{"sid":...}`.
async fn sio_connect(base: &str, user: &str) -> anyhow::Result<Ws> {
    let url = sio_url(base, user);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let what = format!("connect of {user}");
    let open = sio_next(&mut ws, deadline, &what).await?;
    if !open.starts_with('0') {
        bail!("{what}: expected an Engine.IO open packet, got {open}");
    }
    ws.send(Message::text("40")).await?;
    loop {
        let t = sio_next(&mut ws, deadline, &what).await?;
        if t.starts_with("40") {
            return Ok(ws);
        }
        if t.starts_with("44") {
            bail!("{what} refused: {t}");
        }
    }
}

/// Sends the event `args` (a JSON array) with ack id `ack` and waits for a
/// `{"code":0}` ack.
async fn sio_request(ws: &mut Ws, ack: u64, args: Value) -> anyhow::Result<()> {
    let what = format!("{} request", args[0]);
    ws.send(Message::text(format!("42{ack}{args}"))).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let t = sio_next(ws, deadline, &what).await?;
        if let Some((id, ok)) = sio_ack(&t) {
            if id == ack {
                if !ok {
                    bail!("{what} failed: {t}");
                }
                return Ok(());
            }
        }
    }
}

/// Parses a Socket.IO ack `43<id>[...]`: the id and whether it carries `"code":0`.
fn sio_ack(frame: &str) -> Option<(u64, bool)> {
    let rest = frame.strip_prefix("43")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    let id = rest[..end].parse().ok()?;
    let tail = &rest[end..];
    Some((
        id,
        tail.contains("\"code\":0,") || tail.contains("\"code\":0}"),
    ))
}

/// Calls `found(sent_us, seq)` for the body in a Socket.IO push: the last string
/// of the event array (bodies never contain quotes or backslashes).
fn scan_sio_body(frame: &str, mut found: impl FnMut(u64, u64)) {
    let Some(inner) = frame.strip_suffix("\"]") else {
        return;
    };
    let Some(i) = inner.rfind('"') else {
        return;
    };
    if let Some((t, seq)) = parse_body(&inner[i + 1..]) {
        found(t, seq);
    }
}

/// `{send µs}:{seq}:...` → `(send µs, seq)`.
fn parse_body(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.split(':');
    let t = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some((t, seq))
}

/// A message body: `{send µs}:{seq}:` padded with `x` to `len` bytes.
fn body(sent_us: u64, seq: u64, len: usize) -> String {
    let mut b = format!("{sent_us}:{seq}:");
    if b.len() < len {
        b.extend(std::iter::repeat_n('x', len - b.len()));
    }
    b
}

/// Calls `found(sent_us, seq)` for each message body in a push frame.
fn scan_bodies(frame: &str, base64: bool, mut found: impl FnMut(u64, u64)) {
    const KEY: &str = "\"message\":\"";
    let mut rest = frame;
    while let Some(i) = rest.find(KEY) {
        rest = &rest[i + KEY.len()..];
        let field = &rest[..rest.find('"').unwrap_or(rest.len())];
        let decoded;
        let text = if base64 {
            let n = field.len().min(48) / 4 * 4;
            decoded = base64::engine::general_purpose::STANDARD
                .decode(&field[..n])
                .unwrap_or_default();
            std::str::from_utf8(&decoded).unwrap_or("")
        } else {
            field
        };
        if let Some((t, seq)) = parse_body(text) {
            found(t, seq);
        }
    }
}

/// Parses `"id":N` and whether `"code":0` from a reply frame.
fn reply_id(frame: &str) -> Option<(u64, bool)> {
    if frame.contains("\"push\"") {
        return None;
    }
    let i = frame.find("\"id\":")? + 5;
    let digits: &str = &frame[i..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let id = digits[..end].parse().ok()?;
    Some((
        id,
        frame.contains("\"code\":0,") || frame.contains("\"code\":0}"),
    ))
}

/// Counters the receivers update and the drain watches.
#[derive(Debug, Default)]
struct Deliveries {
    unique: AtomicU64,
    duplicated: AtomicU64,
    /// µs since origin of the latest delivery.
    last_us: AtomicU64,
}

/// Receives pushes named `push` until `stop`, recording latency and duplicates.
#[allow(clippy::too_many_arguments)]
async fn receive_loop(
    mut ws: Ws,
    target: Target,
    push: &'static str,
    base64: bool,
    origin: Instant,
    shard: usize,
    hist: Arc<Shards>,
    counts: Arc<Deliveries>,
    mut stop: watch::Receiver<bool>,
) -> Bits {
    let mut seen = Bits::default();
    let mut lat = Vec::new();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut ping_id = 1u64 << 40;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ping.tick() => {
                if target == Target::Socketio {
                    continue; // the server pings; we answer below
                }
                ping_id += 1;
                let f = format!(r#"{{"v":1,"id":{ping_id},"op":"ping","data":{{}}}}"#);
                if ws.send(Message::text(f)).await.is_err() {
                    break;
                }
            }
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { break };
                let Message::Text(t) = msg else { continue };
                let t = t.as_str();
                if target == Target::Socketio && t == "2" {
                    if ws.send(Message::text("3")).await.is_err() {
                        break;
                    }
                    continue;
                }
                if !t.contains(push) {
                    continue;
                }
                let now = origin.elapsed().as_micros() as u64;
                lat.clear();
                let (mut new, mut dup) = (0, 0);
                let mut found = |sent: u64, seq: u64| {
                    lat.push(now.saturating_sub(sent));
                    if seen.insert(seq) {
                        new += 1;
                    } else {
                        dup += 1;
                    }
                };
                match target {
                    Target::Confab => scan_bodies(t, base64, &mut found),
                    Target::Socketio => scan_sio_body(t, &mut found),
                }
                hist.record(shard, &lat);
                counts.unique.fetch_add(new, Ordering::Relaxed);
                counts.duplicated.fetch_add(dup, Ordering::Relaxed);
                counts.last_us.fetch_max(now, Ordering::Relaxed);
            }
        }
    }
    seen
}

/// Waits until `target()` deliveries arrived, nothing arrived for 2 s, or 30 s.
async fn drain(counts: &Deliveries, target: impl Fn() -> u64) {
    let started = Instant::now();
    let mut last = counts.unique.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    loop {
        let now = counts.unique.load(Ordering::Relaxed);
        if now >= target() || last_change.elapsed() >= DRAIN_IDLE || started.elapsed() >= DRAIN_MAX
        {
            return;
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// End of the measured window: the later of `sent_end` and the last delivery.
fn window_end(origin: Instant, sent_end: Instant, counts: &Deliveries) -> Instant {
    let last = origin + Duration::from_micros(counts.last_us.load(Ordering::Relaxed));
    sent_end.max(last)
}

fn print_report(json: bool, report: &Value, human: &str) {
    if json {
        println!("{report}");
    } else {
        print!("{human}");
    }
}

fn server_fields(report: &mut Value, server: Option<ServerUse>, work: f64, work_name: &str) {
    let per_cpu = server
        .filter(|s| s.cpu_s > 0.0)
        .map(|s| round3(work / s.cpu_s));
    report["server_cpu_s"] = json!(server.map(|s| round3(s.cpu_s)));
    report[work_name] = json!(per_cpu);
    report["server_rss_kb"] = json!(server.map(|s| s.rss_kb));
    report["server_rss_before_kb"] = json!(server.map(|s| s.rss_before_kb));
}

fn server_line(server: Option<ServerUse>, work: f64, unit: &str) -> String {
    match server {
        None => String::new(),
        Some(s) => {
            let per = if s.cpu_s > 0.0 {
                format!("{:.0}", work / s.cpu_s)
            } else {
                "-".to_owned()
            };
            format!(
                "  server: {:.2} CPU s ({per} {unit} per CPU s), RSS {} kB (was {} kB)\n",
                s.cpu_s, s.rss_kb, s.rss_before_kb
            )
        }
    }
}

// ---------------------------------------------------------------- fanout

async fn fanout(a: &FanoutArgs) -> anyhow::Result<ExitCode> {
    let c = &a.common;
    let run = run_id();
    let room = format!("bench{run}");
    let origin = Instant::now();
    let conn = Conn::new(c, a.target)?;
    let target = a.target;
    let push = match target {
        Target::Confab => "\"push\":\"receiveRoomMessage\"",
        Target::Socketio => "42[\"room_message\"",
    };
    let hist = Arc::new(Shards::new());
    let counts = Arc::new(Deliveries::default());
    let setup = Arc::new(Setup::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let base64 = target == Target::Confab && a.kind == Kind::Command;
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));

    let progress = {
        let (setup, members) = (setup.clone(), a.members);
        Progress::start(move || {
            format!(
                "connected {}/{members}",
                setup.ready.load(Ordering::Relaxed)
            )
        })
    };
    let mut members = Vec::with_capacity(a.members);
    for i in 0..a.members {
        let (conn, room, user) = (conn.clone(), room.clone(), format!("bm{run}x{i}"));
        let (permits, setup, hist, counts, stop) = (
            permits.clone(),
            setup.clone(),
            hist.clone(),
            counts.clone(),
            stop_rx.clone(),
        );
        members.push(tokio::spawn(async move {
            let joined = async {
                let _permit = permits.acquire().await?;
                let mut ws = conn.open(&user).await?;
                conn.join(&mut ws, &room).await?;
                anyhow::Ok(ws)
            }
            .await;
            match joined {
                Ok(ws) => {
                    setup.ready.fetch_add(1, Ordering::Relaxed);
                    receive_loop(ws, target, push, base64, origin, i, hist, counts, stop).await;
                }
                Err(e) => setup.fail(&e),
            }
        }));
    }
    let ready = setup.wait(a.members).await;
    if let Err(e) = ready {
        let _ = stop_tx.send(true);
        return Err(e);
    }
    let mut senders = Vec::with_capacity(a.senders);
    for s in 0..a.senders {
        let user = format!("bs{run}x{s}");
        let mut ws = conn.open(&user).await?;
        conn.join(&mut ws, &room).await?;
        senders.push(ws);
    }
    drop(progress);

    let total = a.rate * a.duration;
    let sent = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_failure: Arc<Mutex<Option<String>>> = Arc::default();
    let progress = {
        let (sent, counts) = (sent.clone(), counts.clone());
        let expected = total * a.members as u64;
        Progress::start(move || {
            format!(
                "sent {}/{total}, deliveries {}/{expected}",
                sent.load(Ordering::Relaxed),
                counts.unique.load(Ordering::Relaxed)
            )
        })
    };
    let before = sample(c.server_pid)?;
    let start = Instant::now();
    let n_senders = a.senders as u64;
    let mut sending = Vec::new();
    for (s, ws) in senders.into_iter().enumerate() {
        let (mut sink, mut replies) = ws.split();
        let s = s as u64;
        let mine = (s..total).step_by(a.senders).count() as u64;
        let (acked, failed, first_failure) = (acked.clone(), failed.clone(), first_failure.clone());
        // Engine.IO pings arrive on the reader; the sender answers them.
        let (pong_tx, mut pong_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let reader_conn = conn.clone();
        let reader = tokio::spawn(async move {
            let mut got = 0;
            while got < mine {
                let Ok(Some(Ok(msg))) =
                    tokio::time::timeout(Duration::from_secs(10), replies.next()).await
                else {
                    break;
                };
                let Message::Text(t) = msg else { continue };
                if target == Target::Socketio && t.as_str() == "2" {
                    let _ = pong_tx.send(());
                    continue;
                }
                if let Some((id, ok)) = reader_conn.reply(t.as_str()) {
                    if id < 100 {
                        continue;
                    }
                    got += 1;
                    if ok {
                        acked.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut f = first_failure
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if f.is_none() {
                            *f = Some(t.as_str().to_owned());
                        }
                    }
                }
            }
        });
        let (room, sent, rate, payload) = (room.clone(), sent.clone(), a.rate, a.payload);
        let (kind, priority) = (a.kind.code(), a.priority.code());
        sending.push(tokio::spawn(async move {
            for g in (s..total).step_by(n_senders as usize) {
                let at = start + Duration::from_nanos(g * 1_000_000_000 / rate);
                tokio::time::sleep_until(at.into()).await;
                while pong_rx.try_recv().is_ok() {
                    if sink.send(Message::text("3")).await.is_err() {
                        break;
                    }
                }
                let t = origin.elapsed().as_micros() as u64;
                let mut b = body(t, g, payload);
                if base64 {
                    b = base64::engine::general_purpose::STANDARD.encode(b);
                }
                let id = 100 + g;
                let f = match target {
                    Target::Confab => format!(
                        r#"{{"v":1,"id":{id},"op":"sendRoomMessage","data":{{"roomID":"{room}","type":{kind},"message":"{b}","localMessageID":{},"priority":{priority}}}}}"#,
                        g + 1
                    ),
                    Target::Socketio => format!(r#"42{id}["room_message","{room}","{b}"]"#),
                };
                if sink.send(Message::text(f)).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            let _ = reader.await;
            sink
        }));
    }
    let mut sinks = Vec::new();
    for t in sending {
        sinks.push(t.await?);
    }
    let sent_end = Instant::now();
    let members_n = a.members as u64;
    {
        let acked = acked.clone();
        drain(&counts, move || acked.load(Ordering::Relaxed) * members_n).await;
    }
    let end = window_end(origin, sent_end, &counts);
    let after = sample(c.server_pid)?;
    drop(progress);
    let _ = stop_tx.send(true);
    for m in members {
        let _ = m.await;
    }
    drop(sinks);

    let window = end.duration_since(start).as_secs_f64();
    let h = hist.merged();
    let [p50, p99, p999, max] = quantiles(&h);
    let received = counts.unique.load(Ordering::Relaxed);
    let dups = counts.duplicated.load(Ordering::Relaxed);
    let acked = acked.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let expected = acked * members_n;
    let lost = expected.saturating_sub(received);
    let per_s = received as f64 / window;
    let server = server_use(before, after);
    // Socket.IO has no types or priorities: every message counts.
    let reliable =
        target == Target::Socketio || a.kind == Kind::Text || a.priority == Priority::High;
    let mut report = json!({
        "scenario": "fanout",
        "target": target.name(),
        "url": conn.url,
        "members": a.members,
        "senders": a.senders,
        "rate": a.rate,
        "duration": a.duration,
        "payload": a.payload,
        "type": a.kind.name(),
        "priority": a.priority.name(),
        "messages_sent": sent.load(Ordering::Relaxed),
        "messages_acked": acked,
        "send_failures": failed,
        "expected_deliveries": expected,
        "deliveries": received,
        "duration_s": round3(window),
        "deliveries_per_s": round3(per_s),
        "p50_ms": p50, "p99_ms": p99, "p999_ms": p999, "max_ms": max,
        "lost": lost,
        "duplicated": dups,
    });
    server_fields(
        &mut report,
        server,
        received as f64,
        "deliveries_per_server_cpu_s",
    );
    let mut human = format!(
        "fanout ({}): {} members, {} sender(s), {} msg/s of {}/{} for {} s, {}-byte bodies\n  \
         window {window:.2} s: {received} deliveries ({per_s:.0}/s) of {expected} expected; \
         lost {lost}, duplicated {dups}, send failures {failed}\n  \
         latency p50 {}  p99 {}  p999 {}  max {}\n",
        target.name(),
        a.members,
        a.senders,
        a.rate,
        a.kind.name(),
        a.priority.name(),
        a.duration,
        a.payload,
        fmt_ms(p50),
        fmt_ms(p99),
        fmt_ms(p999),
        fmt_ms(max),
    );
    if !reliable {
        human.push_str("  (this type/priority may be shed under load by design)\n");
    }
    if let Some(f) = first_failure.lock().ok().and_then(|f| f.clone()) {
        human.push_str(&format!("  first send failure: {f}\n"));
    }
    human.push_str(&server_line(server, received as f64, "deliveries"));
    print_report(c.json, &report, &human);
    Ok(if reliable && (lost > 0 || dups > 0) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

// ---------------------------------------------------------------- peer

/// What one pair's sender did.
#[derive(Debug, Default)]
struct PairResult {
    acked: u64,
    failed: u64,
    lost: u64,
}

async fn peer(a: &PeerArgs) -> anyhow::Result<ExitCode> {
    let c = &a.common;
    let run = run_id();
    let origin = Instant::now();
    let conn = Conn::new(c, a.target)?;
    let target = a.target;
    let ack_hist = Arc::new(Shards::new());
    let hist = Arc::new(Shards::new());
    let counts = Arc::new(Deliveries::default());
    let setup = Arc::new(Setup::default());
    let acked_total = Arc::new(AtomicU64::new(0));
    let senders_done = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let duration = Duration::from_secs(a.duration);

    let progress = {
        let (setup, pairs) = (setup.clone(), a.pairs);
        Progress::start(move || {
            format!(
                "pairs connected {}/{pairs}",
                setup.ready.load(Ordering::Relaxed)
            )
        })
    };
    let mut tasks = Vec::with_capacity(a.pairs);
    for p in 0..a.pairs {
        let conn = conn.clone();
        let (sender, receiver) = (format!("ps{run}x{p}"), format!("pr{run}x{p}"));
        let (permits, setup, hist, ack_hist, counts) = (
            permits.clone(),
            setup.clone(),
            hist.clone(),
            ack_hist.clone(),
            counts.clone(),
        );
        let (stop, mut go, acked_total, senders_done) = (
            stop_rx.clone(),
            go_rx.clone(),
            acked_total.clone(),
            senders_done.clone(),
        );
        let (window, payload) = (a.window, a.payload);
        tasks.push(tokio::spawn(async move {
            let joined = async {
                let _permit = permits.acquire().await?;
                let rx = conn.open(&receiver).await?;
                let tx = conn.open(&sender).await?;
                anyhow::Ok((rx, tx))
            }
            .await;
            let (rx, tx) = match joined {
                Ok(pair) => pair,
                Err(e) => {
                    setup.fail(&e);
                    return PairResult::default();
                }
            };
            let push = match target {
                Target::Confab => "\"push\":\"receivePeerMessage\"",
                Target::Socketio => "42[\"peer_message\"",
            };
            let recv = tokio::spawn(receive_loop(
                rx,
                target,
                push,
                false,
                origin,
                p,
                hist,
                counts,
                stop,
            ));
            setup.ready.fetch_add(1, Ordering::Relaxed);
            let start = loop {
                if let Some(t) = *go.borrow_and_update() {
                    break t;
                }
                if go.changed().await.is_err() {
                    return PairResult::default();
                }
            };
            let deadline = start + duration;
            let (mut sink, mut stream) = tx.split();
            let mut sent_at: Vec<u64> = vec![0];
            let mut acked = Bits::default();
            let mut result = PairResult::default();
            let mut inflight = 0usize;
            let mut lat = Vec::new();
            loop {
                while inflight < window && Instant::now() < deadline {
                    let seq = sent_at.len() as u64;
                    let t = origin.elapsed().as_micros() as u64;
                    let b = body(t, seq, payload);
                    let f = match target {
                        Target::Confab => format!(
                            r#"{{"v":1,"id":{seq},"op":"sendPeerMessage","data":{{"toUserID":"{receiver}","type":1,"message":"{b}","localMessageID":{seq}}}}}"#
                        ),
                        Target::Socketio => {
                            format!(r#"42{seq}["peer_message","{receiver}","{b}"]"#)
                        }
                    };
                    if sink.send(Message::text(f)).await.is_err() {
                        break;
                    }
                    sent_at.push(t);
                    inflight += 1;
                }
                if inflight == 0 {
                    break;
                }
                let Ok(Some(Ok(msg))) =
                    tokio::time::timeout(Duration::from_secs(10), stream.next()).await
                else {
                    break;
                };
                let Message::Text(t) = msg else { continue };
                if target == Target::Socketio && t.as_str() == "2" {
                    if sink.send(Message::text("3")).await.is_err() {
                        break;
                    }
                    continue;
                }
                let Some((id, ok)) = conn.reply(t.as_str()) else {
                    continue;
                };
                let Some(&at) = sent_at.get(id as usize).filter(|_| id > 0) else {
                    continue;
                };
                inflight -= 1;
                if ok {
                    acked.insert(id);
                    result.acked += 1;
                    acked_total.fetch_add(1, Ordering::Relaxed);
                    lat.clear();
                    lat.push(origin.elapsed().as_micros() as u64 - at);
                    ack_hist.record(p, &lat);
                } else {
                    result.failed += 1;
                }
            }
            senders_done.fetch_add(1, Ordering::Relaxed);
            let seen = recv.await.unwrap_or_default();
            result.lost = (1..sent_at.len() as u64)
                .filter(|&i| acked.contains(i) && !seen.contains(i))
                .count() as u64;
            drop(sink);
            result
        }));
    }
    let ready = setup.wait(a.pairs).await;
    drop(progress);
    if let Err(e) = ready {
        let _ = stop_tx.send(true);
        return Err(e);
    }
    let progress = {
        let (acked_total, counts) = (acked_total.clone(), counts.clone());
        Progress::start(move || {
            format!(
                "acked {}, delivered {}",
                acked_total.load(Ordering::Relaxed),
                counts.unique.load(Ordering::Relaxed)
            )
        })
    };
    let before = sample(c.server_pid)?;
    let start = Instant::now();
    let _ = go_tx.send(Some(start));
    while senders_done.load(Ordering::Relaxed) < a.pairs as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent_end = Instant::now();
    {
        let acked_total = acked_total.clone();
        drain(&counts, move || acked_total.load(Ordering::Relaxed)).await;
    }
    let end = window_end(origin, sent_end, &counts);
    let after = sample(c.server_pid)?;
    drop(progress);
    let _ = stop_tx.send(true);
    let (mut acked, mut failed, mut lost) = (0, 0, 0);
    for t in tasks {
        let r = t.await?;
        acked += r.acked;
        failed += r.failed;
        lost += r.lost;
    }
    let window = end.duration_since(start).as_secs_f64();
    let send_window = sent_end.duration_since(start).as_secs_f64();
    let received = counts.unique.load(Ordering::Relaxed);
    let dups = counts.duplicated.load(Ordering::Relaxed);
    let [p50, p99, p999, max] = quantiles(&hist.merged());
    let [a50, a99, a999, amax] = quantiles(&ack_hist.merged());
    let acked_per_s = acked as f64 / send_window;
    let per_s = received as f64 / window;
    let server = server_use(before, after);
    let mut report = json!({
        "scenario": "peer",
        "target": target.name(),
        "url": conn.url,
        "pairs": a.pairs,
        "window": a.window,
        "duration": a.duration,
        "payload": a.payload,
        "acked": acked,
        "acked_per_s": round3(acked_per_s),
        "send_failures": failed,
        "ack_p50_ms": a50, "ack_p99_ms": a99, "ack_p999_ms": a999, "ack_max_ms": amax,
        "deliveries": received,
        "duration_s": round3(window),
        "deliveries_per_s": round3(per_s),
        "p50_ms": p50, "p99_ms": p99, "p999_ms": p999, "max_ms": max,
        "lost": lost,
        "duplicated": dups,
    });
    server_fields(
        &mut report,
        server,
        received as f64,
        "deliveries_per_server_cpu_s",
    );
    let mut human = format!(
        "peer ({}): {} pairs, window {}, {} s, {}-byte bodies\n  \
         {acked} acked ({acked_per_s:.0}/s), send failures {failed}; \
         {received} delivered in {window:.2} s ({per_s:.0}/s); lost {lost}, duplicated {dups}\n  \
         ack latency      p50 {}  p99 {}  p999 {}  max {}\n  \
         delivery latency p50 {}  p99 {}  p999 {}  max {}\n",
        target.name(),
        a.pairs,
        a.window,
        a.duration,
        a.payload,
        fmt_ms(a50),
        fmt_ms(a99),
        fmt_ms(a999),
        fmt_ms(amax),
        fmt_ms(p50),
        fmt_ms(p99),
        fmt_ms(p999),
        fmt_ms(max),
    );
    human.push_str(&server_line(server, received as f64, "deliveries"));
    print_report(c.json, &report, &human);
    Ok(if lost > 0 || dups > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

// ---------------------------------------------------------------- connect

async fn connect(a: &ConnectArgs) -> anyhow::Result<ExitCode> {
    let c = &a.common;
    let run = run_id();
    let conn = Conn::new(c, Target::Confab)?;
    let hist = Arc::new(Shards::new());
    let setup = Arc::new(Setup::default());
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let conns: Arc<Mutex<Vec<Ws>>> = Arc::default();

    let progress = {
        let (setup, n) = (setup.clone(), a.clients);
        Progress::start(move || {
            format!(
                "logged in {}/{n}, failed {}",
                setup.ready.load(Ordering::Relaxed),
                setup.failed.load(Ordering::Relaxed)
            )
        })
    };
    let before = sample(c.server_pid)?;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(a.clients);
    for i in 0..a.clients {
        let (conn, user) = (conn.clone(), format!("bc{run}x{i}"));
        let (permits, setup, hist, conns) =
            (permits.clone(), setup.clone(), hist.clone(), conns.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            let t0 = Instant::now();
            match conn.open(&user).await {
                Ok(ws) => {
                    hist.record(i, &[t0.elapsed().as_micros() as u64]);
                    conns
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(ws);
                    setup.ready.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => setup.fail(&e),
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let login_window = start.elapsed().as_secs_f64();
    let after = sample(c.server_pid)?;
    drop(progress);
    eprintln!("bench: logins done; idling 3 s");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = sample(c.server_pid)?;
    let ok = setup.ready.load(Ordering::Relaxed);
    let failed = setup.failed.load(Ordering::Relaxed);
    let first_error = setup
        .first_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let per_s = ok as f64 / login_window;
    let [p50, p99, p999, max] = quantiles(&hist.merged());
    let server = server_use(before, after).map(|mut s| {
        s.rss_kb = idle.map_or(s.rss_kb, |i| i.rss_kb);
        s
    });
    let per_conn_kb = server
        .filter(|_| ok > 0)
        .map(|s| round3((s.rss_kb as f64 - s.rss_before_kb as f64) / ok as f64));
    let mut report = json!({
        "scenario": "connect",
        "target": "confab",
        "url": conn.url,
        "clients": a.clients,
        "concurrency": CONNECT_CONCURRENCY,
        "logged_in": ok,
        "failed": failed,
        "duration_s": round3(login_window),
        "logins_per_s": round3(per_s),
        "deliveries_per_s": null,
        "p50_ms": p50, "p99_ms": p99, "p999_ms": p999, "max_ms": max,
        "lost": 0,
        "duplicated": 0,
        "first_error": first_error,
    });
    server_fields(&mut report, server, ok as f64, "logins_per_server_cpu_s");
    report["deliveries_per_server_cpu_s"] = Value::Null;
    report["server_rss_per_connection_kb"] = json!(per_conn_kb);
    let mut human = format!(
        "connect: {} clients ({CONNECT_CONCURRENCY} at a time): {ok} logged in, {failed} failed \
         in {login_window:.2} s ({per_s:.0} logins/s)\n  \
         login latency p50 {}  p99 {}  p999 {}  max {}\n",
        a.clients,
        fmt_ms(p50),
        fmt_ms(p99),
        fmt_ms(p999),
        fmt_ms(max),
    );
    if let Some(e) = &first_error {
        human.push_str(&format!("  first failure: {e}\n"));
    }
    human.push_str(&server_line(server, ok as f64, "logins"));
    if let Some(kb) = per_conn_kb {
        human.push_str(&format!(
            "  server memory per connection (after 3 s idle): {kb:.1} kB\n"
        ));
    }
    print_report(c.json, &report, &human);
    drop(conns);
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip() {
        let mut got = Vec::new();
        let text = format!(
            r#"{{"v":1,"push":"receiveRoomMessage","data":{{"messageList":[{{"type":1,"message":"{}","messageID":1}},{{"type":1,"message":"{}"}}]}}}}"#,
            body(123, 7, 64),
            body(456, 8, 4)
        );
        scan_bodies(&text, false, |t, s| got.push((t, s)));
        assert_eq!(got, [(123, 7), (456, 8)]);
        got.clear();
        let b64 = base64::engine::general_purpose::STANDARD.encode(body(99, 3, 100));
        scan_bodies(&format!(r#"{{"message":"{b64}"}}"#), true, |t, s| {
            got.push((t, s));
        });
        assert_eq!(got, [(99, 3)]);
    }

    #[test]
    fn reply_ids() {
        assert_eq!(
            reply_id(r#"{"v":1,"id":42,"code":0,"message":"ok","data":{}}"#),
            Some((42, true))
        );
        assert_eq!(
            reply_id(r#"{"v":1,"id":43,"code":6000001,"message":"bad"}"#),
            Some((43, false))
        );
        assert_eq!(reply_id(r#"{"v":1,"push":"x","data":{"id":1}}"#), None);
    }

    #[test]
    fn socketio_frames() {
        assert_eq!(sio_ack(r#"43107[{"code":0}]"#), Some((107, true)));
        assert_eq!(sio_ack(r#"437[{"code":3}]"#), Some((7, false)));
        assert_eq!(sio_ack(r#"42["room_message","r","u","1:2:x"]"#), None);
        let mut got = Vec::new();
        let b = body(123, 7, 64);
        scan_sio_body(
            &format!(r#"42["room_message","room","bob","{b}"]"#),
            |t, s| {
                got.push((t, s));
            },
        );
        scan_sio_body(
            &format!(r#"42["peer_message","bob","{}"]"#, body(5, 9, 4)),
            |t, s| {
                got.push((t, s));
            },
        );
        assert_eq!(got, [(123, 7), (5, 9)]);
        assert_eq!(
            sio_url("ws://127.0.0.1:3000/", "a b"),
            "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket&user=a%20b"
        );
        assert_eq!(
            sio_url("ws://h:1/socket.io/?EIO=4&transport=websocket", "u"),
            "ws://h:1/socket.io/?EIO=4&transport=websocket&user=u"
        );
    }

    #[test]
    fn bits() {
        let mut b = Bits::default();
        assert!(b.insert(130));
        assert!(!b.insert(130));
        assert!(b.contains(130));
        assert!(!b.contains(5));
    }
}
