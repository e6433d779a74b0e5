//! `/api/audit`: the append-only audit log. Admins read all of it; everyone
//! else reads the events that concern them. The console's audit page reads
//! it through [`events`] too, with filters.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::authz::policy::RequestFacts;
use crate::domain::audit::{self, AuditEvent};
use crate::error::ApiResult;
use crate::state::{AppState, Caller};

pub const MAX_PAGE: usize = 1000;

/// Events read per store scan while filtering.
const SCAN_BATCH: usize = 500;
/// Events a filtered request reads at most before it answers with what it
/// found and where to go on: a rare match in a long log costs several pages,
/// never one unbounded request.
const MAX_SCAN: usize = 10_000;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/audit", get(list))
}

#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    /// The id of the last event of the previous page.
    after: Option<String>,
}

/// What to look for in the log; an empty field matches every event.
#[derive(Debug, Default, Clone)]
pub(crate) struct Filter {
    /// Who acted: a username, or the id of an account since deleted.
    pub actor: Option<String>,
    /// An action, or how it begins (`user.` for every account change).
    pub action: Option<String>,
    /// The target, exactly (a username, an agent's name, `store`).
    pub target: Option<String>,
}

fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Filter {
    fn is_empty(&self) -> bool {
        given(&self.actor).is_none()
            && given(&self.action).is_none()
            && given(&self.target).is_none()
    }

    fn matches(&self, event: &AuditEvent, actor_id: Option<&str>) -> bool {
        actor_id.is_none_or(|id| event.actor.as_deref() == Some(id))
            && given(&self.action).is_none_or(|a| {
                event
                    .action
                    .to_ascii_lowercase()
                    .starts_with(&a.to_ascii_lowercase())
            })
            && given(&self.target).is_none_or(|t| event.target.eq_ignore_ascii_case(t))
    }
}

/// A page of the log: the events, newest first, and the cursor for the next
/// page (`None`: nothing older matches).
pub(crate) struct Found {
    pub events: Vec<AuditEvent>,
    pub next: Option<String>,
}

/// Up to `limit` events the caller may read that match `filter`, newest
/// first, older than the event `after`.
pub(crate) fn events(
    state: &AppState,
    caller: &Caller,
    filter: &Filter,
    after: Option<&str>,
    limit: usize,
) -> ApiResult<Found> {
    let limit = limit.clamp(1, MAX_PAGE);
    let all = state
        .authorize(caller, RequestFacts::new("audit:read_all"))
        .is_ok();
    if !all {
        state.authorize(caller, RequestFacts::new("audit:read"))?;
    }
    let actor_id = match given(&filter.actor) {
        Some(name) => Some(match state.accounts.find(name)? {
            Some(user) => user.id,
            None => name.to_owned(),
        }),
        None => None,
    };
    // An actor's events are all in their own index: read that one rather
    // than the whole log.
    let index = match (&actor_id, all) {
        (_, false) => Some(caller.user.id.as_str()),
        (Some(id), true) => Some(id.as_str()),
        (None, true) => None,
    };
    let read = |cursor: Option<&str>, n: usize| match index {
        Some(user) => audit::list_for(state.store.as_ref(), user, cursor, n),
        None => audit::list_all(state.store.as_ref(), cursor, n),
    };

    let filtering = !filter.is_empty();
    let mut found = Vec::new();
    let mut cursor = after.map(str::to_owned);
    let mut scanned = 0;
    loop {
        // One more than a page tells whether another page follows.
        let want = if filtering {
            SCAN_BATCH
        } else {
            limit + 1 - found.len()
        };
        let batch = read(cursor.as_deref(), want)?;
        let exhausted = batch.len() < want;
        for event in batch {
            scanned += 1;
            cursor = Some(event.id.clone());
            if filter.matches(&event, actor_id.as_deref()) {
                found.push(event);
                if found.len() > limit {
                    found.truncate(limit);
                    let next = found.last().map(|e| e.id.clone());
                    return Ok(Found {
                        events: found,
                        next,
                    });
                }
            }
        }
        if exhausted {
            return Ok(Found {
                events: found,
                next: None,
            });
        }
        if scanned >= MAX_SCAN {
            return Ok(Found {
                events: found,
                next: cursor,
            });
        }
    }
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<Page>,
) -> ApiResult<Json<Value>> {
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let found = events(
        &state,
        &caller,
        &Filter::default(),
        page.after.as_deref(),
        limit,
    )?;
    Ok(Json(json!({ "events": found.events })))
}
