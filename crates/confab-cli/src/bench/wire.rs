//! The two protocols the generator speaks — confab's JSON protocol and raw
//! Engine.IO v4 / Socket.IO — and the receive loop that measures deliveries.
//!
//! Set-up (login, join) parses replies properly; the receive hot path does not
//! parse JSON at all: it looks for the push name and then for the message bodies
//! (`{send µs}:{seq}:...`) with `memchr`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use confab_token::{Mode, Secret};
use memchr::memmem::Finder;
use serde_json::{Value, json};

use super::Target;
use super::stats::Stats;
use super::ws::{self, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Ws};
use crate::client_cmd::unix_now;

/// Replies to set-up requests must arrive within this long.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How to reach the target: URL, protocol and (for confab) credentials.
#[derive(Debug, Clone)]
pub(super) struct Conn {
    pub(super) target: Target,
    pub(super) url: String,
    auth: Option<(u32, Arc<Secret>)>,
}

impl Conn {
    pub(super) fn new(c: &super::Common, target: Target) -> anyhow::Result<Conn> {
        let url = c.url.clone().unwrap_or_else(|| {
            match target {
                Target::Confab => "ws://127.0.0.1:8080/ws",
                Target::Socketio => "ws://127.0.0.1:3000",
            }
            .to_owned()
        });
        let auth = match target {
            Target::Confab => {
                let (Some(app), Some(secret)) = (c.app_id, c.secret.clone()) else {
                    bail!(
                        "--app-id and --secret (or CONFAB_SECRET) are required for --target confab"
                    );
                };
                Some((app, Arc::new(secret)))
            }
            Target::Socketio => None,
        };
        Ok(Conn { target, url, auth })
    }

    /// Connects as `user` (confab: logs in and waits for `syncComplete`;
    /// socketio: completes the Engine.IO/Socket.IO handshake).
    pub(super) async fn open(&self, user: &str) -> anyhow::Result<Ws> {
        match &self.auth {
            Some((app, secret)) => login(&self.url, *app, secret, user).await,
            None => sio_connect(&self.url, user).await,
        }
    }

    /// Enters `room` and waits for the success reply.
    pub(super) async fn join(&self, ws: &mut Ws, room: &str) -> anyhow::Result<()> {
        match self.target {
            Target::Confab => {
                request(ws, 1, "enterRoom", json!({"roomInfo":{"roomID":room}})).await
            }
            Target::Socketio => sio_request(ws, 1, json!(["join", room])).await,
        }
    }

    /// Parses an ack/reply frame: `(id, ok)`.
    pub(super) fn reply(&self, frame: &[u8]) -> Option<(u64, bool)> {
        match self.target {
            Target::Confab => reply_id(frame),
            Target::Socketio => sio_ack(frame),
        }
    }
}

/// The next text message before `deadline`, answering pings on the way
/// (WebSocket pings always; Engine.IO pings `2` when `sio`).
async fn next_text(
    ws: &mut Ws,
    deadline: tokio::time::Instant,
    sio: bool,
    what: &str,
) -> anyhow::Result<String> {
    loop {
        let mut pong = None;
        while let Some(f) = ws.rd.try_frame()? {
            match f.op {
                OP_TEXT if sio && f.data == b"2" => pong = Some((OP_TEXT, b"3".to_vec())),
                OP_TEXT => {
                    return String::from_utf8(f.data.to_vec())
                        .map_err(|_| anyhow!("{what}: a text frame that is not UTF-8"));
                }
                OP_PING => pong = Some((OP_PONG, f.data.to_vec())),
                OP_CLOSE => bail!("{what}: the server closed the connection"),
                _ => {}
            }
            if pong.is_some() {
                break;
            }
        }
        if let Some((op, data)) = pong {
            ws.wr.send(op, &data).await?;
            continue;
        }
        let n = tokio::time::timeout_at(deadline, ws.rd.fill())
            .await
            .map_err(|_| anyhow!("{what}: no answer within {} s", SETUP_TIMEOUT.as_secs()))?
            .with_context(|| what.to_owned())?;
        if n == 0 {
            bail!("{what}: connection closed");
        }
    }
}

