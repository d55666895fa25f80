//! Server configuration: one struct, every field documented with its default,
//! loaded in layers (defaults → TOML file → `CONFAB_*` environment → flags) and
//! validated once at start-up.
//!
//! This file is the one place where defaults are written down; `docs/config.md`
//! repeats them for readers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use confab_token::Secret;
use serde::{Deserialize, Serialize};

/// Everything `confab serve` can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (HTTP and WebSocket on one port). Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Directory for the SQLite database and uploaded logs. Default `./confab-data`.
    pub data_dir: PathBuf,
    /// The apps this server hosts. When empty, the server creates (on first start)
    /// and keeps one development app, and prints its AppID and ServerSecret.
    pub apps: Vec<AppConfig>,
    /// Limits for every app; an app may override any of them in its own `limits`.
    pub limits: Limits,
    /// Origins allowed to open WebSockets from a browser, besides the server's own
    /// origin and loopback origins. `["*"]` allows any. Default empty.
    pub allowed_origins: Vec<String>,
    /// How long stored messages are kept, in seconds; 0 keeps them forever.
    /// Default 30 days (2,592,000).
    pub retention_secs: u64,
    /// Where data is kept: `"sqlite"` (the default: a file under `data_dir`) or a
    /// PostgreSQL URL (`postgres://user@host:5432/db`) shared by several nodes.
    pub store: String,
    /// The PostgreSQL schema of this deployment (with a PostgreSQL store). Default `confab`.
    pub store_schema: String,
    /// Connections per node to PostgreSQL. Default 16.
    pub store_pool_size: usize,
    /// Fan-out between sessions: `"local"` (the default: one node) or a Redis URL
    /// (`redis://host:6379`) shared by several nodes.
    pub broker: String,
    /// Prefix of this deployment's Redis channels (with a Redis broker). Default `confab:`.
    pub broker_prefix: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("confab-data"),
            apps: Vec::new(),
            limits: Limits::default(),
            allowed_origins: Vec::new(),
            retention_secs: 30 * 24 * 3600,
            store: "sqlite".into(),
            store_schema: "confab".into(),
            store_pool_size: 16,
            broker: "local".into(),
            broker_prefix: "confab:".into(),
        }
    }
}

/// One hosted app.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The AppID (non-zero).
    pub id: u32,
    /// The ServerSecret: exactly 32 ASCII characters.
    pub secret: String,
    /// A name for logs. Default empty.
    #[serde(default)]
    pub name: String,
    /// Overrides of the server-wide [`Limits`] for this app (any subset of fields).
    #[serde(default)]
    pub limits: toml::Table,
}

impl std::fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfig")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Every limit, with its default. Each can be set server-wide (`[limits]`) and per
/// app (`[[apps]] limits = {...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket message accepted, bytes. Default 131,072 (128 KiB).
    pub max_frame_bytes: usize,
    /// Largest Text body, bytes of UTF-8. Default 32,768.
    pub max_text_bytes: usize,
    /// Largest Command body, bytes (after base64 decoding). Default 5,120.
    pub max_command_bytes: usize,
    /// Largest Barrage body, bytes. Default 5,120.
    pub max_barrage_bytes: usize,
    /// Seconds a new connection has to log in. Default 10.
    pub login_timeout_secs: u64,
    /// Seconds between server pings. Default 25.
    pub ping_interval_secs: u64,
    /// Seconds of silence after which a peer is considered dead. Default 35.
    pub idle_timeout_secs: u64,
    /// Seconds before token expiry at which `tokenWillExpire` is pushed. Default 30.
    pub token_warning_secs: u64,
    /// Frames a connection's outbound queue may hold before it is "slow". Default 1,024.
    pub outbound_queue_frames: usize,
    /// Bytes a connection's outbound queue may hold before it is "slow". Default 1 MiB.
    pub outbound_queue_bytes: usize,
    /// Text + Command messages per second per user (token bucket rate). Default 20.
    pub user_send_rate: u32,
    /// Burst of the per-user bucket. Default 40.
    pub user_send_burst: u32,
    /// Text + Command messages per second per app (rate and burst). Default 10,000.
    pub app_send_rate: u32,
    /// Barrage messages per second per user; the excess is dropped. Default 50.
    pub barrage_rate: u32,
    /// Rooms per app. Default 10,000.
    pub max_rooms_per_app: u32,
    /// Rooms one user may be in. Default 5.
    pub max_rooms_per_user: u32,
    /// Members per room. Default 100,000.
    pub max_room_members: u32,
    /// Seconds a disconnected member keeps its rooms. Default 90.
    pub room_grace_secs: u64,
    /// Largest uploaded log, bytes (after decompression). Default 10 MiB.
    pub max_log_bytes: usize,
    /// Concurrent connections per process. Default 15,000 (the OS limit here is 20,000 files).
    pub max_connections: usize,
    /// Longest a room message is held to be merged with others into one push per
    /// member, in milliseconds, while its room is busy (see `room_merge_above`);
    /// 0 never merges. Default 30; at most 1,000.
    pub room_merge_window_ms: u64,
    /// A room is busy while it delivers at least this many frames per second on
    /// one node (messages × local members). Default 200,000.
    pub room_merge_above: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 128 * 1024,
            max_text_bytes: 32 * 1024,
            max_command_bytes: 5 * 1024,
            max_barrage_bytes: 5 * 1024,
            login_timeout_secs: 10,
            ping_interval_secs: 25,
            idle_timeout_secs: 35,
            token_warning_secs: 30,
            outbound_queue_frames: 1024,
            outbound_queue_bytes: 1024 * 1024,
            user_send_rate: 20,
            user_send_burst: 40,
            app_send_rate: 10_000,
            barrage_rate: 50,
            max_rooms_per_app: 10_000,
            max_rooms_per_user: 5,
            max_room_members: 100_000,
            room_grace_secs: 90,
            max_log_bytes: 10 * 1024 * 1024,
            max_connections: 15_000,
            room_merge_window_ms: 30,
            room_merge_above: 200_000,
        }
    }
}

