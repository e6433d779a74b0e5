//! `/auth/*`: the legacy login and user-management API, same paths and JSON
//! shapes as the TinyAgentOS server so its desktop, login and onboarding
//! screens keep working. Session responses additionally carry `token` for API
//! clients that send `Authorization: Bearer`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use biscuit_auth::builder::string;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::extract::{ClientAddr, MaybeCaller, SESSION_COOKIE};
use super::ratelimit::{Refused, Subject};
use crate::authz::policy::RequestFacts;
use crate::domain::audit::AuditEvent;
use crate::domain::sessions::{self, Session, Stage};
use crate::domain::users::{LoggedIn, Profile, User};
use crate::domain::DomainError;
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Caller};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/status", get(status))
        .route("/auth/setup", post(setup))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/lock", post(lock))
        .route("/auth/complete", post(complete))
        .route("/auth/me", get(me))
        .route("/auth/keys", get(keys))
        .route("/auth/users", get(list_users).post(create_user))
        .route("/auth/users/{username}", delete(delete_user))
        .route("/auth/users/{username}/reset", post(reset_user))
        .route("/auth/users/{username}/admin", post(set_admin))
        .route(
            "/auth/users/{username}/sessions",
            get(list_sessions).delete(revoke_sessions),
        )
        .route("/auth/users/{username}/profile", post(update_profile))
        .route("/auth/users/{username}/password", post(change_password))
        .route("/api/admin/backup", post(backup))
}

/// A user as every client sees them.
#[derive(Serialize)]
pub struct PublicUser<'a> {
    id: &'a str,
    username: &'a str,
    full_name: &'a str,
    email: &'a str,
    is_admin: bool,
    pending: bool,
    last_login_at: Option<i64>,
    created_at: Option<i64>,
}

impl<'a> From<&'a User> for PublicUser<'a> {
    fn from(u: &'a User) -> Self {
        Self {
            id: &u.id,
            username: &u.username,
            full_name: &u.full_name,
            email: &u.email,
            is_admin: u.is_admin,
            pending: u.pending(),
            last_login_at: u.last_login_at,
            created_at: u.created_at,
        }
    }
}

/// A user as an admin sees them in the list: pending users with when their
/// invite runs out. The code itself is shown once, when issued, and not
/// kept: `invite_code` stays in the legacy shape, as `null`.
#[derive(Serialize)]
struct ListedUser<'a> {
    #[serde(flatten)]
    user: PublicUser<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invite_code: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invite_expires_at: Option<i64>,
}

/// Login and setup accept JSON or an HTML form post.
struct Credentials {
    username: String,
    password: String,
    auto_login: Option<bool>,
    next: Option<String>,
    profile: Profile,
    from_form: bool,
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty() && s != "0" && !s.eq_ignore_ascii_case("false"),
        Value::Null => false,
        _ => true,
    }
}

fn parse_credentials(headers: &HeaderMap, body: &Bytes) -> ApiResult<Credentials> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (fields, from_form): (serde_json::Map<String, Value>, bool) =
        if content_type.starts_with("application/x-www-form-urlencoded") {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|e| ApiError::BadRequest(format!("invalid form body: {e}")))?;
            let map = pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            (map, true)
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => (map, false),
                Ok(_) => return Err(ApiError::BadRequest("expected a JSON object".into())),
                Err(e) => return Err(ApiError::BadRequest(format!("invalid JSON body: {e}"))),
            }
        };
    let text = |key: &str| -> ApiResult<Option<String>> {
        match fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::BadRequest(format!("{key} must be a string"))),
        }
    };
    Ok(Credentials {
        username: text("username")?.unwrap_or_default(),
        password: text("password")?.unwrap_or_default(),
        auto_login: fields.get("auto_login").map(truthy),
        next: text("next")?,
        profile: Profile {
            full_name: text("full_name")?,
            email: text("email")?,
        },
        from_form,
    })
}

/// Same-site path to return to after a form login, or nothing: anything that
/// could leave the site (`//host`, `/\host`, schemes, control characters) is
/// dropped.
pub(crate) fn safe_next(next: Option<&str>) -> Option<String> {
    let next = next?;
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control() || c.is_whitespace());
    ok.then(|| next.to_owned())
}

