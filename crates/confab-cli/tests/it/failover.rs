//! Three `confab serve` nodes sharing PostgreSQL and Redis, and SDK clients with
//! all three URLs: the node a receiver is on is killed (SIGKILL) in the middle of a
//! message stream, and the receiver's SDK fails over to another node by itself,
//! getting every acknowledged peer and room message exactly once and in order.
//!
//! Needs the machine's PostgreSQL (127.0.0.1:5432, database `test`) and Redis
//! (127.0.0.1:6379); `CONFAB_PG_URL` and `CONFAB_REDIS_URL` override the URLs.
//! Without the services the test is skipped (with a message), except under CI,
//! where it fails. Each run uses its own schema and channel prefix, and drops the
//! schema at the end, passing or not.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use confab_sdk::{
    ConnectionEvent, ConnectionState, ConversationType, ErrorCode, LogConfig, Message,
    MessageContent, RoomInfo, SendConfig, UserInfo, Zim, ZimConfig, ZimError, ZimEvent,
};

use crate::serve::{APP, SECRET, start};

/// How long the whole test may take (the schema is dropped after it either way).
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// How long any single wait may take.
const WAIT: Duration = Duration::from_secs(10);
/// Text messages alice sends to bob, and as many to the room.
const MESSAGES: usize = 150;
/// Pause between two sends of one stream.
const PACE: Duration = Duration::from_millis(20);
/// Acknowledged peer sends before node A is killed.
const KILL_AFTER: usize = 50;
/// The room both are in.
const ROOM: &str = "r";
/// After bob has everything acknowledged: how long to keep listening for
/// duplicates or strays.
const SETTLE: Duration = Duration::from_secs(1);

fn pg_url() -> String {
    std::env::var("CONFAB_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn redis_url() -> String {
    std::env::var("CONFAB_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn reachable(addr: &str) -> bool {
    tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// Whether PostgreSQL and Redis answer; panics under CI when they do not.
async fn services() -> bool {
    let ok = reachable("127.0.0.1:5432").await && reachable("127.0.0.1:6379").await;
    if !ok {
        let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !in_ci,
            "PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) must run in CI; .ci/run starts them"
        );
        eprintln!("skipped: PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) not reachable");
    }
    ok
}

/// Drops a test schema (best effort, bounded).
async fn drop_schema(schema: &str) {
    let work = async {
        let Ok((client, conn)) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await
        else {
            eprintln!("could not connect to PostgreSQL to drop schema {schema}");
            return;
        };
        let task = tokio::spawn(conn);
        if let Err(e) = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
        {
            eprintln!("DROP SCHEMA {schema}: {e}");
        }
        drop(client);
        let _ = task.await;
    };
    if tokio::time::timeout(WAIT, work).await.is_err() {
        eprintln!("DROP SCHEMA {schema} took longer than {WAIT:?}");
    }
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit i64")
}

fn token(user: &str) -> String {
    let secret = confab_token::Secret::new(SECRET).expect("secret");
    confab_token::generate(
        &secret,
        APP,
        user,
        3600,
        confab_token::Mode::Gcm,
        unix_now(),
    )
    .expect("token")
}

fn user(id: &str) -> UserInfo {
    UserInfo {
        user_id: id.into(),
        user_name: id.into(),
    }
}

/// The `host:port` of a `ws://host:port/ws` URL.
fn host_port(url: &str) -> &str {
    url.trim_start_matches("ws://").trim_end_matches("/ws")
}

/// What one SDK instance reported, with when.
#[derive(Debug, Default)]
struct Seen {
    peer: Vec<Message>,
    room: Vec<Message>,
    /// Connection state changes.
    states: Vec<(Instant, ConnectionState, ConnectionEvent, String)>,
    /// Gaps, errors, and events this test does not expect.
    other: Vec<ZimEvent>,
}

/// Creates an instance on `urls` (send limit off) whose events a task collects.
fn client(urls: Vec<String>) -> (Zim, Arc<Mutex<Seen>>) {
    let mut config = ZimConfig::new(APP, urls);
    config.send_rate_per_second = 0;
    let zim = Zim::create(config).expect("Zim::create");
    let mut events = zim.events().expect("the first call returns the events");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = seen.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let mut s = sink.lock().expect("seen");
            match event {
                ZimEvent::ReceivePeerMessage { message_list, .. } => s.peer.extend(message_list),
                ZimEvent::ReceiveRoomMessage { message_list, .. } => s.room.extend(message_list),
                ZimEvent::ConnectionStateChanged {
                    state,
                    event,
                    extended,
                } => s.states.push((Instant::now(), state, event, extended)),
                ZimEvent::RoomMemberJoined { .. }
                | ZimEvent::RoomMemberLeft { .. }
                | ZimEvent::RoomStateChanged { .. } => {}
                other => s.other.push(other),
            }
        }
    });
    (zim, seen)
}

