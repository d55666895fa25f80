//! The per-room publication sequencer: stored room messages leave this node in
//! seq order.
//!
//! Invariant: on one node, stored room messages are published in seq order. Each
//! send registers with the room's [`Sequencer`] before appending; after the append
//! the message waits until every lower seq of this node has been published (or
//! failed), so every receiver sees the room in the same order as the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use confab_broker::Broker;

use crate::envelope::room_topic;
use crate::republish::Republisher;

/// (app, room).
pub(crate) type RoomKey = (u32, String);

#[derive(Debug, Default)]
struct RoomSeqState {
    /// The ticket the next append on this node gets.
    next_ticket: u64,
    /// Tickets of appends started on this node and not yet finished.
    unfinished: std::collections::BTreeSet<u64>,
    /// Appended messages waiting to be published, by seq, each with the ticket
    /// this node would have given next when its append finished (see
    /// [`Sequencer::finish`]).
    pending: BTreeMap<u64, (u64, Bytes)>,
    /// The newest seq published from this node (or known when the state was made).
    last_published: u64,
}

/// A registered append (see [`Sequencer::start`]). One that is dropped without
/// [`Sequencer::finish`] (its session's task ended abnormally) unregisters
/// itself, so the room's later messages are not held back forever.
#[derive(Debug)]
pub(crate) struct Ticket {
    n: u64,
    /// The room's state while the ticket is unfinished.
    state: Option<Arc<tokio::sync::Mutex<RoomSeqState>>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        let n = self.n;
        if let Ok(mut st) = state.try_lock() {
            st.unfinished.remove(&n);
        } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                state.lock().await.unfinished.remove(&n);
            });
        }
    }
}

/// An append started by [`Sequencer::start`].
pub(crate) type Started<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Polls `fut` once (an append queues itself with the store on its first poll)
/// and returns it to be awaited later; a future that finished at once comes back
/// as a ready one.
pub(crate) async fn poll_once<T: Send + 'static>(mut fut: Started<T>) -> Started<T> {
    match std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await {
        std::task::Poll::Ready(done) => Box::pin(std::future::ready(done)),
        std::task::Poll::Pending => fut,
    }
}

/// Orders stored room publications by seq (see the module invariant).
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    rooms: tokio::sync::Mutex<HashMap<RoomKey, Arc<tokio::sync::Mutex<RoomSeqState>>>>,
}

