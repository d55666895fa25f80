//! `connect`: N clients log in (200 at a time), then idle 3 s; logins/s, login
//! latency and, with `--server-pid`, server memory per idle connection.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::stats::{
    Progress, Setup, Stats, bench_fields, fmt_ms, own_cpu_s, print_report, quantiles, round3,
    sample, server_fields, server_line, server_use,
};
use super::wire::Conn;
use super::ws::Ws;
use super::{CONNECT_CONCURRENCY, ConnectArgs, run_id};

/// How long the clients stay connected and idle before memory is read.
const IDLE: Duration = Duration::from_secs(3);

pub(super) async fn connect(a: &ConnectArgs) -> anyhow::Result<ExitCode> {
    let c = &a.common;
    let run = run_id();
    let conn = Conn::new(c, a.target)?;
    let stats = Arc::new(Stats::new());
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
    let bench_before = own_cpu_s();
    let before = sample(c.server_pid)?;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(a.clients);
    for i in 0..a.clients {
        let (conn, user) = (conn.clone(), format!("bc{run}x{i}"));
        let (permits, setup, stats, conns) =
            (permits.clone(), setup.clone(), stats.clone(), conns.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            let t0 = Instant::now();
            match conn.open(&user).await {
                Ok(ws) => {
                    stats.record(i, &[t0.elapsed().as_micros() as u64], 1, 0, 0);
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
    let bench_after = own_cpu_s();
    drop(progress);
    eprintln!("bench: logins done; idling {} s", IDLE.as_secs());
    tokio::time::sleep(IDLE).await;
    let idle = sample(c.server_pid)?;
    let ok = setup.ready.load(Ordering::Relaxed);
    let failed = setup.failed.load(Ordering::Relaxed);
    let first_error = setup.first_error();
    let per_s = ok as f64 / login_window;
    let [p50, p99, p999, max] = quantiles(&stats.take().hist);
    let server = server_use(before, after).map(|mut s| {
        s.rss_kb = idle.map_or(s.rss_kb, |i| i.rss_kb);
        s
    });
    let per_conn_kb = server
        .filter(|_| ok > 0)
        .map(|s| round3((s.rss_kb as f64 - s.rss_before_kb as f64) / ok as f64));
    let target = a.target.name();
    let mut report = json!({
        "scenario": "connect",
        "target": target,
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
    bench_fields(&mut report, bench_before, bench_after);
    report["deliveries_per_server_cpu_s"] = Value::Null;
    report["server_rss_per_connection_kb"] = json!(per_conn_kb);
    let mut human = format!(
        "connect ({target}): {} clients ({CONNECT_CONCURRENCY} at a time): {ok} logged in, \
         {failed} failed in {login_window:.2} s ({per_s:.0} logins/s)\n  \
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
            "  server memory per connection (after {} s idle): {kb:.1} kB\n",
            IDLE.as_secs()
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
