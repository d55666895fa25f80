//! The store's hot path: appending a durable message (peer and room) to SQLite,
//! awaited one at a time (a commit, with its fsync, per message) and 64 in flight
//! (as a session pipelines its sends: one commit carries many).
//! `cargo bench -p confab-store`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use confab_store::{
    NewPeerMessage, NewRoom, NewRoomMessage, RoomLimits, SqliteConfig, SqliteStore, Store,
};
use criterion::{Criterion, criterion_group, criterion_main};

const APP: u32 = 1;
const IN_FLIGHT: u64 = 64;

fn peer(local: u64) -> NewPeerMessage {
    NewPeerMessage {
        app_id: APP,
        sender: "alice".into(),
        receiver: "bob".into(),
        kind: 1,
        body: "x".repeat(64),
        local_message_id: local,
        timestamp_ms: 1_764_120_000_000,
        priority: 3,
    }
}

fn room(local: u64) -> NewRoomMessage {
    NewRoomMessage {
        app_id: APP,
        room_id: "lobby".into(),
        sender: "alice".into(),
        kind: 1,
        body: "x".repeat(64),
        local_message_id: local,
        timestamp_ms: 1_764_120_000_000,
        priority: 3,
    }
}

/// Runs `iters` appends made by `append`, `in_flight` at a time, and returns
/// the time they took.
async fn appends<F, Fut>(iters: u64, in_flight: u64, append: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..iters {
        if running.len() as u64 >= in_flight {
            running
                .join_next()
                .await
                .expect("a running append")
                .expect("append task");
        }
        running.spawn(append());
    }
    while let Some(done) = running.join_next().await {
        done.expect("append task");
    }
    start.elapsed()
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        SqliteStore::open(SqliteConfig::new(dir.path().join("bench.db"))).expect("open store"),
    );
    runtime.block_on(async {
        store
            .create_room(
                NewRoom {
                    app_id: APP,
                    room_id: "lobby".into(),
                    room_name: "Lobby".into(),
                    creator: "alice".into(),
                    creator_name: "Alice".into(),
                    attributes: Vec::new(),
                    destroy_delay_secs: 0,
                    now_ms: 1_764_120_000_000,
                },
                RoomLimits::default(),
            )
            .await
            .expect("create room");
    });
    // Every append is new: (app, sender, localMessageID) is the idempotency key.
    let local = Arc::new(AtomicU64::new(1));
    let mut group = c.benchmark_group("store append (SQLite, synchronous=FULL, 64 B)");
    group.sample_size(20);
    for in_flight in [1, IN_FLIGHT] {
        group.bench_function(format!("peer, {in_flight} in flight"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(appends(iters, in_flight, || {
                    let store = store.clone();
                    let n = local.fetch_add(1, Ordering::Relaxed);
                    async move {
                        store.append_peer(peer(n)).await.expect("append peer");
                    }
                }))
            });
        });
        group.bench_function(format!("room, {in_flight} in flight"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(appends(iters, in_flight, || {
                    let store = store.clone();
                    let n = local.fetch_add(1, Ordering::Relaxed);
                    async move {
                        store.append_room(room(n)).await.expect("append room");
                    }
                }))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
