//! Several nodes sharing PostgreSQL and Redis (scale-out). These tests need the
//! machine's PostgreSQL (127.0.0.1:5432, database `test`) and Redis
//! (127.0.0.1:6379); `CONFAB_PG_URL` and `CONFAB_REDIS_URL` override. Without the
//! services they are skipped (with a message), except under CI, where they fail.

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
                    tweak(c);
                    c.store = pg_url();
                    c.store_schema = schema;
                    c.store_pool_size = 4;
                    c.broker = redis_url();
                    c.broker_prefix = prefix;
                },
                Options::default(),
            )
            .await,
        );
    }
    (nodes, schema_name)
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
