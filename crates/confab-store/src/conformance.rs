//! The conformance suite: what every [`Store`] must do, checked against a fresh,
//! empty store per check. A backend's test runs it unchanged:
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread")]
//! async fn conformance() {
//!     confab_store::conformance::run_all(|| async { fresh_store().await }).await;
//! }
//! ```
//!
//! Each check is also a `pub async fn` of its own, so a backend can run one check
//! per test. Checks panic (with the check's name in the message) on failure. They
//! need a tokio runtime (the concurrency checks spawn tasks; a multi-threaded runtime
//! makes them exercise real parallelism). Durability across a restart is
//! backend-specific and is tested by each backend itself.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use crate::{AppRecord, NewPeerMessage, Store, StoreError, StoredPeerMessage};

mod rooms;
pub use rooms::*;

/// Runs every check, each against a fresh, empty store from `make`.
///
/// # Panics
/// When a check fails; the panic names the check.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    macro_rules! check {
        ($name:ident) => {{
            let _guard = Named(stringify!($name));
            $name(&make().await).await;
        }};
        (owned $name:ident) => {{
            let _guard = Named(stringify!($name));
            $name(make().await).await;
        }};
    }
    check!(ping_answers);
    check!(apps_put_replace_list);
    check!(touch_user_is_accepted);
    check!(first_append_starts_at_one);
    check!(message_fields_round_trip);
    check!(conversation_seq_is_shared_by_both_directions);
    check!(inbox_seq_is_per_receiver);
    check!(retry_returns_the_first_result);
    check!(same_local_id_from_other_senders_is_another_message);
    check!(apps_are_isolated);
    check!(inbox_pages_by_position_and_limit);
    check!(ack_only_moves_forward);
    check!(purge_leaves_a_visible_gap_and_never_reuses_positions);
    check!(owned concurrent_appends_get_distinct_ordered_seqs);
    check!(owned concurrent_retries_store_once);
    check!(pipelined_appends_keep_call_order);
    // Rooms and history.
    check!(room_create_exists_and_limits);
    check!(room_join_and_leave);
    check!(room_member_pages_counts_and_user_rooms);
    check!(room_attribute_ownership);
    check!(room_attributes_deleted_after_owner_left);
    check!(room_attribute_limits);
    check!(room_messages_seq_dedup_and_membership);
    check!(pipelined_room_appends_keep_call_order);
    check!(single_node_room_seqs_have_no_gaps);
    check!(room_seqs_continue_after_destroy);
    check!(room_members_expire_and_rooms_destroy);
    check!(history_pages_peer_conversations);
    check!(history_pages_rooms);
    check!(rooms_are_isolated_between_apps);
    check!(owned concurrent_joins_fill_a_room_exactly);
    check!(owned concurrent_creates_of_one_room_make_one);
    check!(owned concurrent_room_limits_hold);
    check!(owned concurrent_room_appends_get_distinct_seqs);
}

/// A store that claims [`Store::appends_in_call_order`] assigns seqs in the
/// order the appends were first polled, even when they are awaited later.
///
/// # Panics
/// When the order differs.
pub async fn pipelined_appends_keep_call_order<S: Store>(store: &S) {
    if !store.appends_in_call_order() {
        return;
    }
    let mut pending = Vec::new();
    // 300 first polls in one go exhaust tokio's cooperative budget (128 per
    // poll of a task); the yield then gives the last ones a fresh budget. An
    // append whose first poll was refused by the budget without queuing it
    // would be overtaken by the later ones.
    for i in 0..300u64 {
        if i == 250 {
            tokio::task::yield_now().await;
        }
        pending.push(poll_once(store.append_peer(text("alice", "bob", 1000 + i, 7_000))).await);
    }
    let mut seqs = Vec::new();
    for (i, append) in (0u64..).zip(pending) {
        let appended = append.await.expect("append");
        assert_eq!(appended.message.local_message_id, 1000 + i);
        seqs.push(appended.message.inbox_seq);
    }
    assert_call_order("inbox", &seqs);
}

/// A boxed future, as the store's methods return them.
type Started<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Polls `fut` once (a store that keeps call order queues the append then) and
/// returns it, to be awaited later.
async fn poll_once<'a, T: Send + 'a>(mut fut: Started<'a, T>) -> Started<'a, T> {
    match std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await {
        std::task::Poll::Ready(done) => Box::pin(std::future::ready(done)),
        std::task::Poll::Pending => fut,
    }
}

/// Panics unless `seqs`, listed in the order of the appends' first polls, rise.
fn assert_call_order(what: &str, seqs: &[u64]) {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        seqs, sorted,
        "{what} seqs follow the order of the first polls: {seqs:?}"
    );
}

