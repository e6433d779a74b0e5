//! `/api/user-memory`: each user's own memory, in the legacy shapes. Only the
//! owner reads or changes it; an agent reads it only with its runtime token
//! and only for users who granted that agent access.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use biscuit_auth::builder::string;
use serde::Deserialize;
use serde_json::{json, Value};

use super::agents::{decide, load};
use super::secrets::own_data;
use crate::authz::policy::RequestFacts;
use crate::authz::AuthError;
use crate::domain::chat::now_f64;
use crate::domain::memory::Chunk;
use crate::domain::DomainError;
use crate::error::{ApiError, ApiResult};
use crate::state::{AgentState, AnyCaller, AppState, Caller};

const MAX_RESULTS: usize = 200;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/user-memory/stats", get(stats))
        .route("/api/user-memory/settings", get(settings).put(set_settings))
        .route("/api/user-memory/search", get(search))
        .route("/api/user-memory/browse", get(browse))
        .route("/api/user-memory/save", post(save))
        .route(
            "/api/user-memory/chunk/{hash}",
            get(chunk).delete(delete_chunk),
        )
        .route("/api/user-memory/collections", get(collections))
        .route("/api/user-memory/grants", get(grants))
        .route("/api/user-memory/grants/{agent}", put(set_grant))
        .route("/api/user-memory/agent-search", get(agent_search))
        .route("/api/agents/{name}/permissions", put(agent_permissions))
}

fn scored(chunk: Chunk, score: f64) -> Value {
    let mut v = json!(chunk);
    v["score"] = json!(score);
    v
}

async fn stats(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    own_data(&state, &caller, "data:read")?;
    let collections = state.memory.collections(&caller.user.id)?;
    let total: usize = collections.values().sum();
    Ok(Json(
        json!({ "total_chunks": total, "collections": collections }),
    ))
}

async fn settings(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    own_data(&state, &caller, "data:read")?;
    Ok(Json(state.memory.settings(&caller.user.id)?))
}

async fn set_settings(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    own_data(&state, &caller, "data:write")?;
    state.memory.set_settings(&caller.user.id, &body).await?;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
struct SearchQuery {
    q: Option<String>,
    limit: Option<usize>,
}

/// The caller's own chunks best matching `q`, with their scores.
pub(crate) fn search_own(
    state: &AppState,
    caller: &Caller,
    q: &str,
    limit: Option<usize>,
) -> ApiResult<Vec<(Chunk, f64)>> {
    own_data(state, caller, "data:read")?;
    let limit = limit.unwrap_or(20).clamp(1, MAX_RESULTS);
    Ok(state.memory.search(&caller.user.id, q, limit)?)
}

async fn search(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<SearchQuery>,
) -> ApiResult<Json<Value>> {
    let q = query.q.unwrap_or_default();
    let results: Vec<Value> = search_own(&state, &caller, &q, query.limit)?
        .into_iter()
        .map(|(c, s)| scored(c, s))
        .collect();
    Ok(Json(json!({ "results": results, "query": q })))
}

#[derive(Deserialize)]
struct BrowseQuery {
    collection: Option<String>,
    limit: Option<usize>,
}

/// The caller's own chunks, in one collection or all, newest first.
pub(crate) fn browse_own(
    state: &AppState,
    caller: &Caller,
    collection: Option<&str>,
    limit: Option<usize>,
) -> ApiResult<Vec<Chunk>> {
    own_data(state, caller, "data:read")?;
    let limit = limit.unwrap_or(100).clamp(1, 1000);
    Ok(state.memory.browse(&caller.user.id, collection, limit)?)
}

async fn browse(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BrowseQuery>,
) -> ApiResult<Json<Value>> {
    let chunks = browse_own(&state, &caller, query.collection.as_deref(), query.limit)?;
    Ok(Json(json!({ "chunks": chunks })))
}

#[derive(Deserialize)]
struct SaveBody {
    content: Option<String>,
    title: Option<String>,
    collection: Option<String>,
    metadata: Option<Value>,
}

/// Save a chunk in the caller's own memory (`content` is required).
pub(crate) async fn save_own(
    state: &AppState,
    caller: &Caller,
    collection: Option<&str>,
    title: Option<&str>,
    content: Option<&str>,
    metadata: Option<Value>,
) -> ApiResult<Chunk> {
    own_data(state, caller, "data:write")?;
    let content = content.ok_or_else(|| ApiError::BadRequest("content is required".into()))?;
    Ok(state
        .memory
        .save(
            &caller.user.id,
            collection,
            title,
            content,
            metadata.unwrap_or_else(|| json!({})),
            now_f64(),
        )
        .await?)
}

async fn save(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<SaveBody>,
) -> ApiResult<Json<Value>> {
    let chunk = save_own(
        &state,
        &caller,
        body.collection.as_deref(),
        body.title.as_deref(),
        body.content.as_deref(),
        body.metadata,
    )
    .await?;
    Ok(Json(json!({ "ok": true, "hash": chunk.hash })))
}

/// One of the caller's own chunks; someone else's is simply not found (the
/// lookup is under the caller's own id).
pub(crate) fn read_own_chunk(state: &AppState, caller: &Caller, hash: &str) -> ApiResult<Chunk> {
    own_data(state, caller, "data:read")?;
    Ok(state
        .memory
        .get(&caller.user.id, hash)?
        .ok_or(DomainError::NotFound("chunk"))?)
}

async fn chunk(
    State(state): State<AppState>,
    caller: Caller,
    Path(hash): Path<String>,
) -> ApiResult<Json<Chunk>> {
    Ok(Json(read_own_chunk(&state, &caller, &hash)?))
}

/// Delete one of the caller's own chunks.
pub(crate) async fn delete_own_chunk(
    state: &AppState,
    caller: &Caller,
    hash: &str,
) -> ApiResult<()> {
    own_data(state, caller, "data:write")?;
    state.memory.delete(&caller.user.id, hash).await?;
    Ok(())
}

async fn delete_chunk(
    State(state): State<AppState>,
    caller: Caller,
    Path(hash): Path<String>,
) -> ApiResult<Json<Value>> {
    delete_own_chunk(&state, &caller, &hash).await?;
    Ok(Json(json!({ "ok": true })))
}

/// The caller's own collections with their chunk counts.
pub(crate) fn own_collections(
    state: &AppState,
    caller: &Caller,
) -> ApiResult<BTreeMap<String, usize>> {
    own_data(state, caller, "data:read")?;
    Ok(state.memory.collections(&caller.user.id)?)
}

async fn collections(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let list: Vec<Value> = own_collections(&state, &caller)?
        .into_iter()
        .map(|(name, count)| json!({ "name": name, "count": count }))
        .collect();
    Ok(Json(json!({ "collections": list })))
}

/// The agents the caller lets read their memory.
pub(crate) fn own_grants(state: &AppState, caller: &Caller) -> ApiResult<Vec<String>> {
    own_data(state, caller, "data:read")?;
    Ok(state.memory.grants(&caller.user.id)?)
}

async fn grants(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "grants": own_grants(&state, &caller)? })))
}

