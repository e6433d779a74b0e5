//! Read your own writes across replicas, in the spirit of Zanzibar's zookies:
//! every answer to a write carries the store revision it produced
//! (`X-Tessera-Revision`), and a request that sends one back is served only
//! once this replica has applied that revision, waiting a bounded time and
//! answering `503` past it. On a store only this process writes, every
//! revision it handed out is applied already.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::state::AppState;

pub const REVISION: HeaderName = HeaderName::from_static("x-tessera-revision");
/// How long a request waits for its replica to catch up.
const CATCH_UP: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(2);

pub async fn at_least_as_fresh(
    State(state): State<AppState>,
    request: Request<Body>,
    next: Next,
) -> Response {
    if let Some(value) = request.headers().get(&REVISION) {
        let Some(wanted) = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": "X-Tessera-Revision must be a revision number a write answered with" })),
            )
                .into_response();
        };
        if !caught_up(&state, wanted).await {
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "error": format!("this server has not caught up with revision {wanted} yet; try again")
                })),
            )
                .into_response();
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from_static("1"),
            );
            return response;
        }
    }
    let writes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let mut response = next.run(request).await;
    if writes {
        // The newest revision this replica committed: the request's own
        // writes, or a later one, which only asks a reader to wait longer.
        if let Ok(value) = HeaderValue::from_str(&state.store.revision().to_string()) {
            response.headers_mut().insert(REVISION, value);
        }
    }
    response
}

/// Wait, bounded, until the store has applied `revision`.
async fn caught_up(state: &AppState, revision: u64) -> bool {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    loop {
        if state.store.has_applied(revision) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}
