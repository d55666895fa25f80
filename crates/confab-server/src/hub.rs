//! The node's registry of local sessions and the [`Handler`] that hands broker
//! publications to them.
//!
//! Publications are [`Envelope`]s encoded to bytes; frames inside are already
//! encoded JSON, so a message is serialized once on the sending node however many
//! sessions receive it.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::{BufMut, Bytes, BytesMut};
use confab_broker::Handler;
use confab_proto::frame::{DisconnectReason, Priority};
use tokio::sync::{mpsc, watch};

/// The topic of one user of one app. Every session of the user listens to it.
pub(crate) fn user_topic(app_id: u32, user_id: &str) -> String {
    format!("u:{app_id}:{user_id}")
}

/// What travels over the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Envelope {
    /// A stored peer message at `inbox_seq` of the receiver; `frame` is the encoded push.
    Stored { inbox_seq: u64, frame: Bytes },
    /// An unstored push with its priority.
    Live { priority: Priority, frame: Bytes },
    /// A new session of the user started; every other session of the user must go.
    Kick { session_id: u64 },
}

const STORED: u8 = 1;
const LIVE: u8 = 2;
const KICK: u8 = 3;

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
            Envelope::Kick { session_id } => {
                b = BytesMut::with_capacity(9);
                b.put_u8(KICK);
                b.put_u64(*session_id);
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
            }),
            _ => None,
        }
    }
}

/// A local session as the hub sees it.
#[derive(Debug, Clone)]
pub(crate) struct SessionLink {
    /// Unique per node run (random start, incremented).
    pub(crate) id: u64,
    /// Publications for the session task, bounded.
    pub(crate) events: mpsc::Sender<Envelope>,
    /// Set to make the session disconnect (used when `events` is full).
    pub(crate) kill: watch::Sender<Option<DisconnectReason>>,
}

/// Local sessions by (app, user).
#[derive(Debug, Default)]
pub(crate) struct Hub {
    sessions: Mutex<HashMap<(u32, String), Vec<SessionLink>>>,
}

impl Hub {
    pub(crate) fn insert(&self, app_id: u32, user_id: &str, link: SessionLink) {
        let mut map = self.sessions.lock().expect("hub lock");
        map.entry((app_id, user_id.to_owned()))
            .or_default()
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

    /// Number of logged-in local sessions.
    pub(crate) fn len(&self) -> usize {
        self.sessions
            .lock()
            .expect("hub lock")
            .values()
            .map(Vec::len)
            .sum()
    }

    fn parse_topic(topic: &str) -> Option<(u32, &str)> {
        let rest = topic.strip_prefix("u:")?;
        let (app, user) = rest.split_once(':')?;
        Some((app.parse().ok()?, user))
    }
}

impl Handler for Hub {
    fn on_publication(&self, topic: &str, payload: &Bytes) {
        let Some((app_id, user_id)) = Hub::parse_topic(topic) else {
            return;
        };
        let Some(envelope) = Envelope::decode(payload) else {
            tracing::warn!(topic, "undecodable publication dropped");
            return;
        };
        let links = {
            let map = self.sessions.lock().expect("hub lock");
            match map.get(&(app_id, user_id.to_owned())) {
                Some(list) => list.clone(),
                None => return,
            }
        };
        for link in links {
            if link.events.try_send(envelope.clone()).is_err() {
                // The session cannot keep up (or is gone): never grow memory.
                let _ = link.kill.send(Some(DisconnectReason::SlowConsumer));
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
            Envelope::Kick { session_id: 7 },
        ] {
            assert_eq!(Envelope::decode(&e.encode()), Some(e));
        }
        assert_eq!(Envelope::decode(&Bytes::from_static(b"")), None);
        assert_eq!(Envelope::decode(&Bytes::from_static(b"\x01abc")), None);
        assert_eq!(Envelope::decode(&Bytes::from_static(b"\x09")), None);
    }

    #[test]
    fn topics_parse_with_colons_in_user_ids() {
        assert_eq!(Hub::parse_topic(&user_topic(5, "a:b")), Some((5, "a:b")));
        assert_eq!(Hub::parse_topic("r:5:x"), None);
    }
}
