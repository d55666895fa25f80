//! A connection's outbound queue: bounded in frames and bytes, drained by a
//! writer task that batches frames into as few socket flushes as it can.
//!
//! The writer task runs only while the connection is writing: it parks soon
//! after its last write (50 ms, or a second on a busy connection), leaving the
//! socket's write half and the queue in the outbox, and the next queued item
//! starts it again. An idle connection keeps one task (its reader's owner),
//! not two.
//!
//! Contract:
//! - **Bounds**: nothing grows without bound. When the queue is full in frames
//!   or bytes, [`Outbox::push`] says so ([`Slow`]) and the owner decides (a
//!   chat session disconnects the client as a slow consumer); a frame of
//!   [`Class::ShedAt`] is dropped earlier, from its fill level on, so a
//!   struggling peer loses what matters least first.
//! - **Order**: frames leave in the order they were queued, pings and pongs
//!   among them; [`Outbox::close`] queues the close frame after everything
//!   queued before it; [`Outbox::abort`] drops what is queued and sends the
//!   close frame now (a peer that does not read never drains its queue).
//! - **Waiting**: [`Outbox::push_paced`] and [`Outbox::close`] wait for room,
//!   woken by the writer when it takes items off the queue (no polling), for
//!   at most their patience.
//! - **Close**: [`Closer::finish`] returns once writing is over: what was
//!   queued is written and a close frame sent, or the socket is shut down once
//!   every producer is gone, or the writer gave up on a failed socket.
//! - **Idle memory**: a parked writer keeps the socket's write half (no write
//!   buffer), an empty queue (no slots) and no waker.
//! - **Cancel safety**: a future of [`Outbox::push_paced`] or
//!   [`Outbox::close`] dropped before it finishes has queued nothing (or the
//!   whole item); the writer finishes a frame a cancelled flush left
//!   part-written before the next one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::queue;
use crate::ws::{SocketWriter, Utf8Bytes};
use tokio::time::Instant;

/// How a text frame is treated when the queue fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Never shed: if it cannot be queued, the peer is slow ([`Slow`]).
    Keep,
    /// Shed (not queued, [`Outbox::push`] answers `Ok(false)`) once the queue
    /// is at least this many percent full, in frames or bytes; below that, as
    /// [`Class::Keep`].
    ShedAt(u8),
}

/// An item for the writer task.
#[derive(Debug)]
pub enum Out {
    Text(Utf8Bytes),
    Ping,
    /// The answer to the client's ping with this payload.
    Pong(Bytes),
    /// Send a close frame, then stop.
    Close(u16, String),
}

/// The queue is over its bounds: disconnect the client as slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slow;

/// What the producers and the writer share besides the queue.
#[derive(Debug)]
struct Shared {
    /// Bytes of text frames queued and not yet written.
    bytes: AtomicUsize,
    /// Set to make the writer skip the queue and close.
    abort: Mutex<Option<(u16, String)>>,
    abort_notify: Notify,
    /// Whether a writer task runs, and what it needs while none does.
    writer: Mutex<WriterState>,
    /// Told when a writer parks or finishes (see [`Closer::finish`]).
    writer_changed: Notify,
    /// Told when the writer took items off the queue or writing is over: what
    /// a producer waiting for room ([`Outbox::push_paced`]) waits for.
    room_freed: Notify,
    /// Where a parked writer is started again (`None`: a detached outbox).
    runtime: Option<tokio::runtime::Handle>,
}

