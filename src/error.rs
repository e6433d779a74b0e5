//! The HTTP face of every error: each layer's error type is mapped to a status
//! and a `{"error": "..."}` body here, once. Client errors say what was wrong;
//! server errors say only that something failed, and the detail goes to the log.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::authz::AuthError;
use crate::domain::DomainError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("{0}")]
    BadRequest(String),
    #[error("too many attempts; retry after {retry_after} seconds")]
    RateLimited { retry_after: u64 },
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Domain(DomainError::Store(e))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

fn body(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn internal(detail: &str) -> Response {
    tracing::error!(detail, "request failed");
    body(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
}

/// The store cannot be reached: fail closed, and say to come back.
fn unavailable(detail: &str) -> Response {
    tracing::warn!(detail, "the store is unavailable");
    let mut resp = body(
        StatusCode::SERVICE_UNAVAILABLE,
        "the store is unavailable; try again shortly",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Auth(e) => match e {
                AuthError::Missing
                | AuthError::Invalid(_)
                | AuthError::Expired
                | AuthError::Revoked => body(StatusCode::UNAUTHORIZED, e.to_string()),
                AuthError::Denied(_) => body(StatusCode::FORBIDDEN, e.to_string()),
                AuthError::Limit => {
                    let mut resp = body(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "authorization could not be completed; try again",
                    );
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    resp
                }
                AuthError::Internal(detail) => internal(&detail),
                AuthError::Unavailable(detail) => unavailable(&detail),
            },
            ApiError::Domain(e) => match e {
                DomainError::InvalidCredentials | DomainError::WrongPassword => {
                    body(StatusCode::UNAUTHORIZED, e.to_string())
                }
                DomainError::NotFound(_) => body(StatusCode::NOT_FOUND, e.to_string()),
                DomainError::Conflict(_) => body(StatusCode::CONFLICT, e.to_string()),
                DomainError::Invalid(_) => body(StatusCode::BAD_REQUEST, e.to_string()),
                DomainError::Forbidden(_) => body(StatusCode::FORBIDDEN, e.to_string()),
                DomainError::Store(StoreError::Conflict) => body(
                    StatusCode::CONFLICT,
                    "a concurrent change got there first; try again",
                ),
                DomainError::Store(StoreError::Damaged(detail)) => {
                    // Served as unavailable, never as an answer built from
                    // what was left: the operator must restore.
                    tracing::error!(detail, "the store is damaged");
                    let mut resp = body(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the store is damaged; the operator must restore it",
                    );
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
                    resp
                }
                DomainError::Store(StoreError::Unavailable(detail)) => unavailable(&detail),
                DomainError::Store(other) => internal(&other.to_string()),
                DomainError::Internal(detail) => internal(&detail),
            },
            ApiError::BadRequest(message) => body(StatusCode::BAD_REQUEST, message),
            ApiError::RateLimited { retry_after } => {
                let mut resp = body(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many attempts; retry after {retry_after} seconds"),
                );
                if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, value);
                }
                resp
            }
        }
    }
}
