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
//! A loopback write returns once the kernel has run the receiving side too, so
//! a frame has arrived when its write returns: the time from the burst's start
//! to that return is the delivery time an ideal server would reach here, and its
//! p99 is the least p99 any server can reach for a fan-out of M members on this
//! machine and this kernel, whatever it does in user space.

use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::stats::{fmt_ms, print_report, quantiles, round3};
use super::{FloorArgs, FloorSinkArgs};

/// Longest delivery time recorded (µs).
const MAX_US: u64 = 60_000_000;
/// The sink gives up after this long without any input.
const SINK_PATIENCE: Duration = Duration::from_secs(60);

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
    hist: Histogram<u64>,
    cpu_us: u64,
    writes: u64,
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

impl Schedule {
    fn due(&self, k: u64) -> Duration {
        Duration::from_nanos(k * 1_000_000_000 / self.rate)
    }
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
    let bursts = a.rate * a.duration;
    let schedule = Arc::new(Schedule {
        base: Instant::now() + Duration::from_millis(100),
        rate: a.rate,
        bursts,
        barrier: Barrier::new(threads),
        failed: AtomicBool::new(false),
    });
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
    let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_US, 3).expect("valid bounds");
    let (mut send_cpu_us, mut writes) = (0u64, 0u64);
    let mut first_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => {
                hist.add(&s.hist).expect("same bounds");
                send_cpu_us += s.cpu_us;
                writes += s.writes;
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert_with(|| io::Error::other("a sending thread panicked"));
            }
        }
    }
    let window = schedule.base.elapsed();
    // The threads dropped their connections: the sink sees every one end.
    let read = sink.finish()?;
    if let Some(e) = first_error {
        bail!("floor: writing to a loopback connection failed: {e}");
    }

    let expected = bursts * a.members as u64;
    let frame_len = frame.len() as u64;
    let lost = expected.saturating_sub(read.bytes / frame_len);
    let per_send_us = send_cpu_us as f64 / writes.max(1) as f64;
    let per_read_us = read.cpu_us as f64 / writes.max(1) as f64;
    let [p50, p99, p999, max] = quantiles(&hist);
    let duration_s = window.as_secs_f64();
    let interval_ms = 1000.0 / a.rate as f64;
    // Bursts that start late queued behind the ones before: the kernel work of
    // one write per member did not fit between bursts.
    let queued = p50.is_some_and(|p| p > interval_ms);
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
        "lost": lost,
        "duplicated": 0,
        "queued": queued,
        "send_cpu_us": round3(per_send_us),
        "burst_cpu_ms": round3(per_send_us * a.members as f64 / 1000.0),
        "read_cpu_us": round3(per_read_us),
        "reads": read.reads,
        // The sending threads play the server.
        "server_cpu_s": round3(send_cpu_us as f64 / 1e6),
        "deliveries_per_server_cpu_s": round3(writes as f64 / (send_cpu_us as f64 / 1e6).max(1e-9)),
        "server_rss_kb": Value::Null,
        "bench_cpu_s": round3(read.cpu_us as f64 / 1e6),
    });
    let verdict = if queued {
        format!(
            "Bursts queued behind each other: here the kernel alone cannot write and read \
             one frame per member {} times a second to {} members; a server keeps up only by \
             putting several messages in one write, so this p99 is not a bound.\n",
            a.rate, a.members
        )
    } else {
        format!(
            "No server that writes each message to each member can reach a lower p99 for {} \
             members here.\n",
            a.members
        )
    };
    let human = format!(
        "floor: {members} loopback TCP connections, a {frame_len}-byte frame to each {rate} times a second for {secs} s, \
         sent by {threads} thread(s), read by one epoll loop in another process\n\
         \x20 kernel CPU per write: {per_send_us:.2} µs (one burst to {members}: {burst:.1} ms of CPU)\n\
         \x20 reader CPU per frame: {per_read_us:.2} µs ({reads} reads)\n\
         \x20 delivery time from the burst's start: p50 {}, p99 {}, p999 {}, max {}\n\
         \x20 lost: {lost}\n{verdict}",
        fmt_ms(p50),
        fmt_ms(p99),
        fmt_ms(p999),
        fmt_ms(max),
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

/// A masked-free (server to client) WebSocket text frame of `payload` bytes.
fn ws_text_frame(payload: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload + 10);
    f.push(0x81);
    if payload < 126 {
        f.push(payload as u8);
    } else if payload <= 0xffff {
        f.push(126);
        f.extend_from_slice(&(payload as u16).to_be_bytes());
    } else {
        f.push(127);
        f.extend_from_slice(&(payload as u64).to_be_bytes());
    }
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
                conns.push(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Some(status) = sink.child.try_wait()? {
                    bail!(
                        "floor: the sink exited ({status}) after {} connections",
                        conns.len()
                    );
                }
                if started.elapsed() > SINK_PATIENCE {
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
    let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_US, 3).expect("valid bounds");
    let (mut cpu_us, mut writes) = (0u64, 0u64);
    let mut last_progress = Instant::now();
    let mut result = Ok(());
    for k in 0..s.bursts {
        let due = s.base + s.due(k);
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
        // Thread 0 arrives when the burst is due; the others are waiting. After
        // a failure every thread still meets the others here, doing nothing.
        s.barrier.wait();
        if s.failed.load(Ordering::Acquire) {
            continue;
        }
        let cpu0 = thread_cpu_us();
        for mut c in conns {
            if let Err(e) = c.write_all(frame) {
                s.failed.store(true, Ordering::Release);
                result = Err(e);
                break;
            }
            let us = Instant::now().saturating_duration_since(due).as_micros() as u64;
            let _ = hist.record(us.clamp(1, MAX_US));
            writes += 1;
        }
        cpu_us += thread_cpu_us() - cpu0;
    }
    result.map(|()| Sent {
        hist,
        cpu_us,
        writes,
    })
}

/// What the sink read.
#[derive(Debug)]
struct Read {
    bytes: u64,
    reads: u64,
    cpu_us: u64,
}

/// The child process holding the members' ends.
#[derive(Debug)]
struct Sink {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Sink {
    fn spawn(addr: SocketAddr, n: usize) -> anyhow::Result<Sink> {
        let exe = std::env::current_exe().context("floor: cannot find this program")?;
        let mut child = Command::new(exe)
            .args(["bench", "floor-sink", "--addr"])
            .arg(addr.to_string())
            .arg("--connections")
            .arg(n.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("floor: cannot start the sink process")?;
        let out = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Sink { child, out })
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.out.read_line(&mut line)?;
        if line.is_empty() {
            let status = self.child.wait()?;
            bail!("floor: the sink exited ({status}) without a report");
        }
        Ok(line)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let line = self.line()?;
        if line.trim() != "ready" {
            bail!("floor: the sink said {line:?} instead of ready");
        }
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<Read> {
        let line = self.line()?;
        let _ = self.child.wait();
        let v: Value = serde_json::from_str(&line).context("floor: the sink's report")?;
        let get = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        Ok(Read {
            bytes: get("bytes"),
            reads: get("reads"),
            cpu_us: get("cpu_us"),
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

/// `floor-sink`: connects, says `ready`, reads everything until every
/// connection has ended, then prints what it read (one JSON line).
pub(super) fn sink(a: &FloorSinkArgs) -> anyhow::Result<ExitCode> {
    use mio::net::TcpStream as MioStream;
    use mio::{Events, Interest, Poll, Token};

    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(a.connections);
    for i in 0..a.connections {
        let s = TcpStream::connect(a.addr).with_context(|| format!("floor-sink: connect {i}"))?;
        s.set_nonblocking(true)?;
        let mut s = MioStream::from_std(s);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)?;
        conns.push(Some(s));
    }
    let mut stdout = io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let cpu0 = cpu_us(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID);
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut bytes, mut reads, mut open) = (0u64, 0u64, a.connections);
    while open > 0 {
        poll.poll(&mut events, Some(SINK_PATIENCE))?;
        if events.is_empty() {
            bail!("floor-sink: nothing for 60 s with {open} connections open");
        }
        for ev in &events {
            let i = ev.token().0;
            let Some(s) = conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            loop {
                match s.read(&mut buf) {
                    Ok(0) => {
                        let _ = poll.registry().deregister(s);
                        conns[i] = None;
                        open -= 1;
                        break;
                    }
                    Ok(n) => {
                        bytes += n as u64;
                        reads += 1;
                        // A short read drained the socket, unless the peer's
                        // end came with the data: then read on to see it.
                        if n < buf.len() && !ev.is_read_closed() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        let _ = poll.registry().deregister(s);
                        conns[i] = None;
                        open -= 1;
                        break;
                    }
                }
            }
        }
    }
    let cpu = cpu_us(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    writeln!(
        stdout,
        "{}",
        json!({ "bytes": bytes, "reads": reads, "cpu_us": cpu })
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
}
