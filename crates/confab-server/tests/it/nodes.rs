//! Several nodes sharing PostgreSQL and Redis (scale-out). These tests need the
//! machine's PostgreSQL (127.0.0.1:5432, database `test`) and Redis
//! (127.0.0.1:6379); `CONFAB_PG_URL` and `CONFAB_REDIS_URL` override. Without the
//! services they are skipped (with a message), except under CI, where they fail.

use std::sync::Arc;
use std::time::Duration;

use confab_server::Options;
use serde_json::json;

use crate::harness::*;

fn pg_url() -> String {
    std::env::var("CONFAB_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn redis_url() -> String {
    std::env::var("CONFAB_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Whether the services answer; panics under CI when they do not.
async fn services() -> bool {
    let reachable = |addr: &'static str| async move {
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .is_ok_and(|r| r.is_ok())
    };
    let ok = reachable("127.0.0.1:5432").await && reachable("127.0.0.1:6379").await;
    if !ok {
        let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !in_ci,
            "PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) must run in CI; .ci/run starts them"
        );
        eprintln!("skipped: PostgreSQL or Redis not reachable on 127.0.0.1");
    }
    ok
}

/// Drops a test schema (best effort).
async fn drop_schema(schema: &str) {
    let Ok((client, conn)) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await else {
        return;
    };
    let task = tokio::spawn(conn);
    let _ = client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await;
    drop(client);
    let _ = task.await;
}

/// Three nodes on one fresh PostgreSQL schema and Redis prefix.
async fn cluster() -> (Vec<TestServer>, String) {
    cluster_with(|_| {}).await
}

/// A Redis of the test's own (`redis-server` on a free port, nothing saved),
/// to kill and start again without touching the machine's.
struct PrivateRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    /// A Redis of the test's own, or `None` (after saying so) where there is no
    /// `redis-server` to run; under CI there must be one.
    async fn start() -> Option<PrivateRedis> {
        let found = std::process::Command::new("redis-server")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            let in_ci =
                std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(
                !in_ci,
                "redis-server must be installed in CI (apt-get install redis-server)"
            );
            eprintln!(
                "skipped: no redis-server to kill and restart (apt-get install redis-server)"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = PrivateRedis { port, child: None };
        redis.restart().await;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: every connection to it drops at once.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port; returns once it answers.
    async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three nodes on PostgreSQL and `redis`.
async fn cluster_on(redis: &PrivateRedis) -> (Vec<TestServer>, String) {
    let url = redis.url();
    cluster_with(move |c| c.broker = url.clone()).await
}

async fn cluster_with(
    tweak: impl Fn(&mut confab_server::Config) + Clone + Send + 'static,
) -> (Vec<TestServer>, String) {
    let id = format!(
        "n{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mut nodes = Vec::new();
    let schema_name = format!("confab_test_{id}");
    for _ in 0..3 {
        let (schema, prefix) = (format!("confab_test_{id}"), format!("confab-test-{id}:"));
        let tweak = tweak.clone();
        nodes.push(
            TestServer::start_with(
                move |c| {
                    c.store = pg_url();
                    c.store_schema = schema;
                    c.store_pool_size = 4;
                    c.broker = redis_url();
                    c.broker_prefix = prefix;
                    tweak(c);
                },
                Options::default(),
            )
            .await,
        );
    }
    (nodes, schema_name)
}

/// Redis killed mid-stream, with senders and receivers on three nodes: what
/// was acknowledged while it was down reaches every connected receiver without
/// a newer message and without reconnecting (within 2 s of Redis's return),
/// in order and once; receivers on the sender's own node get it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_leaves_no_silent_gap_for_peers() {
    if !services().await {
        return;
    }
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    let (nodes, schema) = cluster_on(&redis).await;
    let (a, c) = (&nodes[0], &nodes[2]);
    let mut alice = a.login("alice").await;
    // bob on another node, dave on the sender's.
    let mut bob = c.login("bob").await;
    let mut dave = a.login("dave").await;
    bob.push("syncComplete").await;
    dave.push("syncComplete").await;
    let texts = |to: &str, range: std::ops::RangeInclusive<u64>| {
        range.map(|i| format!("{to}:{i}")).collect::<Vec<_>>()
    };
    let received = |messages: Vec<serde_json::Value>| {
        messages
            .iter()
            .map(|m| m["message"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let mut local = 0;
    let mut send_round = async |alice: &mut Client, range: std::ops::RangeInclusive<u64>| {
        for i in range {
            for to in ["bob", "dave"] {
                local += 1;
                let r = alice.send_text(to, &format!("{to}:{i}"), local).await;
                assert_eq!(r["code"], 0, "acknowledged even with Redis down: {r}");
            }
        }
    };
    send_round(&mut alice, 1..=3).await;
    assert_eq!(received(bob.peer_messages(3).await), texts("bob", 1..=3));
    assert_eq!(received(dave.peer_messages(3).await), texts("dave", 1..=3));

    redis.kill();
    let killed = tokio::time::Instant::now();
    send_round(&mut alice, 4..=6).await;
    // The sender's own node delivers without Redis.
    assert_eq!(received(dave.peer_messages(3).await), texts("dave", 4..=6));
    // Down for 5 s in all.
    tokio::time::sleep_until(killed + Duration::from_secs(5)).await;

    redis.restart().await;
    let back = tokio::time::Instant::now();
    // No newer message is sent: the node catches up when its link is back.
    let caught_up = tokio::time::timeout(Duration::from_secs(3), bob.peer_messages(3))
        .await
        .expect("bob gets what was stored during the outage within 3 s of Redis's return");
    let took = back.elapsed();
    assert_eq!(received(caught_up), texts("bob", 4..=6));
    assert!(
        took < Duration::from_secs(2),
        "caught up {took:?} after Redis's return"
    );
    eprintln!("peer catch-up {took:?} after Redis's return");

    // Live again, and nothing came twice.
    send_round(&mut alice, 7..=7).await;
    assert_eq!(received(bob.peer_messages(1).await), texts("bob", 7..=7));
    assert_eq!(received(dave.peer_messages(1).await), texts("dave", 7..=7));
    assert!(
        bob.try_push("receivePeerMessage", Duration::from_millis(300))
            .await
            .is_none()
    );
    assert!(
        dave.try_push("receivePeerMessage", Duration::from_millis(300))
            .await
            .is_none()
    );
    assert!(
        bob.alive().await && dave.alive().await,
        "nobody reconnected"
    );
    drop(nodes);
    drop_schema(&schema).await;
}

/// A broker node whose publications fail while `failing` is set (its
/// publishing link alone down); everything else as the inner node.
struct PublishFails {
    inner: Arc<dyn confab_broker::Broker>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait::async_trait]
impl confab_broker::Broker for PublishFails {
    async fn subscribe(&self, topic: &str) -> Result<(), confab_broker::BrokerError> {
        self.inner.subscribe(topic).await
    }
    async fn unsubscribe(&self, topic: &str) -> Result<(), confab_broker::BrokerError> {
        self.inner.unsubscribe(topic).await
    }
    async fn publish(
        &self,
        topic: &str,
        payload: bytes::Bytes,
    ) -> Result<(), confab_broker::BrokerError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(confab_broker::BrokerError::Unavailable(
                "failing on purpose".into(),
            ));
        }
        self.inner.publish(topic, payload).await
    }
    async fn ping(&self) -> Result<(), confab_broker::BrokerError> {
        self.inner.ping().await
    }
    async fn add_to_counter(
        &self,
        key: &str,
        n: u64,
        ttl_secs: u64,
    ) -> Result<u64, confab_broker::BrokerError> {
        self.inner.add_to_counter(key, n, ttl_secs).await
    }
}

/// A node whose publications fail while Redis stays up for every other node
/// (no reconnect anywhere to catch up on): the stored messages it could not
/// publish reach the receivers on other nodes once it can, without a newer
/// message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_that_failed_are_published_again() {
    if !services().await {
        return;
    }
    let (mut nodes, schema) = cluster().await;
    // Node A again, on the same schema and prefix, with a broker that can fail.
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let schema_name = schema.clone();
    let prefix = schema.replacen("confab_test_", "confab-test-", 1) + ":";
    let factory = confab_broker_redis::factory(&redis_url(), &prefix);
    let flag = failing.clone();
    let options = confab_server::Options {
        broker: Some(Arc::new(move |handler| {
            let (factory, flag) = (factory.clone(), flag.clone());
            Box::pin(async move {
                let inner = factory(handler).await?;
                let node: Arc<dyn confab_broker::Broker> = Arc::new(PublishFails {
                    inner,
                    failing: flag,
                });
                Ok(node)
            })
        })),
        ..confab_server::Options::default()
    };
    let a = TestServer::start_with(
        move |c| {
            c.store = pg_url();
            c.store_schema = schema_name;
            c.store_pool_size = 4;
            c.broker = redis_url();
            c.broker_prefix = prefix;
        },
        options,
    )
    .await;
    let mut alice = a.login("alice").await;
    let mut bob = nodes[2].login("bob").await;
    bob.push("syncComplete").await;
    assert_eq!(alice.send_text("bob", "before", 1).await["code"], 0);
    assert_eq!(bob.peer_messages(1).await[0]["message"], "before");

    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        alice.send_text("bob", "while failing", 2).await["code"],
        0,
        "stored, acknowledged"
    );
    assert!(
        bob.try_push("receivePeerMessage", Duration::from_millis(500))
            .await
            .is_none()
    );
    assert_eq!(a.metric("confab_publications_waiting").await, 1);

    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let got = tokio::time::timeout(Duration::from_secs(2), bob.peer_messages(1))
        .await
        .expect("published again within 2 s, with no newer message");
    assert_eq!(got[0]["message"], "while failing");
    assert_eq!(a.metric("confab_publications_waiting").await, 0);
    nodes.push(a);
    drop(nodes);
    drop_schema(&schema).await;
}

/// The seqs of the room messages `client` receives until `quiet` passes
/// without one.
async fn room_seqs(client: &mut Client, quiet: Duration) -> Vec<u64> {
    client
        .messages_until_quiet("receiveRoomMessage", quiet)
        .await
        .iter()
        .map(|m| m["conversationSeq"].as_u64().unwrap())
        .collect()
}

/// Sends Text room message `local` to `room`; its seq.
async fn send_room(client: &mut Client, room: &str, local: u64) -> u64 {
    let r = client
        .request(
            "sendRoomMessage",
            json!({"roomID": room, "type": 1, "message": format!("m{local}"), "localMessageID": local}),
        )
        .await;
    assert_eq!(r["code"], 0, "{r}");
    r["data"]["conversationSeq"].as_u64().unwrap()
}

/// Redis killed mid-stream in a room with members on three nodes: the
/// members on the sender's node keep getting its messages; the others get
/// what was stored meanwhile within 2 s of Redis's return, without a newer
/// message and without reconnecting, then live ones, in seq order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_leaves_no_silent_gap_in_rooms() {
    if !services().await {
        return;
    }
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    let (nodes, schema) = cluster_on(&redis).await;
    let mut sender = nodes[0].login("sender").await;
    let r = sender
        .request("createRoom", json!({"roomInfo": {"roomID": "hall"}}))
        .await;
    assert_eq!(r["code"], 0, "{r}");
    let mut members = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut m = node.login(&format!("member{i}")).await;
        assert_eq!(
            m.request("joinRoom", json!({"roomID": "hall"})).await["code"],
            0
        );
        members.push(m);
    }
    // A second room that a user on C joins while Redis is down (C has no
    // other member there, so C is subscribed to it only once Redis is back).
    let r = sender
        .request("createRoom", json!({"roomInfo": {"roomID": "annex"}}))
        .await;
    assert_eq!(r["code"], 0, "{r}");
    let mut late = nodes[2].login("late").await;
    let mut local = 0;
    let mut sent = Vec::new();
    for _ in 0..3 {
        local += 1;
        sent.push(send_room(&mut sender, "hall", local).await);
    }
    for m in &mut members {
        assert_eq!(room_seqs(m, Duration::from_millis(500)).await, sent);
    }

    redis.kill();
    let killed = tokio::time::Instant::now();
    let r = late.request("joinRoom", json!({"roomID": "annex"})).await;
    assert_eq!(r["code"], 0, "joining works without Redis: {r}");
    let mut during = Vec::new();
    for _ in 0..3 {
        local += 1;
        during.push(send_room(&mut sender, "hall", local).await);
    }
    local += 1;
    let annex_during = send_room(&mut sender, "annex", local).await;
    // On the sender's node, live without Redis.
    assert_eq!(
        room_seqs(&mut members[0], Duration::from_millis(500)).await,
        during
    );
    // Down for 5 s in all.
    tokio::time::sleep_until(killed + Duration::from_secs(5)).await;

    redis.restart().await;
    let back = tokio::time::Instant::now();
    for m in &mut members[1..] {
        let mut got = Vec::new();
        while got.len() < during.len() {
            let p = tokio::time::timeout(
                Duration::from_secs(3).saturating_sub(back.elapsed()),
                m.push("receiveRoomMessage"),
            )
            .await
            .expect("what was stored during the outage, within 3 s of Redis's return");
            got.extend(
                p["data"]["messageList"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["conversationSeq"].as_u64().unwrap()),
            );
        }
        assert_eq!(got, during, "in seq order, once");
    }
    let took = back.elapsed();
    eprintln!("room catch-up {took:?} after Redis's return");
    assert!(
        took < Duration::from_secs(2),
        "caught up {took:?} after Redis's return"
    );

    let mut after = Vec::new();
    for _ in 0..3 {
        local += 1;
        after.push(send_room(&mut sender, "hall", local).await);
    }
    for m in &mut members {
        assert_eq!(
            room_seqs(m, Duration::from_millis(500)).await,
            after,
            "live, nothing twice"
        );
        assert!(m.alive().await, "nobody reconnected");
    }
    // The member who joined during the outage: what was sent then, and live
    // messages after (its node subscribed to the room once Redis was back).
    local += 1;
    let annex_after = send_room(&mut sender, "annex", local).await;
    assert_eq!(
        room_seqs(&mut late, Duration::from_millis(800)).await,
        [annex_during, annex_after],
        "a member who joined during the outage"
    );
    drop(nodes);
    drop_schema(&schema).await;
}

