//! A chat room on the terminal.
//!
//! ```text
//! cargo run -p confab-sdk --example room_chat -- \
//!     --url ws://127.0.0.1:8080/ws --app-id 1234567890 --secret <32-char ServerSecret> \
//!     --user alice --room lobby
//! ```
//!
//! Enters the room (creating it if needed), prints its messages and member
//! changes, and sends every line typed as a Text message. The token is minted
//! locally from `--secret`, which is for development only.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use confab_sdk::{
    ConnectionEvent, ConnectionState, MessageContent, RoomInfo, SendConfig, UserInfo, Zim,
    ZimConfig, ZimEvent,
};
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// `--name value` pairs from the command line.
fn args() -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(name) = it.next() {
        if let (Some(key), Some(value)) = (name.strip_prefix("--"), it.next()) {
            out.insert(key.to_owned(), value);
        }
    }
    out
}

fn required<'a>(args: &'a HashMap<String, String>, name: &str) -> &'a str {
    args.get(name).map_or_else(
        || {
            eprintln!(
                "usage: room_chat --url ws://HOST:PORT/ws --app-id N --secret SECRET --user ID --room ID"
            );
            eprintln!("missing --{name}");
            std::process::exit(2);
        },
        String::as_str,
    )
}

/// A development token for `user`, valid for a day.
fn dev_token(secret: &str, app_id: u32, user: &str) -> String {
    let secret = confab_token::Secret::new(secret).unwrap_or_else(|e| {
        eprintln!("--secret: {e}");
        std::process::exit(2);
    });
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    confab_token::generate(&secret, app_id, user, 86_400, confab_token::Mode::Gcm, now)
        .unwrap_or_else(|e| {
            eprintln!("cannot make a token: {e}");
            std::process::exit(2);
        })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args();
    let url = required(&args, "url");
    let app_id: u32 = required(&args, "app-id").parse()?;
    let user = required(&args, "user");
    let room = required(&args, "room").to_owned();
    let token = dev_token(required(&args, "secret"), app_id, user);

    let zim = Zim::create(ZimConfig::new(app_id, vec![url.to_owned()]))?;
    let mut events = zim.events().expect("the first call returns the events");
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                ZimEvent::ReceiveRoomMessage {
                    message_list,
                    from_room_id,
                } => {
                    for m in message_list {
                        let what = m
                            .text()
                            .map_or_else(|| format!("{:?}", m.content), str::to_owned);
                        println!("[{from_room_id}] {}: {what}", m.sender_user_id);
                    }
                }
                ZimEvent::RoomMemberJoined {
                    member_list,
                    room_id,
                } => {
                    for m in member_list {
                        eprintln!("[{room_id}] {} joined", m.user_id);
                    }
                }
                ZimEvent::RoomMemberLeft {
                    member_list,
                    room_id,
                } => {
                    for m in member_list {
                        eprintln!("[{room_id}] {} left", m.user_id);
                    }
                }
                ZimEvent::ConnectionStateChanged {
                    state,
                    event,
                    extended,
                } => {
                    eprintln!("[{state:?} / {event:?}] {extended}");
                    if state == ConnectionState::Disconnected && event != ConnectionEvent::Success {
                        // Kicked out, token expired, or gave up reconnecting.
                        std::process::exit(1);
                    }
                }
                other => eprintln!("[{other:?}]"),
            }
        }
    });
    zim.login(
        UserInfo {
            user_id: user.to_owned(),
            user_name: user.to_owned(),
        },
        token,
    )
    .await?;
    let entered = zim
        .enter_room(
            RoomInfo {
                room_id: room.clone(),
                room_name: room.clone(),
            },
            None,
        )
        .await?;
    let members = zim.query_room_online_member_count(&room).await?;
    eprintln!(
        "{} room {room} ({members} members); type lines to send them (Ctrl-D quits)",
        if entered.created { "created" } else { "joined" }
    );

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.is_empty() {
            continue;
        }
        if let Err(e) = zim
            .send_room_message(MessageContent::Text(line), &room, SendConfig::default())
            .await
        {
            eprintln!("(not sent: {e})");
        }
    }
    zim.leave_room(&room).await?;
    zim.logout().await?;
    zim.destroy();
    Ok(())
}
