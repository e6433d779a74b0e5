//! `POST /api/check`: a batch of "may I?" questions for the caller's own
//! token, for a host's code deciding what to offer. Each answer comes from
//! the very decisions the route in question makes (and through the same
//! decision memo), so it cannot drift from the route; nothing is written.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::agents::{self, decide, load};
use crate::authz::policy::RequestFacts;
use crate::authz::AuthError;
use crate::domain::levels::Level;
use crate::domain::DomainError;
use crate::error::{ApiError, ApiResult};
use crate::state::{AnyCaller, AppState, Caller};

/// The most questions one batch may ask.
pub const MAX_CHECKS: usize = 100;

/// Operations not about one agent that a host may ask about, each decided
/// as its route decides it. (Operations on one agent are the policy's
/// `agent_op` facts.)
pub const HOST_OPS: &[&str] = &[
    "agent:list",
    "agent:create",
    "agent:create_for",
    "auth:me",
    "auth:users:list",
    "auth:users:create",
    "auth:users:reset",
    "auth:users:delete",
    "auth:users:set_admin",
    "auth:users:revoke_sessions",
    "admin:backup",
    "tokens:list",
    "tokens:list_all",
    "tokens:inspect",
    "audit:read",
    "audit:read_all",
    "data:read",
    "data:write",
];

/// Agent operations that confer a level (`level`, default `view`).
const CONFERRING: &[&str] = &["agent:share", "agent:tokens:mint"];

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/check", post(check))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    checks: Vec<Question>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Question {
    operation: String,
    agent: Option<String>,
    level: Option<String>,
    user: Option<String>,
}

/// A question made sense of.
enum Ask {
    Agent {
        operation: String,
        agent: String,
        level: Option<Level>,
        user: Option<String>,
    },
    Host(String),
    Unknown(String),
}

async fn check(
    State(state): State<AppState>,
    caller: AnyCaller,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body: Body = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"checks\": [{{\"operation\": ..., \"agent\"?: ..., \"level\"?: ..., \"user\"?: ...}}, ...]}}: {e}"
        ))
    })?;
    if body.checks.is_empty() || body.checks.len() > MAX_CHECKS {
        return Err(ApiError::BadRequest(format!(
            "checks must hold 1 to {MAX_CHECKS} questions, not {}",
            body.checks.len()
        )));
    }
    let asks = body
        .checks
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            understand(&state, q)
                .map_err(|e| ApiError::BadRequest(format!("checks[{i}]: {}", reason(&e))))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let person = caller.person();
    let results = asks
        .iter()
        .map(|ask| answer(&state, &person, ask))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({ "results": results })))
}

/// Check that the question carries what its operation takes, and nothing else.
fn understand(state: &AppState, q: Question) -> ApiResult<Ask> {
    let bad = |text: String| ApiError::BadRequest(text);
    let op = q.operation;
    if state.authz.agent_ops().contains(&op) {
        let agent = q
            .agent
            .ok_or_else(|| bad(format!("{op} is about an agent: name it in \"agent\"")))?;
        let level = if CONFERRING.contains(&op.as_str()) {
            Some(Level::parse_grantable(
                q.level.as_deref().unwrap_or(Level::View.as_str()),
            )?)
        } else if q.level.is_some() {
            return Err(bad(format!("{op} takes no level")));
        } else {
            None
        };
        let user = match (op.as_str(), q.user) {
            ("agent:unshare", None) => {
                return Err(bad(format!(
                    "{op} removes someone's grant: name them in \"user\""
                )))
            }
            ("agent:unshare" | "agent:share", user) => user,
            (_, Some(_)) => return Err(bad(format!("{op} takes no user"))),
            (_, None) => None,
        };
        return Ok(Ask::Agent {
            operation: op,
            agent,
            level,
            user,
        });
    }
    if HOST_OPS.contains(&op.as_str()) {
        if q.agent.is_some() || q.level.is_some() || q.user.is_some() {
            return Err(bad(format!("{op} takes no agent, level or user")));
        }
        return Ok(Ask::Host(op));
    }
    Ok(Ask::Unknown(op))
}

