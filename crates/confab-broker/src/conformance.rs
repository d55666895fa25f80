//! The conformance suite: the [`Broker`] contract as executable
//! checks, run unchanged against every backend.
//!
//! A backend's test calls [`run_all`] with a closure returning a fresh, isolated
//! backend (a new bus, a new key prefix, ...) as a [`BrokerFactory`]; each check
//! takes one such backend and builds from it the nodes it needs, each with a
//! [`Recorder`] as its handler. Every check is also public, for running one alone.
//!
//! Delivery may be asynchronous, so checks wait for what must arrive (up to
//! [`DELIVERY_TIMEOUT`]). To show that something does *not* arrive they publish it
//! first, then a sentinel the node does receive, wait for the sentinel, and then
//! allow a further [`QUIET_PERIOD`] before looking.
//!
//! Requires a Tokio runtime with time enabled (`#[tokio::test]` is enough).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{Broker, BrokerFactory, Handler};

/// How long a check waits for a publication that must arrive.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a check waits, once everything expected has arrived, before asserting
/// that nothing else did.
pub const QUIET_PERIOD: Duration = Duration::from_millis(200);

/// A [`Handler`] that records every publication, with async waits for them.
#[derive(Debug, Default)]
pub struct Recorder {
    events: Mutex<Vec<(String, Bytes)>>,
    notify: Notify,
    reconnects: std::sync::atomic::AtomicUsize,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(String, Bytes)>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every `(topic, payload)` received so far, in arrival order.
    pub fn events(&self) -> Vec<(String, Bytes)> {
        self.lock().clone()
    }

    /// The payloads received so far on `topic`, in arrival order.
    pub fn payloads(&self, topic: &str) -> Vec<Bytes> {
        self.lock()
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// How many times the broker said its link was back ([`Handler::on_reconnected`]).
    pub fn reconnects(&self) -> usize {
        self.reconnects.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many publications were received so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was received so far.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Waits until `done` holds for the events received so far, or `timeout`
    /// passes; returns whether it holds.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[(String, Bytes)]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a publication in between wakes us.
            notified.as_mut().enable();
            let holds = done(&self.lock());
            if holds {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let holds = done(&self.lock());
                return holds;
            }
        }
    }

    /// Waits until at least `n` publications were received, or `timeout` passes;
    /// returns whether they were.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |events| events.len() >= n).await
    }

    /// Waits until at least `n` publications on `topic` were received, or
    /// `timeout` passes; returns whether they were.
    pub async fn wait_for_topic(&self, topic: &str, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |events| {
            events.iter().filter(|(t, _)| t == topic).count() >= n
        })
        .await
    }
}

impl Handler for Recorder {
    fn on_publication(&self, topic: &str, payload: &Bytes) {
        self.lock().push((topic.to_owned(), payload.clone()));
        self.notify.notify_waiters();
    }

    fn on_reconnected(&self) {
        self.reconnects
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs every check, each on a fresh backend from `make_backend`. The checks run
/// concurrently (they share nothing), so the suite takes about as long as its
/// slowest check.
pub async fn run_all(make_backend: impl Fn() -> BrokerFactory) {
    let backends: [BrokerFactory; 13] = std::array::from_fn(|_| make_backend());
    tokio::join!(
        ping_succeeds(&backends[0]),
        publish_without_subscribers_succeeds(&backends[1]),
        delivers_exactly_once(&backends[2]),
        no_delivery_without_subscription(&backends[3]),
        all_subscribed_nodes_receive(&backends[4]),
        per_topic_order_is_preserved(&backends[5]),
        subscriptions_are_counted(&backends[6]),
        unsubscribe_without_subscription_succeeds(&backends[7]),
        subscriptions_are_per_node(&backends[8]),
        topics_match_exactly(&backends[9]),
        payloads_arrive_intact(&backends[10]),
        concurrent_publishers_keep_their_order(&backends[11]),
        counters_are_shared_and_expire(&backends[12]),
    );
}

/// Counters add atomically across nodes, keys are independent, and a counter is
/// forgotten after its time to live.
pub async fn counters_are_shared_and_expire(factory: &BrokerFactory) {
    let (a, _) = node(factory).await;
    let (b, _) = node(factory).await;
    assert_eq!(a.add_to_counter("rl:1", 1, 1).await.unwrap(), 1);
    assert_eq!(
        b.add_to_counter("rl:1", 5, 1).await.unwrap(),
        6,
        "shared across nodes"
    );
    assert_eq!(
        b.add_to_counter("rl:2", 2, 1).await.unwrap(),
        2,
        "keys are independent"
    );
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            node.add_to_counter("rl:c", 1, 5).await.unwrap()
        }));
    }
    let mut totals = Vec::new();
    for t in tasks {
        totals.push(t.await.unwrap());
    }
    totals.sort_unstable();
    assert_eq!(totals, (1..=20).collect::<Vec<_>>(), "no add is lost");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        a.add_to_counter("rl:1", 1, 1).await.unwrap(),
        1,
        "forgotten after its ttl"
    );
}

