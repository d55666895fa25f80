//! `floor`: what a fan-out costs this machine's kernel alone, with no server.
//!
//! M loopback TCP connections, the same shape as a fan-out run's: this process
//! holds the server's ends and a child process (`floor-sink`, this binary again)
//! holds the members' ends and reads them in one epoll loop, as the generator's
//! receiver threads do. At R bursts a second, every sending thread writes one
//! frame to each of its connections, all threads together covering all M. No
//! WebSocket work, JSON, queue or task: a write system call per member and
//! nothing else.
//!
//! Latency is measured as a fan-out run measures it: from the moment the burst
//! was due to the kernel's receive time of the frame at the member's socket
//! (`SO_TIMESTAMPNS`, taken by the sink; the j-th frame on every connection
//! belongs to burst j). Its p99 is the least p99 a server that writes each
//! message to each member on its own can reach for M members on this machine,
//! whatever it does in user space — as long as the bursts do not queue.

use std::io::{self, BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::recv::read_stamped;
use super::stats::{
    MAX_LATENCY_US, fmt_ms, new_histogram, print_report, quantiles, round3, wall_us,
};
use super::ws;
use super::{FloorArgs, FloorSinkArgs};

/// The sink, a write or the sink's report gives up after this long without
/// progress.
const PATIENCE: Duration = Duration::from_secs(60);

/// CPU time of the calling thread, in µs.
fn thread_cpu_us() -> u64 {
    cpu_us(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
}

fn cpu_us(clock: nix::time::ClockId) -> u64 {
    nix::time::clock_gettime(clock).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
            + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1000
    })
}

/// What one sending thread measured.
#[derive(Debug)]
struct Sent {
    /// Burst due → write returned, µs.
    written: Histogram<u64>,
    cpu_us: u64,
    writes: u64,
    /// Most a burst started after it was due (thread 0 only), µs.
    max_lag_us: u64,
}

/// The run's shared schedule: burst `k` is due at `base + k / rate`.
#[derive(Debug)]
struct Schedule {
    base: Instant,
    rate: u64,
    bursts: u64,
    barrier: Barrier,
    failed: AtomicBool,
}

/// Offset of burst `k` from the base, in µs.
fn due_us(k: u64, rate: u64) -> u64 {
    k * 1_000_000 / rate
}

