//! The console's admin pages: users (invite, reset, promote and demote,
//! end sessions, delete with the agents' disposition), every agent, the
//! audit log, and the backup download. Each page and each form calls the
//! same function as its `/auth/...` or `/api/...` route, authorization and
//! audit included, so a forged post from someone who is not an admin meets
//! the API's refusal; the pages only put that refusal in words.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde::Deserialize;
use serde_json::Value;

use super::account::sentence;
use super::when;
use super::{error_page, explain, page, see_other, Chrome, Done, DoneQuery, Person};
use crate::authz::policy::RequestFacts;
use crate::authz::AuthError;
use crate::domain::users::User;
use crate::domain::{now, DomainError};
use crate::error::{ApiError, ApiResult};
use crate::http::audit::{self, Filter};
use crate::http::auth;
use crate::http::csrf::CsrfToken;
use crate::http::extract::ClientAddr;
use crate::state::{AppState, Caller};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/admin", get(users_page))
        .route(
            "/console/admin/users",
            get(|| async { see_other("/console/admin") }).post(invite),
        )
        .route("/console/admin/users/{username}/reset", post(reset))
        .route("/console/admin/users/{username}/admin", post(set_admin))
        .route(
            "/console/admin/users/{username}/sessions",
            post(revoke_sessions),
        )
        .route(
            "/console/admin/users/{username}/delete",
            get(confirm_delete).post(delete),
        )
        .route("/console/admin/agents", get(agents_page))
        .route("/console/admin/audit", get(audit_page))
        .route("/console/admin/backup", get(backup_page).post(backup))
}

const NOTICES: &[(&str, &str)] = &[
    ("promoted", "The user is now an administrator."),
    ("demoted", "The user is no longer an administrator."),
    ("signed_out", "The user was signed out everywhere."),
    ("deleted", "The user was deleted."),
];

/// Audit events per page.
const AUDIT_PAGE: usize = 50;
/// Agents listed at most; a filter narrows a larger host.
const AGENTS_SHOWN: usize = 500;

/// A refusal in words: the policy's reason names an operation, while the
/// person needs to know these pages are for administrators.
fn in_words(error: ApiError) -> ApiError {
    match error {
        ApiError::Auth(AuthError::Denied(_)) => ApiError::Domain(DomainError::Forbidden(
            "your account may not do this: the admin pages are for administrators".into(),
        )),
        other => other,
    }
}

fn denied(error: &ApiError) -> bool {
    matches!(error, ApiError::Auth(AuthError::Denied(_)))
}

async fn refused(csrf: &CsrfToken, caller: &Caller, error: ApiError, back: &str) -> Response {
    error_page(csrf, Some(caller), in_words(error), back).await
}

/// Whether the page offers `operation` (one behind a step-up included: using
/// it then asks for a code, in words).
fn may(state: &AppState, caller: &Caller, operation: &str) -> bool {
    state.offers(caller, RequestFacts::new(operation))
}

// ---------------------------------------------------------------- users

