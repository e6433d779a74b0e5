//! Liveness and readiness probes for supervisors and load balancers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::state::AppState;
use crate::store::StoreError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

/// The process is up and serving.
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The store answers: safe to send traffic. On PostgreSQL the answer names
/// the engine, as a load balancer in front of several replicas reads it;
/// sled's answer is unchanged.
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let postgres = state.config.store_url.is_some();
    match state.store.ping() {
        Ok(()) if postgres => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "store": "postgres" })),
        ),
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(e) => {
            tracing::error!(error = %e, "readiness probe failed");
            if postgres {
                // The reason's kind only: the engine's message may name the
                // host, the user or the database.
                let reason = match e {
                    StoreError::Unavailable(_) => "the database is not answering",
                    StoreError::Damaged(_) => "the store is damaged",
                    _ => "the database answered with an error",
                };
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({ "status": "unavailable", "store": "postgres", "error": reason })),
                )
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({ "status": "unavailable", "error": "store is not answering" })),
                )
            }
        }
    }
}
