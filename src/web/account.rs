//! The console's account page: my profile, my password, and my sessions
//! with "sign out everywhere else". Every change goes through the same
//! functions as `/auth/users/{me}/...` (authorization and audit included).

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde::Deserialize;

use super::{error_page, explain, page, see_other, when, Chrome, DoneQuery, Person};
use crate::domain::users::Profile;
use crate::domain::DomainError;
use crate::error::ApiError;
use crate::http::auth;
use crate::http::csrf::CsrfToken;
use crate::http::extract::ClientAddr;
use crate::state::{AppState, Caller};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/account", get(show))
        .route("/console/account/profile", post(save_profile))
        .route("/console/account/password", post(change_password))
        .route("/console/account/sessions/others", post(sign_out_others))
}

const NOTICES: &[(&str, &str)] = &[
    ("profile", "Your profile was saved."),
    (
        "password",
        "Your password was changed. Your other sessions were signed out.",
    ),
    ("others", "You were signed out everywhere else."),
];

pub struct SessionRow {
    pub created: String,
    pub expires: String,
    pub long_lived: bool,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    username: String,
    full_name: String,
    email: String,
    can_edit_profile: bool,
    can_change_password: bool,
    can_end_sessions: bool,
    sessions: Vec<SessionRow>,
    /// Sessions besides the current one.
    others: usize,
}

/// The page, with a notice or an error, answered with `status`.
async fn render(
    state: &AppState,
    csrf: &CsrfToken,
    caller: &Caller,
    notice: Option<&str>,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let username = caller.user.username.as_str();
    let may = |op| auth::allowed_on_account(state, caller, op, username);
    let can_end_sessions = may("auth:sessions");
    let sessions = if can_end_sessions {
        match auth::sessions_of(state, caller, username) {
            Ok(sessions) => sessions,
            Err(e) => return error_page(csrf, Some(caller), e, "/console").await,
        }
    } else {
        Vec::new()
    };
    let current = caller.session_id();
    let sessions: Vec<SessionRow> = sessions
        .into_iter()
        .map(|s| SessionRow {
            created: when(s.created_at),
            expires: when(s.expires_at),
            long_lived: s.long_lived,
            current: Some(s.id.as_str()) == current,
        })
        .collect();
    let others = sessions.iter().filter(|s| !s.current).count();
    // The account as stored now: a change made on this very request shows.
    let user = state
        .accounts
        .get(&caller.user.id)
        .ok()
        .flatten()
        .unwrap_or_else(|| caller.user.clone());
    page(
        status,
        &AccountPage {
            chrome: Chrome::new(csrf, Some(caller), "account")
                .notice(notice)
                .error(error),
            username: user.username.clone(),
            full_name: user.full_name.clone(),
            email: user.email.clone(),
            can_edit_profile: may("auth:profile"),
            can_change_password: may("auth:password"),
            can_end_sessions,
            sessions,
            others,
        },
    )
}

async fn show(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    done: DoneQuery,
) -> Response {
    render(
        &state,
        &csrf,
        &caller,
        done.notice(NOTICES),
        None,
        StatusCode::OK,
    )
    .await
}

/// The account page again with `error` in words, answered with its status.
async fn failed(state: &AppState, csrf: &CsrfToken, caller: &Caller, error: ApiError) -> Response {
    let (status, text) = explain(error).await;
    render(state, csrf, caller, None, Some(sentence(&text)), status).await
}

#[derive(Deserialize)]
struct ProfileForm {
    #[serde(default)]
    full_name: String,
    #[serde(default)]
    email: String,
}

async fn save_profile(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Form(form): Form<ProfileForm>,
) -> Response {
    let profile = Profile {
        full_name: Some(form.full_name),
        email: Some(form.email),
    };
    let username = caller.user.username.clone();
    match auth::edit_profile(&state, &caller, &username, profile).await {
        Ok(_) => see_other("/console/account?ok=profile"),
        Err(e) => failed(&state, &csrf, &caller, e).await,
    }
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    repeat: String,
}

async fn change_password(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    addr: ClientAddr,
    Person(caller): Person,
    Form(form): Form<PasswordForm>,
) -> Response {
    if form.new != form.repeat {
        return render(
            &state,
            &csrf,
            &caller,
            None,
            Some("The new password and its repetition differ; nothing was changed.".into()),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let username = caller.user.username.clone();
    match auth::change_own_password(&state, &caller, &addr, &username, form.current, form.new).await
    {
        Ok(_) => see_other("/console/account?ok=password"),
        Err(ApiError::Domain(DomainError::WrongPassword)) => {
            render(
                &state,
                &csrf,
                &caller,
                None,
                Some("Your current password is not right; your password was not changed.".into()),
                StatusCode::UNAUTHORIZED,
            )
            .await
        }
        Err(e) => failed(&state, &csrf, &caller, e).await,
    }
}

async fn sign_out_others(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
) -> Response {
    let username = caller.user.username.clone();
    match auth::end_other_sessions(&state, &caller, &username).await {
        Ok(_) => see_other("/console/account?ok=others"),
        Err(e) => failed(&state, &csrf, &caller, e).await,
    }
}

/// An API error's words as a sentence for a page.
pub(crate) fn sentence(text: &str) -> String {
    let mut chars = text.trim().chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return "That did not work; try again.".into(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_read_as_utc_dates() {
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(when(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(when(1_767_225_599), "2025-12-31 23:59 UTC");
        assert_eq!(when(-60), "1969-12-31 23:59 UTC");
    }

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(
            sentence("user bob already exists"),
            "User bob already exists."
        );
        assert_eq!(sentence("done."), "Done.");
        assert_eq!(sentence(""), "That did not work; try again.");
    }
}
