//! `/api/groups`: groups of people that agents can be shared with. Who may
//! create, see and manage a group is the policy's (`datalog/auth.dl`);
//! what a membership confers on an agent is `datalog/agents.dl`'s.
//!
//! A group the caller may not see answers 404 exactly like one that does
//! not exist; one they see but may not manage is 403.

use axum::extract::{Path, State};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::authz::policy::RequestFacts;
use crate::authz::AuthError;
use crate::domain::audit::AuditEvent;
use crate::domain::groups::Group;
use crate::domain::users::User;
use crate::domain::DomainError;
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Caller};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/groups", get(list).post(create))
        .route("/api/groups/{name}", get(read).delete(remove))
        .route(
            "/api/groups/{name}/members/{username}",
            put(add_member).delete(remove_member),
        )
}

fn not_found() -> ApiError {
    ApiError::Domain(DomainError::NotFound("group"))
}

/// The facts of a request about `group`: its owner, whether the caller
/// belongs to it, the member a change is about, and whether people may
/// create groups of their own.
fn request(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    group: Option<&Group>,
    target: Option<&str>,
) -> ApiResult<RequestFacts> {
    use biscuit_auth::builder::{boolean, string};
    let mut facts = RequestFacts::new(operation);
    if state.config.user_groups {
        facts = facts.fact("user_groups", [boolean(true)]);
    }
    if let Some(group) = group {
        facts = facts.fact("group_owner", [string(&group.owner)]);
        if state.groups.is_member(&group.name, &caller.user.id)? {
            facts = facts.fact("group_member", [string(&caller.user.id)]);
        }
    }
    if let Some(target) = target {
        facts = facts.fact("target_user", [string(target)]);
    }
    Ok(facts)
}

