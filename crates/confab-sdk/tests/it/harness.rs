//! A real confab server in-process, a TCP proxy that can cut connections, and
//! SDK clients with helpers to wait for events.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use confab_sdk::{
    ConnectionEvent, ConnectionState, Message, UserInfo, Zim, ZimConfig, ZimEvent, ZimEvents,
};
use confab_server::{AppConfig, Config, Options, Server};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

pub(crate) const APP: u32 = 1_234_567_890;
pub(crate) const SECRET: &str = "fa94dd0f974cf2e293728a526b028271";
pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token for `user`, valid for an hour.
pub(crate) fn token(user: &str) -> String {
    let secret = confab_token::Secret::new(SECRET).unwrap();
    confab_token::generate(
        &secret,
        APP,
        user,
        3600,
        confab_token::Mode::Gcm,
        unix_now(),
    )
    .unwrap()
}

/// A token that expires `secs_left` seconds from now.
pub(crate) fn token_expiring_in(user: &str, secs_left: i64) -> String {
    let secret = confab_token::Secret::new(SECRET).unwrap();
    let ttl = 3600;
    let made = unix_now() + secs_left - ttl;
    confab_token::generate(
        &secret,
        APP,
        user,
        ttl as u64,
        confab_token::Mode::Cbc,
        made,
    )
    .unwrap()
}

pub(crate) fn user(id: &str) -> UserInfo {
    UserInfo {
        user_id: id.into(),
        user_name: format!("{id} name"),
    }
}

/// A server on 127.0.0.1 with its own data directory.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) data: PathBuf,
    dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

fn config(data: &Path) -> Config {
    Config {
        data_dir: data.to_owned(),
        apps: vec![AppConfig {
            id: APP,
            secret: SECRET.into(),
            name: "sdk tests".into(),
            limits: Default::default(),
        }],
        ..Config::default()
    }
}

impl TestServer {
    pub(crate) async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut server = Self::run_on(listener, dir.path()).await;
        server.dir = Some(dir);
        server
    }

    /// A server on `addr` (for a restart on the same port) over `data`.
    pub(crate) async fn start_at(addr: SocketAddr, data: &Path) -> TestServer {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot bind {addr} again: {e}"),
            }
        };
        Self::run_on(listener, data).await
    }

    async fn run_on(listener: TcpListener, data: &Path) -> TestServer {
        let addr = listener.local_addr().unwrap();
        let server = Server::prepare(config(data), Options::default())
            .await
            .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(listener, async {
                    let _ = stopped.await;
                })
                .await
                .map_err(|e| e.to_string())
        });
        TestServer {
            addr,
            data: data.to_owned(),
            dir: None,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Stops gracefully; returns the data directory so a new server can reuse it.
    pub(crate) async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        self.dir.take()
    }
}

/// What a [`Proxy`] does with its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Forwards both ways.
    Open,
    /// Forwards client → server only: the server acts on requests, but its
    /// replies and pushes are held back (and lost at the next cut).
    Stalled,
    /// Drops every connection and refuses new ones.
    Down,
}

/// A TCP proxy in front of a server that can stall and cut connections.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
}

impl Proxy {
    pub(crate) async fn start(target: SocketAddr) -> Proxy {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(watch::channel(Mode::Open).0);
        let modes = mode.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut rx = modes.subscribe();
                if *rx.borrow() == Mode::Down {
                    drop(inbound);
                    continue;
                }
                let mut down_rx = modes.subscribe();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = inbound.into_split();
                    let (mut server_read, mut server_write) = outbound.into_split();
                    let upstream = tokio::io::copy(&mut client_read, &mut server_write);
                    let downstream = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            if down_rx.wait_for(|m| *m == Mode::Open).await.is_err() {
                                return;
                            }
                            match server_read.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if client_write.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    };
                    tokio::select! {
                        _ = upstream => {}
                        () = downstream => {}
                        _ = rx.wait_for(|m| *m == Mode::Down) => {}
                    }
                });
            }
        });
        Proxy { addr, mode }
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub(crate) fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

/// A config for tests: quick reconnects and acknowledgements.
pub(crate) fn sdk_config(urls: Vec<String>) -> ZimConfig {
    let mut c = ZimConfig::new(APP, urls);
    c.reconnect_max_delay = Duration::from_secs(2);
    c.ack_interval = Duration::from_millis(200);
    c
}

