//! The console's secrets: my own, listed masked, added, changed, bound to
//! agents I manage, deleted, and one value revealed on request.
//!
//! A value reaches a page only in the answer to the POST that asked for it
//! (never in a URL, never in a listing; every answer is `no-store`). Every
//! read and change goes through the same functions as `/api/secrets`
//! (`crate::http::secrets`), so the private-data policy and the binding
//! check (`manage` on the agent) decide here exactly as there.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Form, Router};
use serde::Deserialize;

use super::memory::{display_name, my_agents};
use super::when;
use super::{error_page, explain, page, see_other, Chrome, Done, Person};
use crate::domain::secrets::{Secret, SecretInput};
use crate::domain::DomainError;
use crate::error::ApiResult;
use crate::http::csrf::CsrfToken;
use crate::http::secrets as api;
use crate::state::{AppState, Caller};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/secrets", get(list).post(create))
        // A reload or a bookmark of where a form posted lands on the list.
        .route("/console/secrets/reveal", get(to_list).post(reveal))
        .route("/console/secrets/edit", get(edit))
        .route("/console/secrets/update", get(to_list).post(update))
        .route("/console/secrets/delete", get(confirm_delete).post(delete))
}

async fn to_list() -> Response {
    see_other("/console/secrets")
}

const NOTICES: &[(&str, &str)] = &[
    ("created", "The secret was added."),
    ("updated", "The secret was changed."),
    ("deleted", "The secret was deleted."),
];

pub struct SecretRow {
    pub name: String,
    pub category: String,
    pub description: String,
    pub agents: Vec<String>,
    pub updated: String,
    /// `name=<name>`, encoded for a link.
    pub query: String,
}

fn name_query(name: &str) -> String {
    serde_urlencoded::to_string([("name", name)]).unwrap_or_default()
}

impl SecretRow {
    fn new(secret: &Secret) -> Self {
        Self {
            name: secret.name.clone(),
            category: secret.category.clone(),
            description: secret.description.clone(),
            agents: secret.agents.clone(),
            updated: when(secret.updated_at),
            query: name_query(&secret.name),
        }
    }
}

/// An agent a secret may be bound to (the caller manages it).
pub struct Choice {
    pub name: String,
    pub display_name: String,
    pub checked: bool,
}

/// The agents the caller may bind secrets to, `bound` ones checked.
fn choices(state: &AppState, caller: &Caller, bound: &[String]) -> ApiResult<Vec<Choice>> {
    let mut out = Vec::new();
    for agent in my_agents(state, caller, bound)? {
        if api::may_bind(state, caller, &agent)? {
            out.push(Choice {
                name: agent.agent.name.clone(),
                display_name: display_name(&agent),
                checked: bound.contains(&agent.agent.name),
            });
        }
    }
    Ok(out)
}

/// A secret being added, kept when adding it failed (the value is not: it
/// is typed again rather than sent back).
#[derive(Default)]
pub struct Draft {
    pub name: String,
    pub category: String,
    pub description: String,
    pub others: String,
    /// The agents that were checked.
    pub checked: Vec<String>,
}

/// The one value this answer shows.
pub struct Revealed {
    pub name: String,
    pub value: String,
}

#[derive(Template)]
#[template(path = "secrets.html")]
struct SecretsPage {
    chrome: Chrome,
    rows: Vec<SecretRow>,
    choices: Vec<Choice>,
    /// Admins manage every agent: they may name agents beyond their own.
    by_name: bool,
    draft: Draft,
    /// The admins' free text field of agent names.
    others_value: String,
    revealed: Option<Revealed>,
}

/// The form fields of every secrets form (agents repeat, so the body is read
/// as pairs).
#[derive(Default)]
struct Fields {
    name: String,
    value: String,
    category: String,
    description: Option<String>,
    agents: Vec<String>,
    /// Agents named in the admins' free text field.
    others: String,
    /// The form sets bindings (present even when no box is checked).
    bindings: bool,
}

impl Fields {
    fn parse(pairs: Vec<(String, String)>) -> Self {
        let mut f = Fields::default();
        for (key, value) in pairs {
            match key.as_str() {
                "name" => f.name = value,
                "value" => f.value = value,
                "category" => f.category = value,
                "description" => f.description = Some(value),
                "agent" => f.agents.push(value),
                "others" => f.others = value,
                "bindings" => f.bindings = true,
                _ => {}
            }
        }
        f
    }