/// Senders on two nodes into one room: every member, on each of three nodes,
/// receives the room's messages in seq order (CONFAB_ORDER_SECS seconds of
/// sending, default 5; the check is 60).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_on_two_nodes_give_every_member_one_room_order() {
    if !services().await {
        return;
    }
    let secs: u64 = std::env::var("CONFAB_ORDER_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (nodes, schema) = cluster().await;
    let mut owner = nodes[0].login("owner").await;
    let r = owner
        .request("createRoom", json!({"roomInfo": {"roomID": "ordered"}}))
        .await;
    assert_eq!(r["code"], 0, "{r}");
    let mut members = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..2 {
            let mut m = node.login(&format!("member{i}x{j}")).await;
            assert_eq!(
                m.request("joinRoom", json!({"roomID": "ordered"})).await["code"],
                0
            );
            members.push(m);
        }
    }
    // Three senders on A, three on B, 15 messages a second in all.
    let mut senders = Vec::new();
    for (i, node) in [
        &nodes[0], &nodes[0], &nodes[0], &nodes[1], &nodes[1], &nodes[1],
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = node.login(&format!("sender{i}")).await;
        assert_eq!(
            s.request("joinRoom", json!({"roomID": "ordered"})).await["code"],
            0
        );
        senders.push(s);
    }
    let readers: Vec<_> = members
        .into_iter()
        .map(|mut m| tokio::spawn(async move { room_seqs(&mut m, Duration::from_secs(3)).await }))
        .collect();
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for (i, mut s) in senders.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(400));
            let mut local = 0;
            // Staggered: the six senders' sends interleave.
            tokio::time::sleep(Duration::from_millis(66 * i as u64)).await;
            while tokio::time::Instant::now() < until {
                tick.tick().await;
                local += 1;
                send_room(&mut s, "ordered", local).await;
            }
            local
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += usize::try_from(t.await.unwrap()).unwrap();
    }
    for (i, r) in readers.into_iter().enumerate() {
        let seqs = r.await.unwrap();
        let inversions = seqs.windows(2).filter(|w| w[1] <= w[0]).count();
        assert_eq!(
            inversions, 0,
            "member {i}: {inversions} inversions in {seqs:?}"
        );
        assert_eq!(seqs.len(), total, "member {i}: every message once");
    }
    eprintln!("{total} messages from senders on two nodes, {secs} s: 0 inversions at 6 members");
    drop(nodes);
    drop_schema(&schema).await;
}

