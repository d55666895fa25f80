//! `confab bench` against a real server: small fan-out, peer and connect runs,
//! each printing one JSON line whose counts must add up.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::serve::{APP, SECRET, ServerProc};

/// Runs `confab bench ARGS --url URL --app-id APP --secret SECRET --json` (bounded)
/// and returns its JSON report.
async fn bench(server: &ServerProc, args: &[&str]) -> Value {
    let app = APP.to_string();
    let url = server.url();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab"));
    cmd.arg("bench")
        .args(args)
        .args([
            "--url", &url, "--app-id", &app, "--secret", SECRET, "--json",
        ])
        .env_remove("CONFAB_SECRET")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(25), cmd.output())
        .await
        .expect("bench finishes within 25 s")
        .expect("run confab bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line, got: {stdout}");
    serde_json::from_str(lines[0]).expect("bench prints JSON")
}

/// Like [`bench`] for a run that prints several JSON lines (sweep).
async fn bench_lines(server: &ServerProc, args: &[&str]) -> Vec<Value> {
    let app = APP.to_string();
    let url = server.url();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab"));
    cmd.arg("bench")
        .args(args)
        .args([
            "--url", &url, "--app-id", &app, "--secret", SECRET, "--json",
        ])
        .env_remove("CONFAB_SECRET")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(25), cmd.output())
        .await
        .expect("bench finishes within 25 s")
        .expect("run confab bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(
        stderr.contains("sweep step"),
        "progress on stderr: {stderr}"
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("bench prints JSON lines"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_scenarios_report_consistent_numbers() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let app = format!("{APP}:{SECRET}");
    let server = crate::serve::start(
        dir.path(),
        &["--app", &app],
        &[
            ("CONFAB_LIMITS_USER_SEND_RATE", "100000"),
            ("CONFAB_LIMITS_USER_SEND_BURST", "100000"),
            ("CONFAB_LIMITS_APP_SEND_RATE", "100000"),
        ],
    )
    .await;

    let fanout = bench(
        &server,
        &[
            "fanout",
            "--members",
            "20",
            "--rate",
            "50",
            "--duration",
            "2",
        ],
    )
    .await;
    assert_eq!(fanout["scenario"], "fanout", "{fanout}");
    assert_eq!(fanout["target"], "confab", "{fanout}");
    assert_eq!(fanout["messages_acked"], 100, "{fanout}");
    assert_eq!(fanout["deliveries"], 20 * 100, "{fanout}");
    assert_eq!(fanout["lost"], 0, "{fanout}");
    assert_eq!(fanout["duplicated"], 0, "{fanout}");
    assert!(
        fanout["deliveries_per_s"].as_f64().unwrap() > 0.0,
        "{fanout}"
    );
    assert!(fanout["p50_ms"].as_f64().is_some(), "{fanout}");
    for key in [
        "server_cpu_s",
        "deliveries_per_server_cpu_s",
        "server_rss_kb",
    ] {
        assert!(
            fanout[key].is_null(),
            "{key} without --server-pid: {fanout}"
        );
    }

    let peer = bench(&server, &["peer", "--pairs", "4", "--duration", "2"]).await;
    assert_eq!(peer["scenario"], "peer", "{peer}");
    assert!(peer["acked"].as_u64().unwrap() > 0, "{peer}");
    assert_eq!(peer["deliveries"], peer["acked"], "{peer}");
    assert_eq!(peer["lost"], 0, "{peer}");
    assert_eq!(peer["duplicated"], 0, "{peer}");

    // Two steps well within a generous bound: both count, the second is the
    // saturation point.
    let sweep = bench_lines(
        &server,
        &[
            "sweep",
            "--members",
            "5",
            "--rates",
            "20,40",
            "--duration",
            "1",
            "--p99-bound-ms",
            "5000",
        ],
    )
    .await;
    assert_eq!(sweep.len(), 3, "two steps and a summary: {sweep:?}");
    for (i, (step, rate)) in sweep[..2].iter().zip([20, 40]).enumerate() {
        assert_eq!(step["scenario"], "sweep", "{step}");
        assert_eq!(step["step"], i + 1, "{step}");
        assert_eq!(step["rate"], rate, "{step}");
        assert_eq!(step["messages_acked"], rate, "{step}");
        assert_eq!(step["deliveries"], 5 * rate, "{step}");
        assert_eq!(step["lost"], 0, "{step}");
        assert_eq!(step["within_bound"], true, "{step}");
        assert!(step["p99_ms"].as_f64().is_some(), "{step}");
    }
    let summary = &sweep[2];
    assert_eq!(summary["summary"], true, "{summary}");
    assert_eq!(summary["steps"], 2, "{summary}");
    assert_eq!(summary["saturation_rate"], 40, "{summary}");
    assert_eq!(
        summary["saturation_deliveries_per_s"], sweep[1]["deliveries_per_s"],
        "{summary}"
    );
    assert!(summary["stopped_because"].is_null(), "{summary}");

    let connect = bench(&server, &["connect", "--clients", "50"]).await;
    assert_eq!(connect["scenario"], "connect", "{connect}");
    assert_eq!(connect["logged_in"], 50, "{connect}");
    assert_eq!(connect["failed"], 0, "{connect}");
    assert!(connect["logins_per_s"].as_f64().unwrap() > 0.0, "{connect}");

    assert!(
        started.elapsed() < Duration::from_secs(40),
        "took {:?}",
        started.elapsed()
    );
}

/// The Socket.IO reference peer with its packages installed (never installs
/// them): the `CONFAB_SOCKETIO_PEER` directory, else the repository's
/// bench/peers/socketio. Under CI (`.ci/run` installs them) it must be there.
fn socketio_peer() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("CONFAB_SOCKETIO_PEER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::repo_dir().join("bench/peers/socketio"));
    let installed = dir.join("server.js").is_file() && dir.join("node_modules/socket.io").is_dir();
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        installed || !in_ci,
        "the Socket.IO peer is not installed in {} (run `npm ci --omit=dev` there); CI must \
         provide it (.ci/run installs it)",
        dir.display()
    );
    installed.then_some(dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_socketio_target() {
    let Some(dir) = socketio_peer() else {
        eprintln!(
            "skipped: bench_socketio_target: the Socket.IO peer is not installed (run \
             `npm ci --omit=dev` in bench/peers/socketio, or point CONFAB_SOCKETIO_PEER at an \
             installed copy)"
        );
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = tokio::process::Command::new("node")
        .arg("server.js")
        .current_dir(&dir)
        .env("PORT", port.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("skipping bench_socketio_target: cannot run `node`");
        return;
    };
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        child.stdout.take().expect("stdout"),
    ));
    let up = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("listening") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(up, Ok(true), "the Socket.IO peer did not start");
    let url = format!("ws://127.0.0.1:{port}");
    let pid = child.id().expect("pid").to_string();
    let run = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab"));
        cmd.arg("bench")
            .args(args)
            .args([
                "--target",
                "socketio",
                "--url",
                &url,
                "--server-pid",
                &pid,
                "--json",
            ])
            .env_remove("CONFAB_SECRET")
            .kill_on_drop(true);
        cmd
    };
    for args in [
        &[
            "fanout",
            "--members",
            "20",
            "--rate",
            "50",
            "--duration",
            "2",
        ][..],
        &["peer", "--pairs", "4", "--duration", "2"][..],
        &[
            "sweep",
            "--members",
            "5",
            "--rates",
            "20,40",
            "--duration",
            "1",
            "--p99-bound-ms",
            "5000",
        ][..],
        &["connect", "--clients", "20"][..],
    ] {
        let out = tokio::time::timeout(Duration::from_secs(25), run(args).output())
            .await
            .expect("bench finishes within 25 s")
            .expect("run confab bench");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "bench {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("bench prints JSON lines"))
            .collect();
        let r = &lines[0];
        assert_eq!(r["target"], "socketio", "{r}");
        assert_eq!(r["lost"], 0, "{r}");
        assert_eq!(r["duplicated"], 0, "{r}");
        assert!(r["server_cpu_s"].as_f64().is_some(), "{r}");
        match args[0] {
            "fanout" => {
                assert_eq!(r["messages_acked"], 100, "{r}");
                assert_eq!(r["deliveries"], 20 * 100, "{r}");
            }
            "peer" => {
                assert!(r["acked"].as_u64().unwrap() > 0, "{r}");
                assert_eq!(r["deliveries"], r["acked"], "{r}");
            }
            "sweep" => {
                assert_eq!(lines.len(), 3, "{lines:?}");
                assert_eq!(lines[1]["deliveries"], 5 * 40, "{lines:?}");
                assert_eq!(lines[2]["saturation_rate"], 40, "{lines:?}");
            }
            _ => {
                assert_eq!(r["logged_in"], 20, "{r}");
                assert!(r["server_rss_per_connection_kb"].as_f64().is_some(), "{r}");
            }
        }
    }
}

