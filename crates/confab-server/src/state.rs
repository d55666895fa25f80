//! The state shared by every connection of one server: apps with their limits and
//! rate limiters, the store and broker, the local session hub, counters.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use confab_broker::Broker;
use confab_store::Store;
use confab_token::Secret;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{Notify, watch};

use crate::clock::Clock;
use crate::config::{Config, Limits, ResolvedApp};
use crate::hub::Hub;
use crate::republish::Republisher;
use crate::rooms::Rooms;

/// One hosted app at run time.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) id: u32,
    pub(crate) secret: Secret,
    pub(crate) limits: Limits,
    /// Text + Command sends per user.
    pub(crate) user_sends: DefaultKeyedRateLimiter<String>,
    /// Text + Command sends of the whole app.
    pub(crate) app_sends: DefaultDirectRateLimiter,
    /// Barrage sends per user; the excess is dropped.
    pub(crate) barrage: DefaultKeyedRateLimiter<String>,
    /// The per-app limit shared by all nodes (used with a shared broker).
    pub(crate) global_sends: GlobalLimit,
}

/// A per-second limit shared by every node through the broker's counters. A node
/// leases a slice of the current second's budget at a time (one broker round trip
/// per slice, not per message) and spends it locally.
#[derive(Debug, Default)]
pub(crate) struct GlobalLimit {
    /// (the second the lease is for, messages left in it).
    lease: std::sync::Mutex<(i64, u64)>,
}

