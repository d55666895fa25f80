//! The one place that names storage and broker backends and picks them from the
//! configuration (`store`, `broker`). Everything else sees `dyn Store` and
//! `dyn Broker`.

use std::sync::Arc;

use anyhow::Context as _;
use confab_broker::{Broker, Handler, LocalBroker};
use confab_broker_redis::RedisBroker;
use confab_store::{SqliteConfig, SqliteStore, Store};
use confab_store_postgres::PgStore;

use crate::config::Config;

/// Opens the configured store: SQLite under the data directory, or PostgreSQL.
///
/// # Errors
/// When the data directory, database or server cannot be opened.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if config.store != "sqlite" {
        let store = PgStore::connect(&config.store, &config.store_schema, config.store_pool_size)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL store: {e}"))?;
        return Ok(Arc::new(store));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the data directory {}: {e}",
            config.data_dir.display()
        )
    })?;
    let path = config.data_dir.join("confab.db");
    let store = SqliteStore::open(SqliteConfig::new(path.clone()))
        .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", path.display()))?;
    Ok(Arc::new(store))
}

/// Builds the configured broker for this node: in-process, or Redis.
///
/// # Errors
/// When Redis cannot be reached.
pub async fn open_broker(
    config: &Config,
    handler: Arc<dyn Handler>,
) -> anyhow::Result<Arc<dyn Broker>> {
    if config.broker == "local" {
        return Ok(local_broker(handler));
    }
    let broker = RedisBroker::connect(&config.broker, &config.broker_prefix, handler)
        .await
        .context("cannot connect to the Redis broker")?;
    Ok(Arc::new(broker))
}

/// The in-process broker of a single node.
pub fn local_broker(handler: Arc<dyn Handler>) -> Arc<dyn Broker> {
    Arc::new(LocalBroker::standalone(handler))
}
