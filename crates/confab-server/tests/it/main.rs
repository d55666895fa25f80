//! Integration tests: a real server on 127.0.0.1:0, real WebSocket clients
//! speaking docs/protocol.md as JSON, over TCP or (for session logic, with
//! paused time) over in-memory pipes: see `harness`.

mod harness;
mod http;
mod login;
mod messages;
mod nodes;
mod resilience;
mod rooms;
mod web;