pub(crate) fn session_cookie(
    state: &AppState,
    token: &str,
    session: &Session,
) -> ApiResult<HeaderValue> {
    let mut cookie = format!("{SESSION_COOKIE}={token}; HttpOnly; Path=/; SameSite=Lax");
    if session.long_lived {
        let max_age = (session.expires_at - session.created_at).max(0);
        cookie.push_str(&format!("; Max-Age={max_age}"));
    }
    if state.config.cookie_secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie)
        .map_err(|_| ApiError::Domain(DomainError::Internal("unencodable session cookie".into())))
}

fn clear_cookie(state: &AppState) -> HeaderValue {
    let secure = if state.config.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/; SameSite=Lax{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("taos_session=; Max-Age=0; Path=/"))
}

pub(crate) fn redirect(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(LOCATION, value);
    }
    resp
}

/// Mint the token for a fresh session and answer with it: a JSON body with the
/// user and token, or a redirect for form posts; the cookie either way.
pub(crate) async fn signed_in(
    state: &AppState,
    logged_in: &LoggedIn,
    redirect_to: Option<String>,
) -> ApiResult<Response> {
    let token = state.authz.mint_session(
        &logged_in.user.id,
        &logged_in.session.id,
        logged_in.session.expires_at,
    )?;
    let cookie = session_cookie(state, &token, &logged_in.session)?;
    // Recovery codes used since the person last signed in: they hear of it
    // now, once (a use they did not make is a stolen code). Not at a
    // sign-in by recovery code, which may be the very one they should hear
    // of.
    let recovery_used = if logged_in.session.stage == Stage::Complete
        && logged_in.session.method != sessions::Method::RecoveryCode
    {
        state
            .factors
            .take_unseen_recovery_uses(&logged_in.user.id)
            .await?
    } else {
        Vec::new()
    };
    let mut resp = match redirect_to {
        // A browser is shown the use on its factor page instead of `to`.
        Some(_) if !recovery_used.is_empty() => {
            redirect("/console/account/factors?ok=recovery_used")
        }
        Some(to) => redirect(&to),
        None => {
            let mut body = match logged_in.session.stage {
                // Halfway: no user, so no client takes this for a session.
                Stage::SecondFactor => json!({
                    "ok": true,
                    "needs_second_factor": true,
                    "factors": state.factors.of(&logged_in.user.id)?.kinds(),
                    "token": token,
                }),
                Stage::Enrol => json!({
                    "ok": true,
                    "needs_enrolment": true,
                    "user": PublicUser::from(&logged_in.user),
                    "token": token,
                }),
                Stage::Complete => json!({
                    "ok": true,
                    "user": PublicUser::from(&logged_in.user),
                    "token": token,
                }),
            };
            if logged_in.needs_onboarding {
                body["needs_onboarding"] = json!(true);
            }
            if !recovery_used.is_empty() {
                body["recovery_codes_used"] = json!(recovery_used);
            }
            Json(body).into_response()
        }
    };
    resp.headers_mut().insert(SET_COOKIE, cookie);
    Ok(resp)
}

/// Append an audit event for an act that has already happened; a failure to
/// record is logged, not turned into a failure of the act.
pub(crate) async fn record(state: &AppState, event: AuditEvent) {
    if let Err(e) = event.append(&state.store).await {
        tracing::error!(error = %e, action = %event.action, "audit record lost");
    }
}

/// A failed login concerns the account it named, if that exists; the attempt
/// itself has no actor.
async fn record_failed_login(state: &AppState, username: &str) {
    state.metrics.login_failed();
    let named: String = username.trim().chars().take(64).collect();
    let mut event = AuditEvent::new(None, "auth.login_failed", &named);
    if let Ok(Some(user)) = state.accounts.find(username) {
        event = event.concerning(&user.id);
    }
    record(state, event).await;
}

pub(crate) fn attempt(state: &AppState, subjects: &[Subject]) -> ApiResult<()> {
    state
        .limiter
        .attempt(subjects)
        .map_err(|refused| match refused {
            Refused::Limited(retry_after) => ApiError::RateLimited { retry_after },
            Refused::Store(e) => ApiError::from(e),
        })
}

pub(crate) fn subjects(addr: &ClientAddr, account: Option<String>) -> Vec<Subject> {
    addr.0
        .map(Subject::Address)
        .into_iter()
        .chain(account.map(Subject::Account))
        .collect()
}

pub(crate) fn authorize(state: &AppState, caller: &Caller, request: RequestFacts) -> ApiResult<()> {
    Ok(state.authorize(caller, request)?)
}