/// Whether the policy allows it; only limits and faults are errors.
fn allowed(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    group: Option<&Group>,
    target: Option<&str>,
) -> ApiResult<bool> {
    match state.authorize(caller, request(state, caller, operation, group, target)?) {
        Ok(()) => Ok(true),
        Err(AuthError::Denied(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The group named `name`, when the caller may see it (its members, its
/// owner and admins); otherwise not found, as if it did not exist.
pub(crate) fn visible(state: &AppState, caller: &Caller, name: &str) -> ApiResult<Group> {
    let group = state.groups.get(name)?.ok_or_else(not_found)?;
    if allowed(state, caller, "group:read", Some(&group), None)? {
        Ok(group)
    } else {
        Err(not_found())
    }
}

/// Decide `operation` on a group the caller may see.
fn decide(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    group: &Group,
    target: Option<&str>,
) -> ApiResult<()> {
    Ok(state.authorize(
        caller,
        request(state, caller, operation, Some(group), target)?,
    )?)
}

/// The groups the caller sees in a listing: theirs (owned or joined), or
/// every group for an admin; in name order.
pub(crate) fn listed(state: &AppState, caller: &Caller) -> ApiResult<Vec<Group>> {
    state.authorize(caller, request(state, caller, "group:list", None, None)?)?;
    let all = allowed(state, caller, "group:list_all", None, None)?;
    let joined = state.groups.of(&caller.user.id)?;
    Ok(state
        .groups
        .all()?
        .into_iter()
        .filter(|g| all || g.owner == caller.user.id || joined.contains(&g.name))
        .collect())
}

/// A group as the API shows it; with its members for those who may see them.
pub(crate) struct GroupView {
    pub group: Group,
    pub owner: Option<String>,
    /// `(id, username)` of each member; `None` in listings.
    pub members: Option<Vec<(String, Option<String>)>>,
    pub member: bool,
    pub manage: bool,
}

fn username(state: &AppState, id: &str) -> ApiResult<Option<String>> {
    Ok(state.accounts.get(id)?.map(|u| u.username.clone()))
}

pub(crate) fn view(
    state: &AppState,
    caller: &Caller,
    group: Group,
    with_members: bool,
) -> ApiResult<GroupView> {
    let owner = username(state, &group.owner)?;
    let member = state.groups.is_member(&group.name, &caller.user.id)?;
    let manage = allowed(state, caller, "group:delete", Some(&group), None)?;
    let members = if with_members {
        let mut out = Vec::new();
        for id in state.groups.members(&group.name)? {
            let name = username(state, &id)?;
            out.push((id, name));
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Some(out)
    } else {
        None
    };
    Ok(GroupView {
        group,
        owner,
        members,
        member,
        manage,
    })
}

fn view_json(view: &GroupView) -> Value {
    let g = &view.group;
    let mut out = json!({
        "name": g.name,
        "display_name": g.display_name,
        "owner": { "id": g.owner, "username": view.owner },
        "created_at": g.created_at,
        "member": view.member,
        "manage": view.manage,
    });
    if let Some(members) = &view.members {
        out["members"] = members
            .iter()
            .map(|(id, username)| json!({ "id": id, "username": username }))
            .collect();
    }
    out
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let groups = listed(&state, &caller)?
        .into_iter()
        .map(|g| Ok(view_json(&view(&state, &caller, g, false)?)))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({ "groups": groups })))
}

#[derive(Deserialize)]
struct CreateBody {
    name: String,
    display_name: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateBody>,
) -> ApiResult<Json<Value>> {
    let group = create_group(&state, &caller, &body.name, body.display_name.as_deref()).await?;
    Ok(Json(json!({
        "ok": true,
        "group": view_json(&view(&state, &caller, group, true)?),
    })))
}

pub(crate) async fn create_group(
    state: &AppState,
    caller: &Caller,
    name: &str,
    display_name: Option<&str>,
) -> ApiResult<Group> {
    state.authorize(caller, request(state, caller, "group:create", None, None)?)?;
    let event = AuditEvent::new(Some(&caller.user.id), "group.create", name);
    Ok(state
        .groups
        .create(&caller.user.id, name, display_name, event)
        .await?)
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let group = visible(&state, &caller, &name)?;
    Ok(Json(view_json(&view(&state, &caller, group, true)?)))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    delete_group(&state, &caller, &name).await?;
    Ok(Json(
        json!({ "ok": true, "status": "deleted", "name": name }),
    ))
}

/// Delete the group, its memberships and every grant to it.
pub(crate) async fn delete_group(state: &AppState, caller: &Caller, name: &str) -> ApiResult<()> {
    let group = visible(state, caller, name)?;
    decide(state, caller, "group:delete", &group, None)?;
    let mut event =
        AuditEvent::new(Some(&caller.user.id), "group.delete", name).concerning(&group.owner);
    for member in state.groups.members(name)? {
        event = event.concerning(&member);
    }
    state.groups.delete(name, event).await?;
    Ok(())
}

fn find_user(state: &AppState, username: &str) -> ApiResult<User> {
    Ok(state
        .accounts
        .find(username)?
        .ok_or(DomainError::NotFound("user"))?)
}

async fn add_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, username)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let added = add_group_member(&state, &caller, &name, &username).await?;
    Ok(Json(json!({ "ok": true, "added": added })))
}

/// Add the user named `username`; answers whether they were not a member yet.
pub(crate) async fn add_group_member(
    state: &AppState,
    caller: &Caller,
    name: &str,
    username: &str,
) -> ApiResult<bool> {
    let group = visible(state, caller, name)?;
    decide(state, caller, "group:members:add", &group, None)?;
    let user = find_user(state, username)?;
    let event = AuditEvent::new(Some(&caller.user.id), "group.member_add", name)
        .concerning(&user.id)
        .concerning(&group.owner);
    Ok(state
        .groups
        .add_member(name, &user.id, &caller.user.id, event)
        .await?)
}

async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, username)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    remove_group_member(&state, &caller, &name, &username).await?;
    Ok(Json(json!({ "ok": true })))
}

/// Take the user named `username` out of the group: its managers may, and
/// a member may leave. Their access through the group ends with the commit.
pub(crate) async fn remove_group_member(
    state: &AppState,
    caller: &Caller,
    name: &str,
    username: &str,
) -> ApiResult<()> {
    let group = visible(state, caller, name)?;
    let user = state.accounts.find(username)?;
    let target = user.as_ref().map(|u| u.id.as_str());
    decide(state, caller, "group:members:remove", &group, target)?;
    let user = user.ok_or(DomainError::NotFound("member"))?;
    let action = if user.id == caller.user.id {
        "group.leave"
    } else {
        "group.member_remove"
    };
    let event = AuditEvent::new(Some(&caller.user.id), action, name)
        .concerning(&user.id)
        .concerning(&group.owner);
    state.groups.remove_member(name, &user.id, event).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_shows_its_owner_and_members() {
        let view = GroupView {
            group: Group {
                name: "family".into(),
                display_name: "The family".into(),
                owner: "u1".into(),
                created_at: 5,
                revision: 0,
            },
            owner: Some("olga".into()),
            members: Some(vec![("u1".into(), Some("olga".into()))]),
            member: true,
            manage: true,
        };
        let out = view_json(&view);
        assert_eq!(out["owner"]["username"], "olga");
        assert_eq!(out["members"][0]["username"], "olga");
        assert_eq!(out["display_name"], "The family");
    }
}
