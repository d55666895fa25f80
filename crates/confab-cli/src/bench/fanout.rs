//! `fanout` (one room, M members, S senders at a total rate R) and `sweep`
//! (fan-out at increasing rates until p99 passes a bound). Both set up a [`Rig`]
//! — members in one room, each with a receive loop, and senders — and run one
//! [`Rig::step`] or several on it.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use super::recv::Receivers;
use super::stats::{
    self, Progress, Setup, Stats, bench_fields, fmt_ms, own_cpu_s, print_report, quantiles, round3,
    sample, server_fields, server_line, server_use,
};
use super::wire::{Conn, Receiving, Scanner, body};
use super::ws::{OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Writer};
use super::{CONNECT_CONCURRENCY, FanoutArgs, Kind, Load, Priority, SweepArgs, Target, run_id};

/// Reply ids of sent messages start here (set-up requests use small ids).
const FIRST_SEND_ID: u64 = 100;
/// Waiting for send replies gives up after this long without one.
const REPLY_PATIENCE: Duration = Duration::from_secs(10);

/// What the senders' reply readers count.
#[derive(Debug, Default)]
struct Replies {
    acked: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

/// Members in one room with their receive loops, and the senders.
#[derive(Debug)]
struct Rig {
    conn: Conn,
    room: String,
    members: usize,
    stats: Arc<Stats>,
    replies: Arc<Replies>,
    writers: Vec<Arc<tokio::sync::Mutex<Writer>>>,
    receivers: Arc<Receivers>,
    stop: watch::Sender<bool>,
    /// The senders' reply readers.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Sequence number of the next message (continues across steps).
    next_seq: u64,
}

/// One step's load.
#[derive(Debug, Clone, Copy)]
struct StepLoad {
    rate: u64,
    duration: u64,
}

/// What one step measured.
#[derive(Debug)]
struct Step {
    sent: u64,
    acked: u64,
    failed: u64,
    expected: u64,
    received: u64,
    duplicated: u64,
    lost: u64,
    window_s: f64,
    /// Seconds the senders took (≈ the duration unless they fell behind).
    send_s: f64,
    per_s: f64,
    /// p50, p99, p999, max in ms.
    q: [Option<f64>; 4],
    server: Option<stats::ServerUse>,
    bench_cpu: (Option<f64>, Option<f64>),
    first_failure: Option<String>,
}

impl Rig {
    /// Connects `load.members` members into a fresh room, then the senders.
    async fn setup(conn: Conn, load: &Load, recv_threads: usize) -> anyhow::Result<Rig> {
        let run = run_id();
        let room = format!("bench{run}");
        let target = conn.target;
        let stats = Arc::new(Stats::new());
        let base64 = target == Target::Confab && load.kind == Kind::Command;
        let receiving = Arc::new(Receiving {
            scanner: Scanner::new(target, false, base64),
            stats: stats.clone(),
        });
        let receivers = Arc::new(Receivers::start(recv_threads, &receiving)?);
        let setup = Arc::new(Setup::default());
        let (stop, stop_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
        let progress = {
            let (setup, members) = (setup.clone(), load.members);
            Progress::start(move || {
                format!(
                    "connected {}/{members}",
                    setup.ready.load(Ordering::Relaxed)
                )
            })
        };
        let mut joining = Vec::with_capacity(load.members);
        for i in 0..load.members {
            let (conn, room, user) = (conn.clone(), room.clone(), format!("bm{run}x{i}"));
            let (permits, setup, receivers) = (permits.clone(), setup.clone(), receivers.clone());
            joining.push(tokio::spawn(async move {
                let joined = async {
                    let _permit = permits.acquire().await?;
                    let mut ws = conn.open(&user).await?;
                    conn.join(&mut ws, &room).await?;
                    receivers.add(i, ws)?;
                    anyhow::Ok(())
                }
                .await;
                match joined {
                    Ok(()) => {
                        setup.ready.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => setup.fail(&e),
                }
            }));
        }
        let ready = setup.wait(load.members).await;
        drop(progress);
        for j in joining {
            j.abort();
            let _ = j.await;
        }
        let stop_receivers = |receivers: Arc<Receivers>| {
            if let Ok(r) = Arc::try_unwrap(receivers) {
                r.finish(0);
            }
        };
        if let Err(e) = ready {
            stop_receivers(receivers);
            return Err(e);
        }
        let mut tasks = Vec::with_capacity(load.senders);
        let replies = Arc::new(Replies::default());
        let mut writers = Vec::with_capacity(load.senders);
        for s in 0..load.senders {
            let opened = async {
                let mut ws = conn.open(&format!("bs{run}x{s}")).await?;
                conn.join(&mut ws, &room).await?;
                anyhow::Ok(ws)
            }
            .await;
            let ws = match opened {
                Ok(ws) => ws,
                Err(e) => {
                    let _ = stop.send(true);
                    stop_receivers(receivers);
                    return Err(e);
                }
            };
            let writer = Arc::new(tokio::sync::Mutex::new(ws.wr));
            writers.push(writer.clone());
            tasks.push(tokio::spawn(read_replies(
                ws.rd,
                writer,
                conn.clone(),
                replies.clone(),
                stop_rx.clone(),
            )));
        }
        Ok(Rig {
            conn,
            room,
            members: load.members,
            stats,
            replies,
            writers,
            receivers,
            stop,
            tasks,
            next_seq: 0,
        })
    }

    /// Sends `step.rate` messages/s for `step.duration` s, waits for the
    /// deliveries (at most `load.drain_max` s), and measures.
    async fn step(
        &mut self,
        load: &Load,
        step: StepLoad,
        server_pid: Option<u32>,
    ) -> anyhow::Result<Step> {
        let total = step.rate * step.duration;
        let first = self.next_seq;
        self.next_seq += total;
        let members = self.members as u64;
        let acked0 = self.replies.acked.load(Ordering::Relaxed);
        let failed0 = self.replies.failed.load(Ordering::Relaxed);
        let _ = self.stats.take();
        let sent = Arc::new(AtomicU64::new(0));
        let progress = {
            let (sent, stats, rate) = (sent.clone(), self.stats.clone(), step.rate);
            Progress::start(move || {
                format!(
                    "{rate} msg/s: sent {}/{total}, deliveries {}/{}",
                    sent.load(Ordering::Relaxed),
                    stats.unique(),
                    total * members
                )
            })
        };
        let target = self.conn.target;
        let base64 = target == Target::Confab && load.kind == Kind::Command;
        let (kind, priority) = (load.kind.code(), load.priority.code());
        let n_senders = self.writers.len() as u64;
        let bench_before = own_cpu_s();
        let before = sample(server_pid)?;
        let start = Instant::now();
        let mut sending = Vec::with_capacity(self.writers.len());
        for (s, writer) in self.writers.iter().enumerate() {
            let (writer, sent, room) = (writer.clone(), sent.clone(), self.room.clone());
            let (rate, payload) = (step.rate, load.payload);
            sending.push(tokio::spawn(async move {
                let mut g = first + s as u64;
                while g < first + total {
                    let at = start + Duration::from_nanos((g - first) * 1_000_000_000 / rate);
                    tokio::time::sleep_until(at.into()).await;
                    let t = stats::wall_us();
                    let mut b = body(t, g, payload);
                    if base64 {
                        b = base64::engine::general_purpose::STANDARD.encode(b);
                    }
                    let id = FIRST_SEND_ID + g;
                    let f = match target {
                        Target::Confab => format!(
                            r#"{{"v":1,"id":{id},"op":"sendRoomMessage","data":{{"roomID":"{room}","type":{kind},"message":"{b}","localMessageID":{},"priority":{priority}}}}}"#,
                            g + 1
                        ),
                        Target::Socketio => {
                            format!(r#"42{id}["room_message","{room}","{b}"]"#)
                        }
                    };
                    if writer.lock().await.text(&f).await.is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    g += n_senders;
                }
            }));
        }
        for t in sending {
            t.await?;
        }
        let (sent_end, sent_end_us) = (Instant::now(), stats::wall_us());
        let sent = sent.load(Ordering::Relaxed);
        // Wait for the replies, then for the deliveries.
        let answered = || {
            self.replies.acked.load(Ordering::Relaxed) - acked0
                + self.replies.failed.load(Ordering::Relaxed)
                - failed0
        };
        let mut last = (answered(), Instant::now());
        while answered() < sent && last.1.elapsed() < REPLY_PATIENCE {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if answered() != last.0 {
                last = (answered(), Instant::now());
            }
        }
        {
            let replies = self.replies.clone();
            let drain_max = Duration::from_secs(load.drain_max);
            stats::drain(&self.stats, drain_max, move || {
                (replies.acked.load(Ordering::Relaxed) - acked0) * members
            })
            .await;
        }
        let after = sample(server_pid)?;
        let bench_after = own_cpu_s();
        drop(progress);
        let tally = self.stats.take();
        let end = stats::window_end(sent_end, sent_end_us, tally.last_us);
        let acked = self.replies.acked.load(Ordering::Relaxed) - acked0;
        let failed = self.replies.failed.load(Ordering::Relaxed) - failed0;
        let expected = acked * members;
        let window_s = end.duration_since(start).as_secs_f64();
        let first_failure = self
            .replies
            .first_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        Ok(Step {
            sent,
            acked,
            failed,
            expected,
            received: tally.unique,
            duplicated: tally.duplicated,
            lost: expected.saturating_sub(tally.unique),
            window_s,
            send_s: sent_end.duration_since(start).as_secs_f64(),
            per_s: tally.unique as f64 / window_s,
            q: quantiles(&tally.hist),
            server: server_use(before, after),
            bench_cpu: (bench_before, bench_after),
            first_failure,
        })
    }

    /// Stops the receivers and closes every connection.
    async fn finish(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Ok(r) = Arc::try_unwrap(self.receivers) {
            let members = self.members;
            let _ = tokio::task::spawn_blocking(move || r.finish(members)).await;
        }
    }
}

/// Reads a sender's replies (counting acks and failures) and answers pings,
/// until `stop`.
async fn read_replies(
    mut rd: super::ws::Reader,
    writer: Arc<tokio::sync::Mutex<Writer>>,
    conn: Conn,
    replies: Arc<Replies>,
    mut stop: watch::Receiver<bool>,
) {
    let sio = conn.target == Target::Socketio;
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);
    loop {
        let mut pong = None;
        loop {
            let f = match rd.try_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return,
            };
            match f.op {
                OP_TEXT if sio && f.data == b"2" => pong = Some((OP_TEXT, b"3".to_vec())),
                OP_TEXT => {
                    let Some((id, ok)) = conn.reply(f.data) else {
                        continue;
                    };
                    if id < FIRST_SEND_ID {
                        continue;
                    }
                    if ok {
                        replies.acked.fetch_add(1, Ordering::Relaxed);
                    } else {
                        replies.failed.fetch_add(1, Ordering::Relaxed);
                        let mut first = replies
                            .first_failure
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if first.is_none() {
                            *first = Some(String::from_utf8_lossy(f.data).into_owned());
                        }
                    }
                }
                OP_PING => pong = Some((OP_PONG, f.data.to_vec())),
                OP_CLOSE => return,
                _ => {}
            }
        }
        if let Some((op, data)) = pong {
            if writer.lock().await.send(op, &data).await.is_err() {
                return;
            }
        }
        tokio::select! {
            biased;
            _ = &mut stopped => return,
            n = rd.fill() => if !matches!(n, Ok(1..)) { return },
        }
    }
}

/// The report fields of one step (`fanout`'s report; `sweep` adds a few).
fn step_json(scenario: &str, conn: &Conn, load: &Load, sl: StepLoad, st: &Step) -> Value {
    let [p50, p99, p999, max] = st.q;
    let mut report = json!({
        "scenario": scenario,
        "target": conn.target.name(),
        "url": conn.url,
        "members": load.members,
        "senders": load.senders,
        "rate": sl.rate,
        "duration": sl.duration,
        "payload": load.payload,
        "type": load.kind.name(),
        "priority": load.priority.name(),
        "messages_sent": st.sent,
        "messages_acked": st.acked,
        "send_failures": st.failed,
        "send_duration_s": round3(st.send_s),
        "expected_deliveries": st.expected,
        "deliveries": st.received,
        "duration_s": round3(st.window_s),
        "deliveries_per_s": round3(st.per_s),
        "p50_ms": p50, "p99_ms": p99, "p999_ms": p999, "max_ms": max,
        "lost": st.lost,
        "duplicated": st.duplicated,
    });
    server_fields(
        &mut report,
        st.server,
        st.received as f64,
        "deliveries_per_server_cpu_s",
    );
    bench_fields(&mut report, st.bench_cpu.0, st.bench_cpu.1);
    report
}

/// Types and priorities the server may shed under load by design.
fn reliable(target: Target, load: &Load) -> bool {
    // Socket.IO has no types or priorities: every message counts.
    target == Target::Socketio || load.kind == Kind::Text || load.priority == Priority::High
}

pub(super) async fn fanout(a: &FanoutArgs) -> anyhow::Result<ExitCode> {
    let c = &a.common;
    let conn = Conn::new(c, a.target)?;
    let load = &a.load;
    let mut rig = Rig::setup(conn, load, c.recv_threads).await?;
    let sl = StepLoad {
        rate: a.rate,
        duration: a.duration,
    };
    let st = rig.step(load, sl, c.server_pid).await;
    let conn = rig.conn.clone();
    rig.finish().await;
    let st = st?;
    let report = step_json("fanout", &conn, load, sl, &st);
    let [p50, p99, p999, max] = st.q;
    let (received, expected, lost, dups, failed) =
        (st.received, st.expected, st.lost, st.duplicated, st.failed);
    let mut human = format!(
        "fanout ({}): {} members, {} sender(s), {} msg/s of {}/{} for {} s, {}-byte bodies\n  \
         window {:.2} s: {received} deliveries ({:.0}/s) of {expected} expected; \
         lost {lost}, duplicated {dups}, send failures {failed}\n  \
         latency p50 {}  p99 {}  p999 {}  max {}\n",
        conn.target.name(),
        load.members,
        load.senders,
        a.rate,
        load.kind.name(),
        load.priority.name(),
        a.duration,
        load.payload,
        st.window_s,
        st.per_s,
        fmt_ms(p50),
        fmt_ms(p99),
        fmt_ms(p999),
        fmt_ms(max),
    );
    let reliable = reliable(conn.target, load);
    if !reliable {
        human.push_str("  (this type/priority may be shed under load by design)\n");
    }
    if let Some(f) = &st.first_failure {
        human.push_str(&format!("  first send failure: {f}\n"));
    }
    human.push_str(&server_line(st.server, received as f64, "deliveries"));
    print_report(c.json, &report, &human);
    Ok(if reliable && (lost > 0 || dups > 0) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Why a sweep step ends the sweep (`None`: it met the bound).
fn step_verdict(st: &Step, sl: StepLoad, bound_ms: f64) -> Option<String> {
    if st.failed > 0 {
        return Some(format!("{} sends failed", st.failed));
    }
    if st.lost > 0 {
        return Some(format!("{} deliveries lost", st.lost));
    }
    if st.duplicated > 0 {
        return Some(format!("{} deliveries duplicated", st.duplicated));
    }
    match st.q[1] {
        None => return Some("nothing delivered".to_owned()),
        Some(p99) if p99 > bound_ms => {
            return Some(format!("p99 {p99:.2} ms > {bound_ms} ms"));
        }
        Some(_) => {}
    }
    // Senders more than 10 % late: the generator cannot offer this rate.
    if st.send_s > sl.duration as f64 * 1.1 + 0.1 {
        return Some(format!(
            "the senders needed {:.2} s for {} s of messages",
            st.send_s, sl.duration
        ));
    }
    None
}

pub(super) async fn sweep(a: &SweepArgs) -> anyhow::Result<ExitCode> {
    let c = &a.common;
    let conn = Conn::new(c, a.target)?;
    let load = &a.load;
    let rates = a.rates();
    if rates.is_empty() {
        bail!("no rates to sweep");
    }
    let mut rig = Rig::setup(conn, load, c.recv_threads).await?;
    let conn = rig.conn.clone();
    let mut best: Option<(u64, f64, Value)> = None;
    let mut stopped = None;
    let mut steps = 0;
    for (i, &rate) in rates.iter().enumerate() {
        let sl = StepLoad {
            rate,
            duration: a.duration,
        };
        eprintln!(
            "bench: sweep step {}/{}: {rate} msg/s to {} members for {} s",
            i + 1,
            rates.len(),
            load.members,
            a.duration
        );
        let st = match rig.step(load, sl, c.server_pid).await {
            Ok(st) => st,
            Err(e) => {
                rig.finish().await;
                return Err(e);
            }
        };
        steps += 1;
        let verdict = step_verdict(&st, sl, a.p99_bound_ms);
        let mut report = step_json("sweep", &conn, load, sl, &st);
        report["step"] = json!(i + 1);
        report["p99_bound_ms"] = json!(a.p99_bound_ms);
        report["within_bound"] = json!(verdict.is_none());
        let [p50, p99, p999, _] = st.q;
        let human = format!(
            "step {:>2}: {rate:>7} msg/s → {:>10.0} deliveries/s  p50 {:>10}  p99 {:>10}  \
             p999 {:>10}  lost {}  {}\n",
            i + 1,
            st.per_s,
            fmt_ms(p50),
            fmt_ms(p99),
            fmt_ms(p999),
            st.lost,
            verdict.as_deref().unwrap_or("ok"),
        );
        print_report(c.json, &report, &human);
        if let Some(why) = verdict {
            stopped = Some((rate, why));
            break;
        }
        best = Some((rate, st.per_s, report));
    }
    rig.finish().await;
    let bound = a.p99_bound_ms;
    let mut summary = json!({
        "scenario": "sweep",
        "summary": true,
        "target": conn.target.name(),
        "url": conn.url,
        "members": load.members,
        "senders": load.senders,
        "duration": a.duration,
        "payload": load.payload,
        "type": load.kind.name(),
        "priority": load.priority.name(),
        "p99_bound_ms": bound,
        "steps": steps,
        "saturation_rate": best.as_ref().map(|b| b.0),
        "saturation_deliveries_per_s": best.as_ref().map(|b| round3(b.1)),
        "saturation_p99_ms": best.as_ref().map(|b| b.2["p99_ms"].clone()),
        "saturation_deliveries_per_server_cpu_s":
            best.as_ref().map(|b| b.2["deliveries_per_server_cpu_s"].clone()),
        "stopped_at_rate": stopped.as_ref().map(|s| s.0),
        "stopped_because": stopped.as_ref().map(|s| s.1.clone()),
    });
    if summary["saturation_rate"].is_null() {
        summary["saturation_p99_ms"] = Value::Null;
        summary["saturation_deliveries_per_server_cpu_s"] = Value::Null;
    }
    let mut human = match &best {
        Some((rate, per_s, _)) => format!(
            "saturation ({}): {rate} msg/s to {} members = {per_s:.0} deliveries/s \
             with p99 ≤ {bound} ms",
            conn.target.name(),
            load.members
        ),
        None => format!(
            "saturation ({}): no rate met p99 ≤ {bound} ms without loss",
            conn.target.name()
        ),
    };
    match &stopped {
        Some((rate, why)) => human.push_str(&format!(" (stopped at {rate} msg/s: {why})\n")),
        None => human.push_str(" (every rate met the bound; try higher --max)\n"),
    }
    print_report(c.json, &summary, &human);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(lost: u64, p99: Option<f64>, send_s: f64) -> Step {
        Step {
            sent: 10,
            acked: 10,
            failed: 0,
            expected: 100,
            received: 100 - lost,
            duplicated: 0,
            lost,
            window_s: 1.0,
            send_s,
            per_s: 100.0,
            q: [p99, p99, p99, p99],
            server: None,
            bench_cpu: (None, None),
            first_failure: None,
        }
    }

    #[test]
    fn verdicts() {
        let sl = StepLoad {
            rate: 10,
            duration: 1,
        };
        assert_eq!(step_verdict(&step(0, Some(3.0), 1.0), sl, 50.0), None);
        assert!(
            step_verdict(&step(0, Some(51.0), 1.0), sl, 50.0)
                .unwrap()
                .starts_with("p99")
        );
        assert!(
            step_verdict(&step(2, Some(3.0), 1.0), sl, 50.0)
                .unwrap()
                .contains("lost")
        );
        assert!(
            step_verdict(&step(0, Some(3.0), 2.0), sl, 50.0)
                .unwrap()
                .contains("senders")
        );
        assert!(step_verdict(&step(0, None, 1.0), sl, 50.0).is_some());
    }
}
