//! What travels over the broker between nodes, and the topics it travels on.
//!
//! Publications are [`Envelope`]s encoded to bytes; frames inside are already
//! encoded JSON, so a message is serialized once on the sending node however many
//! sessions receive it. The hub decodes them ([`crate::hub`]); everything that
//! publishes (sessions, the stored-send path, the room sweeper) encodes them
//! here, and room events that no request answers go out through
//! [`publish_room_event`].

use bytes::{BufMut, Bytes, BytesMut};
use confab_broker::Broker;
use confab_conn::outbox::Class;
use confab_proto::frame::{
    Priority, Push, RoomAttributesUpdateInfo, RoomAttributesUpdated, encode_push,
};

/// How full (percent) a member's outbound queue may be before a Barrage push
/// to it is shed: first, so a struggling receiver loses decoration before it
/// loses the connection.
const BARRAGE_SHED_AT: u8 = 25;

/// How an unstored push of `priority` is queued: Low is shed from half full,
/// Medium from three quarters, High never (the client is slow instead).
pub(crate) fn live_class(priority: Priority) -> Class {
    match priority {
        Priority::Low => Class::ShedAt(50),
        Priority::Medium => Class::ShedAt(75),
        Priority::High => Class::Keep,
    }
}

/// The topic of one user of one app. Every session of the user listens to it.
pub(crate) fn user_topic(app_id: u32, user_id: &str) -> String {
    format!("u:{app_id}:{user_id}")
}

/// The topic of one room of one app. Every node with a local member listens to it.
pub(crate) fn room_topic(app_id: u32, room_id: &str) -> String {
    format!("r:{app_id}:{room_id}")
}

/// How a room publication is treated by a receiver's outbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoomClass {
    /// A stored message or a control event: never shed.
    Stored,
    /// An unstored message with its priority.
    Live(Priority),
    /// Barrage: shed first.
    Barrage,
}

impl RoomClass {
    fn code(self) -> u8 {
        match self {
            RoomClass::Stored => 0,
            RoomClass::Live(p) => p.code(),
            RoomClass::Barrage => 20,
        }
    }

    fn from_code(n: u8) -> Option<RoomClass> {
        match n {
            0 => Some(RoomClass::Stored),
            20 => Some(RoomClass::Barrage),
            n => Priority::from_code(n).map(RoomClass::Live),
        }
    }

    pub(crate) fn outbox_class(self) -> Class {
        match self {
            RoomClass::Stored => Class::Keep,
            RoomClass::Live(p) => live_class(p),
            RoomClass::Barrage => Class::ShedAt(BARRAGE_SHED_AT),
        }
    }
}

/// What travels over the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Envelope {
    /// A stored peer message at `inbox_seq` of the receiver; `frame` is the encoded push.
    Stored { inbox_seq: u64, frame: Bytes },
    /// An unstored push with its priority.
    Live { priority: Priority, frame: Bytes },
    /// A session of the user logged in at `login_ms`; every session of the user
    /// that logged in earlier (ties: lower session id) must go. Comparing login
    /// times means two logins at the same instant keep the later one instead of
    /// kicking each other.
    Kick { session_id: u64, login_ms: i64 },
    /// A stored room message at `seq` of its room, for every local member
    /// except `sender`'s sessions: receiving nodes deliver these in seq order
    /// and fill a gap from the store (see `hub`).
    RoomMessage {
        seq: u64,
        sender: String,
        frame: Bytes,
    },
    /// Any other frame for every local member of a room except `sender`
    /// (empty: everyone): room events, unstored messages.
    Room {
        class: RoomClass,
        sender: String,
        frame: Bytes,
    },
}

const STORED: u8 = 1;
const LIVE: u8 = 2;
const KICK: u8 = 3;
const ROOM: u8 = 4;
const ROOM_MESSAGE: u8 = 5;

impl Envelope {
    pub(crate) fn encode(&self) -> Bytes {
        let mut b;
        match self {
            Envelope::Stored { inbox_seq, frame } => {
                b = BytesMut::with_capacity(9 + frame.len());
                b.put_u8(STORED);
                b.put_u64(*inbox_seq);
                b.put_slice(frame);
            }
            Envelope::Live { priority, frame } => {
                b = BytesMut::with_capacity(2 + frame.len());
                b.put_u8(LIVE);
                b.put_u8(priority.code());
                b.put_slice(frame);
            }
            Envelope::Kick {
                session_id,
                login_ms,
            } => {
                b = BytesMut::with_capacity(17);
                b.put_u8(KICK);
                b.put_u64(*session_id);
                b.put_i64(*login_ms);
            }
            Envelope::RoomMessage { seq, sender, frame } => {
                b = BytesMut::with_capacity(10 + sender.len() + frame.len());
                b.put_u8(ROOM_MESSAGE);
                b.put_u64(*seq);
                b.put_u8(u8::try_from(sender.len()).unwrap_or(u8::MAX));
                b.put_slice(sender.as_bytes());
                b.put_slice(frame);
            }
            Envelope::Room {
                class,
                sender,
                frame,
            } => {
                b = BytesMut::with_capacity(3 + sender.len() + frame.len());
                b.put_u8(ROOM);
                b.put_u8(class.code());
                // User IDs are at most 32 bytes.
                b.put_u8(u8::try_from(sender.len()).unwrap_or(u8::MAX));
                b.put_slice(sender.as_bytes());
                b.put_slice(frame);
            }
        }
        b.freeze()
    }

