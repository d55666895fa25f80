//! [`ZimError`]: what every SDK call returns on failure — a ZIM 1.x code plus a
//! message that says what went wrong. Codes come from the server's replies or from
//! the SDK itself (6000002, 6000005, 6000010, 6000104, 6000111, 6000121, 6000204).

use confab_proto::ErrorCode;

/// A failed SDK call: the ZIM error code and a human-readable message.
///
/// `Display` shows the number, the name and the message, e.g.
/// `6000121 NotLoggedIn: sendPeerMessage needs a login`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {}: {message}", code.code(), code.name())]
pub struct ZimError {
    /// The ZIM code ([`ErrorCode::code`] gives the number).
    pub code: ErrorCode,
    /// What went wrong; for [`ErrorCode::ParamInvalid`] it names the parameter.
    pub message: String,
}

impl ZimError {
    /// An error with `code` and `message`.
    #[must_use]
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ZimError {
        ZimError {
            code,
            message: message.into(),
        }
    }

    /// 6000001: a parameter is invalid.
    pub(crate) fn param(message: impl Into<String>) -> ZimError {
        ZimError::new(ErrorCode::ParamInvalid, message)
    }

    /// 6000002: the instance was destroyed.
    pub(crate) fn destroyed() -> ZimError {
        ZimError::new(
            ErrorCode::NotInitialized,
            "this Zim instance was destroyed; create a new one",
        )
    }

    /// 6000121: the call needs a login.
    pub(crate) fn not_logged_in(what: &str) -> ZimError {
        ZimError::new(
            ErrorCode::NotLoggedIn,
            format!("{what} needs a login: call login first"),
        )
    }

    /// 6000104, or 6000204 when the failed call was a message send.
    pub(crate) fn network(is_send: bool, message: impl Into<String>) -> ZimError {
        let code = if is_send {
            ErrorCode::MessageNetworkError
        } else {
            ErrorCode::NetworkError
        };
        ZimError::new(code, message)
    }

    /// 6000010: the log upload failed.
    pub(crate) fn log_upload(message: impl Into<String>) -> ZimError {
        ZimError::new(ErrorCode::LogUploadFailed, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_number_name_and_message() {
        let e = ZimError::not_logged_in("logout");
        assert_eq!(
            e.to_string(),
            "6000121 NotLoggedIn: logout needs a login: call login first"
        );
        assert_eq!(
            ZimError::network(true, "x").code,
            ErrorCode::MessageNetworkError
        );
        assert_eq!(ZimError::network(false, "x").code, ErrorCode::NetworkError);
    }
}