/// Names the running check in the output if it panics.
struct Named(&'static str);

impl Drop for Named {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("store conformance check `{}` FAILED", self.0);
        }
    }
}

const APP: u32 = 1;

/// A Text message in app [`APP`] with a body that names it.
fn text(sender: &str, receiver: &str, local_message_id: u64, timestamp_ms: i64) -> NewPeerMessage {
    in_app(APP, sender, receiver, local_message_id, timestamp_ms)
}

fn in_app(
    app_id: u32,
    sender: &str,
    receiver: &str,
    local_message_id: u64,
    timestamp_ms: i64,
) -> NewPeerMessage {
    NewPeerMessage {
        app_id,
        sender: sender.to_owned(),
        receiver: receiver.to_owned(),
        kind: 1,
        body: format!("{app_id}:{sender}->{receiver}#{local_message_id}"),
        local_message_id,
        timestamp_ms,
        priority: 2,
    }
}

async fn append<S: Store>(store: &S, msg: NewPeerMessage, check: &str) -> StoredPeerMessage {
    let appended = store
        .append_peer(msg.clone())
        .await
        .unwrap_or_else(|e| panic!("{check}: append {msg:?} failed: {e}"));
    assert!(
        !appended.duplicate,
        "{check}: a first send was reported as a duplicate: {msg:?}"
    );
    appended.message
}

/// The whole inbox of a user, read in pages of 1000.
async fn whole_inbox<S: Store>(store: &S, app_id: u32, user: &str) -> Vec<StoredPeerMessage> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .inbox_after(app_id, user, after, 1000)
            .await
            .expect("inbox_after");
        let Some(last) = page.messages.last() else {
            return all;
        };
        after = last.inbox_seq;
        all.extend(page.messages);
    }
}

fn inbox_seqs(messages: &[StoredPeerMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.inbox_seq).collect()
}

fn app(app_id: u32, name: &str) -> AppRecord {
    AppRecord {
        app_id,
        secret: format!("{app_id:0>32}"),
        name: name.to_owned(),
        created_ms: 1_700_000_000_000 + i64::from(app_id),
    }
}

/// `ping` answers on a healthy store.
pub async fn ping_answers<S: Store>(store: &S) {
    store
        .ping()
        .await
        .expect("ping_answers: ping failed on a fresh store");
}

/// Apps: an empty store lists none; puts insert, a put of a known AppID replaces it,
/// the list is ascending by AppID; AppID 0 is refused.
pub async fn apps_put_replace_list<S: Store>(store: &S) {
    assert_eq!(
        store.list_apps().await.expect("list_apps"),
        vec![],
        "a fresh store has no apps"
    );
    for a in [app(7, "seven"), app(u32::MAX, "max"), app(3, "three")] {
        store.put_app(&a).await.expect("put_app");
    }
    let ids: Vec<u32> = store
        .list_apps()
        .await
        .expect("list_apps")
        .iter()
        .map(|a| a.app_id)
        .collect();
    assert_eq!(
        ids,
        vec![3, 7, u32::MAX],
        "apps are listed ascending by AppID"
    );

    let replaced = AppRecord {
        secret: "abcdefghijklmnopqrstuvwxyz012345".into(),
        name: "seven, renamed".into(),
        created_ms: 42,
        ..app(7, "")
    };
    store.put_app(&replaced).await.expect("put_app replace");
    let apps = store.list_apps().await.expect("list_apps");
    assert_eq!(
        apps,
        vec![app(3, "three"), replaced, app(u32::MAX, "max")],
        "put replaces"
    );

    let zero = store.put_app(&app(0, "zero")).await;
    assert!(
        matches!(zero, Err(StoreError::Invalid(_))),
        "AppID 0 is invalid: {zero:?}"
    );
    assert_eq!(
        store.list_apps().await.expect("list_apps").len(),
        3,
        "AppID 0 was not stored"
    );
}

