//! The node's registry of local sessions and the [`Handler`] that hands broker
//! publications to them.
//!
//! Publications are [`Envelope`]s encoded to bytes (see `envelope`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use confab_broker::Handler;
use confab_conn::ws::Utf8Bytes;
use confab_proto::frame::{DisconnectReason, RoomPushMerger};
use tokio::time::Instant;

use confab_conn::outbox::{Out, Outbox};

use confab_store::Store;

use crate::envelope::{Envelope, RoomClass};
use crate::seq_order::{self, SeqOrder};
use crate::wire::room_message_frame;
use confab_conn::queue;

/// What a session task receives from the rest of the node.
#[derive(Debug)]
pub(crate) enum Event {
    /// A publication on the user's topic.
    Envelope(Envelope),
    /// Disconnect now, for this reason (queued first, whatever the bound).
    Kill(DisconnectReason),
    /// The broker's link to the other nodes is back after an outage: deliver
    /// what was stored meanwhile (publications of it may have been lost). The
    /// number is the attempt: a catch-up that could not read the store (many
    /// sessions catching up at once) is tried again, a few times.
    CatchUp(u8),
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

/// When a busy room's messages are merged into fewer frames (see [`Hub`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct MergeSettings {
    /// The longest a message waits to be merged; zero: never merge.
    pub(crate) window: Duration,
    /// Merge only while the room delivers at least this many frames per second
    /// on this node (messages × local members).
    pub(crate) above_per_s: u64,
    /// At most this many bytes of message JSON in one merged push (one more
    /// message may pass it): keep it well under the outbound queue's byte bound.
    pub(crate) max_push_bytes: usize,
}

impl MergeSettings {
    /// Settings from an app's limits.
    pub(crate) fn from_limits(limits: &crate::config::Limits) -> MergeSettings {
        MergeSettings {
            window: Duration::from_millis(limits.room_merge_window_ms),
            above_per_s: limits.room_merge_above,
            max_push_bytes: MERGE_MAX_BYTES.min(limits.outbound_queue_bytes / 4),
        }
    }
}

/// How often a room's delivery rate is measured.
const METER_PERIOD: Duration = Duration::from_millis(100);
/// At most this many messages in one merged push …
const MERGE_MAX_MESSAGES: usize = 100;
/// … and at most this many bytes of their JSON (one more message may pass it;
/// less with a small outbound queue: [`MergeSettings::max_push_bytes`]).
const MERGE_MAX_BYTES: usize = 64 * 1024;
/// A room holding this many frames sends them at once: held memory is bounded
/// whatever the rate.
const HELD_MAX: usize = 1024;

type RoomKey = (u32, String);

/// Local sessions by (app, user), and by (app, room) for the rooms they are in.
///
/// Rooms deliver each publication to their local members at once, except in a
/// busy room: while a room delivers at least [`MergeSettings::above_per_s`]
/// frames per second, a message that comes within [`MergeSettings::window`] of
/// the room's previous delivery is held and merged with the others of that window
/// into one `receiveRoomMessage` push (the protocol's `messageList`), sent at the
/// window's end. A member then costs one frame and one socket write per window
/// instead of one per message.
///
/// Invariants: a room's frames reach every member in publication order (held
/// messages and other room frames wait together); a message is sent to the
/// members of the room when it was published: held messages are sent before a
/// member joins or leaves; at most [`HELD_MAX`] frames are held per room.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    sessions: Mutex<HashMap<(u32, String), Vec<SessionLink>>>,
    rooms: Mutex<HashMap<RoomKey, Arc<Mutex<Room>>>>,
    /// Per app; an app not listed never merges.
    merge: HashMap<u32, MergeSettings>,
    /// What busy rooms merged (for `/metrics`).
    merged: Arc<MergeCounters>,
    /// Where gaps in a room's messages are filled from.
    store: FillStore,
}

/// The store rooms fill gaps from (none: a bench's hub, which has no gaps).
#[derive(Default, Clone)]
pub(crate) struct FillStore(pub(crate) Option<Arc<dyn Store>>);

impl std::fmt::Debug for FillStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "FillStore"
        } else {
            "NoFillStore"
        })
    }
}

/// Room messages read per fill query.
const FILL_PAGE: usize = 256;
/// How long a fill waits after the store failed before it reads again.
const FILL_RETRY: Duration = Duration::from_secs(1);
/// How many times a fill reads a failing store before it gives up (the next
/// gap or reconnect starts another).
const FILL_TRIES: u32 = 5;

