//! Stored messages whose publication failed, published again once the broker
//! takes them: a receiving node that stayed connected to the broker while
//! this node could not publish (its publishing link alone was down) learns
//! of them without a newer message.
//!
//! Only publications of stored messages come here (`Envelope::Stored`, a
//! peer message at its inbox position; `Envelope::RoomMessage`, a room's at
//! its seq): their receivers deliver each position once, so one that arrives
//! again, or after a catch-up from the store brought it, is dropped there.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use confab_broker::Broker;

/// Most publications kept for another try; past it the oldest are dropped
/// (their receivers still get them at their next catch-up from the store).
pub(crate) const MAX_KEPT: usize = 4096;

/// How often the kept publications are tried again.
pub(crate) const RETRY_EVERY: Duration = Duration::from_millis(500);

/// The node's stored publications waiting for another try, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Republisher {
    kept: Mutex<VecDeque<(String, Bytes)>>,
}

impl Republisher {
    fn kept(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, Bytes)>> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes a stored message's envelope on `topic`; if the broker
    /// cannot take it now, keeps it for another try.
    pub(crate) async fn publish(&self, broker: &dyn Broker, topic: &str, payload: Bytes) {
        if let Err(e) = broker.publish(topic, payload.clone()).await {
            tracing::warn!(error = %e, "publishing a stored message failed; it is tried again");
            self.keep(topic, payload);
        }
    }

    fn keep(&self, topic: &str, payload: Bytes) {
        let mut kept = self.kept();
        if kept.len() >= MAX_KEPT {
            kept.pop_front();
        }
        kept.push_back((topic.to_owned(), payload));
    }

    /// How many publications wait for another try.
    pub(crate) fn len(&self) -> usize {
        self.kept().len()
    }

    /// Tries the kept publications again, in order, until one fails (it and
    /// those after it stay kept); returns how many went out.
    pub(crate) async fn retry(&self, broker: &dyn Broker) -> usize {
        let mut sent = 0;
        loop {
            let Some((topic, payload)) = self.kept().pop_front() else {
                return sent;
            };
            if broker.publish(&topic, payload.clone()).await.is_err() {
                self.kept().push_front((topic, payload));
                return sent;
            }
            sent += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use confab_broker::BrokerError;

    use super::*;

    /// A broker that is down while `down` is set and records what it took.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        took: Mutex<Vec<(String, Bytes)>>,
    }

    #[async_trait]
    impl Broker for Flaky {
        async fn subscribe(&self, _: &str) -> Result<(), BrokerError> {
            Ok(())
        }
        async fn unsubscribe(&self, _: &str) -> Result<(), BrokerError> {
            Ok(())
        }
        async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BrokerError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(BrokerError::Unavailable("down".into()));
            }
            self.took.lock().unwrap().push((topic.to_owned(), payload));
            Ok(())
        }
        async fn ping(&self) -> Result<(), BrokerError> {
            Ok(())
        }
        async fn add_to_counter(&self, _: &str, n: u64, _: u64) -> Result<u64, BrokerError> {
            Ok(n)
        }
    }

    #[tokio::test]
    async fn failed_publications_go_out_again_in_order_once_the_broker_is_back() {
        let broker = Arc::new(Flaky::default());
        let r = Republisher::default();
        r.publish(broker.as_ref(), "t", Bytes::from_static(b"1"))
            .await;
        broker.down.store(true, Ordering::SeqCst);
        for p in [&b"2"[..], b"3"] {
            r.publish(broker.as_ref(), "t", Bytes::copy_from_slice(p))
                .await;
        }
        assert_eq!(r.len(), 2);
        assert_eq!(r.retry(broker.as_ref()).await, 0, "still down");
        assert_eq!(r.len(), 2);
        broker.down.store(false, Ordering::SeqCst);
        assert_eq!(r.retry(broker.as_ref()).await, 2);
        assert_eq!(r.len(), 0);
        let took: Vec<Bytes> = broker
            .took
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| p.clone())
            .collect();
        assert_eq!(took, [&b"1"[..], b"2", b"3"]);
    }

    #[tokio::test]
    async fn at_most_max_kept_wait() {
        let broker = Flaky::default();
        broker.down.store(true, Ordering::SeqCst);
        let r = Republisher::default();
        for i in 0..MAX_KEPT + 10 {
            r.publish(&broker, "t", Bytes::from(i.to_string())).await;
        }
        assert_eq!(r.len(), MAX_KEPT);
        broker.down.store(false, Ordering::SeqCst);
        r.retry(&broker).await;
        let first = broker.took.lock().unwrap()[0].1.clone();
        assert_eq!(first, Bytes::from("10"), "the oldest were dropped");
    }
}