impl Sequencer {
    async fn state(
        &self,
        key: &RoomKey,
        head: impl FnOnce() -> u64,
    ) -> Arc<tokio::sync::Mutex<RoomSeqState>> {
        let mut rooms = self.rooms.lock().await;
        rooms
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(RoomSeqState {
                    last_published: head(),
                    ..RoomSeqState::default()
                }))
            })
            .clone()
    }

    /// Registers an append and starts it: `start` makes the append's future for
    /// its ticket, and that future is polled once (an append queues itself with
    /// the store on its first poll). `head` is the room's current seq head, used
    /// if this node has no state for the room yet.
    ///
    /// Await the started future, then hand its result to [`Sequencer::finish`]
    /// with the ticket.
    pub(crate) async fn start<T: Send + 'static>(
        &self,
        key: &RoomKey,
        head: u64,
        start: impl FnOnce(Ticket) -> Started<T>,
    ) -> Started<T> {
        let state = self.state(key, || head).await;
        Self::start_in(state, start).await
    }

    /// [`Sequencer::start`] for a room this node already sequences; otherwise
    /// nothing starts and `start` comes back as the `Err` (read the room's head,
    /// then call `start`).
    pub(crate) async fn try_start<T, F>(&self, key: &RoomKey, start: F) -> Result<Started<T>, F>
    where
        T: Send + 'static,
        F: FnOnce(Ticket) -> Started<T>,
    {
        let known = self.rooms.lock().await.get(key).cloned();
        match known {
            Some(state) => Ok(Self::start_in(state, start).await),
            None => Err(start),
        }
    }

    async fn start_in<T: Send + 'static>(
        state: Arc<tokio::sync::Mutex<RoomSeqState>>,
        start: impl FnOnce(Ticket) -> Started<T>,
    ) -> Started<T> {
        let mut st = state.lock().await;
        let n = st.next_ticket;
        st.next_ticket += 1;
        st.unfinished.insert(n);
        let ticket = Ticket {
            n,
            state: Some(Arc::clone(&state)),
        };
        let started = poll_once(start(ticket)).await;
        drop(st);
        started
    }

    /// Finishes an append: `gapless` is the store's `single_node` (see
    /// below); `published` is `Some((seq, envelope))` for a new message,
    /// `None` for a failure or a duplicate. Publishes whatever is now in order.
    ///
    /// Invariant: a message is published only after every append of this node that
    /// could still get a lower seq has finished, so this node's publications of a
    /// room are in seq order: a message waits until every append of this node
    /// started before it finished (those started later get higher seqs: this one
    /// was already committed); other nodes' seqs leave gaps here, which never hold
    /// anything back. With a store this node writes alone (`Store::single_node`)
    /// a room's seqs have no gaps, so seq `s` goes right after `s - 1` without that
    /// wait, whatever order the appends ran in.
    pub(crate) async fn finish(
        &self,
        broker: &dyn Broker,
        republish: &Republisher,
        gapless: bool,
        key: &RoomKey,
        mut ticket: Ticket,
        published: Option<(u64, Bytes)>,
    ) {
        // The ticket holds its room's state until now (finished here, not by its
        // drop): no lookup in the map of rooms.
        let Some(state) = ticket.state.take() else {
            return;
        };
        let mut st = state.lock().await;
        st.unfinished.remove(&ticket.n);
        if let Some((seq, envelope)) = published {
            let below = st.next_ticket;
            st.pending.insert(seq, (below, envelope));
        }
        let topic = room_topic(key.0, &key.1);
        while let Some((&seq, (below, _))) = st.pending.first_key_value() {
            // Every append that could still take a lower seq started before this
            // one finished; once those are done nothing lower can come.
            let waits = st.unfinished.first().is_some_and(|t| t < below);
            // Without gaps the next seq needs no wait (the common case, and any
            // order of the appends); a gap (another process wrote the file, a
            // commit whose answer was lost) falls back to the wait above.
            let held = waits && !(gapless && seq <= st.last_published + 1);
            if held {
                break;
            }
            let Some((seq, (_, envelope))) = st.pending.pop_first() else {
                break;
            };
            republish.publish(broker, &topic, envelope).await;
            st.last_published = st.last_published.max(seq);
        }
    }

    /// Holds the room's publications back while the guard lives; the guard tells the
    /// newest seq published so far (for a consistent join: catch-up up to it from the
    /// store, live pushes after it from the hub).
    pub(crate) async fn hold(&self, key: &RoomKey, head: u64) -> RoomHold {
        let state = self.state(key, || head).await;
        RoomHold(state.lock_owned().await)
    }

    /// Forgets a room (destroyed, or no local members and nothing in flight).
    pub(crate) async fn forget(&self, key: &RoomKey) {
        let mut rooms = self.rooms.lock().await;
        // Only the map holds an idle state: a caller between taking the state
        // from the map and locking it (`start`) keeps it.
        let idle = rooms.get(key).is_some_and(|state| {
            Arc::strong_count(state) == 1
                && state
                    .try_lock()
                    .is_ok_and(|st| st.unfinished.is_empty() && st.pending.is_empty())
        });
        if idle {
            rooms.remove(key);
        }
    }
}

/// See [`Sequencer::hold`].
#[derive(Debug)]
pub(crate) struct RoomHold(tokio::sync::OwnedMutexGuard<RoomSeqState>);

impl RoomHold {
    /// The newest seq published from this node.
    pub(crate) fn last_published(&self) -> u64 {
        self.0.last_published
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn unfinished(seq: &Sequencer, key: &RoomKey) -> Vec<u64> {
        let state = seq.rooms.lock().await.get(key).cloned().expect("state");
        let st = state.lock().await;
        st.unfinished.iter().copied().collect()
    }

    /// An append dropped before it finished (its session's task ended) gives its
    /// ticket back: nothing waits for it, and the idle room can be forgotten.
    #[tokio::test]
    async fn a_dropped_append_unregisters_its_ticket() {
        let seq = Sequencer::default();
        let key: RoomKey = (1, "r".into());
        let kept = seq
            .start(&key, 0, |ticket| -> Started<Ticket> {
                Box::pin(async move { ticket })
            })
            .await;
        let dropped = seq
            .start(&key, 0, |ticket| -> Started<()> {
                Box::pin(async move {
                    let _held = ticket;
                    std::future::pending::<()>().await;
                })
            })
            .await;
        assert_eq!(unfinished(&seq, &key).await, [0, 1]);
        drop(dropped);
        assert_eq!(unfinished(&seq, &key).await, [0], "the dropped one is gone");
        // The other, finished by hand as `finish` does, leaves the room idle.
        let mut ticket = kept.await;
        ticket.state = None;
        let state = seq.rooms.lock().await.get(&key).cloned().expect("state");
        state.lock().await.unfinished.remove(&ticket.n);
        drop(state);
        seq.forget(&key).await;
        assert!(seq.rooms.lock().await.get(&key).is_none(), "forgotten");
    }
}
