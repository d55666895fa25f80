//! `confab chat`: an interactive terminal chat on confab-sdk. Lines you type are
//! sent to the current conversation (a room or a user); lines starting with `/`
//! are commands (`/help`). Incoming messages and events print as they arrive.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::ExitCode;

use confab_sdk::{
    ConnectionState, ConversationType, Message, MessageContent, RoomInfo, SendConfig, Zim,
    ZimError, ZimEvent,
};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::client_cmd::ChatArgs;

const HELP: &str = "\
commands:
  /to USER           talk to USER (peer messages; they get them even if offline)
  /enter ROOM        join ROOM, creating it if needed, and talk there
  /join ROOM         join an existing room      /create ROOM   create a room
  /room ROOM         talk in ROOM (one you are in)
  /leave [ROOM]      leave ROOM (default: the current one)
  /members           who is in the current room /rooms   the rooms you are in
  /history [N]       the last N messages here (default 20); again: /more
  /more              older messages of the last /history
  /quit              leave (Ctrl-D works too)
anything else is sent to the current conversation";

#[derive(Debug, Clone)]
enum Target {
    None,
    Room(String),
    Peer(String),
}

impl Target {
    fn prompt(&self) -> String {
        match self {
            Target::None => "(nobody) > ".into(),
            Target::Room(r) => format!("[{r}] > "),
            Target::Peer(u) => format!("@{u} > "),
        }
    }

    fn conversation(&self) -> Option<(String, ConversationType)> {
        match self {
            Target::None => None,
            Target::Room(r) => Some((r.clone(), ConversationType::Room)),
            Target::Peer(u) => Some((u.clone(), ConversationType::Peer)),
        }
    }
}

fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn body(m: &Message) -> String {
    match &m.content {
        MessageContent::Text(t) | MessageContent::Barrage(t) => t.clone(),
        MessageContent::Command(b) => format!("<command, {} bytes>", b.len()),
        MessageContent::Other { kind, .. } => format!("<type {kind}>"),
    }
}

fn show(m: &Message) -> String {
    let place = match m.conversation_type {
        ConversationType::Room => format!("[{}] ", m.conversation_id),
        ConversationType::Peer => String::new(),
    };
    format!(
        "{} {place}{}: {}",
        clock(m.timestamp),
        m.sender_user_id,
        body(m)
    )
}

struct Chat {
    zim: Zim,
    me: String,
    target: Target,
    rooms: BTreeSet<String>,
    /// The oldest seq shown by /history, for /more.
    oldest: Option<u64>,
}

fn say(line: &str) {
    // Start on a fresh line so events do not glue onto the prompt.
    println!("\r{line}");
}

fn fail(e: &ZimError) {
    say(&format!(
        "! {} {}: {}",
        e.code.code(),
        e.code.name(),
        e.message
    ));
}

impl Chat {
    fn prompt(&self) {
        print!("{}", self.target.prompt());
        let _ = std::io::stdout().flush();
    }

    async fn room_step(&mut self, cmd: &str, room: &str) {
        let info = RoomInfo {
            room_id: room.to_owned(),
            room_name: String::new(),
        };
        let result = match cmd {
            "create" => self.zim.create_room(info, None).await,
            "join" => self.zim.join_room(room).await,
            _ => self.zim.enter_room(info, None).await,
        };
        match result {
            Ok(r) => {
                self.rooms.insert(room.to_owned());
                self.target = Target::Room(room.to_owned());
                let how = if r.created {
                    "created and joined"
                } else {
                    "joined"
                };
                say(&format!("* {how} {room}"));
            }
            Err(e) => fail(&e),
        }
    }

    async fn history(&mut self, count: u32, more: bool) {
        let Some((id, kind)) = self.target.conversation() else {
            say("! pick a conversation first: /to USER or /enter ROOM");
            return;
        };
        let anchor = if more { self.oldest } else { None };
        if more && anchor.is_none() {
            say("* nothing older");
            return;
        }
        match self
            .zim
            .query_history_message(&id, kind, anchor, count, true)
            .await
        {
            Ok(page) => {
                if page.is_empty() {
                    say("* nothing older");
                }
                self.oldest = page.last().map(|m| m.conversation_seq).filter(|s| *s > 1);
                for m in page.iter().rev() {
                    say(&format!("  {}", show(m)));
                }
            }
            Err(e) => fail(&e),
        }
    }