/// An SDK instance and its events.
pub(crate) struct Sdk {
    pub(crate) zim: Zim,
    pub(crate) events: ZimEvents,
    /// Events passed over while waiting for others, in order.
    pub(crate) skipped: Vec<ZimEvent>,
}

impl Sdk {
    pub(crate) fn new(config: ZimConfig) -> Sdk {
        let zim = Zim::create(config).unwrap();
        let events = zim.events().unwrap();
        Sdk {
            zim,
            events,
            skipped: Vec::new(),
        }
    }

    /// Logs `user` in at `url` and waits for the Connected event.
    pub(crate) async fn login(url: &str, user_id: &str) -> Sdk {
        Self::login_with(sdk_config(vec![url.to_owned()]), user_id).await
    }

    pub(crate) async fn login_with(config: ZimConfig, user_id: &str) -> Sdk {
        let mut sdk = Sdk::new(config);
        sdk.zim
            .login(user(user_id), token(user_id))
            .await
            .unwrap_or_else(|e| panic!("login of {user_id}: {e}"));
        sdk.wait_for("Connected", |e| match e {
            ZimEvent::ConnectionStateChanged {
                state: ConnectionState::Connected,
                ..
            } => Some(()),
            _ => None,
        })
        .await;
        sdk
    }

    /// The next event within `within`.
    pub(crate) async fn next(&mut self, within: Duration) -> Option<ZimEvent> {
        tokio::time::timeout(within, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits for the first event `f` accepts (already skipped ones first);
    /// others are kept in `skipped`.
    pub(crate) async fn wait_for<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&ZimEvent) -> Option<T>,
    ) -> T {
        if let Some(pos) = self.skipped.iter().position(|e| f(e).is_some()) {
            let e = self.skipped.remove(pos);
            return f(&e).unwrap();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(event) = self.next(left).await else {
                panic!(
                    "no {what} event within {WAIT:?}; skipped: {:#?}",
                    self.skipped
                );
            };
            if let Some(out) = f(&event) {
                return out;
            }
            self.skipped.push(event);
        }
    }

    /// Waits for the connection state `state` with `event`.
    pub(crate) async fn wait_state(&mut self, state: ConnectionState, event: ConnectionEvent) {
        self.wait_for(&format!("{state:?}/{event:?}"), |e| match e {
            ZimEvent::ConnectionStateChanged {
                state: s, event: v, ..
            } if *s == state && *v == event => Some(()),
            _ => None,
        })
        .await;
    }

    /// Collects `n` received peer messages.
    pub(crate) async fn peer_messages(&mut self, n: usize) -> Vec<Message> {
        let mut out = Vec::new();
        while out.len() < n {
            let batch = self
                .wait_for("ReceivePeerMessage", |e| match e {
                    ZimEvent::ReceivePeerMessage { message_list, .. } => Some(message_list.clone()),
                    _ => None,
                })
                .await;
            out.extend(batch);
        }
        assert_eq!(out.len(), n, "more messages than expected: {out:#?}");
        out
    }

    /// Collects `n` received room messages.
    pub(crate) async fn room_messages(&mut self, n: usize) -> Vec<Message> {
        let mut out = Vec::new();
        while out.len() < n {
            let batch = self
                .wait_for("ReceiveRoomMessage", |e| match e {
                    ZimEvent::ReceiveRoomMessage { message_list, .. } => Some(message_list.clone()),
                    _ => None,
                })
                .await;
            out.extend(batch);
        }
        assert_eq!(out.len(), n, "more messages than expected: {out:#?}");
        out
    }

    /// Whether an event `f` accepts arrives within `within` (others are kept).
    pub(crate) async fn sees(
        &mut self,
        within: Duration,
        mut f: impl FnMut(&ZimEvent) -> bool,
    ) -> bool {
        if self.skipped.iter().any(&mut f) {
            return true;
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(event) = self.next(left).await else {
                return false;
            };
            if f(&event) {
                return true;
            }
            self.skipped.push(event);
        }
    }
}

/// A local address nothing listens on.
pub(crate) async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}
