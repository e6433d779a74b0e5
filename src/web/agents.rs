//! The console's agents: the ones I own and those shared with me, and
//! creating one.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::agent::PageForm;
use super::{error_page, page, see_other, Chrome, Done, Person};
use crate::authz::policy::RequestFacts;
use crate::http::csrf::CsrfToken;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/console", get(list)).route(
        "/console/agents",
        get(|| async { see_other("/console") }).post(create),
    )
}

const NOTICES: &[(&str, &str)] = &[
    ("deleted", "The agent was deleted."),
    ("left", "You gave up your access to the agent."),
    ("transferred", "The agent was transferred."),
];

pub struct Row {
    pub name: String,
    pub display_name: String,
    pub owner: String,
    pub level: &'static str,
    pub archived: bool,
    /// The level everyone on this host holds through a share with
    /// everyone, when it is shared so.
    pub everyone: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    chrome: Chrome,
    rows: Vec<Row>,
    filter: String,
    can_create: bool,
    /// Admins create agents for other people (`agent:create_for`).
    can_create_for: bool,
}

#[derive(Deserialize, Default)]
struct ListQuery {
    q: Option<String>,
    #[serde(flatten)]
    done: Done,
}

async fn list(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Query(query): Query<ListQuery>,
) -> Response {
    let filter = query.q.clone().unwrap_or_default();
    match rows(&state, &caller, &filter) {
        Ok(rows) => {
            let can_create = state
                .authorize(&caller, RequestFacts::new("agent:create"))
                .is_ok();
            let can_create_for = state
                .authorize(&caller, RequestFacts::new("agent:create_for"))
                .is_ok();
            let chrome =
                Chrome::new(&csrf, Some(&caller), "agents").notice(query.done.notice(NOTICES));
            page(
                StatusCode::OK,
                &AgentsPage {
                    chrome,
                    rows,
                    filter,
                    can_create,
                    can_create_for,
                },
            )
        }
        Err(e) => error_page(&csrf, Some(&caller), e, "/").await,
    }
}

/// The agents the caller may read whose name or display name contains
/// `filter`, with the caller's level, sorted by name.
fn rows(
    state: &AppState,
    caller: &crate::state::Caller,
    filter: &str,
) -> crate::error::ApiResult<Vec<Row>> {
    let needle = filter.trim().to_lowercase();
    let mut rows = Vec::new();
    for loaded in crate::http::agents::readable(state, caller)? {
        let agent = &loaded.agent;
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
        {
            continue;
        }
        let level = crate::http::agents::access(state, caller, &loaded)?;
        rows.push(Row {
            name: agent.name.clone(),
            display_name,
            owner: loaded
                .owner_name
                .clone()
                .unwrap_or_else(|| "(deleted user)".into()),
            level: level.map_or("none", |l| l.as_str()),
            archived: agent.archived,
            everyone: loaded
                .grants
                .iter()
                .filter(|g| g.grantee == crate::domain::groups::EVERYONE && loaded.live_grant(g))
                .map(|g| g.level)
                .max()
                .map(|l| l.as_str()),
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

#[derive(Deserialize)]
struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    display_name: String,
    /// For admins: whose agent it is (empty: mine).
    #[serde(default)]
    owner: String,
}

async fn create(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    PageForm(form): PageForm<CreateForm>,
) -> Response {
    let mut fields = Map::new();
    if !form.display_name.trim().is_empty() {
        fields.insert(
            "display_name".into(),
            Value::String(form.display_name.trim().to_owned()),
        );
    }
    let owner = Some(form.owner.trim()).filter(|o| !o.is_empty());
    let name = form.name.trim();
    match crate::http::agents::create_agent(&state, &caller, name, owner, fields).await {
        Ok(loaded) => see_other(&format!("/console/agents/{}?ok=created", loaded.agent.name)),
        Err(e) => error_page(&csrf, Some(&caller), e, "/console").await,
    }
}
