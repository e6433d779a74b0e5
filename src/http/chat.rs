//! `/api/chat`: conversations in the legacy shapes. A conversation is its
//! starter's private data; a channel bot reaches only its channel's
//! conversation, an agent runtime only conversations it takes part in.
//! Anyone else is told the conversation does not exist.

use axum::extract::{Path, Query, State};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use biscuit_auth::builder::string;
use serde::Deserialize;
use serde_json::{json, Value};

use super::agents::{decide, load};
use super::secrets::own_data;
use crate::authz::policy::RequestFacts;
use crate::authz::AuthError;
use crate::domain::chat::Conversation;
use crate::domain::DomainError;
use crate::error::{ApiError, ApiResult};
use crate::state::{AnyCaller, AppState, Caller, Via};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/chat/channels", get(list).post(start))
        .route("/api/chat/messages", get(messages).post(post_message))
        .route("/api/chat/messages/{id}", patch(edit).delete(remove))
        .route("/api/chat/unread", get(unread))
        .route("/api/chat/mark-read", post(mark_read))
}

fn not_found() -> ApiError {
    ApiError::Domain(DomainError::NotFound("conversation"))
}

/// Who writes, as recorded on a message.
struct Author {
    id: String,
    kind: &'static str,
}

/// Find the conversation and decide whether `caller` may read (or post in)
/// it. Every refusal is a 404: a conversation one may not read is one that
/// does not exist, as far as the caller can tell.
fn access(
    state: &AppState,
    caller: &AnyCaller,
    id: &str,
    write: bool,
) -> ApiResult<(Conversation, Author)> {
    let owner = state.chat.owner_of(id)?.ok_or_else(not_found)?;
    let conv = state.chat.get(&owner, id)?.ok_or_else(not_found)?;
    let decision = match caller {
        AnyCaller::Person(person) => match &person.via {
            Via::ChannelBot(channel) => {
                let channel_of = id.strip_prefix("chan-").unwrap_or("");
                let op = if write { "chat:post" } else { "chat:read" };
                let request = RequestFacts::new(op).fact("resource_channel", [string(channel_of)]);
                let author = Author {
                    id: format!("channel:{channel}"),
                    kind: "channel",
                };
                state.authorize(person, request).map(|_| author)
            }
            _ => {
                let op = if write { "data:write" } else { "data:read" };
                let request = RequestFacts::new(op).fact("data_owner", [string(&conv.created_by)]);
                let author = Author {
                    id: person.user.id.clone(),
                    kind: "user",
                };
                state.authorize(person, request).map(|_| author)
            }
        },
        AnyCaller::Agent(runtime) => {
            let op = if write {
                "chat:agent_post"
            } else {
                "chat:agent_read"
            };
            let mut request = RequestFacts::new(op);
            if conv.members.contains(&runtime.agent) {
                request = request.fact("conversation_member", [string(&runtime.agent)]);
            }
            let author = Author {
                id: runtime.agent.clone(),
                kind: "agent",
            };
            state.authorize_agent(runtime, request).map(|_| author)
        }
    };
    match decision {
        Ok(author) => Ok((conv, author)),
        Err(AuthError::Denied(_)) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    own_data(&state, &caller, "data:read")?;
    Ok(Json(
        json!({ "channels": state.chat.list(&caller.user.id)? }),
    ))
}

#[derive(Deserialize)]
struct StartBody {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    agent: Option<String>,
    agents: Option<Vec<String>>,
    description: Option<String>,
}

/// Whether the caller may start a conversation with `agent`: one of their
/// own private records, with an agent they may talk to.
pub(crate) fn authorize_talk(state: &AppState, caller: &Caller, agent: &str) -> ApiResult<()> {
    own_data(state, caller, "data:write")?;
    let loaded = load(state, agent)?;
    decide(state, caller, "agent:chat", &loaded, 0)
}

/// Start a conversation; talking with an agent needs `use` on it.
async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<StartBody>,
) -> ApiResult<Json<Value>> {
    own_data(&state, &caller, "data:write")?;
    let mut agents: Vec<String> = body.agents.unwrap_or_default();
    agents.extend(body.agent);
    agents.sort();
    agents.dedup();
    for agent in &agents {
        authorize_talk(&state, &caller, agent)?;
    }
    let kind = body.kind.unwrap_or_else(|| {
        if agents.len() == 1 {
            "dm".into()
        } else {
            "topic".into()
        }
    });
    let name = body.name.unwrap_or_else(|| agents.join(", "));
    let conv = state
        .chat
        .start(
            &caller.user.id,
            &name,
            &kind,
            agents,
            body.description.as_deref().unwrap_or(""),
        )
        .await?;
    Ok(Json(json!(conv)))
}

