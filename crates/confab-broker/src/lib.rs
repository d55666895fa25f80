//! The [`Broker`] trait: carries publications on topics to every node subscribed
//! to them, and [`LocalBroker`], the in-process default for a single node.
//!
//! A node subscribes to a topic (a user's, later a room's) only while it has a local
//! session interested in it, and hands every publication it receives to its
//! [`Handler`], which fans it out to the local sessions. Payloads are opaque bytes:
//! the server publishes frames already encoded, so a message is serialized once
//! however many sessions receive it.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod local;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use local::{LocalBroker, LocalBus};

/// Receives the publications of the topics a node is subscribed to.
pub trait Handler: Send + Sync + 'static {
    /// Called once per publication on a subscribed topic, in publication order per
    /// topic. Must not block: hand the payload to bounded queues and return.
    fn on_publication(&self, topic: &str, payload: &Bytes);

    /// Called when a node's link to the other nodes is back after an outage
    /// in which publications of other nodes may have been lost for it (never
    /// for the first connection): the node catches up from its store. Must not
    /// block. The default does nothing (a broker that never loses anything).
    fn on_reconnected(&self) {}
}

/// What went wrong in a broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The backend is unreachable or failed.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Fan-out between sessions, within and across nodes.
///
/// Contract, for every implementation (checked by the `conformance` module, behind
/// the `conformance` feature):
/// - **Delivery:** a publication on topic T reaches the handler of every node that
///   is subscribed to T when the publication is made, exactly once, and no node
///   that is not subscribed. Publishing to a topic nobody is subscribed to succeeds
///   and delivers nothing.
/// - **Order:** publications on one topic from one publisher reach each handler in
///   the order they were published.
/// - **Subscriptions** are per node and counted: `subscribe` twice then
///   `unsubscribe` once leaves the node subscribed; a handler stops receiving a
///   topic once its count returns to zero.
/// - **Effect:** `subscribe` returns once the subscription is in effect, so every
///   publication made after it returns is delivered; once `unsubscribe` has returned
///   the count to zero, no publication made afterwards is. Unsubscribing a topic the
///   node is not subscribed to succeeds and changes nothing (counts never go below
///   zero).
/// - **Isolation:** topics are plain strings, matched exactly (no patterns or
///   prefixes); callers scope them by app. Payloads are arbitrary bytes, delivered
///   intact.
/// - `publish` returns once the publication is handed to the transport (for the
///   local broker: once every handler has been called).
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Adds one interest of this node in `topic`.
    async fn subscribe(&self, topic: &str) -> Result<(), BrokerError>;

    /// Removes one interest of this node in `topic`.
    async fn unsubscribe(&self, topic: &str) -> Result<(), BrokerError>;

    /// Publishes `payload` on `topic`.
    async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BrokerError>;

    /// Cheap liveness check of the backend, for readiness.
    async fn ping(&self) -> Result<(), BrokerError>;

    /// Adds `n` to the counter `key`, shared by every node of the backend, and
    /// returns the new total. A counter starts at 0 and is forgotten `ttl_secs`
    /// after the add that created it (a fixed window), so limits that must hold
    /// across nodes (per-app rate limits) can count in per-second keys. Atomic:
    /// concurrent adds from any nodes are never lost.
    async fn add_to_counter(&self, key: &str, n: u64, ttl_secs: u64) -> Result<u64, BrokerError>;
}

/// The future a [`BrokerFactory`] returns: resolves to a connected node, or the
/// reason it could not connect.
pub type BrokerFuture =
    Pin<Box<dyn Future<Output = Result<Arc<dyn Broker>, BrokerError>> + Send + 'static>>;

/// Builds a broker for one node, given the handler that receives its publications.
/// (Each backend offers a constructor of this shape; the conformance suite uses it
/// to make several "nodes" on one backend.) Asynchronous, since a remote backend
/// connects before it can serve; every node a factory builds shares its backend.
pub type BrokerFactory = Arc<dyn Fn(Arc<dyn Handler>) -> BrokerFuture + Send + Sync + 'static>;
