//! Passkeys over HTTP (issue 14): registering one (`/auth/factors/passkey/*`,
//! a change of factors, so a step-up when the person has a factor),
//! signing in with one alone (`/auth/passkey/*`, answered as login
//! answers), and the challenge for the second step or a step-up
//! (`/auth/second-factor/passkey/start`; the answer goes to
//! `POST /auth/second-factor` like a code). The ceremonies are in
//! `domain::passkeys`; the decisions the policy's.
//!
//! Failed passkey sign-ins and second steps count toward the login limits
//! and are audited like wrong passwords and codes.

use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::auth::{attempt, authorize, record, signed_in, subjects};
use super::extract::ClientAddr;
use crate::authz::policy::RequestFacts;
use crate::domain::audit::AuditEvent;
use crate::domain::sessions::{Session, Stage};
use crate::domain::users::LoggedIn;
use crate::domain::{now, DomainError};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Caller};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/factors/passkey/start", post(start_registration))
        .route("/auth/factors/passkey/finish", post(finish_registration))
        .route("/auth/passkey/start", post(start_sign_in))
        .route("/auth/passkey/finish", post(finish_sign_in))
        .route("/auth/second-factor/passkey/start", post(start_verify))
}

/// What a browser sends back: the ceremony it answers and its
/// `PublicKeyCredential`, as JSON with base64url binary fields.
#[derive(Deserialize)]
struct Answer {
    ceremony: Option<String>,
    credential: Option<Value>,
    /// Registration: what the person calls this passkey.
    #[serde(default)]
    name: Option<String>,
    /// Sign-in: stay signed in (as the sign-in form's checkbox).
    #[serde(default)]
    auto_login: Option<bool>,
}

fn ceremony_of(ceremony: Option<&str>) -> ApiResult<&str> {
    ceremony
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::BadRequest("ceremony is missing".into()))
}

/// The browser's credential as the library reads it; a malformed one is a
/// bad request, never a panic.
fn credential_of<T: serde::de::DeserializeOwned>(credential: Option<Value>) -> ApiResult<T> {
    let credential =
        credential.ok_or_else(|| ApiError::BadRequest("credential is missing".into()))?;
    serde_json::from_value(credential)
        .map_err(|e| ApiError::BadRequest(format!("credential is not a WebAuthn answer: {e}")))
}

fn session_of(caller: &Caller) -> ApiResult<&Session> {
    caller
        .session
        .as_deref()
        .ok_or_else(|| DomainError::Forbidden("only a login session can do this".into()).into())
}

fn started(started: crate::domain::passkeys::Started) -> Json<Value> {
    Json(json!({
        "ceremony": started.ceremony,
        "publicKey": started.options["publicKey"],
    }))
}

/// Start registering a passkey: the options for
/// `navigator.credentials.create()`.
async fn start_registration(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    authorize(&state, &caller, RequestFacts::new("auth:factors:enrol"))?;
    let session = session_of(&caller)?;
    let begun = state.passkeys.begin_registration(
        session,
        &caller.user.username,
        &caller.user.full_name,
    )?;
    Ok(started(begun))
}

/// Finish registering: `{ceremony, name, credential}`; with ten recovery
/// codes, shown this once, when the person had none. Audited.
async fn finish_registration(
    State(state): State<AppState>,
    caller: Caller,
    Json(answer): Json<Answer>,
) -> ApiResult<Json<Value>> {
    authorize(&state, &caller, RequestFacts::new("auth:factors:enrol"))?;
    let session = session_of(&caller)?;
    let ceremony = ceremony_of(answer.ceremony.as_deref())?;
    let credential: RegisterPublicKeyCredential = credential_of(answer.credential)?;
    let name = answer.name.unwrap_or_default();
    let event = AuditEvent::new(
        Some(&caller.user.id),
        "auth.factor_enrolled",
        &caller.user.username,
    );
    // The name is known once cleaned; the domain records the event, so it
    // carries the name as given.
    let event = event.detail(json!({ "kind": "passkey", "name": name.trim() }));
    let (stored, codes) = state
        .passkeys
        .finish_registration(session, ceremony, &name, &credential, now(), event)
        .await?;
    tracing::info!(user = %caller.user.id, passkey = %stored.id, "passkey registered");
    let mut answer = json!({
        "ok": true,
        "id": stored.id,
        "name": stored.name,
        "created_at": stored.created_at,
    });
    // Only when this registration issued them (the person had none).
    if !codes.is_empty() {
        answer["recovery_codes"] = json!(codes);
    }
    Ok(Json(answer))
}

/// Start signing in with a passkey alone: the options for
/// `navigator.credentials.get()`.
async fn start_sign_in(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(started(state.passkeys.begin_sign_in()?))
}

