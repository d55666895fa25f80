//! Fan-out of one room message to N local sessions: the hub's delivery into every
//! member's outbound queue, and the queues drained as the members' writers would
//! (no sockets). A quiet room pushes each message to every member; a busy room
//! merges a window's messages into one push per member. `cargo bench -p
//! confab-server`.

use std::cell::RefCell;
use std::hint::black_box;

use confab_server::bench_support::FanoutFixture;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// Messages in one merged window (30 ms at 1,000 msg/s).
const WINDOW: usize = 30;

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    // A busy room holds messages only inside a runtime (its flush is a task).
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("fan-out, 64 B body");
    for members in [1_000usize, 10_000] {
        // Set-up and routine both use the fixture, one after the other.
        let quiet = RefCell::new(FanoutFixture::new(members, false));
        group.throughput(Throughput::Elements(members as u64));
        group.bench_function(format!("one message to {members} sessions"), |b| {
            b.iter_batched(
                || quiet.borrow_mut().publication(64),
                |publication| {
                    let mut quiet = quiet.borrow_mut();
                    quiet.publish(&publication);
                    black_box(quiet.drain())
                },
                BatchSize::SmallInput,
            );
        });
        let busy = RefCell::new(FanoutFixture::new(members, true));
        group.throughput(Throughput::Elements((members * WINDOW) as u64));
        group.bench_function(
            format!("{WINDOW} messages merged, to {members} sessions"),
            |b| {
                b.iter_batched(
                    || {
                        let mut busy = busy.borrow_mut();
                        (0..WINDOW)
                            .map(|_| busy.publication(64))
                            .collect::<Vec<_>>()
                    },
                    |publications| {
                        let mut busy = busy.borrow_mut();
                        for p in &publications {
                            busy.publish(p);
                        }
                        busy.flush();
                        black_box(busy.drain())
                    },
                    BatchSize::SmallInput,
                );
            },
        );
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
