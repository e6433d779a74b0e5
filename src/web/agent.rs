//! The console's page for one agent: its fields, owner, state and my level;
//! its shares; transfer, archive, restore and delete; delegated tokens, the
//! runtime token and my channels for it.
//!
//! Each control is shown only when the policy allows it, asked exactly as
//! the API route asks (`crate::http::agents::allowed` and friends), and every
//! form posts to a handler that calls the same function as that route, so a
//! forged post meets the same refusal. A token is shown once, in the answer
//! to the POST that made it, never in a URL.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Form, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{error_page, explain, page, see_other, when, Chrome, Done, DoneQuery, Person};
use crate::authz::AuthError;
use crate::domain::channels::CHANNEL_TYPES;
use crate::domain::levels::Level;
use crate::error::{ApiError, ApiResult};
use crate::http::agents::{self as api, allowed, allowed_on_grant};
use crate::http::csrf::CsrfToken;
use crate::http::{channels, tokens};
use crate::state::{AgentState, AppState, Caller};

pub fn routes() -> Router<AppState> {
    // A reload or a bookmark of where a form posted lands on the agent.
    Router::new()
        .route("/console/agents/{name}", get(show))
        .route("/console/agents/{name}/edit", get(back).post(edit))
        .route("/console/agents/{name}/archive", get(back).post(archive))
        .route("/console/agents/{name}/restore", get(back).post(restore))
        .route("/console/agents/{name}/transfer", get(back).post(transfer))
        .route("/console/agents/{name}/delete", get(back).post(delete))
        .route("/console/agents/{name}/leave", get(back).post(leave))
        .route("/console/agents/{name}/shares", get(back).post(share))
        .route(
            "/console/agents/{name}/shares/{user}",
            get(back).post(reshare),
        )
        .route(
            "/console/agents/{name}/shares/{user}/delete",
            get(back).post(unshare),
        )
        .route("/console/agents/{name}/tokens", get(back).post(mint))
        .route(
            "/console/agents/{name}/tokens/{id}/revoke",
            get(back).post(revoke_token),
        )
        .route("/console/agents/{name}/runtime", get(back).post(rotate))
        .route(
            "/console/agents/{name}/runtime/revoke",
            get(back).post(end_runtime),
        )
        .route(
            "/console/agents/{name}/channels",
            get(back).post(add_channel),
        )
        .route(
            "/console/agents/{name}/channels/{id}/toggle",
            get(back).post(toggle_channel),
        )
        .route(
            "/console/agents/{name}/channels/{id}/delete",
            get(back).post(delete_channel),
        )
}

const NOTICES: &[(&str, &str)] = &[
    ("created", "The agent was created."),
    ("updated", "The agent's fields were saved."),
    ("archived", "The agent was archived."),
    ("restored", "The agent was restored."),
    ("transferred", "The agent was transferred."),
    ("shared", "The agent was shared."),
    ("unshared", "The share was revoked."),
    ("token_revoked", "The token was revoked."),
    ("runtime_revoked", "The runtime token was revoked."),
    ("channel_toggled", "The channel was switched."),
    ("channel_deleted", "The channel was deleted."),
];

/// Lifetimes offered for a delegated token, in seconds.
const EXPIRIES: &[(i64, &str)] = &[
    (3600, "1 hour"),
    (86_400, "1 day"),
    (7 * 86_400, "7 days"),
    (30 * 86_400, "30 days"),
    (90 * 86_400, "90 days"),
    (tokens::MAX_EXPIRES_IN, "1 year"),
];
const DEFAULT_EXPIRY: i64 = 7 * 86_400;

/// The levels one can grant or delegate, lowest first.
const GRANTABLE: [Level; 5] = [
    Level::View,
    Level::Use,
    Level::Edit,
    Level::Manage,
    Level::Share,
];