// ---------------------------------------------------------------------------
// Helpers

/// A new node on the factory's backend, with a fresh recorder as its handler.
async fn node(factory: &BrokerFactory) -> (Arc<dyn Broker>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::new());
    let broker = factory(recorder.clone())
        .await
        .unwrap_or_else(|e| panic!("the factory could not build a node: {e}"));
    (broker, recorder)
}

async fn subscribe(node: &Arc<dyn Broker>, topic: &str) {
    if let Err(e) = node.subscribe(topic).await {
        panic!("subscribe({topic:?}) failed: {e}");
    }
}

async fn unsubscribe(node: &Arc<dyn Broker>, topic: &str) {
    if let Err(e) = node.unsubscribe(topic).await {
        panic!("unsubscribe({topic:?}) failed: {e}");
    }
}

async fn publish(node: &Arc<dyn Broker>, topic: &str, payload: impl Into<Bytes>) {
    if let Err(e) = node.publish(topic, payload.into()).await {
        panic!("publish({topic:?}) failed: {e}");
    }
}

fn ev(topic: &str, payload: impl Into<Bytes>) -> (String, Bytes) {
    (topic.to_owned(), payload.into())
}

/// Waits until each recorder has received at least its count, then for the quiet
/// period, then asserts each has received exactly its count; returns their events.
async fn settle(check: &str, expected: &[(&Recorder, usize)]) -> Vec<Vec<(String, Bytes)>> {
    for (i, &(recorder, n)) in expected.iter().enumerate() {
        if !recorder.wait_for(n, DELIVERY_TIMEOUT).await {
            panic!(
                "{check}: node #{i} expected {n} publications within {DELIVERY_TIMEOUT:?}, got {}: {:?}",
                recorder.len(),
                Abbrev(&recorder.events()),
            );
        }
    }
    tokio::time::sleep(QUIET_PERIOD).await;
    expected
        .iter()
        .enumerate()
        .map(|(i, &(recorder, n))| {
            let events = recorder.events();
            assert_eq!(
                events.len(),
                n,
                "{check}: node #{i} received more publications than expected: {:?}",
                Abbrev(&events),
            );
            events
        })
        .collect()
}

/// Debug-prints at most a few events, long payloads cut short.
struct Abbrev<'a>(&'a [(String, Bytes)]);

impl std::fmt::Debug for Abbrev<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 20;
        const PREFIX: usize = 48;
        let mut list = f.debug_list();
        for (topic, payload) in self.0.iter().take(SHOWN) {
            if payload.len() > PREFIX {
                list.entry(&format_args!(
                    "({topic:?}, {:?}... ({} bytes))",
                    payload.slice(..PREFIX),
                    payload.len()
                ));
            } else {
                list.entry(&(topic, payload));
            }
        }
        if self.0.len() > SHOWN {
            list.entry(&format_args!("... {} more", self.0.len() - SHOWN));
        }
        list.finish()
    }
}

fn sorted(mut events: Vec<(String, Bytes)>) -> Vec<(String, Bytes)> {
    events.sort();
    events
}

