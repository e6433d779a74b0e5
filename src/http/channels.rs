//! `/api/channels`: bridge channels, each owned by a user and bound to one
//! agent they manage. Creating one answers with its channel-bot token.

use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::agents::{decide, load};
use super::secrets::own_data;
use crate::domain::audit::AuditEvent;
use crate::domain::channels::{secret_refs, Channel};
use crate::domain::DomainError;
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Caller};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/channels", get(list).post(create))
        .route("/api/channels/{id}/toggle", post(toggle))
        .route("/api/channels/{id}", delete(remove))
}

fn view(c: &Channel) -> Value {
    json!({
        "id": c.id,
        "agent_name": c.agent_name,
        "type": c.kind,
        "config": c.config,
        "enabled": c.enabled,
        "created_at": c.created_at,
        "conversation_id": c.conversation,
    })
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<Value>>> {
    Ok(Json(
        list_channels(&state, &caller)?.iter().map(view).collect(),
    ))
}

/// The caller's own channels (private data: nobody else's, admins' neither).
pub(crate) fn list_channels(state: &AppState, caller: &Caller) -> ApiResult<Vec<Channel>> {
    own_data(state, caller, "data:read")?;
    Ok(state.channels.list(&caller.user.id)?)
}

#[derive(Deserialize)]
struct CreateBody {
    agent_name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    config: Value,
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateBody>,
) -> ApiResult<Json<Value>> {
    let (channel, token) =
        create_channel(&state, &caller, &body.agent_name, &body.kind, body.config).await?;
    let mut out = view(&channel);
    out["status"] = json!("added");
    out["token"] = json!(token);
    Ok(Json(out))
}

/// Whether the caller may add a channel (one of their own records) to `agent`.
pub(crate) fn authorize_channel(state: &AppState, caller: &Caller, agent: &str) -> ApiResult<()> {
    own_data(state, caller, "data:write")?;
    let loaded = load(state, agent)?;
    decide(state, caller, "agent:channel", &loaded, 0)
}

/// Add a channel of type `kind` to `agent`, its config naming only the
/// caller's own secrets: the channel and its bot token (to be shown once).
pub(crate) async fn create_channel(
    state: &AppState,
    caller: &Caller,
    agent: &str,
    kind: &str,
    config: Value,
) -> ApiResult<(Channel, String)> {
    authorize_channel(state, caller, agent)?;
    for name in secret_refs(&config) {
        if state.secrets.get(&caller.user.id, &name)?.is_none() {
            return Err(ApiError::BadRequest(format!(
                "config names a secret you do not have: {name}"
            )));
        }
    }
    let channel = state
        .channels
        .create(&state.chat, &caller.user.id, agent, kind, config)
        .await?;
    let token = state.authz.mint_channel_bot(&caller.user.id, &channel.id)?;
    let event = AuditEvent::new(Some(&caller.user.id), "channel.create", &channel.id)
        .detail(json!({ "agent": channel.agent_name, "type": channel.kind }));
    event.append(&state.store).await?;
    Ok((channel, token))
}

async fn toggle(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let channel = toggle_channel(&state, &caller, &id).await?;
    Ok(Json(
        json!({ "status": "toggled", "enabled": channel.enabled }),
    ))
}

/// Enable or disable one of the caller's channels (disabled, its bot's
/// token stops working).
pub(crate) async fn toggle_channel(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<Channel> {
    own_data(state, caller, "data:write")?;
    Ok(state.channels.toggle(&caller.user.id, id).await?)
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    delete_channel(&state, &caller, &id).await?;
    Ok(Json(json!({ "status": "deleted", "id": id })))
}

pub(crate) async fn delete_channel(state: &AppState, caller: &Caller, id: &str) -> ApiResult<()> {
    own_data(state, caller, "data:write")?;
    if state.channels.get(&caller.user.id, id)?.is_none() {
        return Err(DomainError::NotFound("channel").into());
    }
    state.channels.delete(&caller.user.id, id).await?;
    Ok(())
}
