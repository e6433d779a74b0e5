//! `/api/secrets`: each user's own secrets. Lists are masked; a value is shown
//! in plaintext only to its owner on an explicit request, and to the runtime
//! of an agent it is bound to while the owner still holds `manage` there.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use biscuit_auth::builder::string;
use serde::Deserialize;
use serde_json::{json, Value};

use super::agents::{decide, load};
use crate::authz::policy::RequestFacts;
use crate::authz::AuthError;
use crate::domain::audit::AuditEvent;
use crate::domain::secrets::{open, Secret, SecretInput};
use crate::domain::DomainError;
use crate::error::{ApiError, ApiResult};
use crate::state::{AgentCaller, AnyCaller, AppState, Caller};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/secrets", get(list).post(create))
        .route("/api/secrets/agent/{agent}", get(for_agent))
        .route(
            "/api/secrets/{name}",
            get(reveal).put(update).delete(remove),
        )
}

/// The owner's private-data check: only the owner, at their own session.
pub fn own_data(state: &AppState, caller: &Caller, operation: &str) -> ApiResult<()> {
    let request = RequestFacts::new(operation).fact("data_owner", [string(&caller.user.id)]);
    Ok(state.authorize(caller, request)?)
}

fn masked(s: &Secret) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "category": s.category,
        "description": s.description,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "agents": s.agents,
        "value": "***",
    })
}

/// Binding needs `manage` on every agent named.
fn check_bindings(
    state: &AppState,
    caller: &Caller,
    agents: Option<&Vec<String>>,
) -> ApiResult<()> {
    for agent in agents.into_iter().flatten() {
        let loaded = load(state, agent)?;
        decide(state, caller, "agent:bind", &loaded, 0)?;
    }
    Ok(())
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<Value>>> {
    own_data(&state, &caller, "data:read")?;
    Ok(Json(
        state
            .secrets
            .list(&caller.user.id)?
            .iter()
            .map(masked)
            .collect(),
    ))
}

#[derive(Deserialize)]
struct SecretBody {
    name: Option<String>,
    value: Option<String>,
    category: Option<String>,
    description: Option<String>,
    agents: Option<Vec<String>>,
}

impl SecretBody {
    fn input(self) -> SecretInput {
        SecretInput {
            value: self.value,
            category: self.category,
            description: self.description,
            agents: self.agents,
        }
    }
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<SecretBody>,
) -> ApiResult<Json<Value>> {
    own_data(&state, &caller, "data:write")?;
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::BadRequest("name is required".into()))?;
    if body.value.is_none() {
        return Err(ApiError::BadRequest("value is required".into()));
    }
    check_bindings(&state, &caller, body.agents.as_ref())?;
    let event = AuditEvent::new(Some(&caller.user.id), "secret.create", &name);
    let input = body.input();
    let secret = state
        .secrets
        .create(&state.data_keys, &caller.user.id, &name, input, event)
        .await?;
    Ok(Json(json!({ "id": secret.id, "status": "created" })))
}

async fn reveal(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    own_data(&state, &caller, "data:read")?;
    let secret = state
        .secrets
        .get(&caller.user.id, &name)?
        .ok_or(DomainError::NotFound("secret"))?;
    let value = open(
        &state.data_keys,
        &secret.owner,
        &secret.name,
        &secret.sealed,
    )?;
    let mut out = masked(&secret);
    out["value"] = json!(value);
    Ok(Json(out))
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<SecretBody>,
) -> ApiResult<Json<Value>> {
    own_data(&state, &caller, "data:write")?;
    check_bindings(&state, &caller, body.agents.as_ref())?;
    let event = AuditEvent::new(Some(&caller.user.id), "secret.update", &name);
    let input = body.input();
    state
        .secrets
        .update(&state.data_keys, &caller.user.id, &name, input, event)
        .await?;
    Ok(Json(json!({ "status": "updated", "name": name })))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    own_data(&state, &caller, "data:write")?;
    let event = AuditEvent::new(Some(&caller.user.id), "secret.delete", &name);
    state.secrets.delete(&caller.user.id, &name, event).await?;
    Ok(Json(json!({ "status": "deleted", "name": name })))
}

/// An agent runtime's bound secrets, in plaintext: only those whose owner
/// still holds `manage` on the agent.
async fn for_agent(
    State(state): State<AppState>,
    caller: AnyCaller,
    Path(agent): Path<String>,
) -> ApiResult<Json<Vec<Value>>> {
    let AnyCaller::Agent(runtime) = caller else {
        return Err(
            AuthError::Denied("only the agent's runtime token reads its secrets".into()).into(),
        );
    };
    if runtime.agent != agent {
        return Err(
            AuthError::Denied("a runtime reads only its own agent's secrets".into()).into(),
        );
    }
    Ok(Json(released(&state, &runtime)?))
}

fn released(state: &AppState, runtime: &AgentCaller) -> ApiResult<Vec<Value>> {
    let loaded = load(state, &runtime.agent)?;
    let mut out = Vec::new();
    for (owner, name) in state.secrets.bound_to(&runtime.agent)? {
        let request = AppState::agent_request("secrets:release", &loaded, 0)
            .fact("data_owner", [string(&owner)]);
        match state.authorize_agent(runtime, request) {
            Ok(()) => {}
            Err(AuthError::Denied(_)) => continue,
            Err(e) => return Err(e.into()),
        }
        let Some(secret) = state.secrets.get(&owner, &name)? else {
            continue;
        };
        let value = open(
            &state.data_keys,
            &secret.owner,
            &secret.name,
            &secret.sealed,
        )?;
        out.push(json!({
            "id": secret.id,
            "name": secret.name,
            "category": secret.category,
            "value": value,
            "description": secret.description,
        }));
    }
    Ok(out)
}
