//! `kill -9` in the middle of a stream of writes loses nothing that was
//! acknowledged. The writer is this test binary itself, run as a child process on
//! the ignored test [`crash_child`].

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use confab_store::{SqliteConfig, SqliteStore, Store};

use crate::text;

const DB_ENV: &str = "CONFAB_STORE_CRASH_DB";
const SENDERS: u64 = 8;

/// The child: appends from several concurrent senders forever, printing each
/// acknowledged message, until it is killed.
#[test]
#[ignore = "run as a child process by acked_writes_survive_kill_9"]
fn crash_child() {
    let Ok(path) = std::env::var(DB_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = Arc::new(SqliteStore::open(SqliteConfig::new(path)).expect("open"));
        let mut tasks = tokio::task::JoinSet::new();
        for s in 0..SENDERS {
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                for i in 1.. {
                    let m = store
                        .append_peer(text(&format!("s{s}"), "bob", i, 1))
                        .await
                        .expect("append");
                    println!("ack s{s} {i} {}", m.message.inbox_seq);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}

#[tokio::test]
async fn acked_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "crash::crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DB_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut acked = Vec::new();
    while acked.len() < 300 {
        let line = lines.next().expect("the child ended early").expect("read");
        if let Some(ack) = line.strip_prefix("ack ") {
            acked.push(ack.to_owned());
        }
    }
    child.kill().expect("kill -9"); // SIGKILL on Unix
    child.wait().expect("reap");
    // Acks printed before the kill are acks too.
    acked.extend(
        lines
            .map_while(Result::ok)
            .filter_map(|l| l.strip_prefix("ack ").map(str::to_owned)),
    );

    let store = SqliteStore::open(SqliteConfig::new(&path)).expect("reopen after kill");
    let page = store
        .inbox_after(1, "bob", 0, 1_000_000)
        .await
        .expect("inbox");
    let held: Vec<String> = page
        .messages
        .iter()
        .map(|m| format!("{} {} {}", m.sender, m.local_message_id, m.inbox_seq))
        .collect();
    let held_set: std::collections::HashSet<&String> = held.iter().collect();
    for ack in &acked {
        assert!(
            held_set.contains(ack),
            "acknowledged `{ack}` was lost ({} held)",
            held.len()
        );
    }
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.inbox_seq).collect();
    assert_eq!(
        seqs,
        (1..=page.head).collect::<Vec<_>>(),
        "no holes, no duplicates"
    );
    assert!(held.len() >= acked.len());
    // Each sender's messages are there in its send order, without gaps.
    for s in 0..SENDERS {
        let sender = format!("s{s}");
        let locals: Vec<u64> = page
            .messages
            .iter()
            .filter(|m| m.sender == sender)
            .map(|m| m.local_message_id)
            .collect();
        assert_eq!(
            locals,
            (1..=locals.len() as u64).collect::<Vec<_>>(),
            "{sender} in order"
        );
    }
    eprintln!(
        "kill -9: {} acked, {} held after restart",
        acked.len(),
        held.len()
    );
}