// ---------------------------------------------------------------------------
// Checks

/// `ping` succeeds on a healthy backend.
pub async fn ping_succeeds(factory: &BrokerFactory) {
    let (a, _) = node(factory).await;
    if let Err(e) = a.ping().await {
        panic!("ping_succeeds: ping failed: {e}");
    }
}

/// Publishing to a topic nobody is subscribed to succeeds and delivers nothing.
pub async fn publish_without_subscribers_succeeds(factory: &BrokerFactory) {
    const CHECK: &str = "publish_without_subscribers_succeeds";
    let (publisher, rp) = node(factory).await;
    let (other, ro) = node(factory).await;
    subscribe(&other, "sentinel").await;
    publish(&publisher, "nobody", "lost").await;
    publish(&other, "nobody", "lost too").await;
    publish(&publisher, "sentinel", "end").await;
    let got = settle(CHECK, &[(&ro, 1), (&rp, 0)]).await;
    assert_eq!(got[0], [ev("sentinel", "end")], "{CHECK}");
}

/// A publication reaches a subscribed node exactly once, whichever node publishes
/// it (the subscribed node itself included), and does not reach the publisher when
/// it is not subscribed.
pub async fn delivers_exactly_once(factory: &BrokerFactory) {
    const CHECK: &str = "delivers_exactly_once";
    let (a, ra) = node(factory).await;
    let (b, rb) = node(factory).await;
    subscribe(&a, "t").await;
    publish(&b, "t", "hello").await;
    publish(&b, "t", "world").await;
    let got = settle(CHECK, &[(&ra, 2), (&rb, 0)]).await;
    assert_eq!(got[0], [ev("t", "hello"), ev("t", "world")], "{CHECK}");

    publish(&a, "t", "from myself").await;
    let got = settle(CHECK, &[(&ra, 3), (&rb, 0)]).await;
    assert_eq!(got[0][2], ev("t", "from myself"), "{CHECK}: self-delivery");
}

/// Nodes that are not subscribed to a topic, or no longer, receive nothing on it.
pub async fn no_delivery_without_subscription(factory: &BrokerFactory) {
    const CHECK: &str = "no_delivery_without_subscription";
    let (a, ra) = node(factory).await;
    let (b, rb) = node(factory).await;
    let (_c, rc) = node(factory).await;
    let (p, rp) = node(factory).await;
    subscribe(&a, "t").await;
    subscribe(&a, "s").await;
    subscribe(&b, "s").await;

    publish(&p, "t", "x").await;
    publish(&p, "s", "sentinel 1").await;
    let got = settle(CHECK, &[(&ra, 2), (&rb, 1), (&rc, 0), (&rp, 0)]).await;
    assert_eq!(
        sorted(got[0].clone()),
        [ev("s", "sentinel 1"), ev("t", "x")],
        "{CHECK}"
    );
    assert_eq!(got[1], [ev("s", "sentinel 1")], "{CHECK}");

    unsubscribe(&a, "t").await;
    publish(&p, "t", "after unsubscribe").await;
    publish(&p, "s", "sentinel 2").await;
    let got = settle(CHECK, &[(&ra, 3), (&rb, 2), (&rc, 0), (&rp, 0)]).await;
    assert_eq!(
        got[0][2],
        ev("s", "sentinel 2"),
        "{CHECK}: delivered after unsubscribe"
    );
}

