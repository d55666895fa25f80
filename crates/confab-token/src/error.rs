//! The errors of token verification and generation.

use confab_proto::ErrorCode;

use crate::token::Mode;

/// Why a token could not be accepted. [`TokenError::code`] is the ZIM code to send.
///
/// Messages may contain the token's claims (AppID, user ID, times) but never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token starts with two ASCII digits other than `04` (code 6000107).
    #[error("token version {found:?} is not supported (expected \"04\")")]
    VersionMismatch {
        /// The two digits the token starts with.
        found: String,
    },
    /// The token cannot be decoded, decrypted or parsed, or is inconsistent (6000103).
    #[error("invalid token: {reason}")]
    Invalid {
        /// What is wrong with it.
        reason: InvalidReason,
    },
    /// The token was issued for another AppID (6000101).
    #[error("the token is for AppID {found}, not {expected}")]
    AppIdMismatch {
        /// The AppID the caller expected.
        expected: u32,
        /// The AppID in the token.
        found: u32,
    },
    /// The token was issued for another user ID (6000101).
    #[error("the token is for user ID {found:?}, not {expected:?}")]
    UserIdMismatch {
        /// The user ID the caller expected.
        expected: String,
        /// The user ID in the token.
        found: String,
    },
    /// `now >= expire` (6000106).
    #[error("the token expired at {expire} (now is {now})")]
    Expired {
        /// The token's expiry, Unix seconds.
        expire: i64,
        /// The time it was checked at, Unix seconds.
        now: i64,
    },
}

impl TokenError {
    /// The ZIM error code for this failure: 6000107 for [`TokenError::VersionMismatch`],
    /// 6000103 for [`TokenError::Invalid`], 6000101 for the two mismatches and 6000106
    /// for [`TokenError::Expired`].
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::VersionMismatch { .. } => ErrorCode::TokenVersionMismatch,
            TokenError::Invalid { .. } => ErrorCode::TokenInvalid,
            TokenError::AppIdMismatch { .. } | TokenError::UserIdMismatch { .. } => {
                ErrorCode::LoginTokenMismatch
            }
            TokenError::Expired { .. } => ErrorCode::TokenExpired,
        }
    }
}

impl From<InvalidReason> for TokenError {
    fn from(reason: InvalidReason) -> Self {
        TokenError::Invalid { reason }
    }
}

/// What makes a token [`TokenError::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReason {
    /// The token is the empty string.
    #[error("the token is empty")]
    Empty,
    /// The token does not start with two ASCII digits.
    #[error("the token does not start with the version \"04\"")]
    NoVersion,
    /// What follows `04` is not standard padded base64.
    #[error("not base64")]
    NotBase64,
    /// The decoded bytes end inside a fixed-size field.
    #[error("the token ends inside the {field}")]
    Truncated {
        /// `"expire"`, `"IV length"` or `"ciphertext length"`.
        field: &'static str,
    },
    /// A length prefix claims more bytes than are left.
    #[error("{field} length {len} runs past the end ({left} bytes left)")]
    LengthPastEnd {
        /// `"IV"` or `"ciphertext"`.
        field: &'static str,
        /// The length the token claims.
        len: u16,
        /// The bytes actually left.
        left: usize,
    },
    /// More than one byte follows the ciphertext.
    #[error("{count} unexpected bytes after the ciphertext")]
    TrailingBytes {
        /// How many bytes follow it.
        count: usize,
    },
    /// The mode byte is neither 0 (CBC) nor 1 (GCM).
    #[error("unknown mode byte {0}")]
    UnknownMode(u8),
    /// The IV does not have the size the mode needs (CBC 16, GCM 12).
    #[error("a {mode} token needs a {expected}-byte IV, got {len}")]
    IvLength {
        /// The token's mode.
        mode: Mode,
        /// The size the mode needs.
        expected: usize,
        /// The token's IV size.
        len: usize,
    },
    /// CBC decryption failed: the ciphertext is not a positive multiple of 16 bytes or
    /// the padding is wrong (wrong secret or tampered token).
    #[error("decryption failed (wrong secret or tampered token)")]
    DecryptionFailed,
    /// GCM authentication failed (wrong secret or tampered token).
    #[error("GCM tag mismatch (wrong secret or tampered token)")]
    TagMismatch,
    /// The plaintext is not JSON.
    #[error("plaintext is not JSON: {0}")]
    NotJson(String),
    /// The plaintext is JSON but not an object with the required claims of the right
    /// types (`app_id` u32, `user_id` string, `expire` i64; `nonce`/`ctime` i64 if present).
    #[error("plaintext claims are malformed: {0}")]
    BadClaims(String),
    /// The encrypted `expire` differs from the clear one.
    #[error("inner expire {inner} differs from outer expire {outer}")]
    ExpireMismatch {
        /// The clear `expire` before the IV.
        outer: i64,
        /// The `expire` in the encrypted claims.
        inner: i64,
    },
}

/// Why a token could not be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// AppID 0 is not a valid AppID.
    #[error("the AppID must not be 0")]
    ZeroAppId,
    /// The user ID is empty.
    #[error("the user ID must not be empty")]
    EmptyUserId,
    /// A lifetime of 0 seconds would make a token that is already expired.
    #[error("the token lifetime must be at least 1 second")]
    ZeroTtl,
    /// `now + ttl` does not fit an i64.
    #[error("the token lifetime {ttl_secs} s from {now} overflows the expiry time")]
    ExpireOverflow {
        /// The generation time, Unix seconds.
        now: i64,
        /// The requested lifetime.
        ttl_secs: u64,
    },
    /// The ciphertext would not fit the u16 length field.
    #[error("the user ID is too long: the ciphertext would be {len} bytes, more than 65535")]
    TooLong {
        /// The ciphertext size it would have.
        len: usize,
    },
}

/// A string that is neither `cbc` nor `gcm`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown token mode {0:?}: expected \"cbc\" or \"gcm\"")]
pub struct ParseModeError(pub String);