impl Shared {
    fn new(writer: WriterState, runtime: Option<tokio::runtime::Handle>) -> Shared {
        Shared {
            bytes: AtomicUsize::new(0),
            abort: Mutex::new(None),
            abort_notify: Notify::new(),
            writer: Mutex::new(writer),
            writer_changed: Notify::new(),
            room_freed: Notify::new(),
            runtime,
        }
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn abort(&self) -> std::sync::MutexGuard<'_, Option<(u16, String)>> {
        self.abort
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The socket's write half and the queue's receiving end: what a writer task
/// works with, kept in [`Shared`] while no task runs.
struct Writer {
    socket: SocketWriter,
    rx: queue::Receiver<Out>,
    /// When this writer last parked (`None`: never): see [`QUICK_LINGER`].
    parked_at: Option<tokio::time::Instant>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

/// Whether a connection has a writer task.
///
/// Invariant: while items are queued (or an abort is requested) and writing is
/// not over, the state is `Running`. A writer parks only under the state's lock
/// after seeing an empty queue, and every producer looks at the state after it
/// queued; so an item queued after the writer last looked finds it parked and
/// starts it.
#[derive(Debug)]
enum WriterState {
    /// A writer task runs (for a detached outbox: nothing is ever started).
    Running,
    /// Nothing to write: the next item starts a task. An idle connection keeps
    /// no task for writing, only this.
    Parked(Writer),
    /// Writing is over: a close frame went out, or the socket or queue ended.
    Done,
}

impl WriterState {
    /// Takes a parked writer to run it, leaving `Running`; any other state stays.
    fn take_parked(&mut self) -> Option<Writer> {
        match std::mem::replace(self, WriterState::Running) {
            WriterState::Parked(w) => Some(w),
            other => {
                *self = other;
                None
            }
        }
    }
}

/// The producing side of a connection's outbound queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: queue::Sender<Out>,
    shared: Arc<Shared>,
    max_frames: usize,
    max_bytes: usize,
}

/// The owner's hold on the writing side: it waits, at the end, until what was
/// queued is written and the socket closed ([`Closer::finish`]).
#[derive(Debug)]
pub struct Closer {
    shared: Arc<Shared>,
}

/// Makes the queue feeding `socket`. No task runs until something is queued; a
/// writer task runs while there is something to write, and parks again when the
/// queue is empty. Must be called on a tokio runtime, where writers will run.
pub fn start(socket: SocketWriter, max_frames: usize, max_bytes: usize) -> (Outbox, Closer) {
    let (tx, rx) = queue::bounded(max_frames);
    let shared = Arc::new(Shared::new(
        WriterState::Parked(Writer {
            socket,
            rx,
            parked_at: None,
        }),
        Some(tokio::runtime::Handle::current()),
    ));
    (
        Outbox {
            tx,
            shared: shared.clone(),
            max_frames: max_frames.max(1),
            max_bytes: max_bytes.max(1),
        },
        Closer { shared },
    )
}

impl Closer {
    /// Waits until writing is over: whatever is queued is written, then a close
    /// frame if one was queued, else the socket is closed once every producer
    /// is gone. A parked writer does this on the caller's task.
    pub async fn finish(self) {
        loop {
            let changed = self.shared.writer_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let parked = {
                let mut state = self.shared.writer();
                if matches!(*state, WriterState::Done) {
                    return;
                }
                state.take_parked()
            };
            match parked {
                Some(w) => return run_writer(w, self.shared.clone(), false).await,
                None => changed.await,
            }
        }
    }
}

impl Outbox {
    /// An outbox without a writer task: a test or benchmark reads what was queued.
    pub fn detached(max_frames: usize, max_bytes: usize) -> (Outbox, queue::Receiver<Out>) {
        let (tx, rx) = queue::bounded(max_frames);
        let outbox = Outbox {
            tx,
            shared: Arc::new(Shared::new(WriterState::Running, None)),
            max_frames: max_frames.max(1),
            max_bytes: max_bytes.max(1),
        };
        (outbox, rx)
    }

    /// Percent of the queue in use (the larger of frames and bytes).
    fn fill_percent(&self) -> usize {
        let frames = self.tx.len();
        let bytes = self.shared.bytes.load(Ordering::Relaxed);
        (frames * 100 / self.max_frames).max(bytes.saturating_mul(100) / self.max_bytes)
    }

    /// Queues a text frame. `Ok(false)` means it was shed by priority (only for
    /// unstored classes); `Err(Slow)` means the queue is full.
    pub fn push(&self, text: Utf8Bytes, class: Class) -> Result<bool, Slow> {
        if let Class::ShedAt(limit) = class {
            if self.fill_percent() >= usize::from(limit) {
                return Ok(false);
            }
        }
        let len = text.len();
        if self.shared.bytes.load(Ordering::Relaxed) + len > self.max_bytes {
            return Err(Slow);
        }
        self.shared.bytes.fetch_add(len, Ordering::Relaxed);
        match self.tx.try_push(Out::Text(text)) {
            Ok(()) => {
                self.start_writer();
                Ok(true)
            }
            Err(_) => {
                self.shared.bytes.fetch_sub(len, Ordering::Relaxed);
                Err(Slow)
            }
        }
    }

    /// Queues a stored frame of a catch-up, waiting for room instead of failing:
    /// a catch-up is paced by how fast the client reads. A frame larger than the
    /// byte bound goes alone into an empty queue. `Err(Slow)` after `patience`
    /// without progress (the client is not reading).
    pub async fn push_paced(
        &self,
        text: Utf8Bytes,
        patience: std::time::Duration,
    ) -> Result<(), Slow> {
        let len = text.len();
        self.push_waiting(Out::Text(text), len, patience).await
    }

    /// Queues a ping; skipped when the queue is full (the queue itself then
    /// proves the peer is not reading).
    pub fn ping(&self) {
        if self.tx.try_push(Out::Ping).is_ok() {
            self.start_writer();
        }
    }

    /// Queues the answer to the client's ping; skipped when the queue is full.
    pub fn pong(&self, payload: Bytes) {
        if self.tx.try_push(Out::Pong(payload)).is_ok() {
            self.start_writer();
        }
    }

    /// Starts a writer task if none runs (after something was queued).
    fn start_writer(&self) {
        let Some(parked) = self.shared.writer().take_parked() else {
            return;
        };
        match &self.shared.runtime {
            Some(runtime) => {
                runtime.spawn(run_writer(parked, self.shared.clone(), true));
            }
            None => drop(parked),
        }
    }

    /// Queues a close frame after whatever is queued, waiting briefly for room.
    pub async fn close(&self, code: u16, reason: String) {
        let _ = self
            .push_waiting(
                Out::Close(code, reason),
                0,
                std::time::Duration::from_secs(1),
            )
            .await;
    }

    /// Queues `item`, which counts `len` bytes against the byte bound (0: none),
    /// waiting while the queue is full in frames or bytes (a frame larger than
    /// the byte bound waits for an empty queue) until the writer frees room.
    /// `Err(Slow)` after `patience`, or when the writer is gone.
    async fn push_waiting(
        &self,
        mut item: Out,
        len: usize,
        patience: std::time::Duration,
    ) -> Result<(), Slow> {
        let deadline = Instant::now() + patience;
        loop {
            // Registered before looking, so room freed after the look wakes it.
            let freed = self.shared.room_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let queued = self.shared.bytes.load(Ordering::Relaxed);
            if len == 0 || queued == 0 || queued + len <= self.max_bytes {
                self.shared.bytes.fetch_add(len, Ordering::Relaxed);
                match self.tx.try_push(item) {
                    Ok(()) => {
                        self.start_writer();
                        return Ok(());
                    }
                    Err(rejected) => {
                        self.shared.bytes.fetch_sub(len, Ordering::Relaxed);
                        if rejected.error == queue::PushError::Closed {
                            return Err(Slow);
                        }
                        item = rejected.item;
                    }
                }
            }
            if matches!(*self.shared.writer(), WriterState::Done) {
                return Err(Slow);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(Slow);
            }
        }
    }

    /// Makes the writer drop whatever is queued and send a close frame now (for a
    /// client that is not reading: its queue will never drain).
    pub fn abort(&self, code: u16, reason: String) {
        *self.shared.abort() = Some((code, reason));
        self.shared.abort_notify.notify_one();
        self.start_writer();
    }
}

/// How a writer stopped writing.
enum Drained {
    /// Nothing was queued for the writer's stay (only when it may park).
    Idle,
    /// A close frame went out: writing is over.
    Closed,
    /// The queue ended (every producer is gone) or the socket failed: close it.
    Ended,
}

/// Bytes of frames written per socket write at most (more go in the next).
const WRITE_BATCH: usize = 16 * 1024;

/// Room kept in an empty queue between bursts; more is given back after every
/// flush, and all of it when the writer parks.
const KEEP_IDLE_SLOTS: usize = 8;

/// How long a writer task stays after its last write before it parks, when
/// its connection is busy (it wrote within [`LINGER`] of parking last): it keeps
/// its task, as starting one per message would cost more than waking it.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the others stay: a login's reply, a ping's, a rare push. A writer
/// task and its buffers are about 1.5 KB; with a whole [`LINGER`] after every
/// login, a storm of logins held one per connection at its peak, and the heap
/// kept those pages.
const QUICK_LINGER: std::time::Duration = std::time::Duration::from_millis(50);

/// When a writer that may park does: its timer, how long it stays, and its
/// last write.
struct Linger<'a> {
    timer: std::pin::Pin<&'a mut tokio::time::Sleep>,
    stay: std::time::Duration,
    last_write: tokio::time::Instant,
}

/// Writes what is queued, several frames per flush. With a [`Linger`] it
/// returns [`Drained::Idle`] once nothing was queued for its stay; without,
/// it waits for more until the queue ends.
async fn drain(w: &mut Writer, shared: &Shared, mut linger: Option<&mut Linger<'_>>) -> Drained {
    loop {
        let first = match w.rx.try_recv() {
            Some(item) => item,
            None => match linger.as_deref_mut() {
                None => match w.rx.recv().await {
                    Some(item) => item,
                    None => return Drained::Ended,
                },
                Some(linger) => loop {
                    // The timer is reset only when it fires early: one timer
                    // event per stay, however many writes.
                    tokio::select! {
                        biased;
                        item = w.rx.recv() => match item {
                            Some(item) => break item,
                            None => return Drained::Ended,
                        },
                        () = linger.timer.as_mut() => {
                            let due = linger.last_write + linger.stay;
                            if tokio::time::Instant::now() >= due {
                                return Drained::Idle;
                            }
                            linger.timer.as_mut().reset(due);
                        }
                    }
                },
            },
        };
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Out::Text(text) => {
                    shared.bytes.fetch_sub(text.len(), Ordering::Relaxed);
                    w.socket.text(text);
                }
                Out::Ping => w.socket.ping(),
                Out::Pong(payload) => w.socket.pong(&payload),
                Out::Close(code, reason) => {
                    w.socket.close(code, &reason);
                    let _ = w.socket.flush().await;
                    return Drained::Closed;
                }
            }
            if w.socket.buffered() >= WRITE_BATCH && w.socket.flush().await.is_err() {
                return Drained::Ended;
            }
            next = w.rx.try_recv();
        }
        shared.room_freed.notify_waiters();
        if w.socket.flush().await.is_err() {
            return Drained::Ended;
        }
        w.rx.shrink_if_empty(KEEP_IDLE_SLOTS);
        if let Some(linger) = linger.as_deref_mut() {
            linger.last_write = tokio::time::Instant::now();
        }
    }
}