/// The request facts for an operation on the account named in the path. An
/// unknown name adds no target, so the policy refuses it like any other
/// account the caller may not touch.
fn on_account(state: &AppState, operation: &str, username: &str) -> ApiResult<RequestFacts> {
    let mut facts = RequestFacts::new(operation);
    if let Some(user) = state.accounts.find(username)? {
        facts = facts.fact("target_user", [string(&user.id)]);
    }
    Ok(facts)
}

/// Whether `caller` may do `operation` on the account `username`: a page
/// offers a control only when the route behind it would allow it (after a
/// step-up, if it asks for one).
pub(crate) fn allowed_on_account(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    username: &str,
) -> bool {
    // Offered behind a step-up too: using it then asks for a code.
    on_account(state, operation, username).is_ok_and(|facts| state.offers(caller, facts))
}

async fn status(
    State(state): State<AppState>,
    MaybeCaller(caller): MaybeCaller,
) -> ApiResult<Json<Value>> {
    let status = state.accounts.status()?;
    let user = caller.as_ref().map(|c| c.user.as_ref());
    Ok(Json(json!({
        "configured": status.configured,
        "authenticated": caller.is_some(),
        "user": user.map(PublicUser::from),
        "multi_user": status.multi_user,
        "needs_onboarding": user.is_some_and(User::pending),
    })))
}

async fn setup(
    State(state): State<AppState>,
    addr: ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let creds = parse_credentials(&headers, &body)?;
    let from_form = creds.from_form;
    let outcome = async {
        let who = subjects(&addr, None);
        attempt(&state, &who)?;
        let long_lived = creds.auto_login.unwrap_or(!creds.from_form);
        let logged_in = state
            .accounts
            .setup(&creds.username, creds.password, creds.profile, long_lived)
            .await?;
        Ok::<_, ApiError>((who, logged_in))
    }
    .await;
    let (who, logged_in) = match outcome {
        Ok(done) => done,
        Err(e) if from_form => return Ok(form_failure("/auth/setup", &e)),
        Err(e) => return Err(e),
    };
    state.limiter.succeeded(&who);
    tracing::info!(user = %logged_in.user.id, "first user created");
    record(
        &state,
        AuditEvent::new(
            Some(&logged_in.user.id),
            "auth.setup",
            &logged_in.user.username,
        ),
    )
    .await;
    signed_in(
        &state,
        &logged_in,
        from_form.then(|| state.config.home.clone()),
    )
    .await
}

/// Where a browser's failed form post goes back to, with why as a fixed
/// code the page turns into words (never text from the URL).
fn form_failure(page: &str, error: &ApiError) -> Response {
    let code = match error {
        ApiError::RateLimited { .. } => "limited",
        ApiError::Domain(DomainError::InvalidCredentials) => "1",
        ApiError::Domain(DomainError::Invalid(text)) | ApiError::BadRequest(text) => {
            if text.contains("invite") {
                "invite"
            } else if text.contains("password") {
                "password"
            } else if text.contains("email") {
                "email"
            } else if text.contains("username") {
                "username"
            } else if text.contains("name") {
                "name"
            } else {
                "other"
            }
        }
        _ => "other",
    };
    redirect(&format!("{page}?error={code}"))
}

