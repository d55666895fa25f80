//! The browser side of the one port: the demo chat page at `/`, the web SDK at
//! `/sdk/zim.js` (an ES module exporting `ZIM`) with its typings at
//! `/sdk/zim.d.ts` (and the `.d.ts` files it imports), and development tokens.
//!
//! The page and the SDK are built from `web/` and embedded in the binary, so a
//! plain `cargo build` serves them. Tokens are minted only for the development app
//! the server made because no app was configured (`GET /dev/app`,
//! `POST /dev/token`); with configured apps both answer 404 and a client must get
//! its token from the app's own backend.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use confab_proto::ErrorCode;
use confab_token::Mode;
use serde::Deserialize;
use serde_json::json;

use crate::clock::Clock;
use crate::http_error;
use crate::state::App;
use crate::validate;

/// The demo page (`web/demo/index.html`).
const INDEX_HTML: &str = include_str!("../../../web/demo/index.html");
/// The web SDK bundle (`web/dist/zim.js`, built by `npm run build` in `web/`).
const ZIM_JS: &str = include_str!("../../../web/dist/zim.js");
/// The web SDK's typings under `/sdk/`: `zim.d.ts` and the files it imports.
const TYPINGS: [(&str, &str); 4] = [
    ("zim.d.ts", include_str!("../../../web/dist/zim.d.ts")),
    ("api.d.ts", include_str!("../../../web/dist/api.d.ts")),
    ("enums.d.ts", include_str!("../../../web/dist/enums.d.ts")),
    ("types.d.ts", include_str!("../../../web/dist/types.d.ts")),
];

/// Longest validity of a development token: seven days.
const MAX_DEV_TOKEN_SECS: u64 = 7 * 24 * 3600;
/// Validity of a development token when the request names none: one day.
const DEFAULT_DEV_TOKEN_SECS: u64 = 24 * 3600;

/// What the development-token routes need: the development app, if any.
#[derive(Clone)]
pub(crate) struct DevTokens {
    app: Option<Arc<App>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DevTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevTokens")
            .field("app_id", &self.app.as_ref().map(|app| app.id))
            .finish_non_exhaustive()
    }
}

impl DevTokens {
    /// Tokens for `app` (the development app) or, with `None`, for no app at all.
    pub(crate) fn new(app: Option<Arc<App>>, clock: Arc<dyn Clock>) -> DevTokens {
        DevTokens { app, clock }
    }
}

/// The routes of this module, with their own state.
pub(crate) fn router(dev: DevTokens) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/sdk/zim.js", get(zim_js))
        .route("/sdk/{file}", get(typings))
        .route("/dev/app", get(dev_app))
        .route("/dev/token", post(dev_token))
        .with_state(Arc::new(dev))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Embedded in the binary: fresh with every server version, so let
            // browsers revalidate rather than keep a stale SDK.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn zim_js() -> Response {
    asset("text/javascript; charset=utf-8", ZIM_JS)
}

async fn typings(Path(file): Path<String>) -> Response {
    match TYPINGS.iter().find(|(name, _)| *name == file) {
        Some((_, body)) => asset("application/typescript; charset=utf-8", body),
        None => (
            StatusCode::NOT_FOUND,
            format!("no such file: /sdk/{file}\n"),
        )
            .into_response(),
    }
}

fn no_dev_app() -> Response {
    http_error::json_error(
        StatusCode::NOT_FOUND,
        ErrorCode::InvalidAppId,
        "this server hosts configured apps and mints no tokens: get a token from your app's backend \
         (or `confab token generate`)",
    )
}

async fn dev_app(State(dev): State<Arc<DevTokens>>) -> Response {
    match &dev.app {
        Some(app) => Json(json!({"appID": app.id, "devTokens": true})).into_response(),
        None => no_dev_app(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TokenRequest {
    #[serde(rename = "userID")]
    user_id: String,
    #[serde(default)]
    effective_time_in_seconds: Option<u64>,
}

async fn dev_token(
    State(dev): State<Arc<DevTokens>>,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Response {
    let Some(app) = &dev.app else {
        return no_dev_app();
    };
    let req = match body {
        Ok(Json(req)) => req,
        Err(e) => {
            return http_error::json_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::ParamInvalid,
                format!(
                    "the body must be JSON {{\"userID\": string, \"effectiveTimeInSeconds\"?: number}}: {}",
                    e.body_text()
                ),
            );
        }
    };
    if let Err(msg) = validate::user_id("userID", &req.user_id) {
        return http_error::json_error(StatusCode::BAD_REQUEST, ErrorCode::ParamInvalid, msg);
    }
    let ttl = req
        .effective_time_in_seconds
        .unwrap_or(DEFAULT_DEV_TOKEN_SECS);
    if ttl == 0 || ttl > MAX_DEV_TOKEN_SECS {
        return http_error::json_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::ParamInvalid,
            format!("effectiveTimeInSeconds: must be 1-{MAX_DEV_TOKEN_SECS}, got {ttl}"),
        );
    }
    match confab_token::generate(
        &app.secret,
        app.id,
        &req.user_id,
        ttl,
        Mode::Gcm,
        dev.clock.now_secs(),
    ) {
        Ok(token) => Json(json!({
            "appID": app.id,
            "userID": req.user_id,
            "token": token,
            "expiresIn": ttl,
        }))
        .into_response(),
        Err(e) => http_error::json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ParamInvalid,
            format!("cannot make a token: {e}"),
        ),
    }
}