pub struct UserRow {
    pub username: String,
    pub full_name: String,
    pub email: String,
    pub is_admin: bool,
    pub pending: bool,
    /// When a pending user's invite code stops working.
    pub invite_expires: Option<String>,
    pub invite_expired: bool,
    pub last_login: String,
    pub is_self: bool,
    /// The only admin: demoting them is refused, so it is not offered.
    pub last_admin: bool,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct UsersPage {
    chrome: Chrome,
    tab: &'static str,
    rows: Vec<UserRow>,
    can_invite: bool,
    can_reset: bool,
    can_set_admin: bool,
    can_revoke: bool,
    can_delete: bool,
    /// The name typed into the invite form, kept when it failed.
    invite_username: String,
}

async fn render_users(
    state: &AppState,
    csrf: &CsrfToken,
    caller: &Caller,
    done: Option<&Done>,
    error: Option<String>,
    status: StatusCode,
    invite_username: String,
) -> Response {
    let users = match auth::users(state, caller) {
        Ok(users) => users,
        Err(e) => return refused(csrf, caller, e, "/console").await,
    };
    let admins = users.iter().filter(|u| u.is_admin).count();
    let at = now();
    let rows = users
        .iter()
        .map(|u| UserRow {
            username: u.username.clone(),
            full_name: u.full_name.clone(),
            email: u.email.clone(),
            is_admin: u.is_admin,
            pending: u.pending(),
            invite_expires: u.invite.as_ref().map(|i| when(i.expires_at)),
            invite_expired: u.invite.as_ref().is_some_and(|i| i.expires_at <= at),
            last_login: u.last_login_at.map(when).unwrap_or_else(|| "never".into()),
            is_self: u.id == caller.user.id,
            last_admin: u.is_admin && admins <= 1,
        })
        .collect();
    let chrome = Chrome::new(csrf, Some(caller), "admin")
        .notice(done.and_then(|d| d.notice(NOTICES)))
        .error(error);
    page(
        status,
        &UsersPage {
            chrome,
            tab: "users",
            rows,
            can_invite: may(state, caller, "auth:users:create"),
            can_reset: may(state, caller, "auth:users:reset"),
            can_set_admin: may(state, caller, "auth:users:set_admin"),
            can_revoke: may(state, caller, "auth:users:revoke_sessions"),
            can_delete: may(state, caller, "auth:users:delete"),
            invite_username,
        },
    )
}

async fn users_page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    done: DoneQuery,
) -> Response {
    render_users(
        &state,
        &csrf,
        &caller,
        Some(&done),
        None,
        StatusCode::OK,
        String::new(),
    )
    .await
}

/// A failed user action: refused outright, or the users page again with
/// the error in words.
async fn users_failed(
    state: &AppState,
    csrf: &CsrfToken,
    caller: &Caller,
    error: ApiError,
    invite_username: String,
) -> Response {
    if denied(&error) {
        return refused(csrf, caller, error, "/console").await;
    }
    let (status, text) = explain(error).await;
    render_users(
        state,
        csrf,
        caller,
        None,
        Some(sentence(&text)),
        status,
        invite_username,
    )
    .await
}

#[derive(Template)]
#[template(path = "admin_code.html")]
struct CodePage {
    chrome: Chrome,
    tab: &'static str,
    username: String,
    code: String,
    expires: String,
    /// A reset rather than a first invitation.
    reset: bool,
}

/// The code, shown this once in the answer to the post (never in a URL;
/// every answer is `no-store`).
fn code_page(
    csrf: &CsrfToken,
    caller: &Caller,
    user: &User,
    code: String,
    reset: bool,
) -> Response {
    page(
        StatusCode::OK,
        &CodePage {
            chrome: Chrome::new(csrf, Some(caller), "admin"),
            tab: "users",
            username: user.username.clone(),
            code,
            expires: user
                .invite
                .as_ref()
                .map(|i| when(i.expires_at))
                .unwrap_or_default(),
            reset,
        },
    )
}

#[derive(Deserialize)]
struct InviteForm {
    #[serde(default)]
    username: String,
}

async fn invite(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Form(form): Form<InviteForm>,
) -> Response {
    match auth::invite(&state, &caller, &form.username).await {
        Ok((user, code)) => code_page(&csrf, &caller, &user, code, false),
        Err(e) => users_failed(&state, &csrf, &caller, e, form.username).await,
    }
}

async fn reset(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(username): Path<String>,
) -> Response {
    match auth::reset(&state, &caller, &username).await {
        Ok((user, code)) => code_page(&csrf, &caller, &user, code, true),
        Err(e) => users_failed(&state, &csrf, &caller, e, String::new()).await,
    }
}

#[derive(Deserialize)]
struct AdminForm {
    #[serde(default)]
    is_admin: String,
}