async fn login(
    State(state): State<AppState>,
    addr: ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let creds = parse_credentials(&headers, &body)?;
    let next = safe_next(creds.next.as_deref());
    if creds.username.trim().is_empty() {
        let error = ApiError::BadRequest("username is required".into());
        return if creds.from_form {
            Ok(form_failure("/auth/login", &error))
        } else {
            Err(error)
        };
    }
    let who = subjects(&addr, Some(creds.username.trim().to_ascii_lowercase()));
    if let Err(error) = attempt(&state, &who) {
        return if creds.from_form {
            Ok(form_failure("/auth/login", &error))
        } else {
            Err(error)
        };
    }
    let long_lived = match creds.auto_login {
        Some(choice) => choice,
        None if creds.from_form => false,
        None => !state.accounts.status()?.multi_user,
    };
    match state
        .accounts
        .login(&creds.username, creds.password, long_lived, &state.factors)
        .await
    {
        Ok(logged_in) => {
            state.limiter.succeeded(&who);
            tracing::info!(user = %logged_in.user.id, "login succeeded");
            record(
                &state,
                AuditEvent::new(
                    Some(&logged_in.user.id),
                    "auth.login",
                    &logged_in.user.username,
                ),
            )
            .await;
            // An invite code typed as the password leads to onboarding, a
            // second factor to the second step, a missing one to enrolment.
            let to = creds.from_form.then(|| {
                if logged_in.needs_onboarding {
                    "/auth/onboarding".to_owned()
                } else if logged_in.session.stage == Stage::SecondFactor {
                    "/auth/second-factor".to_owned()
                } else if logged_in.session.stage == Stage::Enrol {
                    "/console/account/factors".to_owned()
                } else {
                    next.unwrap_or_else(|| state.config.home.clone())
                }
            });
            signed_in(&state, &logged_in, to).await
        }
        Err(DomainError::InvalidCredentials) if creds.from_form => {
            tracing::info!("login failed");
            record_failed_login(&state, &creds.username).await;
            let query = match next {
                Some(next) => format!(
                    "/auth/login?error=1&next={}",
                    serde_urlencoded::to_string([("", next)])
                        .map(|s| s.trim_start_matches('=').to_owned())
                        .unwrap_or_default()
                ),
                None => "/auth/login?error=1".to_owned(),
            };
            Ok(redirect(&query))
        }
        Err(e) => {
            if matches!(e, DomainError::InvalidCredentials) {
                tracing::info!("login failed");
                record_failed_login(&state, &creds.username).await;
            }
            Err(e.into())
        }
    }
}

/// End the caller's session, if any, and clear the cookie.
async fn end_session(state: &AppState, caller: Option<Caller>, operation: &str) -> ApiResult<()> {
    if let Some(caller) = caller {
        authorize(state, &caller, RequestFacts::new(operation))?;
        if let Some(session) = caller.session_id() {
            sessions::revoke(&state.store, session, &caller.user.id).await?;
        }
    }
    Ok(())
}

async fn logout(
    State(state): State<AppState>,
    MaybeCaller(caller): MaybeCaller,
) -> ApiResult<Response> {
    end_session(&state, caller, "auth:logout").await?;
    let mut resp = redirect("/auth/login");
    resp.headers_mut().insert(SET_COOKIE, clear_cookie(&state));
    Ok(resp)
}

async fn lock(
    State(state): State<AppState>,
    MaybeCaller(caller): MaybeCaller,
) -> ApiResult<Response> {
    end_session(&state, caller, "auth:lock").await?;
    let mut resp = Json(json!({ "ok": true })).into_response();
    resp.headers_mut().insert(SET_COOKIE, clear_cookie(&state));
    Ok(resp)
}

#[derive(Deserialize)]
struct CompleteBody {
    username: Option<String>,
    invite_code: Option<String>,
    password: Option<String>,
    full_name: Option<String>,
    email: Option<String>,
    auto_login: Option<Value>,
}