/// Ends a fill that cannot read the store: what waits goes out in seq order
/// (see `SeqOrder::fill_failed`).
fn give_up_fill(room: &Arc<Mutex<Room>>) {
    let mut guard = lock(room);
    let ready = guard.order.fill_failed();
    guard.deliver_ready(room, ready);
}

/// Fills `room`'s gap from the store: after `wait` (for the lower seqs still
/// in flight from other nodes), reads what the store holds after the room's
/// last seq and hands it on in order, with what waited behind it.
async fn fill_room(
    store: Arc<dyn Store>,
    app_id: u32,
    room_id: String,
    room: Arc<Mutex<Room>>,
    wait: Duration,
    forced: bool,
) {
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    if !lock(&room).order.still_needs_fill(forced) {
        return;
    }
    let mut failures = 0;
    loop {
        let (after, first_pending) = {
            let room = lock(&room);
            if room.removed {
                return;
            }
            (room.order.last(), room.order.first_pending())
        };
        let page = match store
            .room_messages_after(app_id, &room_id, after, FILL_PAGE)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                failures += 1;
                tracing::warn!(app = app_id, room = %room_id, error = %e, "filling a room's gap from the store failed");
                if failures >= FILL_TRIES {
                    give_up_fill(&room);
                    return;
                }
                tokio::time::sleep(FILL_RETRY).await;
                continue;
            }
        };
        let complete = page.len() < FILL_PAGE;
        let stored = page
            .into_iter()
            .map(|m| {
                let (seq, sender) = (m.seq, m.sender.clone());
                (seq, sender, Utf8Bytes::from(room_message_frame(m)))
            })
            .collect();
        let again = {
            let mut guard = lock(&room);
            let (ready, again) = guard.order.filled(stored, complete, first_pending);
            guard.deliver_ready(&room, ready);
            again
        };
        match again {
            None => return,
            Some(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
            Some(_) => {}
        }
    }
}

/// How much merging busy rooms did on this node.
#[derive(Debug, Default)]
pub(crate) struct MergeCounters {
    /// Merged pushes built (each sent to every member of its room).
    pub(crate) pushes: AtomicU64,
    /// Messages that went out in merged pushes.
    pub(crate) messages: AtomicU64,
}

/// Locks a room; a panic while it was locked (it only ever queues frames) leaves
/// its state usable.
fn lock(room: &Mutex<Room>) -> std::sync::MutexGuard<'_, Room> {
    room.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A room's local members and the frames held for them.
#[derive(Debug)]
struct Room {
    links: Vec<SessionLink>,
    settings: MergeSettings,
    merger: RoomPushMerger,
    meter: RateMeter,
    /// When the room last sent to its members. While frames are held it does not
    /// change: they are due one window after it.
    last_sent: Option<Instant>,
    /// Frames waiting for the end of the window, oldest first.
    held: Vec<Held>,
    held_frames: usize,
    /// Tells a scheduled flush whether the frames it was for are still held.
    flush_gen: u64,
    /// Taken out of the hub's map (no members left): joins make a new room.
    removed: bool,
    counters: Arc<MergeCounters>,
    /// Its stored messages' seq order on this node (see `seq_order`).
    order: SeqOrder,
}

/// A frame held in a busy room.
#[derive(Debug)]
enum Held {
    /// Room messages of one class, sent as one push.
    Messages {
        class: RoomClass,
        parts: Vec<Part>,
        bytes: usize,
    },
    /// Any other room frame, sent as it is.
    Frame {
        class: RoomClass,
        sender: String,
        frame: Utf8Bytes,
    },
}

/// One held `receiveRoomMessage` push.
#[derive(Debug)]
struct Part {
    sender: String,
    frame: Utf8Bytes,
    /// The span of its message list in `frame`.
    list: std::ops::Range<usize>,
}

impl Part {
    fn list(&self) -> &[u8] {
        &self.frame.as_bytes()[self.list.clone()]
    }
}

/// Frames per second a room delivers, measured over [`METER_PERIOD`].
#[derive(Debug, Default)]
struct RateMeter {
    start: Option<Instant>,
    count: u64,
    /// The last full period reached the bound.
    busy: bool,
}

