//! The server's end of a WebSocket (RFC 6455) on an upgraded HTTP connection,
//! made for many idle connections: a connection holds no buffer while it waits.
//!
//! tungstenite (which axum's WebSocket wraps) keeps a read buffer and a write
//! buffer per connection for the connection's whole life, each as large as the
//! largest frame it has seen; with every idle client logged in, that and the
//! socket's shared lock came to a fifth of the server's memory per connection.
//! Here the reader reads into its poll's stack and keeps bytes on the heap only
//! while a frame is part-way in, and the [`Writer`]'s buffer is given back when
//! the writer task parks. Frame headers are still parsed and formatted by
//! tungstenite's `FrameHeader`; this module keeps the buffers and the rules:
//! client frames masked, no reserved bits or opcodes, control frames whole and
//! at most 125 bytes, fragments continued in order, text valid UTF-8, and a
//! message no larger than the limit (checked from the header, before its
//! payload is read).

use std::collections::VecDeque;
use std::io::{self, Cursor};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use axum::http;
pub use tokio_tungstenite::tungstenite::Utf8Bytes;
pub use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The read half of a connection, whatever carries it.
pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
/// The write half of a connection, whatever carries it (dropping it ends the
/// connection's write side).
pub type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;
/// The reading end of a server-side WebSocket.
pub type SocketReader = Reader<BoxRead>;
/// The writing end of a server-side WebSocket.
pub type SocketWriter = Writer<BoxWrite>;

/// Splits an upgraded HTTP connection into its WebSocket halves, reading
/// messages of at most `max_message` bytes, the bytes the HTTP layer read past
/// the handshake first. A `TcpStream` accepted by [`crate::serve`] is split in
/// two halves that read and write without a lock; any other connection (TLS
/// in front, a test's pipe) is split with `tokio::io::split`.
#[must_use]
pub fn split_upgraded(
    upgraded: hyper::upgrade::Upgraded,
    max_message: usize,
) -> (SocketReader, SocketWriter) {
    let (read, write, read_ahead): (BoxRead, BoxWrite, _) =
        match upgraded.downcast::<hyper_util::rt::TokioIo<tokio::net::TcpStream>>() {
            Ok(parts) => {
                let (read, write) = parts.io.into_inner().into_split();
                (Box::pin(read), Box::pin(write), parts.read_buf)
            }
            Err(upgraded) => {
                let (read, write) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
                (Box::pin(read), Box::pin(write), Bytes::new())
            }
        };
    let mut reader = Reader::new(read, max_message);
    if !read_ahead.is_empty() {
        reader.buf = read_ahead.to_vec();
    }
    (reader, Writer::new(write))
}

/// The WebSocket halves of a connection whose opening handshake is already
/// done (or never needed: a test's `tokio::io::duplex`), reading messages of at
/// most `max_message` bytes.
#[must_use]
pub fn split_io<T>(io: T, max_message: usize) -> (SocketReader, SocketWriter)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    (
        Reader::new(Box::pin(read) as BoxRead, max_message),
        Writer::new(Box::pin(write) as BoxWrite),
    )
}

/// Whether a header's comma-separated values include `token` (any case).
fn header_has(headers: &http::HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The `Sec-WebSocket-Accept` value for a valid WebSocket opening handshake
/// (RFC 6455 4.2.1), or the status and text that say what is wrong with the
/// request (for a wrong version, answer with `Sec-WebSocket-Version: 13`).
///
/// # Errors
/// The first rule of the handshake the request breaks.
pub fn accept_key<B>(req: &http::Request<B>) -> Result<String, (http::StatusCode, &'static str)> {
    use http::{Method, StatusCode, header};
    let headers = req.headers();
    let bad = |problem: &'static str| (StatusCode::BAD_REQUEST, problem);
    if req.method() != Method::GET {
        return Err(bad("a WebSocket handshake must be a GET request\n"));
    }
    if !header_has(headers, header::CONNECTION, "upgrade") {
        return Err(bad("the Connection header must include \"upgrade\"\n"));
    }
    if !header_has(headers, header::UPGRADE, "websocket") {
        return Err(bad("the Upgrade header must be \"websocket\"\n"));
    }
    // A body would be read as WebSocket frames after the upgrade.
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return Err(bad("a WebSocket handshake has no body\n"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "the Sec-WebSocket-Version header must be 13\n",
        ));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| derive_accept_key(key.as_bytes()))
        .ok_or_else(|| bad("the Sec-WebSocket-Key header is missing\n"))
}