/// One send of alice's: its number in its stream, and what the SDK answered.
#[derive(Debug)]
struct Sent {
    n: usize,
    result: Result<Message, ZimError>,
    /// When the SDK answered.
    at: Instant,
}

fn body(kind: &str, n: usize) -> String {
    format!("{kind} {n}")
}

/// Sends [`MESSAGES`] Text messages `"{kind} {n}"` one after another, [`PACE`]
/// apart, counting acknowledgements in `acked`.
async fn stream(zim: Zim, kind: &'static str, acked: Arc<AtomicUsize>) -> Vec<Sent> {
    let mut out = Vec::with_capacity(MESSAGES);
    for n in 1..=MESSAGES {
        let content = MessageContent::Text(body(kind, n));
        let result = if kind == "peer" {
            zim.send_peer_message(content, "bob", SendConfig::default())
                .await
        } else {
            zim.send_room_message(content, ROOM, SendConfig::default())
                .await
        };
        if result.is_ok() {
            acked.fetch_add(1, Ordering::SeqCst);
        }
        out.push(Sent {
            n,
            result,
            at: Instant::now(),
        });
        tokio::time::sleep(PACE).await;
    }
    out
}

/// What one stream looked like from both ends.
#[derive(Debug)]
struct Tally {
    acked: usize,
    failed: usize,
    /// Failed sends that were stored all the same (bob received them).
    failed_but_stored: usize,
}

