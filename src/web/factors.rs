//! The second-factor pages: the second sign-in step, and the console's
//! factor list with TOTP enrolment (QR code as inline SVG, the key as text,
//! a confirming code, then the recovery codes shown once), passkeys, step-up
//! and removal. Passkey ceremonies need the browser's WebAuthn API, so
//! their buttons are `static/app.js`'s (posting to `/auth/factors/passkey/*`
//! and `/auth/second-factor`); everything else is a plain form. Every change goes through the same functions as
//! `/auth/factors/...` (authorization, rate limits and audit included).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde::Deserialize;

use super::account::sentence;
use super::{explain, page, see_other, when, Chrome, DoneQuery, Person};
use crate::domain::sessions::Stage;
use crate::error::ApiError;
use crate::http::csrf::CsrfToken;
use crate::http::extract::{ClientAddr, MaybeCaller};
use crate::http::factors as api;
use crate::state::{AppState, Caller};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/second-factor", get(second_step))
        .route("/console/account/factors", get(show))
        .route("/console/account/factors/totp", post(begin_totp))
        .route("/console/account/factors/totp/confirm", post(confirm_totp))
        .route("/console/account/factors/verify", post(verify))
        .route("/console/account/factors/{id}/remove", post(remove))
}

const NOTICES: &[(&str, &str)] = &[
    (
        "verified",
        "Verified. Sensitive changes are open for 15 minutes.",
    ),
    ("removed", "The factor was removed."),
    ("passkey_added", "Passkey registered."),
    (
        "recovery_used",
        "A recovery code of yours was used to sign in since you last signed in. If that was not you, change your password and remove and add your factors again.",
    ),
];

#[derive(Template)]
#[template(path = "second_factor.html")]
struct SecondStep {
    chrome: Chrome,
    has_passkey: bool,
    /// Whether to speak of an authenticator app's codes: when the person
    /// has one, or when what they have could not be read.
    has_totp: bool,
}

#[derive(Deserialize, Default)]
struct StepQuery {
    error: Option<String>,
}

/// The second step of signing in, for a session halfway through it.
async fn second_step(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    MaybeCaller(caller): MaybeCaller,
    Query(query): Query<StepQuery>,
) -> Response {
    let halfway = caller.as_ref().filter(|c| {
        c.session
            .as_ref()
            .is_some_and(|s| s.stage == Stage::SecondFactor)
    });
    let Some(halfway) = halfway else {
        return see_other(match caller {
            Some(_) => &state.config.home,
            None => "/auth/login",
        });
    };
    // A passkey is offered when the person has one; a failed read offers
    // none and words the page for a code.
    let (has_passkey, has_totp) = match state.factors.of(&halfway.user.id) {
        Ok(set) => (!set.passkeys.is_empty(), set.totp.is_some()),
        Err(_) => (false, true),
    };
    let error = query.error.as_deref().map(|code| {
        match code {
            "limited" => "Too many attempts. Wait a few minutes and try again.",
            _ => "That code is not right, or was already used. Try the next one.",
        }
        .to_owned()
    });
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    page(
        status,
        &SecondStep {
            chrome: Chrome::new(&csrf, None, "").error(error),
            has_passkey,
            has_totp,
        },
    )
}

pub struct FactorRow {
    pub id: String,
    pub label: String,
    pub added: String,
    pub last_used: String,
}

#[derive(Template)]
#[template(path = "factors.html")]
struct FactorsPage {
    chrome: Chrome,
    factors: Vec<FactorRow>,
    has_totp: bool,
    has_passkey: bool,
    must_enrol: bool,
}

async fn render(
    state: &AppState,
    csrf: &CsrfToken,
    caller: &Caller,
    notice: Option<&str>,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let set = match state.factors.of(&caller.user.id) {
        Ok(set) => set,
        Err(e) => return super::error_page(csrf, Some(caller), e.into(), "/console").await,
    };
    let mut factors = Vec::new();
    if let Some(totp) = &set.totp {
        factors.push(FactorRow {
            id: totp.id.clone(),
            label: "Authenticator app".into(),
            added: when(totp.created_at),
            last_used: totp.last_used_at.map(when).unwrap_or_default(),
        });
    }
    for passkey in &set.passkeys {
        factors.push(FactorRow {
            id: passkey.id.clone(),
            label: format!("Passkey: {}", passkey.name),
            added: when(passkey.created_at),
            last_used: passkey.last_used_at.map(when).unwrap_or_default(),
        });
    }
    if !set.recovery.is_empty() {
        factors.push(FactorRow {
            id: "recovery".into(),
            label: format!("Recovery codes ({} left)", set.recovery_left()),
            added: String::new(),
            last_used: set
                .recovery
                .iter()
                .filter_map(|c| c.used_at)
                .max()
                .map(when)
                .unwrap_or_default(),
        });
    }
    let must_enrol = caller
        .session
        .as_ref()
        .is_some_and(|s| s.stage == Stage::Enrol);
    page(
        status,
        &FactorsPage {
            chrome: Chrome::new(csrf, Some(caller), "account")
                .notice(notice)
                .error(error),
            factors,
            has_totp: set.totp.is_some(),
            has_passkey: !set.passkeys.is_empty(),
            must_enrol,
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

async fn failed(state: &AppState, csrf: &CsrfToken, caller: &Caller, error: ApiError) -> Response {
    let (status, text) = explain(error).await;
    render(state, csrf, caller, None, Some(sentence(&text)), status).await
}

#[derive(Template)]
#[template(path = "factors_enrol.html")]
struct EnrolPage {
    chrome: Chrome,
    qr_svg: String,
    secret: String,
}

/// The `otpauth://` URL as an SVG QR code, drawn here (no image from
/// elsewhere, no script).
fn qr_svg(url: &str) -> Option<String> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::new(url.as_bytes()).ok()?;
    Some(
        code.render::<svg::Color>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
    )
}

async fn begin_totp(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
) -> Response {
    match api::start_totp(&state, &caller).await {
        Ok(enrolment) => page(
            StatusCode::OK,
            &EnrolPage {
                chrome: Chrome::new(&csrf, Some(&caller), "account"),
                qr_svg: qr_svg(&enrolment.otpauth_url).unwrap_or_default(),
                secret: enrolment.secret,
            },
        ),
        Err(e) => failed(&state, &csrf, &caller, e).await,
    }
}

#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    code: String,
}

#[derive(Template)]
#[template(path = "factors_codes.html")]
struct CodesPage {
    chrome: Chrome,
    codes: Vec<String>,
}

async fn confirm_totp(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    addr: ClientAddr,
    Person(caller): Person,
    Form(form): Form<CodeForm>,
) -> Response {
    match api::finish_totp(&state, &caller, &addr, &form.code).await {
        Ok(codes) => page(
            StatusCode::OK,
            &CodesPage {
                chrome: Chrome::new(&csrf, Some(&caller), "account"),
                codes,
            },
        ),
        Err(e) => failed(&state, &csrf, &caller, e).await,
    }
}

async fn verify(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    addr: ClientAddr,
    Person(caller): Person,
    Form(form): Form<CodeForm>,
) -> Response {
    match api::verify_code(&state, &caller, &addr, &form.code).await {
        Ok(_) => see_other("/console/account/factors?ok=verified"),
        Err(e) => failed(&state, &csrf, &caller, e).await,
    }
}

async fn remove(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(id): Path<String>,
) -> Response {
    match api::remove_factor(&state, &caller, &id).await {
        Ok(()) => see_other("/console/account/factors?ok=removed"),
        Err(e) => failed(&state, &csrf, &caller, e).await,
    }
}