/// A failed passkey sign-in: counted by `attempt` already; audited as a
/// failed login concerning the account the passkey named, if any.
async fn sign_in_failed(state: &AppState, user: Option<&crate::domain::users::User>) {
    state.metrics.login_failed();
    let target = user.map_or("passkey", |u| u.username.as_str());
    let mut event =
        AuditEvent::new(None, "auth.login_failed", target).detail(json!({ "method": "passkey" }));
    if let Some(user) = user {
        event = event.concerning(&user.id);
    }
    record(state, event).await;
}

/// Finish signing in with a passkey: `{ceremony, credential, auto_login?}`,
/// answered as `POST /auth/login` answers a complete sign-in (the session
/// cookie and the token).
async fn finish_sign_in(
    State(state): State<AppState>,
    addr: ClientAddr,
    Json(answer): Json<Answer>,
) -> ApiResult<Response> {
    let ceremony = ceremony_of(answer.ceremony.as_deref())?;
    let credential: PublicKeyCredential = credential_of(answer.credential)?;
    // Whose passkey it claims to be, unchecked: the account's limit counts
    // the attempt as a password guess at it would.
    let claimed = match state.passkeys.claimed_user(&credential)? {
        Some(id) => state.accounts.get(&id)?,
        None => None,
    };
    let who = subjects(&addr, claimed.as_ref().map(|u| u.username.clone()));
    attempt(&state, &who)?;
    let long_lived = answer.auto_login.unwrap_or(false);
    let settings = state.accounts.settings();
    let ttl = if long_lived {
        settings.long_session_ttl
    } else {
        settings.session_ttl
    };
    let signed = match state
        .passkeys
        .finish_sign_in(ceremony, &credential, ttl, long_lived, now())
        .await
    {
        Ok(signed) => signed,
        Err(e) => {
            if matches!(e, DomainError::InvalidCredentials | DomainError::Invalid(_)) {
                tracing::info!("passkey sign-in failed");
                sign_in_failed(&state, claimed.as_deref()).await;
            }
            return Err(e.into());
        }
    };
    state.limiter.succeeded(&who);
    let user = state
        .accounts
        .get(&signed.user_id)?
        .ok_or(DomainError::InvalidCredentials)?;
    tracing::info!(user = %user.id, "passkey sign-in succeeded");
    record(
        &state,
        AuditEvent::new(Some(&user.id), "auth.login", &user.username)
            .detail(json!({ "method": "passkey", "passkey": signed.passkey })),
    )
    .await;
    let logged_in = LoggedIn {
        user: user.as_ref().clone(),
        session: signed.session,
        needs_onboarding: false,
    };
    signed_in(&state, &logged_in, None).await
}

/// Start the second step or a step-up with a passkey: the options for
/// `navigator.credentials.get()`, naming the person's passkeys. The
/// answer goes to `POST /auth/second-factor`.
async fn start_verify(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    authorize(&state, &caller, RequestFacts::new("auth:second_factor"))?;
    let session = session_of(&caller)?;
    Ok(started(state.passkeys.begin_verify(session)?))
}

/// `POST /auth/second-factor` with a passkey answer (`{ceremony,
/// credential}`): the session to answer with, as `verify_code` for a code.
/// Failures count toward the login limits and are audited like a wrong
/// code.
pub(crate) async fn verify_passkey(
    state: &AppState,
    caller: &Caller,
    addr: &ClientAddr,
    ceremony: Option<&str>,
    credential: Option<Value>,
) -> ApiResult<Session> {
    authorize(state, caller, RequestFacts::new("auth:second_factor"))?;
    let session = session_of(caller)?;
    let ceremony = ceremony_of(ceremony)?;
    let credential: PublicKeyCredential = credential_of(credential)?;
    let who = subjects(addr, Some(caller.user.username.clone()));
    attempt(state, &who)?;
    let settings = state.accounts.settings();
    let full_ttl = if session.long_lived {
        settings.long_session_ttl
    } else {
        settings.session_ttl
    };
    let verified = match state
        .passkeys
        .finish_verify(session, ceremony, &credential, full_ttl, now())
        .await
    {
        Ok(verified) => verified,
        Err(e) => {
            if matches!(e, DomainError::InvalidCredentials | DomainError::Invalid(_)) {
                state.metrics.login_failed();
                record(
                    state,
                    AuditEvent::new(
                        Some(&caller.user.id),
                        "auth.second_factor_failed",
                        &caller.user.username,
                    )
                    .detail(json!({ "kind": "passkey" })),
                )
                .await;
            }
            return Err(e.into());
        }
    };
    state.limiter.succeeded(&who);
    record(
        state,
        AuditEvent::new(
            Some(&caller.user.id),
            "auth.second_factor",
            &caller.user.username,
        )
        .detail(json!({
            "kind": "passkey",
            "passkey": verified.passkey,
            "step_up": session.stage == Stage::Complete,
        })),
    )
    .await;
    Ok(verified.session)
}
