//! `/api/agents`: agents with one owner, shared at graduated levels. Every
//! decision is the policy's (`datalog/agents.dl`); handlers load the agent and
//! its grants, ask, and call the domain.
//!
//! An agent the caller cannot see answers 404 exactly like one that does not
//! exist, so names do not leak; one they can see but not act on is 403.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::authz::AuthError;
use crate::domain::agents::{Agent, Grant, Grantee, Link, Reach, Reaching, Source};
use crate::domain::audit::AuditEvent;
use crate::domain::channels::Runtime;
use crate::domain::groups::{Group, Principal, EVERYONE};
use crate::domain::levels::Level;
use crate::domain::users::User;
use crate::domain::DomainError;
use crate::error::{ApiError, ApiResult};
use crate::http::paging::{self, Page};
use crate::http::JsonText;
use crate::state::{AgentState, AppState, Caller, Via};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/agents", get(list).post(create))
        .route("/api/agents/{name}", get(read).put(update).delete(remove))
        .route("/api/agents/{name}/archive", post(archive))
        .route("/api/agents/{name}/restore", post(restore))
        .route("/api/agents/{name}/transfer", post(transfer))
        .route("/api/agents/{name}/shares", get(list_shares).post(share))
        .route("/api/agents/{name}/access", get(list_access))
        .route(
            "/api/agents/{name}/shares/{grantee}",
            axum::routing::delete(unshare),
        )
        .route(
            "/api/agents/{name}/runtime-token",
            post(runtime_token).delete(revoke_runtime_token),
        )
}

pub fn not_found() -> ApiError {
    ApiError::Domain(DomainError::NotFound("agent"))
}

/// The agent with everything a decision about it needs, shared between
/// requests until it changes (see [`AppState::agent`]).
pub fn load(state: &AppState, name: &str) -> ApiResult<Arc<AgentState>> {
    state.agent(name)?.ok_or_else(not_found)
}

/// Ask the policy whether `caller` may do `operation` on the agent, conferring
/// `granting` (a rank, or 0). A refusal for an agent the caller cannot even
/// view is reported as not found.
pub fn decide(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    loaded: &AgentState,
    granting: i64,
) -> ApiResult<()> {
    decide_on_grant(state, caller, operation, loaded, granting, None)
}

/// [`decide`] for a share or unshare that replaces or removes a grant drawn
/// by `grantor`.
pub fn decide_on_grant(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    loaded: &AgentState,
    granting: i64,
    grantor: Option<&str>,
) -> ApiResult<()> {
    let request = AppState::grant_request(operation, loaded, &caller.user.id, granting, grantor);
    decide_request(state, caller, operation, loaded, request)
}