/// A configuration that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML (or an environment override) does not parse or fit the schema.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// An app as the server runs it: its secret parsed and its limits resolved.
#[derive(Debug, Clone)]
pub struct ResolvedApp {
    /// The AppID.
    pub id: u32,
    /// The ServerSecret.
    pub secret: Secret,
    /// Name for logs.
    pub name: String,
    /// Effective limits.
    pub limits: Limits,
}

impl Config {
    /// Loads the configuration: defaults, then the TOML file (if given), then
    /// `CONFAB_*` environment variables from `env`.
    ///
    /// Environment variables: `CONFAB_LISTEN`, `CONFAB_DATA_DIR`,
    /// `CONFAB_RETENTION_SECS`, `CONFAB_ALLOWED_ORIGINS` (comma-separated),
    /// `CONFAB_APPS` (`ID:SECRET[,ID:SECRET...]`, replacing the file's apps), and
    /// `CONFAB_LIMITS_<NAME>` for every field of [`Limits`] (e.g.
    /// `CONFAB_LIMITS_USER_SEND_RATE=100`).
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, variable or field that is wrong.
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        for (key, value) in env {
            let Some(name) = key.strip_prefix("CONFAB_") else {
                continue;
            };
            apply_env(&mut table, name, &value)?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value once, so the server never starts half-configured.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate("limits")?;
        let pg = self.store.starts_with("postgres://") || self.store.starts_with("postgresql://");
        if self.store != "sqlite" && !pg {
            return Err(ConfigError::Invalid(format!(
                "store must be \"sqlite\" or a postgres:// URL, got {:?}",
                self.store.split('@').next_back().unwrap_or_default()
            )));
        }
        if self.broker != "local" && !self.broker.starts_with("redis://") {
            return Err(ConfigError::Invalid(
                "broker must be \"local\" or a redis:// URL".into(),
            ));
        }
        if self.store_pool_size == 0 {
            return Err(ConfigError::Invalid(
                "store_pool_size must be greater than 0".into(),
            ));
        }
        if self.store_schema.is_empty()
            || !self
                .store_schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(ConfigError::Invalid(format!(
                "store_schema must be letters, digits and _, got {:?}",
                self.store_schema
            )));
        }
        let mut seen = BTreeMap::new();
        for app in &self.apps {
            if app.id == 0 {
                return Err(ConfigError::Invalid("apps: AppID 0 is not allowed".into()));
            }
            if seen.insert(app.id, ()).is_some() {
                return Err(ConfigError::Invalid(format!(
                    "apps: AppID {} is configured twice",
                    app.id
                )));
            }
            Secret::new(&app.secret)
                .map_err(|e| ConfigError::Invalid(format!("apps: AppID {}: {e}", app.id)))?;
            self.app_limits(app)?;
        }
        Ok(())
    }

    /// The effective limits of `app`: the server-wide ones overridden by the app's.
    ///
    /// # Errors
    /// When the app's overrides name unknown fields or have wrong types.
    pub fn app_limits(&self, app: &AppConfig) -> Result<Limits, ConfigError> {
        if app.limits.is_empty() {
            return Ok(self.limits.clone());
        }
        let mut base = toml::Table::try_from(&self.limits)
            .map_err(|e| ConfigError::Invalid(format!("limits: {e}")))?;
        for (k, v) in &app.limits {
            base.insert(k.clone(), v.clone());
        }
        let limits: Limits =
            toml::Value::Table(base)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    ConfigError::Invalid(format!("apps: AppID {} limits: {e}", app.id))
                })?;
        limits.validate(&format!("apps: AppID {} limits", app.id))?;
        Ok(limits)
    }

    /// The configured apps with their secrets parsed and limits resolved.
    ///
    /// # Errors
    /// As [`Config::validate`].
    pub fn resolved_apps(&self) -> Result<Vec<ResolvedApp>, ConfigError> {
        self.apps
            .iter()
            .map(|app| {
                Ok(ResolvedApp {
                    id: app.id,
                    secret: Secret::new(&app.secret).map_err(|e| {
                        ConfigError::Invalid(format!("apps: AppID {}: {e}", app.id))
                    })?,
                    name: app.name.clone(),
                    limits: self.app_limits(app)?,
                })
            })
            .collect()
    }
}

