//! `confab send`, `confab listen` and `confab chat`: clients built on confab-sdk.
//!
//! Output is for scripts: one JSON object per line on stdout. Errors are
//! `{"code","name","message"}` lines.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Args, ValueEnum};
use confab_sdk::{
    ConversationType, ErrorCode, Message, MessageContent, Priority, RoomInfo, SendConfig, UserInfo,
    Zim, ZimConfig, ZimError, ZimEvent, ZimEvents,
};
use confab_token::{Mode, Secret};
use serde_json::{Value, json};

/// How to reach the server and who to be.
#[derive(Debug, Args)]
pub(crate) struct ConnArgs {
    /// WebSocket URL of the server (ws://HOST:PORT/ws). Repeat it to give
    /// failover addresses: the client moves to the next one if a server goes away.
    #[arg(
        long = "url",
        value_name = "URL",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    urls: Vec<String>,
    /// The AppID (as printed by `confab serve`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    app_id: u32,
    /// The app's ServerSecret: the client mints its own token (for development).
    /// Ignored when --token is given.
    #[arg(long, value_name = "SECRET", env = "CONFAB_SECRET", hide_env_values = true,
          value_parser = parse_secret, required_unless_present = "token")]
    secret: Option<Secret>,
    /// A login token made elsewhere (your token server); takes precedence over --secret.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Your userID. One session per user: logging in elsewhere as the same user
    /// disconnects this one, so give `send` and `listen` different users.
    #[arg(long, value_name = "USER")]
    user: String,
    /// Your display name. [default: the userID]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
}

/// A ServerSecret flag (every command that takes one parses it here).
pub(crate) fn parse_secret(s: &str) -> Result<Secret, String> {
    Secret::new(s).map_err(|e| e.to_string())
}

/// What to do with the room before sending or listening.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub(crate) struct RoomStep {
    /// Create the room (fails with 6000311 if it exists).
    #[arg(long, requires = "room")]
    create: bool,
    /// Join the existing room (fails with 6000304 if it does not exist).
    #[arg(long, requires = "room")]
    join: bool,
    /// Join the room, creating it if needed.
    #[arg(long, requires = "room")]
    enter: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Kind {
    /// Stored; reaches offline users later (type 1).
    Text,
    /// Not stored; bytes, delivered to online receivers only (type 2).
    Command,
    /// Rooms only; not stored, unreliable (type 20).
    Barrage,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Pri {
    Low,
    Medium,
    High,
}

impl From<Pri> for Priority {
    fn from(p: Pri) -> Priority {
        match p {
            Pri::Low => Priority::Low,
            Pri::Medium => Priority::Medium,
            Pri::High => Priority::High,
        }
    }
}

/// `confab send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Send to this user (peer message).
    #[arg(
        long,
        value_name = "USER",
        conflicts_with = "room",
        required_unless_present = "room"
    )]
    to: Option<String>,
    /// Send to this room. Without --create/--join/--enter the message is sent to
    /// the room as it is, and the server's code says what is wrong (6000205 when
    /// you are not a member, 6000301 when it does not exist).
    #[arg(long, value_name = "ROOM")]
    room: Option<String>,
    #[command(flatten)]
    step: RoomStep,
    /// Message type.
    #[arg(long = "type", value_enum, default_value = "text")]
    kind: Kind,
    /// Priority of the live push (matters for command and barrage under load).
    #[arg(long, value_enum, default_value = "low")]
    priority: Pri,
    /// The message (for --type command, its UTF-8 bytes are sent).
    text: String,
}

/// `confab listen`.
#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Also listen in this room (joined with --join by default).
    #[arg(long, value_name = "ROOM")]
    room: Option<String>,
    #[command(flatten)]
    step: RoomStep,
    /// Exit 0 after receiving this many messages (events do not count).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Give up after this many seconds in all and exit 1.
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
}

/// `confab chat`.
#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Start in this room (entered: created if needed).
    #[arg(long, value_name = "ROOM")]
    room: Option<String>,
    /// Start talking to this user.
    #[arg(long, value_name = "USER", conflicts_with = "room")]
    to: Option<String>,
}

/// Now, Unix seconds (0 if the clock is before 1970), for minting tokens.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

