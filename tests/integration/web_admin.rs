//! The console's account and admin pages: what each kind of caller is
//! shown, that forged posts meet the API's refusals with nothing changed,
//! and that every action does what its JSON route does (audit included).

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::helpers::{Auth, TestApp, ADMIN_PASSWORD, TEST_CSRF};

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
}

impl Page {
    fn html(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn has_form(&self, action: &str) -> bool {
        self.html().contains(&format!("action=\"{action}\""))
    }

    /// Data rows of the page's table.
    fn rows(&self) -> usize {
        self.html().matches("</tr>").count().saturating_sub(1)
    }
}

async fn send(app: &TestApp, request: Request<Body>) -> Page {
    let resp = app.router.clone().oneshot(request).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Page {
        status,
        headers,
        bytes,
    }
}

/// A page as a signed-in browser gets it (`None`: signed out).
async fn get(app: &TestApp, path: &str, token: Option<&str>) -> Page {
    let mut req = Request::get(path).header("accept", "text/html");
    if let Some(token) = token {
        req = req.header(
            "cookie",
            format!("taos_session={token}; csrf_token={TEST_CSRF}"),
        );
    }
    send(app, req.body(Body::empty()).unwrap()).await
}

/// A form post from tessera's own page: the session cookie, the CSRF cookie
/// and the form's CSRF field.
async fn post(app: &TestApp, path: &str, token: &str, fields: &[(&str, &str)]) -> Page {
    let mut all = vec![("csrf_token", TEST_CSRF)];
    all.extend_from_slice(fields);
    let body = serde_urlencoded::to_string(&all).unwrap();
    let req = Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "cookie",
            format!("taos_session={token}; csrf_token={TEST_CSRF}"),
        )
        .body(Body::from(body))
        .unwrap();
    send(app, req).await
}

/// What askama escaped in an attribute, back to text.
fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#x2F;", "/")
        .replace("&#47;", "/")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// The 8-digit code shown once on a code page.
