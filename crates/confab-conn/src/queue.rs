//! A bounded many-producer, one-consumer queue that costs nothing while empty.
//!
//! Every connection has two queues (publications for its session task, frames for
//! its writer task), and most connections are idle most of the time. A tokio
//! `mpsc` channel allocates a block of 32 slots when it is made; this queue
//! allocates only while items are queued and gives the space back when asked
//! ([`Receiver::shrink_if_empty`]), so an idle connection holds a few dozen bytes
//! per queue.
//!
//! Contract:
//! - [`Sender::try_push`] fails with [`PushError::Full`] when `bound` items are queued and
//!   with [`PushError::Closed`] once the receiver is gone; it never blocks.
//! - [`Sender::push_urgent`] ignores the bound and puts the item first: for the
//!   one control item (a kick, a close) that must overtake a full queue.
//! - Items come out in push order (urgent items first).
//! - [`Receiver::recv`] returns `None` once every sender is dropped and the queue
//!   is empty; dropping the receiver makes later pushes fail.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

/// The receiver is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    Full,
    Closed,
}

/// A push that did not happen: why, and the item back.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejected<T> {
    pub error: PushError,
    pub item: T,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    waker: Option<Waker>,
    receiver_alive: bool,
}

#[derive(Debug)]
struct Inner<T> {
    state: Mutex<State<T>>,
    senders: AtomicUsize,
    bound: usize,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock leaves the queue consistent (every
        // operation is a single VecDeque call), so a poisoned lock is usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The producing side. Cheap to clone.
#[derive(Debug)]
pub struct Sender<T> {
    inner: Arc<Inner<T>>,
}

/// The consuming side.
#[derive(Debug)]
pub struct Receiver<T> {
    inner: Arc<Inner<T>>,
}

/// A queue of at most `bound` items (at least 1).
pub fn bounded<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            items: VecDeque::new(),
            waker: None,
            receiver_alive: true,
        }),
        senders: AtomicUsize::new(1),
        bound: bound.max(1),
    });
    (
        Sender {
            inner: inner.clone(),
        },
        Receiver { inner },
    )
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.inner.senders.fetch_add(1, Ordering::Relaxed);
        Sender {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.inner.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last sender: wake the receiver so it sees the end.
            let waker = self.inner.lock().waker.take();
            wake(waker);
        }
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(w) = waker {
        w.wake();
    }
}

impl<T> Sender<T> {
    /// Queues `item` at the back unless `bound` items are queued or the receiver
    /// is gone; a refused item comes back in [`Rejected`].
    pub fn try_push(&self, item: T) -> Result<(), Rejected<T>> {
        let waker = {
            let mut state = self.inner.lock();
            if !state.receiver_alive {
                return Err(Rejected {
                    error: PushError::Closed,
                    item,
                });
            }
            if state.items.len() >= self.inner.bound {
                return Err(Rejected {
                    error: PushError::Full,
                    item,
                });
            }
            state.items.push_back(item);
            state.waker.take()
        };
        wake(waker);
        Ok(())
    }

    /// Queues `item` at the front, whatever the bound.
    pub fn push_urgent(&self, item: T) -> Result<(), Closed> {
        let waker = {
            let mut state = self.inner.lock();
            if !state.receiver_alive {
                return Err(Closed);
            }
            state.items.push_front(item);
            state.waker.take()
        };
        wake(waker);
        Ok(())
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.inner.lock().items.len()
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().items.is_empty()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Drop the items outside the lock.
        let _items = {
            let mut state = self.inner.lock();
            state.receiver_alive = false;
            state.waker = None;
            std::mem::take(&mut state.items)
        };
    }
}

impl<T> Receiver<T> {
    /// The next item, waiting for one; `None` when every sender is gone and
    /// nothing is queued.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            let mut state = self.inner.lock();
            if let Some(item) = state.items.pop_front() {
                return Poll::Ready(Some(item));
            }
            if self.inner.senders.load(Ordering::Acquire) == 0 {
                return Poll::Ready(None);
            }
            // Registered under the lock: a push after this sees the waker.
            match &mut state.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// Forgets the waker of a wait that was given up. A waker holds its task's
    /// memory: a writer that parks (its task ends) would otherwise keep its
    /// dead task's memory, about 0.9 KB, until the next item came.
    pub fn forget_waker(&mut self) {
        self.inner.lock().waker = None;
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().items.is_empty()
    }

    /// Whether any sender is left (without one, nothing more can be queued).
    pub fn has_senders(&self) -> bool {
        self.inner.senders.load(Ordering::Acquire) > 0
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        self.inner.lock().items.pop_front()
    }

    /// Gives the queue's memory back if nothing is queued and it holds room for
    /// more than `keep` items.
    pub fn shrink_if_empty(&mut self, keep: usize) {
        let mut state = self.inner.lock();
        if state.items.is_empty() && state.items.capacity() > keep {
            state.items = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_come_out_in_order_and_the_bound_holds() {
        let (tx, mut rx) = bounded(3);
        for i in 0..3 {
            tx.try_push(i).unwrap();
        }
        assert_eq!(tx.try_push(3).unwrap_err().error, PushError::Full);
        assert_eq!(tx.len(), 3);
        assert_eq!(rx.recv().await, Some(0));
        tx.try_push(3).unwrap();
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn a_given_up_wait_keeps_no_waker_once_forgotten() {
        use futures_util::task::{ArcWake, waker};
        struct Task;
        impl ArcWake for Task {
            fn wake_by_ref(_: &Arc<Self>) {}
        }
        let (_tx, mut rx) = bounded::<u32>(3);
        let task = Arc::new(Task);
        let w = waker(task.clone());
        {
            let recv = std::pin::pin!(rx.recv());
            let mut cx = std::task::Context::from_waker(&w);
            assert!(recv.poll(&mut cx).is_pending());
        }
        drop(w);
        // The queue still holds the waker of the wait given up...
        assert_eq!(Arc::strong_count(&task), 2);
        rx.forget_waker();
        // ...and lets it go when told.
        assert_eq!(Arc::strong_count(&task), 1);
    }

    #[tokio::test]
    async fn urgent_items_overtake_a_full_queue() {
        let (tx, mut rx) = bounded(2);
        tx.try_push(1).unwrap();
        tx.try_push(2).unwrap();
        tx.push_urgent(0).unwrap();
        assert_eq!(rx.recv().await, Some(0));
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn recv_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = bounded(4);
        let tx2 = tx.clone();
        tx.try_push(1).unwrap();
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        drop(tx2);
        assert_eq!(waiter.await.unwrap(), None);
    }

    #[tokio::test]
    async fn pushes_fail_once_the_receiver_is_gone() {
        let (tx, rx) = bounded::<u8>(4);
        drop(rx);
        assert_eq!(
            tx.try_push(1).unwrap_err(),
            Rejected {
                error: PushError::Closed,
                item: 1
            }
        );
        assert_eq!(tx.push_urgent(1), Err(Closed));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_push_from_another_task() {
        let (tx, mut rx) = bounded(1);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tokio::spawn(async move { tx.try_push(7).unwrap() })
            .await
            .unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(got, Some(7));
    }

    #[test]
    fn an_empty_queue_holds_no_item_memory() {
        let (tx, mut rx) = bounded(64);
        for i in 0..50 {
            tx.try_push(i).unwrap();
        }
        while rx.try_recv().is_some() {}
        rx.shrink_if_empty(0);
        assert_eq!(rx.inner.lock().items.capacity(), 0);
    }
}