impl Limits {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let positive: [(&str, u64); 12] = [
            ("max_frame_bytes", self.max_frame_bytes as u64),
            ("max_text_bytes", self.max_text_bytes as u64),
            ("max_command_bytes", self.max_command_bytes as u64),
            ("max_barrage_bytes", self.max_barrage_bytes as u64),
            ("login_timeout_secs", self.login_timeout_secs),
            ("ping_interval_secs", self.ping_interval_secs),
            ("outbound_queue_frames", self.outbound_queue_frames as u64),
            ("outbound_queue_bytes", self.outbound_queue_bytes as u64),
            ("user_send_rate", u64::from(self.user_send_rate)),
            ("user_send_burst", u64::from(self.user_send_burst)),
            ("app_send_rate", u64::from(self.app_send_rate)),
            ("max_connections", self.max_connections as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{at}.{name} must be greater than 0"
                )));
            }
        }
        if self.idle_timeout_secs <= self.ping_interval_secs {
            return Err(ConfigError::Invalid(format!(
                "{at}.idle_timeout_secs ({}) must be greater than ping_interval_secs ({})",
                self.idle_timeout_secs, self.ping_interval_secs
            )));
        }
        if self.room_merge_window_ms > 1000 {
            return Err(ConfigError::Invalid(format!(
                "{at}.room_merge_window_ms ({}) must be at most 1000",
                self.room_merge_window_ms
            )));
        }
        if self.max_frame_bytes < 1024 {
            return Err(ConfigError::Invalid(format!(
                "{at}.max_frame_bytes must be at least 1024"
            )));
        }
        Ok(())
    }
}

/// Parses an environment value as TOML scalar (integer, float, bool) or string.
fn env_value(value: &str) -> toml::Value {
    if let Ok(i) = value.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(b) = value.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    toml::Value::String(value.to_owned())
}

