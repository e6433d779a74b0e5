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
use crate::state::{AgentCaller, AgentState, AnyCaller, AppState, Caller};

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
pub(crate) fn check_bindings(
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

/// Whether the caller may bind a secret of their own to `agent`, as
/// creating one with that binding decides.
pub(crate) fn authorize_binding(state: &AppState, caller: &Caller, agent: &str) -> ApiResult<()> {
    own_data(state, caller, "data:write")?;
    check_bindings(state, caller, Some(&vec![agent.to_owned()]))
}

/// Whether the caller may bind secrets to the agent (`manage`), as
/// [`check_bindings`] decides; only limits and faults are errors.
pub(crate) fn may_bind(state: &AppState, caller: &Caller, agent: &AgentState) -> ApiResult<bool> {
    match state.authorize(
        caller,
        AppState::agent_request("agent:bind", agent, &caller.user.id, 0),
    ) {
        Ok(()) => Ok(true),
        Err(AuthError::Denied(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The caller's own secrets (sealed: callers show them masked).
pub(crate) fn list_own(state: &AppState, caller: &Caller) -> ApiResult<Vec<Secret>> {
    own_data(state, caller, "data:read")?;
    Ok(state.secrets.list(&caller.user.id)?)
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<Value>>> {
    Ok(Json(
        list_own(&state, &caller)?.iter().map(masked).collect(),
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

/// Create a secret of the caller's own (name and value are required),
/// bound only to agents the caller manages; audited.
pub(crate) async fn create_own(
    state: &AppState,
    caller: &Caller,
    name: Option<&str>,
    input: SecretInput,
) -> ApiResult<Secret> {
    own_data(state, caller, "data:write")?;
    let name = name.ok_or_else(|| ApiError::BadRequest("name is required".into()))?;
    if input.value.is_none() {
        return Err(ApiError::BadRequest("value is required".into()));
    }
    check_bindings(state, caller, input.agents.as_ref())?;
    let event = AuditEvent::new(Some(&caller.user.id), "secret.create", name);
    Ok(state
        .secrets
        .create(&state.data_keys, &caller.user.id, name, input, event)
        .await?)
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<SecretBody>,
) -> ApiResult<Json<Value>> {
    let name = body.name.clone();
    let secret = create_own(&state, &caller, name.as_deref(), body.input()).await?;
    Ok(Json(json!({ "id": secret.id, "status": "created" })))
}

/// One of the caller's own secrets with its value in plaintext: only on an
/// explicit request, never in a listing.
pub(crate) fn reveal_own(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> ApiResult<(Secret, String)> {
    own_data(state, caller, "secrets:reveal")?;
    let secret = state
        .secrets
        .get(&caller.user.id, name)?
        .ok_or(DomainError::NotFound("secret"))?;
    let value = open(
        &state.data_keys,
        &secret.owner,
        &secret.name,
        &secret.sealed,
    )?;
    Ok((secret, value))
}

async fn reveal(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let (secret, value) = reveal_own(&state, &caller, &name)?;
    let mut out = masked(&secret);
    out["value"] = json!(value);
    Ok(Json(out))
}

/// Change one of the caller's own secrets; new bindings (when given) need
/// `manage` on every agent named. Audited.
pub(crate) async fn update_own(
    state: &AppState,
    caller: &Caller,
    name: &str,
    input: SecretInput,
) -> ApiResult<Secret> {
    own_data(state, caller, "data:write")?;
    check_bindings(state, caller, input.agents.as_ref())?;
    let event = AuditEvent::new(Some(&caller.user.id), "secret.update", name);
    Ok(state
        .secrets
        .update(&state.data_keys, &caller.user.id, name, input, event)
        .await?)
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<SecretBody>,
) -> ApiResult<Json<Value>> {
    update_own(&state, &caller, &name, body.input()).await?;
    Ok(Json(json!({ "status": "updated", "name": name })))
}

/// Delete one of the caller's own secrets and its bindings. Audited.
pub(crate) async fn delete_own(state: &AppState, caller: &Caller, name: &str) -> ApiResult<()> {
    own_data(state, caller, "data:write")?;
    let event = AuditEvent::new(Some(&caller.user.id), "secret.delete", name);
    state.secrets.delete(&caller.user.id, name, event).await?;
    Ok(())
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    delete_own(&state, &caller, &name).await?;
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
        // The owner's memberships count as theirs would on their own
        // requests: what a group gives them is what lets the secret out.
        let active = state.accounts.get(&owner)?.is_some_and(|u| !u.pending());
        let request = state.with_memberships(
            AppState::agent_request("secrets:release", &loaded, &owner, 0)
                .fact("data_owner", [string(&owner)]),
            &owner,
            active,
        )?;
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