/// The abort requested by [`Outbox::abort`], once there is one.
async fn aborted(shared: &Shared) -> (u16, String) {
    loop {
        let taken = shared.abort().take();
        if let Some(abort) = taken {
            return abort;
        }
        shared.abort_notify.notified().await;
    }
}

/// A writer task: writes until nothing was queued for its stay, then parks
/// (`may_park`), or goes on until writing is over. (An async block, not an
/// `async fn`, which would keep its arguments twice.)
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn run_writer(
    mut w: Writer,
    shared: Arc<Shared>,
    mut may_park: bool,
) -> impl Future<Output = ()> + Send {
    // Made outside the async block, so it runs even if the future is dropped
    // unpolled (a runtime shutting down) or the writer panics.
    let mut ended = WriterEnded {
        shared: shared.clone(),
        parked: false,
    };
    async move {
        let now = tokio::time::Instant::now();
        let stay = match w.parked_at {
            Some(parked) if now.duration_since(parked) < LINGER => LINGER,
            _ => QUICK_LINGER,
        };
        let timer = tokio::time::sleep(stay);
        tokio::pin!(timer);
        let mut linger = Linger {
            timer,
            stay,
            last_write: tokio::time::Instant::now(),
        };
        loop {
            let drained = tokio::select! {
                biased;
                (code, reason) = aborted(&shared) => {
                    // The peer is not reading; give the close frame a moment, no more.
                    // A frame a cancelled flush left part-written is finished first.
                    w.socket.close(code, &reason);
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(1),
                        w.socket.flush(),
                    )
                    .await;
                    Drained::Closed
                }
                drained = drain(&mut w, &shared, may_park.then_some(&mut linger)) => drained,
            };
            match drained {
                Drained::Idle => {
                    let mut state = shared.writer();
                    if !w.rx.has_senders() {
                        // Nothing more can come: wait for the queue's end, then close.
                        may_park = false;
                    } else if w.rx.is_empty() && shared.abort().is_none() {
                        // An idle connection holds no queue room either.
                        w.rx.shrink_if_empty(0);
                        // The task ends: keep neither it (the queue's waker)
                        // nor the write buffer.
                        w.rx.forget_waker();
                        w.socket.release();
                        w.parked_at = Some(tokio::time::Instant::now());
                        *state = WriterState::Parked(w);
                        ended.parked();
                        drop(state);
                        shared.writer_changed.notify_waiters();
                        return;
                    }
                }
                Drained::Closed => break,
                Drained::Ended => {
                    let _ = w.socket.shutdown().await;
                    break;
                }
            }
        }
        drop(w);
        drop(ended);
    }
}