/// One answer: refusals are answers, while limits and faults fail the whole
/// request as they would fail the route.
fn answer(state: &AppState, person: &Result<Caller, AuthError>, ask: &Ask) -> ApiResult<Value> {
    let outcome = match (ask, person) {
        (Ask::Unknown(op), _) => {
            return Ok(json!({
                "allowed": false,
                "reason": format!("unknown operation {op:?}"),
            }))
        }
        (_, Err(refused)) => Err(AuthError::Denied(denial(refused)).into()),
        (
            Ask::Agent {
                operation,
                agent,
                level,
                user,
            },
            Ok(caller),
        ) => on_agent(state, caller, operation, agent, *level, user.as_deref()),
        (Ask::Host(op), Ok(caller)) => on_host(state, caller, op),
    };
    match outcome {
        Ok(()) => Ok(json!({ "allowed": true, "reason": null })),
        Err(e) if is_refusal(&e) => Ok(json!({ "allowed": false, "reason": reason(&e) })),
        Err(e) => Err(e),
    }
}

/// The decisions of the route that does `operation` on `agent`, in its order.
fn on_agent(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    agent: &str,
    level: Option<Level>,
    user: Option<&str>,
) -> ApiResult<()> {
    match operation {
        "agent:share" => {
            let level = level.unwrap_or(Level::View);
            let loaded = load(state, agent)?;
            let to = user.map(agents::ShareTo::parse);
            agents::authorize_share(state, caller, &loaded, level, to.as_ref())?;
            if let Some(to) = &to {
                agents::authorize_grantee(state, caller, &loaded, level, to)?;
            }
            Ok(())
        }
        "agent:unshare" | "agent:leave" => {
            let loaded = load(state, agent)?;
            let user = user.unwrap_or(&caller.user.username);
            agents::authorize_unshare(state, caller, &loaded, &agents::ShareTo::parse(user))
                .map(drop)
        }
        "agent:chat" => super::chat::authorize_talk(state, caller, agent),
        "agent:channel" => super::channels::authorize_channel(state, caller, agent),
        "agent:bind" => super::secrets::authorize_binding(state, caller, agent),
        _ => {
            let loaded = load(state, agent)?;
            let granting = level.map_or(0, Level::rank);
            decide(state, caller, operation, &loaded, granting)
        }
    }
}

/// The decision of the route that does `operation`.
fn on_host(state: &AppState, caller: &Caller, operation: &str) -> ApiResult<()> {
    match operation {
        "agent:list" => agents::authorize_listing(state, caller),
        "data:read" | "data:write" => super::secrets::own_data(state, caller, operation),
        _ => Ok(state.authorize(caller, RequestFacts::new(operation))?),
    }
}

/// Whether the route would have answered this with a refusal (4xx) rather
/// than a failure of its own.
fn is_refusal(e: &ApiError) -> bool {
    match e {
        ApiError::Auth(AuthError::Denied(_)) | ApiError::BadRequest(_) => true,
        ApiError::Domain(d) => matches!(
            d,
            DomainError::NotFound(_)
                | DomainError::Invalid(_)
                | DomainError::Forbidden(_)
                | DomainError::Conflict(_)
        ),
        _ => false,
    }
}

/// The words of a refusal, as the route's error would say them; a missing
/// agent (or one the caller may not see) is "no such agent".
fn reason(e: &ApiError) -> String {
    match e {
        ApiError::Domain(DomainError::NotFound(what)) => format!("no such {what}"),
        other => other.to_string(),
    }
}

/// The reason inside a refusal of the token itself.
fn denial(e: &AuthError) -> String {
    match e {
        AuthError::Denied(reason) => reason.clone(),
        other => other.to_string(),
    }
}