fn shown_code(page: &Page) -> String {
    let html = page.html();
    let start = html
        .find("<code id=\"invite-code\">")
        .unwrap_or_else(|| panic!("no code shown: {html}"))
        + "<code id=\"invite-code\">".len();
    let code: String = html[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(code.len(), 8, "{html}");
    assert!(html.contains("data-copy=\"invite-code\""), "a copy button");
    code
}

async fn is_signed_in(app: &TestApp, token: &str) -> bool {
    app.call(Method::GET, "/auth/me", Auth::Cookie(token), None)
        .await
        .status
        == StatusCode::OK
}

async fn users(app: &TestApp, admin: &str) -> Vec<Value> {
    let resp = app.get("/auth/users", admin).await;
    assert_eq!(resp.status, StatusCode::OK);
    resp.body["users"].as_array().unwrap().clone()
}

async fn user(app: &TestApp, admin: &str, name: &str) -> Option<Value> {
    users(app, admin)
        .await
        .into_iter()
        .find(|u| u["username"] == name)
}

async fn audit_actions(app: &TestApp, admin: &str) -> Vec<String> {
    let resp = app.get("/api/audit?limit=1000", admin).await;
    resp.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

const PAGES: [&str; 6] = [
    "/console/account",
    "/console/admin",
    "/console/admin/agents",
    "/console/admin/audit",
    "/console/admin/backup",
    "/console/admin/users/bob/delete",
];

#[tokio::test]
async fn signed_out_browsers_are_sent_to_sign_in_and_back() {
    let app = TestApp::new();
    app.setup_admin().await;
    for path in PAGES {
        let page = get(&app, path, None).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        let back = serde_urlencoded::to_string([("next", path)]).unwrap();
        assert_eq!(page.location(), format!("/auth/login?{back}"), "{path}");
    }
}

#[tokio::test]
async fn people_who_are_not_admins_get_no_admin_page_and_their_forged_posts_change_nothing() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", "bob-password").await;
    let before = users(&app, &admin).await;
    let events_before = audit_actions(&app, &admin).await.len();

    // No admin link for bob, one for the admin.
    let mine = get(&app, "/console/account", Some(&bob)).await;
    assert_eq!(mine.status, StatusCode::OK);
    assert!(!mine.html().contains("href=\"/console/admin\""));
    let theirs = get(&app, "/console/account", Some(&admin)).await;
    assert!(theirs.html().contains("href=\"/console/admin\""));

    for path in &PAGES[1..] {
        let page = get(&app, path, Some(&bob)).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        let html = page.html();
        assert!(
            html.contains("your account may not do this: the admin pages are for administrators"),
            "{path}: {html}"
        );
        assert!(!html.contains("\"error\""), "no raw JSON: {html}");
    }

    // Well-formed posts with a valid form token, as bob's own browser
    // would send them: refused by the API's checks.
    let forged: [(&str, &[(&str, &str)]); 8] = [
        ("/console/admin/users", &[("username", "mallory")]),
        ("/console/admin/users/alice/reset", &[]),
        ("/console/admin/users/bob/admin", &[("is_admin", "true")]),
        ("/console/admin/users/alice/admin", &[("is_admin", "false")]),
        ("/console/admin/users/alice/sessions", &[]),
        (
            "/console/admin/users/alice/delete",
            &[("agents", "transfer"), ("to", "bob")],
        ),
        ("/console/admin/users/alice/delete", &[("agents", "delete")]),
        ("/console/admin/backup", &[("password", "bob-password")]),
    ];
    for (path, fields) in forged {
        let page = post(&app, path, &bob, fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert!(
            page.html()
                .contains("your account may not do this: the admin pages are for administrators"),
            "{path}"
        );
        assert_ne!(
            page.headers.get("content-type").unwrap(),
            "application/octet-stream"
        );
    }
    assert_eq!(users(&app, &admin).await, before, "nothing changed");
    assert!(is_signed_in(&app, &admin).await, "alice still signed in");
    assert_eq!(
        audit_actions(&app, &admin).await.len(),
        events_before,
        "nothing done, nothing recorded"
    );
}

#[tokio::test]
async fn an_invite_shows_a_working_code_once() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;

    let users_page = get(&app, "/console/admin", Some(&admin)).await;
    assert_eq!(users_page.status, StatusCode::OK);
    assert!(users_page.has_form("/console/admin/users"));

    let shown = post(
        &app,
        "/console/admin/users",
        &admin,
        &[("username", "Carol")],
    )
    .await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.html());
    assert_eq!(shown.headers.get("cache-control").unwrap(), "no-store");
    let code = shown_code(&shown);

    // The list shows carol pending, with when her code runs out, and never
    // the code.
    let listed = get(&app, "/console/admin", Some(&admin)).await.html();
    assert!(listed.contains("carol"));
    assert!(listed.contains("invited, the code works until"));
    assert!(!listed.contains(&code));
    assert!(
        listed.contains("action=\"/console/admin/users/carol/reset\""),
        "a new code can be issued"
    );

    // Inviting her again is an error in words, the name kept in the form.
    let again = post(
        &app,
        "/console/admin/users",
        &admin,
        &[("username", "carol")],
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.html().contains("User carol already exists."));
    let bad = post(
        &app,
        "/console/admin/users",
        &admin,
        &[("username", "no spaces")],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.html().contains("value=\"no spaces\""));

    let done = app
        .anon_post(
            "/auth/complete",
            json!({"username": "carol", "invite_code": code, "password": "carol-password"}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(
        app.login("carol", "carol-password").await.status,
        StatusCode::OK
    );
    assert!(audit_actions(&app, &admin)
        .await
        .contains(&"user.invite".to_owned()));
}

#[tokio::test]
async fn reset_promote_demote_and_revoke_work_and_are_audited() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", "bob-password").await;

    // The only admin is not offered a demotion, nor deleting herself.
    let page = get(&app, "/console/admin", Some(&admin)).await;
    assert!(!page.has_form("/console/admin/users/alice/admin"));
    assert!(page.has_form("/console/admin/users/bob/admin"));
    assert!(!page
        .html()
        .contains("href=\"/console/admin/users/alice/delete\""));
    assert!(page
        .html()
        .contains("href=\"/console/admin/users/bob/delete\""));
    // A forged demotion meets the domain's rule.
    let last = post(
        &app,
        "/console/admin/users/alice/admin",
        &admin,
        &[("is_admin", "false")],
    )
    .await;
    assert_eq!(last.status, StatusCode::CONFLICT);
    assert!(last.html().contains("Cannot remove the last admin."));

    let promoted = post(
        &app,
        "/console/admin/users/bob/admin",
        &admin,
        &[("is_admin", "true")],
    )
    .await;
    assert_eq!(promoted.status, StatusCode::SEE_OTHER);
    assert_eq!(promoted.location(), "/console/admin?ok=promoted");
    assert_eq!(user(&app, &admin, "bob").await.unwrap()["is_admin"], true);
    let notice = get(&app, promoted.location(), Some(&admin)).await;
    assert!(notice.html().contains("The user is now an administrator."));
    // Now two admins: either may be demoted.
    assert!(notice.has_form("/console/admin/users/alice/admin"));

    let demoted = post(
        &app,
        "/console/admin/users/bob/admin",
        &admin,
        &[("is_admin", "false")],
    )
    .await;
    assert_eq!(demoted.location(), "/console/admin?ok=demoted");
    assert_eq!(user(&app, &admin, "bob").await.unwrap()["is_admin"], false);

    let revoked = post(&app, "/console/admin/users/bob/sessions", &admin, &[]).await;
    assert_eq!(revoked.location(), "/console/admin?ok=signed_out");
    assert!(!is_signed_in(&app, &bob).await);
    let bob = app.login("bob", "bob-password").await.token();

    let reset = post(&app, "/console/admin/users/bob/reset", &admin, &[]).await;
    assert_eq!(reset.status, StatusCode::OK);
    let code = shown_code(&reset);
    assert!(!is_signed_in(&app, &bob).await, "a reset signs bob out");
    assert_eq!(
        app.login("bob", "bob-password").await.status,
        StatusCode::UNAUTHORIZED
    );
    let done = app
        .anon_post(
            "/auth/complete",
            json!({"username": "bob", "invite_code": code, "password": "bob-new-password"}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);

    let unknown = post(&app, "/console/admin/users/nobody/reset", &admin, &[]).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.html().contains("User not found."));

    let actions = audit_actions(&app, &admin).await;
    for action in ["user.set_admin", "user.revoke_sessions", "user.reset"] {
        assert!(
            actions.contains(&action.to_owned()),
            "{action}: {actions:?}"
        );
    }
    assert_eq!(actions.iter().filter(|a| *a == "user.set_admin").count(), 2);
}

#[tokio::test]
async fn deleting_a_user_asks_what_becomes_of_their_agents() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", "bob-password").await;
    app.add_user(&admin, "carol", "carol-password").await;
    let dave = app.add_user(&admin, "dave", "dave-password").await;
    for (owner, name) in [(&bob, "bobs-helper"), (&dave, "daves-helper")] {
        let made = app.post("/api/agents", owner, json!({"name": name})).await;
        assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    }

    // The confirmation works without JavaScript: a page with the choice.
    let confirm = get(&app, "/console/admin/users/bob/delete", Some(&admin)).await;
    assert_eq!(confirm.status, StatusCode::OK);
    let html = confirm.html();
    assert!(confirm.has_form("/console/admin/users/bob/delete"));
    assert!(html.contains("bobs-helper"));
    assert!(html.contains("value=\"transfer\"") && html.contains("value=\"delete\""));
    assert!(html.contains("<option value=\"carol\">"));
    assert!(!html.contains("<option value=\"bob\">"), "not to himself");
    assert!(html.contains("data-confirm="));
    // Nobody deletes themselves.
    let me = get(&app, "/console/admin/users/alice/delete", Some(&admin)).await;
    assert!(!me.has_form("/console/admin/users/alice/delete"));
    let missing = get(&app, "/console/admin/users/nobody/delete", Some(&admin)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Without a choice: refused in words, nothing deleted.
    let unchosen = post(&app, "/console/admin/users/bob/delete", &admin, &[]).await;
    assert_eq!(unchosen.status, StatusCode::CONFLICT);
    assert!(unchosen
        .html()
        .contains("bob owns agents: choose whether someone receives them"));
    assert!(user(&app, &admin, "bob").await.is_some());

    let to_nobody = post(
        &app,
        "/console/admin/users/bob/delete",
        &admin,
        &[("agents", "transfer"), ("to", "nobody")],
    )
    .await;
    assert_eq!(to_nobody.status, StatusCode::NOT_FOUND);
    assert!(to_nobody
        .html()
        .contains("Choose an existing user to receive the agents."));

    let deleted = post(
        &app,
        "/console/admin/users/bob/delete",
        &admin,
        &[("agents", "transfer"), ("to", "carol")],
    )
    .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.html());
    assert_eq!(deleted.location(), "/console/admin?ok=deleted");
    assert!(user(&app, &admin, "bob").await.is_none());
    assert!(!is_signed_in(&app, &bob).await);
    let agent = app.get("/api/agents/bobs-helper", &admin).await;
    assert_eq!(agent.body["owner"]["username"], "carol", "{}", agent.body);

    let gone = post(
        &app,
        "/console/admin/users/dave/delete",
        &admin,
        &[("agents", "delete")],
    )
    .await;
    assert_eq!(gone.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.get("/api/agents/daves-helper", &admin).await.status,
        StatusCode::NOT_FOUND
    );

    let events = app.get("/api/audit?limit=1000", &admin).await.body["events"].clone();
    let deletions: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "user.delete")
        .collect();
    assert_eq!(deletions.len(), 2);
    assert!(deletions
        .iter()
        .any(|e| e["target"] == "bob" && e["detail"]["agents_to"] == "carol"));
    assert!(deletions
        .iter()
        .any(|e| e["target"] == "dave" && e["detail"]["agents_deleted"] == true));
    let logged = get(
        &app,
        "/console/admin/audit?action=user.delete",
        Some(&admin),
    )
    .await;
    assert_eq!(logged.rows(), 2);
    let html = logged.html();
    assert!(
        html.contains("agents: bobs-helper, agents_deleted: false, agents_to: carol"),
        "{html}"
    );
}