/// Ends a writer's turn: unless it parked, writing is over (`Done`) however
/// the writer stopped, and a session waiting in [`Closer::finish`] is told.
struct WriterEnded {
    shared: Arc<Shared>,
    parked: bool,
}

impl WriterEnded {
    /// The writer parked: writing goes on with the next writer.
    fn parked(&mut self) {
        self.parked = true;
    }
}

impl Drop for WriterEnded {
    fn drop(&mut self) {
        if !self.parked {
            *self.shared.writer() = WriterState::Done;
            self.shared.writer_changed.notify_waiters();
            self.shared.room_freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;
    use crate::ws::split_io;

    type Client = WebSocketStream<tokio::io::DuplexStream>;

    /// An outbox on one end of a pipe of `pipe` bytes, and a WebSocket client
    /// on the other.
    async fn outbox_and_client(
        frames: usize,
        bytes: usize,
        pipe: usize,
    ) -> (Outbox, Closer, Client) {
        let (client, server) = tokio::io::duplex(pipe);
        let (_reader, writer) = split_io(server, 1 << 20);
        let (outbox, closer) = start(writer, frames, bytes);
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        (outbox, closer, client)
    }

    fn text(s: &str) -> Utf8Bytes {
        Utf8Bytes::from(s.to_owned())
    }

    async fn next_text(client: &mut Client) -> String {
        loop {
            match client.next().await.expect("a message").expect("a frame") {
                Message::Text(t) => return t.as_str().to_owned(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected text, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn frames_leave_in_order_and_the_close_after_them() {
        let (outbox, closer, mut client) = outbox_and_client(64, 1 << 20, 1 << 16).await;
        for i in 0..20 {
            assert_eq!(outbox.push(text(&format!("m{i}")), Class::Keep), Ok(true));
        }
        outbox.close(4000, "bye".into()).await;
        drop(outbox);
        for i in 0..20 {
            assert_eq!(next_text(&mut client).await, format!("m{i}"));
        }
        match client.next().await.expect("close").expect("frame") {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 4000);
                assert_eq!(frame.reason.as_str(), "bye");
            }
            other => panic!("expected the close frame, got {other:?}"),
        }
        tokio::time::timeout(Duration::from_secs(5), closer.finish())
            .await
            .expect("finish returns once the close frame is written");
    }

    /// A peer that does not read: the pipe fills, then the queue; a frame past
    /// the bound is refused, and a sheddable one is dropped before that.
    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_and_sheds_by_fill_level() {
        let (outbox, _closer, _client) = outbox_and_client(4, 1 << 20, 64).await;
        // The writer takes the first frames into the pipe until it is full.
        let mut queued = 0;
        while outbox.fill_percent() < 50 {
            assert_eq!(outbox.push(text(&"x".repeat(100)), Class::Keep), Ok(true));
            queued += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert!(queued < 100, "the queue never filled");
        }
        assert_eq!(
            outbox.push(text("low"), Class::ShedAt(50)),
            Ok(false),
            "shed at half full"
        );
        while outbox.push(text("keep"), Class::Keep).is_ok() {
            queued += 1;
            assert!(queued < 100, "the bound never held");
        }
        assert_eq!(outbox.push(text("more"), Class::Keep), Err(Slow));
        assert!(outbox.fill_percent() <= 100);
    }

    /// A paced push waits for the writer to free room and is woken by it;
    /// with nobody reading it gives up after its patience.
    #[tokio::test(start_paused = true)]
    async fn a_paced_push_waits_for_room_then_gives_up() {
        let (outbox, _closer, mut client) = outbox_and_client(1, 1 << 20, 64).await;
        // Fill the pipe and the one-frame queue.
        while outbox.push(text(&"y".repeat(100)), Class::Keep).is_ok() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = tokio::time::Instant::now();
        let paced = outbox.push_paced(text("paced"), Duration::from_secs(30));
        assert_eq!(paced.await, Err(Slow), "nobody reads: no room");
        assert!(
            started.elapsed() >= Duration::from_secs(30),
            "it waited its patience"
        );

        // Now the client reads: the writer frees room and wakes the producer.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(Ok(Message::Text(t))) = client.next().await {
                let last = t.as_str() == "paced";
                got.push(t.as_str().to_owned());
                if last {
                    break;
                }
            }
            got
        });
        outbox
            .push_paced(text("paced"), Duration::from_secs(30))
            .await
            .expect("room once the client reads");
        let got = tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("the client gets it")
            .expect("reader");
        assert_eq!(got.last().map(String::as_str), Some("paced"));
    }

    /// An abort skips what is queued: the close frame goes first.
    #[tokio::test]
    async fn an_abort_drops_the_queue_and_closes_now() {
        let (outbox, closer, mut client) = outbox_and_client(1024, 1 << 20, 64).await;
        for _ in 0..200 {
            let _ = outbox.push(text(&"z".repeat(100)), Class::Keep);
        }
        outbox.abort(4005, "slow".into());
        drop(outbox);
        let mut texts = 0;
        loop {
            match client.next().await {
                Some(Ok(Message::Text(_))) => texts += 1,
                Some(Ok(Message::Close(Some(frame)))) => {
                    assert_eq!(u16::from(frame.code), 4005);
                    break;
                }
                other => panic!("expected frames then the close, got {other:?}"),
            }
        }
        assert!(
            texts < 200,
            "the queue was dropped, not written ({texts} frames)"
        );
        tokio::time::timeout(Duration::from_secs(5), closer.finish())
            .await
            .expect("finish after the abort");
    }

    /// An idle writer parks (its task ends) and the next frame starts it again.
    #[tokio::test(start_paused = true)]
    async fn a_parked_writer_starts_again_for_the_next_frame() {
        let (outbox, _closer, mut client) = outbox_and_client(8, 1 << 20, 1 << 16).await;
        assert_eq!(outbox.push(text("first"), Class::Keep), Ok(true));
        assert_eq!(next_text(&mut client).await, "first");
        tokio::time::sleep(LINGER * 3).await;
        assert!(
            matches!(*outbox.shared.writer(), WriterState::Parked(_)),
            "idle: the writer parked"
        );
        assert_eq!(outbox.push(text("second"), Class::Keep), Ok(true));
        assert_eq!(next_text(&mut client).await, "second");
    }
}
