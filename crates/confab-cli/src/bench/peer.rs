//! `peer`: P sender/receiver pairs of durable Text messages; each sender keeps W
//! requests in flight for T seconds.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use tokio::sync::{Semaphore, watch};

use super::recv::Receivers;
use super::stats::{
    self, Bits, Progress, Setup, Stats, bench_fields, fmt_ms, own_cpu_s, print_report, quantiles,
    round3, sample, server_fields, server_line, server_use,
};
use super::wire::{Conn, Receiving, Scanner, body};
use super::ws::{OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Ws};
use super::{CONNECT_CONCURRENCY, PeerArgs, Target, run_id};

/// What one pair's sender did.
#[derive(Debug, Default)]
struct PairResult {
    acked: u64,
    failed: u64,
}

/// Shared by the pairs.
#[derive(Debug)]
struct Shared {
    conn: Conn,
    ack_stats: Stats,
    acked_total: AtomicU64,
    senders_done: AtomicU64,
    window: usize,
    payload: usize,
    duration: Duration,
}

/// One sender: keeps `window` requests in flight until the deadline, then waits
/// for the outstanding replies.
async fn send_loop(
    mut tx: Ws,
    sh: &Shared,
    p: usize,
    receiver: &str,
    start: Instant,
) -> (PairResult, Bits, u64) {
    let target = sh.conn.target;
    let deadline = start + sh.duration;
    let mut sent_at: Vec<u64> = vec![0];
    let mut acked = Bits::default();
    let mut result = PairResult::default();
    let mut inflight = 0usize;
    let mut lat = Vec::new();
    'outer: loop {
        while inflight < sh.window && Instant::now() < deadline {
            let seq = sent_at.len() as u64;
            let t = stats::wall_us();
            let b = body(t, seq, sh.payload);
            let f = match target {
                Target::Confab => format!(
                    r#"{{"v":1,"id":{seq},"op":"sendPeerMessage","data":{{"toUserID":"{receiver}","type":1,"message":"{b}","localMessageID":{seq}}}}}"#
                ),
                Target::Socketio => format!(r#"42{seq}["peer_message","{receiver}","{b}"]"#),
            };
            if tx.wr.text(&f).await.is_err() {
                break 'outer;
            }
            sent_at.push(t);
            inflight += 1;
        }
        if inflight == 0 {
            break;
        }
        let mut pong = None;
        let mut any = false;
        while let Ok(Some(f)) = tx.rd.try_frame() {
            match f.op {
                OP_TEXT if target == Target::Socketio && f.data == b"2" => {
                    pong = Some((OP_TEXT, b"3".to_vec()));
                }
                OP_TEXT => {
                    let Some((id, ok)) = sh.conn.reply(f.data) else {
                        continue;
                    };
                    let Some(&at) = sent_at.get(id as usize).filter(|_| id > 0) else {
                        continue;
                    };
                    any = true;
                    inflight -= 1;
                    if ok {
                        acked.insert(id);
                        result.acked += 1;
                        sh.acked_total.fetch_add(1, Ordering::Relaxed);
                        lat.push(stats::wall_us().saturating_sub(at));
                    } else {
                        result.failed += 1;
                    }
                }
                OP_PING => pong = Some((OP_PONG, f.data.to_vec())),
                OP_CLOSE => break 'outer,
                _ => {}
            }
        }
        if !lat.is_empty() {
            sh.ack_stats.record(p, &lat, 0, 0, 0);
            lat.clear();
        }
        if let Some((op, data)) = pong {
            if tx.wr.send(op, &data).await.is_err() {
                break;
            }
        }
        let open = Instant::now() < deadline;
        if (any && inflight < sh.window && open) || (inflight == 0 && !open) {
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(10), tx.rd.fill()).await {
            Ok(Ok(1..)) => {}
            _ => break,
        }
    }
    (result, acked, sent_at.len() as u64 - 1)
}