/// `touch_user` creates a user on first login and updates it later; users need not
/// exist to receive messages; AppID 0 is refused.
pub async fn touch_user_is_accepted<S: Store>(store: &S) {
    store
        .touch_user(APP, "alice", "Alice", 1_000)
        .await
        .expect("first touch");
    store
        .touch_user(APP, "alice", "Alice Liddell", 2_000)
        .await
        .expect("second touch");
    store
        .touch_user(2, "alice", "Another Alice", 2_000)
        .await
        .expect("touch in another app");
    let zero = store.touch_user(0, "alice", "Alice", 1).await;
    assert!(
        matches!(zero, Err(StoreError::Invalid(_))),
        "AppID 0 is invalid: {zero:?}"
    );
    // A user who never logged in can be sent to (kept for their first login).
    let m = append(
        store,
        text("alice", "never-logged-in", 1, 3_000),
        "touch_user",
    )
    .await;
    assert_eq!(m.inbox_seq, 1);
}

/// The first message gets conversation seq 1 and inbox seq 1, a message id in
/// `1..2^53`, and is returned and read back exactly as sent.
pub async fn first_append_starts_at_one<S: Store>(store: &S) {
    let sent = text("alice", "bob", 10, 5_000);
    let appended = store.append_peer(sent.clone()).await.expect("append");
    assert!(!appended.duplicate);
    let m = &appended.message;
    assert_eq!(
        (m.conversation_seq, m.inbox_seq),
        (1, 1),
        "seqs start at 1: {m:?}"
    );
    assert!(
        m.message_id > 0 && m.message_id < (1 << 53),
        "message id in 1..2^53: {m:?}"
    );
    assert_eq!(
        (
            m.app_id,
            m.sender.as_str(),
            m.receiver.as_str(),
            m.kind,
            m.body.as_str()
        ),
        (sent.app_id, "alice", "bob", sent.kind, sent.body.as_str())
    );
    assert_eq!(
        (m.local_message_id, m.timestamp_ms, m.priority),
        (10, 5_000, 2)
    );

    let page = store
        .inbox_after(APP, "bob", 0, 10)
        .await
        .expect("inbox_after");
    assert_eq!(
        page.messages,
        vec![m.clone()],
        "the inbox holds exactly the stored message"
    );
    assert_eq!((page.head, page.first_held), (1, 1));
    // The sender's inbox is untouched.
    let sender = store
        .inbox_after(APP, "alice", 0, 10)
        .await
        .expect("inbox_after");
    assert_eq!(
        (sender.messages.len(), sender.head, sender.first_held),
        (0, 0, 1)
    );
}

/// Every field survives storage: extreme local ids (u64::MAX, above i64::MAX, 0),
/// Unicode, empty and 32 KiB bodies, kinds and priorities, negative and large
/// timestamps.
pub async fn message_fields_round_trip<S: Store>(store: &S) {
    let big = "é".repeat(16 * 1024); // 32 KiB of UTF-8
    let cases = [
        (u64::MAX, "😀 ünïcödé \u{0} nul", 1, 3, i64::MAX),
        (1 << 63, "", 1, 1, 0),
        (0, big.as_str(), 2, 2, -1),
        (
            u64::MAX - 1,
            "line\nbreak \"quoted\" 'single'",
            u8::MAX,
            3,
            1_700_000_000_123,
        ),
    ];
    let mut sent = Vec::new();
    for (local, body, kind, priority, ts) in cases {
        let msg = NewPeerMessage {
            kind,
            priority,
            body: body.to_owned(),
            ..text("alice", "bob", local, ts)
        };
        let stored = append(store, msg.clone(), "message_fields_round_trip").await;
        assert_eq!(
            (
                stored.local_message_id,
                stored.body.as_str(),
                stored.kind,
                stored.priority
            ),
            (local, body, kind, priority),
            "append returns the fields as sent"
        );
        assert_eq!(stored.timestamp_ms, ts);
        sent.push(stored);
    }
    assert_eq!(
        whole_inbox(store, APP, "bob").await,
        sent,
        "reads return the fields as stored"
    );
    let retry = store
        .append_peer(text("alice", "bob", u64::MAX, 9))
        .await
        .expect("retry");
    assert!(retry.duplicate, "u64::MAX local id is matched on retry");
    assert_eq!(retry.message, sent[0]);
}