/// Invite completion: JSON with the invite code, or the onboarding page's
/// form, where the invite-phase session (opened with the code) stands in
/// for it.
async fn complete(
    State(state): State<AppState>,
    addr: ClientAddr,
    MaybeCaller(caller): MaybeCaller,
    request: axum::extract::Request,
) -> ApiResult<Response> {
    use axum::extract::FromRequest;
    if !is_form(request.headers()) {
        return match Json::<CompleteBody>::from_request(request, &state).await {
            Ok(Json(body)) => complete_with_code(state, addr, body).await,
            Err(rejection) => Ok(rejection.into_response()),
        };
    }
    let bytes = axum::body::to_bytes(request.into_body(), state.config.max_body_bytes)
        .await
        .map_err(|_| ApiError::BadRequest("request body too large".into()))?;
    let form: CompleteForm = serde_urlencoded::from_bytes(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid form body: {e}")))?;
    let outcome = complete_form(&state, &addr, caller, form).await;
    match outcome {
        Ok(logged_in) => signed_in(&state, &logged_in, Some(state.config.home.clone())).await,
        Err(e) => Ok(form_failure("/auth/onboarding", &e)),
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

#[derive(Deserialize)]
struct CompleteForm {
    password: Option<String>,
    full_name: Option<String>,
    email: Option<String>,
    auto_login: Option<String>,
}

async fn complete_form(
    state: &AppState,
    addr: &ClientAddr,
    caller: Option<Caller>,
    form: CompleteForm,
) -> ApiResult<LoggedIn> {
    let Some(caller) = caller.filter(|c| c.user.pending()) else {
        return Err(ApiError::Domain(DomainError::Invalid(
            "invalid or expired invite code".into(),
        )));
    };
    let who = subjects(addr, Some(format!("invite:{}", caller.user.username)));
    attempt(state, &who)?;
    let profile = Profile {
        full_name: form.full_name.filter(|s| !s.trim().is_empty()),
        email: form.email.filter(|s| !s.trim().is_empty()),
    };
    let long_lived = form.auto_login.is_some_and(|v| truthy(&Value::String(v)));
    let logged_in = state
        .accounts
        .complete_pending(
            &caller.user.id,
            form.password.unwrap_or_default(),
            profile,
            long_lived,
        )
        .await?;
    state.limiter.succeeded(&who);
    tracing::info!(user = %logged_in.user.id, "invite completed");
    record(
        state,
        AuditEvent::new(
            Some(&logged_in.user.id),
            "auth.complete",
            &logged_in.user.username,
        ),
    )
    .await;
    Ok(logged_in)
}

async fn complete_with_code(
    state: AppState,
    addr: ClientAddr,
    body: CompleteBody,
) -> ApiResult<Response> {
    let username = body.username.unwrap_or_default();
    let code = body.invite_code.unwrap_or_default();
    if username.trim().is_empty() || code.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "username and invite_code are required".into(),
        ));
    }
    let who = subjects(
        &addr,
        Some(format!("invite:{}", username.trim().to_ascii_lowercase())),
    );
    attempt(&state, &who)?;
    let long_lived = body.auto_login.as_ref().is_some_and(truthy);
    let profile = Profile {
        full_name: body.full_name,
        email: body.email,
    };
    let logged_in = state
        .accounts
        .complete_invite(
            &username,
            &code,
            body.password.unwrap_or_default(),
            profile,
            long_lived,
        )
        .await?;
    state.limiter.succeeded(&who);
    tracing::info!(user = %logged_in.user.id, "invite completed");
    record(
        &state,
        AuditEvent::new(
            Some(&logged_in.user.id),
            "auth.complete",
            &logged_in.user.username,
        ),
    )
    .await;
    signed_in(&state, &logged_in, None).await
}

async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    authorize(&state, &caller, RequestFacts::new("auth:me"))?;
    Ok(Json(
        json!({ "user": PublicUser::from(caller.user.as_ref()) }),
    ))
}

async fn keys(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "keys": state.authz.keys().published() }))
}

/// Admin: every account, for the user list.
pub(crate) fn users(state: &AppState, caller: &Caller) -> ApiResult<Vec<User>> {
    authorize(state, caller, RequestFacts::new("auth:users:list"))?;
    Ok(state.accounts.list()?)
}

async fn list_users(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let users = users(&state, &caller)?;
    let listed: Vec<ListedUser> = users
        .iter()
        .map(|u| ListedUser {
            user: PublicUser::from(u),
            invite_code: u.invite.as_ref().map(|_| None),
            invite_expires_at: u.invite.as_ref().map(|i| i.expires_at),
        })
        .collect();
    Ok(Json(json!({ "users": listed })))
}

#[derive(Deserialize)]
struct CreateUserBody {
    username: Option<String>,
}

/// Admin: invite `username`; returns the pending account and its code,
/// which is not kept (the caller shows it once).
pub(crate) async fn invite(
    state: &AppState,
    caller: &Caller,
    username: &str,
) -> ApiResult<(User, String)> {
    authorize(state, caller, RequestFacts::new("auth:users:create"))?;
    let (user, code) = state.accounts.invite(&caller.user, username).await?;
    tracing::info!(actor = %caller.user.id, user = %user.id, "user invited");
    record(
        state,
        AuditEvent::new(Some(&caller.user.id), "user.invite", &user.username).concerning(&user.id),
    )
    .await;
    Ok((user, code))
}

async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateUserBody>,
) -> ApiResult<Json<Value>> {
    let (user, code) = invite(&state, &caller, body.username.as_deref().unwrap_or("")).await?;
    Ok(Json(json!({
        "ok": true,
        "username": user.username,
        "invite_code": code,
    })))
}

