//! Receiver threads: the measuring side of the generator.
//!
//! Connections are logged in and joined on the tokio runtime, then handed to a
//! few threads of their own, each running one epoll loop (mio) over many
//! connections: no task, waker or scheduler per frame, one read system call per
//! frame in the common case (a read that does not fill the buffer drained the
//! socket, so no second read to see `EAGAIN`), frames parsed in place, and one
//! shard update per wake-up.
//!
//! Receive times are the kernel's (`SO_TIMESTAMPNS`: when the segment reached
//! the socket), so a frame's latency does not include the time it waited while
//! this thread served other connections — a fan-out to 10,000 members arrives
//! as 10,000 frames at once, and a real client only reads its own.

use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use super::Target;
use super::stats::{Bits, wall_us};
use super::wire::Receiving;
use super::ws::{self, Frames, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Ws};

const WAKE: Token = Token(usize::MAX);
/// How often an idle receiver thread looks at the stop flag.
const TICK: Duration = Duration::from_millis(50);

/// A connection handed to a receiver thread.
type Handoff = (usize, std::net::TcpStream, Frames, u32);

/// The receiver threads.
#[derive(Debug)]
pub(super) struct Receivers {
    inboxes: Vec<(mpsc::Sender<Handoff>, Arc<Waker>)>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<(usize, Bits)>>>,
    next: AtomicUsize,
}

impl Receivers {
    /// Starts `threads` receiver threads (0: one per two CPUs, at most 8, so
    /// that a server on the same machine keeps the other half).
    pub(super) fn start(threads: usize, r: &Arc<Receiving>) -> io::Result<Receivers> {
        let n = if threads == 0 {
            let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
            (cpus / 2).clamp(1, 8)
        } else {
            threads.min(32)
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut inboxes = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for t in 0..n {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
            let (tx, rx) = mpsc::channel();
            let (stop, r) = (stop.clone(), r.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("bench-recv-{t}"))
                    .spawn(move || run(poll, &rx, &stop, &r, t))?,
            );
            inboxes.push((tx, waker));
        }
        Ok(Receivers {
            inboxes,
            stop,
            threads: handles,
            next: AtomicUsize::new(0),
        })
    }

    /// Hands connection `id` (logged in, joined) to a receiver thread.
    pub(super) fn add(&self, id: usize, ws: Ws) -> io::Result<()> {
        let (stream, frames, seed) = ws.into_std()?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.inboxes.len();
        let (tx, waker) = &self.inboxes[i];
        tx.send((id, stream, frames, seed))
            .map_err(|_| io::Error::other("receiver thread gone"))?;
        waker.wake()
    }

    /// Stops the threads, closes the connections and returns, per id, the
    /// sequence numbers each connection saw (`n` entries).
    pub(super) fn finish(self, n: usize) -> Vec<Bits> {
        self.stop.store(true, Ordering::Release);
        for (_, waker) in &self.inboxes {
            let _ = waker.wake();
        }
        let mut out: Vec<Bits> = (0..n).map(|_| Bits::default()).collect();
        for t in self.threads {
            for (id, bits) in t.join().unwrap_or_default() {
                if let Some(slot) = out.get_mut(id) {
                    *slot = bits;
                }
            }
        }
        out
    }
}

/// One connection on a receiver thread.
#[derive(Debug)]
struct Member {
    id: usize,
    stream: TcpStream,
    frames: Frames,
    seed: u32,
    seen: Bits,
    out: Vec<u8>,
    /// Receive time (wall-clock µs) of the last read.
    stamp_us: u64,
}

/// Reads into `buf`; also returns the kernel's receive time of the data
/// (wall-clock µs), when it gave one.
pub(super) fn read_stamped(
    stream: &TcpStream,
    buf: &mut [u8],
    cmsg: &mut [u8],
) -> io::Result<(usize, Option<u64>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::AsRawFd as _;
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let mut stamp = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                let us = ts.tv_sec() as i128 * 1_000_000 + i128::from(ts.tv_nsec()) / 1000;
                stamp = u64::try_from(us).ok().filter(|&u| u > 0);
            }
        }
    }
    Ok((msg.bytes, stamp))
}

/// What a wake-up of one connection found.
#[derive(Debug, Default)]
struct Batch {
    lat: Vec<u64>,
    new: u64,
    dup: u64,
    last_us: u64,
}