/// Every subscribed node receives every publication, in order.
pub async fn all_subscribed_nodes_receive(factory: &BrokerFactory) {
    const CHECK: &str = "all_subscribed_nodes_receive";
    let mut nodes = Vec::new();
    for _ in 0..4 {
        let (n, r) = node(factory).await;
        subscribe(&n, "t").await;
        nodes.push((n, r));
    }
    let (p, rp) = node(factory).await;
    for payload in ["1", "2", "3"] {
        publish(&p, "t", payload).await;
    }
    // One of the subscribers publishes too.
    publish(&nodes[2].0, "t", "4").await;
    let mut expected: Vec<(&Recorder, usize)> = nodes.iter().map(|(_, r)| (&**r, 4)).collect();
    expected.push((&rp, 0));
    let got = settle(CHECK, &expected).await;
    // Order is promised per publisher: p's three in order; "4" (another
    // publisher's) anywhere among them (a node may hand its own publication
    // to itself first).
    let want = [ev("t", "1"), ev("t", "2"), ev("t", "3")];
    for (i, events) in got.iter().take(4).enumerate() {
        let from_p: Vec<_> = events.iter().filter(|e| e.1 != "4").cloned().collect();
        assert_eq!(from_p, want, "{CHECK}: node #{i}: {events:?}");
        assert_eq!(
            events.iter().filter(|e| e.1 == "4").count(),
            1,
            "{CHECK}: node #{i}: {events:?}"
        );
    }
}

/// 1,000 publications on a topic, interleaved with 1,000 on another, reach each
/// subscribed node in publication order.
pub async fn per_topic_order_is_preserved(factory: &BrokerFactory) {
    const CHECK: &str = "per_topic_order_is_preserved";
    const N: usize = 1_000;
    let (a, ra) = node(factory).await;
    let (b, rb) = node(factory).await;
    let (p, _) = node(factory).await;
    subscribe(&a, "t").await;
    subscribe(&a, "u").await;
    subscribe(&b, "t").await;
    for i in 0..N {
        publish(&p, "t", i.to_string()).await;
        publish(&p, "u", (N - i).to_string()).await;
    }
    settle(CHECK, &[(&ra, 2 * N), (&rb, N)]).await;
    let want_t: Vec<Bytes> = (0..N).map(|i| Bytes::from(i.to_string())).collect();
    let want_u: Vec<Bytes> = (0..N).map(|i| Bytes::from((N - i).to_string())).collect();
    assert!(
        ra.payloads("t") == want_t,
        "{CHECK}: node a, topic t out of order"
    );
    assert!(
        ra.payloads("u") == want_u,
        "{CHECK}: node a, topic u out of order"
    );
    assert!(
        rb.payloads("t") == want_t,
        "{CHECK}: node b, topic t out of order"
    );
}

/// Subscriptions are counted: two subscribes deliver once, and the node stays
/// subscribed until as many unsubscribes; it can subscribe again afterwards.
pub async fn subscriptions_are_counted(factory: &BrokerFactory) {
    const CHECK: &str = "subscriptions_are_counted";
    let (a, ra) = node(factory).await;
    let (p, _) = node(factory).await;
    subscribe(&a, "s").await;
    subscribe(&a, "t").await;
    subscribe(&a, "t").await;

    publish(&p, "t", "0").await;
    publish(&p, "s", "sentinel 0").await;
    let got = settle(CHECK, &[(&ra, 2)]).await;
    assert_eq!(
        sorted(got[0].clone()),
        [ev("s", "sentinel 0"), ev("t", "0")],
        "{CHECK}: subscribed twice"
    );

    unsubscribe(&a, "t").await;
    publish(&p, "t", "1").await;
    publish(&p, "s", "sentinel 1").await;
    assert!(
        ra.wait_for_topic("t", 2, DELIVERY_TIMEOUT).await,
        "{CHECK}: subscribed twice, unsubscribed once: {:?}",
        ra.events()
    );

    unsubscribe(&a, "t").await;
    publish(&p, "t", "2").await;
    publish(&p, "s", "sentinel 2").await;
    settle(CHECK, &[(&ra, 5)]).await;
    assert_eq!(
        ra.payloads("t"),
        ["0", "1"],
        "{CHECK}: delivered after the last unsubscribe"
    );

    subscribe(&a, "t").await;
    publish(&p, "t", "3").await;
    publish(&p, "s", "sentinel 3").await;
    settle(CHECK, &[(&ra, 7)]).await;
    assert_eq!(
        ra.payloads("t"),
        ["0", "1", "3"],
        "{CHECK}: subscribed again"
    );
}

