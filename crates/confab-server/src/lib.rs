//! The confab server as a library.
//!
//! [`Server::prepare`] opens the backends and resolves the apps (creating the
//! development app on first start when none is configured); [`Server::run`] serves
//! HTTP and WebSocket on a listener until the shutdown future completes, then
//! tells clients to reconnect, drains, and closes the store. [`run`] does both.
//! No globals: a test starts a server on `127.0.0.1:0` with its own data directory.

mod backends;
#[doc(hidden)]
pub mod bench_support;
pub mod clock;
pub mod config;
mod envelope;
mod http;
mod http_error;
mod hub;
mod logs;
#[cfg(test)]
mod no_import_loops;
mod republish;
mod rooms;
mod send;
mod seq_order;
mod sequencer;
mod session;
mod state;
mod sweeper;
mod validate;
mod web;
mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use confab_store::{AppRecord, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use backends::{local_broker, open_broker, open_store};
pub use clock::{Clock, SystemClock};
pub use config::{AppConfig, Config, ConfigError, Limits};

use crate::config::ResolvedApp;
use crate::hub::{Hub, MergeSettings};
use crate::state::Shared;

/// Name under which the development app is kept in the store.
const DEV_APP_NAME: &str = "development app";

/// Replacements for the configured backends and clock, for tests and embedders.
#[derive(Default)]
pub struct Options {
    /// Use this store instead of opening the configured one.
    pub store: Option<Arc<dyn Store>>,
    /// Build the node's broker with this instead of the configured one (for example
    /// a node on a shared in-process bus, to test several nodes in one process).
    pub broker: Option<confab_broker::BrokerFactory>,
    /// Use this clock instead of the system clock.
    pub clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("store", &self.store.is_some())
            .field("broker", &self.broker.is_some())
            .field("clock", &self.clock)
            .finish()
    }
}

/// The development app, when the server made or reused one.
#[derive(Clone, PartialEq, Eq)]
pub struct DevApp {
    /// Its AppID.
    pub app_id: u32,
    /// Its ServerSecret (shown to the operator once at start-up; never logged).
    pub secret: String,
}

impl std::fmt::Debug for DevApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevApp")
            .field("app_id", &self.app_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A server ready to run.
pub struct Server {
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    dev_app: Option<DevApp>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("apps", &self.app_ids())
            .field("dev_app", &self.dev_app)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the backends and resolves the apps.
    ///
    /// # Errors
    /// When the configuration is invalid or a backend cannot be opened.
    pub async fn prepare(config: Config, options: Options) -> anyhow::Result<Server> {
        config.validate()?;
        let store = match options.store {
            Some(store) => store,
            None => open_store(&config).await?,
        };
        let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let (apps, dev_app) = if config.apps.is_empty() {
            let dev = dev_app(store.as_ref(), clock.as_ref()).await?;
            let app = ResolvedApp {
                id: dev.app_id,
                secret: confab_token::Secret::new(&dev.secret)
                    .context("the stored development app has an invalid secret")?,
                name: DEV_APP_NAME.into(),
                limits: config.limits.clone(),
            };
            (vec![app], Some(dev))
        } else {
            (config.resolved_apps()?, None)
        };
        let merge = apps
            .iter()
            .map(|app| (app.id, MergeSettings::from_limits(&app.limits)))
            .collect();
        let hub = Arc::new(Hub::new(merge, hub::FillStore(Some(store.clone()))));
        let broker = match options.broker {
            Some(make) => make(hub.clone())
                .await
                .context("cannot connect the broker")?,
            None => open_broker(&config, hub.clone()).await?,
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(
            config,
            apps,
            store,
            broker,
            hub,
            clock,
            shutdown_rx,
        ));
        Ok(Server {
            shared,
            shutdown_tx,
            dev_app,
        })
    }

    /// The development app, if no apps were configured.
    #[must_use]
    pub fn dev_app(&self) -> Option<&DevApp> {
        self.dev_app.as_ref()
    }

    /// A handle that serves WebSocket connections accepted elsewhere (behind
    /// another listener, or a test's in-memory pipe) on this server.
    #[must_use]
    pub fn connector(&self) -> Connector {
        Connector {
            shared: self.shared.clone(),
        }
    }

    /// The AppIDs served, ascending.
    #[must_use]
    pub fn app_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.shared.apps.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Serves on `listener` until `shutdown` completes; then stops accepting, tells
    /// every client to reconnect (`disconnect` reason `serverShutdown`), waits up to
    /// five seconds for sessions to end, and closes the store.
    ///
    /// # Errors
    /// When serving fails.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Server {
            shared,
            shutdown_tx,
            dev_app,
        } = self;
        let dev_tokens = web::DevTokens::new(
            dev_app.and_then(|dev| shared.apps.get(&dev.app_id).cloned()),
            shared.clock.clone(),
        );
        let retention = spawn_retention(shared.clone());
        let room_tasks = sweeper::spawn_room_tasks(shared.clone());
        let app = http::router(shared.clone()).merge(web::router(dev_tokens));
        let tx = shutdown_tx.clone();
        let stopped_at = confab_conn::serve(
            listener,
            app,
            async move {
                shutdown.await;
                let _ = tx.send(true);
            },
            SHUTDOWN_GRACE,
        )
        .await;
        let _ = shutdown_tx.send(true);
        retention.abort();
        room_tasks.abort();
        // Sessions saw the signal; give them time to say goodbye (five seconds
        // from the signal, requests in flight included).
        let _ = tokio::time::timeout_at(stopped_at + SHUTDOWN_GRACE, shared.all_closed()).await;
        tracing::info!("server stopped");
        Ok(())
    }
}