#[tokio::test]
async fn the_admin_sees_every_agent_with_its_owner() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", "bob-password").await;
    let carol = app.add_user(&admin, "carol", "carol-password").await;
    app.post("/api/agents", &bob, json!({"name": "bobs-helper"}))
        .await;
    app.post("/api/agents", &carol, json!({"name": "carols-helper"}))
        .await;
    app.post("/api/agents/carols-helper/archive", &carol, json!({}))
        .await;

    let page = get(&app, "/console/admin/agents", Some(&admin)).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.html();
    assert!(html.contains("href=\"/console/agents/bobs-helper\""));
    assert!(html.contains("href=\"/console/agents/carols-helper\""));
    assert!(html.contains("archived"));
    assert_eq!(page.rows(), 2);

    let filtered = get(&app, "/console/admin/agents?q=carol", Some(&admin)).await;
    assert_eq!(filtered.rows(), 1);
    assert!(filtered.html().contains("carols-helper"));
}

/// The link to older events on an audit page, if any.
fn next_link(page: &Page) -> Option<String> {
    let html = page.html();
    let at = html.find("rel=\"next\"")?;
    let start = html[..at].rfind("href=\"")? + "href=\"".len();
    let end = start + html[start..].find('"')?;
    Some(unescape(&html[start..end]))
}