impl GlobalLimit {
    /// Whether one more message fits this second's budget of `rate` for the app.
    /// When the broker cannot be asked the message is allowed (the limit protects
    /// the service; it must not take it down with the broker).
    pub(crate) async fn allow(
        &self,
        broker: &dyn Broker,
        app_id: u32,
        rate: u32,
        now_secs: i64,
    ) -> bool {
        let take = |lease: &mut (i64, u64)| {
            if lease.0 != now_secs {
                *lease = (now_secs, 0);
            }
            if lease.1 > 0 {
                lease.1 -= 1;
                true
            } else {
                false
            }
        };
        if take(&mut self.lease.lock().expect("limit lock")) {
            return true;
        }
        let rate = u64::from(rate);
        let slice = (rate / 20).max(1);
        let key = format!("rl:{app_id}:{now_secs}");
        match broker.add_to_counter(&key, slice, 2).await {
            Ok(total) => {
                let before = total.saturating_sub(slice);
                let granted = slice.min(rate.saturating_sub(before));
                let mut lease = self.lease.lock().expect("limit lock");
                if lease.0 != now_secs {
                    *lease = (now_secs, 0);
                }
                lease.1 += granted;
                take(&mut lease)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the shared rate limit could not be checked; allowing");
                true
            }
        }
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl App {
    /// The room limits of this app, for the store.
    pub(crate) fn room_limits(&self) -> confab_store::RoomLimits {
        confab_store::RoomLimits {
            max_rooms_per_app: self.limits.max_rooms_per_app,
            max_rooms_per_user: self.limits.max_rooms_per_user,
            max_room_members: self.limits.max_room_members,
            ..confab_store::RoomLimits::default()
        }
    }

    pub(crate) fn new(app: ResolvedApp) -> App {
        let l = &app.limits;
        App {
            id: app.id,
            secret: app.secret,
            user_sends: RateLimiter::keyed(
                Quota::per_second(nz(l.user_send_rate)).allow_burst(nz(l.user_send_burst)),
            ),
            app_sends: RateLimiter::direct(
                Quota::per_second(nz(l.app_send_rate)).allow_burst(nz(l.app_send_rate)),
            ),
            global_sends: GlobalLimit::default(),
            barrage: RateLimiter::keyed(
                Quota::per_second(nz(l.barrage_rate)).allow_burst(nz(l.barrage_rate)),
            ),
            limits: app.limits,
        }
    }
}

/// Counters exported at `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) connections: AtomicUsize,
    pub(crate) connections_total: AtomicU64,
    pub(crate) logins_total: AtomicU64,
    pub(crate) login_failures_total: AtomicU64,
    pub(crate) messages_stored_total: AtomicU64,
    pub(crate) messages_live_total: AtomicU64,
    pub(crate) rate_limited_total: AtomicU64,
    pub(crate) slow_disconnects_total: AtomicU64,
}

impl Metrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything a connection needs, shared.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) apps: HashMap<u32, Arc<App>>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) rooms: Rooms,
    /// Stored messages whose publication failed, tried again.
    pub(crate) republish: Republisher,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Metrics,
    /// Becomes `true` when the server starts shutting down.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Told when the last open connection closed (see [`ConnectionGuard`]).
    all_closed: Notify,
    next_session_id: AtomicU64,
    next_live_id: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("apps", &self.apps.keys().collect::<Vec<_>>())
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        apps: Vec<ResolvedApp>,
        store: Arc<dyn Store>,
        broker: Arc<dyn Broker>,
        hub: Arc<Hub>,
        clock: Arc<dyn Clock>,
        shutdown: watch::Receiver<bool>,
    ) -> Shared {
        Shared {
            config,
            apps: apps
                .into_iter()
                .map(|a| (a.id, Arc::new(App::new(a))))
                .collect(),
            store,
            broker,
            hub,
            rooms: Rooms::default(),
            republish: Republisher::default(),
            clock,
            metrics: Metrics::default(),
            shutdown,
            all_closed: Notify::new(),
            next_session_id: AtomicU64::new(rand::random::<u32>().into()),
            next_live_id: AtomicU64::new(0),
        }
    }

    /// Returns once no connection is open.
    pub(crate) async fn all_closed(&self) {
        loop {
            let closed = self.all_closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.metrics.connections.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }

    pub(crate) fn next_session_id(&self) -> u64 {
        self.next_session_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A message id for an unstored message: in the upper half of the JavaScript-safe
    /// range (2^52..2^53), far above the ids the store assigns, built from the time
    /// and a counter so ids from one node never repeat.
    pub(crate) fn next_live_message_id(&self) -> u64 {
        const BASE: u64 = 1 << 52;
        // Milliseconds since 2025-01-01, times 256, plus a counter: unique per node for
        // up to 256 unstored messages per millisecond, and below 2^53 until ~2580.
        let ms = u64::try_from(self.clock.now_ms() - 1_735_689_600_000).unwrap_or(0);
        let n = self.next_live_id.fetch_add(1, Ordering::Relaxed) & 0xff;
        BASE + ((ms << 8 | n) & (BASE - 1))
    }
}

/// One open connection, counted in `confab_connections` for as long as the
/// guard lives: however its session ends (a panic included), dropping the
/// guard gives the place back, and the last one tells [`Shared::all_closed`].
#[derive(Debug)]
pub(crate) struct ConnectionGuard(Arc<Shared>);

impl ConnectionGuard {
    /// Counts a new connection, unless `max_connections` are open: then
    /// `Err(max_connections)`.
    pub(crate) fn open(shared: &Arc<Shared>) -> Result<ConnectionGuard, usize> {
        let max = shared.config.limits.max_connections;
        let counter = &shared.metrics.connections;
        let mut open = counter.load(Ordering::Relaxed);
        loop {
            if open >= max {
                return Err(max);
            }
            match counter.compare_exchange_weak(open, open + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => open = now,
            }
        }
        Metrics::inc(&shared.metrics.connections_total);
        Ok(ConnectionGuard(shared.clone()))
    }

    /// The server's shared state.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.0
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.metrics.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(max_connections: usize, dir: &std::path::Path) -> Arc<Shared> {
        let mut config = Config::default();
        config.limits.max_connections = max_connections;
        let store =
            confab_store::SqliteStore::open(confab_store::SqliteConfig::new(dir.join("confab.db")))
                .expect("store");
        let hub = Arc::new(Hub::new(HashMap::new(), crate::hub::FillStore::default()));
        let broker = crate::local_broker(hub.clone());
        let (_tx, shutdown) = watch::channel(false);
        Arc::new(Shared::new(
            config,
            Vec::new(),
            Arc::new(store),
            broker,
            hub,
            Arc::new(crate::SystemClock),
            shutdown,
        ))
    }

    /// The count holds the limit, and a connection whose task panics gives
    /// its place back; the last one to go wakes whoever waits for all to close.
    #[tokio::test]
    async fn a_panicking_connection_gives_its_place_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = shared(2, dir.path());
        let first = ConnectionGuard::open(&shared).expect("first");
        let second = ConnectionGuard::open(&shared).expect("second");
        assert_eq!(ConnectionGuard::open(&shared).err(), Some(2), "full");
        let task = tokio::spawn(async move {
            let _held = second;
            panic!("a session's bug");
        });
        assert!(task.await.expect_err("it panicked").is_panic());
        assert_eq!(shared.metrics.connections.load(Ordering::Relaxed), 1);
        let third = ConnectionGuard::open(&shared).expect("the panicked one's place");
        assert_eq!(shared.metrics.connections_total.load(Ordering::Relaxed), 3);

        let waiter = {
            let shared = shared.clone();
            tokio::spawn(async move { shared.all_closed().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "two are open");
        drop(first);
        drop(third);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken when the last closed")
            .expect("waiter");
    }
}
