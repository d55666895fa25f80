//! The node's room machinery besides the sessions: the publication
//! [`Sequencer`] and the batcher of member events.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use confab_broker::Broker;
use confab_proto::frame::{Push, RoomMembersChanged, UserInfo, encode_push};

use crate::envelope::{Envelope, RoomClass, room_topic};
use crate::sequencer::{RoomKey, Sequencer};

#[derive(Debug, Default)]
struct Batch {
    joined: Vec<UserInfo>,
    left: Vec<UserInfo>,
}

/// Collects member joins and leaves per room and publishes them in batches, so a
/// join storm of N users costs N/batch frames per member, not N.
#[derive(Debug, Default)]
pub(crate) struct MemberEvents {
    pending: Mutex<HashMap<RoomKey, Batch>>,
}

/// How often member events are flushed.
pub(crate) const MEMBER_EVENT_INTERVAL: Duration = Duration::from_millis(50);
/// At most this many members per event frame.
const MEMBER_EVENT_MAX: usize = 200;

impl MemberEvents {
    pub(crate) fn joined(&self, app_id: u32, room_id: &str, user: UserInfo) {
        let mut p = self.pending.lock().expect("member events lock");
        let batch = p.entry((app_id, room_id.to_owned())).or_default();
        batch.left.retain(|u| u.user_id != user.user_id);
        batch.joined.push(user);
    }

    pub(crate) fn left(&self, app_id: u32, room_id: &str, user: UserInfo) {
        let mut p = self.pending.lock().expect("member events lock");
        let batch = p.entry((app_id, room_id.to_owned())).or_default();
        let before = batch.joined.len();
        batch.joined.retain(|u| u.user_id != user.user_id);
        if batch.joined.len() == before {
            batch.left.push(user);
        }
    }

    /// Publishes everything pending.
    pub(crate) async fn flush(&self, broker: &dyn Broker) {
        let batches: Vec<(RoomKey, Batch)> = {
            let mut p = self.pending.lock().expect("member events lock");
            p.drain().collect()
        };
        for ((app_id, room_id), batch) in batches {
            let topic = room_topic(app_id, &room_id);
            for (list, joined) in [(batch.joined, true), (batch.left, false)] {
                for chunk in list.chunks(MEMBER_EVENT_MAX) {
                    let data = RoomMembersChanged {
                        room_id: room_id.clone(),
                        member_list: chunk.to_vec(),
                    };
                    let push = if joined {
                        Push::RoomMemberJoined(data)
                    } else {
                        Push::RoomMemberLeft(data)
                    };
                    let envelope = Envelope::Room {
                        class: RoomClass::Stored,
                        sender: String::new(),
                        frame: Bytes::from(encode_push(&push)),
                    };
                    if let Err(e) = broker.publish(&topic, envelope.encode()).await {
                        tracing::warn!(error = %e, "member event publication failed");
                    }
                }
            }
        }
    }
}

/// The node's room machinery.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    pub(crate) sequencer: Sequencer,
    pub(crate) events: MemberEvents,
}