impl RateMeter {
    /// Counts `n` frames at `now`; whether the room delivers at least `bound`
    /// frames per second (over the last period, or already in this one).
    fn add(&mut self, now: Instant, n: u64, bound: u64) -> bool {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= METER_PERIOD {
            let per_s = u128::from(self.count) * 1_000_000 / elapsed.as_micros().max(1);
            self.busy = per_s >= u128::from(bound);
            self.start = Some(now);
            self.count = 0;
        }
        self.count += n;
        self.busy || u128::from(self.count) * 1000 >= u128::from(bound) * METER_PERIOD.as_millis()
    }
}

impl Room {
    fn new(
        room_id: &str,
        settings: MergeSettings,
        counters: Arc<MergeCounters>,
        last_seq: u64,
    ) -> Room {
        Room {
            links: Vec::new(),
            settings,
            merger: RoomPushMerger::new(room_id),
            meter: RateMeter::default(),
            last_sent: None,
            held: Vec::new(),
            held_frames: 0,
            flush_gen: 0,
            removed: false,
            counters,
            order: SeqOrder::new(last_seq),
        }
    }

    /// Delivers stored messages that are now in seq order (see `seq_order`).
    fn deliver_ready(&mut self, room: &Arc<Mutex<Room>>, ready: Vec<seq_order::Ready>) {
        for (sender, frame) in ready {
            self.deliver(room, RoomClass::Stored, sender, frame);
        }
    }

    /// Delivers one publication now, or holds it to merge (see [`Hub`]).
    fn deliver(
        &mut self,
        room: &Arc<Mutex<Room>>,
        class: RoomClass,
        sender: String,
        frame: Utf8Bytes,
    ) {
        let now = Instant::now();
        let members = u64::try_from(self.links.len()).unwrap_or(u64::MAX);
        let busy = self.meter.add(now, members, self.settings.above_per_s);
        let window = self.settings.window;
        let overdue = self.last_sent.is_some_and(|t| now >= t + window + window);
        if !self.held.is_empty() && overdue {
            // The flush task did not run (a runtime shutting down): no frame
            // stays held longer than two windows while the room is used.
            self.flush();
        }
        if self.held.is_empty() {
            let recent = self.last_sent.is_some_and(|t| now < t + window);
            let runtime = tokio::runtime::Handle::try_current();
            let (true, true, false, Ok(runtime)) = (busy, recent, window.is_zero(), runtime) else {
                self.send(class, &sender, &frame);
                self.last_sent = Some(now);
                return;
            };
            let due = self.last_sent.map_or(now, |t| t + window);
            let generation = self.flush_gen;
            let room = Arc::clone(room);
            runtime.spawn(async move {
                tokio::time::sleep_until(due).await;
                let mut room = lock(&room);
                if room.flush_gen == generation {
                    room.flush();
                }
            });
        }
        self.hold(class, sender, frame);
        if self.held_frames >= HELD_MAX {
            self.flush();
        }
    }

    fn hold(&mut self, class: RoomClass, sender: String, frame: Utf8Bytes) {
        self.held_frames += 1;
        let Some(list) = self.merger.messages(frame.as_bytes()) else {
            self.held.push(Held::Frame {
                class,
                sender,
                frame,
            });
            return;
        };
        let offset = list.as_ptr() as usize - frame.as_bytes().as_ptr() as usize;
        let part = Part {
            list: offset..offset + list.len(),
            sender,
            frame,
        };
        if let Some(Held::Messages {
            class: last,
            parts,
            bytes,
        }) = self.held.last_mut()
        {
            if *last == class
                && parts.len() < MERGE_MAX_MESSAGES
                && *bytes < self.settings.max_push_bytes
            {
                *bytes += part.list.len();
                parts.push(part);
                return;
            }
        }
        self.held.push(Held::Messages {
            class,
            bytes: part.list.len(),
            parts: vec![part],
        });
    }

    /// Sends everything held, in order.
    fn flush(&mut self) {
        self.flush_gen += 1;
        self.held_frames = 0;
        if self.held.is_empty() {
            return;
        }
        self.last_sent = Some(Instant::now());
        for held in std::mem::take(&mut self.held) {
            match held {
                Held::Frame {
                    class,
                    sender,
                    frame,
                } => self.send(class, &sender, &frame),
                Held::Messages { class, parts, .. } => self.send_merged(class, &parts),
            }
        }
    }

    /// Sends `frame` to every member but the sender's sessions.
    fn send(&self, class: RoomClass, sender: &str, frame: &Utf8Bytes) {
        for link in &self.links {
            if !sender.is_empty() && link.user_id == sender {
                continue;
            }
            link.push(frame.clone(), class);
        }
    }

