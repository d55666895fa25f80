//! Property tests: the verifier never panics, generation round-trips, and tampering
//! is always caught.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use confab_token::{Claims, Mode, Secret, TokenError, decode, generate_with_rng, verify};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

const SECRET: &str = "fa94dd0f974cf2e293728a526b028271";
const TEN_YEARS: u64 = 10 * 366 * 24 * 3600;
const USER_ID: &str = "[A-Za-z0-9!#$%&()+\\-:;<=.>?@\\[\\]^_{}|~]{1,32}";

fn secret() -> Secret {
    Secret::new(SECRET).expect("valid secret")
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Cbc), Just(Mode::Gcm)]
}

/// Bytes framed like a token (consistent or slightly-off lengths, plausible IV
/// sizes, optional tail), so fuzzing reaches decryption and parsing.
fn framed_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<i64>(),
        prop_oneof![Just(12usize), Just(16usize), 0usize..40],
        prop::collection::vec(any::<u8>(), 0..200),
        -2i32..=2,
        prop::collection::vec(any::<u8>(), 0..3),
    )
        .prop_map(|(expire, iv_len, body, skew, tail)| {
            let iv_len = iv_len.min(body.len());
            let (iv, ct) = body.split_at(iv_len);
            let ct_len = u16::try_from(ct.len())
                .unwrap_or(0)
                .saturating_add_signed(i16::try_from(skew).unwrap_or(0));
            let mut raw = expire.to_be_bytes().to_vec();
            raw.extend_from_slice(&u16::try_from(iv.len()).unwrap_or(0).to_be_bytes());
            raw.extend_from_slice(iv);
            raw.extend_from_slice(&ct_len.to_be_bytes());
            raw.extend_from_slice(ct);
            raw.extend_from_slice(&tail);
            raw
        })
}

fn check_no_panic(token: &str) {
    let s = secret();
    let _ = decode(token, &s);
    let _ = verify(token, &s, 1, "alice", 0);
    let _ = verify(token, &s, u32::MAX, "", i64::MIN);
}

proptest! {
    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        check_no_panic(&s);
        check_no_panic(&format!("04{s}"));
    }

    #[test]
    fn arbitrary_base64_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let t = format!("04{}", STANDARD.encode(&bytes));
        check_no_panic(&t);
        let e = decode(&t, &secret()).expect_err("random bytes are not a token");
        prop_assert_eq!(e.code().code(), 6_000_103);
    }

    #[test]
    fn framed_bytes_never_panic(raw in framed_bytes()) {
        let t = format!("04{}", STANDARD.encode(&raw));
        check_no_panic(&t);
        let e = decode(&t, &secret()).expect_err("random ciphertext is not a token");
        prop_assert_eq!(e.code().code(), 6_000_103);
    }

    #[test]
    fn generated_tokens_round_trip_and_expire_on_time(
        user in USER_ID,
        app_id in 1u32..,
        ttl in 1..=TEN_YEARS,
        now in 0i64..=4_000_000_000,
        mode in mode(),
        seed in any::<u64>(),
    ) {
        let s = secret();
        let mut rng = StdRng::seed_from_u64(seed);
        let t = generate_with_rng(&s, app_id, &user, ttl, mode, now, &mut rng)
            .expect("valid input generates");
        let expire = now + i64::try_from(ttl).expect("ttl fits");
        let c = verify(&t, &s, app_id, &user, now).expect("fresh token verifies");
        prop_assert_eq!(&c.user_id, &user);
        prop_assert_eq!((c.app_id, c.ctime, c.expire, c.mode), (app_id, now, expire, mode));
        prop_assert!(i32::try_from(c.nonce).is_ok());
        prop_assert!(verify(&t, &s, app_id, &user, expire - 1).is_ok());
        let e = verify(&t, &s, app_id, &user, expire).expect_err("expired at now+ttl");
        prop_assert_eq!(e, TokenError::Expired { expire, now: expire });
    }

    #[test]
    fn another_secret_is_rejected_as_invalid(
        other in "[!-~]{32}",
        user in USER_ID,
        mode in mode(),
        seed in any::<u64>(),
    ) {
        prop_assume!(other != SECRET);
        let mut rng = StdRng::seed_from_u64(seed);
        let t = generate_with_rng(&secret(), 7, &user, 60, mode, 1000, &mut rng)
            .expect("valid input generates");
        let other = Secret::new(&other).expect("printable 32 chars");
        let e = verify(&t, &other, 7, &user, 1000).expect_err("wrong secret");
        prop_assert_eq!(e.code().code(), 6_000_103);
    }

    #[test]
    fn single_byte_mutations_are_caught(
        user in USER_ID,
        app_id in 1u32..,
        mode in mode(),
        seed in any::<u64>(),
        index in any::<prop::sample::Index>(),
        flip in 1u8..,
    ) {
        let s = secret();
        let now = 1_795_654_033;
        let mut rng = StdRng::seed_from_u64(seed);
        let t = generate_with_rng(&s, app_id, &user, 3600, mode, now, &mut rng)
            .expect("valid input generates");
        let original: Claims = verify(&t, &s, app_id, &user, now).expect("verifies");
        let mut raw = STANDARD.decode(&t[2..]).expect("base64");
        let i = index.index(raw.len());
        raw[i] ^= flip;
        let mutated = format!("04{}", STANDARD.encode(&raw));
        match verify(&mutated, &s, app_id, &user, now) {
            // Only acceptable if nothing changed (CBC is malleable; the JSON guards it).
            Ok(c) => prop_assert_eq!(c, original),
            Err(e) => {
                if i < 8 {
                    prop_assert_eq!(e.code().code(), 6_000_103, "outer expire mutation: {}", e);
                }
            }
        }
        if mode == Mode::Gcm {
            prop_assert!(decode(&mutated, &s).is_err(), "GCM must detect any change");
        }
    }
}
