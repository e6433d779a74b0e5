//! The pages people use in a browser: sign-in, onboarding and first run, and
//! the console. Server-rendered from askama templates (checked at compile
//! time), one module per page family, each calling the same domain and
//! authorization functions as the JSON API, so a page offers exactly what
//! the policy allows and a forged form post meets the same checks.
//!
//! Pages work without JavaScript: forms post, handlers answer with a
//! redirect (success, with a fixed notice) or the page again with the error
//! in words (failure). `static/app.js` only adds copy buttons and prompts.

pub mod account;
pub mod admin;
pub mod agent;
pub mod agents;
pub mod factors;
pub mod groups;
pub mod inspect;
pub mod memory;
pub mod secrets;
pub mod signin;

use askama::Template;
use axum::extract::{FromRequestParts, Query};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::domain::sessions::Stage;
use crate::error::ApiError;
use crate::http::csrf::CsrfToken;
use crate::http::extract::MaybeCaller;
use crate::state::AppState;
use crate::state::Caller;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/static/style.css", get(style))
        .route("/static/app.js", get(script))
        .merge(signin::routes())
        .merge(agents::routes())
        .merge(groups::routes())
        .merge(account::routes())
        .merge(factors::routes())
        .merge(admin::routes())
        .merge(memory::routes())
        .merge(secrets::routes())
        .merge(agent::routes())
        .merge(inspect::routes())
}

/// What every page's frame shows: who is signed in, the form token, and a
/// notice or an error.
pub struct Chrome {
    pub nav: Option<Nav>,
    pub csrf: String,
    /// Which part of the console the page belongs to (highlighted).
    pub section: &'static str,
    pub notice: Option<String>,
    pub error: Option<String>,
}

pub struct Nav {
    pub username: String,
    pub is_admin: bool,
}

impl Chrome {
    pub fn new(csrf: &CsrfToken, caller: Option<&Caller>, section: &'static str) -> Self {
        Self {
            nav: caller.map(|c| Nav {
                username: c.user.username.clone(),
                is_admin: c.user.is_admin,
            }),
            csrf: csrf.0.clone(),
            section,
            notice: None,
            error: None,
        }
    }

    pub fn notice(mut self, notice: Option<&str>) -> Self {
        self.notice = notice.map(str::to_owned);
        self
    }

    pub fn error(mut self, error: Option<String>) -> Self {
        self.error = error;
        self
    }
}

/// A rendered page with its status. Rendering cannot fail on good templates;
/// if it does, the person sees a plain message and the log the cause.
pub fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><p>Something went wrong; try again.</p>"),
            )
                .into_response()
        }
    }
}

/// A 303 to `to` (a same-site path built by the server).
pub fn see_other(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(LOCATION, value);
    }
    resp
}

/// The status and the words of an API error, as the JSON API would answer
/// it (internal detail stays in the log there too).
pub async fn explain(error: ApiError) -> (StatusCode, String) {
    let response = error.into_response();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "something went wrong; try again".into());
    (status, message)
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    chrome: Chrome,
    heading: String,
    text: String,
    back: String,
}

/// A page that says what went wrong, with a way back.
pub async fn error_page(
    csrf: &CsrfToken,
    caller: Option<&Caller>,
    error: ApiError,
    back: &str,
) -> Response {
    let (status, text) = explain(error).await;
    let heading = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::UNAUTHORIZED => "Please sign in again",
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        s if s.is_server_error() => "Something went wrong",
        _ => "That did not work",
    };
    page(
        status,
        &MessagePage {
            chrome: Chrome::new(csrf, caller, ""),
            heading: heading.into(),
            text,
            back: back.into(),
        },
    )
}

/// Where a person who must enrol a second factor may go.
const FACTOR_PAGES: &str = "/console/account/factors";

/// A signed-in person on a console page. Anyone else is sent to sign in
/// (and back here afterwards); an invited person who has not finished
/// signing up, to the onboarding page.
pub struct Person(pub Caller);

impl FromRequestParts<AppState> for Person {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let MaybeCaller(caller) = MaybeCaller::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        match caller {
            Some(caller) if caller.user.pending() => Err(see_other("/auth/onboarding")),
            // Halfway through signing in (second factors): the step left.
            Some(caller) => match caller.session.as_ref().map(|s| s.stage) {
                Some(Stage::SecondFactor) => Err(see_other("/auth/second-factor")),
                Some(Stage::Enrol) if !parts.uri.path().starts_with(FACTOR_PAGES) => {
                    Err(see_other(FACTOR_PAGES))
                }
                _ => Ok(Person(caller)),
            },
            None => {
                let back = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let query = serde_urlencoded::to_string([("next", back)]).unwrap_or_default();
                Err(see_other(&format!("/auth/login?{query}")))
            }
        }
    }
}

/// The optional `?ok=` of a page a form redirected to after success.
#[derive(Deserialize, Default)]
pub struct Done {
    pub ok: Option<String>,
}

impl Done {
    /// The fixed notice for `key` from `table`; anything else shows nothing
    /// (the text never comes from the URL).
    pub fn notice(&self, table: &[(&str, &'static str)]) -> Option<&'static str> {
        let key = self.ok.as_deref()?;
        table.iter().find(|(k, _)| *k == key).map(|(_, text)| *text)
    }
}

pub type DoneQuery = Query<Done>;

async fn root(MaybeCaller(caller): MaybeCaller, state: axum::extract::State<AppState>) -> Response {
    match caller {
        Some(c) if c.user.pending() => see_other("/auth/onboarding"),
        Some(c)
            if c.session
                .as_ref()
                .is_some_and(|s| s.stage == Stage::SecondFactor) =>
        {
            see_other("/auth/second-factor")
        }
        Some(_) => see_other(&state.config.home),
        None => see_other("/auth/login"),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../static/style.css"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../static/app.js"),
    )
}

/// Whether the client asked for a page rather than JSON.
pub fn wants_html(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// A moment as people read it, in UTC (no time zone database here):
/// `2026-05-01 14:03 UTC`.
pub fn when(unix_seconds: i64) -> String {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3_600,
        secs % 3_600 / 60
    )
}