    /// Sends held messages as one push; a sender's own sessions get the push of
    /// the others' messages, if any.
    fn send_merged(&self, class: RoomClass, parts: &[Part]) {
        if let [part] = parts {
            self.send(class, &part.sender, &part.frame);
            return;
        }
        let merged = Utf8Bytes::from(self.merger.merge(parts.iter().map(Part::list)));
        self.counters.pushes.fetch_add(1, Ordering::Relaxed);
        self.counters
            .messages
            .fetch_add(parts.len() as u64, Ordering::Relaxed);
        let mut senders: Vec<&str> = Vec::new();
        for p in parts {
            if !p.sender.is_empty() && !senders.contains(&p.sender.as_str()) {
                senders.push(&p.sender);
            }
        }
        let mut own: HashMap<&str, Option<Utf8Bytes>> = HashMap::new();
        for link in &self.links {
            let user = link.user_id.as_str();
            if !senders.contains(&user) {
                link.push(merged.clone(), class);
                continue;
            }
            let frame = own.entry(user).or_insert_with(|| {
                let others: Vec<&[u8]> = parts
                    .iter()
                    .filter(|p| p.sender != user)
                    .map(Part::list)
                    .collect();
                (!others.is_empty()).then(|| Utf8Bytes::from(self.merger.merge(others)))
            });
            if let Some(frame) = frame {
                link.push(frame.clone(), class);
            }
        }
    }
}

impl SessionLink {
    /// A link with no session task and no writer behind it: the caller (a test
    /// or benchmark) reads the outbound queue and the event queue itself.
    pub(crate) fn detached(
        id: u64,
        user_id: &str,
    ) -> (SessionLink, queue::Receiver<Out>, queue::Receiver<Event>) {
        let (events, events_rx) = queue::bounded(64);
        let (outbox, out) = Outbox::detached(1024, 1 << 20);
        let link = SessionLink {
            id,
            events,
            outbox,
            user_id: user_id.to_owned(),
        };
        (link, out, events_rx)
    }

    /// Queues a room frame; a session that cannot take it is disconnected as slow.
    fn push(&self, frame: Utf8Bytes, class: RoomClass) {
        if self.outbox.push(frame, class.outbox_class()).is_err() {
            self.kill(DisconnectReason::SlowConsumer);
        }
    }
}

impl Hub {
    /// A hub whose rooms merge messages by each app's settings.
    pub(crate) fn new(merge: HashMap<u32, MergeSettings>, store: FillStore) -> Hub {
        Hub {
            merge,
            store,
            ..Hub::default()
        }
    }

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

    /// The room's state, made if the room has no local members yet (its
    /// members then have every stored message up to `last_seq`).
    fn room(&self, app_id: u32, room_id: &str, last_seq: u64) -> Arc<Mutex<Room>> {
        let mut map = self.rooms.lock().expect("hub lock");
        let new_room = || {
            let settings = self.merge.get(&app_id).copied().unwrap_or_default();
            Arc::new(Mutex::new(Room::new(
                room_id,
                settings,
                self.merged.clone(),
                last_seq,
            )))
        };
        let entry = map
            .entry((app_id, room_id.to_owned()))
            .or_insert_with(new_room);
        // A room being taken out of the map (its last member left) is replaced.
        // Not waiting here for a room that is sending: `join_room` checks again.
        let removed = match entry.try_lock() {
            Ok(room) => room.removed,
            Err(std::sync::TryLockError::Poisoned(room)) => room.into_inner().removed,
            Err(std::sync::TryLockError::WouldBlock) => false,
        };
        if removed {
            *entry = new_room();
        }
        Arc::clone(entry)
    }

    /// The room's state if it has local members.
    fn existing_room(&self, app_id: u32, room_id: &str) -> Option<Arc<Mutex<Room>>> {
        self.rooms
            .lock()
            .expect("hub lock")
            .get(&(app_id, room_id.to_owned()))
            .cloned()
    }