    /// The agents checked and named, each once.
    fn all_agents(&self) -> Vec<String> {
        let mut agents: Vec<String> = self
            .agents
            .iter()
            .map(|a| a.trim().to_owned())
            .chain(
                self.others
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .map(str::to_owned),
            )
            .filter(|a| !a.is_empty())
            .collect();
        agents.sort();
        agents.dedup();
        agents
    }

    fn category(&self) -> Option<String> {
        Some(self.category.trim().to_owned()).filter(|c| !c.is_empty())
    }
}

#[derive(Deserialize, Default)]
struct NameQuery {
    #[serde(default)]
    name: String,
}

fn render(
    state: &AppState,
    caller: &Caller,
    chrome: Chrome,
    status: StatusCode,
    draft: Draft,
    revealed: Option<Revealed>,
) -> ApiResult<Response> {
    let rows = api::list_own(state, caller)?
        .iter()
        .map(SecretRow::new)
        .collect();
    let mut choices = choices(state, caller, &[])?;
    for c in &mut choices {
        c.checked = draft.checked.contains(&c.name);
    }
    Ok(page(
        status,
        &SecretsPage {
            chrome,
            rows,
            choices,
            by_name: caller.user.is_admin,
            others_value: draft.others.clone(),
            draft,
            revealed,
        },
    ))
}

async fn list(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Query(done): Query<Done>,
) -> Response {
    let chrome = Chrome::new(&csrf, Some(&caller), "secrets").notice(done.notice(NOTICES));
    match render(
        &state,
        &caller,
        chrome,
        StatusCode::OK,
        Draft::default(),
        None,
    ) {
        Ok(page) => page,
        Err(e) => error_page(&csrf, Some(&caller), e, "/console").await,
    }
}

async fn create(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let fields = Fields::parse(pairs);
    let agents = fields.all_agents();
    let name = fields.name.trim().to_owned();
    let input = SecretInput {
        value: Some(fields.value.clone()),
        category: fields.category(),
        description: fields.description.clone().filter(|d| !d.trim().is_empty()),
        agents: Some(agents.clone()),
    };
    let error = match api::create_own(&state, &caller, Some(&name), input).await {
        Ok(_) => return see_other("/console/secrets?ok=created"),
        Err(e) => e,
    };
    let (status, message) = explain(error).await;
    let message = binding_refusal(&state, &caller, status, &agents).unwrap_or(message);
    let chrome = Chrome::new(&csrf, Some(&caller), "secrets")
        .error(Some(format!("The secret was not added: {message}.")));
    let draft = Draft {
        name,
        category: fields.category,
        description: fields.description.unwrap_or_default(),
        others: fields.others,
        checked: agents,
    };
    match render(&state, &caller, chrome, status, draft, None) {
        Ok(page) => page,
        Err(e) => error_page(&csrf, Some(&caller), e, "/console/secrets").await,
    }
}

/// Which agent a refused binding names, in words, when the refusal was the
/// binding check's (the API's check decided; this only says it better).
fn binding_refusal(
    state: &AppState,
    caller: &Caller,
    status: StatusCode,
    agents: &[String],
) -> Option<String> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::NOT_FOUND {
        return None;
    }
    for name in agents {
        match state.agent(name) {
            Ok(Some(agent)) => {
                if api::may_bind(state, caller, &agent).ok()? {
                    continue;
                }
                // Whether they may see it at all, as the agents pages ask.
                if crate::http::memory::may_grant_memory(state, caller, &agent).ok()? {
                    return Some(format!(
                        "you do not manage the agent “{name}”, and a secret can be bound \
                         only to agents you manage"
                    ));
                }
                return Some(format!("you have no agent named “{name}”"));
            }
            Ok(None) => return Some(format!("you have no agent named “{name}”")),
            Err(_) => return None,
        }
    }
    None
}

