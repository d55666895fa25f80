//! The node's registry of local sessions and the [`Handler`] that hands broker
//! publications to them.
//!
//! Publications are [`Envelope`]s encoded to bytes; frames inside are already
//! encoded JSON, so a message is serialized once on the sending node however many
//! sessions receive it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use bytes::{BufMut, Bytes, BytesMut};
use confab_broker::Handler;
use confab_proto::frame::{DisconnectReason, Priority};

use crate::outbox::{Class, Outbox};
use crate::queue;

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
            RoomClass::Stored => Class::Stored,
            RoomClass::Live(p) => Class::Live(p),
            RoomClass::Barrage => Class::Barrage,
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
    /// A frame for every local member of a room except `sender` (empty: everyone).
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

/// What a session task receives from the rest of the node.
#[derive(Debug)]
pub(crate) enum Event {
    /// A publication on the user's topic.
    Envelope(Envelope),
    /// Disconnect now, for this reason (queued first, whatever the bound).
    Kill(DisconnectReason),
}

/// A local session as the hub sees it.
#[derive(Debug, Clone)]
pub(crate) struct SessionLink {
    /// Unique per node run (random start, incremented).
    pub(crate) id: u64,
    /// Publications for the session task, bounded; a kill overtakes them.
    pub(crate) events: queue::Sender<Event>,
    /// The session's outbound queue, for room frames delivered directly.
    pub(crate) outbox: Outbox,
    /// The session's user, so a sender does not receive its own room messages.
    pub(crate) user_id: String,
}

impl SessionLink {
    /// Makes the session disconnect with `reason`.
    pub(crate) fn kill(&self, reason: DisconnectReason) {
        let _ = self.events.push_urgent(Event::Kill(reason));
    }
}

/// A room's local members, shared by the deliveries in flight.
type RoomLinks = Arc<Vec<Arc<SessionLink>>>;

/// Local sessions by (app, user), and by (app, room) for the rooms they are in.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    sessions: Mutex<HashMap<(u32, String), Vec<SessionLink>>>,
    /// Copy-on-write lists: a delivery takes the list's `Arc` and lets go of the
    /// lock at once; a join or leave while deliveries hold it copies the list.
    rooms: Mutex<HashMap<(u32, String), RoomLinks>>,
}

impl Hub {
    pub(crate) fn insert(&self, app_id: u32, user_id: &str, link: SessionLink) {
        let mut map = self.sessions.lock().expect("hub lock");
        // Almost every user has one session: room for exactly one.
        map.entry((app_id, user_id.to_owned()))
            .or_insert_with(|| Vec::with_capacity(1))
            .push(link);
    }

    pub(crate) fn remove(&self, app_id: u32, user_id: &str, session_id: u64) {
        let mut map = self.sessions.lock().expect("hub lock");
        let key = (app_id, user_id.to_owned());
        if let Some(list) = map.get_mut(&key) {
            list.retain(|l| l.id != session_id);
            if list.is_empty() {
                map.remove(&key);
            }
        }
    }

    /// Adds a session to a room's local members (idempotent per session).
    pub(crate) fn join_room(&self, app_id: u32, room_id: &str, link: SessionLink) {
        let mut map = self.rooms.lock().expect("hub lock");
        let list = map.entry((app_id, room_id.to_owned())).or_default();
        if !list.iter().any(|l| l.id == link.id) {
            Arc::make_mut(list).push(Arc::new(link));
        }
    }

    /// Removes a session from a room's local members; true if it was there.
    pub(crate) fn leave_room(&self, app_id: u32, room_id: &str, session_id: u64) -> bool {
        let mut map = self.rooms.lock().expect("hub lock");
        let key = (app_id, room_id.to_owned());
        let Some(list) = map.get_mut(&key) else {
            return false;
        };
        // Check first: `make_mut` copies a list that a delivery holds.
        if !list.iter().any(|l| l.id == session_id) {
            return false;
        }
        Arc::make_mut(list).retain(|l| l.id != session_id);
        if list.is_empty() {
            map.remove(&key);
        }
        true
    }

    fn deliver_room(
        &self,
        app_id: u32,
        room_id: &str,
        class: RoomClass,
        sender: &str,
        frame: &Bytes,
    ) {
        let links = {
            let map = self.rooms.lock().expect("hub lock");
            match map.get(&(app_id, room_id.to_owned())) {
                Some(list) => list.clone(),
                None => return,
            }
        };
        let Ok(text) = Utf8Bytes::try_from(frame.clone()) else {
            return;
        };
        for link in links.iter() {
            if !sender.is_empty() && link.user_id == sender {
                continue;
            }
            if link
                .outbox
                .push(text.clone(), class.outbox_class())
                .is_err()
            {
                link.kill(DisconnectReason::SlowConsumer);
            }
        }
    }

    /// Whether the user has a local session other than `session_id`.
    pub(crate) fn has_other_session(&self, app_id: u32, user_id: &str, session_id: u64) -> bool {
        self.sessions
            .lock()
            .expect("hub lock")
            .get(&(app_id, user_id.to_owned()))
            .is_some_and(|list| list.iter().any(|l| l.id != session_id))
    }

    /// Number of logged-in local sessions.
    pub(crate) fn len(&self) -> usize {
        self.sessions
            .lock()
            .expect("hub lock")
            .values()
            .map(Vec::len)
            .sum()
    }

    /// `(kind, app, id)` of a `u:` or `r:` topic.
    fn parse_topic(topic: &str) -> Option<(char, u32, &str)> {
        let (kind, rest) = topic.split_once(':')?;
        let kind = match kind {
            "u" => 'u',
            "r" => 'r',
            _ => return None,
        };
        let (app, id) = rest.split_once(':')?;
        Some((kind, app.parse().ok()?, id))
    }
}

impl Handler for Hub {
    fn on_publication(&self, topic: &str, payload: &Bytes) {
        let Some((kind, app_id, id)) = Hub::parse_topic(topic) else {
            return;
        };
        let Some(envelope) = Envelope::decode(payload) else {
            tracing::warn!(topic, "undecodable publication dropped");
            return;
        };
        if kind == 'r' {
            if let Envelope::Room {
                class,
                sender,
                frame,
            } = &envelope
            {
                self.deliver_room(app_id, id, *class, sender, frame);
            }
            return;
        }
        let user_id = id;
        let links = {
            let map = self.sessions.lock().expect("hub lock");
            match map.get(&(app_id, user_id.to_owned())) {
                Some(list) => list.clone(),
                None => return,
            }
        };
        for link in links {
            if link
                .events
                .try_push(Event::Envelope(envelope.clone()))
                .is_err()
            {
                // The session cannot keep up (or is gone): never grow memory.
                link.kill(DisconnectReason::SlowConsumer);
            }
        }
    }
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
        ] {
            assert_eq!(Envelope::decode(&e.encode()), Some(e));
        }
        assert_eq!(Envelope::decode(&Bytes::from_static(b"")), None);
        assert_eq!(Envelope::decode(&Bytes::from_static(b"\x01abc")), None);
        assert_eq!(Envelope::decode(&Bytes::from_static(b"\x09")), None);
    }

    #[test]
    fn topics_parse_with_colons_in_user_ids() {
        assert_eq!(
            Hub::parse_topic(&user_topic(5, "a:b")),
            Some(('u', 5, "a:b"))
        );
        assert_eq!(
            Hub::parse_topic(&room_topic(5, "x:y")),
            Some(('r', 5, "x:y"))
        );
        assert_eq!(Hub::parse_topic("q:5:x"), None);
    }
}
