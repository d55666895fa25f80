//! Token04 encoding, decoding, generation and verification.

use std::fmt;
use std::str::FromStr;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::distributions::Alphanumeric;
use rand::{CryptoRng, Rng, RngCore};
use serde::{Deserialize, Deserializer};

use crate::error::{GenerateError, InvalidReason, ParseModeError, TokenError};
use crate::secret::Secret;

type CbcEnc = cbc::Encryptor<aes::Aes256>;
type CbcDec = cbc::Decryptor<aes::Aes256>;

const VERSION: &str = "04";
const CBC_IV_LEN: usize = 16;
const GCM_NONCE_LEN: usize = 12;
const MODE_CBC: u8 = 0;
const MODE_GCM: u8 = 1;

/// The cipher of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// AES-256-CBC with PKCS#7 padding and a 16-byte IV; no mode byte (or mode byte 0).
    /// What ZEGO's classic generators make.
    Cbc,
    /// AES-256-GCM with a 12-byte nonce, the 16-byte tag appended, no AAD; mode byte 1.
    /// Authenticated, so the default for tokens confab generates.
    #[default]
    Gcm,
}

impl Mode {
    fn iv_len(self) -> usize {
        match self {
            Mode::Cbc => CBC_IV_LEN,
            Mode::Gcm => GCM_NONCE_LEN,
        }
    }
}

impl FromStr for Mode {
    type Err = ParseModeError;
    /// `cbc` or `gcm`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("cbc") {
            Ok(Mode::Cbc)
        } else if s.eq_ignore_ascii_case("gcm") {
            Ok(Mode::Gcm)
        } else {
            Err(ParseModeError(s.to_owned()))
        }
    }
}

impl fmt::Display for Mode {
    /// `cbc` or `gcm`: what [`Mode::from_str`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Cbc => "cbc",
            Mode::Gcm => "gcm",
        })
    }
}

/// The claims of a token that decoded and decrypted.
///
/// Invariant (ensured by [`decode`]): `expire` is both the clear and the encrypted
/// expiry. `nonce` and `ctime` are 0 when the token omits them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The AppID the token was issued for.
    pub app_id: u32,
    /// The user ID the token was issued for (not validated against the ID rules).
    pub user_id: String,
    /// When the token was made, Unix seconds.
    pub ctime: i64,
    /// When the token expires, Unix seconds: it is valid while `now < expire`.
    pub expire: i64,
    /// The generator's random number.
    pub nonce: i64,
    /// The cipher the token used.
    pub mode: Mode,
}

/// The encrypted JSON. Unknown keys (such as `payload`, of any type) are ignored.
#[derive(Deserialize)]
struct Plain {
    app_id: u32,
    user_id: String,
    expire: i64,
    #[serde(default, deserialize_with = "present_i64")]
    nonce: Option<i64>,
    #[serde(default, deserialize_with = "present_i64")]
    ctime: Option<i64>,
}

/// An optional key that, when present, must be an integer (not `null`).
fn present_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    i64::deserialize(d).map(Some)
}

/// A cursor over the decoded token bytes that never reads past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], InvalidReason> {
        self.take(N)
            .and_then(|s| s.try_into().ok())
            .ok_or(InvalidReason::Truncated { field })
    }

    /// A u16 big-endian length followed by that many bytes.
    fn prefixed(
        &mut self,
        len_field: &'static str,
        field: &'static str,
    ) -> Result<&'a [u8], InvalidReason> {
        let len = u16::from_be_bytes(self.array(len_field)?);
        let left = self.0.len();
        self.take(usize::from(len))
            .ok_or(InvalidReason::LengthPastEnd { field, len, left })
    }
}