/// [`decide`] for a request already built (a share names its grantee).
fn decide_request(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    loaded: &AgentState,
    request: crate::authz::policy::RequestFacts,
) -> ApiResult<()> {
    match state.authorize(caller, request) {
        Ok(()) => Ok(()),
        Err(AuthError::Denied(reason)) => {
            if operation != "agent:read" && allowed(state, caller, "agent:read", loaded, 0)? {
                Err(AuthError::Denied(reason).into())
            } else {
                Err(not_found())
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the policy allows it; only limits and faults are errors.
pub(crate) fn allowed(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    loaded: &AgentState,
    granting: i64,
) -> ApiResult<bool> {
    allowed_on_grant(state, caller, operation, loaded, granting, None)
}

/// [`allowed`] for a share or unshare that replaces or removes a grant drawn
/// by `grantor` (see [`decide_on_grant`]).
pub(crate) fn allowed_on_grant(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    loaded: &AgentState,
    granting: i64,
    grantor: Option<&str>,
) -> ApiResult<bool> {
    let request = AppState::grant_request(operation, loaded, &caller.user.id, granting, grantor);
    match state.authorize(caller, request) {
        Ok(()) => Ok(true),
        Err(AuthError::Denied(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Resolves user ids to `{id, username}` once per request.
struct Names<'a> {
    state: &'a AppState,
    known: HashMap<String, Value>,
}

impl<'a> Names<'a> {
    fn new(state: &'a AppState) -> Self {
        Self {
            state,
            known: HashMap::new(),
        }
    }

    fn user(&mut self, id: &str) -> ApiResult<Value> {
        if let Some(v) = self.known.get(id) {
            return Ok(v.clone());
        }
        let username = self.state.accounts.get(id)?.map(|u| u.username.clone());
        let v = json!({ "id": id, "username": username });
        self.known.insert(id.to_owned(), v.clone());
        Ok(v)
    }

    /// A grant's grantee as the API names it: the field `user` (`{id,
    /// username}`), `group` (its name) or `everyone` (`true`).
    fn grantee(&mut self, grantee: &str) -> ApiResult<(&'static str, Value)> {
        Ok(match Principal::of(grantee) {
            Principal::User(id) => ("user", self.user(id)?),
            Principal::Group(name) => ("group", json!(name)),
            Principal::Everyone => ("everyone", json!(true)),
        })
    }
}

/// Whether `grant` holds now: not expired, and its grantee holds what it
/// grants (its grantor still has the rights).
fn effective(loaded: &AgentState, ranks: &HashMap<String, i64>, grant: &Grant) -> bool {
    loaded.live_grant(grant)
        && ranks.get(&grant.grantee).copied().unwrap_or(0) >= grant.level.rank()
}

/// One grant as the API shows it.
fn share_json(
    names: &mut Names,
    loaded: &AgentState,
    ranks: &HashMap<String, i64>,
    g: &Grant,
) -> ApiResult<Value> {
    let (field, grantee) = names.grantee(&g.grantee)?;
    let mut out = json!({
        field: grantee,
        "level": g.level,
        "granted_by": names.user(&g.granted_by)?,
        "at": g.at,
        "expires_at": g.expires_at,
        "expired": !loaded.live_grant(g),
        "effective": effective(loaded, ranks, g),
    });
    if field != "user" {
        // Clients that predate groups read `user`; it names no one here.
        out["user"] = Value::Null;
    }
    Ok(out)
}

fn shares_json(
    names: &mut Names,
    loaded: &AgentState,
    ranks: &HashMap<String, i64>,
) -> ApiResult<Vec<Value>> {
    loaded
        .grants
        .iter()
        .map(|g| share_json(names, loaded, ranks, g))
        .collect()
}

/// The agent's JSON object without its closing brace, for the parts that are
/// the same whoever asks; rendered once per version of the agent.
fn rendered(loaded: &AgentState) -> ApiResult<&str> {
    if let Some(text) = loaded.rendered.get() {
        return Ok(text);
    }
    let agent = &loaded.agent;
    let mut out: Map<String, Value> = agent.fields.clone();
    // Added per request (and never stored in fields; imports included).
    out.remove("access");
    out.remove("shared_with");
    out.remove("shared_with_everyone");
    out.insert("name".into(), json!(agent.name));
    out.insert(
        "owner".into(),
        json!({ "id": agent.owner, "username": loaded.owner_name }),
    );
    out.insert("created_at".into(), json!(agent.created_at));
    out.insert("archived".into(), json!(agent.archived));
    if agent.archived {
        out.insert("archived_at".into(), json!(agent.archived_at));
    }
    let mut text = serde_json::to_string(&out)
        .map_err(|e| DomainError::Internal(format!("rendering an agent: {e}")))?;
    // `{...}`: never empty, since it has a name.
    text.pop();
    Ok(loaded.rendered.get_or_init(|| text))
}

/// The agent as the caller may see it: its fields, owner, the level the
/// caller's token can exercise on it, and who it is shared with when the
/// token may read that.
fn view(
    state: &AppState,
    names: &mut Names,
    caller: &Caller,
    loaded: &AgentState,
) -> ApiResult<String> {
    let access = access(state, caller, loaded)?;
    let mut out = String::with_capacity(512);
    out.push_str(rendered(loaded)?);
    out.push_str(",\"access\":");
    match access {
        Some(level) => {
            out.push('"');
            out.push_str(level.as_str());
            out.push('"');
        }
        None => out.push_str("null"),
    }
    // Everyone on the host sees that it is shared with everyone (and how
    // far), whether or not they may read the shares.
    let everyone = loaded
        .grants
        .iter()
        .filter(|g| g.grantee == EVERYONE && loaded.live_grant(g))
        .map(|g| g.level)
        .max();
    out.push_str(",\"shared_with_everyone\":");
    match everyone {
        Some(level) => {
            out.push('"');
            out.push_str(level.as_str());
            out.push('"');
        }
        None => out.push_str("null"),
    }
    if allowed(state, caller, "agent:shares:read", loaded, 0)? {
        let admin = caller.user.is_admin.then_some(caller.user.id.as_str());
        let ranks = state.agent_ranks(loaded, admin)?;
        let shares = shares_json(names, loaded, &ranks)?;
        out.push_str(",\"shared_with\":");
        out.push_str(
            &serde_json::to_string(&shares)
                .map_err(|e| DomainError::Internal(format!("rendering shares: {e}")))?,
        );
    }
    out.push('}');
    Ok(out)
}

/// The level the caller's token exercises on the agent (`None`: none),
/// derived from the facts their own requests carry.
pub fn access(state: &AppState, caller: &Caller, loaded: &AgentState) -> ApiResult<Option<Level>> {
    let mut rank = state.caller_rank(loaded, caller, true)?;
    if let Via::Delegation(delegation) = &caller.via {
        // A delegated token exercises at most the level it was minted with.
        rank = rank.min(delegation.level.rank());
    }
    Ok(Level::from_rank(rank))
}

/// Whether the caller may list agents at all: the first decision of
/// `GET /api/agents` (and of `agent:list` in `POST /api/check`). A
/// delegated token lists its own agent only, and may when it may read it.
pub(crate) fn authorize_listing(state: &AppState, caller: &Caller) -> ApiResult<()> {
    if let Via::Delegation(delegation) = &caller.via {
        let loaded = load(state, &delegation.agent)?;
        if !allowed(state, caller, "agent:read", &loaded, 0)? {
            return Err(AuthError::Denied("this token may not read its agent".into()).into());
        }
        return Ok(());
    }
    // The listing itself is an operation: a channel bot's token, which may
    // only read and post in its channel, is refused here like everywhere
    // else instead of getting an empty list.
    Ok(state.authorize(
        caller,
        crate::authz::policy::RequestFacts::new("agent:list"),
    )?)
}

/// Every agent the caller may read, for listings (the API's and the
/// console's). A delegated token sees its own agent only, and is refused
/// when it may not read it; a token that may not list is refused.
pub fn readable(state: &AppState, caller: &Caller) -> ApiResult<Vec<Arc<AgentState>>> {
    Ok(readable_page(state, caller, None, &Page::default())?.agents)
}

/// One page of the agents the caller may read, in name order.
struct Listing {
    agents: Vec<Arc<AgentState>>,
    /// Whether more follow the last one.
    more: bool,
}

/// The agents the caller may read at `min_level` or above (any level when
/// `None`), in name order, after the page's cursor and at most its limit.
fn readable_page(
    state: &AppState,
    caller: &Caller,
    min_level: Option<Level>,
    page: &Page,
) -> ApiResult<Listing> {
    authorize_listing(state, caller)?;
    let names: Arc<Vec<String>> = if let Via::Delegation(delegation) = &caller.via {
        Arc::new(vec![delegation.agent.clone()])
    } else if caller.user.is_admin {
        Arc::new(state.agents.all_names()?)
    } else {
        state.agents.candidates_for(&caller.user.id)?
    };
    // Both indexes are read in key order; a cursor relies on it.
    let names = if names.windows(2).all(|w| w[0] < w[1]) {
        names
    } else {
        let mut sorted = names.as_ref().clone();
        sorted.sort();
        sorted.dedup();
        Arc::new(sorted)
    };
    let start = match &page.after {
        Some(after) => names.partition_point(|n| n.as_str() <= after.as_str()),
        None => 0,
    };
    let mut agents = Vec::with_capacity(page.limit.unwrap_or(names.len()).min(64));
    let mut more = false;
    for name in &names[start..] {
        // Gone since the index was read: skip.
        let Some(loaded) = state.agent(name)? else {
            continue;
        };
        if !allowed(state, caller, "agent:read", &loaded, 0)? {
            continue;
        }
        if let Some(min) = min_level {
            if access(state, caller, &loaded)?.is_none_or(|held| held < min) {
                continue;
            }
        }
        if page.limit.is_some_and(|limit| agents.len() >= limit) {
            more = true;
            break;
        }
        agents.push(loaded);
    }
    Ok(Listing { agents, more })
}

/// Who the act is on behalf of, when an admin acts on someone else's agent
/// without holding the rights themselves.
fn on_behalf(
    state: &AppState,
    caller: &Caller,
    loaded: &AgentState,
    needs: Level,
) -> ApiResult<Option<String>> {
    if !caller.user.is_admin || loaded.agent.owner == caller.user.id {
        return Ok(None);
    }
    let holds = state.caller_rank(loaded, caller, false)?;
    Ok((holds < needs.rank()).then(|| loaded.agent.owner.clone()))
}

/// `GET /api/agents` parameters, all optional; without any the answer is
/// the whole list, as it always was.
#[derive(Deserialize)]
struct ListQuery {
    min_level: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// The listing's name for its cursors.
const AGENTS_LISTING: &str = "agents";

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<(HeaderMap, JsonText)> {
    let min_level = match query.min_level.as_deref() {
        None => None,
        Some(text) => Some(Level::parse(text)?),
    };
    let page = Page::parse(
        query.limit.as_deref(),
        query.cursor.as_deref(),
        AGENTS_LISTING,
    )?;
    let listing = readable_page(&state, &caller, min_level, &page)?;
    let mut names = Names::new(&state);
    let mut out = String::with_capacity(2 + 512 * listing.agents.len().min(64));
    out.push('[');
    for loaded in &listing.agents {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&view(&state, &mut names, &caller, loaded)?);
    }
    out.push(']');
    let headers = match (listing.more, listing.agents.last(), page.limit) {
        (true, Some(last), Some(limit)) => {
            let mut next = Vec::with_capacity(2);
            if let Some(min) = min_level {
                next.push(("min_level", min.as_str().to_owned()));
            }
            next.push(("limit", limit.to_string()));
            paging::next_link("/api/agents", &next, &last.agent.name, AGENTS_LISTING)
        }
        _ => HeaderMap::new(),
    };
    Ok((headers, JsonText(out)))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let mut fields = body;
    let name = match fields.remove("name") {
        Some(Value::String(name)) => name,
        Some(_) => return Err(ApiError::BadRequest("name must be a string".into())),
        None => return Err(ApiError::BadRequest("name is required".into())),
    };
    let owner = match fields.remove("owner") {
        None | Some(Value::Null) => None,
        Some(Value::String(username)) => Some(username),
        Some(_) => return Err(ApiError::BadRequest("owner must be a username".into())),
    };
    let loaded = create_agent(&state, &caller, &name, owner.as_deref(), fields).await?;
    let mut names = Names::new(&state);
    let view: Value = serde_json::from_str(&view(&state, &mut names, &caller, &loaded)?)
        .map_err(|e| DomainError::Internal(format!("rendering an agent: {e}")))?;
    Ok(Json(json!({
        "status": "created",
        "name": loaded.agent.name,
        "display_name": loaded.agent.fields.get("display_name").cloned().unwrap_or(Value::Null),
        "agent": view,
    })))
}

/// Create the agent `name` with `fields`, owned by the caller or, when
/// `owner` names someone else, by them (an admin assigning it).
pub(crate) async fn create_agent(
    state: &AppState,
    caller: &Caller,
    name: &str,
    owner: Option<&str>,
    fields: Map<String, Value>,
) -> ApiResult<AgentState> {
    let (owner, operation) = match owner {
        Some(username) if username.to_ascii_lowercase() != caller.user.username => {
            state.authorize(
                caller,
                crate::authz::policy::RequestFacts::new("agent:create_for"),
            )?;
            let user = state
                .accounts
                .find(username)?
                .ok_or(DomainError::NotFound("owner"))?;
            (std::sync::Arc::new(user), "agent.create_for")
        }
        _ => {
            state.authorize(
                caller,
                crate::authz::policy::RequestFacts::new("agent:create"),
            )?;
            (caller.user.clone(), "agent.create")
        }
    };
    let on_behalf = (owner.id != caller.user.id).then_some(owner.id.as_str());
    let event = AuditEvent::new(Some(&caller.user.id), operation, name).on_behalf_of(on_behalf);
    let agent = state.agents.create(&owner, name, fields, event).await?;
    Ok(AgentState::new(
        agent,
        Vec::new(),
        Some(owner.username.clone()),
    ))
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<JsonText> {
    let loaded = load(&state, &name)?;
    decide(&state, &caller, "agent:read", &loaded, 0)?;
    let mut names = Names::new(&state);
    Ok(JsonText(view(&state, &mut names, &caller, &loaded)?))
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(changes): Json<Map<String, Value>>,
) -> ApiResult<JsonText> {
    let loaded = update_agent(&state, &caller, &name, changes).await?;
    let mut names = Names::new(&state);
    Ok(JsonText(view(&state, &mut names, &caller, &loaded)?))
}

/// Merge `changes` into the agent's fields (a `null` removes a field).
pub(crate) async fn update_agent(
    state: &AppState,
    caller: &Caller,
    name: &str,
    changes: Map<String, Value>,
) -> ApiResult<Arc<AgentState>> {
    let loaded = load(state, name)?;
    decide(state, caller, "agent:update", &loaded, 0)?;
    let behalf = on_behalf(state, caller, &loaded, Level::Edit)?;
    let event = AuditEvent::new(Some(&caller.user.id), "agent.update", name)
        .on_behalf_of(behalf.as_deref())
        .detail(json!({ "fields": changes.keys().collect::<Vec<_>>() }));
    state.agents.update(name, changes, event).await?;
    // Read back through the cache (the commit dropped it), with the
    // memberships its facts need.
    load(state, name)
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    delete_agent(&state, &caller, &name).await?;
    Ok(Json(json!({ "status": "deleted", "name": name })))
}

pub(crate) async fn delete_agent(state: &AppState, caller: &Caller, name: &str) -> ApiResult<()> {
    let loaded = load(state, name)?;
    decide(state, caller, "agent:delete", &loaded, 0)?;
    let event = AuditEvent::new(Some(&caller.user.id), "agent.delete", name);
    state.agents.delete(name, event).await?;
    Ok(())
}

/// Archive (`true`) or restore (`false`) the agent; answers the status word
/// the API reports (`archived`, `restored`).
pub(crate) async fn set_archived(
    state: &AppState,
    caller: &Caller,
    name: &str,
    archived: bool,
) -> ApiResult<&'static str> {
    let loaded = load(state, name)?;
    let (operation, action, status) = if archived {
        ("agent:archive", "agent.archive", "archived")
    } else {
        ("agent:restore", "agent.restore", "restored")
    };
    decide(state, caller, operation, &loaded, 0)?;
    let behalf = on_behalf(state, caller, &loaded, Level::Manage)?;
    let event =
        AuditEvent::new(Some(&caller.user.id), action, name).on_behalf_of(behalf.as_deref());
    state.agents.set_archived(name, archived, event).await?;
    Ok(status)
}

async fn archive(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let status = set_archived(&state, &caller, &name, true).await?;
    Ok(Json(json!({ "status": status, "name": name })))
}

async fn restore(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let status = set_archived(&state, &caller, &name, false).await?;
    Ok(Json(json!({ "status": status, "name": name })))
}

#[derive(Deserialize)]
struct TransferBody {
    to: String,
}

async fn transfer(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<TransferBody>,
) -> ApiResult<Json<Value>> {
    let agent = transfer_agent(&state, &caller, &name, &body.to).await?;
    let mut names = Names::new(&state);
    Ok(Json(json!({
        "status": "transferred",
        "name": name,
        "owner": names.user(&agent.owner)?,
    })))
}

/// Give the agent to the user named `to`.
pub(crate) async fn transfer_agent(
    state: &AppState,
    caller: &Caller,
    name: &str,
    to: &str,
) -> ApiResult<Agent> {
    let loaded = load(state, name)?;
    decide(state, caller, "agent:transfer", &loaded, 0)?;
    let to = find_user(state, to)?;
    let behalf = on_behalf(state, caller, &loaded, Level::Owner)?;
    let event = AuditEvent::new(Some(&caller.user.id), "agent.transfer", name)
        .on_behalf_of(behalf.as_deref())
        .concerning(&loaded.agent.owner)
        .concerning(&to.id);
    Ok(state.agents.transfer(name, &to, event).await?)
}

fn find_user(state: &AppState, username: &str) -> ApiResult<User> {
    Ok(state
        .accounts
        .find(username)?
        .ok_or(DomainError::NotFound("user"))?)
}

/// A user as a share names them: the id, and the username while the account
/// exists.
pub(crate) struct UserRef {
    pub id: String,
    pub username: Option<String>,
}

/// Who a share is with, as the shares list shows it.
pub(crate) enum SharedWith {
    User(UserRef),
    Group(String),
    Everyone,
}

impl SharedWith {
    /// How a path (and the console's share form) names it: see
    /// [`ShareTo::parse`]. `None` for an account that is gone.
    pub fn key(&self) -> Option<String> {
        match self {
            SharedWith::User(user) => user.username.as_ref().map(|name| {
                if ShareTo::parse(name) == ShareTo::User(name.clone()) {
                    name.clone()
                } else {
                    format!("user:{name}")
                }
            }),
            SharedWith::Group(name) => Some(format!("group:{name}")),
            SharedWith::Everyone => Some(EVERYONE.to_owned()),
        }
    }
}

/// One grant on an agent as the shares list shows it.
pub(crate) struct Share {
    pub with: SharedWith,
    pub level: Level,
    pub granted_by: UserRef,
    pub at: i64,
    pub expires_at: Option<i64>,
    /// Whether it ran out (it stays listed until removed).
    pub expired: bool,
    /// Whether the grant holds now (not expired, its grantor still has the
    /// rights).
    pub effective: bool,
}

/// The agent's shares with their effective state, for those who may read
/// them; the agent comes along for the caller's further decisions.
pub(crate) fn shares(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> ApiResult<(Arc<AgentState>, Vec<Share>)> {
    let loaded = load(state, name)?;
    decide(state, caller, "agent:shares:read", &loaded, 0)?;
    let ranks = state.agent_ranks(&loaded, None)?;
    let mut names = Names::new(state);
    let mut user = |id: &str| -> ApiResult<UserRef> {
        let v = names.user(id)?;
        Ok(UserRef {
            id: id.to_owned(),
            username: v["username"].as_str().map(str::to_owned),
        })
    };
    let shares = loaded
        .grants
        .iter()
        .map(|g| {
            let with = match g.principal() {
                Principal::User(id) => SharedWith::User(user(id)?),
                Principal::Group(group) => SharedWith::Group(group.to_owned()),
                Principal::Everyone => SharedWith::Everyone,
            };
            Ok(Share {
                with,
                level: g.level,
                granted_by: user(&g.granted_by)?,
                at: g.at,
                expires_at: g.expires_at,
                expired: !loaded.live_grant(g),
                effective: effective(&loaded, &ranks, g),
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok((loaded, shares))
}

async fn list_shares(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let loaded = load(&state, &name)?;
    decide(&state, &caller, "agent:shares:read", &loaded, 0)?;
    let ranks = state.agent_ranks(&loaded, None)?;
    let mut names = Names::new(&state);
    Ok(Json(
        json!({ "shares": shares_json(&mut names, &loaded, &ranks)? }),
    ))
}

/// `limit` and `cursor`, for listings paged by [`Page`].
#[derive(Deserialize)]
struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// The access listing's name for its cursors.
const ACCESS_LISTING: &str = "access";

/// Everyone who reaches the agent and how, for those who may see its
/// shares and admins (`agent:access:read`), keyed by username (by id for an
/// account that is gone) and in that order.
fn who_reaches(state: &AppState, caller: &Caller, name: &str) -> ApiResult<Vec<(String, Reach)>> {
    let loaded = load(state, name)?;
    decide(state, caller, "agent:access:read", &loaded, 0)?;
    let ranks = state.reach_ranks(&loaded, None)?;
    let admin_rank = state.admin_rank(&loaded)?;
    let mut admins = Vec::new();
    for user in state.accounts.list()?.into_iter().filter(|u| u.is_admin) {
        let held = state.reach_ranks(&loaded, Some(&user.id))?;
        let rank = held.get(&user.id).copied().unwrap_or(0);
        admins.push((user.id, rank));
    }
    let with = Reaching {
        ranks: &ranks,
        admins: &admins,
        admin_rank,
        members: &loaded.members,
        now: state.now(),
    };
    let everyone = crate::domain::agents::reach(&loaded.agent, &loaded.grants, &with);
    let mut keyed = Vec::with_capacity(everyone.len());
    for reach in everyone {
        let key = match state.accounts.get(&reach.user)? {
            Some(user) => user.username.clone(),
            None => reach.user.clone(),
        };
        keyed.push((key, reach));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(keyed)
}

/// A grant in a chain: what it gives, who drew it, and, when it names a
/// group or everyone rather than the person, which.
fn grant_fields(names: &mut Names, source: &Source) -> ApiResult<Option<Map<String, Value>>> {
    let Source::Grant {
        to,
        level,
        granted_by,
        at,
        expires_at,
        in_effect,
    } = source
    else {
        return Ok(None);
    };
    let mut out = Map::new();
    let kind = match Principal::of(to) {
        Principal::User(_) => "grant",
        Principal::Group(group) => {
            out.insert("group".into(), json!(group));
            "group"
        }
        Principal::Everyone => {
            out.insert("everyone".into(), json!(true));
            "everyone"
        }
    };
    out.insert("kind".into(), json!(kind));
    out.insert("level".into(), json!(level));
    out.insert("granted_by".into(), names.user(granted_by)?);
    out.insert("at".into(), json!(at));
    out.insert("expires_at".into(), json!(expires_at));
    out.insert("in_effect".into(), json!(in_effect));
    Ok(Some(out))
}

fn link_json(names: &mut Names, link: &Link) -> ApiResult<Value> {
    let user = names.user(&link.user)?;
    if let Some(mut grant) = grant_fields(names, &link.source)? {
        grant.insert("user".into(), user);
        return Ok(Value::Object(grant));
    }
    Ok(match &link.source {
        Source::Owner => json!({ "user": user, "kind": "owner", "level": Level::Owner }),
        Source::Nothing => json!({ "user": user, "kind": "none" }),
        Source::Cycle | Source::Grant { .. } => json!({ "user": user, "kind": "cycle" }),
    })
}

fn reach_json(names: &mut Names, reach: &Reach) -> ApiResult<Value> {
    let mut via = Vec::with_capacity(3);
    if reach.owner {
        via.push(json!({ "kind": "owner", "level": Level::Owner }));
    }
    if let Some(rank) = reach.admin_rank {
        via.push(json!({ "kind": "admin", "level": Level::from_rank(rank) }));
    }
    for chain in &reach.chains {
        let Some((own, above)) = chain.split_first() else {
            continue;
        };
        if let Some(mut grant) = grant_fields(names, &own.source)? {
            let draws_on = above
                .iter()
                .map(|link| link_json(names, link))
                .collect::<ApiResult<Vec<_>>>()?;
            grant.insert("draws_on".into(), Value::Array(draws_on));
            via.push(Value::Object(grant));
        }
    }
    Ok(json!({
        "user": names.user(&reach.user)?,
        "level": Level::from_rank(reach.rank),
        "via": via,
    }))
}

async fn list_access(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<PageQuery>,
) -> ApiResult<(HeaderMap, Json<Value>)> {
    let page = Page::parse(
        query.limit.as_deref(),
        query.cursor.as_deref(),
        ACCESS_LISTING,
    )?;
    let everyone = who_reaches(&state, &caller, &name)?;
    let mut rest = everyone.iter().filter(|(key, _)| page.admits(key));
    let limit = page.limit.unwrap_or(usize::MAX);
    let shown: Vec<&(String, Reach)> = rest.by_ref().take(limit).collect();
    let more = rest.next().is_some();
    let mut names = Names::new(&state);
    let access = shown
        .iter()
        .map(|(_, reach)| reach_json(&mut names, reach))
        .collect::<ApiResult<Vec<_>>>()?;
    let headers = match (more, shown.last(), page.limit) {
        (true, Some((last, _)), Some(limit)) => paging::next_link(
            &format!("/api/agents/{name}/access"),
            &[("limit", limit.to_string())],
            last,
            ACCESS_LISTING,
        ),
        _ => HeaderMap::new(),
    };
    Ok((headers, Json(json!({ "access": access }))))
}

/// Who a share is with, as a request names it.
#[derive(Debug, Clone, PartialEq)]
pub enum ShareTo {
    /// A person, by username.
    User(String),
    /// A group, by name.
    Group(String),
    Everyone,
}

impl ShareTo {
    /// As a path segment (`/shares/{grantee}`) and the console's share form
    /// name it: `group:<name>`, `everyone`, `user:<username>` or a bare
    /// username (usernames hold no `:`, so `user:everyone` is the person
    /// named everyone).
    pub fn parse(text: &str) -> ShareTo {
        if text == EVERYONE {
            ShareTo::Everyone
        } else if let Some(group) = text.strip_prefix("group:") {
            ShareTo::Group(group.to_owned())
        } else {
            ShareTo::User(text.strip_prefix("user:").unwrap_or(text).to_owned())
        }
    }
}

/// A share's grantee, found.
pub(crate) enum Target {
    User(User),
    Group(Group),
    Everyone,
}

impl Target {
    fn grantee(&self) -> Grantee<'_> {
        match self {
            Target::User(user) => Grantee::User(user),
            Target::Group(group) => Grantee::Group(&group.name),
            Target::Everyone => Grantee::Everyone,
        }
    }

    fn principal(&self) -> String {
        self.grantee().principal().id()
    }
}

#[derive(Deserialize)]
struct ShareBody {
    user: Option<String>,
    group: Option<String>,
    everyone: Option<bool>,
    level: String,
    expires_at: Option<i64>,
}

impl ShareBody {
    fn to(&self) -> ApiResult<ShareTo> {
        match (&self.user, &self.group, self.everyone) {
            (Some(user), None, None | Some(false)) => Ok(ShareTo::User(user.clone())),
            (None, Some(group), None | Some(false)) => Ok(ShareTo::Group(group.clone())),
            (None, None, Some(true)) => Ok(ShareTo::Everyone),
            _ => Err(ApiError::BadRequest(
                "name one grantee: \"user\", \"group\" or \"everyone\": true".into(),
            )),
        }
    }
}

async fn share(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<ShareBody>,
) -> ApiResult<Json<Value>> {
    let to = body.to()?;
    let grant = share_agent(&state, &caller, &name, &to, &body.level, body.expires_at).await?;
    let loaded = load(&state, &name)?;
    let ranks = state.agent_ranks(&loaded, None)?;
    let mut names = Names::new(&state);
    Ok(Json(json!({
        "ok": true,
        "share": share_json(&mut names, &loaded, &ranks, &grant)?,
    })))
}

/// Share the agent with `to` at `level` (a level's name) until `expires_at`
/// (unix seconds; `None`: until removed), or change the grant they hold.
pub(crate) async fn share_agent(
    state: &AppState,
    caller: &Caller,
    name: &str,
    to: &ShareTo,
    level: &str,
    expires_at: Option<i64>,
) -> ApiResult<Grant> {
    let level = Level::parse_grantable(level)?;
    if expires_at.is_some_and(|end| end <= state.now()) {
        return Err(ApiError::BadRequest(
            "expires_at must be in the future (unix seconds)".into(),
        ));
    }
    let loaded = load(state, name)?;
    authorize_share(state, caller, &loaded, level, Some(to))?;
    let (target, replaces) = authorize_grantee(state, caller, &loaded, level, to)?;
    // An admin without the rights of their own shares on the owner's behalf:
    // the grant draws on the owner's rights.
    let behalf = on_behalf(state, caller, &loaded, Level::Share)?;
    let granted_by = behalf.clone().unwrap_or_else(|| caller.user.id.clone());
    let mut event = AuditEvent::new(Some(&caller.user.id), "agent.share", name)
        .on_behalf_of(behalf.as_deref())
        .detail(share_detail(&target, level, expires_at));
    if let Target::User(user) = &target {
        event = event.concerning(&user.id);
    }
    Ok(state
        .agents
        .grant(
            name,
            target.grantee(),
            level,
            expires_at,
            &granted_by,
            replaces,
            event,
        )
        .await?)
}

/// What the audit log records of a share or its removal: the level, the
/// expiry, and the group or everyone when it names one.
fn share_detail(target: &Target, level: Level, expires_at: Option<i64>) -> Value {
    let mut detail = json!({ "level": level });
    if let Some(end) = expires_at {
        detail["expires_at"] = json!(end);
    }
    match target {
        Target::User(_) => {}
        Target::Group(group) => detail["group"] = json!(group.name),
        Target::Everyone => detail["everyone"] = json!(true),
    }
    detail
}

/// A share or unshare decision: `grantee("everyone")` joins the facts for
/// a share with everyone, whose level the policy caps.
fn share_request(
    operation: &str,
    loaded: &AgentState,
    caller: &Caller,
    granting: i64,
    grantor: Option<&str>,
    to: Option<&ShareTo>,
) -> crate::authz::policy::RequestFacts {
    let request = AppState::grant_request(operation, loaded, &caller.user.id, granting, grantor);
    match to {
        Some(ShareTo::Everyone) => {
            request.fact("grantee", [biscuit_auth::builder::string(EVERYONE)])
        }
        _ => request,
    }
}

/// The first decision of a share: may the caller share the agent at `level`
/// (with `to`, when known).
pub(crate) fn authorize_share(
    state: &AppState,
    caller: &Caller,
    loaded: &AgentState,
    level: Level,
    to: Option<&ShareTo>,
) -> ApiResult<()> {
    let request = share_request("agent:share", loaded, caller, level.rank(), None, to);
    decide_request(state, caller, "agent:share", loaded, request)
}

/// The rest of a share's decisions, once [`authorize_share`] allowed it: the
/// grantee exists (a person other than the caller, or a group the caller
/// may see), and a grant it already holds (which the share replaces, and
/// which belongs to whoever drew it) is one the caller may replace. Answers
/// the grantee and that grant.
pub(crate) fn authorize_grantee<'a>(
    state: &AppState,
    caller: &Caller,
    loaded: &'a AgentState,
    level: Level,
    to: &ShareTo,
) -> ApiResult<(Target, Option<&'a Grant>)> {
    let target = match to {
        ShareTo::User(username) => {
            let grantee = find_user(state, username)?;
            if grantee.id == caller.user.id {
                return Err(ApiError::BadRequest(
                    "you cannot share an agent with yourself".into(),
                ));
            }
            Target::User(grantee)
        }
        ShareTo::Group(group) => Target::Group(super::groups::visible(state, caller, group)?),
        ShareTo::Everyone => Target::Everyone,
    };
    let principal = target.principal();
    let replaces = loaded.grants.iter().find(|g| g.grantee == principal);
    if let Some(existing) = replaces {
        let request = share_request(
            "agent:share",
            loaded,
            caller,
            level.rank(),
            Some(&existing.granted_by),
            Some(to),
        );
        decide_request(state, caller, "agent:share", loaded, request)?;
    }
    Ok((target, replaces))
}

/// The expiry of the grant `to` holds on the agent now (`None`: none, or
/// no grant), for changes that keep it.
pub(crate) fn current_expiry(state: &AppState, name: &str, to: &ShareTo) -> ApiResult<Option<i64>> {
    let loaded = load(state, name)?;
    let principal = match to {
        ShareTo::User(username) => state.accounts.find(username)?.map(|u| u.id),
        ShareTo::Group(group) => Some(crate::domain::groups::group_principal(group)),
        ShareTo::Everyone => Some(EVERYONE.to_owned()),
    };
    Ok(principal
        .and_then(|p| loaded.grants.iter().find(|g| g.grantee == p))
        .and_then(|g| g.expires_at))
}

async fn unshare(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, grantee)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    unshare_agent(&state, &caller, &name, &ShareTo::parse(&grantee)).await?;
    Ok(Json(json!({ "ok": true })))
}

/// Remove the grant `from` holds on the agent; for the grantee themselves,
/// leave it.
pub(crate) async fn unshare_agent(
    state: &AppState,
    caller: &Caller,
    name: &str,
    from: &ShareTo,
) -> ApiResult<()> {
    let loaded = load(state, name)?;
    let (grant, leaving) = authorize_unshare(state, caller, &loaded, from)?;
    let behalf = if leaving {
        None
    } else {
        on_behalf(state, caller, &loaded, Level::Share)?
    };
    let mut detail = json!({ "level": grant.level });
    match grant.principal() {
        Principal::User(_) => {}
        Principal::Group(group) => detail["group"] = json!(group),
        Principal::Everyone => detail["everyone"] = json!(true),
    }
    if let Some(end) = grant.expires_at {
        detail["expires_at"] = json!(end);
        detail["expired"] = json!(!loaded.live_grant(grant));
    }
    let mut event = AuditEvent::new(Some(&caller.user.id), "agent.unshare", name)
        .on_behalf_of(behalf.as_deref())
        .detail(detail);
    if let Principal::User(id) = grant.principal() {
        event = event.concerning(id);
    }
    state.agents.revoke(name, grant, event).await?;
    Ok(())
}

/// The decisions of an unshare: the grant `from` holds, and whether the
/// caller is leaving (it is their own grant) or may remove it (it is one
/// they answer for). Answers the grant and whether leaving. A group's or
/// everyone's grant is never left: a member leaves the group instead.
pub(crate) fn authorize_unshare<'a>(
    state: &AppState,
    caller: &Caller,
    loaded: &'a AgentState,
    from: &ShareTo,
) -> ApiResult<(&'a Grant, bool)> {
    let principal = match from {
        ShareTo::User(username) => state.accounts.find(username)?.map(|u| u.id),
        ShareTo::Group(group) => Some(crate::domain::groups::group_principal(group)),
        ShareTo::Everyone => Some(EVERYONE.to_owned()),
    };
    let grant = principal.and_then(|p| loaded.grants.iter().find(|g| g.grantee == p));
    let Some(grant) = grant else {
        // Say "no such grant" only to those who may read the shares.
        decide(state, caller, "agent:shares:read", loaded, 0)?;
        return Err(DomainError::NotFound("share").into());
    };
    let leaving = grant.grantee == caller.user.id;
    if leaving {
        decide(state, caller, "agent:leave", loaded, 0)?;
    } else {
        decide_on_grant(
            state,
            caller,
            "agent:unshare",
            loaded,
            grant.level.rank(),
            Some(&grant.granted_by),
        )?;
    }
    Ok((grant, leaving))
}

/// Runtime tokens live a year; rotating (asking again) ends the previous one.
const RUNTIME_TTL_SECS: i64 = 365 * 24 * 60 * 60;

/// Issue (or rotate) the agent's runtime token: with it the agent reads the
/// secrets bound to it, the memory of users who granted it, and its
/// conversations. Only the owner mints it: it is theirs, and dies when the
/// agent is transferred, archived or deleted, or the owner is deleted.
async fn runtime_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let (runtime, token) = rotate_runtime_token(&state, &caller, &name).await?;
    Ok(Json(json!({
        "agent": name,
        "id": runtime.id,
        "token": token,
        "expires_at": runtime.expires_at,
    })))
}

/// The new runtime record and its token (to be shown once).
pub(crate) async fn rotate_runtime_token(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> ApiResult<(Runtime, String)> {
    let loaded = load(state, name)?;
    decide(state, caller, "agent:runtime", &loaded, 0)?;
    let runtime = crate::domain::channels::rotate_runtime(
        &state.store,
        name,
        &caller.user.id,
        RUNTIME_TTL_SECS,
    )
    .await?;
    let token = state
        .authz
        .mint_runtime(name, &runtime.id, runtime.expires_at)?;
    AuditEvent::new(Some(&caller.user.id), "agent.runtime_token", name)
        .append(&state.store)
        .await?;
    Ok((runtime, token))
}

/// End the agent's runtime token: for its owner, those who manage the agent
/// and admins (audited on the owner's behalf), who never obtain one.
async fn revoke_runtime_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    end_runtime_token(&state, &caller, &name).await?;
    Ok(Json(json!({ "ok": true })))
}

pub(crate) async fn end_runtime_token(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> ApiResult<()> {
    let loaded = load(state, name)?;
    decide(state, caller, "agent:runtime:revoke", &loaded, 0)?;
    let behalf = on_behalf(state, caller, &loaded, Level::Manage)?;
    let event = AuditEvent::new(Some(&caller.user.id), "agent.runtime_revoke", name)
        .on_behalf_of(behalf.as_deref())
        .concerning(&loaded.agent.owner);
    crate::domain::channels::revoke_runtime(&state.store, name, event).await?;
    Ok(())
}