/// A conversation's seq is shared by both directions and strictly increasing; each
/// conversation (unordered pair of users) counts on its own, including a user's
/// conversation with itself.
pub async fn conversation_seq_is_shared_by_both_directions<S: Store>(store: &S) {
    let c = "conversation_seq";
    let m1 = append(store, text("alice", "bob", 1, 1), c).await;
    let m2 = append(store, text("bob", "alice", 1, 2), c).await;
    let m3 = append(store, text("alice", "bob", 2, 3), c).await;
    let m4 = append(store, text("bob", "alice", 2, 4), c).await;
    let seqs = [
        m1.conversation_seq,
        m2.conversation_seq,
        m3.conversation_seq,
        m4.conversation_seq,
    ];
    assert_eq!(
        seqs,
        [1, 2, 3, 4],
        "both directions share one conversation seq"
    );
    let other = append(store, text("alice", "carol", 3, 5), c).await;
    assert_eq!(
        other.conversation_seq, 1,
        "another pair is another conversation"
    );
    let reverse_other = append(store, text("carol", "alice", 1, 6), c).await;
    assert_eq!(reverse_other.conversation_seq, 2);
    let own = append(store, text("alice", "alice", 4, 7), c).await;
    assert_eq!(
        own.conversation_seq, 1,
        "a user's notes to itself are their own conversation"
    );
    let m5 = append(store, text("alice", "bob", 5, 8), c).await;
    assert_eq!(
        m5.conversation_seq, 5,
        "other conversations do not advance this one"
    );
    let ids: HashSet<u64> = [&m1, &m2, &m3, &m4, &other, &reverse_other, &own, &m5]
        .iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(ids.len(), 8, "message ids are unique");
}

/// Each receiver's inbox seq counts from 1 on its own, whoever sends.
pub async fn inbox_seq_is_per_receiver<S: Store>(store: &S) {
    let c = "inbox_seq";
    let mut bob = Vec::new();
    let mut carol = Vec::new();
    for i in 0..5 {
        bob.push(append(store, text("alice", "bob", i, 1), c).await.inbox_seq);
        bob.push(append(store, text("dave", "bob", i, 1), c).await.inbox_seq);
        carol.push(
            append(store, text("alice", "carol", 100 + i, 1), c)
                .await
                .inbox_seq,
        );
    }
    assert_eq!(
        bob,
        (1..=10).collect::<Vec<_>>(),
        "bob's inbox counts every sender"
    );
    assert_eq!(
        carol,
        (1..=5).collect::<Vec<_>>(),
        "carol's inbox counts on its own"
    );
    let page = store
        .inbox_after(APP, "bob", 0, 100)
        .await
        .expect("inbox_after");
    assert_eq!(inbox_seqs(&page.messages), (1..=10).collect::<Vec<_>>());
    assert!(
        page.messages.iter().all(|m| m.receiver == "bob"),
        "only bob's messages"
    );
    assert_eq!(
        store
            .inbox_after(APP, "alice", 0, 100)
            .await
            .expect("inbox")
            .head,
        0
    );
}

/// A retry with the same (app, sender, local id) returns the first stored message
/// (even if the retry's content differs) with `duplicate = true` and writes nothing:
/// the inbox head does not move and no position is consumed.
pub async fn retry_returns_the_first_result<S: Store>(store: &S) {
    let first = append(store, text("alice", "bob", 77, 1_000), "retry").await;
    for _ in 0..3 {
        let retry = NewPeerMessage {
            body: "a different body".into(),
            timestamp_ms: 2_000,
            priority: 3,
            ..text("alice", "bob", 77, 2_000)
        };
        let again = store.append_peer(retry).await.expect("retry");
        assert!(again.duplicate, "a retry is a duplicate");
        assert_eq!(
            again.message, first,
            "a retry returns the first result, timestamp included"
        );
    }
    // Same sender and local id to another receiver is still the same send.
    let elsewhere = store
        .append_peer(text("alice", "carol", 77, 3_000))
        .await
        .expect("append");
    assert!(
        elsewhere.duplicate,
        "(sender, local id) identifies a send, whatever the receiver"
    );
    assert_eq!(elsewhere.message, first);
    let carol = store
        .inbox_after(APP, "carol", 0, 10)
        .await
        .expect("inbox_after");
    assert_eq!(
        (carol.messages.len(), carol.head),
        (0, 0),
        "nothing reached carol"
    );

    let page = store
        .inbox_after(APP, "bob", 0, 10)
        .await
        .expect("inbox_after");
    assert_eq!(page.messages, vec![first.clone()], "stored once");
    assert_eq!(page.head, 1, "the retries wrote nothing");
    let next = append(store, text("alice", "bob", 78, 4_000), "retry").await;
    assert_eq!(
        (next.inbox_seq, next.conversation_seq),
        (2, 2),
        "no position was consumed"
    );
    assert_ne!(next.message_id, first.message_id);
}

