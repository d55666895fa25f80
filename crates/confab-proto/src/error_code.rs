//! The ZIM 1.x error codes, one variant each, with the numbers of the original
//! table (`shared/seed/zim-1x-error-codes.md`). The numbers are the contract; the
//! names are stable identifiers for logs and JSON; the messages are ours.

use std::fmt;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $num:literal, $msg:literal; )*) => {
        /// Every error code confab sends or an SDK reports.
        ///
        /// Invariant: each variant keeps the number and meaning it has in ZIM 1.x.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// All codes, in ascending numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The number that goes on the wire.
            #[must_use]
            pub const fn code(self) -> u32 {
                match self { $(ErrorCode::$variant => $num,)* }
            }

            /// The stable name (the variant's name), for logs and JSON.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self { $(ErrorCode::$variant => stringify!($variant),)* }
            }

            /// A one-line description of what the code means.
            #[must_use]
            pub const fn message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $msg,)* }
            }

            /// The code with this number, if there is one.
            #[must_use]
            pub const fn from_code(code: u32) -> Option<ErrorCode> {
                match code { $($num => Some(ErrorCode::$variant),)* _ => None }
            }

            /// The code with this stable name, if there is one.
            #[must_use]
            pub fn from_name(name: &str) -> Option<ErrorCode> {
                match name { $(stringify!($variant) => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    /// The request succeeded.
    Success = 0, "The request succeeded.";
    /// The request failed for a reason no more specific code covers.
    Failed = 1, "The request failed.";
    /// A parameter is missing, malformed or out of range.
    ParamInvalid = 6000001, "A parameter is invalid; the message names which one and why.";
    /// The SDK was used before `create` or after `destroy`.
    NotInitialized = 6000002, "The SDK is not initialized; create an instance first.";
    /// The server's rate limit (per user or per app) was exceeded.
    ServerRateLimit = 6000003, "Too many requests: the server's rate limit was exceeded.";
    /// The AppID is unknown to the server.
    InvalidAppId = 6000004, "The AppID is unknown to this server.";
    /// The SDK's own rate limit was exceeded before anything was sent.
    SdkRateLimit = 6000005, "Too many requests: the SDK's own rate limit was exceeded.";
    /// The client log could not be uploaded or stored.
    LogUploadFailed = 6000010, "The log upload failed.";
    /// The token was made for another AppID or userID than the login names.
    LoginTokenMismatch = 6000101, "Login failed: the token belongs to another AppID or userID.";
    /// The server failed internally while logging in.
    LoginInternalError = 6000102, "Login failed because of an internal server error.";
    /// The token cannot be decoded, decrypted or parsed.
    TokenInvalid = 6000103, "The token is invalid: it cannot be decoded, decrypted or parsed.";
    /// The network failed (SDK side).
    NetworkError = 6000104, "A network error occurred.";
    /// The token has expired.
    TokenExpired = 6000106, "The token has expired; renew it.";
    /// The token is not a version 04 token.
    TokenVersionMismatch = 6000107, "The token's version is not supported (expected 04).";
    /// Login was called on a session that is already logged in.
    AlreadyLoggedIn = 6000111, "Already logged in.";
    /// The call needs a logged-in session and there is none.
    NotLoggedIn = 6000121, "Not logged in; log in first.";
    /// The message could not be sent.
    MessageSendFailed = 6000201, "The message could not be sent.";
    /// The message could not be sent because of an internal error (for example storing it failed).
    MessageInternalError = 6000202, "The message could not be sent because of an internal server error.";
    /// The message could not be sent because of a network error (SDK side).
    MessageNetworkError = 6000204, "The message could not be sent because of a network error.";
    /// The sender is not a member of the room.
    NotInRoom = 6000205, "The user is not a member of the room.";
    /// The room does not exist.
    RoomNotExist = 6000301, "The room does not exist.";
    /// A room operation failed because of an internal error.
    RoomInternalError = 6000302, "The room operation failed because of an internal server error.";
    /// The room could not be created.
    RoomCreateFailed = 6000303, "The room could not be created.";
    /// The room to join does not exist.
    RoomJoinNotExist = 6000304, "The room could not be joined because it does not exist.";
    /// The room could not be left (the user is not in it).
    RoomLeaveFailed = 6000305, "The room could not be left: the user is not in it.";
    /// A room with this ID already exists.
    RoomAlreadyExists = 6000311, "A room with this ID already exists.";
    /// The app has reached its maximum number of rooms.
    RoomCountLimit = 6000312, "The app has reached its maximum number of rooms.";
    /// The user has reached the maximum number of rooms one user may be in.
    UserRoomLimit = 6000321, "The user is already in the maximum number of rooms.";
}

impl ErrorCode {
    /// Whether this code means success.
    #[must_use]
    pub const fn is_success(self) -> bool {
        matches!(self, ErrorCode::Success)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

impl From<ErrorCode> for u32 {
    fn from(code: ErrorCode) -> u32 {
        code.code()
    }
}

/// A number that is not one of the known error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a known confab error code")]
pub struct UnknownErrorCode(pub u32);

impl TryFrom<u32> for ErrorCode {
    type Error = UnknownErrorCode;
    fn try_from(code: u32) -> Result<Self, Self::Error> {
        ErrorCode::from_code(code).ok_or(UnknownErrorCode(code))
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.code())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        ErrorCode::from_code(n).ok_or_else(|| serde::de::Error::custom(UnknownErrorCode(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_28_distinct_codes_in_order() {
        assert_eq!(ErrorCode::ALL.len(), 28);
        for pair in ErrorCode::ALL.windows(2) {
            assert!(pair[0].code() < pair[1].code(), "{pair:?} out of order");
        }
    }

    #[test]
    fn number_and_name_round_trip() {
        for &c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(c.code()), Some(c));
            assert_eq!(ErrorCode::try_from(u32::from(c)), Ok(c));
            assert_eq!(ErrorCode::from_name(c.name()), Some(c));
            assert!(!c.message().is_empty());
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, c.code().to_string());
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), c);
        }
        assert_eq!(ErrorCode::try_from(6000999), Err(UnknownErrorCode(6000999)));
        assert!(serde_json::from_str::<ErrorCode>("42").is_err());
    }

    #[test]
    fn well_known_numbers() {
        assert_eq!(ErrorCode::ParamInvalid.code(), 6000001);
        assert_eq!(ErrorCode::TokenInvalid.code(), 6000103);
        assert_eq!(ErrorCode::UserRoomLimit.code(), 6000321);
    }
}