/// Bytes read from the socket per read, into the poll's stack.
const READ_CHUNK: usize = 8 * 1024;

/// Largest payload of a control frame (RFC 6455 5.5).
const MAX_CONTROL: u64 = 125;

/// A message (or control frame) from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(Utf8Bytes),
    /// A binary message: not part of confab's protocol, so its bytes are dropped.
    Binary,
    Ping(Bytes),
    Pong,
    /// The client's close frame, with its status code if it gave one. Nothing
    /// is read after it.
    Close(Option<u16>),
}

/// Why reading ended with an error. Nothing is read after one.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("a message exceeded the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    #[error("reading the socket failed: {0}")]
    Io(#[from] io::Error),
}

/// A fragmented message being put together.
#[derive(Debug)]
struct Partial {
    text: bool,
    payload: Vec<u8>,
}

/// The read half: frames in, messages out.
#[derive(Debug)]
pub struct Reader<R> {
    io: R,
    /// Bytes read and not yet taken, from `start`: part of a frame, or frames
    /// that came in the same read as an earlier one. No allocation when empty.
    buf: Vec<u8>,
    start: usize,
    /// A fragmented message, boxed: rare, and the reader lives in every idle
    /// connection's future.
    partial: Option<Box<Partial>>,
    max_message: usize,
    done: bool,
    /// The client's close frame, once read: its status code if it gave one.
    close: Option<Option<u16>>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Reads messages of at most `max_message` bytes from `io`.
    pub fn new(io: R, max_message: usize) -> Reader<R> {
        Reader {
            io,
            buf: Vec::new(),
            start: 0,
            partial: None,
            max_message,
            done: false,
            close: None,
        }
    }

    /// The client's close frame, once one was read: its status code if it gave
    /// one (the close frame that answers it should repeat it).
    pub fn close_received(&self) -> Option<Option<u16>> {
        self.close
    }

    /// The next message; `None` once the socket ended, or after a close frame or
    /// an error. Cancel-safe: everything read is kept in the reader.
    pub async fn next(&mut self) -> Option<Result<Incoming, ReadError>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming, ReadError>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            // Frames already read.
            if self.start < self.buf.len() {
                match parse_frame(
                    &mut self.buf[self.start..],
                    &mut self.partial,
                    self.max_message,
                ) {
                    Ok(Some((used, incoming))) => {
                        self.start += used;
                        if self.start == self.buf.len() {
                            self.buf = Vec::new();
                            self.start = 0;
                        }
                        if let Some(incoming) = incoming {
                            return Poll::Ready(Some(Ok(self.deliver(incoming))));
                        }
                        continue;
                    }
                    Ok(None) => {
                        // Keep only the frame part-way in, in a buffer its size:
                        // the client may now wait, and an idle connection
                        // should not hold the frames before it.
                        if self.start > 0 {
                            self.buf = self.buf.split_off(self.start);
                            self.start = 0;
                        }
                    }
                    Err(e) => return Poll::Ready(Some(Err(self.fail(e)))),
                }
            }
            let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut read = ReadBuf::uninit(&mut stack);
            match Pin::new(&mut self.io).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(self.fail(e.into())))),
                Poll::Ready(Ok(())) => {}
            }
            let data = read.filled_mut();
            if data.is_empty() {
                // The socket ended (without a close frame).
                self.done = true;
                return Poll::Ready(None);
            }
            if self.start < self.buf.len() {
                // Part of a frame is waiting: add to it.
                self.buf.extend_from_slice(data);
                continue;
            }
            // Nothing waiting: take frames straight from what was read, keeping
            // on the heap only what follows the first message.
            let mut at = 0;
            loop {
                match parse_frame(&mut data[at..], &mut self.partial, self.max_message) {
                    Ok(Some((used, incoming))) => {
                        at += used;
                        if let Some(incoming) = incoming {
                            self.keep(&data[at..]);
                            return Poll::Ready(Some(Ok(self.deliver(incoming))));
                        }
                    }
                    Ok(None) => {
                        self.keep(&data[at..]);
                        break;
                    }
                    Err(e) => return Poll::Ready(Some(Err(self.fail(e)))),
                }
            }
        }
    }

    /// After the server's close frame: reads until the client's close frame or
    /// the socket's end, discarding what comes, so the socket is not closed
    /// with input unread (which makes the kernel send a reset, and a client may
    /// then lose what it had not read yet, such as the `disconnect` push that
    /// says why). After a read error (an oversized frame, say), the rest is
    /// discarded as bytes.
    pub async fn wait_for_close(&mut self) {
        while let Some(Ok(incoming)) = self.next().await {
            if matches!(incoming, Incoming::Close(_)) {
                return;
            }
        }
        std::future::poll_fn(|cx| {
            loop {
                let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
                let mut read = ReadBuf::uninit(&mut stack);
                match Pin::new(&mut self.io).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) if !read.filled().is_empty() => {}
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(_) => return Poll::Ready(()),
                }
            }
        })
        .await;
    }

    /// Keeps read bytes not taken yet (the reader's buffer is empty).
    fn keep(&mut self, rest: &[u8]) {
        self.buf.clear();
        self.start = 0;
        if !rest.is_empty() {
            self.buf.extend_from_slice(rest);
        }
    }

    fn deliver(&mut self, incoming: Incoming) -> Incoming {
        if let Incoming::Close(code) = incoming {
            self.close = Some(code);
            self.finished();
        }
        incoming
    }

    fn fail(&mut self, e: ReadError) -> ReadError {
        self.finished();
        e
    }

    fn finished(&mut self) {
        self.done = true;
        self.buf = Vec::new();
        self.start = 0;
        self.partial = None;
    }
}