#[derive(Deserialize)]
struct MessagesQuery {
    channel_id: String,
    limit: Option<usize>,
}

async fn messages(
    State(state): State<AppState>,
    caller: AnyCaller,
    Query(q): Query<MessagesQuery>,
) -> ApiResult<Json<Value>> {
    let (conv, _) = access(&state, &caller, &q.channel_id, false)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(
        json!({ "messages": state.chat.messages(&conv.created_by, &conv.id, limit)? }),
    ))
}

#[derive(Deserialize)]
struct PostBody {
    channel_id: String,
    content: String,
}

async fn post_message(
    State(state): State<AppState>,
    caller: AnyCaller,
    Json(body): Json<PostBody>,
) -> ApiResult<Json<Value>> {
    let (conv, author) = access(&state, &caller, &body.channel_id, true)?;
    let message = state
        .chat
        .post(
            &conv.created_by,
            &conv.id,
            &author.id,
            author.kind,
            &body.content,
        )
        .await?;
    Ok(Json(json!(message)))
}

#[derive(Deserialize)]
struct EditBody {
    content: String,
}

/// Only a message's author edits or deletes it.
async fn amend(
    state: &AppState,
    caller: &AnyCaller,
    id: &str,
    content: Option<&str>,
) -> ApiResult<Value> {
    let (owner, message, read_as) = state
        .chat
        .find_message(id)?
        .ok_or(DomainError::NotFound("message"))?;
    let (_, author) = access(state, caller, &message.channel_id, true)?;
    if author.id != message.author_id {
        return Err(AuthError::Denied("not the author".into()).into());
    }
    Ok(json!(
        state.chat.amend(&owner, &message, read_as, content).await?
    ))
}

async fn edit(
    State(state): State<AppState>,
    caller: AnyCaller,
    Path(id): Path<String>,
    Json(body): Json<EditBody>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        amend(&state, &caller, &id, Some(&body.content)).await?,
    ))
}

async fn remove(
    State(state): State<AppState>,
    caller: AnyCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    amend(&state, &caller, &id, None).await?;
    Ok(Json(json!({ "status": "deleted" })))
}

async fn unread(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    own_data(&state, &caller, "data:read")?;
    Ok(Json(
        json!({ "unread": state.chat.unread(&caller.user.id)? }),
    ))
}

#[derive(Deserialize)]
struct MarkRead {
    channel_id: String,
    message_id: Option<String>,
}

async fn mark_read(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<MarkRead>,
) -> ApiResult<Json<Value>> {
    // Read positions are the person's own: not a bot's or a delegate's to move.
    own_data(&state, &caller, "data:write")?;
    let (conv, _) = access(
        &state,
        &AnyCaller::Person(caller.clone()),
        &body.channel_id,
        false,
    )?;
    let last = match body.message_id {
        Some(id) => id,
        None => match state.chat.messages(&conv.created_by, &conv.id, 1)?.pop() {
            Some(m) => m.id,
            None => return Ok(Json(json!({ "status": "marked" }))),
        },
    };
    state
        .chat
        .mark_read(&caller.user.id, &conv.id, &last)
        .await?;
    Ok(Json(json!({ "status": "marked" })))
}