/// One session per user across nodes, under simultaneous logins too: 100
/// rounds of the same user logging in on two nodes at once leave exactly one
/// session each, the loser closed within the bound docs/deploy.md states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_logins_on_two_nodes_leave_exactly_one_session() {
    if !services().await {
        return;
    }
    let (nodes, schema) = cluster().await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut slowest = Duration::ZERO;
    for round in 0..100 {
        let user = format!("twin{round}");
        let (mut on_a, mut on_b) = tokio::join!(a.connect(), b.connect());
        let tok = token(&user);
        let (ra, rb) = tokio::join!(
            on_a.login(APP, &user, &tok, None),
            on_b.login(APP, &user, &tok, None)
        );
        assert_eq!(
            (ra["code"].as_u64(), rb["code"].as_u64()),
            (Some(0), Some(0)),
            "round {round}: {ra} {rb}"
        );
        let logged_in = tokio::time::Instant::now();
        // The loser is told within the bound, whichever it is.
        let bound = Duration::from_secs(1);
        let first = tokio::select! {
            r = on_a.closed_within(bound) => r.map(|closed| (true, closed.reason)),
            r = on_b.closed_within(bound) => r.map(|closed| (false, closed.reason)),
        };
        let Some((a_lost, reason)) = first else {
            panic!("round {round}: both sessions still open {bound:?} after the logins");
        };
        slowest = slowest.max(logged_in.elapsed());
        assert_eq!(reason.as_deref(), Some("kickedOut"), "round {round}");
        let survivor = if a_lost { &mut on_b } else { &mut on_a };
        assert!(
            survivor.alive().await,
            "round {round}: the other session stays"
        );
    }
    eprintln!("simultaneous logins on two nodes: slowest kick within {slowest:?} of the logins");
    drop(nodes);
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_rooms_and_kicks_across_three_nodes() {
    if !services().await {
        return;
    }
    let (nodes, schema) = cluster().await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);

    // Peer: alice on A, bob on B, live; carol (offline) gets hers on C later.
    let mut alice = a.login("alice").await;
    let mut bob = b.login("bob").await;
    bob.push("syncComplete").await;
    assert_eq!(alice.send_text("bob", "across nodes", 1).await["code"], 0);
    assert_eq!(bob.peer_messages(1).await[0]["message"], "across nodes");
    assert_eq!(alice.send_text("carol", "for later", 2).await["code"], 0);
    let mut carol = c.login("carol").await;
    assert_eq!(carol.peer_messages(1).await[0]["message"], "for later");

    // One session per user across nodes: alice logs in on C, A's session is kicked.
    let mut alice_c = c.login("alice").await;
    let closed = alice.closed(WAIT).await;
    assert_eq!(closed.reason.as_deref(), Some("kickedOut"));

    // A room shared by members on all three nodes; senders on A and B, a member on C
    // receives every message in per-sender order.
    let r = alice_c
        .request("createRoom", json!({"roomInfo": {"roomID": "global"}}))
        .await;
    assert_eq!(r["code"], 0, "{r}");
    let mut dave = a.login("dave").await;
    assert_eq!(
        dave.request("joinRoom", json!({"roomID": "global"})).await["code"],
        0
    );
    assert_eq!(
        bob.request("joinRoom", json!({"roomID": "global"})).await["code"],
        0
    );
    let r = carol
        .request("queryRoomOnlineMemberCount", json!({"roomID": "global"}))
        .await;
    assert_eq!(r["code"], 6000205, "carol is not a member yet: {r}");
    assert_eq!(
        carol.request("joinRoom", json!({"roomID": "global"})).await["code"],
        0
    );
    let r = carol
        .request("queryRoomOnlineMemberCount", json!({"roomID": "global"}))
        .await;
    assert_eq!(r["data"]["count"], 4, "{r}");
    for i in 1..=20u64 {
        let (who, client) = if i % 2 == 0 {
            ("dave", &mut dave)
        } else {
            ("bob", &mut bob)
        };
        let r = client
            .request(
                "sendRoomMessage",
                json!({"roomID": "global", "type": 1, "message": format!("{who}:{i}"), "localMessageID": i}),
            )
            .await;
        assert_eq!(r["code"], 0, "{r}");
    }
    let mut got = Vec::new();
    while got.len() < 20 {
        let p = carol.push("receiveRoomMessage").await;
        for m in p["data"]["messageList"].as_array().unwrap() {
            got.push((
                m["senderUserID"].as_str().unwrap().to_owned(),
                m["localMessageID"].as_u64().unwrap(),
                m["conversationSeq"].as_u64().unwrap(),
            ));
        }
    }
    for who in ["bob", "dave"] {
        let mine: Vec<u64> = got.iter().filter(|m| m.0 == who).map(|m| m.1).collect();
        let mut sorted = mine.clone();
        sorted.sort_unstable();
        assert_eq!(mine, sorted, "{who}'s messages in order");
        assert_eq!(mine.len(), 10);
    }
    let mut seqs: Vec<u64> = got.iter().map(|m| m.2).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=20).collect::<Vec<_>>(),
        "one room seq across nodes"
    );
    // Member events cross nodes too.
    let mut erin = b.login("erin").await;
    assert_eq!(
        erin.request("joinRoom", json!({"roomID": "global"})).await["code"],
        0
    );
    let mut heard = false;
    while let Some(p) = carol
        .try_push("roomMemberJoined", Duration::from_secs(3))
        .await
    {
        if p.to_string().contains("\"erin\"") {
            heard = true;
            break;
        }
    }
    assert!(heard, "carol on C hears that erin joined on B");
    for n in nodes {
        n.stop().await;
    }
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_app_rate_limit_holds_across_nodes() {
    if !services().await {
        return;
    }
    const RATE: u64 = 30;
    let (nodes, schema) = cluster_with(|c| {
        c.limits.app_send_rate = 30;
        c.limits.user_send_rate = 10_000;
        c.limits.user_send_burst = 10_000;
    })
    .await;
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        clients.push(node.login(&format!("sender{i}")).await);
    }
    let started = unix_now();
    let mut ok = 0u64;
    let mut limited = 0u64;
    for round in 0..40u64 {
        for c in &mut clients {
            let r = c.send_text("sink", "x", round + 1).await;
            match r["code"].as_u64().unwrap() {
                0 => ok += 1,
                6000003 => limited += 1,
                other => panic!("unexpected {other}: {r}"),
            }
        }
    }
    let windows = (unix_now() - started + 1) as u64;
    assert!(limited > 0, "no request was limited ({ok} passed)");
    assert!(
        ok <= RATE * windows,
        "{ok} sends passed in {windows} one-second windows with a shared limit of {RATE}/s"
    );
    for n in nodes {
        n.stop().await;
    }
    drop_schema(&schema).await;
}