/// An option of a select.
pub struct Opt {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

fn level_options(levels: &[Level], current: Option<Level>) -> Vec<Opt> {
    levels
        .iter()
        .map(|l| Opt {
            value: l.as_str().into(),
            label: l.as_str().into(),
            selected: Some(*l) == current,
        })
        .collect()
}

pub struct Field {
    pub key: String,
    /// The value as text: a string as is, anything else as JSON.
    pub value: String,
    /// Strings are edited here; other values (flags, numbers, lists) only
    /// through the API, so a form never turns them into strings.
    pub editable: bool,
    /// Stored (rather than offered while unset), so it can be removed.
    pub present: bool,
}

pub struct ShareRow {
    /// How the share's grantee is named in its forms' paths: a username,
    /// `group:<name>` or `everyone`.
    pub username: String,
    /// Who it is with, as shown.
    pub label: String,
    /// When it runs out, if it does.
    pub expires: Option<String>,
    pub expired: bool,
    pub level: &'static str,
    pub granted_by: String,
    pub at: String,
    pub effective: bool,
    /// Levels I may change this grant to (empty: I may not change it).
    pub relevel: Vec<Opt>,
    pub can_revoke: bool,
}

pub struct TokenRow {
    pub id: String,
    pub label: String,
    pub level: &'static str,
    pub expires: String,
    pub expired: bool,
    pub issuer: String,
    pub can_revoke: bool,
}

pub struct RuntimeRow {
    pub expires: String,
    /// Minted by an earlier owner: it no longer works.
    pub stale: bool,
}

pub struct ChannelRow {
    pub id: String,
    pub kind: String,
    pub enabled: bool,
    pub config: String,
}

/// A token this answer shows, once.
pub struct Once {
    pub heading: &'static str,
    pub token: String,
    pub note: String,
}

/// Everything the page shows, decided for the caller.
pub struct View {
    pub name: String,
    pub display_name: String,
    pub owner: String,
    pub archived: bool,
    pub archived_at: String,
    pub created: String,
    pub level: &'static str,
    pub fields: Vec<Field>,
    pub can_edit: bool,
    pub can_archive: bool,
    pub can_restore: bool,
    pub can_transfer: bool,
    pub can_delete: bool,
    /// `None`: I may not read the shares.
    pub shares: Option<Vec<ShareRow>>,
    /// Levels I may share at (empty: no share form).
    pub share_levels: Vec<Opt>,
    /// The groups I see, offered as share targets.
    pub my_groups: Vec<String>,
    /// I hold a grant I may give up.
    pub can_leave: bool,
    /// Levels I may mint a token at (empty: no mint form).
    pub token_levels: Vec<Opt>,
    pub expiries: Vec<Opt>,
    pub tokens: Vec<TokenRow>,
    pub runtime: Option<RuntimeRow>,
    pub can_rotate: bool,
    pub can_end_runtime: bool,
    pub channels: Vec<ChannelRow>,
    pub can_change_channels: bool,
    pub can_add_channel: bool,
    pub channel_types: Vec<&'static str>,
    pub my_secrets: Vec<String>,
}

#[derive(Template)]
#[template(path = "agent.html")]
struct AgentPage {
    chrome: Chrome,
    a: View,
    once: Option<Once>,
}

/// A check's refusal is an answer (`false`); limits and faults are errors.
fn permits(result: ApiResult<()>) -> ApiResult<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(ApiError::Auth(AuthError::Denied(_))) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Like [`permits`] for a shared function's own check: a refusal there
/// means "nothing to show", anything else is an error.
fn unless_denied<T: Default>(result: ApiResult<T>) -> ApiResult<T> {
    match result {
        Err(ApiError::Auth(AuthError::Denied(_))) => Ok(T::default()),
        other => other,
    }
}

fn username(state: &AppState, id: &str) -> ApiResult<String> {
    Ok(state
        .accounts
        .get(id)?
        .map(|u| u.username.clone())
        .unwrap_or_else(|| "(deleted user)".into()))
}

fn levels_where(mut ok: impl FnMut(Level) -> ApiResult<bool>) -> ApiResult<Vec<Level>> {
    let mut out = Vec::new();
    for level in GRANTABLE {
        if ok(level)? {
            out.push(level);
        }
    }
    Ok(out)
}

/// The page's content for the caller, or the API's refusal to read it
/// (not found for those who may not see the agent).
fn build(state: &AppState, caller: &Caller, name: &str) -> ApiResult<View> {
    let loaded = api::load(state, name)?;
    api::decide(state, caller, "agent:read", &loaded, 0)?;
    let agent = &loaded.agent;
    let may = |op: &str| allowed(state, caller, op, &loaded, 0);

    let mut fields: Vec<Field> = agent
        .fields
        .iter()
        .map(|(key, value)| Field {
            key: key.clone(),
            value: match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            editable: value.is_string(),
            present: true,
        })
        .collect();
    // The display name comes first, offered even while unset.
    fields.sort_by_key(|f| (f.key != "display_name", f.key.clone()));
    if fields.first().is_none_or(|f| f.key != "display_name") {
        fields.insert(
            0,
            Field {
                key: "display_name".into(),
                value: String::new(),
                editable: true,
                present: false,
            },
        );
    }

    let shares = if may("agent:shares:read")? {
        Some(share_rows(state, caller, &loaded)?)
    } else {
        None
    };
    let share_levels = levels_where(|l| allowed(state, caller, "agent:share", &loaded, l.rank()))?;
    let can_leave =
        loaded.grants.iter().any(|g| g.grantee == caller.user.id) && may("agent:leave")?;
    let token_levels =
        levels_where(|l| allowed(state, caller, "agent:tokens:mint", &loaded, l.rank()))?;

    let now = crate::domain::now();
    let mut token_rows = Vec::new();
    for record in unless_denied(tokens::list_tokens(state, caller))? {
        if record.agent != agent.name {
            continue;
        }
        token_rows.push(TokenRow {
            can_revoke: permits(
                state
                    .authorize(caller, tokens::revoke_request(&record))
                    .map_err(ApiError::from),
            )?,
            id: record.id,
            label: record.label.unwrap_or_default(),
            level: record.level.as_str(),
            expires: when(record.expires_at),
            expired: record.expires_at <= now,
            issuer: username(state, &record.issuer)?,
        });
    }
    token_rows.sort_by(|a, b| a.expires.cmp(&b.expires));

    let runtime = crate::domain::channels::current_runtime(state.store.as_ref(), name)?;
    let can_end_runtime = runtime.is_some() && may("agent:runtime:revoke")?;
    let runtime = runtime.map(|r| RuntimeRow {
        expires: when(r.expires_at),
        stale: r.owner != agent.owner,
    });

    let channel_rows: Vec<ChannelRow> = unless_denied(channels::list_channels(state, caller))?
        .into_iter()
        .filter(|c| c.agent_name == agent.name)
        .map(|c| ChannelRow {
            id: c.id,
            kind: c.kind,
            enabled: c.enabled,
            config: c.config.to_string(),
        })
        .collect();
    let can_change_channels = permits(crate::http::secrets::own_data(state, caller, "data:write"))?;
    let can_add_channel = can_change_channels && may("agent:channel")?;
    let my_secrets = if can_add_channel {
        crate::http::secrets::own_data(state, caller, "data:read")?;
        let mut names: Vec<String> = state
            .secrets
            .list(&caller.user.id)?
            .into_iter()
            .map(|s| s.name)
            .collect();
        names.sort();
        names
    } else {
        Vec::new()
    };

    Ok(View {
        name: agent.name.clone(),
        display_name: agent
            .fields
            .get("display_name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(&agent.name)
            .to_owned(),
        owner: loaded
            .owner_name
            .clone()
            .unwrap_or_else(|| "(deleted user)".into()),
        archived: agent.archived,
        archived_at: agent.archived_at.map(when).unwrap_or_default(),
        created: when(agent.created_at),
        level: api::access(state, caller, &loaded)?.map_or("none", Level::as_str),
        fields,
        can_edit: may("agent:update")?,
        // The policy lets managers restore an active agent too (nothing
        // happens): offered only while there is something to restore.
        can_archive: !agent.archived && may("agent:archive")?,
        can_restore: agent.archived && may("agent:restore")?,
        can_transfer: may("agent:transfer")?,
        can_delete: may("agent:delete")?,
        shares,
        my_groups: if share_levels.is_empty() {
            Vec::new()
        } else {
            crate::http::groups::listed(state, caller)?
                .into_iter()
                .map(|g| g.name)
                .collect()
        },
        share_levels: level_options(&share_levels, Some(Level::View)),
        can_leave,
        token_levels: level_options(&token_levels, Some(Level::View)),
        expiries: EXPIRIES
            .iter()
            .map(|(secs, label)| Opt {
                value: secs.to_string(),
                label: (*label).into(),
                selected: *secs == DEFAULT_EXPIRY,
            })
            .collect(),
        tokens: token_rows,
        runtime,
        can_rotate: may("agent:runtime")?,
        can_end_runtime,
        channels: channel_rows,
        can_change_channels,
        can_add_channel,
        channel_types: CHANNEL_TYPES.to_vec(),
        my_secrets,
    })
}

/// The shares with what I may do to each: change its level (to those the
/// policy lets me confer over its grantor) or revoke it. My own grant is
/// left to "leave".
fn share_rows(state: &AppState, caller: &Caller, loaded: &AgentState) -> ApiResult<Vec<ShareRow>> {
    let (_, shares) = api::shares(state, caller, &loaded.agent.name)?;
    let mut rows = Vec::with_capacity(shares.len());
    for share in shares {
        let by = share.granted_by.id.as_str();
        let mine = matches!(&share.with, api::SharedWith::User(u) if u.id == caller.user.id);
        // A grantee whose account is gone cannot be named in a form.
        let key = share.with.key();
        let named = key.is_some() && !mine;
        let relevel = if named {
            levels_where(|l| {
                Ok(allowed(state, caller, "agent:share", loaded, l.rank())?
                    && allowed_on_grant(state, caller, "agent:share", loaded, l.rank(), Some(by))?)
            })?
        } else {
            Vec::new()
        };
        let can_revoke = named
            && allowed_on_grant(
                state,
                caller,
                "agent:unshare",
                loaded,
                share.level.rank(),
                Some(by),
            )?;
        let label = match &share.with {
            api::SharedWith::User(u) => u
                .username
                .clone()
                .unwrap_or_else(|| "(deleted user)".into()),
            api::SharedWith::Group(group) => format!("group {group}"),
            api::SharedWith::Everyone => "everyone on this host".into(),
        };
        rows.push(ShareRow {
            username: key.unwrap_or_default(),
            label,
            expires: share.expires_at.map(when),
            expired: share.expired,
            level: share.level.as_str(),
            granted_by: share
                .granted_by
                .username
                .unwrap_or_else(|| "(deleted user)".into()),
            at: when(share.at),
            effective: share.effective,
            relevel: level_options(&relevel, Some(share.level)),
            can_revoke,
        });
    }
    Ok(rows)
}

/// The page, with a notice or a token shown once.
fn render(
    state: &AppState,
    csrf: &CsrfToken,
    caller: &Caller,
    name: &str,
    notice: Option<&str>,
    once: Option<Once>,
) -> ApiResult<Response> {
    let a = build(state, caller, name)?;
    let chrome = Chrome::new(csrf, Some(caller), "agents").notice(notice);
    Ok(page(StatusCode::OK, &AgentPage { chrome, a, once }))
}

/// A refusal or failure in words: on the agent's page while the caller
/// still sees the agent, else on a page of its own.
async fn fail(
    state: &AppState,
    csrf: &CsrfToken,
    caller: &Caller,
    name: &str,
    error: ApiError,
) -> Response {
    match build(state, caller, name) {
        Ok(a) => {
            let (status, text) = explain(error).await;
            let chrome = Chrome::new(csrf, Some(caller), "agents").error(Some(text));
            page(
                status,
                &AgentPage {
                    chrome,
                    a,
                    once: None,
                },
            )
        }
        Err(_) => error_page(csrf, Some(caller), error, "/console").await,
    }
}

/// The agent's page path, for a name that is a valid agent name (anything
/// else goes to the list).
fn agent_path(name: &str) -> String {
    if crate::domain::agents::check_agent_name(name).is_ok() {
        format!("/console/agents/{name}")
    } else {
        "/console".into()
    }
}

async fn back(Path(params): Path<HashMap<String, String>>) -> Response {
    see_other(&agent_path(params.get("name").map_or("", String::as_str)))
}

/// A form body; one that cannot be read is answered with a page in words
/// (the framework's rejection would be turned into JSON).
pub struct PageForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for PageForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let csrf = req
            .extensions()
            .get::<CsrfToken>()
            .cloned()
            .unwrap_or_else(|| CsrfToken(String::new()));
        let rejection = match Form::<T>::from_request(req, state).await {
            Ok(Form(value)) => return Ok(PageForm(value)),
            Err(rejection) => rejection.body_text(),
        };
        tracing::debug!(%rejection, "unreadable form");
        Err(error_page(
            &csrf,
            None,
            ApiError::BadRequest(
                "the form could not be read; reload the page and try again".into(),
            ),
            "/console",
        )
        .await)
    }
}