/// Takes one frame from the front of `data` (unmasking it in place): `None`
/// when `data` does not hold all of it yet, else the bytes it took and what it
/// completed (`None` for a fragment that does not end its message).
fn parse_frame(
    data: &mut [u8],
    partial: &mut Option<Box<Partial>>,
    max_message: usize,
) -> Result<Option<(usize, Option<Incoming>)>, ReadError> {
    let mut cursor = Cursor::new(&*data);
    let Some((header, len)) = FrameHeader::parse(&mut cursor).map_err(|e| {
        // The only error parsing a header in memory can give.
        debug_assert!(matches!(e, tungstenite::Error::Protocol(_)), "{e}");
        ReadError::Protocol("a frame had a reserved opcode")
    })?
    else {
        return Ok(None);
    };
    let header_len = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return Err(ReadError::Protocol(
            "reserved bits set, but no extension was agreed",
        ));
    }
    let Some(mask) = header.mask else {
        return Err(ReadError::Protocol("a client's frames must be masked"));
    };
    let too_large = ReadError::TooLarge { limit: max_message };
    match header.opcode {
        OpCode::Control(_) => {
            if !header.is_final {
                return Err(ReadError::Protocol("a control frame was fragmented"));
            }
            if len > MAX_CONTROL {
                return Err(ReadError::Protocol(
                    "a control frame's payload exceeded 125 bytes",
                ));
            }
        }
        OpCode::Data(data) => {
            // Order errors before the size: a frame that could never come
            // is a protocol error whatever its length.
            match (data, partial.is_some()) {
                (Data::Text | Data::Binary, true) => {
                    return Err(ReadError::Protocol(
                        "a new message began before the fragmented one ended",
                    ));
                }
                (Data::Continue, false) => {
                    return Err(ReadError::Protocol(
                        "a continuation frame came with no message to continue",
                    ));
                }
                _ => {}
            }
            if len >> 63 != 0 {
                return Err(ReadError::Protocol(
                    "a frame's 64-bit length had its top bit set",
                ));
            }
            let so_far = partial.as_ref().map_or(0, |p| p.payload.len());
            if len > (max_message.saturating_sub(so_far)) as u64 {
                return Err(too_large);
            }
        }
    }
    let len = usize::try_from(len).map_err(|_| too_large)?;
    let Some(end) = header_len.checked_add(len).filter(|end| *end <= data.len()) else {
        return Ok(None);
    };
    let payload = &mut data[header_len..end];
    unmask(payload, mask);
    let payload = &*payload;
    let incoming = match header.opcode {
        OpCode::Control(Control::Ping) => Some(Incoming::Ping(Bytes::copy_from_slice(payload))),
        OpCode::Control(Control::Pong) => Some(Incoming::Pong),
        OpCode::Control(Control::Close) => Some(Incoming::Close(close_code(payload)?)),
        // (`FrameHeader::parse` refuses them.)
        OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
            return Err(ReadError::Protocol("a frame had a reserved opcode"));
        }
        OpCode::Data(Data::Continue) => {
            let Some(p) = partial.as_mut() else {
                return Err(ReadError::Protocol(
                    "a continuation frame came with no message to continue",
                ));
            };
            p.payload.extend_from_slice(payload);
            if header.is_final {
                let p = partial.take().map(|p| *p);
                p.map(|p| message(p.text, Bytes::from(p.payload)))
                    .transpose()?
            } else {
                None
            }
        }
        // (No fragmented message is open: refused above.)
        OpCode::Data(data @ (Data::Text | Data::Binary)) => {
            let text = data == Data::Text;
            if header.is_final {
                Some(message(text, Bytes::copy_from_slice(payload))?)
            } else {
                *partial = Some(Box::new(Partial {
                    text,
                    payload: payload.to_vec(),
                }));
                None
            }
        }
    };
    Ok(Some((end, incoming)))
}