async fn set_admin(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(username): Path<String>,
    Form(form): Form<AdminForm>,
) -> Response {
    let is_admin = form.is_admin == "true";
    match auth::set_admin_flag(&state, &caller, &username, is_admin).await {
        Ok(_) if is_admin => see_other("/console/admin?ok=promoted"),
        Ok(_) => see_other("/console/admin?ok=demoted"),
        Err(e) => users_failed(&state, &csrf, &caller, e, String::new()).await,
    }
}

async fn revoke_sessions(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(username): Path<String>,
) -> Response {
    match auth::revoke_all_sessions(&state, &caller, &username).await {
        Ok(_) => see_other("/console/admin?ok=signed_out"),
        Err(e) => users_failed(&state, &csrf, &caller, e, String::new()).await,
    }
}

#[derive(Template)]
#[template(path = "admin_delete.html")]
struct DeletePage {
    chrome: Chrome,
    tab: &'static str,
    username: String,
    is_self: bool,
    /// The agents they own, by name.
    agents: Vec<String>,
    /// Who could receive them.
    heirs: Vec<String>,
}

/// The confirmation page (with the agents' disposition), with an error in
/// words when a post came back.
async fn render_delete(
    state: &AppState,
    csrf: &CsrfToken,
    caller: &Caller,
    username: &str,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let built = (|| -> ApiResult<DeletePage> {
        state.authorize(caller, RequestFacts::new("auth:users:delete"))?;
        let users = auth::users(state, caller)?;
        let wanted = username.trim().to_ascii_lowercase();
        let target = users
            .iter()
            .find(|u| u.username == wanted)
            .ok_or(DomainError::NotFound("user"))?;
        let agents = state.agents.owned_by(&target.id)?;
        let heirs = users
            .iter()
            .filter(|u| u.id != target.id)
            .map(|u| u.username.clone())
            .collect();
        Ok(DeletePage {
            chrome: Chrome::new(csrf, Some(caller), "admin").error(error),
            tab: "users",
            username: target.username.clone(),
            is_self: target.id == caller.user.id,
            agents,
            heirs,
        })
    })();
    match built {
        Ok(confirm) => page(status, &confirm),
        Err(e) => refused(csrf, caller, e, "/console/admin").await,
    }
}

async fn confirm_delete(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(username): Path<String>,
) -> Response {
    render_delete(&state, &csrf, &caller, &username, None, StatusCode::OK).await
}

#[derive(Deserialize)]
struct DeleteForm {
    /// `transfer` or `delete`: what happens to the agents they own.
    agents: Option<String>,
    /// Who receives them, for `transfer`.
    #[serde(default)]
    to: String,
}

async fn delete(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(username): Path<String>,
    Form(form): Form<DeleteForm>,
) -> Response {
    let disposition = match form.agents.as_deref() {
        Some("transfer") => Some(format!("transfer:{}", form.to.trim())),
        Some("delete") => Some("delete".to_owned()),
        _ => None,
    };
    let chosen = disposition.is_some();
    match auth::delete_account(&state, &caller, &username, disposition.as_deref()).await {
        Ok(_) => see_other("/console/admin?ok=deleted"),
        Err(e) if denied(&e) => refused(&csrf, &caller, e, "/console/admin").await,
        Err(e) => {
            let (status, text) = explain(e).await;
            let text = match status {
                StatusCode::CONFLICT if !chosen => format!(
                    "{} owns agents: choose whether someone receives them or they are deleted.",
                    username.trim().to_ascii_lowercase()
                ),
                StatusCode::NOT_FOUND if form.agents.as_deref() == Some("transfer") => {
                    "Choose an existing user to receive the agents.".into()
                }
                _ => sentence(&text),
            };
            render_delete(&state, &csrf, &caller, &username, Some(text), status).await
        }
    }
}

// ---------------------------------------------------------------- agents

