//! The console's memory: my own chunks by collection, search, one chunk read
//! and deleted, a new note saved, and which agents may read my memory.
//!
//! Every read and change goes through the same functions as
//! `/api/user-memory` (`crate::http::memory`), so the private-data policy
//! decides here exactly as there: my own data at my own session, nobody
//! else's, admins included.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Form, Router};
use serde::Deserialize;
use serde_json::Value;

use super::{error_page, page, see_other, when, Chrome, Done, Person};
use crate::domain::memory::{Chunk, DEFAULT_COLLECTION};
use crate::error::ApiResult;
use crate::http::csrf::CsrfToken;
use crate::http::memory as api;
use crate::state::{AgentState, AppState, Caller};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/memory", get(show))
        .route(
            "/console/memory/save",
            get(|| async { see_other("/console/memory") }).post(save),
        )
        .route(
            "/console/memory/grants",
            get(|| async { see_other("/console/memory#grants") }).post(set_grant),
        )
        .route("/console/memory/chunk/{hash}", get(chunk))
        .route(
            "/console/memory/chunk/{hash}/delete",
            get(confirm_delete).post(delete),
        )
}

const NOTICES: &[(&str, &str)] = &[
    ("deleted", "The chunk was deleted."),
    ("saved", "The note was saved."),
    ("allowed", "That agent may now read your memory."),
    ("withdrawn", "That agent may no longer read your memory."),
];

/// How many chunks a listing shows, and how many characters of each.
const LISTED: usize = 100;
const EXCERPT_CHARS: usize = 240;

/// The agents a person could mean on these pages: those they own or that
/// are shared with them (for an admin too: every agent on the host would
/// be noise), and any of `extra` that still exist, each loaded once.
pub(super) fn my_agents(
    state: &AppState,
    caller: &Caller,
    extra: &[String],
) -> ApiResult<Vec<Arc<AgentState>>> {
    let mut names: Vec<String> = state
        .agents
        .candidates_for(&caller.user.id)?
        .iter()
        .cloned()
        .collect();
    names.extend(extra.iter().cloned());
    names.sort();
    names.dedup();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if let Some(loaded) = state.agent(&name)? {
            out.push(loaded);
        }
    }
    Ok(out)
}

pub(super) fn display_name(agent: &AgentState) -> String {
    agent
        .agent
        .fields
        .get("display_name")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(&agent.agent.name)
        .to_owned()
}

pub struct ChunkRow {
    pub hash: String,
    pub title: String,
    pub collection: String,
    pub excerpt: String,
    pub created: String,
    pub score: Option<String>,
}

impl ChunkRow {
    fn new(chunk: Chunk, score: Option<f64>) -> Self {
        let mut excerpt: String = chunk.content.chars().take(EXCERPT_CHARS).collect();
        if chunk.content.chars().count() > EXCERPT_CHARS {
            excerpt.push('…');
        }
        Self {
            hash: chunk.hash,
            title: chunk.title,
            collection: chunk.collection,
            excerpt,
            created: when(chunk.created_at as i64),
            score: score.map(|s| format!("{s:.2}")),
        }
    }
}

pub struct CollectionRow {
    pub name: String,
    pub count: usize,
    /// `collection=<name>`, encoded for a link.
    pub query: String,
    pub current: bool,
}

pub struct GrantRow {
    pub name: String,
    pub display_name: String,
    pub allowed: bool,
    /// Whether the person may change it: withdraw a grant, or grant an
    /// agent they may see.
    pub can_change: bool,
}

/// A note being written, kept when saving it failed.
#[derive(Default)]
pub struct Draft {
    pub title: String,
    pub collection: String,
    pub content: String,
}

#[derive(Template)]
#[template(path = "memory.html")]
struct MemoryPage {
    chrome: Chrome,
    collections: Vec<CollectionRow>,
    total: usize,
    collection: Option<String>,
    query: String,
    chunks: Vec<ChunkRow>,
    searching: bool,
    grants: Vec<GrantRow>,
    /// Admins may grant agents beyond their own by name.
    by_name: bool,
    draft: Draft,
}

#[derive(Deserialize, Default)]
struct ShowQuery {
    collection: Option<String>,
    q: Option<String>,
    #[serde(flatten)]
    done: Done,
}

async fn show(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Query(query): Query<ShowQuery>,
) -> Response {
    let chrome = Chrome::new(&csrf, Some(&caller), "memory").notice(query.done.notice(NOTICES));
    let collection = query.collection.filter(|c| !c.is_empty());
    let q = query.q.unwrap_or_default();
    match render(&state, &caller, chrome, collection, q, Draft::default()) {
        Ok(page) => page,
        Err(e) => error_page(&csrf, Some(&caller), e, "/console").await,
    }
}