fn message(text: bool, payload: Bytes) -> Result<Incoming, ReadError> {
    if !text {
        return Ok(Incoming::Binary);
    }
    Utf8Bytes::try_from(payload)
        .map(Incoming::Text)
        .map_err(|_| ReadError::Protocol("a text message was not valid UTF-8"))
}

/// The status code of a close frame's payload (RFC 6455 5.5.1, 7.4).
fn close_code(payload: &[u8]) -> Result<Option<u16>, ReadError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ReadError::Protocol("a close frame's payload was one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            // Registered codes a peer may send (IANA), and private ones.
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(ReadError::Protocol(
                    "a close frame had an invalid status code",
                ));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(ReadError::Protocol(
                    "a close frame's reason was not valid UTF-8",
                ));
            }
            Ok(Some(code))
        }
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        for (b, m) in chunk.iter_mut().zip(mask) {
            *b ^= m;
        }
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *b ^= m;
    }
}

/// The write half: frames are added, then written by [`Writer::flush`] with as
/// few (vectored) writes as the socket takes. Small frames and frame headers
/// are copied into one buffer; a large payload is written from the shared
/// bytes it came in, not copied, so a writer holding many large frames (member
/// lists to a big room, merged pushes) holds references to them, not copies.
///
/// Cancel-safe: a flush dropped part-way keeps what it had not written, so
/// frames added after it follow whole frames.
#[derive(Debug)]
pub struct Writer<W> {
    io: W,
    /// Small frames and headers.
    small: Vec<u8>,
    /// What to write, in order.
    chunks: VecDeque<Chunk>,
    /// Where in `small` the first [`Chunk::Small`] in `chunks` starts, and
    /// where the last ends.
    small_from: usize,
    small_sealed: usize,
    /// Bytes of the front chunk already written.
    written: usize,
    /// Bytes added and not yet written.
    pending: usize,
}

#[derive(Debug)]
enum Chunk {
    /// `small` up to this offset (from where the chunk before it ended).
    Small(usize),
    Shared(Bytes),
}

/// Payloads at least this large are written from their shared bytes; smaller
/// ones are copied together, so a flush of small frames writes one slice.
const SHARE_FROM: usize = 512;

/// Slices per vectored write at most.
const MAX_SLICES: usize = 64;

