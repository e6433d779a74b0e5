//! The console's groups: the ones I own or belong to (all, for admins),
//! creating one, and a group's page to add and remove members, leave, or
//! delete it. Every act goes through the same functions as `/api/groups`
//! (`crate::http::groups`), so the policy decides here exactly as there.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;

use super::agent::PageForm;
use super::{error_page, page, see_other, when, Chrome, Done, Person};
use crate::authz::policy::RequestFacts;
use crate::error::ApiResult;
use crate::http::csrf::CsrfToken;
use crate::http::groups as api;
use crate::state::{AppState, Caller};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/groups", get(list).post(create))
        .route("/console/groups/{name}", get(show))
        .route("/console/groups/{name}/members", get(back).post(add_member))
        .route(
            "/console/groups/{name}/members/{user}/delete",
            get(back).post(remove_member),
        )
        .route("/console/groups/{name}/delete", get(back).post(delete))
}

/// A reload or a bookmark of where a form posted lands on the group.
async fn back(Path(params): Path<Vec<(String, String)>>) -> Response {
    match params.iter().find(|(k, _)| k == "name") {
        Some((_, name)) => see_other(&format!("/console/groups/{name}")),
        None => see_other("/console/groups"),
    }
}

const NOTICES: &[(&str, &str)] = &[
    ("created", "The group was created."),
    ("added", "The member was added."),
    ("removed", "The member was removed."),
    ("left", "You left the group."),
    (
        "deleted",
        "The group was deleted, with every share with it.",
    ),
];

pub struct GroupRow {
    pub name: String,
    pub display_name: String,
    pub owner: String,
    pub member: bool,
}

#[derive(Template)]
#[template(path = "groups.html")]
struct GroupsPage {
    chrome: Chrome,
    rows: Vec<GroupRow>,
    can_create: bool,
}

fn owner_label(owner: Option<String>) -> String {
    owner.unwrap_or_else(|| "(deleted user)".into())
}

async fn list(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Query(done): Query<Done>,
) -> Response {
    let rows = || -> ApiResult<Vec<GroupRow>> {
        api::listed(&state, &caller)?
            .into_iter()
            .map(|g| {
                let view = api::view(&state, &caller, g, false)?;
                Ok(GroupRow {
                    name: view.group.name,
                    display_name: view.group.display_name,
                    owner: owner_label(view.owner),
                    member: view.member,
                })
            })
            .collect()
    };
    match rows() {
        Ok(rows) => {
            let can_create = state.authorize(&caller, create_request(&state)).is_ok();
            let chrome = Chrome::new(&csrf, Some(&caller), "groups").notice(done.notice(NOTICES));
            page(
                StatusCode::OK,
                &GroupsPage {
                    chrome,
                    rows,
                    can_create,
                },
            )
        }
        Err(e) => error_page(&csrf, Some(&caller), e, "/console").await,
    }
}

/// The facts `group:create` is decided on (the operator's switch).
fn create_request(state: &AppState) -> RequestFacts {
    let request = RequestFacts::new("group:create");
    if state.config.user_groups {
        request.fact("user_groups", [biscuit_auth::builder::boolean(true)])
    } else {
        request
    }
}

#[derive(Deserialize)]
struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    display_name: String,
}

async fn create(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    PageForm(form): PageForm<CreateForm>,
) -> Response {
    let display = Some(form.display_name.trim()).filter(|d| !d.is_empty());
    match api::create_group(&state, &caller, form.name.trim(), display).await {
        Ok(group) => see_other(&format!("/console/groups/{}?ok=created", group.name)),
        Err(e) => error_page(&csrf, Some(&caller), e, "/console/groups").await,
    }
}

pub struct MemberRow {
    pub username: String,
    /// Whether I may take them out (or, for me, leave).
    pub can_remove: bool,
    pub me: bool,
}

pub struct SharedRow {
    pub agent: String,
    pub level: &'static str,
    pub expires: Option<String>,
    pub expired: bool,
}

#[derive(Template)]
#[template(path = "group.html")]
struct GroupPage {
    chrome: Chrome,
    name: String,
    display_name: String,
    owner: String,
    created: String,
    members: Vec<MemberRow>,
    /// The agents shared with the group that I can see.
    shared: Vec<SharedRow>,
    manage: bool,
}

async fn show(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(name): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    match group_page(&state, &caller, &name) {
        Ok(mut page_data) => {
            page_data.chrome =
                Chrome::new(&csrf, Some(&caller), "groups").notice(done.notice(NOTICES));
            page(StatusCode::OK, &page_data)
        }
        Err(e) => error_page(&csrf, Some(&caller), e, "/console/groups").await,
    }
}

fn group_page(state: &AppState, caller: &Caller, name: &str) -> ApiResult<GroupPage> {
    let group = api::visible(state, caller, name)?;
    let view = api::view(state, caller, group, true)?;
    let members = view
        .members
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(id, username)| {
            let username = username?;
            let me = id == caller.user.id;
            Some(MemberRow {
                username,
                can_remove: view.manage || me,
                me,
            })
        })
        .collect();
    // The agents shared with the group, among those I may read: the
    // listing decides, so nothing unseen is named here.
    let principal = crate::domain::groups::group_principal(&view.group.name);
    let mut shared = Vec::new();
    for loaded in crate::http::agents::readable(state, caller)? {
        if let Some(grant) = loaded.grants.iter().find(|g| g.grantee == principal) {
            shared.push(SharedRow {
                agent: loaded.agent.name.clone(),
                level: grant.level.as_str(),
                expires: grant.expires_at.map(when),
                expired: !loaded.live_grant(grant),
            });
        }
    }
    Ok(GroupPage {
        chrome: Chrome {
            nav: None,
            csrf: String::new(),
            section: "groups",
            notice: None,
            error: None,
        },
        name: view.group.name,
        display_name: view.group.display_name,
        owner: owner_label(view.owner),
        created: when(view.group.created_at),
        members,
        shared,
        manage: view.manage,
    })
}

#[derive(Deserialize)]
struct MemberForm {
    #[serde(default)]
    user: String,
}

async fn add_member(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(name): Path<String>,
    PageForm(form): PageForm<MemberForm>,
) -> Response {
    match api::add_group_member(&state, &caller, &name, form.user.trim()).await {
        Ok(_) => see_other(&format!("/console/groups/{name}?ok=added")),
        Err(e) => error_page(&csrf, Some(&caller), e, &format!("/console/groups/{name}")).await,
    }
}

async fn remove_member(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path((name, user)): Path<(String, String)>,
) -> Response {
    match api::remove_group_member(&state, &caller, &name, &user).await {
        Ok(()) if user.eq_ignore_ascii_case(&caller.user.username) => {
            see_other("/console/groups?ok=left")
        }
        Ok(()) => see_other(&format!("/console/groups/{name}?ok=removed")),
        Err(e) => error_page(&csrf, Some(&caller), e, &format!("/console/groups/{name}")).await,
    }
}

async fn delete(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    Path(name): Path<String>,
) -> Response {
    match api::delete_group(&state, &caller, &name).await {
        Ok(()) => see_other("/console/groups?ok=deleted"),
        Err(e) => error_page(&csrf, Some(&caller), e, &format!("/console/groups/{name}")).await,
    }
}