#[derive(Deserialize)]
struct GrantBody {
    allowed: bool,
}

/// Whether [`set_memory_grant`] would let the caller grant the agent (they
/// may see it); only limits and faults are errors.
pub(crate) fn may_grant_memory(
    state: &AppState,
    caller: &Caller,
    agent: &AgentState,
) -> ApiResult<bool> {
    match state.authorize(
        caller,
        AppState::agent_request("agent:read", agent, &caller.user.id, 0),
    ) {
        Ok(()) => Ok(true),
        Err(AuthError::Denied(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Let an agent the caller can see read the caller's memory, or stop it.
pub(crate) async fn set_memory_grant(
    state: &AppState,
    caller: &Caller,
    agent: &str,
    allowed: bool,
) -> ApiResult<()> {
    own_data(state, caller, "data:write")?;
    // Withdrawing a grant one holds needs no sight of the agent: someone who
    // lost access to it (unshared) must still be able to stop it reading
    // their memory. It touches only the caller's own records and reveals
    // nothing (they list their grants anyway).
    if !allowed && state.memory.granted(&caller.user.id, agent)? {
        state
            .memory
            .set_grant(&caller.user.id, agent, false)
            .await?;
        return Ok(());
    }
    let loaded = load(state, agent)?;
    decide(state, caller, "agent:read", &loaded, 0)?;
    state
        .memory
        .set_grant(&caller.user.id, agent, allowed)
        .await?;
    Ok(())
}

async fn set_grant(
    State(state): State<AppState>,
    caller: Caller,
    Path(agent): Path<String>,
    Json(body): Json<GrantBody>,
) -> ApiResult<Json<Value>> {
    set_memory_grant(&state, &caller, &agent, body.allowed).await?;
    Ok(Json(
        json!({ "ok": true, "agent": agent, "allowed": body.allowed }),
    ))
}

#[derive(Deserialize)]
struct PermissionsBody {
    can_read_user_memory: bool,
}

/// The legacy per-agent flag, now the caller's own grant to that agent.
async fn agent_permissions(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<PermissionsBody>,
) -> ApiResult<Json<Value>> {
    set_memory_grant(&state, &caller, &name, body.can_read_user_memory).await?;
    Ok(Json(json!({
        "status": "updated",
        "name": name,
        "permissions": { "can_read_user_memory": body.can_read_user_memory },
    })))
}

#[derive(Deserialize)]
struct AgentSearchQuery {
    user: Option<String>,
    q: Option<String>,
    limit: Option<usize>,
}

/// An agent runtime searching the memory of a user who granted it.
async fn agent_search(
    State(state): State<AppState>,
    caller: AnyCaller,
    Query(query): Query<AgentSearchQuery>,
) -> ApiResult<Json<Value>> {
    let AnyCaller::Agent(runtime) = caller else {
        return Err(AuthError::Denied(
            "only an agent runtime token searches on a user's behalf".into(),
        )
        .into());
    };
    let username = query
        .user
        .ok_or_else(|| ApiError::BadRequest("user is required".into()))?;
    let denied = || {
        ApiError::Auth(AuthError::Denied(
            "Agent does not have user memory access".into(),
        ))
    };
    // An unknown user and one who did not grant look the same.
    let Some(user) = state.accounts.find(&username)? else {
        return Err(denied());
    };
    let mut request =
        RequestFacts::new("memory:agent_search").fact("data_owner", [string(&user.id)]);
    if state.memory.granted(&user.id, &runtime.agent)? {
        request = request.fact("memory_granted", [string(&user.id), string(&runtime.agent)]);
    }
    state
        .authorize_agent(&runtime, request)
        .map_err(|e| match e {
            AuthError::Denied(_) => denied(),
            other => other.into(),
        })?;
    let q = query.q.unwrap_or_default();
    let limit = query.limit.unwrap_or(20).clamp(1, MAX_RESULTS);
    let results: Vec<Value> = state
        .memory
        .search(&user.id, &q, limit)?
        .into_iter()
        .map(|(c, s)| scored(c, s))
        .collect();
    Ok(Json(
        json!({ "results": results, "query": q, "agent": runtime.agent }),
    ))
}
