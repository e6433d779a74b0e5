//! The HTTP surface: one module per resource, thin handlers that extract,
//! authorize and call the domain, and the middleware every request passes
//! through (request id, tracing, body limit, timeout, JSON errors).

pub mod agents;
pub mod audit;
pub mod auth;
pub mod channels;
pub mod chat;
pub mod check;
pub mod csrf;
pub mod extract;
pub mod factors;
pub mod forward;
pub mod groups;
mod health;
pub mod memory;
pub mod metrics;
pub mod openapi;
pub mod paging;
pub mod passkeys;
pub mod ratelimit;
pub mod revision;
pub mod secrets;
pub mod server;
pub mod tokens;

use std::time::Duration;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{middleware, Json, Router};
use serde_json::json;
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest error text copied from a framework rejection into a JSON error.
const MAX_ERROR_TEXT: usize = 512;

pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    if state.config.metrics && state.config.metrics_listen.is_none() {
        router = router.route("/metrics", axum::routing::get(metrics::exposition));
    }
    let with_metrics = state.config.metrics;
    let max_body = state.config.max_body_bytes;
    let timeout = state.config.request_timeout;
    let max_concurrent = state.config.max_concurrent_requests;
    let router = router
        .merge(health::routes())
        .merge(auth::routes())
        .merge(factors::routes())
        .merge(passkeys::routes())
        .merge(forward::routes())
        .merge(agents::routes())
        .merge(groups::routes())
        .merge(tokens::routes())
        .merge(audit::routes())
        .merge(secrets::routes())
        .merge(memory::routes())
        .merge(chat::routes())
        .merge(channels::routes())
        .merge(openapi::routes())
        .merge(check::routes())
        .merge(crate::web::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), legacy_cookie))
        .layer(middleware::from_fn_with_state(state.clone(), csrf::protect));
    let router = if with_metrics {
        router.route_layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
    } else {
        router
    };
    router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            revision::at_least_as_fresh,
        ))
        .layer(middleware::map_response(json_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            csrf::security_headers,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    // The span carries method, path and request id: never
                    // headers or bodies, which hold tokens and passwords.
                    TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
                        let id = req
                            .headers()
                            .get(REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                    }),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                // Overload is answered at once, not queued without bound.
                .layer(HandleErrorLayer::new(overloaded))
                .layer(LoadShedLayer::new())
                .layer(ConcurrencyLimitLayer::new(max_concurrent.max(1)))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    timeout.max(Duration::from_millis(1)),
                )),
        )
        .with_state(state)
}

/// A JSON body already rendered as text (for responses assembled from cached
/// parts without building a `serde_json::Value` first).
pub struct JsonText(pub String);

impl IntoResponse for JsonText {
    fn into_response(self) -> Response {
        (
            [(
                CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

/// A browser still holding a legacy TinyAgentOS `taos_session` cookie (an
/// imported, unexpired session) gets a fresh session token in its place,
/// exactly once; the request then proceeds with the new token.
///
/// Not on forward auth (`/auth/verify...`): a proxy does not hand the new
/// cookie to the browser on an allowed request, so the exchange would burn
/// the legacy session. The browser is sent to sign in, where it happens.
async fn legacy_cookie(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut request: Request<Body>,
    next: middleware::Next,
) -> Response {
    if request.uri().path().starts_with("/auth/verify") {
        return next.run(request).await;
    }
    let legacy = extract::presented_token(request.headers())
        .ok()
        .flatten()
        .filter(|t| {
            t.len() < 100
                && request
                    .headers()
                    .get(axum::http::header::AUTHORIZATION)
                    .is_none()
        });
    let Some(legacy) = legacy else {
        return next.run(request).await;
    };
    let exchanged = crate::domain::sessions::exchange_legacy(
        &state.store,
        &legacy,
        state.config.session_ttl,
        state.config.long_session_ttl,
    )
    .await;
    let session = match exchanged {
        Ok(Some(session)) => session,
        Ok(None) => return next.run(request).await,
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    let token = match state
        .authz
        .mint_session(&session.user_id, &session.id, session.expires_at)
    {
        Ok(token) => token,
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    tracing::info!(user = %session.user_id, "legacy session exchanged");
    if let Ok(value) =
        axum::http::HeaderValue::from_str(&format!("{}={token}", extract::SESSION_COOKIE))
    {
        request
            .headers_mut()
            .insert(axum::http::header::COOKIE, value);
    }
    let mut response = next.run(request).await;
    if let Ok(cookie) = auth::session_cookie(&state, &token, &session) {
        response
            .headers_mut()
            .append(axum::http::header::SET_COOKIE, cookie);
    }
    response
}

async fn overloaded(
    _: tower::BoxError,
) -> (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    Json<serde_json::Value>,
) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "1")],
        Json(json!({ "error": "the server is busy; try again" })),
    )
}

async fn not_found(headers: axum::http::HeaderMap) -> Response {
    if crate::web::wants_html(&headers) {
        return (
            StatusCode::NOT_FOUND,
            axum::response::Html(
                "<!doctype html><meta charset=utf-8><title>Not found</title>\
                 <link rel=stylesheet href=/static/style.css><main><h1>Not found</h1>\
                 <p>There is no page here. <a href=\"/\">Go to the start page</a>.</p></main>",
            ),
        )
            .into_response();
    }
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "no such route" })),
    )
        .into_response()
}

/// Framework rejections (bad JSON, wrong method, oversized body...) answer in
/// plain text; rewrite every error that is not already JSON into
/// `{"error": ...}` so clients see one shape.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // JSON errors stay; pages say what went wrong in their own words.
    let is_json_or_page = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if is_json_or_page {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) if !bytes.is_empty() => {
            let mut text = String::from_utf8_lossy(&bytes).trim().to_owned();
            if text.len() > MAX_ERROR_TEXT {
                let cut = (0..=MAX_ERROR_TEXT)
                    .rev()
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(0);
                text.truncate(cut);
            }
            text
        }
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let mut rewritten = (status, Json(json!({ "error": text }))).into_response();
    for (name, value) in parts.headers.iter() {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            rewritten.headers_mut().append(name, value.clone());
        }
    }
    rewritten
}

/// The metrics alone, for a separate listen address.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(metrics::exposition))
        .with_state(state)
}
