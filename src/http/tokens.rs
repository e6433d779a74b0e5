//! `/api/tokens`: delegated agent tokens. A delegated token is the issuer's
//! capability attenuated to one agent, a maximum level and an expiry; the
//! record kept here makes it revocable, and the policy keeps it from ever
//! exceeding what the issuer holds at the time of use.

use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use biscuit_auth::builder::string;
use biscuit_auth::UnverifiedBiscuit;
use serde::Deserialize;
use serde_json::{json, Value};

use super::agents::{decide, load};
use crate::authz::policy::RequestFacts;
use crate::authz::tokens::Claims;
use crate::domain::audit::AuditEvent;
use crate::domain::delegations::Delegation;
use crate::domain::levels::Level;
use crate::domain::{now, DomainError};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Caller};

/// Longest lifetime a delegated token may be given: one year.
pub const MAX_EXPIRES_IN: i64 = 365 * 24 * 60 * 60;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/tokens", get(list).post(mint))
        .route("/api/tokens/inspect", post(inspect))
        .route("/api/tokens/{id}", delete(revoke))
}

#[derive(Deserialize)]
struct MintBody {
    agent: String,
    level: String,
    expires_in: i64,
    label: Option<String>,
}

fn record_json(d: &Delegation) -> Value {
    json!({
        "id": d.id,
        "issuer": d.issuer,
        "agent": d.agent,
        "level": d.level,
        "created_at": d.created_at,
        "expires_at": d.expires_at,
        "label": d.label,
    })
}

async fn mint(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<MintBody>,
) -> ApiResult<Json<Value>> {
    let (record, token) = mint_token(
        &state,
        &caller,
        &body.agent,
        &body.level,
        body.expires_in,
        body.label,
    )
    .await?;
    let mut out = record_json(&record);
    out["token"] = json!(token);
    Ok(Json(out))
}

/// Mint a delegated token for `agent` at `level` (a level's name): its
/// record and the token itself (to be shown once).
pub(crate) async fn mint_token(
    state: &AppState,
    caller: &Caller,
    agent: &str,
    level: &str,
    expires_in: i64,
    label: Option<String>,
) -> ApiResult<(Delegation, String)> {
    let level = Level::parse_grantable(level)?;
    if !(1..=MAX_EXPIRES_IN).contains(&expires_in) {
        return Err(ApiError::BadRequest(format!(
            "expires_in must be between 1 and {MAX_EXPIRES_IN} seconds"
        )));
    }
    let loaded = load(state, agent)?;
    decide(state, caller, "agent:tokens:mint", &loaded, level.rank())?;
    let event = AuditEvent::new(Some(&caller.user.id), "token.mint", agent)
        .detail(json!({ "level": level, "expires_in": expires_in, "label": label }));
    let record = state
        .delegations
        .create(&caller.user.id, agent, level, expires_in, label, event)
        .await?;
    let token = state.authz.mint_delegated(
        &caller.user.id,
        &record.id,
        &record.agent,
        record.level.rank(),
        record.expires_at,
    )?;
    Ok((record, token))
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let records = list_tokens(&state, &caller)?;
    Ok(Json(
        json!({ "tokens": records.iter().map(record_json).collect::<Vec<_>>() }),
    ))
}

/// The delegated tokens the caller may see: all of them for admins, their
/// own for everyone else.
pub(crate) fn list_tokens(state: &AppState, caller: &Caller) -> ApiResult<Vec<Delegation>> {
    if state
        .authorize(caller, RequestFacts::new("tokens:list_all"))
        .is_ok()
    {
        Ok(state.delegations.all()?)
    } else {
        state.authorize(caller, RequestFacts::new("tokens:list"))?;
        Ok(state.delegations.issued_by(&caller.user.id)?)
    }
}

/// The question the policy answers before a token is revoked.
pub(crate) fn revoke_request(record: &Delegation) -> RequestFacts {
    RequestFacts::new("tokens:revoke").fact("token_issuer", [string(&record.issuer)])
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    revoke_token(&state, &caller, &id).await?;
    Ok(Json(json!({ "ok": true })))
}