/// Decodes, decrypts and parses a token, without checking whom it is for or whether
/// it has expired.
///
/// Checks, in order: the version prefix, base64, the framing lengths, the mode byte
/// and IV size, decryption (CBC padding or GCM tag), the JSON claims, and that the
/// encrypted `expire` equals the clear one. Never panics.
///
/// # Errors
/// [`TokenError::VersionMismatch`] if the token starts with two ASCII digits other
/// than `04`; [`TokenError::Invalid`] for every other failure.
pub fn decode(token: &str, secret: &Secret) -> Result<Claims, TokenError> {
    let body = match token.as_bytes() {
        [] => return Err(InvalidReason::Empty.into()),
        [b'0', b'4', body @ ..] => body,
        [a, b, ..] if a.is_ascii_digit() && b.is_ascii_digit() => {
            return Err(TokenError::VersionMismatch {
                found: [char::from(*a), char::from(*b)].iter().collect(),
            });
        }
        _ => return Err(InvalidReason::NoVersion.into()),
    };
    let raw = STANDARD
        .decode(body)
        .map_err(|_| InvalidReason::NotBase64)?;

    let mut r = Reader(&raw);
    let outer_expire = i64::from_be_bytes(r.array("expire")?);
    let iv = r.prefixed("IV length", "IV")?;
    let ct = r.prefixed("ciphertext length", "ciphertext")?;
    let mode = match r.0 {
        [] | [MODE_CBC] => Mode::Cbc,
        [MODE_GCM] => Mode::Gcm,
        [m] => return Err(InvalidReason::UnknownMode(*m).into()),
        rest => return Err(InvalidReason::TrailingBytes { count: rest.len() }.into()),
    };
    if iv.len() != mode.iv_len() {
        return Err(InvalidReason::IvLength {
            mode,
            expected: mode.iv_len(),
            len: iv.len(),
        }
        .into());
    }

    let plaintext = decrypt(mode, secret, iv, ct)?;
    let plain = parse(&plaintext)?;
    if plain.expire != outer_expire {
        return Err(InvalidReason::ExpireMismatch {
            outer: outer_expire,
            inner: plain.expire,
        }
        .into());
    }
    Ok(Claims {
        app_id: plain.app_id,
        user_id: plain.user_id,
        ctime: plain.ctime.unwrap_or(0),
        expire: plain.expire,
        nonce: plain.nonce.unwrap_or(0),
        mode,
    })
}

/// Decrypts `ct`; `iv` has the size `mode` needs.
fn decrypt(mode: Mode, secret: &Secret, iv: &[u8], ct: &[u8]) -> Result<Vec<u8>, InvalidReason> {
    match mode {
        Mode::Cbc => {
            if ct.is_empty() || ct.len() % CBC_IV_LEN != 0 {
                return Err(InvalidReason::DecryptionFailed);
            }
            CbcDec::new_from_slices(secret.key(), iv)
                .map_err(|_| InvalidReason::DecryptionFailed)?
                .decrypt_padded_vec_mut::<Pkcs7>(ct)
                .map_err(|_| InvalidReason::DecryptionFailed)
        }
        Mode::Gcm => {
            if iv.len() != GCM_NONCE_LEN {
                return Err(InvalidReason::TagMismatch);
            }
            Aes256Gcm::new(secret.key().into())
                .decrypt(Nonce::from_slice(iv), ct)
                .map_err(|_| InvalidReason::TagMismatch)
        }
    }
}

fn parse(plaintext: &[u8]) -> Result<Plain, InvalidReason> {
    // serde would also accept a JSON array for a struct; claims must be an object.
    if plaintext.trim_ascii_start().first() != Some(&b'{') {
        return Err(match std::str::from_utf8(plaintext) {
            Ok(s) if serde_json::from_str::<serde_json::Value>(s).is_ok() => {
                InvalidReason::BadClaims("the JSON is not an object".to_owned())
            }
            _ => InvalidReason::NotJson("it does not start with '{'".to_owned()),
        });
    }
    serde_json::from_slice(plaintext).map_err(|e| {
        if e.is_data() {
            InvalidReason::BadClaims(e.to_string())
        } else {
            InvalidReason::NotJson(e.to_string())
        }
    })
}

/// Verifies a login token: [`decode`]s it, then checks that it was issued for
/// `app_id` and `user_id`, then that `now_unix < expire`. Returns its claims.
///
/// The first failing check decides the error, in the order of SPEC §2: version
/// (6000107), decoding (6000103), AppID then user ID (6000101), expiry (6000106).
/// Never panics.
///
/// # Errors
/// A [`TokenError`]; [`TokenError::code`] gives the ZIM code.
pub fn verify(
    token: &str,
    secret: &Secret,
    app_id: u32,
    user_id: &str,
    now_unix: i64,
) -> Result<Claims, TokenError> {
    let claims = decode(token, secret)?;
    if claims.app_id != app_id {
        return Err(TokenError::AppIdMismatch {
            expected: app_id,
            found: claims.app_id,
        });
    }
    if claims.user_id != user_id {
        return Err(TokenError::UserIdMismatch {
            expected: user_id.to_owned(),
            found: claims.user_id,
        });
    }
    if now_unix >= claims.expire {
        return Err(TokenError::Expired {
            expire: claims.expire,
            now: now_unix,
        });
    }
    Ok(claims)
}

