//! Second factors over HTTP (issue 14): the second sign-in step and
//! step-up, TOTP enrolment, a person's factor list and removal, and the
//! admin setting of who must have one. The work is in
//! `domain::factors`; the decisions are the policy's (datalog/auth.dl).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{attempt, authorize, record, redirect, signed_in, subjects};
use super::extract::ClientAddr;
use crate::authz::policy::RequestFacts;
use crate::domain::audit::AuditEvent;
use crate::domain::factors::{Requirement, Used};
use crate::domain::sessions::{Session, Stage};
use crate::domain::users::LoggedIn;
use crate::domain::{now, DomainError};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Caller};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/second-factor", post(second_factor))
        .route("/auth/factors", get(list))
        .route("/auth/factors/totp", post(begin_totp))
        .route("/auth/factors/totp/confirm", post(confirm_totp))
        .route("/auth/factors/{id}", delete(remove))
        .route(
            "/auth/settings/second-factor",
            get(requirement).post(set_requirement),
        )
}

#[derive(Deserialize)]
struct CodeBody {
    code: Option<String>,
    /// A passkey answer instead of a code: the ceremony started at
    /// `POST /auth/second-factor/passkey/start`, and the credential.
    #[serde(default)]
    ceremony: Option<String>,
    #[serde(default)]
    credential: Option<Value>,
}

/// The caller's login session record: second factors belong to sessions,
/// never to delegated or bot tokens.
fn session_of(caller: &Caller) -> ApiResult<&Session> {
    caller
        .session
        .as_deref()
        .ok_or_else(|| DomainError::Forbidden("only a login session can do this".into()).into())
}

/// The second step of signing in, or a step-up at a complete session:
/// `{code}` (a TOTP code or a recovery code; a passkey answer goes to
/// `passkeys::verify_passkey`). Wrong codes count toward the
/// login limits, by address and by account, like wrong passwords.
pub(crate) async fn verify_code(
    state: &AppState,
    caller: &Caller,
    addr: &ClientAddr,
    code: &str,
) -> ApiResult<(Session, Used)> {
    authorize(state, caller, RequestFacts::new("auth:second_factor"))?;
    let session = session_of(caller)?;
    let who = subjects(addr, Some(caller.user.username.clone()));
    attempt(state, &who)?;
    let settings = state.accounts.settings();
    let full_ttl = if session.long_lived {
        settings.long_session_ttl
    } else {
        settings.session_ttl
    };
    let verified = match state
        .factors
        .verify(&state.data_keys, session, code, now(), full_ttl)
        .await
    {
        Ok(verified) => verified,
        Err(DomainError::InvalidCredentials) => {
            state.metrics.login_failed();
            record(
                state,
                AuditEvent::new(
                    Some(&caller.user.id),
                    "auth.second_factor_failed",
                    &caller.user.username,
                ),
            )
            .await;
            return Err(DomainError::InvalidCredentials.into());
        }
        Err(e) => return Err(e.into()),
    };
    state.limiter.succeeded(&who);
    let action = match verified.used {
        Used::Totp => "auth.second_factor",
        Used::RecoveryCode => "auth.recovery_code_used",
    };
    let step_up = session.stage == Stage::Complete;
    record(
        state,
        AuditEvent::new(Some(&caller.user.id), action, &caller.user.username).detail(json!({
            "step_up": step_up,
            "recovery_codes_left": verified.recovery_left,
        })),
    )
    .await;
    Ok((verified.session, verified.used))
}