/// How long a server that was told to stop waits for requests in flight and
/// sessions to end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves WebSocket connections that were accepted elsewhere (see
/// [`Server::connector`]). Cheap to clone.
#[derive(Clone)]
pub struct Connector {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

/// The server already holds `max_connections` connections.
#[derive(Debug, Clone, thiserror::Error)]
#[error("server full: {max} connections")]
pub struct ServerFull {
    /// The limit reached.
    pub max: usize,
}

impl Connector {
    /// Runs a session on `io`, a WebSocket whose opening handshake is already
    /// done (or never needed: one end of a `tokio::io::duplex`), as `/ws` does
    /// after its upgrade: the session counts against `max_connections`, sees
    /// the server's shutdown, and is waited for by [`Server::run`]. Spawns the
    /// session's task and returns at once.
    ///
    /// # Errors
    /// [`ServerFull`] when the server holds `max_connections` already.
    pub fn serve_websocket<T>(&self, io: T) -> Result<(), ServerFull>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let guard = state::ConnectionGuard::open(&self.shared).map_err(|max| ServerFull { max })?;
        let (reader, writer) = confab_conn::ws::split_io(io, http::max_message(&self.shared));
        tokio::spawn(session::run(guard, reader, writer));
        Ok(())
    }

    /// The node's metrics in Prometheus' text format, as `/metrics` answers
    /// (for a test that has no HTTP connection to ask on).
    #[must_use]
    pub fn metrics_text(&self) -> String {
        http::metrics_text(&self.shared)
    }
}

/// Serves `config` on `listener` until `shutdown` completes.
///
/// # Errors
/// As [`Server::prepare`] and [`Server::run`].
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Server::prepare(config, Options::default())
        .await?
        .run(listener, shutdown)
        .await
}

/// The stored development app, or a new one (random AppID and secret), stored.
async fn dev_app(store: &dyn Store, clock: &dyn Clock) -> anyhow::Result<DevApp> {
    let apps = store
        .list_apps()
        .await
        .context("cannot read apps from the store")?;
    if let Some(app) = apps.into_iter().find(|a| a.name == DEV_APP_NAME) {
        return Ok(DevApp {
            app_id: app.app_id,
            secret: app.secret,
        });
    }
    use rand::Rng as _;
    use rand::distributions::Alphanumeric;
    let mut rng = rand::thread_rng();
    let app_id = rng.gen_range(1_000_000_000..=4_000_000_000u32);
    let secret: String = (&mut rng)
        .sample_iter(&Alphanumeric)
        .take(confab_token::SECRET_LEN)
        .map(char::from)
        .collect::<String>()
        .to_ascii_lowercase();
    store
        .put_app(&AppRecord {
            app_id,
            secret: secret.clone(),
            name: DEV_APP_NAME.into(),
            created_ms: clock.now_ms(),
        })
        .await
        .context("cannot store the development app")?;
    Ok(DevApp { app_id, secret })
}

fn spawn_retention(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let secs = shared.config.retention_secs;
        if secs == 0 {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let retention_ms = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            let cutoff = shared.clock.now_ms().saturating_sub(retention_ms);
            match shared.store.purge_before(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "retention removed old messages"),
                Err(e) => tracing::warn!(error = %e, "retention failed"),
            }
        }
    })
}