/// Unsubscribing a topic the node is not subscribed to succeeds and does not make
/// the count negative.
pub async fn unsubscribe_without_subscription_succeeds(factory: &BrokerFactory) {
    const CHECK: &str = "unsubscribe_without_subscription_succeeds";
    let (a, ra) = node(factory).await;
    let (p, _) = node(factory).await;
    subscribe(&a, "s").await;
    unsubscribe(&a, "t").await;
    unsubscribe(&a, "t").await;

    // One subscribe is enough after the stray unsubscribes...
    subscribe(&a, "t").await;
    publish(&p, "t", "1").await;
    assert!(
        ra.wait_for_topic("t", 1, DELIVERY_TIMEOUT).await,
        "{CHECK}: not delivered after stray unsubscribes then one subscribe"
    );
    // ...and one unsubscribe undoes it.
    unsubscribe(&a, "t").await;
    publish(&p, "t", "2").await;
    publish(&p, "s", "sentinel 1").await;
    settle(CHECK, &[(&ra, 2)]).await;

    // Past zero again, then once more one subscribe is enough.
    unsubscribe(&a, "t").await;
    subscribe(&a, "t").await;
    publish(&p, "t", "3").await;
    publish(&p, "s", "sentinel 2").await;
    settle(CHECK, &[(&ra, 4)]).await;
    assert_eq!(ra.payloads("t"), ["1", "3"], "{CHECK}");
}

/// One node's subscriptions do not count for another.
pub async fn subscriptions_are_per_node(factory: &BrokerFactory) {
    const CHECK: &str = "subscriptions_are_per_node";
    let (a, ra) = node(factory).await;
    let (b, rb) = node(factory).await;
    let (p, _) = node(factory).await;
    for n in [&a, &b] {
        subscribe(n, "t").await;
        subscribe(n, "s").await;
    }
    unsubscribe(&a, "t").await;
    publish(&p, "t", "1").await;
    publish(&p, "s", "sentinel 1").await;
    settle(CHECK, &[(&ra, 1), (&rb, 2)]).await;

    // b's unsubscribes are not a's: a stays subscribed.
    subscribe(&a, "t").await;
    unsubscribe(&b, "t").await;
    unsubscribe(&b, "t").await;
    publish(&p, "t", "2").await;
    publish(&p, "s", "sentinel 2").await;
    settle(CHECK, &[(&ra, 3), (&rb, 3)]).await;
    assert_eq!(ra.payloads("t"), ["2"], "{CHECK}: node a");
    assert_eq!(rb.payloads("t"), ["1"], "{CHECK}: node b");
}

/// Topics match exactly: no prefix, case folding or pattern matching (`*`, `?`,
/// `[...]` are ordinary characters).
pub async fn topics_match_exactly(factory: &BrokerFactory) {
    const CHECK: &str = "topics_match_exactly";
    const TOPICS: &[&str] = &[
        "user:1:a",
        "user:1:ab",
        "user:1:",
        "user:1",
        "user:1:a:",
        "user:1:a ",
        " user:1:a",
        "USER:1:A",
        "user:1:b",
        "user:10:a",
        "user:1:*",
        "user:1:?",
        "user:1:[ab]",
        "user:*",
        "*",
        "user:1:é",
        "user:1:e",
        "room:1:a",
    ];
    // Each node subscribes to a few of the topics above.
    let subscriptions: [&[&str]; 5] = [
        &["user:1:a"],
        &["user:1:ab", "user:1:"],
        &["user:1:*", "user:1:?", "user:1:[ab]"],
        &["user:*", "*"],
        &["user:1:é"],
    ];
    let mut nodes = Vec::new();
    for topics in subscriptions {
        let (n, r) = node(factory).await;
        for topic in topics {
            subscribe(&n, topic).await;
        }
        nodes.push((n, r));
    }
    let (p, _) = node(factory).await;
    // Everything once, then the subscribed topics again as sentinels.
    for topic in TOPICS {
        publish(&p, topic, *topic).await;
    }
    for topic in subscriptions.iter().copied().flatten() {
        publish(&p, topic, "sentinel").await;
    }
    let expected: Vec<(&Recorder, usize)> = nodes
        .iter()
        .zip(subscriptions)
        .map(|((_, r), topics)| (&**r, 2 * topics.len()))
        .collect();
    let got = settle(CHECK, &expected).await;
    for (i, (events, topics)) in got.into_iter().zip(subscriptions).enumerate() {
        let want: Vec<_> = topics
            .iter()
            .flat_map(|t| [ev(t, *t), ev(t, "sentinel")])
            .collect();
        assert_eq!(sorted(events), sorted(want), "{CHECK}: node #{i}");
    }
}

