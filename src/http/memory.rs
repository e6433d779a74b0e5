//! `/api/user-memory`: each user's own memory, in the legacy shapes. Only the
//! owner reads or changes it; an agent reads it only with its runtime token
//! and only for users who granted that agent access.

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
use crate::state::{AnyCaller, AppState, Caller};

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

async fn search(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<SearchQuery>,
) -> ApiResult<Json<Value>> {
    own_data(&state, &caller, "data:read")?;
    let q = query.q.unwrap_or_default();
    let limit = query.limit.unwrap_or(20).clamp(1, MAX_RESULTS);
    let results: Vec<Value> = state
        .memory
        .search(&caller.user.id, &q, limit)?
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

async fn browse(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<BrowseQuery>,
) -> ApiResult<Json<Value>> {
    own_data(&state, &caller, "data:read")?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let chunks = state
        .memory
        .browse(&caller.user.id, query.collection.as_deref(), limit)?;
    Ok(Json(json!({ "chunks": chunks })))
}

#[derive(Deserialize)]
struct SaveBody {
    content: Option<String>,
    title: Option<String>,
    collection: Option<String>,
    metadata: Option<Value>,
}

async fn save(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<SaveBody>,
) -> ApiResult<Json<Value>> {
    own_data(&state, &caller, "data:write")?;
    let content = body
        .content
        .ok_or_else(|| ApiError::BadRequest("content is required".into()))?;
    let chunk = state
        .memory
        .save(
            &caller.user.id,
            body.collection.as_deref(),
            body.title.as_deref(),
            &content,
            body.metadata.unwrap_or_else(|| json!({})),
            now_f64(),
        )
        .await?;
    Ok(Json(json!({ "ok": true, "hash": chunk.hash })))
}

async fn chunk(
    State(state): State<AppState>,
    caller: Caller,
    Path(hash): Path<String>,
) -> ApiResult<Json<Chunk>> {
    own_data(&state, &caller, "data:read")?;
    Ok(Json(
        state
            .memory
            .get(&caller.user.id, &hash)?
            .ok_or(DomainError::NotFound("chunk"))?,
    ))
}

async fn delete_chunk(
    State(state): State<AppState>,
    caller: Caller,
    Path(hash): Path<String>,
) -> ApiResult<Json<Value>> {
    own_data(&state, &caller, "data:write")?;
    state.memory.delete(&caller.user.id, &hash).await?;
    Ok(Json(json!({ "ok": true })))
}

async fn collections(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    own_data(&state, &caller, "data:read")?;
    let list: Vec<Value> = state
        .memory
        .collections(&caller.user.id)?
        .into_iter()
        .map(|(name, count)| json!({ "name": name, "count": count }))
        .collect();
    Ok(Json(json!({ "collections": list })))
}

async fn grants(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    own_data(&state, &caller, "data:read")?;
    Ok(Json(
        json!({ "grants": state.memory.grants(&caller.user.id)? }),
    ))
}

#[derive(Deserialize)]
struct GrantBody {
    allowed: bool,
}

/// Let an agent the caller can see read the caller's memory, or stop it.
async fn set_memory_grant(
    state: &AppState,
    caller: &Caller,
    agent: &str,
    allowed: bool,
) -> ApiResult<()> {
    own_data(state, caller, "data:write")?;
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