/// Admin: remove `username`'s password and end their sessions; returns the
/// account and its new code (shown once, like an invite's).
pub(crate) async fn reset(
    state: &AppState,
    caller: &Caller,
    username: &str,
) -> ApiResult<(User, String)> {
    authorize(state, caller, RequestFacts::new("auth:users:reset"))?;
    let (user, code, had_factors) = state.accounts.reset(&caller.user, username).await?;
    tracing::info!(actor = %caller.user.id, user = %user.id, had_factors, "password reset");
    record(
        state,
        AuditEvent::new(Some(&caller.user.id), "user.reset", &user.username)
            .concerning(&user.id)
            .detail(json!({ "factors_cleared": had_factors })),
    )
    .await;
    Ok((user, code))
}

async fn reset_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> ApiResult<Json<Value>> {
    let (_, code) = reset(&state, &caller, &username).await?;
    Ok(Json(json!({
        "ok": true,
        "invite_code": code,
    })))
}

#[derive(Deserialize)]
struct DeleteUserQuery {
    /// What happens to the agents the user owns: `transfer:<username>` or
    /// `delete`. Required when they own any.
    agents: Option<String>,
}

/// Admin: delete `username` with their grants, tokens, sessions and private
/// data, in one transaction. `agents` says what happens to the agents they
/// own (`transfer:<username>` or `delete`); required when they own any.
pub(crate) async fn delete_account(
    state: &AppState,
    caller: &Caller,
    username: &str,
    agents: Option<&str>,
) -> ApiResult<User> {
    authorize(state, caller, RequestFacts::new("auth:users:delete"))?;
    let heir = match agents {
        None | Some("delete") => None,
        Some(spec) => {
            let to = spec.strip_prefix("transfer:").ok_or_else(|| {
                ApiError::BadRequest("agents must be transfer:<username> or delete".into())
            })?;
            let heir = state
                .accounts
                .find(to)?
                .ok_or(DomainError::NotFound("user to transfer to"))?;
            if heir.username == username.to_ascii_lowercase() {
                return Err(ApiError::BadRequest(
                    "cannot transfer agents to the user being deleted".into(),
                ));
            }
            Some(heir)
        }
    };
    let delete_agents = agents == Some("delete");
    let user = state
        .accounts
        .delete(&caller.user, username, |user, tx| {
            let owned = state.agents.owned_by(&user.id)?;
            if !owned.is_empty() && heir.is_none() && !delete_agents {
                return Err(DomainError::Conflict(format!(
                    "{} owns {} agent(s); pass ?agents=transfer:<username> or ?agents=delete",
                    user.username,
                    owned.len()
                )));
            }
            if let Some(heir) = &heir {
                state.agents.stage_owner_change(tx, &user.id, &heir.id)?;
            }
            state
                .agents
                .stage_user_removal(tx, &user.id, delete_agents)?;
            state.groups.stage_user_removal(tx, &user.id)?;
            state.delegations.stage_issuer_removal(tx, &user.id)?;
            // Their private data goes with them.
            state.memory.stage_owner_removal(tx, &user.id)?;
            state.chat.stage_owner_removal(tx, &user.id)?;
            state.secrets.stage_owner_removal(tx, &user.id)?;
            state.channels.stage_owner_removal(tx, &user.id)?;
            state.factors.stage_clear(tx, &user.id)?;
            AuditEvent::new(Some(&caller.user.id), "user.delete", &user.username)
                .concerning(&user.id)
                .detail(json!({
                    "agents": owned,
                    "agents_to": heir.as_ref().map(|h| h.username.clone()),
                    "agents_deleted": delete_agents,
                }))
                .record_into(tx)
        })
        .await?;
    tracing::info!(actor = %caller.user.id, user = %user.id, "user deleted");
    Ok(user)
}

