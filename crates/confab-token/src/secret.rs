//! The ServerSecret: the AES-256 key of one app.

use std::fmt;
use std::str::FromStr;

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// The number of characters (and bytes) in a ServerSecret.
pub const SECRET_LEN: usize = 32;

/// An app's ServerSecret: exactly [`SECRET_LEN`] printable ASCII characters
/// (`0x21..=0x7e`, so no spaces or control characters), used byte for byte as the
/// AES-256 key of its tokens.
///
/// Contracts: it is never shown — `Debug` prints `Secret(<redacted>)` and there is no
/// `Display`; equality is constant-time; the bytes are zeroed when it is dropped.
#[derive(Clone)]
pub struct Secret([u8; SECRET_LEN]);

/// Why a string is not a valid ServerSecret. The messages never contain the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The string is printable ASCII but not [`SECRET_LEN`] characters long.
    #[error("the ServerSecret must be exactly 32 ASCII characters, got {len}")]
    WrongLength {
        /// How many characters it has.
        len: usize,
    },
    /// The string has a character outside printable ASCII (`0x21..=0x7e`): non-ASCII,
    /// whitespace (a trailing newline, say) or a control character.
    #[error(
        "the ServerSecret must be exactly 32 ASCII characters, but it contains a \
         non-ASCII, whitespace or control character"
    )]
    NotAscii,
}

impl Secret {
    /// Parses a ServerSecret.
    ///
    /// # Errors
    /// [`SecretError::NotAscii`] if any character is outside `0x21..=0x7e` (checked
    /// first), else [`SecretError::WrongLength`] unless it has exactly 32 characters.
    pub fn new(secret: &str) -> Result<Secret, SecretError> {
        if !secret.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(SecretError::NotAscii);
        }
        let key: [u8; SECRET_LEN] = secret
            .as_bytes()
            .try_into()
            .map_err(|_| SecretError::WrongLength { len: secret.len() })?;
        Ok(Secret(key))
    }

    /// The AES-256 key: the secret's ASCII bytes.
    pub(crate) fn key(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = SecretError;
    /// Same as [`Secret::new`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Secret::new(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl PartialEq for Secret {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        self.0[..].ct_eq(&other.0[..]).into()
    }
}

impl Eq for Secret {}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "fa94dd0f974cf2e293728a526b028271";

    #[test]
    fn accepts_32_printable_ascii_chars() {
        let s = Secret::new(TEXT).unwrap();
        assert_eq!(s.key(), TEXT.as_bytes());
        let all_printable: String = (0x21u8..=0x40).map(char::from).collect();
        assert!(Secret::new(&all_printable).is_ok());
        assert_eq!(TEXT.parse::<Secret>().unwrap(), s);
    }

    #[test]
    fn rejects_wrong_length_with_a_message_naming_it() {
        let err = Secret::new(&TEXT[..31]).unwrap_err();
        assert_eq!(err, SecretError::WrongLength { len: 31 });
        assert_eq!(
            err.to_string(),
            "the ServerSecret must be exactly 32 ASCII characters, got 31"
        );
        assert_eq!(
            Secret::new("").unwrap_err(),
            SecretError::WrongLength { len: 0 }
        );
        let long = format!("{TEXT}a");
        assert_eq!(
            Secret::new(&long).unwrap_err(),
            SecretError::WrongLength { len: 33 }
        );
    }

    #[test]
    fn rejects_non_ascii_whitespace_and_control() {
        for bad in [
            format!("{}é", &TEXT[..30]),
            format!("{}\n", &TEXT[..31]),
            format!("{} ", &TEXT[..31]),
            format!("{}\0", &TEXT[..31]),
            format!("{}\x7f", &TEXT[..31]),
        ] {
            let err = Secret::new(&bad).unwrap_err();
            assert_eq!(err, SecretError::NotAscii, "{bad:?}");
            assert!(err.to_string().contains("32 ASCII characters"));
        }
    }

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new(TEXT).unwrap();
        let shown = format!("{s:?} {s:#?}");
        assert!(!shown.contains(TEXT));
        assert!(!shown.contains(&TEXT[..8]));
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn equality_compares_all_bytes() {
        let a = Secret::new(TEXT).unwrap();
        let b = a.clone();
        assert_eq!(a, b);
        let mut other = TEXT.to_owned();
        other.replace_range(31.., "0");
        assert_ne!(a, Secret::new(&other).unwrap());
        other = TEXT.to_owned();
        other.replace_range(..1, "0");
        assert_ne!(a, Secret::new(&other).unwrap());
    }
}