    /// Decodes a publication; `None` for bytes this node does not understand.
    pub(crate) fn decode(payload: &Bytes) -> Option<Envelope> {
        let (&kind, rest) = payload.split_first()?;
        match kind {
            STORED => {
                let seq = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
                Some(Envelope::Stored {
                    inbox_seq: seq,
                    frame: payload.slice(9..),
                })
            }
            LIVE => Some(Envelope::Live {
                priority: Priority::from_code(*rest.first()?)?,
                frame: payload.slice(2..),
            }),
            KICK => Some(Envelope::Kick {
                session_id: u64::from_be_bytes(rest.get(..8)?.try_into().ok()?),
                login_ms: i64::from_be_bytes(rest.get(8..16)?.try_into().ok()?),
            }),
            ROOM_MESSAGE => {
                let seq = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
                let len = usize::from(*rest.get(8)?);
                let sender = std::str::from_utf8(rest.get(9..9 + len)?).ok()?.to_owned();
                Some(Envelope::RoomMessage {
                    seq,
                    sender,
                    frame: payload.slice(10 + len..),
                })
            }
            ROOM => {
                let class = RoomClass::from_code(*rest.first()?)?;
                let len = usize::from(*rest.get(1)?);
                let sender = std::str::from_utf8(rest.get(2..2 + len)?).ok()?.to_owned();
                Some(Envelope::Room {
                    class,
                    sender,
                    frame: payload.slice(3 + len..),
                })
            }
            _ => None,
        }
    }
}

/// Publishes a room event (members, attributes) to every member of the room
/// on every node: a failure is logged, members catch up by asking.
pub(crate) async fn publish_room_event(
    broker: &dyn Broker,
    app_id: u32,
    room_id: &str,
    push: &Push,
) {
    let envelope = Envelope::Room {
        class: RoomClass::Stored,
        sender: String::new(),
        frame: Bytes::from(encode_push(push)),
    };
    if let Err(e) = broker
        .publish(&room_topic(app_id, room_id), envelope.encode())
        .await
    {
        tracing::warn!(error = %e, "room event publication failed");
    }
}

/// Publishes `roomAttributesUpdated` (Delete) for keys removed without a request
/// (their owner left).
pub(crate) async fn publish_attribute_deletes(
    broker: &dyn Broker,
    app_id: u32,
    room_id: &str,
    keys: &[String],
) {
    let info = RoomAttributesUpdateInfo {
        action: 1,
        room_attributes: keys.iter().map(|k| (k.clone(), String::new())).collect(),
    };
    publish_room_event(
        broker,
        app_id,
        room_id,
        &Push::RoomAttributesUpdated(RoomAttributesUpdated {
            room_id: room_id.to_owned(),
            infos: vec![info],
        }),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        for e in [
            Envelope::Stored {
                inbox_seq: 42,
                frame: Bytes::from_static(b"{\"v\":1}"),
            },
            Envelope::Live {
                priority: Priority::High,
                frame: Bytes::from_static(b"x"),
            },
            Envelope::Kick {
                session_id: 7,
                login_ms: 1_700_000_000_000,
            },
            Envelope::Room {
                class: RoomClass::Live(Priority::Medium),
                sender: "alice".into(),
                frame: Bytes::from_static(b"{}"),
            },
            Envelope::Room {
                class: RoomClass::Barrage,
                sender: String::new(),
                frame: Bytes::new(),
            },
            Envelope::RoomMessage {
                seq: 1 << 40,
                sender: "bob".into(),
                frame: Bytes::from_static(b"{\"push\":1}"),
            },
        ] {
            assert_eq!(Envelope::decode(&e.encode()), Some(e));
        }
        assert_eq!(Envelope::decode(&Bytes::from_static(b"")), None);
        assert_eq!(Envelope::decode(&Bytes::from_static(b"\x01abc")), None);
        assert_eq!(Envelope::decode(&Bytes::from_static(b"\x09")), None);
        assert_eq!(Envelope::decode(&Bytes::from_static(b"\x05\x00\x01")), None);
    }
}