/// What a handler does after its change: where to go, or a page to show.
enum Next {
    Go(String),
    Show(Once),
}

/// Run `action`, then redirect (success) or say what went wrong.
async fn finish(
    state: &AppState,
    csrf: &CsrfToken,
    caller: &Caller,
    name: &str,
    result: ApiResult<Next>,
) -> Response {
    let result = match result {
        Ok(Next::Go(to)) => return see_other(&to),
        Ok(Next::Show(once)) => render(state, csrf, caller, name, None, Some(once)),
        Err(e) => Err(e),
    };
    match result {
        Ok(response) => response,
        Err(e) => fail(state, csrf, caller, name, e).await,
    }
}

fn done(name: &str, key: &str) -> Next {
    Next::Go(format!("{}?ok={key}", agent_path(name)))
}

async fn show(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(name): Path<String>,
    query: DoneQuery,
) -> Response {
    let done: &Done = &query;
    match render(&state, &csrf, &caller, &name, done.notice(NOTICES), None) {
        Ok(response) => response,
        Err(e) => error_page(&csrf, Some(&caller), e, "/console").await,
    }
}

/// The changes an edit form asks for: `field.<key>` values that differ from
/// what is stored, `remove` checkboxes, and one new `new_key`/`new_value`.
fn changes(
    current: &Map<String, Value>,
    form: &[(String, String)],
) -> ApiResult<Map<String, Value>> {
    let mut out = Map::new();
    let mut new_key = "";
    let mut new_value = "";
    for (key, value) in form {
        if let Some(field) = key.strip_prefix("field.") {
            let differs = match current.get(field) {
                Some(Value::String(old)) => old != value,
                // Non-strings are not edited here.
                Some(_) => false,
                None => !value.trim().is_empty(),
            };
            if differs {
                out.insert(field.to_owned(), Value::String(value.trim().to_owned()));
            }
        } else if key == "new_key" {
            new_key = value.trim();
        } else if key == "new_value" {
            new_value = value;
        }
    }
    for (key, value) in form {
        if key == "remove" && current.contains_key(value) {
            out.insert(value.clone(), Value::Null);
        }
    }
    if !new_key.is_empty() {
        if current.contains_key(new_key) || out.contains_key(new_key) {
            return Err(ApiError::BadRequest(format!(
                "the field {new_key:?} exists already; change it above"
            )));
        }
        out.insert(
            new_key.to_owned(),
            Value::String(new_value.trim().to_owned()),
        );
    } else if !new_value.trim().is_empty() {
        return Err(ApiError::BadRequest("name the new field".into()));
    }
    Ok(out)
}

