//! The async Rust SDK of confab, a self-hosted chat server modelled on ZEGOCLOUD
//! ZIM 1.x.
//!
//! A [`Zim`] instance is one user's connection: create it with a [`ZimConfig`]
//! (AppID and one or more `ws://HOST:PORT/ws` URLs), take its [`ZimEvents`],
//! [`Zim::login`] with a Token04, then send and receive peer and room messages.
//! Every call returns `Result<T, ZimError>` with ZIM's error codes; everything the
//! server pushes arrives as a [`ZimEvent`]. The SDK speaks `docs/protocol.md`
//! through the types of `confab-proto`; it never depends on the server.
//!
//! ```no_run
//! use confab_sdk::{MessageContent, SendConfig, UserInfo, Zim, ZimConfig, ZimEvent};
//!
//! # async fn demo(token: String) -> Result<(), confab_sdk::ZimError> {
//! let zim = Zim::create(ZimConfig::new(1234567890, vec!["ws://127.0.0.1:8080/ws".into()]))?;
//! let mut events = zim.events().expect("first call");
//! tokio::spawn(async move {
//!     while let Some(event) = events.recv().await {
//!         if let ZimEvent::ReceivePeerMessage { message_list, from_user_id } = event {
//!             for m in message_list {
//!                 println!("{from_user_id}: {:?}", m.text());
//!             }
//!         }
//!     }
//! });
//! let alice = UserInfo { user_id: "alice".into(), user_name: "Alice".into() };
//! zim.login(alice, token).await?;
//! let sent = zim
//!     .send_peer_message(MessageContent::Text("hello".into()), "bob", SendConfig::default())
//!     .await?;
//! println!("stored as message {} (seq {})", sent.message_id, sent.conversation_seq);
//! zim.logout().await?;
//! zim.destroy();
//! # Ok(())
//! # }
//! ```
//!
//! Codes the SDK makes itself (the server's pass through unchanged):
//!
//! | code | when |
//! |---|---|
//! | 6000001 | an obvious parameter error caught before sending (empty IDs, unsupported types) |
//! | 6000002 | any call after [`Zim::destroy`] (there is no "before create": `create` returns the instance) |
//! | 6000005 | more than [`ZimConfig::send_rate_per_second`] Text + Command sends per second |
//! | 6000010 | [`Zim::upload_log`] failed |
//! | 6000104 | the network failed, or no reply within [`ZimConfig::request_timeout`] |
//! | 6000111 | [`Zim::login`] while logged in |
//! | 6000121 | a call that needs a login while logged out |
//! | 6000204 | a message send failed because of the network |
//!
//! # Events
//!
//! [`Zim::events`] hands out a bounded channel ([`ZimConfig::event_capacity`],
//! default 1024). The SDK never drops an event to make room: when the channel is
//! full, its connection task waits until the app takes one. Meanwhile it reads
//! nothing from the server, so replies to calls wait too and the server may drop
//! the connection as a slow consumer — after which the SDK reconnects and catches
//! up by seq. Drain the events in their own task.
//!
//! # Reconnects
//!
//! One background task owns the WebSocket. When the connection drops (network,
//! missed heartbeats, or a server `disconnect` whose `reconnect` is true), the
//! state becomes Reconnecting and the SDK retries with exponential backoff and
//! jitter (0.5 s doubling to 30 s) through the URL list, logging in again with
//! the current token, `lastInboxSeq` (the highest peer inbox position delivered)
//! and `roomSeqs` (the highest seq seen per room). Rooms the server restores come
//! back with [`ZimEvent::RoomStateChanged`] Connecting → Connected; the SDK
//! re-joins the others. Peer messages are deduped by `inboxSeq` and stored room
//! messages by `(roomID, conversationSeq)`, so the app sees each stored message
//! once and in order; delivered positions are acknowledged (`ackInbox`) every
//! [`ZimConfig::ack_interval`]. Calls made while reconnecting wait up to the
//! request timeout; a Text send in flight when the connection drops is resent
//! with the same localMessageID (the server dedups), so a send completes once or
//! fails with 6000204. A `disconnect` whose `reconnect` is false ends the session:
//! kickedOut → Disconnected/KickedOut, tokenExpired → Disconnected/TokenExpired.
//!
//! # Logs
//!
//! [`Zim::set_log_config`] makes the SDK write its own size-capped log (one `.1`
//! backup) of connection events, request ops and result codes — never tokens or
//! message bodies. [`Zim::upload_log`] sends it to the server.

#![warn(missing_docs)]

mod engine;
mod error;
mod logger;
mod types;
mod upload;
mod zim;

pub use confab_proto::ErrorCode;
pub use confab_proto::frame::{
    ConversationType, MessageType, Priority, QueryRoomMemberListReply, RenewTokenReply,
    RoomAdvancedConfig, RoomAttributesSetConfig, RoomAttributesUpdateInfo, RoomInfo,
    RoomJoinedReply, UserInfo,
};
pub use error::ZimError;
pub use types::{
    ConnectionEvent, ConnectionState, LogConfig, Message, MessageContent, MessageDirection,
    MessageSentStatus, RoomEvent, RoomState, SendConfig, ZimConfig, ZimEvent,
};
pub use zim::{Zim, ZimEvents};