/// The memory page, or the error that kept it from being read.
fn render(
    state: &AppState,
    caller: &Caller,
    chrome: Chrome,
    collection: Option<String>,
    q: String,
    draft: Draft,
) -> ApiResult<Response> {
    let status = if chrome.error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let counts = api::own_collections(state, caller)?;
    let total = counts.values().sum();
    let collections = counts
        .into_iter()
        .map(|(name, count)| CollectionRow {
            query: serde_urlencoded::to_string([("collection", name.as_str())]).unwrap_or_default(),
            current: collection.as_deref() == Some(name.as_str()),
            name,
            count,
        })
        .collect();
    let searching = !q.trim().is_empty();
    let chunks = if searching {
        api::search_own(state, caller, &q, Some(LISTED))?
            .into_iter()
            .map(|(c, s)| ChunkRow::new(c, Some(s)))
            .collect()
    } else {
        api::browse_own(state, caller, collection.as_deref(), Some(LISTED))?
            .into_iter()
            .map(|c| ChunkRow::new(c, None))
            .collect()
    };
    let granted = api::own_grants(state, caller)?;
    let mut grants = Vec::new();
    for agent in my_agents(state, caller, &granted)? {
        let allowed = granted.contains(&agent.agent.name);
        // A grant of mine can always be withdrawn; an agent I cannot see is
        // named only if it holds one.
        let can_change = allowed || api::may_grant_memory(state, caller, &agent)?;
        if can_change {
            grants.push(GrantRow {
                name: agent.agent.name.clone(),
                display_name: display_name(&agent),
                allowed,
                can_change,
            });
        }
    }
    let by_name = caller.user.is_admin;
    Ok(page(
        status,
        &MemoryPage {
            chrome,
            collections,
            total,
            collection,
            query: q,
            chunks,
            searching,
            grants,
            by_name,
            draft,
        },
    ))
}

#[derive(Deserialize)]
struct SaveForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    collection: String,
    #[serde(default)]
    content: String,
}

async fn save(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Form(form): Form<SaveForm>,
) -> Response {
    let collection = match form.collection.trim() {
        "" => DEFAULT_COLLECTION,
        c => c,
    };
    let saved = api::save_own(
        &state,
        &caller,
        Some(collection),
        Some(form.title.as_str()),
        Some(form.content.as_str()),
        None,
    )
    .await;
    match saved {
        Ok(chunk) => see_other(&format!("/console/memory/chunk/{}?ok=saved", chunk.hash)),
        Err(e) => {
            let (status, message) = super::explain(e).await;
            if status != StatusCode::BAD_REQUEST {
                return words(&csrf, &caller, status, message);
            }
            // Keep what was typed, so a note too long is not lost with it.
            let chrome = Chrome::new(&csrf, Some(&caller), "memory").error(Some(message));
            let draft = Draft {
                title: form.title,
                collection: form.collection,
                content: form.content,
            };
            match render(&state, &caller, chrome, None, String::new(), draft) {
                Ok(page) => page,
                Err(e) => error_page(&csrf, Some(&caller), e, "/console/memory").await,
            }
        }
    }
}

/// The message page for an error already put in words.
fn words(csrf: &CsrfToken, caller: &Caller, status: StatusCode, text: String) -> Response {
    let heading = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        s if s.is_server_error() => "Something went wrong",
        _ => "That did not work",
    };
    page(
        status,
        &super::MessagePage {
            chrome: Chrome::new(csrf, Some(caller), "memory"),
            heading: heading.into(),
            text,
            back: "/console/memory".into(),
        },
    )
}

#[derive(Template)]
#[template(path = "memory_chunk.html")]
struct ChunkPage {
    chrome: Chrome,
    chunk: Chunk,
    created: String,
    metadata: Option<String>,
    /// The confirmation step of deleting it.
    confirm: bool,
}

const CHUNK_NOTICES: &[(&str, &str)] = &[("saved", "The note was saved.")];

async fn chunk_page(
    state: &AppState,
    csrf: &CsrfToken,
    caller: &Caller,
    hash: &str,
    confirm: bool,
    done: Done,
) -> Response {
    match api::read_own_chunk(state, caller, hash) {
        Ok(chunk) => {
            let metadata = match &chunk.metadata {
                Value::Object(m) if m.is_empty() => None,
                Value::Null => None,
                other => serde_json::to_string_pretty(other).ok(),
            };
            let chrome =
                Chrome::new(csrf, Some(caller), "memory").notice(done.notice(CHUNK_NOTICES));
            page(
                StatusCode::OK,
                &ChunkPage {
                    chrome,
                    created: when(chunk.created_at as i64),
                    chunk,
                    metadata,
                    confirm,
                },
            )
        }
        Err(e) => error_page(csrf, Some(caller), e, "/console/memory").await,
    }
}

async fn chunk(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(hash): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    chunk_page(&state, &csrf, &caller, &hash, false, done).await
}

/// Deleting asks first, on a page of its own, so it works without script.
async fn confirm_delete(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(hash): Path<String>,
) -> Response {
    chunk_page(&state, &csrf, &caller, &hash, true, Done::default()).await
}

async fn delete(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(hash): Path<String>,
) -> Response {
    match api::delete_own_chunk(&state, &caller, &hash).await {
        Ok(()) => see_other("/console/memory?ok=deleted"),
        Err(e) => error_page(&csrf, Some(&caller), e, "/console/memory").await,
    }
}

#[derive(Deserialize)]
struct GrantForm {
    agent: String,
    /// "true" to allow, anything else to withdraw.
    #[serde(default)]
    allowed: String,
}

async fn set_grant(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Form(form): Form<GrantForm>,
) -> Response {
    let allowed = form.allowed == "true";
    let agent = form.agent.trim();
    match api::set_memory_grant(&state, &caller, agent, allowed).await {
        Ok(()) if allowed => see_other("/console/memory?ok=allowed#grants"),
        Ok(()) => see_other("/console/memory?ok=withdrawn#grants"),
        Err(e) => error_page(&csrf, Some(&caller), e, "/console/memory#grants").await,
    }
}

#[cfg(test)]
mod tests {
    use super::when;

    #[test]
    fn moments_read_as_utc_dates() {
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(when(951_825_600), "2000-02-29 12:00 UTC");
        assert_eq!(when(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(when(-60), "1969-12-31 23:59 UTC");
    }
}