/// Connects and logs in; returns once the server sent `syncComplete`.
async fn login(url: &str, app: u32, secret: &Secret, user: &str) -> anyhow::Result<Ws> {
    let mut ws = ws::connect(url).await?;
    let token = confab_token::generate(secret, app, user, 3600, Mode::Gcm, unix_now())
        .context("cannot make a token")?;
    let frame = json!({"v":1,"id":0,"op":"login","data":{"appID":app,"userID":user,"token":token}});
    ws.wr.text(&frame.to_string()).await?;
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    let what = format!("login of {user}");
    loop {
        let t = next_text(&mut ws, deadline, false, &what).await?;
        if t.contains("\"push\":\"syncComplete\"") {
            return Ok(ws);
        }
        if !t.contains("\"push\"") {
            let v: Value = serde_json::from_str(&t)?;
            if v["id"] == 0 && v["code"] != 0 {
                bail!("login of {user} failed: {t}");
            }
        }
    }
}

/// Sends a request and waits for its successful reply.
pub(super) async fn request(ws: &mut Ws, id: u64, op: &str, data: Value) -> anyhow::Result<()> {
    let frame = json!({"v":1,"id":id,"op":op,"data":data});
    ws.wr.text(&frame.to_string()).await?;
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    loop {
        let t = next_text(ws, deadline, false, op).await?;
        if t.contains("\"push\"") {
            continue;
        }
        let v: Value = serde_json::from_str(&t)?;
        if v["id"] == id {
            if v["code"] != 0 {
                bail!("{op} failed: {t}");
            }
            return Ok(());
        }
    }
}

/// The Engine.IO v4 WebSocket URL for `user` on a Socket.IO server at `base`.
pub(super) fn sio_url(base: &str, user: &str) -> String {
    let mut url = base.trim_end_matches('/').to_owned();
    if !url.contains("/socket.io") {
        url.push_str("/socket.io/");
    }
    let user = percent_encode(user);
    if url.contains('?') {
        format!("{url}&user={user}")
    } else {
        format!("{url}?EIO=4&transport=websocket&user={user}")
    }
}