pub struct AgentRow {
    pub name: String,
    pub display_name: String,
    pub owner: String,
    pub archived: bool,
    pub shares: usize,
}

#[derive(Template)]
#[template(path = "admin_agents.html")]
struct AgentsPage {
    chrome: Chrome,
    tab: &'static str,
    rows: Vec<AgentRow>,
    filter: String,
    total: usize,
    more: usize,
}

#[derive(Deserialize, Default)]
struct AgentsQuery {
    q: Option<String>,
}

fn agent_rows(
    state: &AppState,
    caller: &Caller,
    filter: &str,
) -> ApiResult<(Vec<AgentRow>, usize)> {
    // Whoever may assign agents to people is an admin and sees them all;
    // anyone else is refused here rather than shown their own agents again.
    state.authorize(caller, RequestFacts::new("agent:create_for"))?;
    let needle = filter.trim().to_lowercase();
    let mut rows = Vec::new();
    for loaded in crate::http::agents::readable(state, caller)? {
        let agent = &loaded.agent;
        let owner = loaded
            .owner_name
            .clone()
            .unwrap_or_else(|| "(deleted user)".into());
        let display_name = agent
            .fields
            .get("display_name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(&agent.name)
            .to_owned();
        if !needle.is_empty()
            && !agent.name.contains(&needle)
            && !display_name.to_lowercase().contains(&needle)
            && !owner.contains(&needle)
        {
            continue;
        }
        rows.push(AgentRow {
            name: agent.name.clone(),
            display_name,
            owner,
            archived: agent.archived,
            shares: loaded.grants.len(),
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    let total = rows.len();
    rows.truncate(AGENTS_SHOWN);
    Ok((rows, total))
}

async fn agents_page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Query(query): Query<AgentsQuery>,
) -> Response {
    let filter = query.q.unwrap_or_default();
    match agent_rows(&state, &caller, &filter) {
        Ok((rows, total)) => page(
            StatusCode::OK,
            &AgentsPage {
                chrome: Chrome::new(&csrf, Some(&caller), "admin"),
                tab: "agents",
                more: total - rows.len(),
                rows,
                filter,
                total,
            },
        ),
        Err(e) => refused(&csrf, &caller, e, "/console").await,
    }
}

// ---------------------------------------------------------------- audit

pub struct EventRow {
    pub at: String,
    pub actor: String,
    pub on_behalf_of: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AuditPage {
    chrome: Chrome,
    tab: &'static str,
    rows: Vec<EventRow>,
    actor: String,
    action: String,
    target: String,
    /// The link to the next (older) page, if any.
    next: Option<String>,
    /// Whether this is a later page (offer the way back to the newest).
    paged: bool,
}

#[derive(Deserialize, Default)]
struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
    after: Option<String>,
}

/// People's names for the user ids in the log, each looked up once.
struct Names<'a> {
    state: &'a AppState,
    known: HashMap<String, String>,
}

impl Names<'_> {
    fn name(&mut self, id: &str) -> String {
        if let Some(name) = self.known.get(id) {
            return name.clone();
        }
        let name = match self.state.accounts.get(id) {
            Ok(Some(user)) => user.username.clone(),
            _ => format!("{id} (deleted account)"),
        };
        self.known.insert(id.to_owned(), name.clone());
        name
    }
}

/// An event's detail as text: `key: value` pairs.
fn detail_text(detail: &Value) -> String {
    match detail {
        Value::Null => String::new(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}: {}", value_text(v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        Value::Array(items) if items.is_empty() => "none".into(),
        Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

async fn audit_page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Query(query): Query<AuditQuery>,
) -> Response {
    let found = (|| -> ApiResult<audit::Found> {
        // Everyone reads the events that concern them through the API; this
        // page is the whole log, for those who may read all of it.
        state.authorize(&caller, RequestFacts::new("audit:read_all"))?;
        let filter = Filter {
            actor: Some(query.actor.clone()),
            action: Some(query.action.clone()),
            target: Some(query.target.clone()),
        };
        audit::events(
            &state,
            &caller,
            &filter,
            query.after.as_deref().filter(|a| !a.is_empty()),
            AUDIT_PAGE,
        )
    })();
    let found = match found {
        Ok(found) => found,
        Err(e) => return refused(&csrf, &caller, e, "/console").await,
    };
    let mut names = Names {
        state: &state,
        known: HashMap::new(),
    };
    let rows = found
        .events
        .iter()
        .map(|e| EventRow {
            at: when(e.at),
            actor: e
                .actor
                .as_deref()
                .map(|id| names.name(id))
                .unwrap_or_else(|| "(nobody signed in)".into()),
            on_behalf_of: e
                .on_behalf_of
                .as_deref()
                .map(|id| names.name(id))
                .unwrap_or_default(),
            action: e.action.clone(),
            target: e.target.clone(),
            detail: detail_text(&e.detail),
        })
        .collect();
    let next = found.next.map(|after| {
        let pairs: Vec<(&str, &str)> = [
            ("actor", query.actor.trim()),
            ("action", query.action.trim()),
            ("target", query.target.trim()),
            ("after", after.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
        format!(
            "/console/admin/audit?{}",
            serde_urlencoded::to_string(pairs).unwrap_or_default()
        )
    });
    page(
        StatusCode::OK,
        &AuditPage {
            chrome: Chrome::new(&csrf, Some(&caller), "admin"),
            tab: "audit",
            rows,
            actor: query.actor,
            action: query.action,
            target: query.target,
            next,
            paged: query.after.is_some_and(|a| !a.is_empty()),
        },
    )
}

// ---------------------------------------------------------------- backup

#[derive(Template)]
#[template(path = "admin_backup.html")]
struct BackupPage {
    chrome: Chrome,
    tab: &'static str,
}

async fn render_backup(
    state: &AppState,
    csrf: &CsrfToken,
    caller: &Caller,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    if !state.offers(caller, RequestFacts::new("admin:backup")) {
        // Refused even after a step-up: the refusal itself, in words.
        if let Err(e) = state.authorize(caller, RequestFacts::new("admin:backup")) {
            return refused(csrf, caller, e.into(), "/console").await;
        }
    }
    page(
        status,
        &BackupPage {
            chrome: Chrome::new(csrf, Some(caller), "admin").error(error),
            tab: "backup",
        },
    )
}

async fn backup_page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
) -> Response {
    render_backup(&state, &csrf, &caller, None, StatusCode::OK).await
}

#[derive(Deserialize)]
struct BackupForm {
    #[serde(default)]
    password: String,
}

async fn backup(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    addr: ClientAddr,
    Person(caller): Person,
    Form(form): Form<BackupForm>,
) -> Response {
    match auth::take_backup(&state, &caller, &addr, Some(form.password)).await {
        Ok(bytes) => {
            let name = format!(
                "attachment; filename=\"tessera-backup-{}.tbk\"",
                when(now())
                    .trim_end_matches(" UTC")
                    .replace([' ', ':'], "-")
            );
            let mut resp = bytes.into_response();
            let headers = resp.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Ok(value) = HeaderValue::from_str(&name) {
                headers.insert(CONTENT_DISPOSITION, value);
            }
            resp
        }
        Err(e) if denied(&e) => refused(&csrf, &caller, e, "/console").await,
        Err(e) => {
            let words = matches!(e, ApiError::BadRequest(_))
                .then(|| "Type your password to download a backup.".to_owned());
            let (status, text) = explain(e).await;
            let text = words.unwrap_or_else(|| {
                if status == StatusCode::FORBIDDEN {
                    "That password is not right; no backup was made.".into()
                } else {
                    sentence(&text)
                }
            });
            render_backup(&state, &csrf, &caller, Some(text), status).await
        }
    }
}
