//! `confab bench`: a load generator for a running confab server, and the chart
//! of its results.
//!
//! Runs on its own tokio runtime and opens plain WebSocket connections (one per
//! simulated user) with a minimal client of its own ([`ws`]), speaking the JSON
//! protocol directly: no SDK, and no JSON parse on the receive hot path (the send
//! timestamp and sequence number are found in the message body with `memchr`).
//! Progress goes to stderr once a second; the report goes to stdout (one JSON line
//! with `--json`).
//!
//! Every scenario can also drive the reference Socket.IO server
//! (`--target socketio`, see /work/shared/peers/socketio) over raw Engine.IO v4,
//! with the same message bodies, measurements and report fields.

mod chart;
mod connect;
mod fanout;
mod floor;
mod peer;
mod recv;
mod stats;
mod wire;
mod ws;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use confab_token::Secret;

use crate::client_cmd::parse_secret;

/// Most connections one run may open (the default open-file limit is 20,000).
const MAX_CONNECTIONS: usize = 15_000;
/// Logins in progress at once.
const CONNECT_CONCURRENCY: usize = 200;

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
    /// Fan-out at increasing rates (same members all along) until p99 latency
    /// passes a bound or deliveries are lost: one line per step, then the
    /// saturation point (the highest rate that met the bound).
    ///
    /// Example: confab bench sweep --app-id N --secret S --members 1000 --rates 100,200,500,1000
    Sweep(SweepArgs),
    /// P sender/receiver pairs of durable Text at the highest rate the server
    /// sustains (each sender keeps W requests in flight).
    Peer(PeerArgs),
    /// N clients log in as fast as possible (200 at a time), then idle 3 s.
    /// Reports logins/s and, with --server-pid, server memory per connection.
    Connect(ConnectArgs),
    /// What a fan-out costs this machine's kernel alone: M loopback TCP
    /// connections (the members' ends in a child process that reads them with
    /// one epoll loop), and R times a second one frame written to each, spread
    /// over all CPUs, with no server, WebSocket or JSON work. Latency runs from
    /// a burst's due time to the kernel's receive time at the member's socket,
    /// as in fanout; its p99 is the least any server that writes each message
    /// to each member on its own can reach for M members here (unless the
    /// report says the bursts queued).
    ///
    /// Example: confab bench floor --members 10000 --rate 10 --duration 5
    Floor(FloorArgs),
    /// The members' side of `floor` (started by it).
    #[command(hide = true)]
    FloorSink(FloorSinkArgs),
    /// Draw an SVG chart (and a PNG when `rsvg-convert` is installed) of the
    /// JSON lines that bench/compare.sh writes: confab beside Socket.IO.
    ///
    /// Example: confab bench chart --input bench/results/latest.jsonl --output bench/results/latest.svg
    Chart(ChartArgs),
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
    /// Print JSON (one object per line) instead of a human-readable report.
    #[arg(long)]
    json: bool,
    /// The server's process id (same machine): report its CPU seconds and RSS
    /// over the measured window.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Threads that receive and measure (each serves many connections with one
    /// epoll loop) [default: one per two CPUs, at most 8].
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    recv_threads: usize,
}

/// The room and its messages (fanout and sweep).
#[derive(Debug, Clone, Args)]
struct Load {
    /// Room members (receivers).
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Sending users (they enter the room too but are not counted as members).
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Message body size in bytes (before base64 for command).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Message type (confab only).
    #[arg(long = "type", value_enum, default_value_t = Kind::Text)]
    kind: Kind,
    /// Message priority (confab only).
    #[arg(long, value_enum, default_value_t = Priority::High)]
    priority: Priority,
    /// Most seconds to wait for outstanding deliveries after sending (the wait
    /// also ends after 2 s without a delivery).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    drain_max: u64,
}

#[derive(Debug, Args)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// The server to drive.
    #[arg(long, value_enum, default_value_t = Target::Confab)]
    target: Target,
    #[command(flatten)]
    load: Load,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    duration: u64,
}

#[derive(Debug, Args)]
struct SweepArgs {
    #[command(flatten)]
    common: Common,
    /// The server to drive.
    #[arg(long, value_enum, default_value_t = Target::Confab)]
    target: Target,
    #[command(flatten)]
    load: Load,
    /// The rates to try, messages/s, in order (instead of --start/--factor/--max).
    #[arg(long, value_name = "R,R,...", value_delimiter = ',')]
    rates: Vec<u64>,
    /// First rate, messages/s.
    #[arg(long, default_value_t = 100, conflicts_with = "rates")]
    start: u64,
    /// Each next rate is this many times the last.
    #[arg(long, default_value_t = 2.0, conflicts_with = "rates")]
    factor: f64,
    /// Highest rate to try, messages/s.
    #[arg(long, default_value_t = 100_000, conflicts_with = "rates")]
    max: u64,
    /// Seconds of sending per step.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// A step meets the bound when its p99 latency is at most this (and nothing
    /// was lost).
    #[arg(long, value_name = "MS", default_value_t = 50.0)]
    p99_bound_ms: f64,
}

impl SweepArgs {
    /// The rates to try.
    fn rates(&self) -> Vec<u64> {
        if !self.rates.is_empty() {
            return self.rates.clone();
        }
        let mut out = Vec::new();
        let mut r = self.start as f64;
        while r.round() as u64 <= self.max && out.len() < 64 {
            let v = r.round() as u64;
            if out.last() != Some(&v) {
                out.push(v);
            }
            r *= self.factor;
        }
        out
    }
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
    /// Most seconds to wait for outstanding deliveries after sending.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    drain_max: u64,
}

