//! `confab`: the one command of the confab chat system.
//!
//! Thin on purpose: argument parsing (clap) and printing live here; everything
//! else is a library call (`confab-token`, `confab-proto`, and the server and SDK
//! as they land).

mod bench;
mod chat;
mod client_cmd;
mod serve_cmd;
mod token_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// confab — a self-hosted in-app chat server (ZIM 1.x compatible), and its tools.
///
/// Start here: `confab serve` runs a server with a development app and a demo chat
/// page (open the printed URL in two browser windows),
/// `confab token generate` makes a login token for it,
/// `confab errors` lists every error code the server and SDKs return.
#[derive(Debug, Parser)]
#[command(
    name = "confab",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the chat server (WebSocket at ws://HOST:PORT/ws, demo page at /, web SDK
    /// at /sdk/zim.js).
    ///
    /// With no arguments: listens on 127.0.0.1:8080, keeps data in ./confab-data
    /// (SQLite), and creates a development app whose AppID and ServerSecret it prints;
    /// the demo page gets tokens for that app (only) from the server.
    /// Settings come from defaults, then --config FILE, then CONFAB_* variables,
    /// then these flags.
    Serve(serve_cmd::ServeArgs),
    /// Send one message (to a user or a room) and print it as a JSON line.
    ///
    /// Example: confab send --app-id N --secret S --user alice --to bob "hello"
    Send(client_cmd::SendArgs),
    /// Print received messages and events as JSON lines (first line: ready).
    ///
    /// Example: confab listen --app-id N --secret S --user bob --room lobby --enter --count 1
    Listen(client_cmd::ListenArgs),
    /// Chat interactively in the terminal (rooms and peers; /help inside).
    Chat(client_cmd::ChatArgs),
    /// Make and check ZEGO Token04 login tokens.
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
    /// Load-test a running server (room fan-out, peer messages, logins), or measure
    /// what a fan-out costs this machine's kernel alone (floor).
    ///
    /// Example: confab bench fanout --app-id N --secret S --members 1000 --rate 100
    Bench(bench::BenchArgs),
    /// Print the table of error codes (ZIM 1.x numbers).
    Errors {
        /// Print a JSON array of {"code", "name", "message"} instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve_cmd::run(args).map(|()| ExitCode::SUCCESS),
        Command::Token(cmd) => token_cmd::run(cmd),
        Command::Send(args) => client_cmd::send(args),
        Command::Listen(args) => client_cmd::listen(args),
        Command::Chat(args) => client_cmd::chat(args),
        Command::Bench(args) => bench::run(args),
        Command::Errors { json } => print_errors(json).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("confab: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn print_errors(json: bool) -> anyhow::Result<()> {
    use confab_proto::ErrorCode;
    if json {
        let rows: Vec<_> = ErrorCode::ALL
            .iter()
            .map(
                |c| serde_json::json!({"code": c.code(), "name": c.name(), "message": c.message()}),
            )
            .collect();
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        println!("{:>8}  {:<22}  MESSAGE", "CODE", "NAME");
        for c in ErrorCode::ALL {
            println!("{:>8}  {:<22}  {}", c.code(), c.name(), c.message());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
