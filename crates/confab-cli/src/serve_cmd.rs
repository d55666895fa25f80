//! `confab serve`: run the server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use confab_server::config::{AppConfig, parse_app_spec};
use confab_server::{Config, Options, Server};

/// Flags of `confab serve`. Each overrides the config file and `CONFAB_*` variables.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (HTTP and WebSocket). [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory for the database and uploaded logs. [default: ./confab-data]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Host an app: APPID:SECRET (repeatable). Given apps replace the development app.
    #[arg(long = "app", value_name = "APPID:SECRET", value_parser = parse_app_arg)]
    apps: Vec<(u32, String)>,
    /// Where data is kept: "sqlite" (under --data) or a postgres:// URL shared by
    /// several nodes. [default: sqlite]
    #[arg(long, value_name = "sqlite|postgres://...")]
    store: Option<String>,
    /// Fan-out between nodes: "local" (one node) or a redis:// URL shared by
    /// several nodes. [default: local]
    #[arg(long, value_name = "local|redis://...")]
    broker: Option<String>,
    /// A TOML config file (see docs/config.md for every setting and its default).
    #[arg(long, value_name = "FILE", env = "CONFAB_CONFIG")]
    config: Option<PathBuf>,
}

fn parse_app_arg(s: &str) -> Result<(u32, String), String> {
    parse_app_spec(s)
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(data) = args.data {
        config.data_dir = data;
    }
    if let Some(store) = args.store {
        config.store = store;
    }
    if let Some(broker) = args.broker {
        config.broker = broker;
    }
    if !args.apps.is_empty() {
        config.apps = args
            .apps
            .into_iter()
            .map(|(id, secret)| AppConfig {
                id,
                secret,
                name: String::new(),
                limits: Default::default(),
            })
            .collect();
    }
    config.validate()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONFAB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let data_dir = config.data_dir.clone();
    // Never print credentials that may sit in a URL.
    let redact = |url: &str| match url.split_once('@') {
        Some((scheme_user, host)) => {
            format!(
                "{}://…@{host}",
                scheme_user.split("://").next().unwrap_or("")
            )
        }
        None => url.to_owned(),
    };
    let store = redact(&config.store);
    let broker = redact(&config.broker);
    let listener = bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let server = Server::prepare(config, Options::default()).await?;
    println!(
        "confab {} serving on http://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    println!("  demo chat page:     http://{addr}/  (open it in two browser windows)");
    println!("  web SDK:            http://{addr}/sdk/zim.js  (import {{ ZIM }} from it)");
    println!("  WebSocket endpoint: ws://{addr}/ws");
    println!("  data directory:     {}", data_dir.display());
    println!("  store / broker:     {store} / {broker}");
    println!(
        "  health:             http://{addr}/healthz, http://{addr}/readyz, http://{addr}/metrics"
    );
    match server.dev_app() {
        Some(dev) => {
            println!(
                "  development app (kept in the data directory; configure real apps with --app):"
            );
            println!("    AppID:        {}", dev.app_id);
            println!("    ServerSecret: {}", dev.secret);
            println!(
                "  make a token:  confab token generate --app-id {} --secret {} --user alice",
                dev.app_id, dev.secret
            );
            println!(
                "  the demo page gets tokens for this app from POST /dev/token (development app only)"
            );
            if !addr.ip().is_loopback() {
                tracing::warn!(
                    "listening on {addr} with the development app: anyone who reaches this port \
                     can get a token for any user of it; configure apps (--app) for real use"
                );
            }
        }
        None => println!("  apps: {:?}", server.app_ids()),
    }
    println!("Press Ctrl-C to stop.");
    server.run(listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}

/// Pending connections the kernel holds for `accept` (capped by
/// `net.core.somaxconn`): a reconnect storm after a restart must not overflow the
/// queue, or clients wait a second for their SYN to be retried.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's bind on Unix: a restarted server can listen again at once (on
    // Windows the option would let another process take the port).
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