/// Percent-encodes everything but unreserved URL characters.
fn percent_encode(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Connects to a Socket.IO server as `user`: waits for open (`0{...}`), sends
/// `40`, waits for `40{"sid":...}`.
async fn sio_connect(base: &str, user: &str) -> anyhow::Result<Ws> {
    let url = sio_url(base, user);
    let mut ws = ws::connect(&url).await?;
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    let what = format!("connect of {user}");
    let open = next_text(&mut ws, deadline, true, &what).await?;
    if !open.starts_with('0') {
        bail!("{what}: expected an Engine.IO open packet, got {open}");
    }
    ws.wr.text("40").await?;
    loop {
        let t = next_text(&mut ws, deadline, true, &what).await?;
        if t.starts_with("40") {
            return Ok(ws);
        }
        if t.starts_with("44") {
            bail!("{what} refused: {t}");
        }
    }
}

/// Sends the event `args` (a JSON array) with ack id `ack` and waits for a
/// `{"code":0}` ack.
async fn sio_request(ws: &mut Ws, ack: u64, args: Value) -> anyhow::Result<()> {
    let what = format!("{} request", args[0]);
    ws.wr.text(&format!("42{ack}{args}")).await?;
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    loop {
        let t = next_text(ws, deadline, true, &what).await?;
        if let Some((id, ok)) = sio_ack(t.as_bytes()) {
            if id == ack {
                if !ok {
                    bail!("{what} failed: {t}");
                }
                return Ok(());
            }
        }
    }
}

/// Leading decimal digits of `b` as a number, and how many there were.
fn leading_u64(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in b.iter().take(19) {
        if !c.is_ascii_digit() {
            break;
        }
        v = v * 10 + u64::from(c - b'0');
        n += 1;
    }
    (n > 0).then_some((v, n))
}

fn has_code_zero(b: &[u8]) -> bool {
    memchr::memmem::find(b, b"\"code\":0,").is_some()
        || memchr::memmem::find(b, b"\"code\":0}").is_some()
}

/// Parses a Socket.IO ack `43<id>[...]`: the id and whether it carries `"code":0`.
pub(super) fn sio_ack(frame: &[u8]) -> Option<(u64, bool)> {
    let rest = frame.strip_prefix(b"43")?;
    let (id, n) = leading_u64(rest)?;
    Some((id, has_code_zero(&rest[n..])))
}

/// Parses `"id":N` and whether `"code":0` from a confab reply frame.
pub(super) fn reply_id(frame: &[u8]) -> Option<(u64, bool)> {
    if memchr::memmem::find(frame, b"\"push\"").is_some() {
        return None;
    }
    let i = memchr::memmem::find(frame, b"\"id\":")? + 5;
    let (id, _) = leading_u64(&frame[i..])?;
    Some((id, has_code_zero(frame)))
}

/// `{send µs}:{seq}:...` → `(send µs, seq)`.
pub(super) fn parse_body(text: &[u8]) -> Option<(u64, u64)> {
    let (t, n) = leading_u64(text)?;
    let rest = text.get(n..)?.strip_prefix(b":")?;
    let (seq, m) = leading_u64(rest)?;
    matches!(rest.get(m), None | Some(b':')).then_some((t, seq))
}

/// A message body: `{send µs}:{seq}:` padded with `x` to `len` bytes.
pub(super) fn body(sent_us: u64, seq: u64, len: usize) -> String {
    let mut b = format!("{sent_us}:{seq}:");
    if b.len() < len {
        b.extend(std::iter::repeat_n('x', len - b.len()));
    }
    b
}

/// Finds the bodies in push frames of one kind.
#[derive(Debug)]
pub(super) struct Scanner {
    pub(super) target: Target,
    /// The push's name as it appears in the frame.
    push: Finder<'static>,
    message: Finder<'static>,
    /// Bodies are base64 (confab Command messages).
    base64: bool,
}

impl Scanner {
    /// Room pushes (`peer` false) or peer pushes.
    pub(super) fn new(target: Target, peer: bool, base64: bool) -> Scanner {
        let push: &'static [u8] = match (target, peer) {
            (Target::Confab, false) => b"\"push\":\"receiveRoomMessage\"",
            (Target::Confab, true) => b"\"push\":\"receivePeerMessage\"",
            (Target::Socketio, false) => b"42[\"room_message\"",
            (Target::Socketio, true) => b"42[\"peer_message\"",
        };
        Scanner {
            target,
            push: Finder::new(push),
            message: Finder::new(b"\"message\":\""),
            base64,
        }
    }

    /// Calls `found(sent_us, seq)` for each body in `frame`, if it is the push.
    pub(super) fn scan(&self, frame: &[u8], mut found: impl FnMut(u64, u64)) {
        if self.push.find(frame).is_none() {
            return;
        }
        match self.target {
            Target::Confab => {
                let mut rest = frame;
                while let Some(i) = self.message.find(rest) {
                    rest = &rest[i + self.message.needle().len()..];
                    let end = memchr::memchr(b'"', rest).unwrap_or(rest.len());
                    let field = &rest[..end];
                    let parsed = if self.base64 {
                        let n = field.len().min(48) / 4 * 4;
                        base64::engine::general_purpose::STANDARD
                            .decode(&field[..n])
                            .ok()
                            .and_then(|d| parse_body(&d))
                    } else {
                        parse_body(field)
                    };
                    if let Some((t, seq)) = parsed {
                        found(t, seq);
                    }
                    rest = &rest[end..];
                }
            }
            // The body is the last string of the event array (bodies never
            // contain quotes or backslashes).
            Target::Socketio => {
                let Some(inner) = frame.strip_suffix(b"\"]") else {
                    return;
                };
                let Some(i) = memchr::memrchr(b'"', inner) else {
                    return;
                };
                if let Some((t, seq)) = parse_body(&inner[i + 1..]) {
                    found(t, seq);
                }
            }
        }
    }
}

