//! The integration tests of `confab-store-postgres`, one binary: the conformance
//! suite against PostgreSQL, and what only a shared database can show — two nodes on
//! one schema, durability across a fresh connect, migrations, and a node losing
//! PostgreSQL and getting it back.
//!
//! They need a PostgreSQL server: `CONFAB_PG_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test` (then the same as `root`). When none
//! answers, each test prints "skipped: PostgreSQL not reachable at …" and passes —
//! unless `CI` is set, where it fails. Every test works in schemas of its own
//! (`confab_test_…`) and drops them afterwards, pass or fail.

mod conformance;
mod durability;
mod migrations;
mod nodes;
mod outage;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use confab_store::NewPeerMessage;
use confab_store_postgres::{PgConfig, PgStore};
use tokio_postgres::{Client, NoTls};

const DEFAULT_URLS: [&str; 2] = [
    "postgres://postgres@127.0.0.1:5432/test",
    "postgres://root@127.0.0.1:5432/test",
];

/// A reachable database for one test, and the schemas the test made in it.
#[derive(Clone)]
struct TestDb {
    url: String,
    schemas: Arc<Mutex<Vec<String>>>,
}

impl TestDb {
    /// A new schema name, unique to this process and call; dropped by [`with_db`].
    fn fresh_schema(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "confab_test_{}_{}_{nanos:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.schemas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(name.clone());
        name
    }

    fn config(&self, schema: &str) -> PgConfig {
        PgConfig {
            schema: schema.to_owned(),
            pool_size: 8,
            ..PgConfig::new(&self.url)
        }
    }

    /// A store (a "node") on `schema`.
    async fn store(&self, schema: &str) -> PgStore {
        PgStore::connect(&self.url, schema, 8)
            .await
            .unwrap_or_else(|e| panic!("connect to {} schema {schema}: {e}", self.url))
    }

    /// A store on a new, empty schema.
    async fn fresh_store(&self) -> PgStore {
        let schema = self.fresh_schema();
        self.store(&schema).await
    }

    /// A plain connection (no search_path), for looking under the store.
    async fn admin(&self) -> Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("admin connection");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    async fn drop_schemas(&self) {
        let schemas: Vec<String> =
            std::mem::take(&mut *self.schemas.lock().unwrap_or_else(PoisonError::into_inner));
        if schemas.is_empty() {
            return;
        }
        let client = self.admin().await;
        for schema in schemas {
            if let Err(e) = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await
            {
                eprintln!("could not drop test schema {schema}: {e:?}");
            }
        }
    }
}

/// Runs `body` against a reachable database (or skips, see the module docs), then
/// drops every schema it made — also when it panics, whose panic then goes on.
async fn with_db<F, Fut>(body: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(url) = reachable_url().await else {
        return;
    };
    let db = TestDb {
        url,
        schemas: Arc::new(Mutex::new(Vec::new())),
    };
    let outcome = CatchUnwind(Box::pin(body(db.clone()))).await;
    db.drop_schemas().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The first URL a server answers `SELECT 1` on; `None` (after saying so) if none
/// does, or a panic under `CI`.
async fn reachable_url() -> Option<String> {
    let candidates: Vec<String> = match std::env::var("CONFAB_PG_URL") {
        Ok(url) if !url.trim().is_empty() => vec![url],
        _ => DEFAULT_URLS.iter().map(|u| (*u).to_owned()).collect(),
    };
    let mut failures = Vec::new();
    for url in candidates {
        match probe(&url).await {
            Ok(()) => return Some(url),
            Err(e) => failures.push(format!("{url} ({e})")),
        }
    }
    let failures = failures.join("; ");
    assert!(
        std::env::var_os("CI").is_none(),
        "PostgreSQL is not reachable at {failures}. CI is set, so this test fails instead \
         of skipping: start PostgreSQL (e.g. `pg_ctlcluster --skip-systemctl-redirect \
         $(ls /etc/postgresql) main start`) or set CONFAB_PG_URL."
    );
    eprintln!("skipped: PostgreSQL not reachable at {failures}");
    None
}

async fn probe(url: &str) -> Result<(), String> {
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(3), connecting)
        .await
        .map_err(|_| "no answer within 3 s".to_owned())?
        .map_err(|e| full_error(&e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| full_error(&e))?;
    Ok(())
}

fn full_error(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// A future that turns a panic while polling `F` into an `Err`, so that a test can
/// clean up before the panic goes on.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(move || inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// A Text message in app 1.
fn text(sender: &str, receiver: &str, local_message_id: u64, timestamp_ms: i64) -> NewPeerMessage {
    NewPeerMessage {
        app_id: 1,
        sender: sender.to_owned(),
        receiver: receiver.to_owned(),
        kind: 1,
        body: format!("{sender}->{receiver}#{local_message_id}"),
        local_message_id,
        timestamp_ms,
        priority: 2,
    }
}