#[derive(Debug, Args)]
struct ConnectArgs {
    #[command(flatten)]
    common: Common,
    /// The server to drive.
    #[arg(long, value_enum, default_value_t = Target::Confab)]
    target: Target,
    /// Clients to log in.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
}

#[derive(Debug, Args)]
struct FloorArgs {
    /// Connections (members).
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Bursts per second (one frame to every member each).
    #[arg(long, default_value_t = 10)]
    rate: u64,
    /// Seconds of bursts.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Payload bytes of each WebSocket frame (320: about confab's push of a
    /// 64-byte room message).
    #[arg(long, default_value_t = 320)]
    payload: usize,
    /// Sending threads, the members shared among them [default: one per CPU].
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    threads: usize,
    /// Print JSON (one object on one line) instead of a human-readable report.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct FloorSinkArgs {
    /// Where `floor` listens.
    #[arg(long)]
    addr: std::net::SocketAddr,
    /// Connections to make.
    #[arg(long)]
    connections: usize,
}

#[derive(Debug, Args)]
struct ChartArgs {
    /// JSON lines from `confab bench ... --json` (as bench/compare.sh writes them).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "bench/results/latest.jsonl"
    )]
    input: PathBuf,
    /// The SVG to write [default: the input with .svg].
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Also write a PNG beside the SVG with `rsvg-convert`, if it is installed.
    #[arg(long)]
    png: bool,
    /// A line under the title (e.g. the machine and date).
    #[arg(long, value_name = "TEXT")]
    subtitle: Option<String>,
}

/// Which server a scenario drives.
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
    match &args.scenario {
        Scenario::Chart(a) => return chart::run(a),
        Scenario::Floor(a) => {
            a.validate()?;
            return floor::floor(a);
        }
        Scenario::FloorSink(a) => return floor::sink(a),
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the bench runtime")?;
    let report = match args.scenario {
        Scenario::Fanout(a) => {
            a.validate()?;
            rt.block_on(fanout::fanout(&a))?
        }
        Scenario::Sweep(a) => {
            a.validate()?;
            rt.block_on(fanout::sweep(&a))?
        }
        Scenario::Peer(a) => {
            a.validate()?;
            rt.block_on(peer::peer(&a))?
        }
        Scenario::Connect(a) => {
            a.validate()?;
            rt.block_on(connect::connect(&a))?
        }
        Scenario::Chart(_) | Scenario::Floor(_) | Scenario::FloorSink(_) => {
            unreachable!("handled above")
        }
    };
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(report)
}

/// A short id unique to this run (process id and clock), for user IDs and rooms.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:x}", std::process::id(), nanos & 0xfffff)
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

fn check_rate(rate: u64, what: &str) -> anyhow::Result<()> {
    if !(1..=1_000_000).contains(&rate) {
        bail!("{what} must be 1..=1000000 messages/s");
    }
    Ok(())
}

impl Load {
    fn validate(&self, what: &str) -> anyhow::Result<()> {
        if self.members == 0 {
            bail!("--members must be at least 1");
        }
        if !(1..=1000).contains(&self.senders) {
            bail!("--senders must be 1..=1000");
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
        if !(1..=600).contains(&self.drain_max) {
            bail!("--drain-max must be 1..=600 seconds");
        }
        check_connections(self.members + self.senders, what)
    }
}

impl FanoutArgs {
    fn validate(&self) -> anyhow::Result<()> {
        check_rate(self.rate, "--rate")?;
        check_duration(self.duration)?;
        self.load.validate("this fanout run")
    }
}

impl SweepArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if self.rates.is_empty() {
            check_rate(self.start, "--start")?;
            check_rate(self.max, "--max")?;
            if self.factor.is_nan() || self.factor <= 1.0 {
                bail!("--factor must be greater than 1");
            }
            if self.start > self.max {
                bail!("--start must not be above --max");
            }
        }
        for &r in &self.rates {
            check_rate(r, "each of --rates")?;
        }
        if self.p99_bound_ms.is_nan() || self.p99_bound_ms <= 0.0 {
            bail!("--p99-bound-ms must be positive");
        }
        check_duration(self.duration)?;
        self.load.validate("this sweep")
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
        if !(1..=600).contains(&self.drain_max) {
            bail!("--drain-max must be 1..=600 seconds");
        }
        check_duration(self.duration)?;
        check_connections(self.pairs * 2, "this peer run")
    }
}

impl FloorArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if self.members == 0 {
            bail!("--members must be at least 1");
        }
        if !(1..=1000).contains(&self.rate) {
            bail!("--rate must be 1..=1000 bursts/s");
        }
        if !(1..=64 * 1024).contains(&self.payload) {
            bail!("--payload must be 1..=65536 bytes");
        }
        if self.threads > 64 {
            bail!("--threads must be at most 64");
        }
        check_duration(self.duration)?;
        // Both ends are open files, each in its own process.
        check_connections(self.members, "this floor run")
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        scenario: Scenario,
    }

    fn sweep(args: &[&str]) -> SweepArgs {
        let mut all = vec!["x", "sweep"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).expect("parses").scenario {
            Scenario::Sweep(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sweep_rates() {
        assert_eq!(sweep(&["--rates", "100,200,500"]).rates(), [100, 200, 500]);
        assert_eq!(
            sweep(&["--start", "100", "--factor", "2", "--max", "1000"]).rates(),
            [100, 200, 400, 800]
        );
        assert_eq!(
            sweep(&["--start", "10", "--factor", "1.5", "--max", "40"]).rates(),
            [10, 15, 23, 34]
        );
        assert!(sweep(&["--factor", "1"]).validate().is_err());
        assert!(Cli::try_parse_from(["x", "sweep", "--rates", "1", "--start", "5"]).is_err());
    }
}