/// What the receivers need besides their connections.
#[derive(Debug)]
pub(super) struct Receiving {
    pub(super) scanner: Scanner,
    pub(super) stats: Arc<Stats>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(s: &Scanner, frame: &str) -> Vec<(u64, u64)> {
        let mut got = Vec::new();
        s.scan(frame.as_bytes(), |t, q| got.push((t, q)));
        got
    }

    #[test]
    fn bodies_round_trip() {
        let s = Scanner::new(Target::Confab, false, false);
        let text = format!(
            r#"{{"v":1,"push":"receiveRoomMessage","data":{{"messageList":[{{"type":1,"message":"{}","messageID":1}},{{"type":1,"message":"{}"}}]}}}}"#,
            body(123, 7, 64),
            body(456, 8, 4)
        );
        assert_eq!(scan(&s, &text), [(123, 7), (456, 8)]);
        // Another push, or a body that is not ours: nothing.
        assert_eq!(
            scan(
                &s,
                &text.replace("receiveRoomMessage", "receivePeerMessage")
            ),
            []
        );
        assert_eq!(
            scan(
                &s,
                r#"{"push":"receiveRoomMessage","data":{"message":"12:x"}}"#
            ),
            []
        );
        let s = Scanner::new(Target::Confab, false, true);
        let b64 = base64::engine::general_purpose::STANDARD.encode(body(99, 3, 100));
        assert_eq!(
            scan(
                &s,
                &format!(r#"{{"push":"receiveRoomMessage","message":"{b64}"}}"#)
            ),
            [(99, 3)]
        );
        assert_eq!(parse_body(b"5:6"), Some((5, 6)));
        assert_eq!(parse_body(b"5:6x"), None);
    }

    #[test]
    fn reply_ids() {
        assert_eq!(
            reply_id(br#"{"v":1,"id":42,"code":0,"message":"ok","data":{}}"#),
            Some((42, true))
        );
        assert_eq!(
            reply_id(br#"{"v":1,"id":43,"code":6000001,"message":"bad"}"#),
            Some((43, false))
        );
        assert_eq!(reply_id(br#"{"v":1,"push":"x","data":{"id":1}}"#), None);
    }

    #[test]
    fn socketio_frames() {
        assert_eq!(sio_ack(br#"43107[{"code":0}]"#), Some((107, true)));
        assert_eq!(sio_ack(br#"437[{"code":3}]"#), Some((7, false)));
        assert_eq!(sio_ack(br#"42["room_message","r","u","1:2:x"]"#), None);
        let room = Scanner::new(Target::Socketio, false, false);
        let peer = Scanner::new(Target::Socketio, true, false);
        let b = body(123, 7, 64);
        assert_eq!(
            scan(&room, &format!(r#"42["room_message","room","bob","{b}"]"#)),
            [(123, 7)]
        );
        assert_eq!(
            scan(
                &peer,
                &format!(r#"42["peer_message","bob","{}"]"#, body(5, 9, 4))
            ),
            [(5, 9)]
        );
        assert_eq!(
            scan(&room, &format!(r#"42["peer_message","bob","{b}"]"#)),
            []
        );
        assert_eq!(
            sio_url("ws://127.0.0.1:3000/", "a b"),
            "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket&user=a%20b"
        );
        assert_eq!(
            sio_url("ws://h:1/socket.io/?EIO=4&transport=websocket", "u"),
            "ws://h:1/socket.io/?EIO=4&transport=websocket&user=u"
        );
    }
}
