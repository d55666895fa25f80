//! ZEGO "Token04" login tokens: generation and verification (SPEC §2).
//!
//! A Token04 is `"04" + base64(expire:i64be | ivLen:u16be | iv | ctLen:u16be | ct | [mode:u8])`
//! where `ct` is the JSON claims `{app_id, user_id, nonce, ctime, expire, payload?}`
//! encrypted with AES-256 under the app's 32-character ServerSecret: AES-CBC/PKCS7
//! with a 16-byte IV when the mode byte is absent or 0 ([`Mode::Cbc`]), AES-GCM with
//! a 12-byte nonce and the 16-byte tag appended to `ct` when it is 1 ([`Mode::Gcm`]).
//! Tokens made by ZEGO's public generators are accepted.
//!
//! - [`verify`] is what login does: [`decode`] the token, then check that it belongs
//!   to the expected AppID and user ID, then that it has not expired. Every failure is
//!   a [`TokenError`] whose [`TokenError::code`] is the ZIM error code to send.
//! - [`generate`] / [`generate_with_rng`] make tokens like ZEGO's generators do.
//!
//! The clock is injected (`now_unix`, seconds since the Unix epoch) so callers and
//! tests decide what "now" is. Nothing here panics on any input, logs, or prints a
//! [`Secret`].

mod error;
mod secret;
mod token;

pub use error::{GenerateError, InvalidReason, ParseModeError, TokenError};
pub use secret::{SECRET_LEN, Secret, SecretError};
pub use token::{Claims, Mode, decode, generate, generate_with_rng, verify};