#[tokio::test]
async fn the_audit_log_filters_and_pages() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    app.add_user(&admin, "bob", "bob-password").await;
    let carol = app.add_user(&admin, "carol", "carol-password").await;
    // 60 admin changes on bob, then carol acts.
    for i in 0..60 {
        let resp = app
            .post(
                "/auth/users/bob/admin",
                &admin,
                json!({"is_admin": i % 2 == 0}),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK);
    }
    let made = app
        .post("/api/agents", &carol, json!({"name": "carols-helper"}))
        .await;
    assert_eq!(made.status, StatusCode::OK);
    let total = audit_actions(&app, &admin).await.len();
    assert!(total > 60);

    let first = get(&app, "/console/admin/audit", Some(&admin)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.rows(), 50, "a page");
    let html = first.html();
    // Newest first, actors by name.
    assert!(html.find("agent.create").unwrap() < html.find("user.set_admin").unwrap());
    assert!(html.contains("<td>carol</td>"), "{html}");
    let older = next_link(&first).expect("a link to older events");
    assert!(older.contains("after="), "{older}");
    let second = get(&app, &older, Some(&admin)).await;
    assert_eq!(second.rows(), total - 50);
    assert!(
        second.html().contains("href=\"/console/admin/audit\""),
        "back to the newest"
    );
    assert_eq!(next_link(&second), None, "the end");
    assert!(
        second.html().contains("auth.setup"),
        "the oldest event is last"
    );

    // By who acted.
    let by_carol = get(&app, "/console/admin/audit?actor=carol", Some(&admin)).await;
    let html = by_carol.html();
    assert_eq!(by_carol.rows(), 2, "{html}");
    assert!(html.contains("agent.create") && html.contains("auth.complete"));
    assert!(!html.contains("user.set_admin"));

    // By action (its beginning) and target, paged with the filter kept.
    let set_admin = get(
        &app,
        "/console/admin/audit?action=user.set&target=bob",
        Some(&admin),
    )
    .await;
    assert_eq!(set_admin.rows(), 50);
    let html = set_admin.html();
    assert!(!html.contains("agent.create") && !html.contains("user.invite"));
    assert!(
        html.contains("value=\"user.set\""),
        "the filter stays in the form"
    );
    let href = next_link(&set_admin).expect("more set_admin events");
    assert!(
        href.contains("action=user.set") && href.contains("target=bob"),
        "{href}"
    );
    let rest = get(&app, &href, Some(&admin)).await;
    assert_eq!(rest.rows(), 10);
    assert_eq!(next_link(&rest), None);

    let nobody = get(&app, "/console/admin/audit?target=nobody", Some(&admin)).await;
    assert_eq!(nobody.rows(), 0);
    assert!(nobody.html().contains("No events"));

    // The API answers as it always has.
    let page = app.get("/api/audit?limit=3", &admin).await;
    assert_eq!(page.body["events"].as_array().unwrap().len(), 3);
    assert_eq!(page.body.as_object().unwrap().len(), 1, "{}", page.body);
}

