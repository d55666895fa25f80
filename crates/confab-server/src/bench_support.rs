//! What `benches/fanout.rs` needs to drive the hub without sockets. Not an API:
//! hidden from the docs and free to change with the hub.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use confab_broker::Handler;
use confab_proto::frame::{
    ConversationType, Message, MessageType, Priority, Push, ReceiveRoomMessage, encode_push,
};

use crate::envelope::{Envelope, room_topic};
use crate::hub::{Hub, MergeSettings, SessionLink};
use confab_conn::outbox::Out;
use confab_conn::queue;

const APP: u32 = 1;
const ROOM: &str = "lobby";

/// A room of local members whose outbound queues are read by the benchmark, as
/// the members' writer tasks would read them.
pub struct FanoutFixture {
    hub: Hub,
    outboxes: Vec<queue::Receiver<Out>>,
    _events: Vec<queue::Receiver<crate::hub::Event>>,
    topic: String,
    seq: u64,
}

impl std::fmt::Debug for FanoutFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutFixture")
            .field("members", &self.outboxes.len())
            .finish_non_exhaustive()
    }
}

impl FanoutFixture {
    /// A room of `members` sessions. With `merge`, the room is always busy and
    /// holds messages for a window longer than any benchmark iteration (send
    /// what is held with [`FanoutFixture::flush`], inside a tokio runtime).
    #[must_use]
    pub fn new(members: usize, merge: bool) -> FanoutFixture {
        let settings = MergeSettings {
            window: if merge {
                Duration::from_secs(3600)
            } else {
                Duration::ZERO
            },
            above_per_s: 1,
            max_push_bytes: 64 * 1024,
        };
        let hub = Hub::new(
            HashMap::from([(APP, settings)]),
            crate::hub::FillStore::default(),
        );
        let mut outboxes = Vec::with_capacity(members);
        let mut events = Vec::with_capacity(members);
        for id in 0..members {
            let (link, out, events_rx) = SessionLink::detached(id as u64, &format!("user{id}"));
            let _ = hub.join_room(APP, ROOM, link, 0, false);
            outboxes.push(out);
            events.push(events_rx);
        }
        FanoutFixture {
            hub,
            outboxes,
            _events: events,
            topic: room_topic(APP, ROOM),
            seq: 0,
        }
    }

    /// The broker's publication of one stored room message with a `body_len`-byte
    /// body, encoded once as the sending session does.
    #[must_use]
    pub fn publication(&mut self, body_len: usize) -> Bytes {
        self.seq += 1;
        let push = Push::ReceiveRoomMessage(ReceiveRoomMessage {
            from_room_id: ROOM.into(),
            message_list: vec![Message {
                kind: MessageType::Text,
                message: "x".repeat(body_len),
                message_id: self.seq,
                local_message_id: self.seq,
                sender_user_id: "sender".into(),
                timestamp: 1_764_120_000_000,
                conversation_id: ROOM.into(),
                conversation_type: ConversationType::Room,
                conversation_seq: self.seq,
                inbox_seq: None,
                priority: Priority::High,
            }],
        });
        Envelope::RoomMessage {
            seq: self.seq,
            sender: "sender".into(),
            frame: Bytes::from(encode_push(&push)),
        }
        .encode()
    }

    /// Hands a publication to the hub, as the broker does.
    pub fn publish(&self, publication: &Bytes) {
        self.hub.on_publication(&self.topic, publication);
    }

    /// Sends what the room holds (a merged push per member).
    pub fn flush(&self) {
        self.hub.flush_room(APP, ROOM);
    }

    /// Takes every queued frame off every member's queue, as their writers
    /// would; the number of frames.
    pub fn drain(&mut self) -> usize {
        let mut frames = 0;
        for out in &mut self.outboxes {
            while let Some(item) = out.try_recv() {
                if let Out::Text(text) = item {
                    std::hint::black_box(text.len());
                    frames += 1;
                }
            }
        }
        frames
    }
}