/// Checks what bob received of one stream against what alice sent: every
/// acknowledged message exactly once, as acknowledged; nothing unsent; everything
/// in send order (and in `seq` order).
fn check_stream(
    kind: &str,
    sent: &[Sent],
    received: &[Message],
    seq: impl Fn(&Message) -> u64,
) -> Tally {
    let mut ids = HashSet::new();
    let mut got: BTreeMap<usize, &Message> = BTreeMap::new();
    let mut last: Option<(usize, u64, u64)> = None;
    for m in received {
        assert_eq!(
            m.sender_user_id, "alice",
            "{kind}: a stranger's message: {m:?}"
        );
        assert!(
            ids.insert(m.message_id),
            "{kind}: messageID {} delivered twice ({:?})",
            m.message_id,
            m.text()
        );
        let n: usize = m
            .text()
            .and_then(|t| t.strip_prefix(kind))
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("{kind}: an unexpected message: {m:?}"));
        assert!(
            (1..=MESSAGES).contains(&n),
            "{kind}: message {n} was never sent"
        );
        if let Some((prev_n, prev_local, prev_seq)) = last {
            assert!(
                n > prev_n && m.local_message_id > prev_local,
                "{kind}: out of send order or duplicated: {n} after {prev_n} \
                 (localMessageID {} after {prev_local})",
                m.local_message_id
            );
            assert!(
                seq(m) > prev_seq,
                "{kind}: seq {} after {prev_seq} ({n} after {prev_n})",
                seq(m)
            );
        }
        last = Some((n, m.local_message_id, seq(m)));
        got.insert(n, m);
    }
    let mut tally = Tally {
        acked: 0,
        failed: 0,
        failed_but_stored: 0,
    };
    let mut lost = Vec::new();
    for s in sent {
        match &s.result {
            Ok(ack) => {
                tally.acked += 1;
                match got.get(&s.n) {
                    None => lost.push(s.n),
                    Some(m) => {
                        assert_eq!(
                            (m.message_id, m.local_message_id, m.conversation_seq),
                            (ack.message_id, ack.local_message_id, ack.conversation_seq),
                            "{kind} {}: what bob got differs from alice's ack",
                            s.n
                        );
                    }
                }
            }
            Err(e) => {
                tally.failed += 1;
                assert!(
                    matches!(
                        e.code,
                        ErrorCode::MessageNetworkError | ErrorCode::NetworkError
                    ),
                    "{kind} {}: a failed send must say why with 6000204 or 6000104: {e}",
                    s.n
                );
                if got.contains_key(&s.n) {
                    tally.failed_but_stored += 1;
                }
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{kind}: acknowledged but never received by bob: {lost:?} ({} of {} acked; bob got {})",
        lost.len(),
        tally.acked,
        received.len()
    );
    tally
}

/// The URLs bob's SDK logged in at, in order (from its log file).
fn logins(log_dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log_dir.join("confab-sdk.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once("logged in at ")?.1.split_once(": "))
        .map(|(url, _)| url.to_owned())
        .collect()
}

/// The node of `url`, by name.
fn node_of(url: &str, nodes: &[(&str, String)]) -> String {
    nodes
        .iter()
        .find(|(_, u)| url.starts_with(u.as_str()))
        .map_or_else(|| format!("? ({url})"), |(name, _)| (*name).to_owned())
}

async fn three_nodes(schema: String, prefix: String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = format!("{APP}:{SECRET}");
    let (pg, redis) = (pg_url(), redis_url());
    let flags = ["--app", &app, "--store", &pg, "--broker", &redis];
    let env = [
        ("CONFAB_STORE_SCHEMA", schema.as_str()),
        ("CONFAB_BROKER_PREFIX", prefix.as_str()),
        ("CONFAB_STORE_POOL_SIZE", "4"),
        ("CONFAB_LIMITS_USER_SEND_RATE", "100000"),
        ("CONFAB_LIMITS_USER_SEND_BURST", "100000"),
        ("CONFAB_LIMITS_APP_SEND_RATE", "100000"),
    ];
    let data = |name: &str| dir.path().join(format!("data-{name}"));
    // One after another: the first creates the schema.
    let a = start(&data("a"), &flags, &env).await;
    let b = start(&data("b"), &flags, &env).await;
    let c = start(&data("c"), &flags, &env).await;
    let (url_a, url_b, url_c) = (a.url(), b.url(), c.url());
    let names = [
        ("A", url_a.clone()),
        ("B", url_b.clone()),
        ("C", url_c.clone()),
    ];

    // bob (lands on A) and alice (lands on B), both in the room.
    let (bob, bob_seen) = client(vec![url_a.clone(), url_b.clone(), url_c.clone()]);
    let bob_log = dir.path().join("bob-sdk");
    bob.set_log_config(&LogConfig::new(&bob_log))
        .expect("bob's log");
    bob.login(user("bob"), token("bob"))
        .await
        .expect("bob logs in");
    let r = bob
        .enter_room(
            RoomInfo {
                room_id: ROOM.into(),
                room_name: ROOM.into(),
            },
            None,
        )
        .await
        .expect("bob enters the room");
    assert!(r.created, "a fresh schema has no room {ROOM}");
    let (alice, alice_seen) = client(vec![url_b.clone(), url_c.clone(), url_a.clone()]);
    alice
        .login(user("alice"), token("alice"))
        .await
        .expect("alice logs in");
    let r = alice
        .enter_room(
            RoomInfo {
                room_id: ROOM.into(),
                room_name: ROOM.into(),
            },
            None,
        )
        .await
        .expect("alice enters the room");
    assert!(!r.created, "bob created the room");

    // The streams, and node A killed in their middle.
    let peer_acked = Arc::new(AtomicUsize::new(0));
    let room_acked = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let peer = tokio::spawn(stream(alice.clone(), "peer", peer_acked.clone()));
    let room = tokio::spawn(stream(alice.clone(), "room", room_acked.clone()));
    while peer_acked.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            began.elapsed() < WAIT,
            "only {} peer sends acked within {WAIT:?}",
            peer_acked.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (peer_at_kill, room_at_kill) = (
        peer_acked.load(Ordering::SeqCst),
        room_acked.load(Ordering::SeqCst),
    );
    // Dropping a ServerProc sends SIGKILL (tokio's `Child::start_kill`).
    let killed = Instant::now();
    drop(a);
    while reachable(host_port(&url_a)).await {
        assert!(
            killed.elapsed() < WAIT,
            "node A still listens after SIGKILL"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let peer_sent = peer.await.expect("the peer stream panicked");
    let room_sent = room.await.expect("the room stream panicked");
    let streamed = began.elapsed();

    // bob must have failed over by himself and caught up.
    let want_peer: HashSet<u64> = peer_sent
        .iter()
        .filter_map(|s| s.result.as_ref().ok().map(|m| m.message_id))
        .collect();
    let want_room: HashSet<u64> = room_sent
        .iter()
        .filter_map(|s| s.result.as_ref().ok().map(|m| m.message_id))
        .collect();
    let all_in = |s: &Seen| {
        let peer: HashSet<u64> = s.peer.iter().map(|m| m.message_id).collect();
        let room: HashSet<u64> = s.room.iter().map(|m| m.message_id).collect();
        want_peer.is_subset(&peer) && want_room.is_subset(&room)
    };
    let waited = Instant::now();
    let caught_up = {
        let deadline = Instant::now() + WAIT;
        loop {
            if all_in(&bob_seen.lock().expect("seen")) {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let catch_up = waited.elapsed();
    tokio::time::sleep(SETTLE).await;

    let seen = std::mem::take(&mut *bob_seen.lock().expect("seen"));
    let states: Vec<String> = seen
        .states
        .iter()
        .map(|(at, state, event, extended)| {
            let t = at.saturating_duration_since(killed);
            format!("{state:?}/{event:?} {extended:?} at kill+{t:?}")
        })
        .collect();
    let lost_at = seen
        .states
        .iter()
        .find(|(at, state, ..)| *at >= killed && *state == ConnectionState::Reconnecting)
        .map(|(at, ..)| at.duration_since(killed));
    let back_at = seen
        .states
        .iter()
        .find(|(at, state, ..)| *at >= killed && *state == ConnectionState::Connected)
        .map(|(at, ..)| at.duration_since(killed));
    // Sends answered while bob was away, and after he was back.
    let (mut during, mut after) = (0, 0);
    if let Some(back) = back_at.map(|t| killed + t) {
        for s in peer_sent.iter().chain(&room_sent) {
            if s.at >= back {
                after += 1;
            } else if s.at >= killed {
                during += 1;
            }
        }
    }
    let bob_logins = logins(&bob_log);
    let bob_nodes: Vec<String> = bob_logins.iter().map(|u| node_of(u, &names)).collect();
    eprintln!(
        "failover: A killed after {peer_at_kill} peer + {room_at_kill} room acks; \
         streams took {streamed:?}; bob lost A at kill+{lost_at:?}, connected again at \
         kill+{back_at:?} (logins at {bob_nodes:?}); {during} sends answered while bob was \
         away, {after} after; bob caught up {catch_up:?} after the streams"
    );
    eprintln!("failover: bob's connection states: {states:#?}");
    assert!(
        lost_at.is_some() && back_at.is_some(),
        "bob did not fail over: states {states:#?}"
    );
    assert_eq!(
        bob_nodes.first().map(String::as_str),
        Some("A"),
        "bob's first login should be on A: {bob_logins:?}"
    );
    assert!(
        bob_nodes.len() >= 2 && bob_nodes[1..].iter().all(|n| n == "B" || n == "C"),
        "bob should have failed over to B or C: {bob_logins:?}"
    );
    assert_eq!(
        seen.states.last().map(|s| s.1),
        Some(ConnectionState::Connected),
        "bob ends connected: {states:#?}"
    );
    assert!(
        seen.other.is_empty(),
        "bob saw gaps or errors: {:?}",
        seen.other
    );

    let peer_tally = check_stream("peer", &peer_sent, &seen.peer, |m| {
        m.inbox_seq.expect("a stored peer message has an inboxSeq")
    });
    let room_tally = check_stream("room", &room_sent, &seen.room, |m| m.conversation_seq);
    eprintln!(
        "failover: peer {peer_tally:?}, bob got {}; room {room_tally:?}, bob got {}",
        seen.peer.len(),
        seen.room.len()
    );
    assert!(caught_up, "bob was still missing messages after {WAIT:?}");
    let bob_peer: Vec<u64> = seen.peer.iter().map(|m| m.message_id).collect();
    {
        let alice_seen = alice_seen.lock().expect("seen");
        assert!(
            alice_seen
                .states
                .iter()
                .all(|s| s.1 == ConnectionState::Connecting || s.1 == ConnectionState::Connected),
            "alice (on B) should not notice A's death: {:?}",
            alice_seen.states
        );
    }
    // Alice is on B, which never went down: nothing of hers may fail.
    assert_eq!(
        (peer_tally.failed, room_tally.failed),
        (0, 0),
        "sends on a live node failed: {:?}",
        peer_sent
            .iter()
            .chain(&room_sent)
            .filter_map(|s| s.result.as_ref().err())
            .collect::<Vec<_>>()
    );

    // Node A restarted on the same schema serves the whole history.
    let a = start(&data("a"), &flags, &env).await;
    alice.logout().await.expect("alice logs out");
    alice.destroy();
    let (again, _) = client(vec![a.url()]);
    again
        .login(user("alice"), token("alice"))
        .await
        .expect("alice logs in on the restarted A");
    let mut history = Vec::new();
    let mut next = None;
    loop {
        let page = again
            .query_history_message("bob", ConversationType::Peer, next, 100, false)
            .await
            .expect("peer history on A");
        let Some(last) = page.last() else {
            break;
        };
        next = Some(last.conversation_seq);
        history.extend(page);
    }
    let history_ids: Vec<u64> = history.iter().map(|m| m.message_id).collect();
    assert_eq!(
        history_ids, bob_peer,
        "the restarted A's history differs from what bob received"
    );
    again.destroy();
    bob.destroy();
    drop((a, b, c));
    eprintln!("failover: {:?} in all", began.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_survive_a_sigkill() {
    if !services().await {
        return;
    }
    let id = format!(
        "{}x{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos()
    );
    let schema = format!("confab_failover_{id}");
    let prefix = format!("confab-failover-{id}:");
    let mut body = tokio::spawn(three_nodes(schema.clone(), prefix));
    let outcome = tokio::time::timeout(TEST_LIMIT, &mut body).await;
    if outcome.is_err() {
        body.abort();
        let _ = body.await; // the nodes are killed as the body is dropped
    }
    drop_schema(&schema).await;
    match outcome {
        Err(_) => panic!("the test took more than {TEST_LIMIT:?}"),
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => panic!("the test body failed: {e}"),
        Ok(Ok(())) => {}
    }
}