#[tokio::test]
async fn a_backup_needs_the_admins_password() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;

    let form = get(&app, "/console/admin/backup", Some(&admin)).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.has_form("/console/admin/backup"));
    assert!(form.html().contains("type=\"password\""));

    let wrong = post(
        &app,
        "/console/admin/backup",
        &admin,
        &[("password", "not-the-password")],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert!(wrong
        .html()
        .contains("That password is not right; no backup was made."));
    assert!(wrong.headers.get("content-disposition").is_none());

    let empty = post(&app, "/console/admin/backup", &admin, &[("password", "")]).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(empty
        .html()
        .contains("Type your password to download a backup."));

    let file = post(
        &app,
        "/console/admin/backup",
        &admin,
        &[("password", ADMIN_PASSWORD)],
    )
    .await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(
        file.headers.get("content-type").unwrap(),
        "application/octet-stream"
    );
    assert_eq!(file.headers.get("cache-control").unwrap(), "no-store");
    let disposition = file
        .headers
        .get("content-disposition")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"tessera-backup-")
            && disposition.ends_with(".tbk\""),
        "{disposition}"
    );
    tessera::migrate::backup::decode(&file.bytes).expect("a backup file");

    let actions = audit_actions(&app, &admin).await;
    assert!(actions.contains(&"admin.backup_refused".to_owned()));
    assert!(actions.contains(&"admin.backup".to_owned()));
}