/// `floor` needs no server: its child process holds the members' ends, and
/// every frame written must be read back.
#[test]
fn bench_floor_writes_and_reads_every_frame() {
    let out = crate::confab(&[
        "bench",
        "floor",
        "--members",
        "40",
        "--rate",
        "20",
        "--duration",
        "1",
        "--payload",
        "200",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "floor failed: {stdout}\n{stderr}");
    let r: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(r["scenario"], "floor");
    assert_eq!(r["target"], "kernel");
    assert_eq!(r["deliveries"], 800, "20 bursts × 40 members: {r}");
    // Every byte of the 800 frames of 204 bytes came back through the sink,
    // and each frame got one receive time.
    assert_eq!(r["frame_bytes"], 204);
    assert_eq!(r["bytes"], 800 * 204, "{r}");
    assert_eq!(r["frames_timed"], 800, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert!(r["reads"].as_u64().unwrap() >= 40, "{r}");
    // Received a frame no later than ~a second after its burst was due, on a
    // loopback with 40 connections (a wrong due time would be off by bursts).
    let p99 = r["p99_ms"].as_f64().expect("p99");
    assert!(p99 < 1000.0, "{r}");
    for k in ["send_cpu_us", "burst_cpu_ms", "written_p99_ms"] {
        assert!(r[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {r}");
    }
    assert!(r["duration_s"].as_f64().unwrap() >= 0.9, "{r}");

    // Bad input names the flag.
    let bad = crate::confab(&["bench", "floor", "--rate", "0"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--rate"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
