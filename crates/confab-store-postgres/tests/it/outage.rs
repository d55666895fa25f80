//! A node that cannot reach PostgreSQL answers every call with
//! `StoreError::Unavailable` within its bounds — it never hangs — and works again
//! when the server is back. The outages are made by a TCP proxy on loopback that can
//! refuse and cut connections (down) or hold every byte (stalled).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use confab_store::{RoomError, RoomLimits, Store, StoreError};
use confab_store_postgres::{PgConfig, PgStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::config::Host;

use crate::{text, with_db};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward both ways.
    Up,
    /// Accept and keep connections, forward nothing.
    Stalled,
    /// Close every connection, accept none.
    Down,
}

struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (mode, rx) = watch::channel(Mode::Up);
        let task = tokio::spawn(accept(listener, upstream, rx));
        Self { addr, mode, task }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Down);
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *mode.borrow() == Mode::Down {
            drop(client);
            continue;
        }
        tokio::spawn(serve(client, upstream, mode.clone()));
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut down = mode.clone();
    tokio::select! {
        () = pump(client_read, server_write, mode.clone()) => {}
        () = pump(server_read, client_write, mode) => {}
        _ = down.wait_for(|m| *m == Mode::Down) => {}
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0_u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            let now = *mode.borrow_and_update();
            match now {
                Mode::Up => break,
                Mode::Down => return,
                Mode::Stalled => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The store's URL rewritten to go through `proxy`.
fn through(url: &str, proxy: SocketAddr) -> Option<String> {
    let config: tokio_postgres::Config = url.parse().ok()?;
    let user = config.get_user().unwrap_or("postgres");
    let dbname = config.get_dbname().unwrap_or(user);
    Some(format!(
        "host={} port={} user={user} dbname={dbname}",
        proxy.ip(),
        proxy.port()
    ))
}

fn upstream_of(url: &str) -> Option<SocketAddr> {
    let config: tokio_postgres::Config = url.parse().ok()?;
    let Some(Host::Tcp(host)) = config.get_hosts().first() else {
        return None;
    };
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}").parse().ok()
}

/// Short bounds, so that the outages below take a few seconds in all.
fn tight(url: String, schema: &str) -> PgConfig {
    PgConfig {
        schema: schema.to_owned(),
        pool_size: 4,
        connect_timeout: Duration::from_millis(500),
        statement_timeout: Duration::from_secs(1),
        call_timeout: Duration::from_millis(1_500),
        ..PgConfig::new(url)
    }
}

/// Asserts `result` is `Unavailable` and came within the call bound (plus slack).
fn assert_unavailable<T: std::fmt::Debug>(
    result: &Result<T, StoreError>,
    started: Instant,
    what: &str,
) {
    let took = started.elapsed();
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{what}: expected Unavailable, got {result:?}"
    );
    assert!(
        took < Duration::from_millis(2_500),
        "{what}: took {took:?}, beyond the call bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_postgres_gives_unavailable_and_recovery_follows() {
    with_db(|db| async move {
        let Some(upstream) = upstream_of(&db.url) else {
            eprintln!("skipped: the outage test needs a TCP host in {}", db.url);
            return;
        };
        let proxy = Proxy::start(upstream).await;
        let url = through(&db.url, proxy.addr).expect("proxy url");
        let schema = db.fresh_schema();
        let store = PgStore::connect_with(tight(url, &schema))
            .await
            .expect("connect through the proxy");
        store.ping().await.expect("ping");
        let first = store
            .append_peer(text("a", "b", 1, 1))
            .await
            .expect("append");
        assert_eq!(first.message.inbox_seq, 1);

        // Down: connections cut, new ones refused.
        proxy.set(Mode::Down);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        assert_unavailable(&store.ping().await, t, "ping while down");
        let t = Instant::now();
        assert_unavailable(
            &store.append_peer(text("a", "b", 2, 2)).await,
            t,
            "append while down",
        );
        let t = Instant::now();
        let join = store
            .join_room(1, "r", "a", "A", 1, RoomLimits::default())
            .await
            .map_err(|e| match e {
                RoomError::Store(e) => e,
                other => StoreError::Corrupt(format!("unexpected {other:?}")),
            });
        assert_unavailable(&join, t, "join while down");

        // Back: the next calls open new connections.
        proxy.set(Mode::Up);
        store.ping().await.expect("ping after the server is back");
        let second = store
            .append_peer(text("a", "b", 2, 2))
            .await
            .expect("append");
        assert_eq!(second.message.inbox_seq, 2, "nothing was stored while down");

        // Stalled: the pooled connection's query is never answered, new connections
        // never finish their handshake. Calls end at the call bound.
        proxy.set(Mode::Stalled);
        let t = Instant::now();
        assert_unavailable(&store.ping().await, t, "ping on a stalled connection");
        let t = Instant::now();
        assert_unavailable(
            &store.inbox_after(1, "b", 0, 10).await,
            t,
            "read while stalled",
        );
        let t = Instant::now();
        assert_unavailable(
            &store.append_peer(text("a", "b", 3, 3)).await,
            t,
            "append while stalled",
        );

        // Back again: the stalled connections were dropped, not reused.
        proxy.set(Mode::Up);
        let mut recovered = false;
        for _ in 0..10 {
            if store.ping().await.is_ok() {
                recovered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(recovered, "ping works again after the stall");
        let retry = store
            .append_peer(text("a", "b", 3, 3))
            .await
            .expect("append");
        let page = store.inbox_after(1, "b", 0, 10).await.expect("inbox");
        assert_eq!(
            page.messages
                .iter()
                .map(|m| m.inbox_seq)
                .collect::<Vec<_>>(),
            vec![1, 2, 3],
            "an append cut off by the stall either committed once or not at all: {retry:?}"
        );
    })
    .await;
}

/// No server at all: connect fails fast with `Unavailable` naming the target (no
/// database needed for this one).
#[tokio::test]
async fn connecting_to_nothing_fails_fast() {
    // A port nobody listens on: bind one, then free it.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let t = Instant::now();
    let err = PgStore::connect_with(tight(format!("postgres://confab@{addr}/nowhere"), "confab"))
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(err, StoreError::Unavailable(ref m) if m.contains(&addr.to_string())),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // A server that accepts and never answers: bounded by the connect timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let t = Instant::now();
    let err = PgStore::connect_with(tight(format!("postgres://confab@{addr}/nowhere"), "confab"))
        .await
        .expect_err("nothing answers");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    holder.abort();
}
