//! `POST /v1/logs`: a logged-in user's SDK log file, stored per app and user
//! under the data directory with a size cap.
//!
//! Authentication is the user's own token: headers `X-Confab-App-Id`,
//! `X-Confab-User-Id` and `Authorization: Bearer <token>`. The body is the log,
//! plain or gzip (`Content-Encoding: gzip`); its decompressed size is capped. The
//! answer is JSON `{"code","message"[,"data"]}`: 0 on success, 6000010 on any
//! failure, with a message that says what failed.

use std::io::Read as _;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use confab_proto::ErrorCode;
use serde_json::json;

use crate::http_error;
use crate::state::Shared;
use crate::validate;

fn failure(status: StatusCode, message: impl Into<String>) -> Response {
    http_error::json_error(status, ErrorCode::LogUploadFailed, message)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) async fn upload(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(app_id) = header_str(&headers, "x-confab-app-id").and_then(|v| v.parse::<u32>().ok())
    else {
        return failure(
            StatusCode::BAD_REQUEST,
            "header X-Confab-App-Id (a number) is missing",
        );
    };
    let Some(user_id) = header_str(&headers, "x-confab-user-id") else {
        return failure(
            StatusCode::BAD_REQUEST,
            "header X-Confab-User-Id is missing",
        );
    };
    if let Err(msg) = validate::user_id("X-Confab-User-Id", user_id) {
        return failure(StatusCode::BAD_REQUEST, msg);
    }
    let Some(token) = header_str(&headers, header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return failure(
            StatusCode::UNAUTHORIZED,
            "header Authorization: Bearer <token> is missing",
        );
    };
    let Some(app) = shared.apps.get(&app_id) else {
        return failure(
            StatusCode::UNAUTHORIZED,
            format!("appID {app_id} is not configured on this server (6000004)"),
        );
    };
    if let Err(e) = confab_token::verify(
        token.trim(),
        &app.secret,
        app_id,
        user_id,
        shared.clock.now_secs(),
    ) {
        return failure(
            StatusCode::UNAUTHORIZED,
            format!("token: {e} ({})", e.code().code()),
        );
    }
    let cap = app.limits.max_log_bytes;
    // Read at most the cap (gzip bodies are smaller than what they hold).
    let Ok(body) = axum::body::to_bytes(body, cap).await else {
        return failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the log is larger than {cap} bytes"),
        );
    };
    let gzip = header_str(&headers, header::CONTENT_ENCODING.as_str())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"))
        || body.starts_with(&[0x1f, 0x8b]);
    let data = if gzip {
        let mut out = Vec::new();
        let decoder = flate2::read::GzDecoder::new(&body[..]);
        match decoder.take(cap as u64 + 1).read_to_end(&mut out) {
            Ok(_) if out.len() > cap => {
                return failure(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the log is larger than {cap} bytes when decompressed"),
                );
            }
            Ok(_) => out,
            Err(e) => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    format!("the gzip body is corrupt: {e}"),
                );
            }
        }
    } else {
        body.to_vec()
    };
    let dir = shared
        .config
        .data_dir
        .join("logs")
        .join(app_id.to_string())
        .join(sanitize(user_id));
    // Unique even for two uploads in the same millisecond.
    let name = format!(
        "{}-{:08x}.log",
        shared.clock.now_ms(),
        rand::random::<u32>()
    );
    let path = dir.join(&name);
    let len = data.len();
    let write = async {
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::write(&path, data).await
    };
    if let Err(e) = write.await {
        tracing::error!(error = %e, "storing an uploaded log failed");
        return failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server could not store the log",
        );
    }
    (
        StatusCode::OK,
        Json(json!({"code": 0, "name": "Success", "message": "ok", "data": {"bytes": len, "file": name}})),
    )
        .into_response()
}

/// A user ID as a single safe path component: ID characters that file systems or
/// shells treat specially are percent-encoded.
fn sanitize(user_id: &str) -> String {
    let mut out = String::with_capacity(user_id.len());
    for b in user_id.bytes() {
        if b.is_ascii_alphanumeric() || b"-_@+=".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sanitized_user_ids_are_single_components() {
        assert_eq!(super::sanitize("alice"), "alice");
        assert_eq!(super::sanitize(".."), "%2E%2E");
        assert_eq!(super::sanitize("a/b"), "a%2Fb");
    }
}