/// One value, in this answer only.
async fn reveal(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let fields = Fields::parse(pairs);
    let revealed = match api::reveal_own(&state, &caller, &fields.name) {
        Ok((secret, value)) => Revealed {
            name: secret.name,
            value,
        },
        Err(e) => return error_page(&csrf, Some(&caller), e, "/console/secrets").await,
    };
    let chrome = Chrome::new(&csrf, Some(&caller), "secrets");
    match render(
        &state,
        &caller,
        chrome,
        StatusCode::OK,
        Draft::default(),
        Some(revealed),
    ) {
        Ok(page) => page,
        Err(e) => error_page(&csrf, Some(&caller), e, "/console/secrets").await,
    }
}

/// One of the caller's own secrets, by name, as the listing reads it.
fn own_secret(state: &AppState, caller: &Caller, name: &str) -> ApiResult<Secret> {
    api::list_own(state, caller)?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| DomainError::NotFound("secret").into())
}

#[derive(Template)]
#[template(path = "secrets_edit.html")]
struct EditPage {
    chrome: Chrome,
    secret: SecretRow,
    choices: Vec<Choice>,
    /// Bound agents the caller no longer manages (or that are gone): they
    /// receive nothing, and saving the bindings drops them.
    stale: Vec<String>,
    by_name: bool,
    others_value: String,
}

fn render_edit(
    state: &AppState,
    caller: &Caller,
    chrome: Chrome,
    status: StatusCode,
    name: &str,
) -> ApiResult<Response> {
    let secret = own_secret(state, caller, name)?;
    let choices = choices(state, caller, &secret.agents)?;
    let stale = secret
        .agents
        .iter()
        .filter(|a| !choices.iter().any(|c| &c.name == *a))
        .cloned()
        .collect();
    Ok(page(
        status,
        &EditPage {
            chrome,
            secret: SecretRow::new(&secret),
            choices,
            stale,
            by_name: caller.user.is_admin,
            others_value: String::new(),
        },
    ))
}

async fn edit(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Query(query): Query<NameQuery>,
) -> Response {
    let chrome = Chrome::new(&csrf, Some(&caller), "secrets");
    match render_edit(&state, &caller, chrome, StatusCode::OK, &query.name) {
        Ok(page) => page,
        Err(e) => error_page(&csrf, Some(&caller), e, "/console/secrets").await,
    }
}

/// The value form (a new value, category, description) or the bindings form
/// of the edit page.
async fn update(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let fields = Fields::parse(pairs);
    let agents = fields.all_agents();
    let input = if fields.bindings {
        SecretInput {
            agents: Some(agents.clone()),
            ..SecretInput::default()
        }
    } else {
        SecretInput {
            // An empty value field keeps the current value.
            value: Some(fields.value.clone()).filter(|v| !v.is_empty()),
            category: fields.category(),
            description: fields.description.clone(),
            agents: None,
        }
    };
    let error = match api::update_own(&state, &caller, &fields.name, input).await {
        Ok(_) => return see_other("/console/secrets?ok=updated"),
        Err(e) => e,
    };
    let (status, message) = explain(error).await;
    let message = if fields.bindings {
        binding_refusal(&state, &caller, status, &agents).unwrap_or(message)
    } else {
        message
    };
    // A secret that is not (or no longer) mine ends on the error page below.
    let chrome = Chrome::new(&csrf, Some(&caller), "secrets")
        .error(Some(format!("The secret was not changed: {message}.")));
    match render_edit(&state, &caller, chrome, status, &fields.name) {
        Ok(page) => page,
        Err(e) => error_page(&csrf, Some(&caller), e, "/console/secrets").await,
    }
}

#[derive(Template)]
#[template(path = "secrets_delete.html")]
struct DeletePage {
    chrome: Chrome,
    secret: SecretRow,
}

/// Deleting asks first, on a page of its own, so it works without script.
async fn confirm_delete(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Query(query): Query<NameQuery>,
) -> Response {
    match own_secret(&state, &caller, &query.name) {
        Ok(secret) => page(
            StatusCode::OK,
            &DeletePage {
                chrome: Chrome::new(&csrf, Some(&caller), "secrets"),
                secret: SecretRow::new(&secret),
            },
        ),
        Err(e) => error_page(&csrf, Some(&caller), e, "/console/secrets").await,
    }
}

async fn delete(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let fields = Fields::parse(pairs);
    match api::delete_own(&state, &caller, &fields.name).await {
        Ok(()) => see_other("/console/secrets?ok=deleted"),
        Err(e) => error_page(&csrf, Some(&caller), e, "/console/secrets").await,
    }
}