fn apply_env(table: &mut toml::Table, name: &str, value: &str) -> Result<(), ConfigError> {
    let var = || format!("CONFAB_{name}");
    match name {
        "LISTEN" => {
            table.insert("listen".into(), value.into());
        }
        "DATA_DIR" | "DATA" => {
            table.insert("data_dir".into(), value.into());
        }
        "RETENTION_SECS" => {
            table.insert("retention_secs".into(), env_value(value));
        }
        "STORE" | "STORE_SCHEMA" | "BROKER" | "BROKER_PREFIX" => {
            table.insert(name.to_ascii_lowercase(), value.into());
        }
        "STORE_POOL_SIZE" => {
            table.insert("store_pool_size".into(), env_value(value));
        }
        "ALLOWED_ORIGINS" => {
            let list = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(toml::Value::from)
                .collect::<Vec<_>>();
            table.insert("allowed_origins".into(), toml::Value::Array(list));
        }
        "APPS" => {
            let mut apps = Vec::new();
            for spec in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (id, secret) = parse_app_spec(spec)
                    .map_err(|e| ConfigError::Invalid(format!("{}: {e}", var())))?;
                let mut t = toml::Table::new();
                t.insert("id".into(), toml::Value::Integer(i64::from(id)));
                t.insert("secret".into(), secret.into());
                apps.push(toml::Value::Table(t));
            }
            table.insert("apps".into(), toml::Value::Array(apps));
        }
        other => {
            if let Some(field) = other.strip_prefix("LIMITS_") {
                let limits = table
                    .entry("limits")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(limits) = limits else {
                    return Err(ConfigError::Parse("limits must be a table".into()));
                };
                limits.insert(field.to_ascii_lowercase(), env_value(value));
            }
            // Other CONFAB_* variables (CONFAB_SECRET for the token commands,
            // CONFAB_LOG for log filtering) are not server configuration.
        }
    }
    Ok(())
}

/// Parses `APPID:SECRET` as given to `--app` and `CONFAB_APPS`.
///
/// # Errors
/// A message naming what is wrong with the spec.
pub fn parse_app_spec(spec: &str) -> Result<(u32, String), String> {
    let (id, secret) = spec
        .split_once(':')
        .ok_or_else(|| format!("expected APPID:SECRET, got {:?}", truncated(spec)))?;
    let id: u32 = id
        .parse()
        .map_err(|_| format!("AppID must be a number from 1 to 4294967295, got {id:?}"))?;
    if id == 0 {
        return Err("AppID must not be 0".into());
    }
    Secret::new(secret).map_err(|e| e.to_string())?;
    Ok((id, secret.to_owned()))
}

fn truncated(s: &str) -> String {
    // Never echo a whole secret-bearing argument back.
    let head: String = s.chars().take(12).collect();
    if head.len() < s.len() {
        format!("{head}...")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.limits.max_rooms_per_user, 5);
        assert_eq!(c.limits.user_send_rate, 20);
        assert_eq!(c.limits.user_send_burst, 40);
        assert_eq!(c.limits.app_send_rate, 10_000);
        assert_eq!(c.limits.max_frame_bytes, 131_072);
        assert_eq!(c.limits.idle_timeout_secs, 35);
        assert_eq!(c.limits.room_merge_window_ms, 30);
        assert_eq!(c.limits.room_merge_above, 200_000);
        assert!(c.apps.is_empty());
    }

    #[test]
    fn file_then_env_layers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confab.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:9000\"\n[limits]\nuser_send_rate = 5\n\n[[apps]]\nid = 7\nsecret = \"{SECRET}\"\nlimits = {{ max_rooms_per_user = 9 }}\n"
            ),
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[
                ("CONFAB_LIMITS_USER_SEND_BURST", "11"),
                ("CONFAB_LISTEN", "127.0.0.1:9001"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.limits.user_send_rate, 5);
        assert_eq!(c.limits.user_send_burst, 11);
        let apps = c.resolved_apps().unwrap();
        assert_eq!(apps[0].limits.max_rooms_per_user, 9);
        assert_eq!(apps[0].limits.user_send_rate, 5);
    }

    #[test]
    fn errors_name_the_field() {
        let e = Config::load(None, env(&[("CONFAB_LIMITS_NOPE", "1")])).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let e = Config::load(None, env(&[("CONFAB_LIMITS_USER_SEND_RATE", "0")])).unwrap_err();
        assert!(e.to_string().contains("user_send_rate"), "{e}");
        let e = Config::load(None, env(&[("CONFAB_APPS", "5:short")])).unwrap_err();
        assert!(e.to_string().contains("32"), "{e}");
        let e = Config::load(
            None,
            env(&[("CONFAB_APPS", &format!("5:{SECRET},5:{SECRET}"))]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn app_specs() {
        assert_eq!(parse_app_spec(&format!("12:{SECRET}")).unwrap().0, 12);
        assert!(parse_app_spec("12").unwrap_err().contains("APPID:SECRET"));
        assert!(
            parse_app_spec(&format!("0:{SECRET}"))
                .unwrap_err()
                .contains("0")
        );
        let e = parse_app_spec("x:0123456789abcdef0123456789abcdefXYZ").unwrap_err();
        assert!(!e.contains("XYZ"));
    }
}