async fn edit(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(name): Path<String>,
    PageForm(form): PageForm<Vec<(String, String)>>,
) -> Response {
    let result = async {
        let loaded = api::load(&state, &name)?;
        // Refused first: what the form holds says nothing to those who may
        // not edit (nor whether the agent exists).
        api::decide(&state, &caller, "agent:update", &loaded, 0)?;
        let changes = changes(&loaded.agent.fields, &form)?;
        if !changes.is_empty() {
            api::update_agent(&state, &caller, &name, changes).await?;
        }
        Ok(done(&name, "updated"))
    }
    .await;
    finish(&state, &csrf, &caller, &name, result).await
}

async fn archive(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(name): Path<String>,
) -> Response {
    let result = api::set_archived(&state, &caller, &name, true)
        .await
        .map(|status| done(&name, status));
    finish(&state, &csrf, &caller, &name, result).await
}

async fn restore(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(name): Path<String>,
) -> Response {
    let result = api::set_archived(&state, &caller, &name, false)
        .await
        .map(|status| done(&name, status));
    finish(&state, &csrf, &caller, &name, result).await
}

#[derive(Deserialize)]
struct TransferForm {
    #[serde(default)]
    to: String,
}

async fn transfer(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(name): Path<String>,
    PageForm(form): PageForm<TransferForm>,
) -> Response {
    let result = async {
        api::transfer_agent(&state, &caller, &name, form.to.trim()).await?;
        // The previous owner may no longer see it.
        let still_seen = api::load(&state, &name)
            .and_then(|loaded| allowed(&state, &caller, "agent:read", &loaded, 0))
            .unwrap_or(false);
        Ok(if still_seen {
            done(&name, "transferred")
        } else {
            Next::Go("/console?ok=transferred".into())
        })
    }
    .await;
    finish(&state, &csrf, &caller, &name, result).await
}

