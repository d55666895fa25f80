//! A minimal WebSocket client (RFC 6455) for the load generator.
//!
//! Plain `ws://` only, no extensions. The reader parses frames in place from one
//! reusable buffer (no allocation or zeroing per frame, several frames per read
//! system call); the writer masks into one reusable buffer. TCP_NODELAY is on, so
//! a sent frame is not held back by Nagle's algorithm.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub(super) const OP_CONTINUATION: u8 = 0;
pub(super) const OP_TEXT: u8 = 1;
pub(super) const OP_CLOSE: u8 = 8;
pub(super) const OP_PING: u8 = 9;
pub(super) const OP_PONG: u8 = 10;

/// Largest frame accepted from the server.
const MAX_FRAME: usize = 64 << 20;
/// Free space the reader makes before each read.
const READ_CHUNK: usize = 4096;
/// Largest HTTP upgrade response accepted.
const MAX_HANDSHAKE: usize = 16 * 1024;

/// One connection: read and write halves, usable apart.
#[derive(Debug)]
pub(super) struct Ws {
    pub(super) rd: Reader,
    pub(super) wr: Writer,
}

/// Received bytes and the frames in them: one buffer, initialized once and
/// reused (reads go straight into its free tail).
#[derive(Debug)]
pub(super) struct Frames {
    buf: Vec<u8>,
    /// `buf[start..end]` is read but not parsed yet.
    start: usize,
    end: usize,
    /// Size of the frame that did not fit yet (0 when unknown).
    want: usize,
    /// Payload of a fragmented message so far, and its opcode (0: none).
    frag: Vec<u8>,
    frag_op: u8,
    /// The last frame returned was `frag`: clear it on the next call.
    frag_done: bool,
}

/// Receives frames.
#[derive(Debug)]
pub(super) struct Reader {
    io: OwnedReadHalf,
    pub(super) frames: Frames,
}

/// Sends frames (masked, as a client must).
#[derive(Debug)]
pub(super) struct Writer {
    io: OwnedWriteHalf,
    out: Vec<u8>,
    seed: u32,
}

/// A complete frame (a reassembled message for fragmented data frames).
#[derive(Debug, Clone, Copy)]
pub(super) struct Frame<'a> {
    pub(super) op: u8,
    pub(super) data: &'a [u8],
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// A fresh non-zero seed for masks and handshake keys (not cryptographic: the
/// mask only has to differ between frames).
fn seed() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0x9e37_79b9);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(0x6d2b_79f5, Ordering::Relaxed) ^ nanos.rotate_left(13);
    n | 1
}

fn xorshift(s: &mut u32) -> u32 {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    *s
}

/// Splits `ws://host[:port][/path][?query]` into host, port and request target.
fn parse_url(url: &str) -> anyhow::Result<(String, u16, String)> {
    if url.starts_with("wss://") {
        bail!("{url}: wss:// is not supported by the load generator; use ws://");
    }
    let Some(rest) = url.strip_prefix("ws://") else {
        bail!("{url}: expected a ws:// URL");
    };
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, tail) = v6
            .split_once(']')
            .with_context(|| format!("{url}: bad IPv6 host"))?;
        (h, tail.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().with_context(|| format!("{url}: bad port"))?,
        None => 80,
    };
    if host.is_empty() {
        bail!("{url}: no host");
    }
    Ok((host.to_owned(), port, target))
}