impl Member {
    /// Reads everything available and handles the frames; false when the
    /// connection ended.
    fn pump(&mut self, r: &Receiving, cmsg: &mut [u8], batch: &mut Batch) -> bool {
        let sio = r.scanner.target == Target::Socketio;
        let mut drained = false;
        loop {
            let now_us = self.stamp_us;
            let mut pong: Option<(u8, Vec<u8>)> = None;
            loop {
                let f = match self.frames.try_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => return false,
                };
                match f.op {
                    OP_TEXT if sio && f.data == b"2" => pong = Some((OP_TEXT, b"3".to_vec())),
                    OP_TEXT => r.scanner.scan(f.data, |sent, seq| {
                        batch.lat.push(now_us.saturating_sub(sent));
                        if self.seen.insert(seq) {
                            batch.new += 1;
                        } else {
                            batch.dup += 1;
                        }
                    }),
                    OP_PING => pong = Some((OP_PONG, f.data.to_vec())),
                    OP_CLOSE => return false,
                    _ => {}
                }
            }
            if let Some((op, data)) = pong {
                // A receiver sends nothing else, so its send buffer is empty
                // and a frame this small is written whole.
                self.out.clear();
                ws::encode(&mut self.out, &mut self.seed, op, &data);
                if !matches!((&self.stream).write(&self.out), Ok(n) if n == self.out.len()) {
                    return false;
                }
            }
            if drained {
                return true;
            }
            let space = self.frames.space();
            let room = space.len();
            match read_stamped(&self.stream, space, cmsg) {
                Ok((0, _)) => return false,
                Ok((n, stamp)) => {
                    self.frames.filled(n);
                    self.stamp_us = stamp.unwrap_or_else(wall_us);
                    batch.last_us = batch.last_us.max(self.stamp_us);
                    drained = n < room;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => drained = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

/// One receiver thread's loop.
fn run(
    mut poll: Poll,
    inbox: &mpsc::Receiver<Handoff>,
    stop: &AtomicBool,
    r: &Receiving,
    shard: usize,
) -> Vec<(usize, Bits)> {
    let mut events = Events::with_capacity(1024);
    let mut members: Vec<Option<Member>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut ended: Vec<(usize, Bits)> = Vec::new();
    let mut batch = Batch::default();
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    loop {
        if let Err(e) = poll.poll(&mut events, Some(TICK)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if stop.load(Ordering::Acquire) {
            break;
        }
        batch.lat.clear();
        (batch.new, batch.dup, batch.last_us) = (0, 0, 0);
        for ev in &events {
            let slot = if ev.token() == WAKE {
                // New connections: register, then handle what they already hold.
                while let Ok((id, std, frames, seed)) = inbox.try_recv() {
                    // Kernel receive timestamps; without them, the clock at read.
                    let _ = nix::sys::socket::setsockopt(
                        &std,
                        nix::sys::socket::sockopt::ReceiveTimestampns,
                        &true,
                    );
                    let mut stream = TcpStream::from_std(std);
                    let slot = free.pop().unwrap_or(members.len());
                    if poll
                        .registry()
                        .register(&mut stream, Token(slot), Interest::READABLE)
                        .is_err()
                    {
                        ended.push((id, Bits::default()));
                        continue;
                    }
                    let mut m = Member {
                        id,
                        stream,
                        frames,
                        seed,
                        seen: Bits::default(),
                        out: Vec::new(),
                        stamp_us: wall_us(),
                    };
                    // Frames read during set-up may wait in the buffer.
                    if !m.pump(r, &mut cmsg, &mut batch) {
                        let _ = poll.registry().deregister(&mut m.stream);
                        ended.push((m.id, m.seen));
                        if slot < members.len() {
                            free.push(slot);
                        }
                        continue;
                    }
                    if slot == members.len() {
                        members.push(Some(m));
                    } else {
                        members[slot] = Some(m);
                    }
                }
                continue;
            } else {
                ev.token().0
            };
            let Some(m) = members.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if !m.pump(r, &mut cmsg, &mut batch) {
                if let Some(mut m) = members[slot].take() {
                    let _ = poll.registry().deregister(&mut m.stream);
                    ended.push((m.id, m.seen));
                    free.push(slot);
                }
            }
        }
        if batch.new + batch.dup > 0 {
            r.stats
                .record(shard, &batch.lat, batch.new, batch.dup, batch.last_us);
        }
    }
    ended.extend(members.into_iter().flatten().map(|m| (m.id, m.seen)));
    ended
}
