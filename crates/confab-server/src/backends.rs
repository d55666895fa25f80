//! The one place that names storage and broker backends and picks them from the
//! configuration. Everything else sees `dyn Store` and `dyn Broker`.

use std::sync::Arc;

use confab_broker::{Broker, Handler, LocalBroker};
use confab_store::{SqliteConfig, SqliteStore, Store};

use crate::config::Config;

/// Opens the configured store (today: SQLite under the data directory).
///
/// # Errors
/// When the data directory or database cannot be opened.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
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

/// Builds the configured broker for this node (today: in-process).
pub fn local_broker(handler: Arc<dyn Handler>) -> Arc<dyn Broker> {
    Arc::new(LocalBroker::standalone(handler))
}
