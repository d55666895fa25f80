//! Measurements: latency histograms and delivery counts (sharded so receivers on
//! different threads rarely meet), server CPU and memory from `/proc`, progress
//! lines, and the report helpers shared by the scenarios.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Shards of [`Stats`] (receivers record into shard `i % SHARDS`).
const SHARDS: usize = 32;
/// Largest latency the histograms hold (10 minutes, in µs); larger values saturate.
pub(super) const MAX_LATENCY_US: u64 = 600_000_000;
/// The drain after sending ends when nothing arrived for this long.
const DRAIN_IDLE: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What one shard has seen since it was last taken.
#[derive(Debug)]
pub(super) struct Tally {
    pub(super) hist: Histogram<u64>,
    pub(super) unique: u64,
    pub(super) duplicated: u64,
    /// Wall-clock µs ([`wall_us`]) of the latest delivery.
    pub(super) last_us: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            hist: new_histogram(),
            unique: 0,
            duplicated: 0,
            last_us: 0,
        }
    }
    fn add(&mut self, other: &Tally) {
        self.hist
            .add(&other.hist)
            .expect("histograms with equal bounds");
        self.unique += other.unique;
        self.duplicated += other.duplicated;
        self.last_us = self.last_us.max(other.last_us);
    }
}

/// One shard on its own cache lines.
#[derive(Debug)]
#[repr(align(128))]
struct Shard(Mutex<Tally>);

/// Latency (µs) and delivery counts, sharded.
#[derive(Debug)]
pub(super) struct Stats {
    shards: Vec<Shard>,
}

impl Stats {
    pub(super) fn new() -> Stats {
        Stats {
            shards: (0..SHARDS)
                .map(|_| Shard(Mutex::new(Tally::new())))
                .collect(),
        }
    }

    /// Records a batch: latencies, new and duplicated deliveries, arrival time.
    pub(super) fn record(&self, shard: usize, lat: &[u64], new: u64, dup: u64, now_us: u64) {
        let mut t = lock(&self.shards[shard % SHARDS].0);
        for &v in lat {
            t.hist.saturating_record(v);
        }
        t.unique += new;
        t.duplicated += dup;
        t.last_us = t.last_us.max(now_us);
    }

    /// Unique deliveries so far (since the last `take`).
    pub(super) fn unique(&self) -> u64 {
        self.shards.iter().map(|s| lock(&s.0).unique).sum()
    }

    /// Everything since the last `take`, merged; the shards start over.
    pub(super) fn take(&self) -> Tally {
        let mut all = Tally::new();
        for s in &self.shards {
            let t = std::mem::replace(&mut *lock(&s.0), Tally::new());
            all.add(&t);
        }
        all
    }
}

/// A microsecond histogram with 3 significant digits, 1 µs to 10 minutes.
pub(super) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// p50/p99/p999/max in milliseconds (null when empty).
pub(super) fn quantiles(h: &Histogram<u64>) -> [Option<f64>; 4] {
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

pub(super) fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms"))
}

pub(super) fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A growable bit set of sequence numbers; `insert` says whether it was new.
#[derive(Debug, Default)]
pub(super) struct Bits(Vec<u64>);