    /// Adds a session to a room's local members (idempotent per session), whose
    /// catch-up reached `last_seq`. What the room holds is sent first: it was
    /// published before the join. With `must_follow`, a room already further on
    /// this node (its last seq handed on beyond `last_seq`) is not joined:
    /// `Err(its last seq)`, to catch up to first, so nothing in between is
    /// missed.
    pub(crate) fn join_room(
        &self,
        app_id: u32,
        room_id: &str,
        link: SessionLink,
        last_seq: u64,
        must_follow: bool,
    ) -> Result<(), u64> {
        // The map's lock is not held while the room sends (that may take a while).
        loop {
            let room = self.room(app_id, room_id, last_seq);
            let mut room = lock(&room);
            if room.removed {
                continue;
            }
            if must_follow && room.order.last() > last_seq {
                return Err(room.order.last());
            }
            if !room.links.iter().any(|l| l.id == link.id) {
                room.flush();
                room.links.push(link);
            }
            return Ok(());
        }
    }

    /// Removes a session from a room's local members; true if it was there. What
    /// the room holds is sent first, to the leaving session too.
    pub(crate) fn leave_room(&self, app_id: u32, room_id: &str, session_id: u64) -> bool {
        let Some(entry) = self.existing_room(app_id, room_id) else {
            return false;
        };
        let mut room = lock(&entry);
        if room.removed || !room.links.iter().any(|l| l.id == session_id) {
            return false;
        }
        room.flush();
        room.links.retain(|l| l.id != session_id);
        if !room.links.is_empty() {
            return true;
        }
        room.removed = true;
        drop(room);
        let mut map = self.rooms.lock().expect("hub lock");
        let key = (app_id, room_id.to_owned());
        if map.get(&key).is_some_and(|r| Arc::ptr_eq(r, &entry)) {
            map.remove(&key);
        }
        true
    }

    /// What busy rooms merged so far.
    pub(crate) fn merge_counters(&self) -> &MergeCounters {
        &self.merged
    }

    /// Sends what the room holds now (before a member's catch-up, so nothing
    /// held from before it arrives after it).
    pub(crate) fn flush_room(&self, app_id: u32, room_id: &str) {
        if let Some(room) = self.existing_room(app_id, room_id) {
            lock(&room).flush();
        }
    }

    /// The room a publication is for, if it has local members, and its frame
    /// as text (`None` for either: the publication reaches no one here).
    fn room_for(
        &self,
        app_id: u32,
        room_id: &str,
        frame: Bytes,
    ) -> Option<(Arc<Mutex<Room>>, Utf8Bytes)> {
        let room = self.existing_room(app_id, room_id)?;
        let frame = Utf8Bytes::try_from(frame).ok()?;
        Some((room, frame))
    }

    fn deliver_room(
        &self,
        app_id: u32,
        room_id: &str,
        class: RoomClass,
        sender: String,
        frame: Bytes,
    ) {
        if let Some((room, frame)) = self.room_for(app_id, room_id, frame) {
            lock(&room).deliver(&room, class, sender, frame);
        }
    }

    /// A stored room message from the broker: to the members in seq order,
    /// a gap filled from the store (see `seq_order`).
    fn deliver_room_message(
        &self,
        app_id: u32,
        room_id: &str,
        seq: u64,
        sender: String,
        frame: Bytes,
    ) {
        let Some((room, frame)) = self.room_for(app_id, room_id, frame) else {
            return;
        };
        let mut guard = lock(&room);
        let arrival = guard.order.arrive(seq, sender, frame);
        guard.deliver_ready(&room, arrival.ready);
        drop(guard);
        if arrival.start_fill {
            self.spawn_fill(app_id, room_id, room, seq_order::GAP_WAIT, false);
        }
    }

    /// Makes sure the room's local members have what the store holds (after
    /// a member's first subscription to it on this node, whose publications
    /// before that never came here).
    pub(crate) fn check_room(&self, app_id: u32, room_id: &str) {
        if let Some(room) = self.existing_room(app_id, room_id) {
            if lock(&room).order.request_fill() {
                self.spawn_fill(app_id, room_id, room, Duration::ZERO, true);
            }
        }
    }