pub(super) fn floor(a: &FloorArgs) -> anyhow::Result<ExitCode> {
    let threads = if a.threads == 0 {
        std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
    } else {
        a.threads
    }
    .min(a.members);
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let mut sink = Sink::spawn(addr, a.members)?;
    let conns = accept(&listener, a.members, &mut sink)?;
    drop(listener);
    sink.wait_ready()?;

    // One frame as a server would send it: a WebSocket text frame header, then
    // the payload.
    let frame = Arc::new(ws_text_frame(a.payload));
    let frame_len = frame.len() as u64;
    let bursts = a.rate * a.duration;
    let schedule = Arc::new(Schedule {
        base: Instant::now() + Duration::from_millis(200),
        rate: a.rate,
        bursts,
        barrier: Barrier::new(threads),
        failed: AtomicBool::new(false),
    });
    // The same moment on the wall clock, which the kernel's receive times use.
    let base_wall_us = wall_us() + 200_000;
    sink.go(base_wall_us, a.rate, bursts, frame_len)?;

    let mut shares: Vec<Vec<TcpStream>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        shares[i % threads].push(c);
    }
    let handles: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(t, share)| {
            let (schedule, frame) = (schedule.clone(), frame.clone());
            std::thread::Builder::new()
                .name(format!("floor-send-{t}"))
                .spawn(move || send(t, &share, &frame, &schedule))
        })
        .collect::<io::Result<_>>()
        .context("cannot start the sending threads")?;
    let mut written = new_histogram();
    let (mut send_cpu_us, mut writes, mut max_lag_us) = (0u64, 0u64, 0u64);
    let mut write_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => {
                written.add(&s.written).expect("same bounds");
                send_cpu_us += s.cpu_us;
                writes += s.writes;
                max_lag_us = max_lag_us.max(s.max_lag_us);
            }
            Ok(Err(e)) => {
                write_error.get_or_insert(e.to_string());
            }
            Err(_) => {
                write_error.get_or_insert_with(|| "a sending thread panicked".to_owned());
            }
        }
    }
    let window = schedule.base.elapsed();
    // The threads dropped their connections: the sink sees every one end.
    let read = sink.finish();
    let read = match (read, write_error) {
        (Ok(r), None) => r,
        (Ok(_), Some(w)) => bail!("floor: writing to a loopback connection failed: {w}"),
        (Err(e), None) => return Err(e),
        (Err(e), Some(w)) => {
            bail!("floor: writing to a loopback connection failed: {w}; and {e:#}")
        }
    };

    let expected = bursts * a.members as u64;
    if read.bytes > expected * frame_len {
        bail!(
            "floor: the sink read {} bytes, more than the {} written",
            read.bytes,
            expected * frame_len
        );
    }
    // A frame read in part counts as lost.
    let lost = expected - read.bytes / frame_len;
    let per_send_us = send_cpu_us as f64 / writes.max(1) as f64;
    let per_read_us = read.cpu_us as f64 / (read.bytes / frame_len).max(1) as f64;
    let [p50, p99, p999, max] = read.latency_ms;
    let [w50, w99, _, _] = quantiles(&written);
    let duration_s = window.as_secs_f64();
    let interval_ms = 1000.0 / a.rate as f64;
    // A burst that started half an interval late waited for the ones before:
    // the kernel work of one write per member did not fit between bursts.
    let max_lag_ms = max_lag_us as f64 / 1000.0;
    let queued = max_lag_ms > interval_ms / 2.0;
    let report = json!({
        "scenario": "floor",
        "target": "kernel",
        "members": a.members,
        "threads": threads,
        "rate": a.rate,
        "payload": a.payload,
        "frame_bytes": frame_len,
        "bursts": bursts,
        "duration_s": round3(duration_s),
        "deliveries": writes,
        "deliveries_per_s": round3(writes as f64 / duration_s.max(1e-9)),
        "p50_ms": p50,
        "p99_ms": p99,
        "p999_ms": p999,
        "max_ms": max,
        "written_p50_ms": w50,
        "written_p99_ms": w99,
        "lost": lost,
        "duplicated": 0,
        "queued": queued,
        "max_start_lag_ms": round3(max_lag_ms),
        "send_cpu_us": round3(per_send_us),
        "burst_cpu_ms": round3(per_send_us * a.members as f64 / 1000.0),
        "read_cpu_us": round3(per_read_us),
        "reads": read.reads,
        "bytes": read.bytes,
        "frames_timed": read.frames,
        // The sending threads play the server.
        "server_cpu_s": round3(send_cpu_us as f64 / 1e6),
        "deliveries_per_server_cpu_s": round3(writes as f64 / (send_cpu_us as f64 / 1e6).max(1e-9)),
        "server_rss_kb": Value::Null,
        "bench_cpu_s": round3(read.cpu_us as f64 / 1e6),
    });
    let verdict = if queued {
        format!(
            "Bursts queued behind each other (one started {max_lag_ms:.1} ms late): here the \
             kernel alone cannot write and read one frame per member {} times a second to {} \
             members; a server keeps up only by putting several messages in one write, so this \
             p99 is not a bound.\n",
            a.rate, a.members
        )
    } else {
        format!(
            "No server that writes each message to each member on its own can reach a lower \
             p99 for {} members here.\n",
            a.members
        )
    };
    let human = format!(
        "floor: {members} loopback TCP connections, a {frame_len}-byte frame to each {rate} times a second for {secs} s, \
         sent by {threads} thread(s), read by one epoll loop in another process\n\
         \x20 kernel CPU per write: {per_send_us:.2} µs (one burst to {members}: {burst:.1} ms of CPU)\n\
         \x20 reader CPU per frame: {per_read_us:.2} µs ({reads} reads)\n\
         \x20 burst due → frame received: p50 {}, p99 {}, p999 {}, max {}\n\
         \x20 burst due → write returned: p50 {}, p99 {}\n\
         \x20 lost: {lost}\n{verdict}",
        fmt_ms(p50),
        fmt_ms(p99),
        fmt_ms(p999),
        fmt_ms(max),
        fmt_ms(w50),
        fmt_ms(w99),
        members = a.members,
        rate = a.rate,
        secs = a.duration,
        burst = per_send_us * a.members as f64 / 1000.0,
        reads = read.reads,
    );
    print_report(a.json, &report, &human);
    Ok(if lost > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A server-to-client (unmasked) WebSocket text frame of `payload` bytes.
fn ws_text_frame(payload: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload + 10);
    ws::header(&mut f, ws::OP_TEXT, payload, 0);
    f.resize(f.len() + payload, b'x');
    f
}