/// The same local id from different senders are different messages.
pub async fn same_local_id_from_other_senders_is_another_message<S: Store>(store: &S) {
    let c = "same_local_id";
    let from_alice = append(store, text("alice", "bob", 1, 1), c).await;
    let from_carol = append(store, text("carol", "bob", 1, 2), c).await;
    let from_bob = append(store, text("bob", "alice", 1, 3), c).await;
    assert_ne!(from_alice.message_id, from_carol.message_id);
    assert_ne!(from_alice.message_id, from_bob.message_id);
    assert_eq!(
        (
            from_alice.inbox_seq,
            from_carol.inbox_seq,
            from_bob.inbox_seq
        ),
        (1, 2, 1),
        "each one takes its own inbox position"
    );
    let page = store
        .inbox_after(APP, "bob", 0, 10)
        .await
        .expect("inbox_after");
    assert_eq!(page.messages, vec![from_alice, from_carol]);
}

/// Two apps with identical user ids and local ids share nothing: not messages, not
/// seqs, not acks, not retries.
pub async fn apps_are_isolated<S: Store>(store: &S) {
    let c = "apps_are_isolated";
    let (one, two) = (11, 22);
    let a1 = append(store, in_app(one, "alice", "bob", 5, 1), c).await;
    let a2 = append(store, in_app(one, "alice", "bob", 6, 2), c).await;
    let b1 = store
        .append_peer(in_app(two, "alice", "bob", 5, 3))
        .await
        .expect("append");
    assert!(
        !b1.duplicate,
        "the same (sender, local id) in another app is not a retry"
    );
    let b1 = b1.message;
    assert_eq!((a2.inbox_seq, a2.conversation_seq), (2, 2));
    assert_eq!(
        (b1.inbox_seq, b1.conversation_seq),
        (1, 1),
        "each app counts on its own"
    );
    assert_ne!(a1.message_id, b1.message_id);

    let page_one = store
        .inbox_after(one, "bob", 0, 10)
        .await
        .expect("inbox_after");
    let page_two = store
        .inbox_after(two, "bob", 0, 10)
        .await
        .expect("inbox_after");
    assert_eq!(page_one.messages, vec![a1, a2]);
    assert_eq!(page_two.messages, vec![b1]);
    assert_eq!((page_one.head, page_two.head), (2, 1));
    let page_three = store
        .inbox_after(33, "bob", 0, 10)
        .await
        .expect("inbox_after");
    assert_eq!(
        (page_three.messages.len(), page_three.head),
        (0, 0),
        "an unknown app sees nothing"
    );

    store.ack_inbox(one, "bob", 2).await.expect("ack");
    assert_eq!(store.inbox_acked(one, "bob").await.expect("acked"), 2);
    assert_eq!(
        store.inbox_acked(two, "bob").await.expect("acked"),
        0,
        "acks are per app"
    );
    let zero = store.append_peer(in_app(0, "alice", "bob", 1, 1)).await;
    assert!(
        matches!(zero, Err(StoreError::Invalid(_))),
        "AppID 0 is invalid: {zero:?}"
    );
}

