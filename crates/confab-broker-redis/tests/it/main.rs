//! The Redis broker against a real Redis: the conformance suite, isolation by
//! prefix, and failures (unreachable server, lost and restored connections).
//!
//! Redis is expected at `redis://127.0.0.1:6379` (or `CONFAB_REDIS_URL`). When it is
//! unreachable, the tests that need it fail under CI (`CI` set) and are skipped,
//! with a message, elsewhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use confab_broker::conformance::{self, DELIVERY_TIMEOUT, QUIET_PERIOD, Recorder};
use confab_broker::{Broker, BrokerError};
use confab_broker_redis::{CALL_TIMEOUT, RECONNECT_BACKOFF_MAX, RedisBroker, factory};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// The Redis to test against, or `None` (after saying so) to skip the test; fails
/// under CI if Redis is unreachable.
async fn redis_url() -> Option<String> {
    let url = std::env::var("CONFAB_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let probe = RedisBroker::connect(&url, &prefix(), Arc::new(Recorder::new())).await;
    let error = match probe {
        Ok(broker) => match broker.ping().await {
            Ok(()) => return Some(url),
            Err(e) => e,
        },
        Err(e) => e,
    };
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !in_ci,
        "Redis not reachable at {url} ({error}); CI must provide it (start redis-server, or set CONFAB_REDIS_URL)"
    );
    eprintln!("skipped: Redis not reachable at {url} ({error})");
    None
}

/// A channel prefix no other backend uses.
fn prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "confab-test-{}-{nanos:x}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn node(url: &str, prefix: &str) -> (RedisBroker, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::new());
    let broker = RedisBroker::connect(url, prefix, recorder.clone())
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    (broker, recorder)
}