#[derive(Deserialize)]
struct DeleteForm {
    #[serde(default)]
    confirm: String,
}

async fn delete(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(name): Path<String>,
    PageForm(form): PageForm<DeleteForm>,
) -> Response {
    let result = async {
        if form.confirm.is_empty() {
            // Those who may not delete hear that first.
            let loaded = api::load(&state, &name)?;
            api::decide(&state, &caller, "agent:delete", &loaded, 0)?;
            return Err(ApiError::BadRequest(
                "tick the box to confirm that the agent is to be deleted".into(),
            ));
        }
        api::delete_agent(&state, &caller, &name).await?;
        Ok(Next::Go("/console?ok=deleted".into()))
    }
    .await;
    finish(&state, &csrf, &caller, &name, result).await
}

async fn leave(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(name): Path<String>,
) -> Response {
    let me = api::ShareTo::User(caller.user.username.clone());
    let result = api::unshare_agent(&state, &caller, &name, &me)
        .await
        .map(|()| Next::Go("/console?ok=left".into()));
    finish(&state, &csrf, &caller, &name, result).await
}

#[derive(Deserialize)]
struct ShareForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    level: String,
    /// Seconds from now until the share runs out; empty or 0: never.
    #[serde(default)]
    expires_in: String,
}

async fn share(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(name): Path<String>,
    PageForm(form): PageForm<ShareForm>,
) -> Response {
    let expires_at = match form.expires_in.trim() {
        "" | "0" => Ok(None),
        secs => secs
            .parse::<i64>()
            .ok()
            .filter(|s| *s > 0)
            .map(|s| Some(state.now().saturating_add(s)))
            .ok_or_else(|| ApiError::BadRequest("choose when the share runs out".into())),
    };
    let to = api::ShareTo::parse(form.user.trim());
    let result = match expires_at {
        Ok(expires_at) => api::share_agent(&state, &caller, &name, &to, &form.level, expires_at)
            .await
            .map(|_| done(&name, "shared")),
        Err(e) => Err(e),
    };
    finish(&state, &csrf, &caller, &name, result).await
}

