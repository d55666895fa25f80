//! `confab token generate` and `confab token verify`.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};
use confab_proto::ErrorCode;
use confab_token::{Mode, Secret};

use crate::client_cmd::parse_secret;

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Print a new token that lets USER log in to app APP_ID.
    ///
    /// This is what your own token server does in production (ZEGO's token
    /// generators make the same tokens); use it for development and scripts.
    Generate {
        #[command(flatten)]
        app: AppArgs,
        /// How long the token is valid, in seconds.
        #[arg(long, default_value_t = 86_400, value_name = "SECONDS")]
        ttl: u64,
        /// Encryption: gcm (AES-256-GCM) or cbc (AES-256-CBC, as older ZEGO generators make).
        #[arg(long, default_value = "gcm", value_parser = parse_mode)]
        mode: Mode,
    },
    /// Check TOKEN as the server would at login; exit 0 if valid, 1 if not.
    Verify {
        #[command(flatten)]
        app: AppArgs,
        /// Print one JSON object {"code", "name", "message"[, "expire"]} on one line.
        #[arg(long)]
        json: bool,
        /// Check as if the time were this (Unix seconds) instead of now.
        #[arg(long, value_name = "UNIX_SECONDS")]
        now: Option<i64>,
        /// The token to check (starts with "04").
        token: String,
    },
}

/// Who the token is for, and the app's secret.
#[derive(Debug, Args)]
pub(crate) struct AppArgs {
    /// The AppID (a non-zero number), as configured on the server.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    app_id: u32,
    /// The app's ServerSecret: exactly 32 ASCII characters. Keep it off shared shells.
    #[arg(long, value_name = "SECRET", env = "CONFAB_SECRET", hide_env_values = true, value_parser = parse_secret)]
    secret: Secret,
    /// The userID the token is for (1-32 ASCII letters, digits or !#$%&()+-:;<=.>?@[]^_{}|~).
    #[arg(long, value_name = "USER")]
    user: String,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse::<Mode>().map_err(|e| e.to_string())
}

fn unix_now() -> anyhow::Result<i64> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    i64::try_from(secs).context("the system clock is out of range")
}

pub(crate) fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Generate { app, ttl, mode } => {
            let token =
                confab_token::generate(&app.secret, app.app_id, &app.user, ttl, mode, unix_now()?)
                    .context("cannot generate the token")?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Verify {
            app,
            json,
            now,
            token,
        } => {
            let now = match now {
                Some(n) => n,
                None => unix_now()?,
            };
            let result =
                confab_token::verify(token.trim(), &app.secret, app.app_id, &app.user, now);
            let (code, message, expire) = match &result {
                Ok(claims) => (
                    ErrorCode::Success,
                    format!("valid for {}s more", claims.expire - now),
                    Some(claims.expire),
                ),
                Err(e) => (e.code(), e.to_string(), None),
            };
            if json {
                let mut obj = serde_json::json!({
                    "code": code.code(), "name": code.name(), "message": message,
                });
                if let Some(expire) = expire {
                    obj["expire"] = expire.into();
                }
                println!("{obj}");
            } else if let Some(expire) = expire {
                println!("valid: expires at {expire} (Unix seconds), {message}");
            } else {
                println!("invalid: {} {}: {message}", code.code(), code.name());
            }
            Ok(if result.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
