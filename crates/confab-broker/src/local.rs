//! The in-process broker: every node on one [`LocalBus`] sees the others'
//! publications, synchronously.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Broker, BrokerError, BrokerFactory, Handler};

/// An in-process "backend" shared by the [`LocalBroker`] nodes built on it.
///
/// Cloning is cheap and yields a handle to the same bus. A single-node server uses
/// [`LocalBroker::standalone`]; several nodes on one bus model a cluster in tests.
#[derive(Clone, Default)]
pub struct LocalBus {
    inner: Arc<BusInner>,
}

#[derive(Default)]
struct BusInner {
    topics: RwLock<HashMap<String, Topic>>,
    next_node: AtomicU64,
    /// Shared counters: value and the instant they are forgotten.
    counters: std::sync::Mutex<HashMap<String, (u64, std::time::Instant)>>,
}

/// The nodes subscribed to one topic.
struct Topic {
    /// What a publication is delivered to, one handler per subscribed node, shared
    /// with publishers in flight (rebuilt when a node joins or leaves the topic).
    handlers: Arc<[Arc<dyn Handler>]>,
    /// `(node id, subscription count)`, parallel to `handlers`; counts are ≥ 1.
    nodes: Vec<(u64, usize)>,
}

impl LocalBus {
    /// A new, empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// A factory building [`LocalBroker`] nodes on this bus.
    pub fn factory(&self) -> BrokerFactory {
        let bus = self.clone();
        Arc::new(move |handler| {
            let node: Arc<dyn Broker> = Arc::new(LocalBroker::new(&bus, handler));
            Box::pin(async move { Ok(node) })
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Topic>> {
        // Handlers never run under the lock, so a poisoned lock only means a panic
        // in this module between consistent states: the map is still usable.
        self.inner
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Topic>> {
        self.inner
            .topics
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("LocalBus");
        if let Ok(topics) = self.inner.topics.try_read() {
            s.field("topics", &topics.len());
        }
        s.finish_non_exhaustive()
    }
}

/// The in-process [`Broker`]: one node on a [`LocalBus`].
///
/// `publish` calls, in order and before returning, the handler of every node on the
/// bus subscribed to the topic at that moment (the publishing node included). No lock
/// is held while handlers run, so a handler may subscribe, unsubscribe or publish.
/// Dropping the node removes its subscriptions.
pub struct LocalBroker {
    bus: LocalBus,
    id: u64,
    handler: Arc<dyn Handler>,
}

impl LocalBroker {
    /// A node on `bus`, whose publications go to `handler`.
    pub fn new(bus: &LocalBus, handler: Arc<dyn Handler>) -> Self {
        let id = bus.inner.next_node.fetch_add(1, Ordering::Relaxed);
        Self {
            bus: bus.clone(),
            id,
            handler,
        }
    }

    /// The only node on a private bus: the broker of a single-node server.
    pub fn standalone(handler: Arc<dyn Handler>) -> Self {
        Self::new(&LocalBus::new(), handler)
    }

    /// The bus this node is on.
    pub fn bus(&self) -> &LocalBus {
        &self.bus
    }

    fn add(&self, topic: &str) {
        let mut topics = self.bus.write();
        let Some(entry) = topics.get_mut(topic) else {
            topics.insert(
                topic.to_owned(),
                Topic {
                    handlers: Arc::from([Arc::clone(&self.handler)]),
                    nodes: vec![(self.id, 1)],
                },
            );
            return;
        };
        if let Some((_, count)) = entry.nodes.iter_mut().find(|(id, _)| *id == self.id) {
            *count += 1;
            return;
        }
        entry.nodes.push((self.id, 1));
        entry.handlers = entry
            .handlers
            .iter()
            .cloned()
            .chain([Arc::clone(&self.handler)])
            .collect();
    }

    fn remove(&self, topic: &str) {
        let mut topics = self.bus.write();
        let Some(entry) = topics.get_mut(topic) else {
            return;
        };
        let Some(at) = entry.nodes.iter().position(|(id, _)| *id == self.id) else {
            return;
        };
        let count = &mut entry.nodes[at].1;
        if *count > 1 {
            *count -= 1;
            return;
        }
        if entry.nodes.len() == 1 {
            topics.remove(topic);
            return;
        }
        entry.nodes.remove(at);
        entry.handlers = without(&entry.handlers, at);
    }

    fn deliver(&self, topic: &str, payload: &Bytes) {
        // Snapshot under the read lock, call without it.
        let handlers = match self.bus.read().get(topic) {
            Some(entry) => Arc::clone(&entry.handlers),
            None => return,
        };
        for handler in handlers.iter() {
            handler.on_publication(topic, payload);
        }
    }
}

/// `handlers` without the one at `at`.
fn without(handlers: &[Arc<dyn Handler>], at: usize) -> Arc<[Arc<dyn Handler>]> {
    handlers
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != at)
        .map(|(_, h)| Arc::clone(h))
        .collect()
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        let mut topics = self.bus.write();
        topics.retain(|_, entry| {
            let Some(at) = entry.nodes.iter().position(|(id, _)| *id == self.id) else {
                return true;
            };
            if entry.nodes.len() == 1 {
                return false;
            }
            entry.nodes.remove(at);
            entry.handlers = without(&entry.handlers, at);
            true
        });
    }
}

impl fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalBroker")
            .field("node", &self.id)
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Broker for LocalBroker {
    async fn add_to_counter(&self, key: &str, n: u64, ttl_secs: u64) -> Result<u64, BrokerError> {
        let now = std::time::Instant::now();
        let mut counters = self
            .bus
            .inner
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counters.retain(|_, (_, until)| *until > now);
        let entry = counters
            .entry(key.to_owned())
            .or_insert_with(|| (0, now + std::time::Duration::from_secs(ttl_secs)));
        entry.0 = entry.0.saturating_add(n);
        Ok(entry.0)
    }

    async fn subscribe(&self, topic: &str) -> Result<(), BrokerError> {
        self.add(topic);
        Ok(())
    }

    async fn unsubscribe(&self, topic: &str) -> Result<(), BrokerError> {
        self.remove(topic);
        Ok(())
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BrokerError> {
        self.deliver(topic, &payload);
        Ok(())
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, OnceLock, Weak};

    use super::*;
    use crate::conformance::{self, Recorder};

    #[tokio::test]
    async fn conformance_current_thread() {
        conformance::run_all(|| LocalBus::new().factory()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_multi_thread() {
        conformance::run_all(|| LocalBus::new().factory()).await;
    }

    fn topic_count(bus: &LocalBus) -> usize {
        bus.read().len()
    }

    #[test]
    fn delivery_is_synchronous_and_includes_the_publisher() {
        let bus = LocalBus::new();
        let (ra, rb) = (Arc::new(Recorder::new()), Arc::new(Recorder::new()));
        let a = LocalBroker::new(&bus, ra.clone());
        let b = LocalBroker::new(&bus, rb.clone());
        a.add("t");
        b.add("t");
        a.deliver("t", &Bytes::from_static(b"x"));
        let want = vec![("t".to_owned(), Bytes::from_static(b"x"))];
        assert_eq!(ra.events(), want);
        assert_eq!(rb.events(), want);
    }

    #[test]
    fn buses_and_standalone_nodes_are_isolated() {
        let (ra, rb, rc) = (
            Arc::new(Recorder::new()),
            Arc::new(Recorder::new()),
            Arc::new(Recorder::new()),
        );
        let a = LocalBroker::standalone(ra.clone());
        let b = LocalBroker::standalone(rb.clone());
        let c = LocalBroker::new(&LocalBus::new(), rc.clone());
        for node in [&a, &b, &c] {
            node.add("t");
        }
        a.deliver("t", &Bytes::from_static(b"a"));
        assert_eq!(ra.len(), 1);
        assert!(rb.is_empty());
        assert!(rc.is_empty());
    }

    #[test]
    fn empty_topics_are_forgotten() {
        let bus = LocalBus::new();
        let a = LocalBroker::new(&bus, Arc::new(Recorder::new()));
        let b = LocalBroker::new(&bus, Arc::new(Recorder::new()));
        a.add("t");
        a.add("t");
        b.add("t");
        a.remove("u");
        a.remove("t");
        a.remove("t");
        assert_eq!(topic_count(&bus), 1);
        a.remove("t");
        b.remove("t");
        assert_eq!(topic_count(&bus), 0);
        b.remove("t");
        assert_eq!(topic_count(&bus), 0);
    }

    #[test]
    fn dropping_a_node_removes_its_subscriptions() {
        let bus = LocalBus::new();
        let ra = Arc::new(Recorder::new());
        let a = LocalBroker::new(&bus, ra.clone());
        let b = LocalBroker::new(&bus, Arc::new(Recorder::new()));
        a.add("t");
        b.add("t");
        b.add("t");
        b.add("only-b");
        drop(b);
        assert_eq!(topic_count(&bus), 1);
        a.deliver("t", &Bytes::from_static(b"x"));
        assert_eq!(ra.len(), 1);
        drop(a);
        assert_eq!(topic_count(&bus), 0);
    }

    /// Reacts to each publication by (un)subscribing and publishing through the
    /// broker that delivered it: must not deadlock.
    #[derive(Debug, Default)]
    struct Reentrant {
        broker: OnceLock<Weak<LocalBroker>>,
        seen: Mutex<Vec<Bytes>>,
    }

    impl Handler for Reentrant {
        fn on_publication(&self, topic: &str, payload: &Bytes) {
            self.seen.lock().unwrap().push(payload.clone());
            let Some(broker) = self.broker.get().and_then(Weak::upgrade) else {
                return;
            };
            if topic == "t" && payload.as_ref() == b"go" {
                broker.add("u");
                broker.remove("t");
                broker.deliver("t", &Bytes::from_static(b"lost"));
                broker.deliver("u", &Bytes::from_static(b"nested"));
                broker.remove("u");
            }
        }
    }

    #[test]
    fn handlers_may_call_back_into_the_broker() {
        let bus = LocalBus::new();
        let handler = Arc::new(Reentrant::default());
        let broker = Arc::new(LocalBroker::new(&bus, handler.clone()));
        handler.broker.set(Arc::downgrade(&broker)).unwrap();
        broker.add("t");
        broker.deliver("t", &Bytes::from_static(b"go"));
        assert_eq!(
            *handler.seen.lock().unwrap(),
            [Bytes::from_static(b"go"), Bytes::from_static(b"nested")]
        );
        assert_eq!(topic_count(&bus), 0);
    }

    /// A publication goes to the nodes subscribed when it was made, even if one of
    /// them leaves while it is being delivered.
    #[test]
    fn delivery_uses_the_subscribers_at_publish_time() {
        #[derive(Debug)]
        struct Evict(OnceLock<Arc<LocalBroker>>);
        impl Handler for Evict {
            fn on_publication(&self, topic: &str, _: &Bytes) {
                if let Some(other) = self.0.get() {
                    other.remove(topic);
                }
            }
        }
        let bus = LocalBus::new();
        let evict = Arc::new(Evict(OnceLock::new()));
        let first = LocalBroker::new(&bus, evict.clone());
        let rec = Arc::new(Recorder::new());
        let second = Arc::new(LocalBroker::new(&bus, rec.clone()));
        evict.0.set(Arc::clone(&second)).unwrap();
        first.add("t");
        second.add("t");
        first.deliver("t", &Bytes::from_static(b"1"));
        first.deliver("t", &Bytes::from_static(b"2"));
        assert_eq!(rec.payloads("t"), [Bytes::from_static(b"1")]);
    }

    #[test]
    fn debug_output() {
        let bus = LocalBus::new();
        let node = LocalBroker::new(&bus, Arc::new(Recorder::new()));
        node.add("t");
        let text = format!("{node:?}");
        assert!(text.contains("LocalBroker"), "{text}");
        assert!(text.contains("topics: 1"), "{text}");
    }
}