    /// Handles one typed line; false to quit.
    async fn line(&mut self, line: &str) -> bool {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return true;
        }
        let Some(cmd) = line.strip_prefix('/') else {
            self.send(line).await;
            return true;
        };
        let mut parts = cmd.split_whitespace();
        let name = parts.next().unwrap_or("");
        let arg = parts.next();
        match (name, arg) {
            ("quit" | "exit" | "q", _) => return false,
            ("help" | "h" | "?", _) => say(HELP),
            ("to", Some(user)) => {
                self.target = Target::Peer(user.to_owned());
                self.oldest = None;
            }
            ("room", Some(room)) => {
                if self.rooms.contains(room) {
                    self.target = Target::Room(room.to_owned());
                    self.oldest = None;
                } else {
                    say(&format!("! you are not in {room}; /enter {room} first"));
                }
            }
            ("enter" | "join" | "create", Some(room)) => self.room_step(name, room).await,
            ("leave", room) => {
                let room = room.map(str::to_owned).or(match &self.target {
                    Target::Room(r) => Some(r.clone()),
                    _ => None,
                });
                match room {
                    Some(room) => match self.zim.leave_room(&room).await {
                        Ok(()) => {
                            self.rooms.remove(&room);
                            say(&format!("* left {room}"));
                            if matches!(&self.target, Target::Room(r) if *r == room) {
                                self.target = Target::None;
                            }
                        }
                        Err(e) => fail(&e),
                    },
                    None => say("! which room? /leave ROOM"),
                }
            }
            ("rooms", _) => say(&format!(
                "* your rooms: {}",
                self.rooms.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            ("members", _) => match &self.target {
                Target::Room(room) => {
                    let room = room.clone();
                    let mut flag = String::new();
                    let mut names = Vec::new();
                    loop {
                        match self.zim.query_room_member_list(&room, &flag, 100).await {
                            Ok(page) => {
                                names.extend(page.member_list.into_iter().map(|u| u.user_id));
                                if page.next_flag.is_empty() {
                                    break;
                                }
                                flag = page.next_flag;
                            }
                            Err(e) => {
                                fail(&e);
                                break;
                            }
                        }
                    }
                    say(&format!(
                        "* {} in {room}: {}",
                        names.len(),
                        names.join(", ")
                    ));
                }
                _ => say("! /members works in a room"),
            },
            ("history", n) => {
                let count = n.and_then(|n| n.parse().ok()).unwrap_or(20).clamp(1, 100);
                self.history(count, false).await;
            }
            ("more", _) => self.history(20, true).await,
            _ => say(&format!("! unknown command /{cmd}; /help lists them")),
        }
        true
    }

    async fn send(&mut self, text: &str) {
        let content = MessageContent::Text(text.to_owned());
        let result = match &self.target {
            Target::None => {
                say("! pick a conversation first: /to USER or /enter ROOM (/help)");
                return;
            }
            Target::Room(room) => {
                let room = room.clone();
                self.zim
                    .send_room_message(content, &room, SendConfig::default())
                    .await
            }
            Target::Peer(user) => {
                let user = user.clone();
                self.zim
                    .send_peer_message(content, &user, SendConfig::default())
                    .await
            }
        };
        if let Err(e) = result {
            fail(&e);
        }
    }

    fn event(&mut self, ev: &ZimEvent) {
        match ev {
            ZimEvent::ReceivePeerMessage { message_list, .. }
            | ZimEvent::ReceiveRoomMessage { message_list, .. } => {
                for m in message_list {
                    if m.sender_user_id != self.me {
                        say(&show(m));
                    }
                }
            }
            ZimEvent::RoomMemberJoined {
                member_list,
                room_id,
            } => {
                for u in member_list.iter().filter(|u| u.user_id != self.me) {
                    say(&format!("* {} joined {room_id}", u.user_id));
                }
            }
            ZimEvent::RoomMemberLeft {
                member_list,
                room_id,
            } => {
                for u in member_list {
                    say(&format!("* {} left {room_id}", u.user_id));
                }
            }
            ZimEvent::ConnectionStateChanged {
                state,
                event,
                extended,
            } => {
                say(&format!("* connection: {state:?} ({event:?}) {extended}"));
            }
            ZimEvent::RoomStateChanged { state, room_id, .. } => {
                if *state == confab_sdk::RoomState::Connected {
                    self.rooms.insert(room_id.clone());
                }
                say(&format!("* room {room_id}: {state:?}"));
            }
            ZimEvent::PeerMessageGap { .. } | ZimEvent::RoomMessageGap { .. } => {
                say("* some older messages were missed and are no longer kept");
            }
            ZimEvent::Error { code, message } => say(&format!("! {} {message}", code.code())),
            _ => {}
        }
    }
}

pub(crate) async fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let (zim, mut events) = match args.conn().login().await {
        Ok(x) => x,
        Err(e) => {
            fail(&e);
            return Ok(ExitCode::from(2));
        }
    };
    let mut chat = Chat {
        zim,
        me: args.conn().user().to_owned(),
        target: Target::None,
        rooms: BTreeSet::new(),
        oldest: None,
    };
    say(&format!(
        "confab chat: logged in as {}. Type /help for commands, /quit to leave.",
        chat.me
    ));
    if let Some(room) = args.room() {
        chat.room_step("enter", room).await;
    } else if let Some(user) = args.to() {
        chat.target = Target::Peer(user.to_owned());
    }
    chat.prompt();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    if !chat.line(&line).await {
                        break;
                    }
                    chat.prompt();
                }
                _ => break,
            },
            ev = events.recv() => match ev {
                Some(ev) => {
                    if let ZimEvent::TokenWillExpire { .. } = ev {
                        args.conn().renew(&chat.zim).await;
                    }
                    let ended = matches!(
                        ev,
                        ZimEvent::ConnectionStateChanged { state: ConnectionState::Disconnected, .. }
                    );
                    chat.event(&ev);
                    if ended {
                        break;
                    }
                    chat.prompt();
                }
                None => break,
            },
        }
    }
    let _ = chat.zim.logout().await;
    chat.zim.destroy();
    say("bye");
    Ok(ExitCode::SUCCESS)
}
