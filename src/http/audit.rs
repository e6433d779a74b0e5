//! `/api/audit`: the append-only audit log. Admins read all of it; everyone
//! else reads the events that concern them.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::authz::policy::RequestFacts;
use crate::domain::audit;
use crate::error::ApiResult;
use crate::state::{AppState, Caller};

pub const MAX_PAGE: usize = 1000;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/audit", get(list))
}

#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    /// The id of the last event of the previous page.
    after: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<Page>,
) -> ApiResult<Json<Value>> {
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let after = page.after.as_deref();
    let events = if state
        .authorize(&caller, RequestFacts::new("audit:read_all"))
        .is_ok()
    {
        audit::list_all(state.store.as_ref(), after, limit)?
    } else {
        state.authorize(&caller, RequestFacts::new("audit:read"))?;
        audit::list_for(state.store.as_ref(), &caller.user.id, after, limit)?
    };
    Ok(Json(json!({ "events": events })))
}