/// Opens a WebSocket connection to `url` (`ws://` only).
pub(super) async fn connect(url: &str) -> anyhow::Result<Ws> {
    let (host, port, target) = parse_url(url)?;
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    stream.set_nodelay(true)?;
    let (rd, wr) = stream.into_split();
    let mut seed = seed();
    let mut key = [0u8; 16];
    for chunk in key.chunks_mut(4) {
        chunk.copy_from_slice(&xorshift(&mut seed).to_le_bytes());
    }
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let host_header = if port == 80 {
        host.clone()
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut ws = Ws {
        rd: Reader {
            io: rd,
            frames: Frames::new(),
        },
        wr: Writer {
            io: wr,
            out: Vec::with_capacity(256),
            seed,
        },
    };
    ws.wr
        .io
        .write_all(request.as_bytes())
        .await
        .with_context(|| format!("{url}: cannot send the upgrade request"))?;
    // Read the response head; what follows it is frame data.
    let end = loop {
        if let Some(i) = memchr::memmem::find(ws.rd.frames.pending(), b"\r\n\r\n") {
            break i + 4;
        }
        if ws.rd.frames.pending().len() >= MAX_HANDSHAKE {
            bail!("{url}: upgrade response too long");
        }
        if ws.rd.fill().await? == 0 {
            bail!("{url}: connection closed during the upgrade");
        }
    };
    let head = String::from_utf8_lossy(&ws.rd.frames.pending()[..end]);
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("101") {
        return Err(anyhow!(
            "{url}: the server refused the WebSocket upgrade: {status}"
        ));
    }
    ws.rd.frames.start += end;
    Ok(ws)
}

impl Frames {
    fn new() -> Frames {
        Frames {
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            want: 0,
            frag: Vec::new(),
            frag_op: 0,
            frag_done: false,
        }
    }

    /// Bytes read but not parsed yet.
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The free tail to read into (at least `READ_CHUNK` bytes, and room for
    /// the frame being waited for).
    pub(super) fn space(&mut self) -> &mut [u8] {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        let pending = self.end - self.start;
        let need = pending + READ_CHUNK.max(self.want.saturating_sub(pending));
        if self.start > 0 && self.buf.len() - self.end < need - pending {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, pending);
        }
        if self.buf.len() - self.start < need {
            self.buf.resize(self.start + need, 0);
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`Frames::space`].
    pub(super) fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// The next complete frame already read, if any (control frames included;
    /// fragmented data frames come back reassembled).
    pub(super) fn try_frame(&mut self) -> io::Result<Option<Frame<'_>>> {
        if self.frag_done {
            self.frag.clear();
            self.frag_done = false;
        }
        loop {
            let avail = &self.buf[self.start..self.end];
            if avail.len() < 2 {
                return Ok(None);
            }
            let (b0, b1) = (avail[0], avail[1]);
            let mut header = 2;
            let mut len = usize::from(b1 & 0x7f);
            if len == 126 {
                if avail.len() < 4 {
                    return Ok(None);
                }
                len = usize::from(u16::from_be_bytes([avail[2], avail[3]]));
                header = 4;
            } else if len == 127 {
                if avail.len() < 10 {
                    return Ok(None);
                }
                let mut n = [0u8; 8];
                n.copy_from_slice(&avail[2..10]);
                len = usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX);
                header = 10;
            }
            if len > MAX_FRAME {
                return Err(invalid("frame larger than 64 MiB"));
            }
            let mask = if b1 & 0x80 != 0 {
                if avail.len() < header + 4 {
                    return Ok(None);
                }
                let m = [
                    avail[header],
                    avail[header + 1],
                    avail[header + 2],
                    avail[header + 3],
                ];
                header += 4;
                Some(m)
            } else {
                None
            };
            if avail.len() < header + len {
                self.want = header + len;
                return Ok(None);
            }
            self.want = 0;
            let begin = self.start + header;
            let end = begin + len;
            self.start = end;
            if let Some(m) = mask {
                for (i, b) in self.buf[begin..end].iter_mut().enumerate() {
                    *b ^= m[i & 3];
                }
            }
            let (fin, op) = (b0 & 0x80 != 0, b0 & 0x0f);
            if op >= OP_CLOSE {
                return Ok(Some(Frame {
                    op,
                    data: &self.buf[begin..end],
                }));
            }
            if op == OP_CONTINUATION {
                if self.frag_op == 0 {
                    return Err(invalid("continuation frame without a first fragment"));
                }
                self.frag.extend_from_slice(&self.buf[begin..end]);
                if fin {
                    self.frag_done = true;
                    let op = std::mem::take(&mut self.frag_op);
                    return Ok(Some(Frame {
                        op,
                        data: &self.frag,
                    }));
                }
                continue;
            }
            if !fin {
                self.frag_op = op;
                self.frag.clear();
                self.frag.extend_from_slice(&self.buf[begin..end]);
                continue;
            }
            return Ok(Some(Frame {
                op,
                data: &self.buf[begin..end],
            }));
        }
    }
}

impl Reader {
    /// The next complete frame already read, if any.
    pub(super) fn try_frame(&mut self) -> io::Result<Option<Frame<'_>>> {
        self.frames.try_frame()
    }

    /// Reads more bytes (at least one, or 0 at end of stream). Cancel-safe.
    pub(super) async fn fill(&mut self) -> io::Result<usize> {
        let n = self.io.read(self.frames.space()).await?;
        self.frames.filled(n);
        Ok(n)
    }
}