#[derive(Deserialize)]
struct LevelForm {
    #[serde(default)]
    level: String,
}

async fn reshare(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path((name, user)): Path<(String, String)>,
    PageForm(form): PageForm<LevelForm>,
) -> Response {
    // Changing the level keeps the share's expiry.
    let to = api::ShareTo::parse(&user);
    let result = match api::current_expiry(&state, &name, &to) {
        Ok(expires_at) => api::share_agent(&state, &caller, &name, &to, &form.level, expires_at)
            .await
            .map(|_| done(&name, "shared")),
        Err(e) => Err(e),
    };
    finish(&state, &csrf, &caller, &name, result).await
}

async fn unshare(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path((name, user)): Path<(String, String)>,
) -> Response {
    let result = api::unshare_agent(&state, &caller, &name, &api::ShareTo::parse(&user))
        .await
        .map(|()| {
            if user.eq_ignore_ascii_case(&caller.user.username) {
                Next::Go("/console?ok=left".into())
            } else {
                done(&name, "unshared")
            }
        });
    finish(&state, &csrf, &caller, &name, result).await
}

#[derive(Deserialize)]
struct MintForm {
    #[serde(default)]
    level: String,
    #[serde(default)]
    expires_in: String,
    #[serde(default)]
    label: String,
}

async fn mint(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(name): Path<String>,
    PageForm(form): PageForm<MintForm>,
) -> Response {
    let result = async {
        let expires_in = form
            .expires_in
            .trim()
            .parse::<i64>()
            .map_err(|_| ApiError::BadRequest("choose how long the token lasts".into()))?;
        let label = Some(form.label.trim().to_owned()).filter(|l| !l.is_empty());
        let (record, token) =
            tokens::mint_token(&state, &caller, &name, &form.level, expires_in, label).await?;
        Ok(Next::Show(Once {
            heading: "Your new token",
            token,
            note: format!(
                "A {} token for {}, valid until {}. It is shown only this once: copy it now.",
                record.level.as_str(),
                record.agent,
                when(record.expires_at)
            ),
        }))
    }
    .await;
    finish(&state, &csrf, &caller, &name, result).await
}

