//! One-to-one chat on the terminal.
//!
//! ```text
//! cargo run -p confab-sdk --example peer_chat -- \
//!     --url ws://127.0.0.1:8080/ws --app-id 1234567890 --secret <32-char ServerSecret> \
//!     --user alice --to bob
//! ```
//!
//! Every line typed is sent to `--to` as a Text message; messages received are
//! printed. The token is minted locally from `--secret`, which is for development
//! only: a real app gets its token from its own backend.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use confab_sdk::{
    ConnectionEvent, ConnectionState, MessageContent, SendConfig, UserInfo, Zim, ZimConfig,
    ZimEvent,
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
                "usage: peer_chat --url ws://HOST:PORT/ws --app-id N --secret SECRET --user ID --to ID"
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
    let to = required(&args, "to").to_owned();
    let token = dev_token(required(&args, "secret"), app_id, user);

    let zim = Zim::create(ZimConfig::new(app_id, vec![url.to_owned()]))?;
    let mut events = zim.events().expect("the first call returns the events");
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                ZimEvent::ReceivePeerMessage {
                    message_list,
                    from_user_id,
                } => {
                    for m in message_list {
                        match m.text() {
                            Some(text) => println!("{from_user_id}: {text}"),
                            None => println!("{from_user_id}: {:?}", m.content),
                        }
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
    eprintln!("logged in as {user}; type lines to send them to {to} (Ctrl-D quits)");

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.is_empty() {
            continue;
        }
        match zim
            .send_peer_message(MessageContent::Text(line), &to, SendConfig::default())
            .await
        {
            Ok(m) => eprintln!("(sent #{}, seq {})", m.message_id, m.conversation_seq),
            Err(e) => eprintln!("(not sent: {e})"),
        }
    }
    zim.logout().await?;
    zim.destroy();
    Ok(())
}
