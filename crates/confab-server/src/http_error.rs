//! The JSON shape of an HTTP error, shared by every plain HTTP route.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use confab_proto::ErrorCode;
use serde_json::json;

/// An HTTP error answered as JSON `{"code","name","message"}`, like a protocol
/// error (used by every plain HTTP route that can fail).
pub(crate) fn json_error(
    status: StatusCode,
    code: ErrorCode,
    message: impl Into<String>,
) -> Response {
    (
        status,
        Json(json!({"code": code.code(), "name": code.name(), "message": message.into()})),
    )
        .into_response()
}