impl ConnArgs {
    fn token(&self) -> anyhow::Result<String> {
        match (&self.token, &self.secret) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(secret)) => confab_token::generate(
                secret,
                self.app_id,
                &self.user,
                86_400,
                Mode::Gcm,
                unix_now(),
            )
            .context("cannot make a token"),
            (None, None) => anyhow::bail!("give --secret or --token"),
        }
    }

    /// Creates the client and logs in; returns it with its event stream.
    async fn connect(&self) -> Result<(Zim, ZimEvents), ZimError> {
        let zim = Zim::create(ZimConfig::new(self.app_id, self.urls.clone()))?;
        let events = zim
            .events()
            .ok_or_else(|| ZimError::new(ErrorCode::Failed, "events already taken"))?;
        let token = self
            .token()
            .map_err(|e| ZimError::new(ErrorCode::ParamInvalid, e.to_string()))?;
        let user = UserInfo {
            user_id: self.user.clone(),
            user_name: self.name.clone().unwrap_or_else(|| self.user.clone()),
        };
        zim.login(user, token).await?;
        Ok((zim, events))
    }
}

fn error_json(e: &ZimError) -> Value {
    json!({"code": e.code.code(), "name": e.code.name(), "message": e.message})
}

fn content_json(c: &MessageContent) -> (u8, Value) {
    match c {
        MessageContent::Text(t) => (1, json!(t)),
        MessageContent::Command(b) => (
            2,
            json!(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
        MessageContent::Barrage(t) => (20, json!(t)),
        MessageContent::Other { kind, message } => (*kind, json!(message)),
    }
}

fn message_json(m: &Message) -> Value {
    let (kind, body) = content_json(&m.content);
    let mut v = json!({
        "messageID": m.message_id,
        "localMessageID": m.local_message_id,
        "seq": m.conversation_seq,
        "timestamp": m.timestamp,
        "type": kind,
        "message": body,
        "from": m.sender_user_id,
        "conversationID": m.conversation_id,
        "conversationType": if m.conversation_type == ConversationType::Room { "room" } else { "peer" },
    });
    if let Some(seq) = m.inbox_seq {
        v["inboxSeq"] = seq.into();
    }
    v
}

/// Does the room step; `Ok(())` also when there is none.
async fn room_step(
    zim: &Zim,
    room: &str,
    step: &RoomStep,
    default_join: bool,
) -> Result<(), ZimError> {
    let info = RoomInfo {
        room_id: room.to_owned(),
        room_name: String::new(),
    };
    if step.create {
        zim.create_room(info, None).await.map(drop)
    } else if step.enter {
        zim.enter_room(info, None).await.map(drop)
    } else if step.join || default_join {
        zim.join_room(room).await.map(drop)
    } else {
        Ok(())
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(crate) fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let result = async {
            let (zim, _events) = args.conn.connect().await?;
            let content = match args.kind {
                Kind::Text => MessageContent::Text(args.text.clone()),
                Kind::Command => MessageContent::Command(args.text.clone().into_bytes()),
                Kind::Barrage => MessageContent::Barrage(args.text.clone()),
            };
            let config = SendConfig {
                priority: args.priority.into(),
            };
            let sent = match (&args.to, &args.room) {
                (Some(to), _) => zim.send_peer_message(content, to, config).await,
                (None, Some(room)) => {
                    room_step(&zim, room, &args.step, false).await?;
                    zim.send_room_message(content, room, config).await
                }
                (None, None) => Err(ZimError::new(
                    ErrorCode::ParamInvalid,
                    "give --to USER or --room ROOM",
                )),
            };
            let _ = zim.logout().await;
            zim.destroy();
            sent
        }
        .await;
        Ok(match result {
            Ok(m) => {
                println!("{}", message_json(&m));
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("{}", error_json(&e));
                ExitCode::FAILURE
            }
        })
    })
}

/// The JSON line of an event, and whether it is a message (for --count).
fn event_json(ev: &ZimEvent) -> Vec<(Value, bool)> {
    match ev {
        ZimEvent::ReceivePeerMessage { message_list, .. }
        | ZimEvent::ReceiveRoomMessage { message_list, .. } => message_list
            .iter()
            .map(|m| {
                let mut v = message_json(m);
                v["event"] = "message".into();
                (v, true)
            })
            .collect(),
        ZimEvent::ConnectionStateChanged {
            state,
            event,
            extended,
        } => vec![(
            json!({"event": "connectionStateChanged", "state": state.code(), "stateName": format!("{state:?}"),
                   "reason": event.code(), "reasonName": format!("{event:?}"), "extended": extended}),
            false,
        )],
        ZimEvent::TokenWillExpire { second } => {
            vec![(json!({"event": "tokenWillExpire", "second": second}), false)]
        }
        ZimEvent::RoomMemberJoined {
            member_list,
            room_id,
        }
        | ZimEvent::RoomMemberLeft {
            member_list,
            room_id,
        } => {
            let name = if matches!(ev, ZimEvent::RoomMemberJoined { .. }) {
                "roomMemberJoined"
            } else {
                "roomMemberLeft"
            };
            let users: Vec<_> = member_list.iter().map(|u| u.user_id.clone()).collect();
            vec![(
                json!({"event": name, "roomID": room_id, "userIDs": users}),
                false,
            )]
        }
        ZimEvent::RoomStateChanged {
            state,
            event,
            room_id,
        } => vec![(
            json!({"event": "roomStateChanged", "roomID": room_id, "state": state.code(), "reason": event.code()}),
            false,
        )],
        ZimEvent::RoomAttributesUpdated { room_id, infos }
        | ZimEvent::RoomAttributesBatchUpdated { room_id, infos } => vec![(
            json!({"event": "roomAttributesUpdated", "roomID": room_id,
                   "infos": infos.iter().map(|i| json!({"action": i.action, "roomAttributes": i.room_attributes})).collect::<Vec<_>>()}),
            false,
        )],
        ZimEvent::PeerMessageGap {
            from_inbox_seq,
            to_inbox_seq,
        } => vec![(
            json!({"event": "peerMessageGap", "fromInboxSeq": from_inbox_seq, "toInboxSeq": to_inbox_seq}),
            false,
        )],
        ZimEvent::RoomMessageGap {
            room_id,
            from_seq,
            to_seq,
        } => vec![(
            json!({"event": "roomMessageGap", "roomID": room_id, "fromSeq": from_seq, "toSeq": to_seq}),
            false,
        )],
        ZimEvent::Error { code, message } => vec![(
            json!({"event": "error", "code": code.code(), "name": code.name(), "message": message}),
            false,
        )],
        other => vec![(
            json!({"event": "other", "debug": format!("{other:?}")}),
            false,
        )],
    }
}

/// Renews the token when it is about to expire, if this client mints its own.
async fn renew(zim: &Zim, conn: &ConnArgs) {
    if conn.secret.is_some() {
        if let Ok(token) = conn.token() {
            let _ = zim.renew_token(token).await;
        }
    }
}

pub(crate) fn listen(args: ListenArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let deadline = args
            .timeout
            .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
        let zim_slot = std::sync::Mutex::new(None::<Zim>);
        let run = async {
            let (zim, mut events) = args.conn.connect().await?;
            if let Ok(mut slot) = zim_slot.lock() {
                *slot = Some(zim.clone());
            }
            if let Some(room) = &args.room {
                room_step(&zim, room, &args.step, true).await?;
            }
            println!(
                "{}",
                json!({"event": "ready", "userID": args.conn.user, "roomID": args.room})
            );
            let mut received = 0u64;
            if args.count == Some(0) {
                return Ok(true);
            }
            while let Some(ev) = events.recv().await {
                if let ZimEvent::TokenWillExpire { .. } = ev {
                    renew(&zim, &args.conn).await;
                }
                let stop = matches!(
                    &ev,
                    ZimEvent::ConnectionStateChanged {
                        state: confab_sdk::ConnectionState::Disconnected,
                        ..
                    }
                );
                for (line, is_message) in event_json(&ev) {
                    println!("{line}");
                    if is_message {
                        received += 1;
                        if args.count.is_some_and(|n| received >= n) {
                            return Ok(true);
                        }
                    }
                }
                if stop {
                    return Err(ZimError::new(ErrorCode::NetworkError, "disconnected"));
                }
            }
            Ok::<bool, ZimError>(false)
        };
        let result = match deadline {
            Some(d) => match tokio::time::timeout_at(d, run).await {
                Ok(r) => r,
                Err(_) => return Ok(ExitCode::from(1)),
            },
            None => run.await,
        };
        // Log out (acknowledging what was printed) so the next session of this user
        // does not receive it again.
        if let Some(zim) = zim_slot.lock().ok().and_then(|mut z| z.take()) {
            let _ = tokio::time::timeout(Duration::from_secs(3), zim.logout()).await;
            zim.destroy();
        }
        Ok(match result {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                println!("{}", error_json(&e));
                ExitCode::from(2)
            }
        })
    })
}

pub(crate) fn chat(args: ChatArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(crate::chat::run(args))
}

impl ChatArgs {
    pub(crate) fn conn(&self) -> &ConnArgs {
        &self.conn
    }
    pub(crate) fn room(&self) -> Option<&str> {
        self.room.as_deref()
    }
    pub(crate) fn to(&self) -> Option<&str> {
        self.to.as_deref()
    }
}

impl ConnArgs {
    pub(crate) fn user(&self) -> &str {
        &self.user
    }
    pub(crate) async fn login(&self) -> Result<(Zim, ZimEvents), ZimError> {
        self.connect().await
    }
    pub(crate) async fn renew(&self, zim: &Zim) {
        renew(zim, self).await;
    }
}
