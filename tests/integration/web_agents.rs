//! The console's page for one agent and the token inspector, as a browser
//! sees them: signed out, as the owner, as a sharee at every level, as a
//! stranger and as an admin. The forms a page shows (by their `action`)
//! must match the policy exactly, a forged post for a form not shown must be
//! refused with nothing changed, and every error is a page in words.
//!
//! To extend: add a row to `SHOWN` (and a body to `forged_body`).

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

use crate::helpers::{Auth, TestApp, TEST_CSRF};

/// A page as the browser got it.
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    html: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `action` of every form on the page.
    fn actions(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for form in self.html.split("<form").skip(1) {
            let tag = &form[..form.find('>').unwrap_or(form.len())];
            if let Some(rest) = tag.split("action=\"").nth(1) {
                out.insert(rest[..rest.find('"').unwrap()].to_owned());
            }
        }
        out
    }

    /// The HTML of the form posting to `action`.
    fn form(&self, action: &str) -> Option<&str> {
        let start = self.html.find(&format!("action=\"{action}\""))?;
        let rest = &self.html[start..];
        Some(&rest[..rest.find("</form>")?])
    }

    /// The option values of the select `name` in the form posting to
    /// `action`.
    fn options(&self, action: &str, name: &str) -> Vec<String> {
        let Some(form) = self.form(action) else {
            return Vec::new();
        };
        let Some(start) = form.find(&format!("<select name=\"{name}\"")) else {
            return Vec::new();
        };
        let select = &form[start..form[start..].find("</select>").unwrap() + start];
        select
            .split("<option value=\"")
            .skip(1)
            .map(|o| o[..o.find('"').unwrap()].to_owned())
            .collect()
    }

    /// The token a page shows once.
    fn once(&self) -> Option<String> {
        let rest = self.html.split("<code id=\"once-token\">").nth(1)?;
        Some(rest[..rest.find("</code>")?].to_owned())
    }

    /// An HTML page, never a JSON error.
    fn assert_html(&self) {
        let ct = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            ct.starts_with("text/html"),
            "{} {ct}: {}",
            self.status,
            self.html
        );
        assert!(!self.html.trim_start().starts_with('{'), "{}", self.html);
    }
}