#[tokio::test]
async fn my_profile_and_password() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", "bob-password").await;
    let other = app.login("bob", "bob-password").await.token();

    let page = get(&app, "/console/account", Some(&bob)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.has_form("/console/account/profile"));
    assert!(page.has_form("/console/account/password"));
    assert!(page.has_form("/console/account/sessions/others"));

    let saved = post(
        &app,
        "/console/account/profile",
        &bob,
        &[("full_name", "Bob Builder"), ("email", "bob@example.org")],
    )
    .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER);
    assert_eq!(saved.location(), "/console/account?ok=profile");
    let shown = get(&app, saved.location(), Some(&bob)).await.html();
    assert!(shown.contains("Your profile was saved."));
    assert!(shown.contains("value=\"Bob Builder\""));
    let me = app.get("/auth/me", &bob).await;
    assert_eq!(me.body["user"]["email"], "bob@example.org");

    let bad = post(
        &app,
        "/console/account/profile",
        &bob,
        &[("full_name", "Bob"), ("email", "not an address")],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.html().contains("Email is not a valid address."));
    assert_eq!(
        app.get("/auth/me", &bob).await.body["user"]["full_name"],
        "Bob Builder",
        "nothing changed"
    );

    let wrong = post(
        &app,
        "/console/account/password",
        &bob,
        &[
            ("current", "not-my-password"),
            ("new", "bob-new-password"),
            ("repeat", "bob-new-password"),
        ],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let html = wrong.html();
    assert!(
        html.contains("Your current password is not right"),
        "{html}"
    );
    assert!(!html.contains("{\"error\""));
    let differ = post(
        &app,
        "/console/account/password",
        &bob,
        &[
            ("current", "bob-password"),
            ("new", "bob-new-password"),
            ("repeat", "bob-other-password"),
        ],
    )
    .await;
    assert_eq!(differ.status, StatusCode::BAD_REQUEST);
    let short = post(
        &app,
        "/console/account/password",
        &bob,
        &[
            ("current", "bob-password"),
            ("new", "short"),
            ("repeat", "short"),
        ],
    )
    .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(
        short.html().contains("at least 8 characters"),
        "{}",
        short.html()
    );
    assert_eq!(
        app.login("bob", "bob-password").await.status,
        StatusCode::OK
    );
    // (that login opened one more session; the change below ends it too)

    let changed = post(
        &app,
        "/console/account/password",
        &bob,
        &[
            ("current", "bob-password"),
            ("new", "bob-new-password"),
            ("repeat", "bob-new-password"),
        ],
    )
    .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER);
    assert_eq!(changed.location(), "/console/account?ok=password");
    assert!(is_signed_in(&app, &bob).await, "this session stays");
    assert!(!is_signed_in(&app, &other).await, "the others end");
    assert_eq!(
        app.login("bob", "bob-password").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("bob", "bob-new-password").await.status,
        StatusCode::OK
    );
    assert!(audit_actions(&app, &admin)
        .await
        .contains(&"auth.password".to_owned()));
}