async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    Query(query): Query<DeleteUserQuery>,
) -> ApiResult<Json<Value>> {
    delete_account(&state, &caller, &username, query.agents.as_deref()).await?;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
struct SetAdminBody {
    is_admin: bool,
}

/// Admin: grant or remove `username`'s admin rights (never the last admin's).
pub(crate) async fn set_admin_flag(
    state: &AppState,
    caller: &Caller,
    username: &str,
    is_admin: bool,
) -> ApiResult<User> {
    authorize(state, caller, RequestFacts::new("auth:users:set_admin"))?;
    let user = state
        .accounts
        .set_admin(&caller.user, username, is_admin)
        .await?;
    tracing::info!(actor = %caller.user.id, user = %user.id, is_admin = user.is_admin, "admin flag changed");
    let event = AuditEvent::new(Some(&caller.user.id), "user.set_admin", &user.username)
        .concerning(&user.id)
        .detail(json!({ "is_admin": user.is_admin }));
    record(state, event).await;
    Ok(user)
}

async fn set_admin(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    Json(body): Json<SetAdminBody>,
) -> ApiResult<Json<Value>> {
    let user = set_admin_flag(&state, &caller, &username, body.is_admin).await?;
    Ok(Json(json!({ "ok": true, "user": PublicUser::from(&user) })))
}

/// Admin: end every session of `username`; returns how many ended.
pub(crate) async fn revoke_all_sessions(
    state: &AppState,
    caller: &Caller,
    username: &str,
) -> ApiResult<usize> {
    authorize(
        state,
        caller,
        RequestFacts::new("auth:users:revoke_sessions"),
    )?;
    let user = state
        .accounts
        .find(username)?
        .ok_or(DomainError::NotFound("user"))?;
    let revoked = sessions::revoke_all(&state.store, &user.id).await?;
    tracing::info!(actor = %caller.user.id, user = %user.id, revoked, "sessions revoked");
    let event = AuditEvent::new(
        Some(&caller.user.id),
        "user.revoke_sessions",
        &user.username,
    )
    .concerning(&user.id);
    record(state, event).await;
    Ok(revoked)
}

async fn revoke_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> ApiResult<Json<Value>> {
    let revoked = revoke_all_sessions(&state, &caller, &username).await?;
    Ok(Json(json!({ "ok": true, "revoked": revoked })))
}

/// The live sessions of `username`, newest first: one's own, or anyone's
/// for whoever may end them (admins, as for the revoke route).
pub(crate) fn sessions_of(
    state: &AppState,
    caller: &Caller,
    username: &str,
) -> ApiResult<Vec<Session>> {
    let own = on_account(state, "auth:sessions", username)?;
    if let Err(refused) = authorize(state, caller, own) {
        // Whoever may end someone's sessions may see them; anyone else
        // hears why they may not see these as their own.
        authorize(
            state,
            caller,
            RequestFacts::new("auth:users:revoke_sessions"),
        )
        .map_err(|_| refused)?;
    }
    let user = state
        .accounts
        .find(username)?
        .ok_or(DomainError::NotFound("user"))?;
    Ok(sessions::list_live(
        state.store.as_ref(),
        &user.id,
        crate::domain::now(),
    )?)
}

/// A session as its owner sees it: no id (it names the record a token is
/// checked against; nobody needs it to recognise a session).
#[derive(Serialize)]
struct ListedSession {
    created_at: i64,
    expires_at: i64,
    long_lived: bool,
    /// The session this request was made with.
    current: bool,
}

async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> ApiResult<Json<Value>> {
    let current = caller.session_id();
    let listed: Vec<ListedSession> = sessions_of(&state, &caller, &username)?
        .into_iter()
        .map(|s| ListedSession {
            created_at: s.created_at,
            expires_at: s.expires_at,
            long_lived: s.long_lived,
            current: Some(s.id.as_str()) == current,
        })
        .collect();
    Ok(Json(json!({ "sessions": listed })))
}

/// Self: end every session of one's own but the one making this request
/// ("sign out everywhere else"); returns how many ended.
pub(crate) async fn end_other_sessions(
    state: &AppState,
    caller: &Caller,
    username: &str,
) -> ApiResult<usize> {
    authorize(state, caller, on_account(state, "auth:sessions", username)?)?;
    // The policy's "self" needs a login session, so there is one to keep.
    let keep = caller
        .session_id()
        .ok_or_else(|| DomainError::Forbidden("only a login session can do this".into()))?;
    let revoked = sessions::revoke_others(&state.store, &caller.user.id, keep).await?;
    tracing::info!(user = %caller.user.id, revoked, "other sessions ended");
    record(
        state,
        AuditEvent::new(
            Some(&caller.user.id),
            "auth.end_other_sessions",
            &caller.user.username,
        )
        .detail(json!({ "revoked": revoked })),
    )
    .await;
    Ok(revoked)
}

#[derive(Deserialize)]
struct ProfileBody {
    full_name: Option<String>,
    email: Option<String>,
}

/// Self: change one's full name and/or email.
pub(crate) async fn edit_profile(
    state: &AppState,
    caller: &Caller,
    username: &str,
    profile: Profile,
) -> ApiResult<User> {
    let facts = on_account(state, "auth:profile", username)?;
    authorize(state, caller, facts)?;
    Ok(state
        .accounts
        .update_profile(&caller.user.id, profile)
        .await?)
}

async fn update_profile(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    Json(body): Json<ProfileBody>,
) -> ApiResult<Json<Value>> {
    let profile = Profile {
        full_name: body.full_name,
        email: body.email,
    };
    let user = edit_profile(&state, &caller, &username, profile).await?;
    Ok(Json(json!({ "ok": true, "user": PublicUser::from(&user) })))
}

#[derive(Deserialize)]
struct PasswordBody {
    current: Option<String>,
    new: Option<String>,
}

/// Self: change one's password given the current one (attempts count toward
/// the login limits); every other session ends. Returns how many ended.
pub(crate) async fn change_own_password(
    state: &AppState,
    caller: &Caller,
    addr: &ClientAddr,
    username: &str,
    current: String,
    new: String,
) -> ApiResult<usize> {
    let facts = on_account(state, "auth:password", username)?;
    authorize(state, caller, facts)?;
    let who = subjects(addr, Some(caller.user.username.clone()));
    attempt(state, &who)?;
    let revoked = state
        .accounts
        .change_password(
            &caller.user.id,
            current,
            new,
            caller.session_id().unwrap_or_default(),
        )
        .await?;
    state.limiter.succeeded(&who);
    tracing::info!(user = %caller.user.id, revoked, "password changed");
    record(
        state,
        AuditEvent::new(
            Some(&caller.user.id),
            "auth.password",
            &caller.user.username,
        ),
    )
    .await;
    Ok(revoked)
}

async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    Path(username): Path<String>,
    Json(body): Json<PasswordBody>,
) -> ApiResult<Json<Value>> {
    change_own_password(
        &state,
        &caller,
        &addr,
        &username,
        body.current.unwrap_or_default(),
        body.new.unwrap_or_default(),
    )
    .await?;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
struct BackupBody {
    password: Option<String>,
}

/// A consistent snapshot of the whole store and the key files, taken while
/// the server runs (`tessera backup --server ...` fetches it, the console
/// offers it as a download). The file holds the signing and data keys, so a
/// session alone is not enough: the admin's password must come with the
/// same request (a stolen cookie is not a master key), attempts count
/// toward the login limits, and every download is audited with the address
/// it went to.
pub(crate) async fn take_backup(
    state: &AppState,
    caller: &Caller,
    addr: &ClientAddr,
    password: Option<String>,
) -> ApiResult<Vec<u8>> {
    authorize(state, caller, RequestFacts::new("admin:backup"))?;
    let password = password.filter(|p| !p.is_empty()).ok_or_else(|| {
        ApiError::BadRequest(
            "a backup holds the keys: send your password as {\"password\": ...}".into(),
        )
    })?;
    let who = subjects(addr, Some(caller.user.username.clone()));
    attempt(state, &who)?;
    let address = addr.0.map(|a| a.to_string());
    if !state
        .accounts
        .check_password(&caller.user.id, password)
        .await?
    {
        record(
            state,
            AuditEvent::new(Some(&caller.user.id), "admin.backup_refused", "store")
                .detail(json!({ "address": address })),
        )
        .await;
        return Err(DomainError::Forbidden("the password is incorrect".into()).into());
    }
    state.limiter.succeeded(&who);
    let store = state.store.clone();
    let keys_dir = state.config.keys_dir();
    let bytes = tokio::task::spawn_blocking(move || {
        crate::migrate::backup::snapshot(store.as_ref(), &keys_dir)
            .map(|s| crate::migrate::backup::encode(&s))
    })
    .await
    .map_err(|e| DomainError::Internal(format!("backup task: {e}")))?
    .map_err(DomainError::Internal)?;
    record(
        state,
        AuditEvent::new(Some(&caller.user.id), "admin.backup", "store")
            .detail(json!({ "address": address })),
    )
    .await;
    Ok(bytes)
}

async fn backup(
    State(state): State<AppState>,
    caller: Caller,
    addr: ClientAddr,
    body: Bytes,
) -> ApiResult<Response> {
    let password = serde_json::from_slice::<BackupBody>(&body)
        .ok()
        .and_then(|b| b.password);
    let bytes = take_backup(&state, &caller, &addr, password).await?;
    let mut resp = bytes.into_response();
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}
