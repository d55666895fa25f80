use serde_json::Value;

use crate::{confab, repo_dir, stdout};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn verify_gives_the_expected_code_for_every_vector() {
    let path = repo_dir().join("crates/confab-token/tests/data/token04.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let file: Value = serde_json::from_str(&text).unwrap();
    let secret = file["secret"].as_str().unwrap();
    // The vectors' valid tokens live for years and the expired ones died a
    // second after `generated_at`: check them against the real clock, as a user would.
    let cases = file["cases"].as_array().unwrap();
    assert!(cases.len() > 20);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let expect = case["expect"].as_u64().unwrap();
        let app_id = case["app_id"].as_u64().unwrap().to_string();
        let out = confab(&[
            "token",
            "verify",
            "--json",
            "--app-id",
            &app_id,
            "--secret",
            secret,
            "--user",
            case["user_id"].as_str().unwrap(),
            "--",
            case["token"].as_str().unwrap(),
        ]);
        let line = stdout(&out);
        let v: Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("{name}: not one JSON line ({e}): {line:?}"));
        assert_eq!(v["code"].as_u64(), Some(expect), "{name}: {line}");
        assert!(
            v["name"].is_string() && v["message"].is_string(),
            "{name}: {line}"
        );
        assert_eq!(
            out.status.code(),
            Some(if expect == 0 { 0 } else { 1 }),
            "{name}"
        );
        assert_eq!(v.get("expire").is_some(), expect == 0, "{name}: {line}");
    }
}

#[test]
fn generate_then_verify_in_both_modes() {
    for mode in ["gcm", "cbc"] {
        let out = confab(&[
            "token", "generate", "--app-id", "42", "--secret", SECRET, "--user", "carol", "--ttl",
            "60", "--mode", mode,
        ]);
        assert!(out.status.success(), "{mode}: {out:?}");
        let token = stdout(&out).trim().to_owned();
        assert!(token.starts_with("04"), "{token}");

        let ok = confab(&[
            "token", "verify", "--json", "--app-id", "42", "--secret", SECRET, "--user", "carol",
            &token,
        ]);
        assert!(ok.status.success(), "{mode}: {ok:?}");
        let v: Value = serde_json::from_str(stdout(&ok).trim()).unwrap();
        assert_eq!(v["code"], 0);
        assert_eq!(v["name"], "Success");

        let other_user = confab(&[
            "token", "verify", "--json", "--app-id", "42", "--secret", SECRET, "--user", "dave",
            &token,
        ]);
        assert_eq!(other_user.status.code(), Some(1));
        let v: Value = serde_json::from_str(stdout(&other_user).trim()).unwrap();
        assert_eq!(v["code"], 6000101);
    }
}

#[test]
fn default_ttl_is_a_day() {
    let out = confab(&[
        "token", "generate", "--app-id", "7", "--secret", SECRET, "--user", "u",
    ]);
    let token = stdout(&out).trim().to_owned();
    let out = confab(&[
        "token", "verify", "--json", "--app-id", "7", "--secret", SECRET, "--user", "u", &token,
    ]);
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let expire = v["expire"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (expire - now - 86_400).abs() <= 5,
        "expire {expire} now {now}"
    );
}

#[test]
fn expired_token_exits_1_with_6000106() {
    let out = confab(&[
        "token", "generate", "--app-id", "7", "--secret", SECRET, "--user", "u", "--ttl", "10",
    ]);
    let token = stdout(&out).trim().to_owned();
    let later = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600)
        .to_string();
    let out = confab(&[
        "token", "verify", "--app-id", "7", "--secret", SECRET, "--user", "u", "--now", &later,
        &token,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("6000106"), "{}", stdout(&out));
}

#[test]
fn a_bad_secret_is_refused_with_a_clear_message() {
    let out = confab(&[
        "token", "generate", "--app-id", "7", "--secret", "short", "--user", "u",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("32"), "{err}");
}

#[test]
fn errors_json_lists_the_28_codes() {
    let out = confab(&["errors", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 28);
    for row in rows {
        assert!(row["code"].is_u64() && row["name"].is_string() && row["message"].is_string());
    }
    assert!(rows.iter().any(|r| r["code"] == 6000321));
    let table = confab(&["errors"]);
    assert!(stdout(&table).contains("6000107"));
}