/// Accepts the sink's `n` connections (while it makes them).
fn accept(listener: &TcpListener, n: usize, sink: &mut Sink) -> anyhow::Result<Vec<TcpStream>> {
    listener.set_nonblocking(true)?;
    let mut conns = Vec::with_capacity(n);
    let started = Instant::now();
    while conns.len() < n {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                // A sink that stops reading fails the run instead of hanging it.
                s.set_write_timeout(Some(PATIENCE))?;
                conns.push(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Some(status) = sink.child.try_wait()? {
                    bail!(
                        "floor: the sink exited ({status}) after {} connections",
                        conns.len()
                    );
                }
                if started.elapsed() > PATIENCE {
                    bail!("floor: only {} of {n} connections after 60 s", conns.len());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e).context("floor: accept"),
        }
    }
    Ok(conns)
}

/// One sending thread: at each burst, a frame to each of its connections.
fn send(t: usize, conns: &[TcpStream], frame: &[u8], s: &Schedule) -> io::Result<Sent> {
    let mut written = new_histogram();
    let (mut cpu_us, mut writes, mut max_lag_us) = (0u64, 0u64, 0u64);
    let mut last_progress = Instant::now();
    let mut result = Ok(());
    for k in 0..s.bursts {
        let due = s.base + Duration::from_micros(due_us(k, s.rate));
        let failed = s.failed.load(Ordering::Acquire);
        if t == 0 && !failed {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                eprintln!(
                    "bench [{:>4.0}s] floor: burst {k}/{}",
                    s.base.elapsed().as_secs_f64(),
                    s.bursts
                );
            }
        }
        // Thread 0 arrives when the burst is due, the others when they have
        // written the burst before. After a failure every thread still meets
        // the others here, doing nothing.
        s.barrier.wait();
        if s.failed.load(Ordering::Acquire) {
            continue;
        }
        if t == 0 {
            let lag = Instant::now().saturating_duration_since(due).as_micros() as u64;
            max_lag_us = max_lag_us.max(lag);
        }
        let cpu0 = thread_cpu_us();
        for mut c in conns {
            if let Err(e) = c.write_all(frame) {
                s.failed.store(true, Ordering::Release);
                result = Err(e);
                break;
            }
            let us = Instant::now().saturating_duration_since(due).as_micros() as u64;
            let _ = written.record(us.clamp(1, MAX_LATENCY_US));
            writes += 1;
        }
        cpu_us += thread_cpu_us().saturating_sub(cpu0);
    }
    result.map(|()| Sent {
        written,
        cpu_us,
        writes,
        max_lag_us,
    })
}

/// What the sink read.
#[derive(Debug)]
struct Read {
    bytes: u64,
    reads: u64,
    /// Frames given a receive time.
    frames: u64,
    /// CPU until the last expected byte arrived, µs.
    cpu_us: u64,
    /// Burst due → frame received, ms: p50, p99, p999, max.
    latency_ms: [Option<f64>; 4],
}

/// The child process holding the members' ends.
#[derive(Debug)]
struct Sink {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<io::Result<String>>,
}