    /// Runs a fill of `room` from the store on its own task (none without a
    /// store or a runtime: a bench's hub).
    fn spawn_fill(
        &self,
        app_id: u32,
        room_id: &str,
        room: Arc<Mutex<Room>>,
        wait: Duration,
        forced: bool,
    ) {
        let (Some(store), Ok(runtime)) =
            (self.store.0.clone(), tokio::runtime::Handle::try_current())
        else {
            give_up_fill(&room);
            return;
        };
        runtime.spawn(fill_room(
            store,
            app_id,
            room_id.to_owned(),
            room,
            wait,
            forced,
        ));
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
            match envelope {
                Envelope::Room {
                    class,
                    sender,
                    frame,
                } => self.deliver_room(app_id, id, class, sender, frame),
                Envelope::RoomMessage { seq, sender, frame } => {
                    self.deliver_room_message(app_id, id, seq, sender, frame);
                }
                _ => {}
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

    fn on_reconnected(&self) {
        let links: Vec<SessionLink> = {
            let map = self.sessions.lock().expect("hub lock");
            map.values().flatten().cloned().collect()
        };
        for link in links {
            // A full queue already holds publications that will show any gap.
            let _ = link.events.try_push(Event::CatchUp(0));
        }
        let rooms: Vec<RoomKey> = self
            .rooms
            .lock()
            .expect("hub lock")
            .keys()
            .cloned()
            .collect();
        for (app_id, room_id) in rooms {
            self.check_room(app_id, &room_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{room_topic, user_topic};
    use confab_proto::frame::Priority;

    use confab_proto::frame::{
        ConversationType, Message, MessageType, Push, ReceiveRoomMessage, RoomMembersChanged,
        encode_push,
    };

    const APP: u32 = 7;
    const ROOM: &str = "lobby";

    fn hub(window_ms: u64, above_per_s: u64) -> Hub {
        let settings = MergeSettings {
            window: Duration::from_millis(window_ms),
            above_per_s,
            max_push_bytes: MERGE_MAX_BYTES,
        };
        Hub::new(HashMap::from([(APP, settings)]), FillStore::default())
    }

    fn hub_with(settings: MergeSettings) -> Hub {
        Hub::new(HashMap::from([(APP, settings)]), FillStore::default())
    }

    /// A member of the room, as its session's queues see it.
    struct Member {
        out: queue::Receiver<Out>,
        events: queue::Receiver<Event>,
    }

    fn member(hub: &Hub, id: u64, user: &str) -> Member {
        let (link, out, events) = SessionLink::detached(id, user);
        hub.join_room(APP, ROOM, link, 0, false).expect("joined");
        Member { out, events }
    }

    /// The frames queued for `m` since the last call; it was never disconnected.
    fn texts(m: &mut Member) -> Vec<String> {
        if let Some(event) = m.events.try_recv() {
            panic!("the member got {event:?}");
        }
        std::iter::from_fn(|| m.out.try_recv())
            .map(|out| match out {
                Out::Text(t) => t.to_string(),
                other => panic!("not a text frame: {other:?}"),
            })
            .collect()
    }

    fn message(seq: u64, sender: &str) -> Message {
        Message {
            kind: MessageType::Text,
            message: format!("m{seq}"),
            message_id: seq,
            local_message_id: seq,
            sender_user_id: sender.into(),
            timestamp: 1,
            conversation_id: ROOM.into(),
            conversation_type: ConversationType::Room,
            conversation_seq: seq,
            inbox_seq: None,
            priority: Priority::High,
        }
    }

    /// The push of these messages, as a sender encodes it (or the hub merges it).
    fn push(list: &[(u64, &str)]) -> String {
        encode_push(&Push::ReceiveRoomMessage(ReceiveRoomMessage {
            message_list: list.iter().map(|&(seq, s)| message(seq, s)).collect(),
            from_room_id: ROOM.into(),
        }))
    }

    fn publish(hub: &Hub, class: RoomClass, sender: &str, frame: String) {
        let envelope = Envelope::Room {
            class,
            sender: sender.into(),
            frame: Bytes::from(frame),
        };
        hub.on_publication(&room_topic(APP, ROOM), &envelope.encode());
    }

    fn send(hub: &Hub, seq: u64, sender: &str) {
        publish(hub, RoomClass::Stored, sender, push(&[(seq, sender)]));
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_rooms_deliver_each_message_at_once() {
        // Two members and 100 messages a second: 200 frames/s, below the bound.
        let hub = hub(20, 1000);
        let mut a = member(&hub, 1, "a");
        let mut b = member(&hub, 2, "b");
        for seq in 1..=5 {
            send(&hub, seq, "s");
            assert_eq!(texts(&mut a), [push(&[(seq, "s")])]);
            assert_eq!(texts(&mut b), [push(&[(seq, "s")])]);
            tokio::time::advance(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn busy_rooms_merge_a_window_of_messages_into_one_push() {
        let hub = hub(20, 1);
        let mut a = member(&hub, 1, "a");
        // The first message goes at once; the next ones within 20 ms wait for
        // the window's end and go as one push.
        send(&hub, 1, "s");
        assert_eq!(texts(&mut a), [push(&[(1, "s")])]);
        for seq in 2..=5 {
            tokio::time::advance(Duration::from_millis(2)).await;
            send(&hub, seq, "s");
        }
        tokio::time::advance(Duration::from_millis(11)).await;
        assert_eq!(texts(&mut a), Vec::<String>::new());
        tokio::time::sleep(Duration::from_millis(2)).await;
        let merged = push(&[(2, "s"), (3, "s"), (4, "s"), (5, "s")]);
        assert_eq!(texts(&mut a), [merged]);
        // After a quiet window, the next message goes at once again.
        tokio::time::sleep(Duration::from_millis(25)).await;
        send(&hub, 6, "s");
        assert_eq!(texts(&mut a), [push(&[(6, "s")])]);
    }

    #[tokio::test(start_paused = true)]
    async fn merged_pushes_leave_out_the_members_own_messages() {
        let hub = hub(20, 1);
        let mut a = member(&hub, 1, "a");
        let mut b = member(&hub, 2, "b");
        let mut c = member(&hub, 3, "c");
        send(&hub, 1, "c");
        send(&hub, 2, "a");
        send(&hub, 3, "b");
        send(&hub, 4, "a");
        send(&hub, 5, "c");
        tokio::time::sleep(Duration::from_millis(21)).await;
        assert_eq!(
            texts(&mut a),
            [push(&[(1, "c")]), push(&[(3, "b"), (5, "c")])]
        );
        assert_eq!(
            texts(&mut b),
            [push(&[(1, "c")]), push(&[(2, "a"), (4, "a"), (5, "c")])]
        );
        assert_eq!(texts(&mut c), [push(&[(2, "a"), (3, "b"), (4, "a")])]);
        // A window of one member's messages only: nothing for that member.
        send(&hub, 6, "a");
        send(&hub, 7, "a");
        tokio::time::sleep(Duration::from_millis(21)).await;
        assert_eq!(texts(&mut a), Vec::<String>::new());
        assert_eq!(texts(&mut b), [push(&[(6, "a"), (7, "a")])]);
    }

    #[tokio::test(start_paused = true)]
    async fn other_room_frames_and_classes_keep_their_place() {
        let hub = hub(20, 1);
        let mut a = member(&hub, 1, "a");
        send(&hub, 1, "s");
        send(&hub, 2, "s");
        let joined = encode_push(&Push::RoomMemberJoined(RoomMembersChanged {
            room_id: ROOM.into(),
            member_list: vec![],
        }));
        publish(&hub, RoomClass::Stored, "", joined.clone());
        send(&hub, 3, "s");
        let live = push(&[(0, "s")]);
        publish(&hub, RoomClass::Live(Priority::Low), "s", live.clone());
        send(&hub, 4, "s");
        send(&hub, 5, "s");
        tokio::time::sleep(Duration::from_millis(21)).await;
        assert_eq!(
            texts(&mut a),
            [
                push(&[(1, "s")]),
                push(&[(2, "s")]),
                joined,
                push(&[(3, "s")]),
                live,
                push(&[(4, "s"), (5, "s")]),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn held_messages_go_to_the_members_of_their_time() {
        let hub = hub(20, 1);
        let mut a = member(&hub, 1, "a");
        send(&hub, 1, "s");
        send(&hub, 2, "s");
        // A join sends what was held first: the newcomer does not get it.
        let mut b = member(&hub, 2, "b");
        assert_eq!(texts(&mut a), [push(&[(1, "s")]), push(&[(2, "s")])]);
        send(&hub, 3, "s");
        // A leave too: the leaving member still gets what was held.
        assert!(hub.leave_room(APP, ROOM, 1));
        assert_eq!(texts(&mut a), [push(&[(3, "s")])]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(texts(&mut a), Vec::<String>::new());
        assert_eq!(texts(&mut b), [push(&[(3, "s")])]);
    }

    #[tokio::test(start_paused = true)]
    async fn merged_pushes_and_held_frames_are_bounded() {
        let hub = hub(20, 1);
        let mut a = member(&hub, 1, "a");
        send(&hub, 1, "s");
        for seq in 2..=251 {
            send(&hub, seq, "s");
        }
        tokio::time::sleep(Duration::from_millis(21)).await;
        let got = texts(&mut a);
        let counts: Vec<usize> = got
            .iter()
            .map(|t| t.matches("\"conversationSeq\"").count())
            .collect();
        assert_eq!(counts, [1, 100, 100, 50]);
        // A room never holds more than HELD_MAX frames: they go without a timer.
        for seq in 1..=HELD_MAX as u64 {
            publish(&hub, RoomClass::Stored, "", format!("{{\"x\":{seq}}}"));
        }
        assert_eq!(texts(&mut a).len(), HELD_MAX);
    }

    #[test]
    fn held_frames_go_out_even_if_the_flush_task_never_runs() {
        let hub = hub(5, 1);
        let mut a = member(&hub, 1, "a");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            send(&hub, 1, "s");
            send(&hub, 2, "s");
        });
        // The runtime, and the flush task with it, is gone.
        drop(runtime);
        assert_eq!(texts(&mut a), [push(&[(1, "s")])]);
        std::thread::sleep(Duration::from_millis(15));
        // The next delivery (outside any runtime: sent at once) sends it first.
        send(&hub, 3, "s");
        assert_eq!(texts(&mut a), [push(&[(2, "s")]), push(&[(3, "s")])]);
    }

    #[tokio::test(start_paused = true)]
    async fn flush_room_sends_what_is_held_at_once() {
        let hub = hub(20, 1);
        let mut a = member(&hub, 1, "a");
        send(&hub, 1, "s");
        send(&hub, 2, "s");
        send(&hub, 3, "s");
        assert_eq!(texts(&mut a), [push(&[(1, "s")])]);
        hub.flush_room(APP, ROOM);
        assert_eq!(texts(&mut a), [push(&[(2, "s"), (3, "s")])]);
        // The flush task of that window finds nothing to send.
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(texts(&mut a), Vec::<String>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn merged_pushes_stay_under_the_byte_bound() {
        let limits = crate::config::Limits {
            room_merge_above: 1,
            room_merge_window_ms: 20,
            outbound_queue_bytes: 4 * 1000,
            ..crate::config::Limits::default()
        };
        let settings = MergeSettings::from_limits(&limits);
        assert_eq!(settings.max_push_bytes, 1000);
        let hub = hub_with(settings);
        let mut a = member(&hub, 1, "a");
        let one = push(&[(1, "s")]).len();
        for seq in 1..=31 {
            send(&hub, seq, "s");
        }
        tokio::time::sleep(Duration::from_millis(21)).await;
        let got = texts(&mut a);
        assert!(got.len() > 2, "{} pushes", got.len());
        for t in &got[1..] {
            assert!(t.len() < 1000 + 2 * one, "{} bytes", t.len());
        }
        let seqs: usize = got
            .iter()
            .map(|t| t.matches("\"conversationSeq\"").count())
            .sum();
        assert_eq!(seqs, 31);
    }

    #[tokio::test(start_paused = true)]
    async fn a_room_left_by_everyone_is_made_anew_on_the_next_join() {
        let hub = hub(20, 1);
        let mut a = member(&hub, 1, "a");
        send(&hub, 1, "s");
        send(&hub, 2, "s");
        assert!(hub.leave_room(APP, ROOM, 1));
        assert!(!hub.leave_room(APP, ROOM, 1));
        assert_eq!(texts(&mut a), [push(&[(1, "s")]), push(&[(2, "s")])]);
        let mut b = member(&hub, 2, "b");
        send(&hub, 3, "s");
        assert_eq!(texts(&mut b), [push(&[(3, "s")])]);
        assert_eq!(texts(&mut a), Vec::<String>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_window_never_merges() {
        let hub = hub(0, 1);
        let mut a = member(&hub, 1, "a");
        for seq in 1..=3 {
            send(&hub, seq, "s");
        }
        assert_eq!(texts(&mut a).len(), 3);
    }

    #[test]
    fn the_rate_meter_measures_frames_per_second() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        // 1,000 members, one message: 1,000 frames in the first period.
        assert!(!m.add(t0, 1000, 100_000));
        // 10,000 frames within 100 ms: 100,000/s.
        assert!(m.add(t0 + Duration::from_millis(50), 9000, 100_000));
        // The last period's rate carries over: busy until a slow period ends.
        assert!(m.add(t0 + Duration::from_millis(100), 1, 100_000));
        assert!(!m.add(t0 + Duration::from_millis(400), 1, 100_000));
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