/// `inbox_after` pages: positions after `after`, ascending, at most `limit`, with
/// the head; an empty page past the end; `limit = 0` gives only the head.
pub async fn inbox_pages_by_position_and_limit<S: Store>(store: &S) {
    for i in 1..=25 {
        append(
            store,
            text(if i % 2 == 0 { "alice" } else { "carol" }, "bob", i, 1),
            "paging",
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut after = 0;
    for expected in [10, 10, 5, 0] {
        let page = store
            .inbox_after(APP, "bob", after, 10)
            .await
            .expect("inbox_after");
        assert_eq!(page.messages.len(), expected, "page after {after}");
        assert_eq!((page.head, page.first_held), (25, 1));
        let seqs = inbox_seqs(&page.messages);
        assert_eq!(
            seqs,
            (after + 1..=after + expected as u64).collect::<Vec<_>>()
        );
        if let Some(last) = seqs.last() {
            after = *last;
        }
        seen.extend(seqs);
    }
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());
    let middle = store
        .inbox_after(APP, "bob", 17, 3)
        .await
        .expect("inbox_after");
    assert_eq!(inbox_seqs(&middle.messages), vec![18, 19, 20]);
    let only_head = store
        .inbox_after(APP, "bob", 0, 0)
        .await
        .expect("inbox_after");
    assert_eq!(
        (
            only_head.messages.len(),
            only_head.head,
            only_head.first_held
        ),
        (0, 25, 1)
    );
    let beyond = store
        .inbox_after(APP, "bob", 1_000, 10)
        .await
        .expect("inbox_after");
    assert_eq!((beyond.messages.len(), beyond.head), (0, 25));
    let nobody = store
        .inbox_after(APP, "nobody", 0, 10)
        .await
        .expect("inbox_after");
    assert_eq!(
        nobody,
        crate::InboxPage {
            messages: vec![],
            head: 0,
            first_held: 1
        }
    );
}

/// The acknowledged position starts at 0 and only moves forward; it is per user and
/// may be recorded before the user has any message.
pub async fn ack_only_moves_forward<S: Store>(store: &S) {
    assert_eq!(store.inbox_acked(APP, "bob").await.expect("acked"), 0);
    store
        .ack_inbox(APP, "bob", 0)
        .await
        .expect("ack 0 before any message");
    assert_eq!(store.inbox_acked(APP, "bob").await.expect("acked"), 0);
    for i in 1..=8 {
        append(store, text("alice", "bob", i, 1), "ack").await;
    }
    for (ack, expected) in [(5, 5), (3, 5), (5, 5), (7, 7), (0, 7), (8, 8)] {
        store.ack_inbox(APP, "bob", ack).await.expect("ack");
        assert_eq!(
            store.inbox_acked(APP, "bob").await.expect("acked"),
            expected,
            "after ack {ack}"
        );
    }
    assert_eq!(
        store.inbox_acked(APP, "alice").await.expect("acked"),
        0,
        "acks are per user"
    );
    let page = store
        .inbox_after(APP, "bob", 0, 100)
        .await
        .expect("inbox_after");
    assert_eq!(
        (page.messages.len(), page.head),
        (8, 8),
        "acks remove nothing, move no head"
    );
    let next = append(store, text("alice", "bob", 9, 1), "ack").await;
    assert_eq!(next.inbox_seq, 9, "acks do not move the head");
    assert_eq!(store.inbox_acked(APP, "bob").await.expect("acked"), 8);
}

/// Purging removes messages older than the cutoff (and only those), leaves a gap
/// visible through `first_held`, and never lets a position be reused.
pub async fn purge_leaves_a_visible_gap_and_never_reuses_positions<S: Store>(store: &S) {
    let c = "purge";
    assert_eq!(
        store.purge_before(i64::MAX).await.expect("purge"),
        0,
        "nothing to purge"
    );
    for i in 0..5 {
        append(
            store,
            text("alice", "bob", i, 1_000 + i64::try_from(i).expect("small")),
            c,
        )
        .await;
    }
    append(store, text("alice", "carol", 100, 1_000), c).await;
    assert_eq!(
        store.purge_before(1_003).await.expect("purge"),
        4,
        "strictly older than cutoff"
    );
    assert_eq!(
        store.purge_before(1_003).await.expect("purge"),
        0,
        "purge is idempotent"
    );

    let bob = store
        .inbox_after(APP, "bob", 0, 10)
        .await
        .expect("inbox_after");
    assert_eq!(
        inbox_seqs(&bob.messages),
        vec![4, 5],
        "the kept messages are unchanged"
    );
    assert_eq!(
        (bob.head, bob.first_held),
        (5, 4),
        "first_held shows the gap 1..=3"
    );
    let carol = store
        .inbox_after(APP, "carol", 0, 10)
        .await
        .expect("inbox_after");
    assert_eq!(
        (carol.messages.len(), carol.head, carol.first_held),
        (0, 1, 2),
        "all purged"
    );

    let next = append(store, text("alice", "bob", 5, 2_000), c).await;
    assert_eq!(
        (next.inbox_seq, next.conversation_seq),
        (6, 6),
        "positions continue after purge"
    );
    let next_carol = append(store, text("alice", "carol", 101, 2_000), c).await;
    assert_eq!((next_carol.inbox_seq, next_carol.conversation_seq), (2, 2));

    assert_eq!(
        store.purge_before(i64::MAX).await.expect("purge"),
        4,
        "purge everything"
    );
    let empty = store
        .inbox_after(APP, "bob", 0, 10)
        .await
        .expect("inbox_after");
    assert_eq!(
        (empty.messages.len(), empty.head, empty.first_held),
        (0, 6, 7)
    );
    let after_all = append(store, text("alice", "bob", 6, 3_000), c).await;
    assert_eq!(
        (after_all.inbox_seq, after_all.conversation_seq),
        (7, 7),
        "even when all purged"
    );
    assert!(
        after_all.message_id > next.message_id,
        "message ids are not reused either"
    );
}

/// 8 tasks each send 50 messages, one after another, to the same receiver, all at
/// once: the receiver's inbox is exactly `1..=400`, and each sender's messages keep
/// its send order, with conversation seqs `1..=50`.
///
/// Takes the store by value to share it between spawned tasks.
///
/// # Panics
/// On failure, or outside a tokio runtime.
pub async fn concurrent_appends_get_distinct_ordered_seqs<S: Store>(store: S) {
    const TASKS: u64 = 8;
    const EACH: u64 = 50;
    let store = Arc::new(store);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let sender = format!("sender-{t}");
            let mut stored = Vec::new();
            for i in 1..=EACH {
                let m = store
                    .append_peer(text(&sender, "bob", i, 1))
                    .await
                    .expect("append");
                assert!(!m.duplicate);
                stored.push(m.message);
            }
            stored
        });
    }
    let mut by_sender: BTreeMap<String, Vec<StoredPeerMessage>> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let stored = done.expect("an appending task panicked");
        by_sender.insert(stored[0].sender.clone(), stored);
    }
    let mut all_seqs: Vec<u64> = by_sender.values().flatten().map(|m| m.inbox_seq).collect();
    all_seqs.sort_unstable();
    assert_eq!(
        all_seqs,
        (1..=TASKS * EACH).collect::<Vec<_>>(),
        "inbox seqs are exactly 1..=400"
    );
    let ids: HashSet<u64> = by_sender.values().flatten().map(|m| m.message_id).collect();
    assert_eq!(ids.len() as u64, TASKS * EACH, "message ids are unique");
    for (sender, stored) in &by_sender {
        let seqs = inbox_seqs(stored);
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{sender}'s sends keep their order: {seqs:?}"
        );
        let conv: Vec<u64> = stored.iter().map(|m| m.conversation_seq).collect();
        assert_eq!(
            conv,
            (1..=EACH).collect::<Vec<_>>(),
            "{sender}'s conversation seqs"
        );
    }
    // What a reader sees is the same: every message once, in inbox order, each
    // sender's in its send order.
    let inbox = whole_inbox(&*store, APP, "bob").await;
    assert_eq!(inbox_seqs(&inbox), (1..=TASKS * EACH).collect::<Vec<_>>());
    for (sender, stored) in &by_sender {
        let read: Vec<&StoredPeerMessage> = inbox.iter().filter(|m| &m.sender == sender).collect();
        assert_eq!(
            read,
            stored.iter().collect::<Vec<_>>(),
            "{sender}'s messages as read back"
        );
    }
}

/// 8 tasks send the same (sender, local id) at once: exactly one is stored, every
/// task gets that one message, and the inbox holds it once.
///
/// # Panics
/// On failure, or outside a tokio runtime.
pub async fn concurrent_retries_store_once<S: Store>(store: S) {
    let store = Arc::new(store);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8_i64 {
        let store = Arc::clone(&store);
        tasks.spawn(async move { store.append_peer(text("alice", "bob", 9, t)).await });
    }
    let mut results = Vec::new();
    while let Some(done) = tasks.join_next().await {
        results.push(done.expect("task panicked").expect("append"));
    }
    assert_eq!(
        results.iter().filter(|r| !r.duplicate).count(),
        1,
        "exactly one is stored"
    );
    let first = &results
        .iter()
        .find(|r| !r.duplicate)
        .expect("one original")
        .message;
    assert!(
        results.iter().all(|r| &r.message == first),
        "all see the first result"
    );
    let page = store
        .inbox_after(APP, "bob", 0, 10)
        .await
        .expect("inbox_after");
    assert_eq!(
        (page.messages.len(), page.head),
        (1, 1),
        "stored and counted once"
    );
}
