//! Integration tests: real confab servers in-process (127.0.0.1:0, a temporary
//! data directory each), real SDK instances talking to them.

mod harness;
mod logs;
mod messages;
mod resilience;
mod rooms;
mod session;
