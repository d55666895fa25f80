//! Validation of client-supplied IDs, names and message bodies (SPEC §2, §3).
//! Every failure is a message that names the field and says why; the caller
//! answers it with `ParamInvalid` (6000001).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use confab_proto::frame::MessageType;

use crate::config::Limits;

/// Punctuation allowed in user and room IDs besides ASCII letters and digits.
const ID_PUNCT: &[u8] = b"!#$%&()+-:;<=.>?@[]^_{}|~";

fn id(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max {
        return Err(format!(
            "{field}: must be 1-{max} bytes, got {}",
            value.len()
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || (c.is_ascii() && ID_PUNCT.contains(&(*c as u8)))))
    {
        return Err(format!(
            "{field}: character {bad:?} is not allowed (use ASCII letters, digits and !#$%&()+-:;<=.>?@[]^_{{}}|~)"
        ));
    }
    Ok(())
}

/// A userID: 1–32 bytes of ASCII letters, digits and `!#$%&()+-:;<=.>?@[]^_{}|~`.
pub(crate) fn user_id(field: &str, value: &str) -> Result<(), String> {
    id(field, value, 32)
}

/// A roomID: 1–128 bytes of the same characters as a userID.
#[allow(dead_code)] // used by the rooms module
pub(crate) fn room_id(field: &str, value: &str) -> Result<(), String> {
    id(field, value, 128)
}

/// A display name: at most 64 bytes of UTF-8 (JSON strings are always UTF-8).
pub(crate) fn name(field: &str, value: &str) -> Result<(), String> {
    if value.len() > 64 {
        return Err(format!(
            "{field}: must be at most 64 bytes, got {}",
            value.len()
        ));
    }
    Ok(())
}

/// A message body of `kind`, checked against the limits. `room` says whether the
/// message goes to a room (Barrage is room-only).
pub(crate) fn body(
    kind: MessageType,
    body: &str,
    room: bool,
    limits: &Limits,
) -> Result<(), String> {
    match kind {
        MessageType::Text => {
            if body.len() > limits.max_text_bytes {
                return Err(format!(
                    "message: a Text message may be at most {} bytes, got {}",
                    limits.max_text_bytes,
                    body.len()
                ));
            }
        }
        MessageType::Command => {
            let bytes = STANDARD
                .decode(body)
                .map_err(|e| format!("message: a Command message must be standard base64 ({e})"))?;
            if bytes.len() > limits.max_command_bytes {
                return Err(format!(
                    "message: a Command message may be at most {} bytes, got {}",
                    limits.max_command_bytes,
                    bytes.len()
                ));
            }
        }
        MessageType::Barrage => {
            if !room {
                return Err("type: Barrage (20) messages can only be sent to rooms".into());
            }
            if body.len() > limits.max_barrage_bytes {
                return Err(format!(
                    "message: a Barrage message may be at most {} bytes, got {}",
                    limits.max_barrage_bytes,
                    body.len()
                ));
            }
        }
        MessageType::Other(n) => {
            return Err(format!(
                "type: {n} ({}) is not supported; use 1 (Text), 2 (Command) or 20 (Barrage)",
                kind.zim_name()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        assert!(user_id("userID", "alice").is_ok());
        assert!(user_id("userID", "a!#$%&()+-:;<=.>?@[]^_{}|~").is_ok());
        assert!(user_id("userID", &"a".repeat(32)).is_ok());
        let e = user_id("userID", &"a".repeat(33)).unwrap_err();
        assert!(e.starts_with("userID: must be 1-32 bytes, got 33"), "{e}");
        assert!(user_id("userID", "").is_err());
        let e = user_id("toUserID", "al ice").unwrap_err();
        assert!(e.contains("toUserID") && e.contains("' '"), "{e}");
        assert!(user_id("userID", "é").is_err());
        assert!(user_id("userID", "a/b").is_err());
        assert!(room_id("roomID", &"r".repeat(128)).is_ok());
        assert!(room_id("roomID", &"r".repeat(129)).is_err());
    }

    #[test]
    fn bodies() {
        let l = Limits::default();
        assert!(body(MessageType::Text, &"x".repeat(32 * 1024), false, &l).is_ok());
        assert!(body(MessageType::Text, &"x".repeat(32 * 1024 + 1), false, &l).is_err());
        assert!(
            body(
                MessageType::Command,
                &STANDARD.encode([0u8; 5120]),
                false,
                &l
            )
            .is_ok()
        );
        assert!(
            body(
                MessageType::Command,
                &STANDARD.encode([0u8; 5121]),
                false,
                &l
            )
            .is_err()
        );
        assert!(
            body(MessageType::Command, "not base64!", false, &l)
                .unwrap_err()
                .contains("base64")
        );
        assert!(
            body(MessageType::Barrage, "hi", false, &l)
                .unwrap_err()
                .contains("rooms")
        );
        assert!(body(MessageType::Barrage, "hi", true, &l).is_ok());
        let e = body(MessageType::Other(11), "x", false, &l).unwrap_err();
        assert!(e.contains("Image"), "{e}");
        assert!(name("userName", &"é".repeat(32)).is_ok());
        assert!(name("userName", &"é".repeat(33)).is_err());
    }
}
