//! confab's connection layer: what carries bytes between a client and a
//! session, and nothing of sessions or the chat protocol.
//!
//! - [`serve`]: an HTTP/1.1 accept loop (hyper) that gives a WebSocket upgrade
//!   the socket itself, with a header-read timeout and a graceful stop.
//! - [`ws`]: the server's end of RFC 6455 over any `AsyncRead + AsyncWrite`
//!   ([`ws::split_upgraded`] after an HTTP upgrade, [`ws::split_io`] for a
//!   stream whose handshake is done, such as a test's `tokio::io::duplex`).
//! - [`outbox`]: a connection's bounded outbound queue and its writer task,
//!   which runs only while there is something to write.
//! - [`queue`]: the bounded many-producer queue under both, which holds no
//!   memory while empty.
//!
//! Why this is hand-written rather than tungstenite's `WebSocketStream`: memory
//! per idle connection. tungstenite keeps a read and a write buffer for a
//! connection's life and needs a lock to split a stream; here an idle
//! connection keeps no buffer, no writer task and no waker (3.7 KiB per idle
//! logged-in connection in all, measured with `confab bench connect`). The
//! framing is checked against tungstenite's own client in the tests, and the
//! frame headers are tungstenite's `FrameHeader`.
//!
//! Contract, in short (each module has the whole of its part):
//! - **Ordering**: frames leave in the order they were queued; a close frame
//!   goes after everything queued before it; [`outbox::Outbox::abort`] drops
//!   what is queued and closes at once.
//! - **Bounds**: an outbox holds at most its frames and bytes; a push past
//!   them fails ([`outbox::Slow`]) instead of growing; [`queue`] never blocks
//!   a producer.
//! - **Close**: [`outbox::Closer::finish`] returns once what was queued is
//!   written and the socket closed (or the writer gave up on a dead peer);
//!   a reader reports the client's close frame and the status code in it.
//! - **Idle memory**: an idle connection holds its reader (no buffer unless a
//!   frame is part-way in), its parked writer (no buffer, no task, no waker)
//!   and two empty queues.
//! - **Cancel safety**: [`ws::Reader::next`] may be dropped at any await
//!   (as in `select!`) without losing bytes: a partial frame is kept for the
//!   next call. A writer's flush given up mid-frame is finished before the
//!   next frame (a close included).

mod http1;
pub mod outbox;
pub mod queue;
pub mod ws;

pub use http1::{HEADER_READ_TIMEOUT, serve};