/// Room the small-frame buffer keeps between flushes; more is given back.
const KEEP_SMALL: usize = 16 * 1024;

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub fn new(io: W) -> Writer<W> {
        Writer {
            io,
            small: Vec::new(),
            chunks: VecDeque::new(),
            small_from: 0,
            small_sealed: 0,
            written: 0,
            pending: 0,
        }
    }

    /// Bytes added and not yet written.
    pub fn buffered(&self) -> usize {
        self.pending
    }

    fn header(&mut self, opcode: OpCode, len: usize) {
        let header = FrameHeader {
            is_final: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: None,
        };
        let before = self.small.len();
        // Writing to a Vec cannot fail.
        let _ = header.format(len as u64, &mut self.small);
        self.pending += self.small.len() - before + len;
    }

    /// Ends the current run of small bytes as a chunk.
    fn seal_small(&mut self) {
        if self.small.len() > self.small_sealed {
            self.small_sealed = self.small.len();
            self.chunks.push_back(Chunk::Small(self.small_sealed));
        }
    }

    pub fn text(&mut self, text: Utf8Bytes) {
        let payload = Bytes::from(text);
        self.header(OpCode::Data(Data::Text), payload.len());
        if payload.len() >= SHARE_FROM {
            self.seal_small();
            self.chunks.push_back(Chunk::Shared(payload));
        } else {
            self.small.extend_from_slice(&payload);
        }
    }

    fn control(&mut self, control: Control, parts: &[&[u8]]) {
        let len = parts.iter().map(|p| p.len()).sum();
        self.header(OpCode::Control(control), len);
        for part in parts {
            self.small.extend_from_slice(part);
        }
    }

    pub fn ping(&mut self) {
        self.control(Control::Ping, &[]);
    }

    /// A pong for a ping with this payload (at most 125 bytes, as the ping's).
    pub fn pong(&mut self, payload: &[u8]) {
        let payload = &payload[..payload.len().min(MAX_CONTROL as usize)];
        self.control(Control::Pong, &[payload]);
    }

    /// A close frame; the reason is cut (at a character) to fit a control frame.
    pub fn close(&mut self, code: u16, reason: &str) {
        let mut end = reason.len().min(MAX_CONTROL as usize - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        self.control(
            Control::Close,
            &[&code.to_be_bytes(), &reason.as_bytes()[..end]],
        );
    }

    /// Writes everything added.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.seal_small();
        while !self.chunks.is_empty() {
            let n = {
                let mut slices = [io::IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                let mut small_at = self.small_from;
                for chunk in self.chunks.iter().take(MAX_SLICES) {
                    let bytes: &[u8] = match chunk {
                        Chunk::Small(end) => {
                            let run = &self.small[small_at..*end];
                            small_at = *end;
                            run
                        }
                        Chunk::Shared(bytes) => bytes,
                    };
                    let from = if count == 0 { self.written } else { 0 };
                    slices[count] = io::IoSlice::new(&bytes[from..]);
                    count += 1;
                }
                // One slice (the usual flush of small frames): a plain write.
                if count == 1 {
                    self.io.write(&slices[0]).await?
                } else {
                    self.io.write_vectored(&slices[..count]).await?
                }
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.advance(n);
        }
        self.small.clear();
        self.small_from = 0;
        self.small_sealed = 0;
        if self.small.capacity() > KEEP_SMALL {
            self.small.shrink_to(KEEP_SMALL);
        }
        self.io.flush().await
    }

    /// Marks `n` more bytes from the front as written.
    fn advance(&mut self, mut n: usize) {
        self.pending -= n;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let len = match front {
                Chunk::Small(end) => end - self.small_from,
                Chunk::Shared(bytes) => bytes.len(),
            };
            let left = len - self.written;
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            if let Some(Chunk::Small(end)) = self.chunks.pop_front() {
                self.small_from = end;
            }
            self.written = 0;
        }
    }

    /// Gives the buffers back when nothing is waiting in them (an idle writer).
    pub fn release(&mut self) {
        if self.pending == 0 {
            self.small = Vec::new();
            self.chunks = VecDeque::new();
            self.small_from = 0;
            self.small_sealed = 0;
            self.written = 0;
        }
    }

    /// Writes what was added, then ends the write side of the socket.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.io.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's frame: masked with a fixed mask.
    fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// What a tungstenite client reads from `client`: every message up to and
    /// including a close frame, or to the end.
    async fn read_back(
        client: tokio::io::DuplexStream,
    ) -> Vec<tokio_tungstenite::tungstenite::Message> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::protocol::Role;
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let mut got = Vec::new();
        while let Some(Ok(msg)) = ws.next().await {
            let close = matches!(msg, Message::Close(_));
            got.push(msg);
            if close {
                break;
            }
        }
        got
    }

    async fn read_all(bytes: Vec<u8>, max: usize) -> Vec<Result<Incoming, String>> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&bytes).await.unwrap();
        drop(client);
        let mut reader = Reader::new(server, max);
        let mut out = Vec::new();
        while let Some(item) = reader.next().await {
            out.push(item.map_err(|e| e.to_string()));
        }
        out
    }

    fn text(s: &str) -> Result<Incoming, String> {
        Ok(Incoming::Text(Utf8Bytes::from(s.to_owned())))
    }

    #[tokio::test]
    async fn frames_of_one_read_and_fragments_make_messages() {
        let mut bytes = client_frame(1, true, b"hello");
        bytes.extend(client_frame(9, true, b"p"));
        bytes.extend(client_frame(1, false, "héllo ".as_bytes()));
        // A control frame may come between fragments.
        bytes.extend(client_frame(10, true, b""));
        bytes.extend(client_frame(0, false, b"wor"));
        bytes.extend(client_frame(0, true, b"ld"));
        bytes.extend(client_frame(2, true, &[0, 1, 2]));
        // Each side of each length encoding's bounds.
        for n in [125, 126, 65_535, 65_536] {
            bytes.extend(client_frame(1, true, &vec![b'x'; n]));
        }
        bytes.extend(client_frame(8, true, &[0x03, 0xe8, b'b', b'y', b'e']));
        bytes.extend(client_frame(1, true, b"after close: not read"));
        let got = read_all(bytes, 100_000).await;
        assert_eq!(
            got,
            vec![
                text("hello"),
                Ok(Incoming::Ping(Bytes::from_static(b"p"))),
                Ok(Incoming::Pong),
                text("héllo world"),
                Ok(Incoming::Binary),
                text(&"x".repeat(125)),
                text(&"x".repeat(126)),
                text(&"x".repeat(65_535)),
                text(&"x".repeat(65_536)),
                Ok(Incoming::Close(Some(1000))),
            ]
        );
        // A close frame may have no payload; the socket may end mid-frame.
        let mut bytes = client_frame(8, true, b"");
        bytes.extend(client_frame(1, true, b"not read"));
        assert_eq!(read_all(bytes, 100).await, vec![Ok(Incoming::Close(None))]);
        let mut bytes = client_frame(1, true, b"whole");
        bytes.extend(&client_frame(1, true, b"cut short")[..6]);
        assert_eq!(read_all(bytes, 100).await, vec![text("whole")]);
    }

    #[tokio::test]
    async fn a_read_given_up_mid_frame_loses_nothing_and_an_idle_reader_keeps_little() {
        let big = client_frame(1, true, &vec![b'b'; 30_000]);
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut reader = Reader::new(server, 1 << 20);
        // Half the frame, then the wait is given up (as a select does).
        client.write_all(&big[..15_000]).await.unwrap();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(20), reader.next()).await;
        assert!(waited.is_err());
        // The rest, and two bytes of the next frame's header; then silence.
        client.write_all(&big[15_000..]).await.unwrap();
        let next = client_frame(1, true, b"later");
        client.write_all(&next[..2]).await.unwrap();
        assert_eq!(
            reader.next().await.unwrap().unwrap(),
            text(&"b".repeat(30_000)).unwrap()
        );
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(20), reader.next()).await;
        assert!(waited.is_err());
        // Only the two bytes are kept, not the frame before them.
        assert!(reader.buf.capacity() < 64, "{}", reader.buf.capacity());
        client.write_all(&next[2..]).await.unwrap();
        assert_eq!(
            reader.next().await.unwrap().unwrap(),
            text("later").unwrap()
        );
    }

    #[tokio::test]
    async fn frames_split_across_reads_come_whole() {
        let mut bytes = client_frame(1, true, b"first");
        bytes.extend(client_frame(1, true, &vec![b'y'; 20_000]));
        bytes.extend(client_frame(1, true, b"last"));
        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            // Odd-sized pieces, so headers and payloads split everywhere.
            for piece in bytes.chunks(7) {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut reader = Reader::new(server, 1 << 20);
        assert_eq!(
            reader.next().await.unwrap().unwrap(),
            text("first").unwrap()
        );
        assert_eq!(
            reader.next().await.unwrap().unwrap(),
            text(&"y".repeat(20_000)).unwrap()
        );
        assert_eq!(reader.next().await.unwrap().unwrap(), text("last").unwrap());
        writer.await.unwrap();
        assert!(reader.next().await.is_none());
        // Nothing is kept once every frame was taken.
        assert_eq!(reader.buf.capacity(), 0);
    }

    #[tokio::test]
    async fn protocol_violations_end_reading_with_an_error_naming_them() {
        let unmasked = {
            let mut f = client_frame(1, true, b"hi");
            f[1] &= 0x7f;
            f.drain(2..6);
            f
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (unmasked, "masked"),
            (client_frame(1 | 0x40, true, b"x"), "reserved bits"),
            (client_frame(3, true, b"x"), "reserved opcode"),
            (client_frame(11, true, b"x"), "reserved opcode"),
            (client_frame(9, false, b"x"), "control frame was fragmented"),
            (client_frame(9, true, &[0; 126]), "125 bytes"),
            (client_frame(0, true, b"x"), "no message to continue"),
            (
                [client_frame(1, false, b"a"), client_frame(1, true, b"b")].concat(),
                "before the fragmented one ended",
            ),
            (client_frame(1, true, &[0xff, 0xfe]), "UTF-8"),
            (client_frame(8, true, &[3]), "one byte"),
            (client_frame(8, true, &[0x03, 0xed]), "status code"),
            (client_frame(8, true, &[0x03, 0xe8, 0xff]), "reason"),
            (client_frame(1, true, &[b'z'; 101]), "limit of 100 bytes"),
            (
                {
                    let mut f = client_frame(2, true, &[]);
                    f[1] = 0x80 | 127;
                    f.splice(2..2, (1u64 << 63).to_be_bytes());
                    f
                },
                "top bit",
            ),
            (
                [
                    client_frame(1, false, &[b'z'; 60]),
                    client_frame(1, true, &[b'z'; 50]),
                ]
                .concat(),
                "before the fragmented one ended",
            ),
            (
                [
                    client_frame(1, false, &[b'z'; 60]),
                    client_frame(0, true, &[b'z'; 41]),
                ]
                .concat(),
                "limit of 100 bytes",
            ),
        ];
        for (bytes, expected) in cases {
            let mut with_more = bytes.clone();
            with_more.extend(client_frame(1, true, b"never read"));
            let got = read_all(with_more, 100).await;
            assert_eq!(got.len(), 1, "{expected}: {got:?}");
            let err = got[0].as_ref().expect_err(expected);
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_from_its_header() {
        // Only the header of a 1 GiB frame is sent: the error must not wait for
        // (or make room for) the payload.
        let mut header = client_frame(2, true, &[]);
        header[1] = 0x80 | 127;
        header.splice(2..2, (1u64 << 30).to_be_bytes());
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(&header).await.unwrap();
        let mut reader = Reader::new(server, 1000);
        let err = tokio::time::timeout(std::time::Duration::from_secs(5), reader.next())
            .await
            .expect("refused without waiting for the payload")
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, ReadError::TooLarge { limit: 1000 }), "{err}");
        assert_eq!(reader.buf.capacity(), 0);
        drop(client);
    }

    #[tokio::test]
    async fn written_frames_read_back_with_tungstenite() {
        use tokio_tungstenite::tungstenite::Message;
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut writer = Writer::new(server);
        writer.text(Utf8Bytes::from_static("hello"));
        writer.text(Utf8Bytes::from("é".repeat(40_000)));
        writer.ping();
        writer.pong(b"abc");
        writer.close(4001, &"ü".repeat(100));
        writer.flush().await.unwrap();
        assert_eq!(writer.buffered(), 0);
        writer.release();
        assert_eq!(writer.small.capacity(), 0);
        assert_eq!(writer.chunks.capacity(), 0);
        let got = read_back(client).await;
        assert_eq!(got[0], Message::text("hello"));
        assert_eq!(got[1], Message::text("é".repeat(40_000)));
        assert_eq!(got[2], Message::Ping(Bytes::new()));
        assert_eq!(got[3], Message::Pong(Bytes::from_static(b"abc")));
        let Message::Close(Some(close)) = &got[4] else {
            panic!("{:?}", got[4]);
        };
        assert_eq!(u16::from(close.code), 4001);
        // Cut at a character to fit 125 bytes: 61 two-byte characters.
        assert_eq!(close.reason.as_str(), "ü".repeat(61));
    }

    #[tokio::test]
    async fn small_and_shared_frames_come_out_in_order_through_short_writes() {
        use tokio_tungstenite::tungstenite::Message;
        // Room for 7 bytes at a time: every write is cut short somewhere.
        let (client, server) = tokio::io::duplex(7);
        let (mut server_read, server_write) = tokio::io::split(server);
        // The client answers pings: take its pongs.
        tokio::spawn(
            async move { tokio::io::copy(&mut server_read, &mut tokio::io::sink()).await },
        );
        let mut writer = Writer::new(server_write);
        let texts: Vec<String> = (0..40)
            .map(|i| {
                let len = [3, 500, SHARE_FROM - 1, SHARE_FROM, 70_000][i % 5];
                char::from(b'a' + (i % 26) as u8).to_string().repeat(len)
            })
            .collect();
        let reading = tokio::spawn(read_back(client));
        // In two flushes, with control frames between.
        for (i, t) in texts.iter().enumerate() {
            writer.text(Utf8Bytes::from(t.clone()));
            if i % 7 == 0 {
                writer.ping();
            }
            if i == 20 {
                writer.flush().await.unwrap();
            }
        }
        writer.close(1000, "");
        writer.flush().await.unwrap();
        assert_eq!(writer.buffered(), 0);
        drop(writer);
        let got = reading.await.unwrap();
        let mut want = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            want.push(Message::text(t.clone()));
            if i % 7 == 0 {
                want.push(Message::Ping(Bytes::new()));
            }
        }
        assert_eq!(got.len(), want.len() + 1);
        assert_eq!(got[..want.len()], want[..]);
        assert!(matches!(got[want.len()], Message::Close(_)));
    }

    #[tokio::test]
    async fn a_close_after_a_flush_given_up_mid_frame_follows_the_whole_frame() {
        use tokio_tungstenite::tungstenite::Message;
        // Room for 100 bytes: the flush of a 10,000-byte frame stalls.
        let (client, server) = tokio::io::duplex(100);
        let mut writer = Writer::new(server);
        let long = "w".repeat(10_000);
        writer.text(Utf8Bytes::from(long.clone()));
        let flushed =
            tokio::time::timeout(std::time::Duration::from_millis(20), writer.flush()).await;
        assert!(flushed.is_err());
        assert!(writer.buffered() > 0 && writer.buffered() < 10_004);
        // As the abort path does: a close frame, flushed while the client reads.
        writer.close(4008, "slow");
        let reading = tokio::spawn(read_back(client));
        writer.flush().await.unwrap();
        drop(writer);
        let got = reading.await.unwrap();
        assert_eq!(got[0], Message::text(long));
        let Message::Close(Some(close)) = &got[1] else {
            panic!("{got:?}");
        };
        assert_eq!(u16::from(close.code), 4008);
    }

    #[tokio::test]
    async fn tungstenite_clients_frames_read_back() {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::protocol::Role;
        use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let mut reader = Reader::new(server, 1 << 20);
        let long = "ç".repeat(3000);
        // In three fragments, split inside characters.
        let bytes = long.as_bytes();
        for (part, opcode, fin) in [
            (&bytes[..1001], Data::Text, false),
            (&bytes[1001..4001], Data::Continue, false),
            (&bytes[4001..], Data::Continue, true),
        ] {
            let frame = Frame::message(Bytes::copy_from_slice(part), OpCode::Data(opcode), fin);
            ws.send(Message::Frame(frame)).await.unwrap();
        }
        ws.send(Message::text("whole")).await.unwrap();
        ws.send(Message::Ping(Bytes::from_static(b"12")))
            .await
            .unwrap();
        ws.send(Message::Close(Some(CloseFrame {
            code: 4000.into(),
            reason: "done".into(),
        })))
        .await
        .unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap(), text(&long).unwrap());
        assert_eq!(
            reader.next().await.unwrap().unwrap(),
            text("whole").unwrap()
        );
        assert_eq!(
            reader.next().await.unwrap().unwrap(),
            Incoming::Ping(Bytes::from_static(b"12"))
        );
        assert_eq!(
            reader.next().await.unwrap().unwrap(),
            Incoming::Close(Some(4000))
        );
        assert!(reader.next().await.is_none());
    }
}
