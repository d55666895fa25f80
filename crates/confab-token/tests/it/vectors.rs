//! The shared vectors: real tokens from ZEGO's generators and broken ones, each with
//! the code `verify` must give now.

use std::path::PathBuf;

use confab_token::{Mode, Secret, decode, verify};
use serde_json::Value;

/// The vectors, kept in the repository (`tests/data/token04.json`, a copy of
/// the project's shared `vectors/token04.json`).
fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/token04.json")
}

fn load() -> Value {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the Token04 vectors at {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {key} is not a string: {v}"))
}

fn int_field(v: &Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .unwrap_or_else(|| panic!("vector field {key} is not an integer: {v}"))
}

/// The time to check the vectors at. The valid vectors live for years and the
/// expired ones died one second after `generated_at`, so the file is meant to be
/// checked against the real clock, as a server would at login. The test insists
/// the clock is past `generated_at`, so it cannot pass on a stale clock by accident.
fn check_time(doc: &Value) -> i64 {
    let generated_at = int_field(doc, "generated_at");
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs(),
    )
    .expect("clock in range");
    assert!(
        now > generated_at + 1,
        "the clock ({now}) is not past the vectors' generated_at ({generated_at})"
    );
    now
}

#[test]
fn every_vector_gets_its_expected_code() {
    let doc = load();
    let secret = Secret::new(str_field(&doc, "secret")).expect("the vectors' secret is valid");
    let now = check_time(&doc);
    let cases = doc["cases"].as_array().expect("cases is an array");
    assert!(
        cases.len() > 20,
        "only {} vector cases; the file looks truncated",
        cases.len()
    );

    let mut failures = Vec::new();
    let (mut ok, mut gcm_ok, mut cbc_ok) = (0, 0, 0);
    for case in cases {
        let name = str_field(case, "name");
        let token = str_field(case, "token");
        let app_id = u32::try_from(int_field(case, "app_id")).expect("app_id fits u32");
        let user_id = str_field(case, "user_id");
        let expect = int_field(case, "expect");
        let got = match verify(token, &secret, app_id, user_id, now) {
            Ok(claims) => {
                if claims.app_id != app_id || claims.user_id != user_id || claims.expire <= now {
                    failures.push(format!("{name}: accepted with wrong claims {claims:?}"));
                }
                0
            }
            Err(e) => i64::from(e.code().code()),
        };
        if got != expect {
            let detail = verify(token, &secret, app_id, user_id, now).err();
            failures.push(format!("{name}: expected {expect}, got {got} ({detail:?})"));
        }
        if expect == 0 {
            ok += 1;
            match decode(token, &secret).map(|c| c.mode) {
                Ok(Mode::Gcm) => gcm_ok += 1,
                Ok(Mode::Cbc) => cbc_ok += 1,
                Err(_) => {}
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} vector(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        ok > 0 && gcm_ok > 0 && cbc_ok > 0,
        "vectors must cover both modes: {cbc_ok} CBC, {gcm_ok} GCM"
    );
}

#[test]
fn valid_vectors_expire_exactly_at_their_expire() {
    let doc = load();
    let secret = Secret::new(str_field(&doc, "secret")).expect("the vectors' secret is valid");
    for case in doc["cases"].as_array().expect("cases is an array") {
        if int_field(case, "expect") != 0 {
            continue;
        }
        let name = str_field(case, "name");
        let token = str_field(case, "token");
        let app_id = u32::try_from(int_field(case, "app_id")).expect("app_id fits u32");
        let user_id = str_field(case, "user_id");
        let expire = decode(token, &secret)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .expire;
        assert!(
            verify(token, &secret, app_id, user_id, expire - 1).is_ok(),
            "{name}"
        );
        let e = verify(token, &secret, app_id, user_id, expire).expect_err(name);
        assert_eq!(e.code().code(), 6_000_106, "{name}");
    }
}