impl Sink {
    fn spawn(addr: SocketAddr, n: usize) -> anyhow::Result<Sink> {
        let exe = std::env::current_exe().context("floor: cannot find this program")?;
        let mut child = Command::new(exe)
            .args(["bench", "floor-sink", "--addr"])
            .arg(addr.to_string())
            .arg("--connections")
            .arg(n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("floor: cannot start the sink process")?;
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().expect("piped"));
        // Its lines come through a channel, so waiting for one has a deadline.
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("floor-sink-out".into())
            .spawn(move || {
                for line in out.lines() {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .context("floor: cannot start a thread")?;
        Ok(Sink {
            child,
            stdin,
            lines: rx,
        })
    }

    fn line(&mut self, what: &str) -> anyhow::Result<String> {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(e)) => bail!("floor: reading the sink's {what}: {e}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                bail!("floor: no {what} from the sink within 60 s (stopped it)")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait()?;
                bail!("floor: the sink exited ({status}) without its {what}")
            }
        }
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let line = self.line("ready line")?;
        if line.trim() != "ready" {
            bail!("floor: the sink said {line:?} instead of ready");
        }
        Ok(())
    }

    /// Tells the sink the schedule: the wall-clock µs burst 0 is due, the rate,
    /// the bursts and the frame size.
    fn go(&mut self, base_wall_us: u64, rate: u64, bursts: u64, frame: u64) -> anyhow::Result<()> {
        let mut stdin = self
            .stdin
            .take()
            .context("floor: the sink's input is gone")?;
        writeln!(stdin, "{base_wall_us} {rate} {bursts} {frame}")
            .and_then(|()| stdin.flush())
            .context("floor: the sink stopped")
    }

    fn finish(mut self) -> anyhow::Result<Read> {
        let line = self.line("report")?;
        let _ = self.child.wait();
        let v: Value = serde_json::from_str(&line).context("floor: the sink's report")?;
        let get = |k: &str| v.get(k).and_then(Value::as_u64);
        Ok(Read {
            bytes: get("bytes").unwrap_or(0),
            reads: get("reads").unwrap_or(0),
            frames: get("frames").unwrap_or(0),
            cpu_us: get("cpu_us").unwrap_or(0),
            latency_ms: ["p50_ms", "p99_ms", "p999_ms", "max_ms"]
                .map(|k| v.get(k).and_then(Value::as_f64)),
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The sink's schedule, from its input.
#[derive(Debug, Clone, Copy)]
struct Plan {
    base_wall_us: u64,
    rate: u64,
    bursts: u64,
    frame: u64,
}

fn plan(line: &str) -> anyhow::Result<Plan> {
    let v: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("floor-sink: bad schedule {line:?}"))?;
    let [base_wall_us, rate, bursts, frame] = v[..] else {
        bail!("floor-sink: bad schedule {line:?} (want 4 numbers)");
    };
    if rate == 0 || frame == 0 {
        bail!("floor-sink: bad schedule {line:?} (rate and frame must be positive)");
    }
    Ok(Plan {
        base_wall_us,
        rate,
        bursts,
        frame,
    })
}

/// Records a receive time for each frame that starts in the `n` bytes read
/// at stream offset `at` (the j-th frame on a connection is burst j's).
fn time_frames(p: &Plan, at: u64, n: u64, stamp_us: u64, hist: &mut Histogram<u64>) -> u64 {
    let mut j = at.div_ceil(p.frame);
    let mut timed = 0;
    while j * p.frame < at + n && j < p.bursts {
        let due = p.base_wall_us + due_us(j, p.rate);
        let _ = hist.record(stamp_us.saturating_sub(due).clamp(1, MAX_LATENCY_US));
        timed += 1;
        j += 1;
    }
    timed
}

/// `floor-sink`: connects, says `ready`, reads the schedule from its input,
/// then reads everything until every connection has ended and prints what it
/// read (one JSON line).
pub(super) fn sink(a: &FloorSinkArgs) -> anyhow::Result<ExitCode> {
    use mio::net::TcpStream as MioStream;
    use mio::{Events, Interest, Poll, Token};

    if a.connections == 0 {
        bail!("floor-sink: --connections must be at least 1");
    }
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(a.connections);
    for i in 0..a.connections {
        let s = TcpStream::connect(a.addr).with_context(|| format!("floor-sink: connect {i}"))?;
        s.set_nonblocking(true)?;
        // Kernel receive times, as the generator's receivers take them.
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::ReceiveTimestampns, &true)?;
        let mut s = MioStream::from_std(s);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)?;
        conns.push(Some((s, 0u64)));
    }
    let mut stdout = io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let mut line = String::new();
    io::stdin().read_line(&mut line)?;
    let p = plan(&line)?;
    let expected = p.bursts * p.frame * a.connections as u64;

    let cpu0 = cpu_us(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID);
    let mut cpu = None;
    let mut hist = new_histogram();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let (mut bytes, mut reads, mut frames, mut open) = (0u64, 0u64, 0u64, a.connections);
    while open > 0 {
        match poll.poll(&mut events, Some(PATIENCE)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        if events.is_empty() {
            bail!("floor-sink: nothing for 60 s with {open} connections open");
        }
        for ev in &events {
            let i = ev.token().0;
            let Some((s, at)) = conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            let ended = loop {
                match read_stamped(s, &mut buf, &mut cmsg) {
                    Ok((0, _)) => break true,
                    Ok((n, stamp)) => {
                        let stamp = stamp.unwrap_or_else(wall_us);
                        frames += time_frames(&p, *at, n as u64, stamp, &mut hist);
                        *at += n as u64;
                        bytes += n as u64;
                        reads += 1;
                        // A short read drained the socket, unless the peer's
                        // end came with the data: then read on to see it.
                        if n < buf.len() && !ev.is_read_closed() {
                            break false;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break true,
                }
            };
            if cpu.is_none() && bytes >= expected {
                // Everything arrived: what follows is closing, not reading.
                cpu = Some(cpu_us(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID) - cpu0);
            }
            if ended {
                let _ = poll.registry().deregister(s);
                conns[i] = None;
                open -= 1;
            }
        }
    }
    let cpu = cpu.unwrap_or_else(|| cpu_us(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID) - cpu0);
    let [p50, p99, p999, max] = quantiles(&hist);
    writeln!(
        stdout,
        "{}",
        json!({
            "bytes": bytes,
            "reads": reads,
            "frames": frames,
            "cpu_us": cpu,
            "p50_ms": p50,
            "p99_ms": p99,
            "p999_ms": p999,
            "max_ms": max,
        })
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_websocket_length_encoding() {
        assert_eq!(ws_text_frame(5)[..2], [0x81, 5]);
        assert_eq!(ws_text_frame(5).len(), 7);
        assert_eq!(ws_text_frame(126)[..4], [0x81, 126, 0, 126]);
        assert_eq!(ws_text_frame(126).len(), 130);
        assert_eq!(ws_text_frame(70_000)[..2], [0x81, 127]);
        assert_eq!(ws_text_frame(70_000).len(), 70_010);
    }

    #[test]
    fn each_frame_is_timed_once_against_its_burst() {
        // 10 bursts/s from t = 1,000,000 µs, 100-byte frames, 5 bursts.
        let p = plan("1000000 10 5 100\n").unwrap();
        let mut h = new_histogram();
        // Frame 0 whole, 500 µs after its due.
        assert_eq!(time_frames(&p, 0, 100, 1_000_500, &mut h), 1);
        // Frame 1's first 30 bytes: frame 1 starts here (600 µs).
        assert_eq!(time_frames(&p, 100, 30, 1_100_600, &mut h), 1);
        // The rest of frame 1 and frame 2 whole: only frame 2 starts (700 µs).
        assert_eq!(time_frames(&p, 130, 170, 1_200_700, &mut h), 1);
        // Frames 3 (100.9 ms late) and 4 (900 µs), then bytes past the last
        // burst, which are not timed.
        assert_eq!(time_frames(&p, 300, 250, 1_400_900, &mut h), 2);
        assert_eq!(h.len(), 5);
        assert_eq!(h.min(), 500);
        assert_eq!(h.value_at_quantile(0.5), 700);
        assert!((100_800..=101_000).contains(&h.max()), "{}", h.max());
        assert!(plan("1 2 3").is_err());
        assert!(plan("1 0 3 4").is_err());
        assert!(plan("a b c d").is_err());
    }
}
