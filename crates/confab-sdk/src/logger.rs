//! The SDK's own log: one line per connection event, request, reply code and
//! push, written to a size-capped file with one `.1` backup once
//! [`crate::Zim::set_log_config`] names a directory, and always kept in a small
//! in-memory ring (what [`crate::Zim::upload_log`] sends when no file is set).
//!
//! Invariant: callers never pass tokens or message bodies; lines hold op names,
//! request ids, codes, user and room IDs, counts and sequence numbers only.
//! Every line is also emitted as a `tracing` debug event (target `confab_sdk`).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::types::LogConfig;

/// The log file's name inside the configured directory.
pub(crate) const LOG_FILE: &str = "confab-sdk.log";
/// Bytes kept in memory for upload when no file is configured.
const RING_BYTES: usize = 256 * 1024;
/// Smallest accepted file cap.
const MIN_LOG_SIZE: u64 = 1024;

#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    cap: u64,
}

impl LogFile {
    fn backup(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.cap {
            let backup = self.backup();
            // Rename over the old backup; then start a fresh file.
            std::fs::rename(&self.path, &backup)?;
            self.file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?;
            self.size = 0;
        }
        self.file.write_all(line.as_bytes())?;
        self.size += len;
        Ok(())
    }
}

#[derive(Debug, Default)]
struct State {
    file: Option<LogFile>,
    ring: VecDeque<String>,
    ring_bytes: usize,
}

/// The SDK's log writer. Cheap to call; lines are small and written unbuffered,
/// so a crash loses nothing already logged.
#[derive(Debug, Default)]
pub(crate) struct Logger {
    state: Mutex<State>,
}

impl Logger {
    /// Starts writing to `config.log_path/confab-sdk.log`, appending to what is
    /// there (rotating first if it is already over the cap).
    pub(crate) fn configure(&self, config: &LogConfig) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&config.log_path)?;
        let path = config.log_path.join(LOG_FILE);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        let log = LogFile {
            path: path.clone(),
            file,
            size,
            cap: config.log_size.max(MIN_LOG_SIZE),
        };
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.file = Some(log);
        Ok(path)
    }

    /// Writes one line. `msg` must not contain tokens or message bodies.
    pub(crate) fn log(&self, level: &str, msg: &str) {
        tracing::debug!(target: "confab_sdk", "{msg}");
        let line = format!("{} {level} {msg}\n", timestamp(now_ms()));
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(file) = state.file.as_mut() {
            if let Err(e) = file.write(&line) {
                tracing::warn!(target: "confab_sdk", error = %e, "writing the SDK log failed");
            }
        }
        state.ring_bytes += line.len();
        state.ring.push_back(line);
        while state.ring_bytes > RING_BYTES {
            match state.ring.pop_front() {
                Some(old) => state.ring_bytes -= old.len(),
                None => break,
            }
        }
    }

    /// An informational line.
    pub(crate) fn info(&self, msg: &str) {
        self.log("INFO", msg);
    }

    /// A warning line.
    pub(crate) fn warn(&self, msg: &str) {
        self.log("WARN", msg);
    }

    /// What an upload sends: the backup then the current file when a file is
    /// configured, else the in-memory ring.
    pub(crate) fn contents(&self) -> std::io::Result<Vec<u8>> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &state.file {
            Some(file) => {
                let mut out = Vec::new();
                read_if_exists(&file.backup(), &mut out)?;
                read_if_exists(&file.path, &mut out)?;
                Ok(out)
            }
            None => Ok(state.ring.iter().flat_map(|l| l.bytes()).collect()),
        }
    }
}

fn read_if_exists(path: &Path, out: &mut Vec<u8>) -> std::io::Result<()> {
    match File::open(path) {
        Ok(mut f) => f.read_to_end(out).map(|_| ()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `2025-11-26T01:20:00.123Z` for a Unix time in milliseconds (UTC).
fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_iso() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_764_120_000_123), "2025-11-26T01:20:00.123Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn the_file_is_capped_and_rotated_to_one_backup() {
        let dir = tempfile::tempdir().unwrap();
        let logger = Logger::default();
        let path = logger
            .configure(&LogConfig {
                log_path: dir.path().join("logs"),
                log_size: 2048,
            })
            .unwrap();
        for i in 0..500 {
            logger.info(&format!("line number {i} of the test"));
        }
        let main = std::fs::metadata(&path).unwrap().len();
        let backup_path = dir.path().join("logs").join("confab-sdk.log.1");
        let backup = std::fs::metadata(&backup_path).unwrap().len();
        assert!(main <= 2048, "main file is {main} bytes");
        assert!(backup <= 2048 && backup > 1024, "backup is {backup} bytes");
        let files = std::fs::read_dir(dir.path().join("logs")).unwrap().count();
        assert_eq!(files, 2, "only the file and one backup");
        let all = String::from_utf8(logger.contents().unwrap()).unwrap();
        assert!(all.ends_with("line number 499 of the test\n"), "{all}");
        // The backup comes first, so the lines stay in order.
        let first: usize = all
            .lines()
            .next()
            .and_then(|l| l.split("number ").nth(1))
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(first > 400, "oldest line kept is {first}");
    }

    #[test]
    fn without_a_file_the_ring_is_uploaded() {
        let logger = Logger::default();
        logger.warn("hello");
        let text = String::from_utf8(logger.contents().unwrap()).unwrap();
        assert!(text.contains(" WARN hello\n"), "{text}");
    }
}
