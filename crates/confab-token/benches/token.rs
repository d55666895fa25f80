//! Token04 verification, done at every login. `cargo bench -p confab-token`.

use std::hint::black_box;

use confab_token::{Mode, Secret, generate, verify};
use criterion::{Criterion, criterion_group, criterion_main};

fn tokens(c: &mut Criterion) {
    let secret = Secret::new("fa94dd0f974cf2e293728a526b028271").expect("valid secret");
    let now = 1_795_654_033;
    for mode in [Mode::Gcm, Mode::Cbc] {
        let token = generate(&secret, 1_234_567_890, "alice", 3600, mode, now).expect("token");
        c.bench_function(&format!("verify ({mode})"), |b| {
            b.iter(|| {
                verify(black_box(&token), &secret, 1_234_567_890, "alice", now).expect("valid")
            });
        });
    }
}

criterion_group!(benches, tokens);
criterion_main!(benches);