async fn revoke_token(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    let result = tokens::revoke_token(&state, &caller, &id)
        .await
        .map(|_| done(&name, "token_revoked"));
    finish(&state, &csrf, &caller, &name, result).await
}

async fn rotate(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(name): Path<String>,
) -> Response {
    let result = api::rotate_runtime_token(&state, &caller, &name)
        .await
        .map(|(runtime, token)| {
            Next::Show(Once {
                heading: "The agent's runtime token",
                token,
                note: format!(
                    "Give it to the agent's runtime; any earlier runtime token no longer works. \
                     Valid until {}. It is shown only this once: copy it now.",
                    when(runtime.expires_at)
                ),
            })
        });
    finish(&state, &csrf, &caller, &name, result).await
}

async fn end_runtime(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(name): Path<String>,
) -> Response {
    let result = api::end_runtime_token(&state, &caller, &name)
        .await
        .map(|()| done(&name, "runtime_revoked"));
    finish(&state, &csrf, &caller, &name, result).await
}

#[derive(Deserialize)]
struct ChannelForm {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    bot_token_secret: String,
    /// More settings, one `key=value` a line.
    #[serde(default)]
    settings: String,
}

/// The channel's config from the form: the secret it names and the
/// settings, each line `key=value`.
fn channel_config(form: &ChannelForm) -> ApiResult<Value> {
    let mut config = Map::new();
    if !form.bot_token_secret.trim().is_empty() {
        config.insert(
            "bot_token_secret".into(),
            Value::String(form.bot_token_secret.trim().to_owned()),
        );
    }
    for line in form
        .settings
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        let Some((key, value)) = line.split_once('=') else {
            return Err(ApiError::BadRequest(format!(
                "each setting is a line key=value; {line:?} is not"
            )));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "the setting {line:?} has no name"
            )));
        }
        config.insert(key.to_owned(), Value::String(value.trim().to_owned()));
    }
    Ok(Value::Object(config))
}

async fn add_channel(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(name): Path<String>,
    PageForm(form): PageForm<ChannelForm>,
) -> Response {
    let result = async {
        let config = channel_config(&form)?;
        let (channel, token) =
            channels::create_channel(&state, &caller, &name, form.kind.trim(), config).await?;
        Ok(Next::Show(Once {
            heading: "The channel's bot token",
            token,
            note: format!(
                "The {} channel's bot acts in its own conversation with this token. \
                 It is shown only this once: copy it now.",
                channel.kind
            ),
        }))
    }
    .await;
    finish(&state, &csrf, &caller, &name, result).await
}

async fn toggle_channel(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    let result = channels::toggle_channel(&state, &caller, &id)
        .await
        .map(|_| done(&name, "channel_toggled"));
    finish(&state, &csrf, &caller, &name, result).await
}

async fn delete_channel(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    let result = channels::delete_channel(&state, &caller, &id)
        .await
        .map(|()| done(&name, "channel_deleted"));
    finish(&state, &csrf, &caller, &name, result).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_utc() {
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(when(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(when(1_700_000_000), "2023-11-14 22:13 UTC");
    }

    #[test]
    fn edits_send_only_what_changed() {
        let mut current = Map::new();
        current.insert("display_name".into(), Value::String("Helper".into()));
        current.insert("model".into(), Value::String("small".into()));
        current.insert("color".into(), Value::String("red".into()));
        current.insert("memory".into(), Value::Bool(true));
        let form: Vec<(String, String)> = [
            ("field.display_name", "Helper"),
            ("field.model", "large"),
            ("field.memory", "x"),
            ("remove", "color"),
            ("new_key", "persona"),
            ("new_value", "kind"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let out = changes(&current, &form).unwrap();
        assert_eq!(
            Value::Object(out),
            serde_json::json!({"model": "large", "color": null, "persona": "kind"})
        );
        let clash = [("new_key".to_string(), "model".to_string())];
        assert!(changes(&current, &clash).is_err());
    }
}
