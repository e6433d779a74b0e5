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
    let level = Level::parse_grantable(&body.level)?;
    if !(1..=MAX_EXPIRES_IN).contains(&body.expires_in) {
        return Err(ApiError::BadRequest(format!(
            "expires_in must be between 1 and {MAX_EXPIRES_IN} seconds"
        )));
    }
    let loaded = load(&state, &body.agent)?;
    decide(&state, &caller, "agent:tokens:mint", &loaded, level.rank())?;
    let event = AuditEvent::new(Some(&caller.user.id), "token.mint", &body.agent)
        .detail(json!({ "level": level, "expires_in": body.expires_in, "label": body.label }));
    let record = state
        .delegations
        .create(
            &caller.user.id,
            &body.agent,
            level,
            body.expires_in,
            body.label,
            event,
        )
        .await?;
    let token = state.authz.mint_delegated(
        &caller.user.id,
        &record.id,
        &record.agent,
        record.level.rank(),
        record.expires_at,
    )?;
    let mut out = record_json(&record);
    out["token"] = json!(token);
    Ok(Json(out))
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let records = if state
        .authorize(&caller, RequestFacts::new("tokens:list_all"))
        .is_ok()
    {
        state.delegations.all()?
    } else {
        state.authorize(&caller, RequestFacts::new("tokens:list"))?;
        state.delegations.issued_by(&caller.user.id)?
    };
    Ok(Json(
        json!({ "tokens": records.iter().map(record_json).collect::<Vec<_>>() }),
    ))
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let not_found = || ApiError::Domain(DomainError::NotFound("token"));
    let record = state.delegations.get(&id)?.ok_or_else(not_found)?;
    let request = RequestFacts::new("tokens:revoke").fact("token_issuer", [string(&record.issuer)]);
    // Someone else's token is as invisible as a missing one.
    state.authorize(&caller, request).map_err(|_| not_found())?;
    let event = AuditEvent::new(Some(&caller.user.id), "token.revoke", &record.agent)
        .on_behalf_of((record.issuer != caller.user.id).then_some(record.issuer.as_str()))
        .detail(json!({ "token": record.id }));
    state.delegations.revoke(&record, event).await?;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
struct InspectBody {
    token: String,
}

/// Show what a token says and whether it would be accepted now. The token
/// under inspection is only ever read, never used as the caller's proof.
async fn inspect(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<InspectBody>,
) -> ApiResult<Json<Value>> {
    state.authorize(&caller, RequestFacts::new("tokens:inspect"))?;
    let token = body.token.trim();
    let unverified = UnverifiedBiscuit::from_base64(token)
        .map_err(|_| ApiError::BadRequest("not a Biscuit token".into()))?;
    let blocks: Vec<String> = (0..unverified.block_count())
        .map(|i| {
            unverified
                .print_block_source(i)
                .unwrap_or_else(|_| "<unreadable>".into())
        })
        .collect();
    let mut out = json!({
        "blocks": blocks,
        "root_key_id": unverified.root_key_id(),
        "signature_valid": false,
        "valid": false,
    });
    let verified = match state.authz.verify(token, now()) {
        Ok(v) => v,
        Err(e) => {
            // An expired token still has a valid signature worth reporting.
            out["signature_valid"] = json!(matches!(e, crate::authz::AuthError::Expired));
            out["reason"] = json!(e.to_string());
            return Ok(Json(out));
        }
    };
    out["signature_valid"] = json!(true);
    out["expires_at"] = json!(verified.claims.expires_at());
    if let Some(issuer) = verified.claims.user() {
        out["issuer"] = match state.accounts.get(issuer)? {
            Some(u) => json!({ "id": u.id, "username": u.username }),
            None => json!({ "id": issuer, "username": null }),
        };
    }
    match &verified.claims {
        Claims::Session { .. } => out["kind"] = json!("session"),
        Claims::ChannelBot { channel, .. } => {
            out["kind"] = json!("channel_bot");
            out["channel"] = json!(channel);
        }
        Claims::Runtime { agent, .. } => {
            out["kind"] = json!("agent_runtime");
            out["agent"] = json!(agent);
        }
        Claims::Delegated { delegation, .. } => {
            out["kind"] = json!("delegated");
            out["delegation"] = json!(delegation);
            if let Some(record) = state.delegations.get(delegation)? {
                out["agent"] = json!(record.agent);
                out["level"] = json!(record.level);
                out["label"] = json!(record.label);
            }
        }
    }
    match state.authenticate_any(token) {
        Ok(_) => out["valid"] = json!(true),
        Err(e) => out["reason"] = json!(e.to_string()),
    }
    Ok(Json(out))
}