/// Appends a final frame's header with opcode `op` and a payload of `len`
/// bytes; `mask` is 0x80 for a client's (masked) frame, 0 for a server's.
pub(super) fn header(out: &mut Vec<u8>, op: u8, len: usize, mask: u8) {
    out.push(0x80 | op);
    match len {
        n @ 0..=125 => out.push(mask | n as u8),
        n @ 126..=0xffff => {
            out.push(mask | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
}

/// Appends a masked client frame to `out`.
pub(super) fn encode(out: &mut Vec<u8>, seed: &mut u32, op: u8, data: &[u8]) {
    header(out, op, data.len(), 0x80);
    let key = xorshift(seed).to_le_bytes();
    out.extend_from_slice(&key);
    let at = out.len();
    out.extend_from_slice(data);
    for (i, b) in out[at..].iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

impl Writer {
    /// Sends one frame with opcode `op`.
    pub(super) async fn send(&mut self, op: u8, data: &[u8]) -> io::Result<()> {
        self.out.clear();
        encode(&mut self.out, &mut self.seed, op, data);
        self.io.write_all(&self.out).await
    }

    /// Sends a text frame.
    pub(super) async fn text(&mut self, s: &str) -> io::Result<()> {
        self.send(OP_TEXT, s.as_bytes()).await
    }
}

impl Ws {
    /// The connection as a non-blocking std socket, with the bytes already read
    /// and the mask seed, for a receiver thread of its own.
    pub(super) fn into_std(self) -> io::Result<(std::net::TcpStream, Frames, u32)> {
        let stream = self
            .rd
            .io
            .reunite(self.wr.io)
            .map_err(|_| invalid("halves of different connections"))?;
        Ok((stream.into_std()?, self.rd.frames, self.wr.seed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("ws://127.0.0.1:8080/ws").unwrap(),
            ("127.0.0.1".into(), 8080, "/ws".into())
        );
        assert_eq!(
            parse_url("ws://h/socket.io/?EIO=4").unwrap(),
            ("h".into(), 80, "/socket.io/?EIO=4".into())
        );
        assert_eq!(
            parse_url("ws://h:1?x=1").unwrap(),
            ("h".into(), 1, "/?x=1".into())
        );
        assert_eq!(
            parse_url("ws://[::1]:9").unwrap(),
            ("::1".into(), 9, "/".into())
        );
        assert!(parse_url("wss://h/").is_err());
        assert!(parse_url("http://h/").is_err());
    }

    /// Frames written by a `Writer` and by hand (unmasked, fragmented, long)
    /// come back from a `Reader`, across read boundaries.
    #[tokio::test]
    async fn frames_round_trip() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while memchr::memmem::find(&head, b"\r\n\r\n").is_none() {
                let mut b = [0u8; 512];
                let n = s.read(&mut b).await.unwrap();
                head.extend_from_slice(&b[..n]);
            }
            let mut out = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
            out.extend_from_slice(&[0x81, 2, b'h', b'i']); // text "hi"
            out.extend_from_slice(&[0x01, 1, b'a', 0x89, 0, 0x80, 1, b'b']); // "a", ping, "b"
            let long = vec![b'x'; 70_000];
            out.push(0x81);
            out.push(127);
            out.extend_from_slice(&(long.len() as u64).to_be_bytes());
            out.extend_from_slice(&long);
            for chunk in out.chunks(1000) {
                s.write_all(chunk).await.unwrap();
                s.flush().await.unwrap();
            }
            // Echo one masked client frame back unmasked.
            let mut f = [0u8; 2 + 4 + 5];
            s.read_exact(&mut f).await.unwrap();
            assert_eq!(f[0], 0x81);
            assert_eq!(f[1], 0x80 | 5);
            let key = [f[2], f[3], f[4], f[5]];
            let text: Vec<u8> = f[6..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i & 3])
                .collect();
            assert_eq!(text, b"hello");
        });
        let mut ws = connect(&format!("ws://{addr}/ws")).await.unwrap();
        let mut got: Vec<(u8, usize, Vec<u8>)> = Vec::new();
        while got.len() < 4 {
            while let Some(f) = ws.rd.try_frame().unwrap() {
                got.push((f.op, f.data.len(), f.data[..f.data.len().min(2)].to_vec()));
            }
            if got.len() < 4 {
                assert!(ws.rd.fill().await.unwrap() > 0);
            }
        }
        assert_eq!(
            got,
            [
                (OP_TEXT, 2, b"hi".to_vec()),
                (OP_PING, 0, vec![]),
                (OP_TEXT, 2, b"ab".to_vec()),
                (OP_TEXT, 70_000, b"xx".to_vec()),
            ]
        );
        ws.wr.text("hello").await.unwrap();
        server.await.unwrap();
    }
}