/// Payloads are opaque bytes: empty, non-UTF-8, protocol-looking and large
/// payloads all arrive intact.
pub async fn payloads_arrive_intact(factory: &BrokerFactory) {
    const CHECK: &str = "payloads_arrive_intact";
    let payloads: Vec<Bytes> = vec![
        Bytes::new(),
        Bytes::from_static(&[0]),
        Bytes::from_static(&[0xff, 0xfe, 0x00, 0x80]),
        Bytes::from_static(&[0xc3, 0x28]),
        Bytes::from_static(b"\r\n$-1\r\n*2\r\n:0\r\n+OK\r\n"),
        Bytes::from_static(b"   "),
        Bytes::from((0..=255u8).collect::<Vec<u8>>()),
        Bytes::from(
            (0..64 * 1024)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<u8>>(),
        ),
        Bytes::from_static("ünïcödé ✓".as_bytes()),
        Bytes::new(),
    ];
    let (a, ra) = node(factory).await;
    let (p, _) = node(factory).await;
    subscribe(&a, "t").await;
    for payload in &payloads {
        publish(&p, "t", payload.clone()).await;
    }
    settle(CHECK, &[(&ra, payloads.len())]).await;
    let got = ra.payloads("t");
    for (i, (got, want)) in got.iter().zip(&payloads).enumerate() {
        assert!(
            got == want,
            "{CHECK}: payload #{i} altered: {} bytes, expected {}",
            got.len(),
            want.len()
        );
    }
}

/// Several publishers on several nodes, publishing concurrently on one topic: every
/// subscribed node receives everything, each publisher's publications in its order.
pub async fn concurrent_publishers_keep_their_order(factory: &BrokerFactory) {
    const CHECK: &str = "concurrent_publishers_keep_their_order";
    const NODES: usize = 3;
    const TASKS_PER_NODE: usize = 2;
    const PUBLISHERS: usize = NODES * TASKS_PER_NODE;
    const EACH: usize = 200;
    let (a, ra) = node(factory).await;
    let (b, rb) = node(factory).await;
    subscribe(&a, "t").await;
    subscribe(&b, "t").await;

    let mut tasks = Vec::new();
    for n in 0..NODES {
        let (publisher, _) = node(factory).await;
        for t in 0..TASKS_PER_NODE {
            let publisher = Arc::clone(&publisher);
            let id = n * TASKS_PER_NODE + t;
            tasks.push(tokio::spawn(async move {
                for seq in 0..EACH {
                    publish(&publisher, "t", format!("{id}:{seq}")).await;
                    if seq % 8 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
    }
    for task in tasks {
        if let Err(e) = task.await {
            panic!("{CHECK}: a publisher failed: {e}");
        }
    }
    let got = settle(CHECK, &[(&ra, PUBLISHERS * EACH), (&rb, PUBLISHERS * EACH)]).await;
    for (i, events) in got.iter().enumerate() {
        let mut next = [0usize; PUBLISHERS];
        for (_, payload) in events {
            let text = std::str::from_utf8(payload).expect("payload was altered");
            let (id, seq) = text.split_once(':').expect("payload was altered");
            let (id, seq): (usize, usize) = (id.parse().unwrap(), seq.parse().unwrap());
            assert_eq!(
                seq, next[id],
                "{CHECK}: node #{i}: publisher {id} out of order"
            );
            next[id] += 1;
        }
        assert_eq!(next, [EACH; PUBLISHERS], "{CHECK}: node #{i}");
    }
}
