//! confab's wire contract.
//!
//! Everything that crosses the WebSocket between a confab server and a client is
//! defined here and nowhere else: the [`ErrorCode`] table (ZIM 1.x numbers) and the
//! versioned JSON frames ([`frame`]). This crate has no I/O and no async runtime, so
//! SDKs, the server and tools can all depend on it. `docs/protocol.md` is its prose
//! twin; a change here is a change there.

mod error_code;
pub mod frame;
mod message;
mod ops;
mod rooms;

pub use error_code::{ErrorCode, UnknownErrorCode};