/// Revoke the delegated token `id`; answers its record.
pub(crate) async fn revoke_token(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<Delegation> {
    let not_found = || ApiError::Domain(DomainError::NotFound("token"));
    let record = state.delegations.get(id)?.ok_or_else(not_found)?;
    // Someone else's token is as invisible as a missing one.
    state
        .authorize(caller, revoke_request(&record))
        .map_err(|_| not_found())?;
    let event = AuditEvent::new(Some(&caller.user.id), "token.revoke", &record.agent)
        .on_behalf_of((record.issuer != caller.user.id).then_some(record.issuer.as_str()))
        .detail(json!({ "token": record.id }));
    state.delegations.revoke(&record, event).await?;
    Ok(record)
}

#[derive(Deserialize)]
struct InspectBody {
    token: String,
}

/// What a token says and whether it would be accepted now.
#[derive(Default)]
pub(crate) struct Inspection {
    /// Each block's Datalog source, authority block first.
    pub blocks: Vec<String>,
    pub root_key_id: Option<u32>,
    pub signature_valid: bool,
    pub valid: bool,
    /// Why it would be refused.
    pub reason: Option<String>,
    /// The rest is known only once the signature checks out.
    pub expires_at: Option<i64>,
    /// The person it speaks for: id, and username while the account exists.
    pub issuer: Option<(String, Option<String>)>,
    /// `session`, `delegated`, `channel_bot` or `agent_runtime`.
    pub kind: Option<&'static str>,
    pub channel: Option<String>,
    pub delegation: Option<String>,
    /// The agent, for runtime tokens and delegated tokens whose record lives.
    pub agent: Option<String>,
    /// A delegated token's level and label, while its record lives.
    pub delegated: Option<(Level, Option<String>)>,
}

impl Inspection {
    fn to_json(&self) -> Value {
        let mut out = json!({
            "blocks": self.blocks,
            "root_key_id": self.root_key_id,
            "signature_valid": self.signature_valid,
            "valid": self.valid,
        });
        // The claims are read only from a token whose signature checks out.
        let Some(expires_at) = self.expires_at else {
            if let Some(reason) = &self.reason {
                out["reason"] = json!(reason);
            }
            return out;
        };
        out["expires_at"] = json!(expires_at);
        if let Some((id, username)) = &self.issuer {
            out["issuer"] = json!({ "id": id, "username": username });
        }
        out["kind"] = json!(self.kind);
        if let Some(channel) = &self.channel {
            out["channel"] = json!(channel);
        }
        if let Some(delegation) = &self.delegation {
            out["delegation"] = json!(delegation);
        }
        if let Some(agent) = &self.agent {
            out["agent"] = json!(agent);
        }
        if let Some((level, label)) = &self.delegated {
            out["level"] = json!(level);
            out["label"] = json!(label);
        }
        if let Some(reason) = &self.reason {
            out["reason"] = json!(reason);
        }
        out
    }
}

/// Show what a token says and whether it would be accepted now. The token
/// under inspection is only ever read, never used as the caller's proof.
async fn inspect(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<InspectBody>,
) -> ApiResult<Json<Value>> {
    Ok(Json(inspect_token(&state, &caller, &body.token)?.to_json()))
}

pub(crate) fn inspect_token(
    state: &AppState,
    caller: &Caller,
    token: &str,
) -> ApiResult<Inspection> {
    state.authorize(caller, RequestFacts::new("tokens:inspect"))?;
    let token = token.trim();
    let unverified = UnverifiedBiscuit::from_base64(token)
        .map_err(|_| ApiError::BadRequest("not a Biscuit token".into()))?;
    let mut out = Inspection {
        blocks: (0..unverified.block_count())
            .map(|i| {
                unverified
                    .print_block_source(i)
                    .unwrap_or_else(|_| "<unreadable>".into())
            })
            .collect(),
        root_key_id: unverified.root_key_id(),
        ..Inspection::default()
    };
    let verified = match state.authz.verify(token, now()) {
        Ok(v) => v,
        Err(e) => {
            // An expired token still has a valid signature worth reporting.
            out.signature_valid = matches!(e, crate::authz::AuthError::Expired);
            out.reason = Some(e.to_string());
            return Ok(out);
        }
    };
    out.signature_valid = true;
    out.expires_at = Some(verified.claims.expires_at());
    if let Some(issuer) = verified.claims.user() {
        out.issuer = Some(match state.accounts.get(issuer)? {
            Some(u) => (u.id.clone(), Some(u.username.clone())),
            None => (issuer.to_owned(), None),
        });
    }
    match &verified.claims {
        Claims::Session { .. } => out.kind = Some("session"),
        Claims::Assertion { .. } => out.kind = Some("assertion"),
        Claims::ChannelBot { channel, .. } => {
            out.kind = Some("channel_bot");
            out.channel = Some(channel.clone());
        }
        Claims::Runtime { agent, .. } => {
            out.kind = Some("agent_runtime");
            out.agent = Some(agent.clone());
        }
        Claims::Delegated { delegation, .. } => {
            out.kind = Some("delegated");
            out.delegation = Some(delegation.clone());
            if let Some(record) = state.delegations.get(delegation)? {
                out.agent = Some(record.agent);
                out.delegated = Some((record.level, record.label));
            }
        }
    }
    match state.authenticate_any(token) {
        Ok(_) => out.valid = true,
        Err(e) => out.reason = Some(e.to_string()),
    }
    Ok(out)
}
