//! A connection's outbound queue: bounded in frames and bytes, drained by one
//! writer task that batches frames into as few socket flushes as it can.
//!
//! Invariant: nothing grows without bound. When the queue is full the producer
//! learns it ([`Slow`]) and disconnects the client as a slow consumer; unstored
//! pushes are shed earlier, by priority (Barrage, then Low, then Medium), so a
//! struggling receiver loses decoration before it loses the connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use confab_proto::frame::Priority;
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::sync::Notify;

use crate::queue;

/// What a frame is, for shedding under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// A reply to a request, or a control push: never shed.
    Reply,
    /// A stored message: never shed; if it cannot be queued the client is slow.
    Stored,
    /// A live push of an unstored type.
    Live(Priority),
    /// A Barrage push: shed first.
    Barrage,
}

/// An item for the writer task.
#[derive(Debug)]
pub(crate) enum Out {
    Text(Utf8Bytes),
    Ping,
    /// Send a close frame, then stop.
    Close(u16, String),
}

/// The queue is over its bounds: disconnect the client as slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slow;

/// What the producers and the writer share besides the queue.
#[derive(Debug, Default)]
struct Shared {
    /// Bytes of text frames queued and not yet written.
    bytes: AtomicUsize,
    /// Set to make the writer skip the queue and close.
    abort: Mutex<Option<(u16, String)>>,
    abort_notify: Notify,
}

/// The producing side of a connection's outbound queue. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: queue::Sender<Out>,
    shared: Arc<Shared>,
    max_frames: usize,
    max_bytes: usize,
}

/// Starts the writer task for `sink` and returns the queue feeding it.
pub(crate) fn spawn_writer(
    sink: SplitSink<WebSocket, Message>,
    max_frames: usize,
    max_bytes: usize,
) -> (Outbox, tokio::task::JoinHandle<()>) {
    let (tx, rx) = queue::bounded(max_frames);
    let shared = Arc::new(Shared::default());
    let handle = tokio::spawn(writer(sink, rx, shared.clone()));
    (
        Outbox {
            tx,
            shared,
            max_frames: max_frames.max(1),
            max_bytes: max_bytes.max(1),
        },
        handle,
    )
}

impl Outbox {
    /// An outbox without a writer task: a test or benchmark reads what was queued.
    pub(crate) fn detached(max_frames: usize, max_bytes: usize) -> (Outbox, queue::Receiver<Out>) {
        let (tx, rx) = queue::bounded(max_frames);
        let outbox = Outbox {
            tx,
            shared: Arc::new(Shared::default()),
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
    pub(crate) fn push(&self, text: Utf8Bytes, class: Class) -> Result<bool, Slow> {
        let shed_at = match class {
            Class::Barrage => Some(25),
            Class::Live(Priority::Low) => Some(50),
            Class::Live(Priority::Medium) => Some(75),
            Class::Live(Priority::High) | Class::Reply | Class::Stored => None,
        };
        if let Some(limit) = shed_at {
            if self.fill_percent() >= limit {
                return Ok(false);
            }
        }
        let len = text.len();
        if self.shared.bytes.load(Ordering::Relaxed) + len > self.max_bytes {
            return Err(Slow);
        }
        self.shared.bytes.fetch_add(len, Ordering::Relaxed);
        match self.tx.try_push(Out::Text(text)) {
            Ok(()) => Ok(true),
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
    pub(crate) async fn push_paced(
        &self,
        text: Utf8Bytes,
        patience: std::time::Duration,
    ) -> Result<(), Slow> {
        let len = text.len();
        self.push_waiting(Out::Text(text), len, patience).await
    }

    /// Queues a ping; skipped when the queue is full (the queue itself then
    /// proves the peer is not reading).
    pub(crate) fn ping(&self) {
        let _ = self.tx.try_push(Out::Ping);
    }

    /// Queues a close frame after whatever is queued, waiting briefly for room.
    pub(crate) async fn close(&self, code: u16, reason: String) {
        let _ = self
            .push_waiting(
                Out::Close(code, reason),
                0,
                std::time::Duration::from_secs(1),
            )
            .await;
    }

    /// Queues `item`, which counts `len` bytes against the byte bound (0: none),
    /// retrying every 5 ms while the queue is full in frames or bytes (a frame
    /// larger than the byte bound waits for an empty queue). `Err(Slow)` after
    /// `patience`, or when the writer is gone.
    async fn push_waiting(
        &self,
        mut item: Out,
        len: usize,
        patience: std::time::Duration,
    ) -> Result<(), Slow> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let queued = self.shared.bytes.load(Ordering::Relaxed);
            if len == 0 || queued == 0 || queued + len <= self.max_bytes {
                self.shared.bytes.fetch_add(len, Ordering::Relaxed);
                match self.tx.try_push(item) {
                    Ok(()) => return Ok(()),
                    Err(rejected) => {
                        self.shared.bytes.fetch_sub(len, Ordering::Relaxed);
                        if rejected.error == queue::PushError::Closed {
                            return Err(Slow);
                        }
                        item = rejected.item;
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Slow);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Makes the writer drop whatever is queued and send a close frame now (for a
    /// client that is not reading: its queue will never drain).
    pub(crate) fn abort(&self, code: u16, reason: String) {
        *self
            .shared
            .abort
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((code, reason));
        self.shared.abort_notify.notify_one();
    }
}

/// Room kept in an empty queue between bursts; more is given back, and all of it
/// once a ping went out with nothing else (the connection is idle).
const KEEP_IDLE_SLOTS: usize = 8;

async fn writer(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: queue::Receiver<Out>,
    shared: Arc<Shared>,
) {
    let close = |code, reason: String| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    let written = async {
        'outer: while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            let mut only_pings = true;
            while let Some(item) = next.take() {
                only_pings &= matches!(item, Out::Ping);
                let msg = match item {
                    Out::Text(text) => {
                        shared.bytes.fetch_sub(text.len(), Ordering::Relaxed);
                        Message::Text(text)
                    }
                    Out::Ping => Message::Ping(bytes::Bytes::new()),
                    Out::Close(code, reason) => {
                        let _ = sink.send(close(code, reason)).await;
                        return true;
                    }
                };
                if sink.feed(msg).await.is_err() {
                    break 'outer;
                }
                next = rx.try_recv();
            }
            if sink.flush().await.is_err() {
                break;
            }
            rx.shrink_if_empty(if only_pings { 0 } else { KEEP_IDLE_SLOTS });
        }
        false
    };
    let aborted = async {
        loop {
            let taken = shared
                .abort
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(abort) = taken {
                return abort;
            }
            shared.abort_notify.notified().await;
        }
    };
    let closed = tokio::select! {
        closed = written => closed,
        (code, reason) = aborted => {
            // The peer is not reading; give the close frame a moment, no more.
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                sink.send(close(code, reason)),
            )
            .await;
            true
        }
    };
    if !closed {
        let _ = sink.close().await;
    }
    drop(rx);
}