impl Bits {
    pub(super) fn insert(&mut self, i: u64) -> bool {
        let (word, bit) = ((i / 64) as usize, i % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let was = self.0[word] & (1 << bit) != 0;
        self.0[word] |= 1 << bit;
        !was
    }
    pub(super) fn contains(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// Prints `line()` to stderr once a second until dropped.
#[derive(Debug)]
pub(super) struct Progress(tokio::task::JoinHandle<()>);

impl Progress {
    pub(super) fn start(line: impl Fn() -> String + Send + 'static) -> Progress {
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
pub(super) struct Setup {
    pub(super) ready: AtomicU64,
    pub(super) failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Setup {
    pub(super) fn fail(&self, e: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = lock(&self.first_error);
        if first.is_none() {
            *first = Some(format!("{e:#}"));
        }
    }
    pub(super) fn first_error(&self) -> Option<String> {
        lock(&self.first_error).clone()
    }
    /// Waits until `n` tasks are ready; fails on the first failure.
    pub(super) async fn wait(&self, n: usize) -> anyhow::Result<()> {
        loop {
            if self.failed.load(Ordering::Relaxed) > 0 {
                bail!("set-up failed: {}", self.first_error().unwrap_or_default());
            }
            if self.ready.load(Ordering::Relaxed) >= n as u64 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits until `target()` deliveries arrived, nothing arrived for 2 s, or
/// `max` passed.
pub(super) async fn drain(stats: &Stats, max: Duration, target: impl Fn() -> u64) {
    let started = Instant::now();
    let mut last = stats.unique();
    let mut last_change = Instant::now();
    loop {
        let now = stats.unique();
        if now >= target() || last_change.elapsed() >= DRAIN_IDLE || started.elapsed() >= max {
            return;
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Microseconds since the Unix epoch: the clock of send times in message
/// bodies and of receive times (the kernel's receive timestamps use it too).
pub(super) fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// End of the measured window: the later of `sent_end` (at wall-clock
/// `sent_end_us`) and the last delivery (wall-clock `last_us`).
pub(super) fn window_end(sent_end: Instant, sent_end_us: u64, last_us: u64) -> Instant {
    sent_end + Duration::from_micros(last_us.saturating_sub(sent_end_us))
}

// ---------------------------------------------------------------- server

/// CPU seconds and RSS of the server process.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServerSample {
    cpu_s: f64,
    pub(super) rss_kb: u64,
}

pub(super) fn sample(pid: Option<u32>) -> anyhow::Result<Option<ServerSample>> {
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
pub(super) struct ServerUse {
    pub(super) cpu_s: f64,
    pub(super) rss_before_kb: u64,
    pub(super) rss_kb: u64,
}

pub(super) fn server_use(
    before: Option<ServerSample>,
    after: Option<ServerSample>,
) -> Option<ServerUse> {
    let (b, a) = (before?, after?);
    Some(ServerUse {
        cpu_s: (a.cpu_s - b.cpu_s).max(0.0),
        rss_before_kb: b.rss_kb,
        rss_kb: a.rss_kb,
    })
}

/// CPU seconds this process (the load generator) has used.
pub(super) fn own_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

// ---------------------------------------------------------------- reports

pub(super) fn print_report(json: bool, report: &Value, human: &str) {
    if json {
        println!("{report}");
    } else {
        print!("{human}");
    }
}

pub(super) fn server_fields(
    report: &mut Value,
    server: Option<ServerUse>,
    work: f64,
    work_name: &str,
) {
    let per_cpu = server
        .filter(|s| s.cpu_s > 0.0)
        .map(|s| round3(work / s.cpu_s));
    report["server_cpu_s"] = json!(server.map(|s| round3(s.cpu_s)));
    report[work_name] = json!(per_cpu);
    report["server_rss_kb"] = json!(server.map(|s| s.rss_kb));
    report["server_rss_before_kb"] = json!(server.map(|s| s.rss_before_kb));
}

/// Adds the generator's own CPU seconds over the window (`bench_cpu_s`).
pub(super) fn bench_fields(report: &mut Value, before: Option<f64>, after: Option<f64>) {
    let used = before.zip(after).map(|(b, a)| round3((a - b).max(0.0)));
    report["bench_cpu_s"] = json!(used);
}

pub(super) fn server_line(server: Option<ServerUse>, work: f64, unit: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits() {
        let mut b = Bits::default();
        assert!(b.insert(130));
        assert!(!b.insert(130));
        assert!(b.contains(130));
        assert!(!b.contains(5));
    }

    #[test]
    fn stats_take_resets() {
        let s = Stats::new();
        s.record(1, &[1000, 2000], 2, 0, 50);
        s.record(40, &[3000], 1, 1, 70);
        assert_eq!(s.unique(), 3);
        let t = s.take();
        assert_eq!((t.unique, t.duplicated, t.last_us), (3, 1, 70));
        assert_eq!(t.hist.len(), 3);
        assert_eq!(s.unique(), 0);
        assert_eq!(s.take().hist.len(), 0);
    }
}