pub(super) async fn peer(a: &PeerArgs) -> anyhow::Result<ExitCode> {
    let c = &a.common;
    let run = run_id();
    let conn = Conn::new(c, a.target)?;
    let target = a.target;
    let stats = Arc::new(Stats::new());
    let receiving = Arc::new(Receiving {
        scanner: Scanner::new(target, true, false),
        stats: stats.clone(),
    });
    let shared = Arc::new(Shared {
        conn: conn.clone(),
        ack_stats: Stats::new(),
        acked_total: AtomicU64::new(0),
        senders_done: AtomicU64::new(0),
        window: a.window,
        payload: a.payload,
        duration: Duration::from_secs(a.duration),
    });
    let receivers = Arc::new(Receivers::start(c.recv_threads, &receiving)?);
    let setup = Arc::new(Setup::default());
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));

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
        let (sender, receiver) = (format!("ps{run}x{p}"), format!("pr{run}x{p}"));
        let (permits, setup, shared, receivers) = (
            permits.clone(),
            setup.clone(),
            shared.clone(),
            receivers.clone(),
        );
        let mut go = go_rx.clone();
        tasks.push(tokio::spawn(async move {
            let joined = async {
                let _permit = permits.acquire().await?;
                let rx = shared.conn.open(&receiver).await?;
                let tx = shared.conn.open(&sender).await?;
                receivers.add(p, rx)?;
                anyhow::Ok(tx)
            }
            .await;
            drop(receivers);
            let tx = match joined {
                Ok(tx) => tx,
                Err(e) => {
                    setup.fail(&e);
                    return None;
                }
            };
            setup.ready.fetch_add(1, Ordering::Relaxed);
            let start = (*go.wait_for(Option::is_some).await.ok()?)?;
            let pair = send_loop(tx, &shared, p, &receiver, start).await;
            shared.senders_done.fetch_add(1, Ordering::Relaxed);
            Some(pair)
        }));
    }
    let ready = setup.wait(a.pairs).await;
    drop(progress);
    if let Err(e) = ready {
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        if let Ok(r) = Arc::try_unwrap(receivers) {
            r.finish(0);
        }
        return Err(e);
    }
    let progress = {
        let (shared, stats) = (shared.clone(), stats.clone());
        Progress::start(move || {
            format!(
                "acked {}, delivered {}",
                shared.acked_total.load(Ordering::Relaxed),
                stats.unique()
            )
        })
    };
    let bench_before = own_cpu_s();
    let before = sample(c.server_pid)?;
    let start = Instant::now();
    let _ = go_tx.send(Some(start));
    while shared.senders_done.load(Ordering::Relaxed) < a.pairs as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (sent_end, sent_end_us) = (Instant::now(), stats::wall_us());
    {
        let shared = shared.clone();
        stats::drain(&stats, Duration::from_secs(a.drain_max), move || {
            shared.acked_total.load(Ordering::Relaxed)
        })
        .await;
    }
    let after = sample(c.server_pid)?;
    let bench_after = own_cpu_s();
    drop(progress);
    let mut pairs = Vec::with_capacity(a.pairs);
    for t in tasks {
        pairs.push(t.await?);
    }
    let seen = match Arc::try_unwrap(receivers) {
        Ok(r) => {
            let n = a.pairs;
            tokio::task::spawn_blocking(move || r.finish(n)).await?
        }
        Err(_) => bail!("receivers still in use"),
    };
    let (mut acked, mut failed, mut lost) = (0, 0, 0);
    for (pair, seen) in pairs.into_iter().zip(&seen) {
        let Some((r, acked_ids, sent)) = pair else {
            continue;
        };
        acked += r.acked;
        failed += r.failed;
        lost += (1..=sent)
            .filter(|&i| acked_ids.contains(i) && !seen.contains(i))
            .count() as u64;
    }
    let tally = stats.take();
    let end = stats::window_end(sent_end, sent_end_us, tally.last_us);
    let window = end.duration_since(start).as_secs_f64();
    let send_window = sent_end.duration_since(start).as_secs_f64();
    let received = tally.unique;
    let dups = tally.duplicated;
    let [p50, p99, p999, max] = quantiles(&tally.hist);
    let [a50, a99, a999, amax] = quantiles(&shared.ack_stats.take().hist);
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
    bench_fields(&mut report, bench_before, bench_after);
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