/// Generates a token for `user_id` of `app_id`, made at `now_unix` and valid for
/// `ttl_secs` seconds (until `now_unix + ttl_secs`, exclusive), using the thread's
/// cryptographic RNG. See [`generate_with_rng`].
///
/// # Errors
/// As [`generate_with_rng`].
pub fn generate(
    secret: &Secret,
    app_id: u32,
    user_id: &str,
    ttl_secs: u64,
    mode: Mode,
    now_unix: i64,
) -> Result<String, GenerateError> {
    generate_with_rng(
        secret,
        app_id,
        user_id,
        ttl_secs,
        mode,
        now_unix,
        &mut rand::thread_rng(),
    )
}

/// Generates a token as ZEGO's generators do, with randomness from `rng`.
///
/// The claims are `{"app_id","user_id","nonce","ctime","expire","payload":""}` with a
/// random i32 nonce, `ctime = now_unix` and `expire = now_unix + ttl_secs`. CBC tokens
/// get a random 16-character alphanumeric IV and no mode byte; GCM tokens a random
/// 12-character alphanumeric nonce and mode byte 1. [`verify`] accepts the result
/// until `expire`.
///
/// # Errors
/// [`GenerateError::ZeroAppId`], [`GenerateError::EmptyUserId`],
/// [`GenerateError::ZeroTtl`], [`GenerateError::ExpireOverflow`] if `now + ttl`
/// overflows i64, [`GenerateError::TooLong`] if the ciphertext exceeds 65535 bytes.
pub fn generate_with_rng<R: RngCore + CryptoRng>(
    secret: &Secret,
    app_id: u32,
    user_id: &str,
    ttl_secs: u64,
    mode: Mode,
    now_unix: i64,
    rng: &mut R,
) -> Result<String, GenerateError> {
    if app_id == 0 {
        return Err(GenerateError::ZeroAppId);
    }
    if user_id.is_empty() {
        return Err(GenerateError::EmptyUserId);
    }
    if ttl_secs == 0 {
        return Err(GenerateError::ZeroTtl);
    }
    let expire = i64::try_from(ttl_secs)
        .ok()
        .and_then(|ttl| now_unix.checked_add(ttl))
        .ok_or(GenerateError::ExpireOverflow {
            now: now_unix,
            ttl_secs,
        })?;
    let nonce: i32 = rng.r#gen();
    let user_json = serde_json::Value::from(user_id).to_string();
    let plaintext = format!(
        r#"{{"app_id":{app_id},"user_id":{user_json},"nonce":{nonce},"ctime":{now_unix},"expire":{expire},"payload":""}}"#
    );

    let (iv, ct, mode_byte): (Vec<u8>, Vec<u8>, Option<u8>) = match mode {
        Mode::Cbc => {
            let iv: [u8; CBC_IV_LEN] = std::array::from_fn(|_| rng.sample(Alphanumeric));
            let ct = CbcEnc::new(secret.key().into(), &iv.into())
                .encrypt_padded_vec_mut::<Pkcs7>(plaintext.as_bytes());
            (iv.to_vec(), ct, None)
        }
        Mode::Gcm => {
            let iv: [u8; GCM_NONCE_LEN] = std::array::from_fn(|_| rng.sample(Alphanumeric));
            let ct = Aes256Gcm::new(secret.key().into())
                .encrypt(Nonce::from_slice(&iv), plaintext.as_bytes())
                .map_err(|_| GenerateError::TooLong {
                    len: plaintext.len(),
                })?;
            (iv.to_vec(), ct, Some(MODE_GCM))
        }
    };
    let too_long = |len| GenerateError::TooLong { len };
    let ct_len = u16::try_from(ct.len()).map_err(|_| too_long(ct.len()))?;
    let iv_len = u16::try_from(iv.len()).map_err(|_| too_long(iv.len()))?;

    let mut raw = Vec::with_capacity(8 + 2 + iv.len() + 2 + ct.len() + 1);
    raw.extend_from_slice(&expire.to_be_bytes());
    raw.extend_from_slice(&iv_len.to_be_bytes());
    raw.extend_from_slice(&iv);
    raw.extend_from_slice(&ct_len.to_be_bytes());
    raw.extend_from_slice(&ct);
    raw.extend(mode_byte);
    Ok(format!("{VERSION}{}", STANDARD.encode(raw)))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const NOW: i64 = 1_795_654_033;
    const APP: u32 = 1_234_567_890;

    fn secret() -> Secret {
        Secret::new("fa94dd0f974cf2e293728a526b028271").unwrap()
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    /// Builds a token around arbitrary plaintext, outer expire, IV and trailer.
    fn seal(outer_expire: i64, plaintext: &str, mode: Mode, tail: &[u8]) -> String {
        let key = secret();
        let (iv, ct) = match mode {
            Mode::Cbc => {
                let iv = *b"0123456789abcdef";
                let ct = CbcEnc::new(key.key().into(), &iv.into())
                    .encrypt_padded_vec_mut::<Pkcs7>(plaintext.as_bytes());
                (iv.to_vec(), ct)
            }
            Mode::Gcm => {
                let iv = *b"0123456789ab";
                let ct = Aes256Gcm::new(key.key().into())
                    .encrypt(Nonce::from_slice(&iv), plaintext.as_bytes())
                    .unwrap();
                (iv.to_vec(), ct)
            }
        };
        frame(outer_expire, &iv, &ct, tail)
    }

    fn frame(outer_expire: i64, iv: &[u8], ct: &[u8], tail: &[u8]) -> String {
        let mut raw = outer_expire.to_be_bytes().to_vec();
        raw.extend_from_slice(&u16::try_from(iv.len()).unwrap().to_be_bytes());
        raw.extend_from_slice(iv);
        raw.extend_from_slice(&u16::try_from(ct.len()).unwrap().to_be_bytes());
        raw.extend_from_slice(ct);
        raw.extend_from_slice(tail);
        format!("04{}", STANDARD.encode(raw))
    }

    fn claims_json(expire: i64) -> String {
        format!(r#"{{"app_id":{APP},"user_id":"alice","nonce":5,"ctime":{NOW},"expire":{expire}}}"#)
    }

    fn reason(token: &str) -> InvalidReason {
        match decode(token, &secret()) {
            Err(TokenError::Invalid { reason }) => reason,
            other => panic!("expected Invalid for {token:?}, got {other:?}"),
        }
    }

    #[test]
    fn mode_parses_and_displays() {
        assert_eq!("cbc".parse::<Mode>().unwrap(), Mode::Cbc);
        assert_eq!("GCM".parse::<Mode>().unwrap(), Mode::Gcm);
        assert_eq!("Cbc".parse::<Mode>().unwrap(), Mode::Cbc);
        assert!(
            "aes"
                .parse::<Mode>()
                .unwrap_err()
                .to_string()
                .contains("\"aes\"")
        );
        assert_eq!(Mode::default(), Mode::Gcm);
        for m in [Mode::Cbc, Mode::Gcm] {
            assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
        }
    }

    #[test]
    fn generated_tokens_round_trip_in_both_modes() {
        for mode in [Mode::Cbc, Mode::Gcm] {
            let t =
                generate_with_rng(&secret(), APP, "alice", 3600, mode, NOW, &mut rng()).unwrap();
            assert!(t.starts_with("04"));
            let c = verify(&t, &secret(), APP, "alice", NOW).unwrap();
            assert_eq!((c.app_id, c.user_id.as_str()), (APP, "alice"));
            assert_eq!((c.ctime, c.expire, c.mode), (NOW, NOW + 3600, mode));
            assert!(i32::try_from(c.nonce).is_ok());
            let raw = STANDARD.decode(&t[2..]).unwrap();
            let iv_len = usize::from(u16::from_be_bytes([raw[8], raw[9]]));
            assert_eq!(iv_len, mode.iv_len());
            assert!(raw[10..10 + iv_len].iter().all(u8::is_ascii_alphanumeric));
            assert_eq!(
                raw.last() == Some(&1) && mode == Mode::Gcm,
                mode == Mode::Gcm
            );
            if mode == Mode::Cbc {
                // No mode byte: the ciphertext runs to the end.
                let ct_len = usize::from(u16::from_be_bytes([raw[26], raw[27]]));
                assert_eq!(raw.len(), 28 + ct_len);
            }
        }
        let t = generate(&secret(), APP, "bob", 60, Mode::Gcm, NOW).unwrap();
        let u = generate(&secret(), APP, "bob", 60, Mode::Gcm, NOW).unwrap();
        assert_ne!(t, u, "thread_rng must randomise the nonce");
    }

    #[test]
    fn verify_checks_app_then_user_then_expiry() {
        let t = generate_with_rng(&secret(), APP, "alice", 10, Mode::Gcm, NOW, &mut rng()).unwrap();
        let e = verify(&t, &secret(), APP + 1, "bob", NOW + 100).unwrap_err();
        assert_eq!(
            e,
            TokenError::AppIdMismatch {
                expected: APP + 1,
                found: APP
            }
        );
        assert_eq!(e.code().code(), 6_000_101);
        let e = verify(&t, &secret(), APP, "bob", NOW + 100).unwrap_err();
        assert!(
            matches!(&e, TokenError::UserIdMismatch { expected, found } if expected == "bob" && found == "alice")
        );
        assert_eq!(e.code().code(), 6_000_101);
        assert!(verify(&t, &secret(), APP, "alice", NOW + 9).is_ok());
        let e = verify(&t, &secret(), APP, "alice", NOW + 10).unwrap_err();
        assert_eq!(
            e,
            TokenError::Expired {
                expire: NOW + 10,
                now: NOW + 10
            }
        );
        assert_eq!(e.code().code(), 6_000_106);
    }

    #[test]
    fn version_prefix_rules() {
        let s = secret();
        for (t, code) in [
            ("03abc", 6_000_107),
            ("99", 6_000_107),
            ("05AAAA", 6_000_107),
        ] {
            assert_eq!(decode(t, &s).unwrap_err().code().code(), code, "{t}");
        }
        assert_eq!(
            decode("05x", &s).unwrap_err(),
            TokenError::VersionMismatch {
                found: "05".to_owned()
            }
        );
        assert_eq!(reason(""), InvalidReason::Empty);
        for t in ["0", "4", "x4AAAA", "0x", "é4", "\u{663}\u{664}"] {
            assert_eq!(reason(t), InvalidReason::NoVersion, "{t}");
        }
        assert_eq!(
            TokenError::from(InvalidReason::Empty).code().code(),
            6_000_103
        );
    }

    #[test]
    fn framing_errors() {
        assert_eq!(reason("04!!!not-base64!!!"), InvalidReason::NotBase64);
        assert_eq!(reason("04AAAA="), InvalidReason::NotBase64);
        assert_eq!(reason("04 AAAAAAAA"), InvalidReason::NotBase64);
        assert_eq!(reason("04"), InvalidReason::Truncated { field: "expire" });
        let t = format!("04{}", STANDARD.encode([0u8; 9]));
        assert_eq!(reason(&t), InvalidReason::Truncated { field: "IV length" });
        let t = format!(
            "04{}",
            STANDARD.encode([0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 1, 2])
        );
        assert_eq!(
            reason(&t),
            InvalidReason::LengthPastEnd {
                field: "IV",
                len: 3,
                left: 2
            }
        );
        let t = format!(
            "04{}",
            STANDARD.encode([0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0])
        );
        assert_eq!(
            reason(&t),
            InvalidReason::Truncated {
                field: "ciphertext length"
            }
        );
        let t = format!(
            "04{}",
            STANDARD.encode([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        );
        assert_eq!(
            reason(&t),
            InvalidReason::LengthPastEnd {
                field: "ciphertext",
                len: 1,
                left: 0
            }
        );
        let msg = TokenError::from(reason(&t)).to_string();
        assert!(
            msg.contains("ciphertext length 1 runs past the end"),
            "{msg}"
        );
    }

    #[test]
    fn mode_byte_rules() {
        let json = claims_json(NOW + 60);
        // Explicit mode 0 is CBC.
        let c = decode(&seal(NOW + 60, &json, Mode::Cbc, &[0]), &secret()).unwrap();
        assert_eq!(c.mode, Mode::Cbc);
        assert_eq!(
            reason(&seal(NOW + 60, &json, Mode::Cbc, &[7])),
            InvalidReason::UnknownMode(7)
        );
        assert_eq!(
            reason(&seal(NOW + 60, &json, Mode::Cbc, &[0, 0])),
            InvalidReason::TrailingBytes { count: 2 }
        );
        assert_eq!(
            reason(&seal(NOW + 60, &json, Mode::Gcm, &[1, 1])),
            InvalidReason::TrailingBytes { count: 2 }
        );
        // A GCM body labelled CBC, and the reverse, have the wrong IV size.
        assert_eq!(
            reason(&seal(NOW + 60, &json, Mode::Gcm, &[])),
            InvalidReason::IvLength {
                mode: Mode::Cbc,
                expected: 16,
                len: 12
            }
        );
        assert_eq!(
            reason(&seal(NOW + 60, &json, Mode::Cbc, &[1])),
            InvalidReason::IvLength {
                mode: Mode::Gcm,
                expected: 12,
                len: 16
            }
        );
    }

    #[test]
    fn decryption_errors() {
        let json = claims_json(NOW + 60);
        let gcm = seal(NOW + 60, &json, Mode::Gcm, &[1]);
        let mut raw = STANDARD.decode(&gcm[2..]).unwrap();
        let n = raw.len();
        raw[n - 2] ^= 1; // last tag byte
        assert_eq!(
            reason(&format!("04{}", STANDARD.encode(&raw))),
            InvalidReason::TagMismatch
        );

        let other = Secret::new("00000000000000000000000000000000").unwrap();
        let e = decode(&gcm, &other).unwrap_err();
        assert_eq!(e, TokenError::from(InvalidReason::TagMismatch));

        // CBC ciphertext that is empty or not a multiple of the block size.
        let iv = b"0123456789abcdef";
        assert_eq!(
            reason(&frame(0, iv, &[], &[])),
            InvalidReason::DecryptionFailed
        );
        assert_eq!(
            reason(&frame(0, iv, &[0; 17], &[])),
            InvalidReason::DecryptionFailed
        );
        // GCM ciphertext shorter than a tag.
        assert_eq!(
            reason(&frame(0, &iv[..12], &[0; 5], &[1])),
            InvalidReason::TagMismatch
        );
    }

    #[test]
    fn claims_parsing_rules() {
        let e = NOW + 60;
        // Any key order; payload of any type; nonce and ctime optional.
        for (json, mode) in [
            (
                format!(
                    r#"{{"expire":{e},"payload":{{"a":[1]}},"user_id":"alice","app_id":{APP}}}"#
                ),
                Mode::Cbc,
            ),
            (
                format!(
                    r#" {{"app_id":{APP},"user_id":"alice","expire":{e},"payload":null,"nonce":-9}}"#
                ),
                Mode::Gcm,
            ),
        ] {
            let c = verify(
                &seal(e, &json, mode, if mode == Mode::Gcm { &[1] } else { &[] }),
                &secret(),
                APP,
                "alice",
                NOW,
            )
            .unwrap();
            assert_eq!(c.expire, e);
            assert_eq!(c.ctime, 0);
        }
        let bad_claims = [
            format!(r#"{{"user_id":"alice","expire":{e}}}"#),
            format!(r#"{{"app_id":{APP},"expire":{e}}}"#),
            format!(r#"{{"app_id":{APP},"user_id":"alice"}}"#),
            format!(r#"{{"app_id":"{APP}","user_id":"alice","expire":{e}}}"#),
            format!(r#"{{"app_id":-1,"user_id":"alice","expire":{e}}}"#),
            format!(r#"{{"app_id":4294967296,"user_id":"alice","expire":{e}}}"#),
            format!(r#"{{"app_id":{APP},"user_id":7,"expire":{e}}}"#),
            format!(r#"{{"app_id":{APP},"user_id":"alice","expire":"{e}"}}"#),
            format!(r#"{{"app_id":{APP},"user_id":"alice","expire":{e}.5}}"#),
            format!(r#"{{"app_id":{APP},"user_id":"alice","expire":{e},"nonce":1.5}}"#),
            format!(r#"{{"app_id":{APP},"user_id":"alice","expire":{e},"nonce":null}}"#),
            format!(r#"{{"app_id":{APP},"user_id":"alice","expire":{e},"ctime":"x"}}"#),
            format!(r#"{{"app_id":{APP},"app_id":{APP},"user_id":"alice","expire":{e}}}"#),
            format!(r#"[{APP},"alice",{e}]"#),
        ];
        for json in &bad_claims {
            let r = reason(&seal(e, json, Mode::Gcm, &[1]));
            assert!(matches!(r, InvalidReason::BadClaims(_)), "{json}: {r:?}");
        }
        let trailing = format!("{} trailing", claims_json(e));
        for json in ["", "not json", "{", &trailing, "\u{0}"] {
            let r = reason(&seal(e, json, Mode::Cbc, &[]));
            assert!(matches!(r, InvalidReason::NotJson(_)), "{json}: {r:?}");
            assert!(
                TokenError::from(r)
                    .to_string()
                    .contains("plaintext is not JSON")
            );
        }
    }

    #[test]
    fn inner_and_outer_expire_must_agree() {
        let t = seal(NOW + 61, &claims_json(NOW + 60), Mode::Cbc, &[]);
        assert_eq!(
            reason(&t),
            InvalidReason::ExpireMismatch {
                outer: NOW + 61,
                inner: NOW + 60
            }
        );
    }

    #[test]
    fn generate_rejects_bad_input() {
        let s = secret();
        let g = |app, user: &str, ttl, now| {
            generate_with_rng(&s, app, user, ttl, Mode::Cbc, now, &mut rng())
        };
        assert_eq!(g(0, "a", 1, NOW), Err(GenerateError::ZeroAppId));
        assert_eq!(g(1, "", 1, NOW), Err(GenerateError::EmptyUserId));
        assert_eq!(g(1, "a", 0, NOW), Err(GenerateError::ZeroTtl));
        assert_eq!(
            g(1, "a", u64::MAX, NOW),
            Err(GenerateError::ExpireOverflow {
                now: NOW,
                ttl_secs: u64::MAX
            })
        );
        assert!(matches!(
            g(1, "a", 2, i64::MAX - 1),
            Err(GenerateError::ExpireOverflow { .. })
        ));
        assert!(g(1, "a", 1, i64::MAX - 1).is_ok());
        let long = "x".repeat(70_000);
        for mode in [Mode::Cbc, Mode::Gcm] {
            let r = generate_with_rng(&s, 1, &long, 1, mode, NOW, &mut rng());
            assert!(
                matches!(r, Err(GenerateError::TooLong { len }) if len > 65_535),
                "{mode}"
            );
        }
        // Just under the limit still works, and user IDs needing JSON escapes round-trip.
        let big = "y".repeat(65_000);
        let t = generate_with_rng(&s, 1, &big, 5, Mode::Gcm, NOW, &mut rng()).unwrap();
        assert_eq!(verify(&t, &s, 1, &big, NOW).unwrap().user_id, big);
        let odd = "quote\"back\\slash\u{1}é";
        let t = generate_with_rng(&s, 1, odd, 5, Mode::Cbc, NOW, &mut rng()).unwrap();
        assert_eq!(verify(&t, &s, 1, odd, NOW).unwrap().user_id, odd);
    }

    #[test]
    fn error_messages_never_contain_the_secret() {
        let text = "fa94dd0f974cf2e293728a526b028271";
        let t = generate_with_rng(&secret(), APP, "alice", 10, Mode::Gcm, NOW, &mut rng()).unwrap();
        for e in [
            verify(&t, &secret(), 1, "alice", NOW).unwrap_err(),
            verify(&t, &secret(), APP, "bob", NOW).unwrap_err(),
            verify(&t, &secret(), APP, "alice", NOW + 10).unwrap_err(),
            verify("04AAAA", &secret(), APP, "alice", NOW).unwrap_err(),
        ] {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(text), "{shown}");
        }
    }
}
