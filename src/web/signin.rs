//! The pages before the console: sign in, first run, and onboarding for an
//! invited person. Their forms post to the JSON API's own credential routes
//! (`/auth/login`, `/auth/setup`, `/auth/complete`), which answer form posts
//! with redirects.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;

use super::{page, see_other, Chrome};
use crate::http::csrf::CsrfToken;
use crate::http::extract::MaybeCaller;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/login", get(sign_in))
        .route("/auth/setup", get(first_run))
        .route("/auth/onboarding", get(onboarding))
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignIn {
    chrome: Chrome,
    next: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct SignInQuery {
    error: Option<String>,
    next: Option<String>,
}

/// Why a form post to a credential route came back, by fixed code.
fn sign_in_error(code: &str) -> String {
    match code {
        "1" => "Wrong username or password.",
        "limited" => "Too many attempts. Wait a few minutes and try again.",
        "expired" => "Your session ended. Sign in again.",
        _ => "Signing in did not work. Try again.",
    }
    .into()
}

async fn sign_in(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    MaybeCaller(caller): MaybeCaller,
    Query(query): Query<SignInQuery>,
) -> Result<Response, Response> {
    if !state.accounts.status().map_err(error)?.configured {
        return Ok(see_other("/auth/setup"));
    }
    let next = crate::http::auth::safe_next(query.next.as_deref());
    if let Some(caller) = caller {
        if query.error.is_none() {
            let halfway = caller
                .session
                .as_ref()
                .is_some_and(|s| s.stage == crate::domain::sessions::Stage::SecondFactor);
            return Ok(see_other(if caller.user.pending() {
                "/auth/onboarding"
            } else if halfway {
                "/auth/second-factor"
            } else {
                next.as_deref().unwrap_or(&state.config.home)
            }));
        }
    }
    let chrome = Chrome::new(&csrf, None, "").error(query.error.as_deref().map(sign_in_error));
    let status = if query.error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    Ok(page(status, &SignIn { chrome, next }))
}

fn error(e: crate::domain::DomainError) -> Response {
    axum::response::IntoResponse::into_response(crate::error::ApiError::from(e))
}

#[derive(Template)]
#[template(path = "setup.html")]
struct FirstRun {
    chrome: Chrome,
}

#[derive(Deserialize, Default)]
pub struct MessageQuery {
    error: Option<String>,
}

/// Why the first-run or onboarding form came back, by fixed code (the
/// details of a refused password are in the form's own constraints).
fn form_error(code: &str) -> String {
    match code {
        "password" => "The password must be at least 8 characters.",
        "username" => "That username cannot be used: letters, digits, '.', '_' or '-'.",
        "email" => "That email address does not look right.",
        "name" => "That full name is too long or has control characters.",
        "limited" => "Too many attempts. Wait a few minutes and try again.",
        "invite" => {
            "The invitation has expired or was already used. Ask an administrator for a new code."
        }
        _ => "That did not work. Check the fields and try again.",
    }
    .into()
}

async fn first_run(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Query(query): Query<MessageQuery>,
) -> Result<Response, Response> {
    if state.accounts.status().map_err(error)?.configured {
        // After first run the page is gone for good.
        return Ok(see_other("/auth/login"));
    }
    let chrome = Chrome::new(&csrf, None, "").error(query.error.as_deref().map(form_error));
    Ok(page(StatusCode::OK, &FirstRun { chrome }))
}

#[derive(Template)]
#[template(path = "onboarding.html")]
struct Onboarding {
    chrome: Chrome,
    username: String,
    full_name: String,
    email: String,
}

async fn onboarding(
    Extension(csrf): Extension<CsrfToken>,
    MaybeCaller(caller): MaybeCaller,
    Query(query): Query<MessageQuery>,
) -> Response {
    match caller {
        Some(caller) if caller.user.pending() => {
            let chrome = Chrome::new(&csrf, None, "").error(query.error.as_deref().map(form_error));
            page(
                StatusCode::OK,
                &Onboarding {
                    chrome,
                    username: caller.user.username.clone(),
                    full_name: caller.user.full_name.clone(),
                    email: caller.user.email.clone(),
                },
            )
        }
        Some(_) => see_other("/"),
        None => see_other("/auth/login"),
    }
}