#[tokio::test]
async fn signing_out_everywhere_else_keeps_this_session() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let here = app.add_user(&admin, "bob", "bob-password").await;
    let phone = app.login("bob", "bob-password").await.token();
    let laptop = app.login("bob", "bob-password").await.token();

    let page = get(&app, "/console/account", Some(&here)).await;
    let html = page.html();
    assert_eq!(page.rows(), 3, "{html}");
    assert_eq!(html.matches("this session").count(), 1);
    assert!(html.contains("Sign out everywhere else (2)"));

    // The JSON route lists the same, marking the caller's session.
    let listed = app.get("/auth/users/bob/sessions", &here).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let sessions = listed.body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    assert!(sessions[0].get("id").is_none(), "no session ids");

    // Another site's post carries the cookie but not the form token.
    let forged = app
        .call(
            Method::POST,
            "/console/account/sessions/others",
            Auth::CookieOnly(&phone),
            None,
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(is_signed_in(&app, &here).await && is_signed_in(&app, &laptop).await);

    let ended = post(&app, "/console/account/sessions/others", &here, &[]).await;
    assert_eq!(ended.status, StatusCode::SEE_OTHER);
    assert_eq!(ended.location(), "/console/account?ok=others");
    assert!(is_signed_in(&app, &here).await);
    assert!(!is_signed_in(&app, &phone).await);
    assert!(!is_signed_in(&app, &laptop).await);
    let after = get(&app, "/console/account?ok=others", Some(&here)).await;
    assert!(after
        .html()
        .contains("You were signed out everywhere else."));
    assert_eq!(after.rows(), 1);
    assert!(!after.has_form("/console/account/sessions/others"));
    assert!(audit_actions(&app, &admin)
        .await
        .contains(&"auth.end_other_sessions".to_owned()));
}

#[tokio::test]
async fn the_sessions_route_is_for_their_owner_and_admins() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", "bob-password").await;
    let carol = app.add_user(&admin, "carol", "carol-password").await;
    let invite = app
        .post("/auth/users", &admin, json!({"username": "dave"}))
        .await;
    let code = invite.body["invite_code"].as_str().unwrap().to_owned();
    let pending = app.login("dave", &code).await.token();

    let path = "/auth/users/bob/sessions";
    assert_eq!(
        app.call(Method::GET, path, Auth::None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.get(path, &carol).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.get(path, &pending).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.get("/auth/users/dave/sessions", &pending).await.status,
        StatusCode::FORBIDDEN,
        "not before sign-up is complete"
    );
    let by_admin = app.get(path, &admin).await;
    assert_eq!(by_admin.status, StatusCode::OK);
    let sessions = by_admin.body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["current"], false, "not the admin's session");
    assert_eq!(app.get(path, &bob).await.status, StatusCode::OK);
    assert_eq!(
        app.get("/auth/users/nobody/sessions", &admin).await.status,
        StatusCode::NOT_FOUND
    );

    // Carol's forged "sign out everywhere else" only ever concerns her own
    // account: bob stays signed in.
    let page = post(&app, "/console/account/sessions/others", &carol, &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(is_signed_in(&app, &bob).await);
}

/// The controls follow the policy, not the admin flag: with resets taken
/// from admins by one line of `auth.dl`, the page offers none and a forged
/// reset is refused.
#[tokio::test]
async fn the_controls_shown_are_the_policys_decisions() {
    let dir = crate::helpers::edited_policy(
        r#"requires("auth:users:reset", "admin");"#,
        r#"requires("auth:users:reset", "nobody");"#,
    );
    let app = TestApp::with_config(|c| c.policy_dir = Some(dir.path().to_owned()));
    let admin = app.setup_admin().await;
    app.add_user(&admin, "bob", "bob-password").await;

    let page = get(&app, "/console/admin", Some(&admin)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.has_form("/console/admin/users/bob/reset"));
    assert!(page.has_form("/console/admin/users/bob/admin"));

    let forged = post(&app, "/console/admin/users/bob/reset", &admin, &[]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(!forged.html().contains("invite-code"));
    assert_eq!(
        app.login("bob", "bob-password").await.status,
        StatusCode::OK
    );
}