async fn second_factor(
    State(state): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    // The second-step page posts a form (answered with redirects, like the
    // sign-in form); API clients send JSON.
    let from_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = if from_form {
        serde_urlencoded::from_bytes::<CodeBody>(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid form body: {e}")))?
    } else {
        serde_json::from_slice::<CodeBody>(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let was = session_of(&caller)?.stage;
    let verified = match body.credential {
        Some(credential) if !from_form => {
            super::passkeys::verify_passkey(
                &state,
                &caller,
                &addr,
                body.ceremony.as_deref(),
                Some(credential),
            )
            .await
        }
        _ => {
            let code = body.code.unwrap_or_default();
            verify_code(&state, &caller, &addr, &code)
                .await
                .map(|(session, _)| session)
        }
    };
    let session = match verified {
        Ok(session) => session,
        Err(e) if from_form => {
            let why = match e {
                ApiError::RateLimited { .. } => "limited",
                _ => "1",
            };
            return Ok(redirect(&format!("/auth/second-factor?error={why}")));
        }
        Err(e) => return Err(e),
    };
    if was == Stage::SecondFactor {
        // Now signed in: the full session, answered as login answers it.
        let logged_in = LoggedIn {
            user: caller.user.as_ref().clone(),
            session,
            needs_onboarding: false,
        };
        let to = from_form.then(|| state.config.home.clone());
        return signed_in(&state, &logged_in, to).await;
    }
    if from_form {
        return Ok(redirect("/console/account/factors?ok=verified"));
    }
    Ok(Json(json!({ "ok": true, "factor_verified_at": session.factor_at })).into_response())
}

/// One's own factors, as the list shows them (never a secret).
pub(crate) fn own_factors(state: &AppState, caller: &Caller) -> ApiResult<Value> {
    authorize(state, caller, RequestFacts::new("auth:factors:list"))?;
    let set = state.factors.of(&caller.user.id)?;
    let mut factors = Vec::new();
    if let Some(totp) = &set.totp {
        factors.push(json!({
            "id": totp.id,
            "kind": "totp",
            "created_at": totp.created_at,
            "last_used_at": totp.last_used_at,
        }));
    }
    for passkey in &set.passkeys {
        factors.push(json!({
            "id": passkey.id,
            "kind": "passkey",
            "name": passkey.name,
            "created_at": passkey.created_at,
            "last_used_at": passkey.last_used_at,
        }));
    }
    if !set.recovery.is_empty() {
        factors.push(json!({
            "id": "recovery",
            "kind": "recovery_codes",
            "remaining": set.recovery_left(),
            "last_used_at": set.recovery.iter().filter_map(|c| c.used_at).max(),
        }));
    }
    Ok(json!({
        "factors": factors,
        "required": state.factors.requirement()?.as_str(),
    }))
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    Ok(Json(own_factors(&state, &caller)?))
}

/// Start TOTP enrolment: a secret for the person's app, not yet in force.
pub(crate) async fn start_totp(
    state: &AppState,
    caller: &Caller,
) -> ApiResult<crate::domain::factors::Enrolment> {
    authorize(state, caller, RequestFacts::new("auth:factors:enrol"))?;
    session_of(caller)?;
    Ok(state
        .factors
        .begin_totp(&state.data_keys, &caller.user.id, &caller.user.username)
        .await?)
}

async fn begin_totp(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let enrolment = start_totp(&state, &caller).await?;
    Ok(Json(json!({
        "secret": enrolment.secret,
        "otpauth_url": enrolment.otpauth_url,
    })))
}

/// Confirm TOTP enrolment with a first code; answers the recovery codes,
/// shown this once. Wrong codes count toward the login limits.
pub(crate) async fn finish_totp(
    state: &AppState,
    caller: &Caller,
    addr: &ClientAddr,
    code: &str,
) -> ApiResult<Vec<String>> {
    authorize(state, caller, RequestFacts::new("auth:factors:enrol"))?;
    let session = session_of(caller)?;
    let who = subjects(addr, Some(caller.user.username.clone()));
    attempt(state, &who)?;
    let event = AuditEvent::new(
        Some(&caller.user.id),
        "auth.factor_enrolled",
        &caller.user.username,
    )
    .detail(json!({ "kind": "totp" }));
    let codes = state
        .factors
        .confirm_totp(&state.data_keys, session, code, now(), event)
        .await?;
    state.limiter.succeeded(&who);
    tracing::info!(user = %caller.user.id, "TOTP enrolled");
    Ok(codes)
}

async fn confirm_totp(
    State(state): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    Json(body): Json<CodeBody>,
) -> ApiResult<Json<Value>> {
    let codes = finish_totp(&state, &caller, &addr, body.code.as_deref().unwrap_or("")).await?;
    Ok(Json(json!({ "ok": true, "recovery_codes": codes })))
}

/// Remove one of one's own factors (a step-up operation). Audited.
pub(crate) async fn remove_factor(state: &AppState, caller: &Caller, id: &str) -> ApiResult<()> {
    authorize(state, caller, RequestFacts::new("auth:factors:remove"))?;
    let event = AuditEvent::new(
        Some(&caller.user.id),
        "auth.factor_removed",
        &caller.user.username,
    )
    .detail(json!({ "factor": id }));
    state.factors.remove(&caller.user.id, id, event).await?;
    tracing::info!(user = %caller.user.id, factor = id, "second factor removed");
    Ok(())
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    remove_factor(&state, &caller, &id).await?;
    Ok(Json(json!({ "ok": true })))
}

async fn requirement(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    // Admins read it, as they read the user list it applies to.
    authorize(&state, &caller, RequestFacts::new("auth:users:list"))?;
    Ok(Json(
        json!({ "required": state.factors.requirement()?.as_str() }),
    ))
}

#[derive(Deserialize)]
struct RequirementBody {
    required: Option<String>,
}

/// Admin: who must have a second factor (`nobody`, `admins`, `everyone`).
/// Takes effect at each person's next sign-in. Audited.
pub(crate) async fn change_requirement(
    state: &AppState,
    caller: &Caller,
    required: &str,
) -> ApiResult<Requirement> {
    authorize(
        state,
        caller,
        RequestFacts::new("auth:settings:second_factor"),
    )?;
    let requirement = Requirement::parse(required)?;
    let event = AuditEvent::new(
        Some(&caller.user.id),
        "admin.second_factor_required",
        requirement.as_str(),
    );
    state.factors.set_requirement(requirement, event).await?;
    Ok(requirement)
}

async fn set_requirement(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<RequirementBody>,
) -> ApiResult<Response> {
    let required = body
        .required
        .ok_or_else(|| ApiError::BadRequest("required is missing".into()))?;
    let requirement = change_requirement(&state, &caller, &required).await?;
    Ok(Json(json!({ "ok": true, "required": requirement.as_str() })).into_response())
}