fn ev(topic: &str, payload: &'static str) -> (String, Bytes) {
    (topic.to_owned(), Bytes::from_static(payload.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_multi_thread() {
    let Some(url) = redis_url().await else { return };
    conformance::run_all(|| factory(&url, &prefix())).await;
}

#[tokio::test]
async fn conformance_current_thread() {
    let Some(url) = redis_url().await else { return };
    conformance::run_all(|| factory(&url, &prefix())).await;
}

/// Nodes with different prefixes (other apps, other deployments) share nothing, even
/// on identical topics; nodes with the same prefix share everything.
#[tokio::test]
async fn prefixes_isolate() {
    let Some(url) = redis_url().await else { return };
    let (one, two) = (prefix(), prefix());
    let (a1, ra1) = node(&url, &one).await;
    let (b1, rb1) = node(&url, &one).await;
    let (a2, ra2) = node(&url, &two).await;
    for n in [&a1, &b1, &a2] {
        n.subscribe("t").await.unwrap();
    }
    assert_eq!(a1.prefix(), one);
    a1.publish("t", Bytes::from_static(b"one")).await.unwrap();
    a2.publish("t", Bytes::from_static(b"two")).await.unwrap();
    for r in [&ra1, &rb1, &ra2] {
        assert!(r.wait_for(1, DELIVERY_TIMEOUT).await, "nothing delivered");
    }
    tokio::time::sleep(QUIET_PERIOD).await;
    assert_eq!(ra1.events(), [ev("t", "one")]);
    assert_eq!(rb1.events(), [ev("t", "one")]);
    assert_eq!(ra2.events(), [ev("t", "two")]);
}

/// A broker pointed at a closed port fails to connect, promptly.
#[tokio::test]
async fn connect_to_closed_port_fails_fast() {
    let started = Instant::now();
    let result = RedisBroker::connect("redis://127.0.0.1:1", "p:", Arc::new(Recorder::new())).await;
    let elapsed = started.elapsed();
    match result {
        Err(BrokerError::Unavailable(why)) => assert!(why.contains("127.0.0.1:1"), "{why}"),
        Ok(broker) => panic!("connected to a closed port: {broker:?}"),
    }
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

/// A server that accepts connections but never answers: connecting times out.
#[tokio::test]
async fn connect_to_silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let url = format!("redis://127.0.0.1:{port}");
    let result = RedisBroker::connect(&url, "p:", Arc::new(Recorder::new())).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(BrokerError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        elapsed < CALL_TIMEOUT + Duration::from_secs(2),
        "took {elapsed:?}"
    );
    accept.abort();
}

#[tokio::test]
async fn invalid_url_is_unavailable() {
    let result = RedisBroker::connect("not a url", "p:", Arc::new(Recorder::new())).await;
    assert!(
        matches!(result, Err(BrokerError::Unavailable(_))),
        "{result:?}"
    );
}

/// A TCP proxy to Redis that can be cut (listener closed, every connection
/// dropped) and restored on the same port.
struct Proxy {
    port: u16,
    upstream: String,
    tasks: Option<JoinSet<()>>,
}

impl Proxy {
    async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut proxy = Self {
            port,
            upstream: upstream.to_owned(),
            tasks: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn serve(&mut self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Closes the listener and every connection through it.
    async fn cut(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
    }

    async fn restore(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding port {}: {e}", self.port);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot rebind port {}: {e}", self.port),
            }
        };
        self.serve(listener);
    }
}

async fn wait_until_up(broker: &RedisBroker, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match broker.ping().await {
            Ok(()) => return,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("not reconnected within {within:?}: {e}"),
        }
    }
}

/// A node whose connections drop reports itself down, fails publish and subscribe
/// promptly, accepts unsubscribes, and once Redis is back subscribes again to what
/// it still counts, and only that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_resubscribes() {
    let Some(url) = redis_url().await else { return };
    let upstream = url
        .strip_prefix("redis://")
        .filter(|rest| !rest.contains(['@', '/']))
        .map(str::to_owned);
    let Some(upstream) = upstream else {
        eprintln!("skipped: the proxy test needs a plain redis://host:port URL");
        return;
    };
    let p = prefix();
    let mut proxy = Proxy::start(&upstream).await;
    let (a, ra) = node(&proxy.url(), &p).await;
    let (b, _) = node(&url, &p).await;
    a.subscribe("kept").await.unwrap();
    a.subscribe("kept").await.unwrap();
    a.subscribe("dropped").await.unwrap();
    b.publish("kept", Bytes::from_static(b"before"))
        .await
        .unwrap();
    assert!(ra.wait_for(1, DELIVERY_TIMEOUT).await);

    proxy.cut().await;
    // The node notices (its reader sees the connection close) and says so.
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.ping().await.is_ok() {
        assert!(Instant::now() < deadline, "still reporting itself up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    // Down, a node's own publications still reach its own handler (local
    // first); publish fails for the other nodes.
    let published = a.publish("kept", Bytes::from_static(b"local")).await;
    assert!(
        matches!(published, Err(BrokerError::Unavailable(_))),
        "{published:?}"
    );
    let subscribed = a.subscribe("new").await;
    assert!(
        matches!(subscribed, Err(BrokerError::Unavailable(_))),
        "{subscribed:?}"
    );
    assert!(
        started.elapsed() < CALL_TIMEOUT + Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
    // Unsubscribing while down succeeds: "dropped" is not subscribed again.
    a.unsubscribe("dropped").await.unwrap();
    // One of the two "kept" interests goes; one stays.
    a.unsubscribe("kept").await.unwrap();

    // Down for a while, so the node backs off between attempts.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(ra.reconnects(), 0, "not back yet");
    proxy.restore().await;
    wait_until_up(&a, RECONNECT_BACKOFF_MAX + CALL_TIMEOUT * 2).await;
    let told = Instant::now() + Duration::from_secs(1);
    while ra.reconnects() == 0 && Instant::now() < told {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        ra.reconnects(),
        1,
        "the handler is told the link is back, once"
    );

    b.publish("dropped", Bytes::from_static(b"x"))
        .await
        .unwrap();
    b.publish("new", Bytes::from_static(b"x")).await.unwrap();
    b.publish("kept", Bytes::from_static(b"after"))
        .await
        .unwrap();
    a.publish("kept", Bytes::from_static(b"own")).await.unwrap();
    assert!(
        ra.wait_for(4, DELIVERY_TIMEOUT).await,
        "not resubscribed: {:?}",
        ra.events()
    );
    tokio::time::sleep(QUIET_PERIOD).await;
    // Each publisher's in its order (b's through Redis, a's own locally, not
    // again from Redis); between publishers no order is promised.
    let events = ra.events();
    let of = |payloads: &[&str]| -> Vec<(String, Bytes)> {
        events
            .iter()
            .filter(|(_, p)| payloads.iter().any(|x| p.as_ref() == x.as_bytes()))
            .cloned()
            .collect()
    };
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(
        of(&["before", "after"]),
        [ev("kept", "before"), ev("kept", "after")]
    );
    assert_eq!(
        of(&["local", "own"]),
        [ev("kept", "local"), ev("kept", "own")]
    );

    // Working as before: counted subscriptions, unsubscribe to zero.
    a.subscribe("new").await.unwrap();
    a.unsubscribe("kept").await.unwrap();
    b.publish("kept", Bytes::from_static(b"gone"))
        .await
        .unwrap();
    b.publish("new", Bytes::from_static(b"y")).await.unwrap();
    assert!(ra.wait_for(5, DELIVERY_TIMEOUT).await);
    tokio::time::sleep(QUIET_PERIOD).await;
    assert_eq!(ra.events()[4..], [ev("new", "y")]);
}

/// Waits until Redis counts `n` subscribers to `channel`.
async fn wait_for_subscribers(url: &str, channel: &str, n: i64) {
    let mut probe = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let (_, count): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut probe)
            .await
            .unwrap();
        if count == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{channel}: {count} subscribers, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Dropping a node closes its connections: its subscriptions go away with it.
#[tokio::test]
async fn dropping_a_node_unsubscribes_it() {
    let Some(url) = redis_url().await else { return };
    let p = prefix();
    let (a, _) = node(&url, &p).await;
    let (b, _) = node(&url, &p).await;
    a.subscribe("t").await.unwrap();
    b.subscribe("t").await.unwrap();
    b.subscribe("t").await.unwrap();
    wait_for_subscribers(&url, &format!("{p}t"), 2).await;
    drop(a);
    wait_for_subscribers(&url, &format!("{p}t"), 1).await;
    b.unsubscribe("t").await.unwrap();
    wait_for_subscribers(&url, &format!("{p}t"), 1).await;
    b.unsubscribe("t").await.unwrap();
    wait_for_subscribers(&url, &format!("{p}t"), 0).await;
    b.ping().await.unwrap();
}

/// A subscribe whose caller stops waiting leaves nothing behind: no count, no
/// subscription in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_subscribes_are_undone() {
    let Some(url) = redis_url().await else { return };
    let p = prefix();
    let (a, ra) = node(&url, &p).await;
    let mut completed = 0;
    for _ in 0..20 {
        // Polled once, then dropped (unless done at once: a real interest, then,
        // undone below).
        tokio::select! {
            biased;
            outcome = a.subscribe("t") => {
                outcome.unwrap();
                completed += 1;
            }
            () = std::future::ready(()) => {}
        }
    }
    for _ in 0..completed {
        a.unsubscribe("t").await.unwrap();
    }
    // The abandoned subscribes complete on their own, then are undone.
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    while !format!("{a:?}").contains("topics: 0") {
        assert!(Instant::now() < deadline, "not undone: {a:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(QUIET_PERIOD).await;
    assert!(format!("{a:?}").contains("topics: 0"), "{a:?}");
    wait_for_subscribers(&url, &format!("{p}t"), 0).await;
    a.subscribe("s").await.unwrap();
    a.publish("t", Bytes::from_static(b"lost")).await.unwrap();
    a.publish("s", Bytes::from_static(b"sentinel"))
        .await
        .unwrap();
    assert!(ra.wait_for(1, DELIVERY_TIMEOUT).await);
    tokio::time::sleep(QUIET_PERIOD).await;
    assert_eq!(ra.events(), [ev("s", "sentinel")]);
    // One subscribe is one interest, whatever was abandoned before.
    a.subscribe("t").await.unwrap();
    a.unsubscribe("t").await.unwrap();
    wait_for_subscribers(&url, &format!("{p}t"), 0).await;
    let debug = format!("{a:?}");
    assert!(debug.contains("topics: 1"), "{debug}");
}