/// A browser request: the session cookie with the CSRF cookie, and a form
/// carrying the CSRF field as tessera's own pages do.
async fn browse(
    app: &TestApp,
    method: Method,
    path: &str,
    session: Option<&str>,
    form: Option<&[(&str, &str)]>,
) -> Page {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("accept", "text/html");
    if let Some(token) = session {
        req = req.header(
            "cookie",
            format!("taos_session={token}; csrf_token={TEST_CSRF}"),
        );
    }
    let body = match form {
        Some(fields) => {
            let mut all = fields.to_vec();
            all.push(("csrf_token", TEST_CSRF));
            req = req.header("content-type", "application/x-www-form-urlencoded");
            Body::from(serde_urlencoded::to_string(&all).unwrap())
        }
        None => Body::empty(),
    };
    let resp = app
        .router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Page {
        status,
        headers,
        html: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(app: &TestApp, path: &str, session: &str) -> Page {
    browse(app, Method::GET, path, Some(session), None).await
}

async fn post(app: &TestApp, path: &str, session: &str, form: &[(&str, &str)]) -> Page {
    browse(app, Method::POST, path, Some(session), Some(form)).await
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Owner,
    Admin,
    /// `gina`, holding a grant at this level from the owner.
    Sharee(&'static str),
}

const COLUMNS: [Who; 7] = [
    Who::Owner,
    Who::Admin,
    Who::Sharee("view"),
    Who::Sharee("use"),
    Who::Sharee("edit"),
    Who::Sharee("manage"),
    Who::Sharee("share"),
];

/// Which forms the agent's page shows to each column (1: shown), by action
/// under `/console/agents/helper`; `{token}` and `{channel}` stand for the
/// owner's token and channel. The agent is active, so restore is shown to
/// nobody.
///   owner admin | view use edit manage share
#[rustfmt::skip]
const SHOWN: &[(&str, [u8; 7])] = &[
    ("/edit",                    [1, 1,  0, 0, 1, 1, 1]),
    ("/shares",                  [1, 1,  0, 0, 0, 0, 1]),
    // tina's grant is the owner's: a sharer below the owner cannot touch it.
    ("/shares/tina",             [1, 1,  0, 0, 0, 0, 0]),
    ("/shares/tina/delete",      [1, 1,  0, 0, 0, 0, 0]),
    ("/leave",                   [0, 0,  1, 1, 1, 1, 1]),
    ("/tokens",                  [1, 1,  0, 0, 0, 1, 1]),
    // Admins see and revoke every token; others only their own.
    ("/tokens/{token}/revoke",   [1, 1,  0, 0, 0, 0, 0]),
    ("/runtime",                 [1, 0,  0, 0, 0, 0, 0]),
    ("/runtime/revoke",          [1, 1,  0, 0, 0, 1, 1]),
    ("/channels",                [1, 1,  0, 0, 0, 1, 1]),
    // A channel is its owner's private data: nobody else sees it.
    ("/channels/{channel}/toggle", [1, 0,  0, 0, 0, 0, 0]),
    ("/channels/{channel}/delete", [1, 0,  0, 0, 0, 0, 0]),
    ("/transfer",                [1, 1,  0, 0, 0, 0, 0]),
    ("/archive",                 [1, 1,  0, 0, 0, 1, 1]),
    ("/restore",                 [0, 0,  0, 0, 0, 0, 0]),
    ("/delete",                  [1, 0,  0, 0, 0, 0, 0]),
];

/// The levels each column's share and mint forms offer.
fn offered(who: Who, form: &str) -> Vec<&'static str> {
    let all = ["view", "use", "edit", "manage", "share"];
    let upto = |top: &str| all[..=all.iter().position(|l| *l == top).unwrap()].to_vec();
    match (who, form) {
        (Who::Owner | Who::Admin, _) => upto("share"),
        (Who::Sharee("share"), _) => upto("share"),
        (Who::Sharee("manage"), "/tokens") => upto("manage"),
        _ => Vec::new(),
    }
}

/// One host: `olive` owns `helper` (display name "Helper", a `model` field)
/// with a runtime token, a delegated token and a webhook channel; `tina`
/// holds `view` from olive; `zed` is a bystander; `alice` is the admin.
struct World {
    app: TestApp,
    alice: String,
    olive: String,
    token_id: String,
    channel_id: String,
}

impl World {
    async fn new() -> Self {
        let app = TestApp::new();
        let alice = app.setup_admin().await;
        let olive = app.add_user(&alice, "olive", "olive-password").await;
        app.add_user(&alice, "tina", "tina-password").await;
        app.add_user(&alice, "zed", "zed-password").await;
        let r = app
            .post(
                "/api/agents",
                &olive,
                json!({"name": "helper", "display_name": "Helper", "model": "small"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        api_share(&app, &olive, "tina", "view").await;
        let r = app
            .post("/api/agents/helper/runtime-token", &olive, json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = app
            .post(
                "/api/tokens",
                &olive,
                json!({"agent": "helper", "level": "view", "expires_in": 3600, "label": "ci"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let token_id = r.body["id"].as_str().unwrap().to_owned();
        let r = app
            .post(
                "/api/channels",
                &olive,
                json!({"agent_name": "helper", "type": "webhook"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let channel_id = r.body["id"].as_str().unwrap().to_owned();
        Self {
            app,
            alice,
            olive,
            token_id,
            channel_id,
        }
    }

    async fn caller(&self, who: Who) -> String {
        match who {
            Who::Owner => self.olive.clone(),
            Who::Admin => self.alice.clone(),
            Who::Sharee(level) => {
                let gina = self
                    .app
                    .add_user(&self.alice, "gina", "gina-password")
                    .await;
                api_share(&self.app, &self.olive, "gina", level).await;
                gina
            }
        }
    }

    fn path(&self, suffix: &str) -> String {
        format!(
            "/console/agents/helper{}",
            suffix
                .replace("{token}", &self.token_id)
                .replace("{channel}", &self.channel_id)
        )
    }

    /// Everything the store holds: a refused post must leave it as it was.
    fn snapshot(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.app.state.store.export().unwrap()
    }
}

async fn api_share(app: &TestApp, by: &str, user: &str, level: &str) {
    let r = app
        .post(
            "/api/agents/helper/shares",
            by,
            json!({"user": user, "level": level}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// What a forged post for `action` sends: what the form would.
fn forged_body(action: &str) -> Vec<(&'static str, &'static str)> {
    match action {
        "/edit" => vec![("field.display_name", "Hacked")],
        "/shares" => vec![("user", "zed"), ("level", "view")],
        "/shares/tina" => vec![("level", "use")],
        "/tokens" => vec![("level", "view"), ("expires_in", "3600")],
        "/channels" => vec![("type", "webhook")],
        "/transfer" => vec![("to", "zed")],
        "/delete" => vec![("confirm", "yes")],
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn signed_out_browsers_are_sent_to_sign_in() {
    let w = World::new().await;
    for path in ["/console/agents/helper", "/console/inspect"] {
        let p = browse(&w.app, Method::GET, path, None, None).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{path}");
        let next = serde_urlencoded::to_string([("next", path)]).unwrap();
        assert_eq!(p.location(), format!("/auth/login?{next}"));
    }
    for path in [
        "/console/agents/helper/edit",
        "/console/agents/helper/delete",
        "/console/inspect",
    ] {
        let p = browse(
            &w.app,
            Method::POST,
            path,
            None,
            Some(&[("confirm", "yes")]),
        )
        .await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{path}");
        assert!(p.location().starts_with("/auth/login?"), "{path}");
    }
    assert!(w.app.state.agents.get("helper").unwrap().is_some());
}

/// Every column: the forms shown are exactly the policy's, the level
/// selects offer exactly what may be conferred, and a forged post for each
/// form not shown is refused in words with the store unchanged.
#[tokio::test]
async fn the_page_offers_what_the_policy_allows_and_nothing_else() {
    for (col, who) in COLUMNS.iter().enumerate() {
        let w = World::new().await;
        let session = w.caller(*who).await;
        let page = get(&w.app, "/console/agents/helper", &session).await;
        assert_eq!(page.status, StatusCode::OK, "{who:?}: {}", page.html);
        page.assert_html();
        assert!(page.html.contains("Helper") && page.html.contains("olive"));
        let expected: BTreeSet<String> = SHOWN
            .iter()
            .filter(|(_, cols)| cols[col] == 1)
            .map(|(action, _)| w.path(action))
            .collect();
        let shown: BTreeSet<String> = page
            .actions()
            .into_iter()
            .filter(|a| a.starts_with("/console/agents/"))
            .collect();
        assert_eq!(shown, expected, "{who:?}");
        assert_eq!(
            page.html.contains("Shared with"),
            SHOWN[1].1[col] == 1,
            "{who:?} sees the shares"
        );
        for form in ["/shares", "/tokens"] {
            assert_eq!(
                page.options(&w.path(form), "level"),
                offered(*who, form),
                "{who:?} {form}"
            );
        }
        let level = match who {
            Who::Owner => "owner",
            Who::Admin => "manage",
            Who::Sharee(level) => level,
        };
        assert!(
            page.html.contains(&format!(
                "my level <span class=\"level level-{level}\">{level}</span>"
            )),
            "{who:?} sees their level"
        );

        for (action, cols) in SHOWN {
            if cols[col] == 1 {
                continue;
            }
            // Restoring an active agent is hidden for its state, not refused.
            let manages = matches!(
                who,
                Who::Owner | Who::Admin | Who::Sharee("manage" | "share")
            );
            if *action == "/restore" && manages {
                continue;
            }
            let before = w.snapshot();
            let p = post(&w.app, &w.path(action), &session, &forged_body(action)).await;
            assert!(
                p.status == StatusCode::FORBIDDEN || p.status == StatusCode::NOT_FOUND,
                "{who:?} forged {action}: {} {}",
                p.status,
                p.html
            );
            p.assert_html();
            assert!(p.once().is_none(), "{who:?} {action}");
            assert!(
                w.snapshot() == before,
                "{who:?} forged {action} changed the store"
            );
        }
    }
}

/// A stranger learns nothing: the page and every post answer exactly as
/// for an agent that does not exist.
#[tokio::test]
async fn a_stranger_cannot_tell_the_agent_exists() {
    let w = World::new().await;
    let sam = w.app.add_user(&w.alice, "sam", "sam-password").await;
    let seen = get(&w.app, "/console/agents/helper", &sam).await;
    let missing = get(&w.app, "/console/agents/nosuch", &sam).await;
    assert_eq!(seen.status, StatusCode::NOT_FOUND);
    seen.assert_html();
    assert_eq!(seen.html, missing.html);
    assert!(!seen.html.contains("olive") && !seen.html.contains("Helper"));
    assert!(seen
        .actions()
        .iter()
        .all(|a| !a.starts_with("/console/agents/")));

    for (action, _) in SHOWN {
        let before = w.snapshot();
        let body = forged_body(action);
        let p = post(&w.app, &w.path(action), &sam, &body).await;
        let other = w.path(action).replace("/helper", "/nosuch");
        let q = post(&w.app, &other, &sam, &body).await;
        assert_eq!(p.status, StatusCode::NOT_FOUND, "{action}: {}", p.html);
        p.assert_html();
        assert_eq!(p.html, q.html, "{action}");
        assert!(
            w.snapshot() == before,
            "stranger's {action} changed the store"
        );
    }
}

#[tokio::test]
async fn a_token_minted_on_the_page_is_shown_once_and_works() {
    let w = World::new().await;
    let action = w.path("/tokens");
    let p = post(
        &w.app,
        &action,
        &w.olive,
        &[
            ("level", "view"),
            ("expires_in", "86400"),
            ("label", "laptop"),
        ],
    )
    .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.html);
    p.assert_html();
    assert_eq!(
        p.headers.get("cache-control").unwrap().to_str().unwrap(),
        "no-store"
    );
    let token = p.once().expect("the token is shown");
    assert!(p.html.contains("data-copy=\"once-token\""));
    assert!(p.location().is_empty());

    // It works, for what it was minted for.
    let r = w.app.get("/api/agents/helper", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["access"], "view");

    // Listed (with its label, level and issuer), never shown again.
    let again = get(&w.app, "/console/agents/helper", &w.olive).await;
    assert!(!again.html.contains(&token));
    assert!(again.once().is_none());
    assert!(again.html.contains("laptop"));
    let id = w
        .app
        .state
        .delegations
        .issued_by(&w.app.state.accounts.find("olive").unwrap().unwrap().id)
        .unwrap()
        .into_iter()
        .find(|d| d.label.as_deref() == Some("laptop"))
        .unwrap()
        .id;
    let revoke = format!("/console/agents/helper/tokens/{id}/revoke");
    assert!(again.actions().contains(&revoke));

    // Revoked on the page, it stops working.
    let p = post(&w.app, &revoke, &w.olive, &[]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.html);
    assert_eq!(p.location(), "/console/agents/helper?ok=token_revoked");
    let r = w.app.get("/api/agents/helper", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let after = get(&w.app, p.location(), &w.olive).await;
    assert!(after.html.contains("The token was revoked."));
    assert!(!after.actions().contains(&revoke));

    // A level above the minter's is refused in words.
    let gina = w.caller(Who::Sharee("manage")).await;
    let p = post(
        &w.app,
        &action,
        &gina,
        &[("level", "share"), ("expires_in", "3600")],
    )
    .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    p.assert_html();
    assert!(p.once().is_none());
}

#[tokio::test]
async fn runtime_and_channel_tokens_are_shown_once() {
    let w = World::new().await;
    let p = post(&w.app, &w.path("/runtime"), &w.olive, &[]).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.html);
    let runtime = p.once().expect("the runtime token is shown");
    let inspected = post(&w.app, "/console/inspect", &w.olive, &[("token", &runtime)]).await;
    assert!(
        inspected.html.contains("agent runtime"),
        "{}",
        inspected.html
    );
    assert!(inspected.html.contains("<strong class=\"ok\">yes</strong>"));

    let p = post(&w.app, &w.path("/runtime/revoke"), &w.olive, &[]).await;
    assert_eq!(p.location(), "/console/agents/helper?ok=runtime_revoked");
    let inspected = post(&w.app, "/console/inspect", &w.olive, &[("token", &runtime)]).await;
    assert!(inspected.html.contains("<strong class=\"bad\">no</strong>"));
    let page = get(&w.app, "/console/agents/helper", &w.olive).await;
    assert!(page.html.contains("no runtime token"));
    assert!(!page.actions().contains(&w.path("/runtime/revoke")));

    // A channel naming one of my secrets; its bot token shown once.
    let r = w
        .app
        .post(
            "/api/secrets",
            &w.olive,
            json!({"name": "tg_bot", "value": "123:abc"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let page = get(&w.app, "/console/agents/helper", &w.olive).await;
    assert_eq!(
        page.options(&w.path("/channels"), "bot_token_secret"),
        vec!["", "tg_bot"]
    );
    let p = post(
        &w.app,
        &w.path("/channels"),
        &w.olive,
        &[
            ("type", "telegram"),
            ("bot_token_secret", "tg_bot"),
            ("settings", "chat_id = 42"),
        ],
    )
    .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.html);
    let bot = p.once().expect("the bot token is shown");
    let inspected = post(&w.app, "/console/inspect", &w.olive, &[("token", &bot)]).await;
    assert!(inspected.html.contains("channel bot"));
    let olive_id = w.app.state.accounts.find("olive").unwrap().unwrap().id;
    let channels = w.app.state.channels.list(&olive_id).unwrap();
    let telegram = channels.iter().find(|c| c.kind == "telegram").unwrap();
    assert_eq!(
        telegram.config,
        json!({"bot_token_secret": "tg_bot", "chat_id": "42"})
    );

    // A secret that is not mine is refused in words.
    let gina = w.caller(Who::Sharee("manage")).await;
    let p = post(
        &w.app,
        &w.path("/channels"),
        &gina,
        &[
            ("type", "telegram"),
            ("settings", "bot_token_secret=tg_bot"),
        ],
    )
    .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    p.assert_html();
    assert!(p.html.contains("config names a secret you do not have"));

    // Toggle and delete my channel.
    let toggle = w.path(&format!("/channels/{}/toggle", telegram.id));
    let p = post(&w.app, &toggle, &w.olive, &[]).await;
    assert_eq!(p.location(), "/console/agents/helper?ok=channel_toggled");
    assert!(
        !w.app
            .state
            .channels
            .get(&olive_id, &telegram.id)
            .unwrap()
            .unwrap()
            .enabled
    );
    let p = post(
        &w.app,
        &w.path(&format!("/channels/{}/delete", telegram.id)),
        &w.olive,
        &[],
    )
    .await;
    assert_eq!(p.location(), "/console/agents/helper?ok=channel_deleted");
    assert!(w
        .app
        .state
        .channels
        .get(&olive_id, &telegram.id)
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn owners_edit_share_and_delete_on_the_page() {
    let w = World::new().await;
    // Edit: change, remove, add.
    let p = post(
        &w.app,
        &w.path("/edit"),
        &w.olive,
        &[
            ("field.display_name", "Research helper"),
            ("field.model", "small"),
            ("remove", "model"),
            ("new_key", "persona"),
            ("new_value", "patient"),
        ],
    )
    .await;
    assert_eq!(
        p.location(),
        "/console/agents/helper?ok=updated",
        "{}",
        p.html
    );
    let agent = w.app.state.agents.get("helper").unwrap().unwrap();
    assert_eq!(
        serde_json::Value::Object(agent.fields.clone()),
        json!({"display_name": "Research helper", "persona": "patient"})
    );
    // A reserved field is refused in words, on the agent's page.
    let p = post(
        &w.app,
        &w.path("/edit"),
        &w.olive,
        &[("new_key", "owner"), ("new_value", "zed")],
    )
    .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    p.assert_html();
    assert!(p.html.contains("managed by the server"), "{}", p.html);
    assert!(p.html.contains("Research helper"));

    // Share, change the level, revoke.
    let p = post(
        &w.app,
        &w.path("/shares"),
        &w.olive,
        &[("user", "zed"), ("level", "edit")],
    )
    .await;
    assert_eq!(p.location(), "/console/agents/helper?ok=shared");
    let page = get(&w.app, p.location(), &w.olive).await;
    assert!(page.html.contains("The agent was shared."));
    assert_eq!(
        page.options(&w.path("/shares/zed"), "level"),
        vec!["view", "use", "edit", "manage", "share"]
    );
    assert!(page
        .form(&w.path("/shares/zed"))
        .unwrap()
        .contains("<option value=\"edit\" selected>"));
    let p = post(
        &w.app,
        &w.path("/shares/zed"),
        &w.olive,
        &[("level", "use")],
    )
    .await;
    assert_eq!(p.location(), "/console/agents/helper?ok=shared");
    let grants = w.app.state.agents.grants("helper").unwrap();
    let zed = w.app.state.accounts.find("zed").unwrap().unwrap();
    assert_eq!(
        grants
            .iter()
            .find(|g| g.grantee == zed.id)
            .unwrap()
            .level
            .as_str(),
        "use"
    );
    let p = post(&w.app, &w.path("/shares/zed/delete"), &w.olive, &[]).await;
    assert_eq!(p.location(), "/console/agents/helper?ok=unshared");
    assert_eq!(w.app.state.agents.grants("helper").unwrap().len(), 1);

    // An unknown user, in words.
    let p = post(
        &w.app,
        &w.path("/shares"),
        &w.olive,
        &[("user", "nobody"), ("level", "view")],
    )
    .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    p.assert_html();
    assert!(p.html.contains("user not found"), "{}", p.html);

    // Archive, then restore.
    let p = post(&w.app, &w.path("/archive"), &w.olive, &[]).await;
    assert_eq!(p.location(), "/console/agents/helper?ok=archived");
    let page = get(&w.app, "/console/agents/helper", &w.olive).await;
    let actions = page.actions();
    assert!(actions.contains(&w.path("/restore")));
    for frozen in [
        "/archive",
        "/edit",
        "/tokens",
        "/shares",
        "/channels",
        "/runtime",
    ] {
        assert!(
            !actions.contains(&w.path(frozen)),
            "{frozen} on an archived agent"
        );
    }
    let p = post(&w.app, &w.path("/restore"), &w.olive, &[]).await;
    assert_eq!(p.location(), "/console/agents/helper?ok=restored");

    // Deleting needs the box ticked.
    let p = post(&w.app, &w.path("/delete"), &w.olive, &[]).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    p.assert_html();
    assert!(p.html.contains("tick the box"));
    assert!(w.app.state.agents.get("helper").unwrap().is_some());
    let page = get(&w.app, "/console/agents/helper", &w.olive).await;
    let form = page.form(&w.path("/delete")).unwrap();
    assert!(form.contains("data-confirm=") && form.contains("required"));
    assert!(form.contains("I understand this deletes helper"));
    let p = post(&w.app, &w.path("/delete"), &w.olive, &[("confirm", "yes")]).await;
    assert_eq!(p.location(), "/console?ok=deleted");
    assert!(w.app.state.agents.get("helper").unwrap().is_none());
    let list = get(&w.app, "/console?ok=deleted", &w.olive).await;
    assert!(list.html.contains("The agent was deleted."));
}

#[tokio::test]
async fn sharees_leave_their_own_grant() {
    let w = World::new().await;
    let gina = w.caller(Who::Sharee("use")).await;
    let page = get(&w.app, "/console/agents/helper", &gina).await;
    let form = page.form(&w.path("/leave")).unwrap();
    assert!(form.contains("data-confirm="));
    let p = post(&w.app, &w.path("/leave"), &gina, &[]).await;
    assert_eq!(p.location(), "/console?ok=left");
    let p = get(&w.app, "/console/agents/helper", &gina).await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    let list = get(&w.app, "/console?ok=left", &gina).await;
    assert!(list.html.contains("You gave up your access"));
}

#[tokio::test]
async fn admins_share_transfer_and_create_for_owners() {
    let w = World::new().await;
    // Share on the owner's behalf: the grant draws on olive.
    let p = post(
        &w.app,
        &w.path("/shares"),
        &w.alice,
        &[("user", "zed"), ("level", "share")],
    )
    .await;
    assert_eq!(
        p.location(),
        "/console/agents/helper?ok=shared",
        "{}",
        p.html
    );
    let olive = w.app.state.accounts.find("olive").unwrap().unwrap();
    let zed = w.app.state.accounts.find("zed").unwrap().unwrap();
    let grant = w
        .app
        .state
        .agents
        .grants("helper")
        .unwrap()
        .into_iter()
        .find(|g| g.grantee == zed.id)
        .unwrap();
    assert_eq!(grant.granted_by, olive.id);
    assert_eq!(grant.level.as_str(), "share");

    // Transfer to zed; the admin still sees it.
    let p = post(&w.app, &w.path("/transfer"), &w.alice, &[("to", "zed")]).await;
    assert_eq!(
        p.location(),
        "/console/agents/helper?ok=transferred",
        "{}",
        p.html
    );
    let agent = w.app.state.agents.get("helper").unwrap().unwrap();
    assert_eq!(agent.owner, zed.id);
    // olive no longer sees it (her runtime token died with the transfer).
    let p = get(&w.app, "/console/agents/helper", &w.olive).await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    // An unknown user, in words.
    let p = post(&w.app, &w.path("/transfer"), &w.alice, &[("to", "nobody")]).await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    p.assert_html();

    // Create for a user: the owner field is the admin's alone.
    let list = get(&w.app, "/console", &w.alice).await;
    assert!(list
        .form("/console/agents")
        .unwrap()
        .contains("name=\"owner\""));
    let list = get(&w.app, "/console", &w.olive).await;
    assert!(!list
        .form("/console/agents")
        .unwrap()
        .contains("name=\"owner\""));
    let p = post(
        &w.app,
        "/console/agents",
        &w.alice,
        &[
            ("name", "olives-second"),
            ("display_name", "Second"),
            ("owner", "olive"),
        ],
    )
    .await;
    assert_eq!(
        p.location(),
        "/console/agents/olives-second?ok=created",
        "{}",
        p.html
    );
    let agent = w.app.state.agents.get("olives-second").unwrap().unwrap();
    assert_eq!(agent.owner, olive.id);
    // A forged owner field from a non-admin is refused, in words.
    let p = post(
        &w.app,
        "/console/agents",
        &w.olive,
        &[("name", "for-zed"), ("owner", "zed")],
    )
    .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    p.assert_html();
    assert!(w.app.state.agents.get("for-zed").unwrap().is_none());
    // Without an owner it is one's own.
    let p = post(&w.app, "/console/agents", &w.olive, &[("name", "mine")]).await;
    assert_eq!(p.location(), "/console/agents/mine?ok=created");
    assert_eq!(
        w.app.state.agents.get("mine").unwrap().unwrap().owner,
        olive.id
    );
}

#[tokio::test]
async fn the_inspector_reads_any_token() {
    let w = World::new().await;
    let p = get(&w.app, "/console/inspect", &w.olive).await;
    assert_eq!(p.status, StatusCode::OK);
    p.assert_html();
    assert!(p.actions().contains("/console/inspect"));

    let r = w
        .app
        .post(
            "/api/tokens",
            &w.olive,
            json!({"agent": "helper", "level": "use", "expires_in": 3600, "label": "phone"}),
        )
        .await;
    let token = r.body["token"].as_str().unwrap().to_owned();
    let p = post(&w.app, "/console/inspect", &w.olive, &[("token", &token)]).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.html);
    p.assert_html();
    for words in [
        "delegated agent token",
        "<td>olive</td>",
        "<td>helper</td>",
        "level-use",
        "phone",
        "<strong class=\"ok\">yes</strong>",
        "Authority block",
        "Expires",
    ] {
        assert!(p.html.contains(words), "{words}: {}", p.html);
    }
    // The pasted token is never echoed into the page or a URL.
    assert!(!p.html.contains(&token));

    // Another person's session, inspected by the admin: it says whose.
    let p = post(&w.app, "/console/inspect", &w.alice, &[("token", &w.olive)]).await;
    assert!(p.html.contains("login session") && p.html.contains("<td>olive</td>"));

    // Revoked: signature fine, refused, and why.
    let id = r.body["id"].as_str().unwrap();
    assert_eq!(
        w.app
            .delete(&format!("/api/tokens/{id}"), &w.olive)
            .await
            .status,
        StatusCode::OK
    );
    let p = post(&w.app, "/console/inspect", &w.olive, &[("token", &token)]).await;
    assert!(
        p.html.contains("<strong class=\"bad\">no</strong>"),
        "{}",
        p.html
    );
    assert!(p.html.contains("Signature</th><td>valid"));

    // Not a token: in words, on the form again.
    let p = post(&w.app, "/console/inspect", &w.olive, &[("token", "hello")]).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    p.assert_html();
    assert!(p.html.contains("not a Biscuit token"));
    assert!(p.actions().contains("/console/inspect"));

    // The JSON API says the same as before.
    let r = w
        .app
        .post("/api/tokens/inspect", &w.olive, json!({"token": w.olive}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["kind"], "session");
    assert_eq!(r.body["valid"], true);
    assert_eq!(r.body["issuer"]["username"], "olive");
}

#[tokio::test]
async fn unreadable_forms_and_stray_gets_answer_in_words() {
    let w = World::new().await;
    // A reload of where a form posted lands on the agent.
    let p = get(&w.app, "/console/agents/helper/tokens", &w.olive).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "/console/agents/helper");
    // A form that is not a form.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/console/agents/helper/transfer")
        .header(
            "cookie",
            format!("taos_session={}; csrf_token={TEST_CSRF}", w.olive),
        )
        .header("x-csrf-token", TEST_CSRF)
        .header("content-type", "application/json")
        .body(Body::from("{\"to\":\"zed\"}"))
        .unwrap();
    let resp = w.app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let ct = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(ct.starts_with("text/html"), "{ct}");
    assert_eq!(
        w.app.state.agents.get("helper").unwrap().unwrap().owner,
        w.app.state.accounts.find("olive").unwrap().unwrap().id
    );
    // A post without the form token is refused before anything happens.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/console/agents/helper/archive")
        .header("cookie", format!("taos_session={}", w.olive))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::empty())
        .unwrap();
    let resp = w.app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Nor does the JSON route the page shares its function with.
    let r = w
        .app
        .call(
            Method::POST,
            "/api/agents/helper/archive",
            Auth::CookieOnly(&w.olive),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!w.app.state.agents.get("helper").unwrap().unwrap().archived);
}

/// A grant whose sharer lost the rights it drew on is listed as not in
/// effect, and its grantee no longer sees the agent.
#[tokio::test]
async fn shares_say_whether_they_hold() {
    let w = World::new().await;
    let gina = w.caller(Who::Sharee("share")).await;
    let p = post(
        &w.app,
        &w.path("/shares"),
        &gina,
        &[("user", "zed"), ("level", "view")],
    )
    .await;
    assert_eq!(
        p.location(),
        "/console/agents/helper?ok=shared",
        "{}",
        p.html
    );
    let zed = w.app.login("zed", "zed-password").await.token();
    assert_eq!(
        get(&w.app, "/console/agents/helper", &zed).await.status,
        StatusCode::OK
    );

    // olive lowers gina below share: what gina shared lapses.
    let p = post(
        &w.app,
        &w.path("/shares/gina"),
        &w.olive,
        &[("level", "use")],
    )
    .await;
    assert_eq!(p.location(), "/console/agents/helper?ok=shared");
    let page = get(&w.app, "/console/agents/helper", &w.olive).await;
    let row = page.html.split("<td>zed</td>").nth(1).unwrap();
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(
        row.contains("<td>gina</td>") && row.contains("no <span"),
        "{row}"
    );
    assert_eq!(
        get(&w.app, "/console/agents/helper", &zed).await.status,
        StatusCode::NOT_FOUND
    );
    // olive may still take it away: it draws on someone below her.
    assert!(page.actions().contains(&w.path("/shares/zed/delete")));
}

/// Groups in the console: create one, add a member, share an agent with it
/// for a while and with everyone, see both on the pages, and leave.
#[tokio::test]
async fn groups_and_expiring_shares_in_the_console() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let olga = app.add_user(&admin, "olga", "olga-password").await;
    let bob = app.add_user(&admin, "bob", "bob-password").await;
    let carol = app.add_user(&admin, "carol", "carol-password").await;
    let r = app.post("/api/agents", &olga, json!({"name": "ada"})).await;
    assert_eq!(r.status, StatusCode::OK);
    let p = post(
        &app,
        "/console/groups",
        &olga,
        &[("name", "family"), ("display_name", "The family")],
    )
    .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.html);
    assert_eq!(p.location(), "/console/groups/family?ok=created");
    let p = post(
        &app,
        "/console/groups/family/members",
        &olga,
        &[("user", "bob")],
    )
    .await;
    assert_eq!(p.location(), "/console/groups/family?ok=added");
    let p = get(&app, "/console/groups/family", &bob).await;
    p.assert_html();
    assert!(p.html.contains("bob") && p.html.contains("The family"));
    // bob may leave, not remove olga or delete the group.
    assert!(p
        .form("/console/groups/family/members/bob/delete")
        .is_some());
    assert!(p
        .form("/console/groups/family/members/olga/delete")
        .is_none());
    assert!(p.form("/console/groups/family/delete").is_none());
    // The agent page offers the group and everyone as share targets.
    let p = get(&app, "/console/agents/ada", &olga).await;
    assert!(p.html.contains("group:family"), "{}", p.html);
    let p = post(
        &app,
        "/console/agents/ada/shares",
        &olga,
        &[
            ("user", "group:family"),
            ("level", "use"),
            ("expires_in", "3600"),
        ],
    )
    .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.html);
    let p = post(
        &app,
        "/console/agents/ada/shares",
        &olga,
        &[("user", "everyone"), ("level", "view"), ("expires_in", "0")],
    )
    .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.html);
    let p = get(&app, "/console/agents/ada", &olga).await;
    assert!(p.html.contains("group family"), "{}", p.html);
    assert!(p.html.contains("everyone on this host"), "{}", p.html);
    assert!(p
        .form("/console/agents/ada/shares/group:family/delete")
        .is_some());
    // Changing the level keeps the expiry.
    let p = post(
        &app,
        "/console/agents/ada/shares/group:family",
        &olga,
        &[("level", "edit")],
    )
    .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.html);
    let grants = app.state.agents.grants("ada").unwrap();
    let group = grants.iter().find(|g| g.grantee == "group:family").unwrap();
    assert!(group.expires_at.is_some());
    let p = get(&app, "/console/groups/family", &bob).await;
    assert!(p.html.contains("/console/agents/ada"), "{}", p.html);
    // carol, in no group, sees the agent marked as shared with everyone.
    let p = get(&app, "/console", &carol).await;
    assert!(p.html.contains("shared with everyone (view)"), "{}", p.html);
    let p = get(&app, "/console", &bob).await;
    assert!(p.html.contains("level-edit"), "{}", p.html);
    let p = post(&app, "/console/groups/family/members/bob/delete", &bob, &[]).await;
    assert_eq!(p.location(), "/console/groups?ok=left");
    let p = get(&app, "/console", &bob).await;
    assert!(p.html.contains("level-view"), "{}", p.html);
}
