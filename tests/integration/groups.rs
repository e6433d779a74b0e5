//! Groups, everyone on this host and expiring shares, end to end: who may
//! create and manage a group, what a membership confers and when it stops,
//! the cap on everyone, expiry on the very next request, and what the
//! listings, the audit log and forward auth say about them.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{Auth, Response, TestApp};

pub struct Family {
    pub app: TestApp,
    pub admin: String,
    pub olga: String,
    pub bob: String,
    pub carol: String,
}

/// olga owns `ada` and the group `family`, which bob belongs to; carol is
/// on the host and in nothing.
pub async fn family() -> Family {
    family_with(TestApp::new()).await
}

pub async fn family_with(app: TestApp) -> Family {
    let admin = app.setup_admin().await;
    let olga = app.add_user(&admin, "olga", "olga-password").await;
    let bob = app.add_user(&admin, "bob", "bob-password").await;
    let carol = app.add_user(&admin, "carol", "carol-password").await;
    let r = app.post("/api/agents", &olga, json!({"name": "ada"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .post(
            "/api/groups",
            &olga,
            json!({"name": "family", "display_name": "The family"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let f = Family {
        app,
        admin,
        olga,
        bob,
        carol,
    };
    assert_eq!(f.put_member(&f.olga, "family", "bob").await, StatusCode::OK);
    f
}

impl Family {
    pub async fn put_member(&self, token: &str, group: &str, user: &str) -> StatusCode {
        self.app
            .call(
                Method::PUT,
                &format!("/api/groups/{group}/members/{user}"),
                Auth::Bearer(token),
                None,
            )
            .await
            .status
    }

    pub async fn remove_member(&self, token: &str, group: &str, user: &str) -> StatusCode {
        self.app
            .delete(&format!("/api/groups/{group}/members/{user}"), token)
            .await
            .status
    }

    pub async fn share(&self, token: &str, body: Value) -> Response {
        self.app.post("/api/agents/ada/shares", token, body).await
    }

    /// The caller's level on ada as the API says it (`None`: not visible).
    pub async fn access(&self, token: &str) -> Option<String> {
        let r = self.app.get("/api/agents/ada", token).await;
        r.body["access"].as_str().map(str::to_owned)
    }
}

#[tokio::test]
async fn owners_and_admins_manage_a_group_and_members_may_leave() {
    let f = family().await;
    let app = &f.app;
    // Members see it; others do not even learn it exists.
    let r = app.get("/api/groups/family", &f.bob).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["owner"]["username"], "olga");
    let members: Vec<&str> = r.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["bob", "olga"]);
    assert_eq!(
        app.get("/api/groups/family", &f.carol).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/groups/nothing", &f.carol).await.status,
        StatusCode::NOT_FOUND
    );
    // Listings: mine; an admin's: all.
    let names = |r: &Response| -> Vec<String> {
        r.body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&app.get("/api/groups", &f.bob).await), ["family"]);
    assert!(names(&app.get("/api/groups", &f.carol).await).is_empty());
    assert_eq!(names(&app.get("/api/groups", &f.admin).await), ["family"]);
    // A member manages nothing; the owner and admins do.
    assert_eq!(
        f.put_member(&f.bob, "family", "carol").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        f.put_member(&f.carol, "family", "carol").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        f.put_member(&f.admin, "family", "carol").await,
        StatusCode::OK
    );
    assert_eq!(
        f.remove_member(&f.bob, "family", "carol").await,
        StatusCode::FORBIDDEN
    );
    // ...and anyone may leave.
    assert_eq!(
        f.remove_member(&f.carol, "family", "carol").await,
        StatusCode::OK
    );
    assert_eq!(
        f.remove_member(&f.olga, "family", "carol").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete("/api/groups/family", &f.bob).await.status,
        StatusCode::FORBIDDEN
    );
    // Names follow the agents' slug rules and are unique; the names forward
    // auth gives everyone and admins are not for groups.
    for (name, status) in [
        ("family", StatusCode::CONFLICT),
        ("Bad Name", StatusCode::BAD_REQUEST),
        ("admins", StatusCode::BAD_REQUEST),
        ("kids", StatusCode::OK),
    ] {
        let r = app.post("/api/groups", &f.bob, json!({"name": name})).await;
        assert_eq!(r.status, status, "{name}: {}", r.body);
    }
    let r = app.get("/api/audit", &f.bob).await;
    let actions: Vec<&str> = r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"group.member_add"), "{actions:?}");
    assert!(actions.contains(&"group.create"), "{actions:?}");
}

#[tokio::test]
async fn the_operator_may_keep_groups_to_admins() {
    let app = TestApp::with_config(|c| c.user_groups = false);
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", "bob-password").await;
    let r = app.post("/api/groups", &bob, json!({"name": "mine"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = app
        .post("/api/groups", &admin, json!({"name": "team"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn a_group_share_reaches_members_until_they_leave_or_are_removed() {
    let f = family().await;
    assert_eq!(f.access(&f.bob).await, None);
    let r = f
        .share(&f.olga, json!({"group": "family", "level": "share"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["share"]["group"], "family");
    assert_eq!(f.access(&f.bob).await.as_deref(), Some("share"));
    assert_eq!(f.access(&f.carol).await, None);
    // Through the group, bob shares onward; carol's grant draws on bob.
    let r = f
        .share(&f.bob, json!({"user": "carol", "level": "use"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(f.access(&f.carol).await.as_deref(), Some("use"));
    // The listing of the agents bob sees has it, and who reaches it says how.
    let r = f.app.get("/api/agents", &f.bob).await;
    assert_eq!(r.body[0]["name"], "ada");
    let r = f.app.get("/api/agents/ada/access", &f.olga).await;
    let carol = r.body["access"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["user"]["username"] == "carol")
        .unwrap()
        .clone();
    assert_eq!(carol["level"], "use");
    let draws_on = &carol["via"][0]["draws_on"];
    assert_eq!(draws_on[0]["user"]["username"], "bob");
    assert_eq!(draws_on[0]["kind"], "group");
    assert_eq!(draws_on[0]["group"], "family");
    assert_eq!(draws_on[1]["kind"], "owner");
    // A delegated token bob mints through the group.
    let r = f
        .app
        .post(
            "/api/tokens",
            &f.bob,
            json!({"agent": "ada", "level": "edit", "expires_in": 3600}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let delegated = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        f.app.get("/api/agents/ada", &delegated).await.status,
        StatusCode::OK
    );
    // Bob leaves: his access, carol's through him and his token end on the
    // very next request.
    assert_eq!(
        f.remove_member(&f.bob, "family", "bob").await,
        StatusCode::OK
    );
    assert_eq!(f.access(&f.bob).await, None);
    assert_eq!(f.access(&f.carol).await, None);
    assert_eq!(
        f.app.get("/api/agents/ada", &delegated).await.status,
        StatusCode::NOT_FOUND
    );
    // Added back, all of it holds again: nothing was rewritten.
    assert_eq!(f.put_member(&f.olga, "family", "bob").await, StatusCode::OK);
    assert_eq!(f.access(&f.carol).await.as_deref(), Some("use"));
    assert_eq!(
        f.app.get("/api/agents/ada", &delegated).await.status,
        StatusCode::OK
    );
    // A member's level is the highest reaching them.
    let r = f
        .share(&f.olga, json!({"user": "bob", "level": "view"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(f.access(&f.bob).await.as_deref(), Some("share"));
    // Deleting the group takes its grant along, in the same transaction.
    assert_eq!(
        f.app.delete("/api/groups/family", &f.olga).await.status,
        StatusCode::OK
    );
    assert_eq!(f.access(&f.bob).await.as_deref(), Some("view"));
    let r = f.app.get("/api/agents/ada/shares", &f.olga).await;
    assert!(
        r.body["shares"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["group"].is_null()),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn sharing_with_a_group_follows_the_person_rules() {
    let f = family().await;
    // At most one's own level; never owner.
    let r = f
        .share(&f.olga, json!({"user": "carol", "level": "use"}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = f
        .share(&f.carol, json!({"group": "family", "level": "use"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    // A group one does not see is not found.
    let r = f
        .share(&f.olga, json!({"group": "nobody", "level": "use"}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = f
        .share(&f.olga, json!({"group": "family", "level": "owner"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    // One grantee at a time.
    let r = f
        .share(
            &f.olga,
            json!({"group": "family", "user": "carol", "level": "use"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    // A member cannot take the group's grant as their own to leave.
    let r = f
        .share(&f.olga, json!({"group": "family", "level": "use"}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = f
        .app
        .delete("/api/agents/ada/shares/group:family", &f.bob)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = f
        .app
        .delete("/api/agents/ada/shares/group:family", &f.olga)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(f.access(&f.bob).await, None);
    // A group member with share cannot mint the runtime token: it is the
    // owner's alone, so none is ever minted through a group.
    let r = f
        .share(&f.olga, json!({"group": "family", "level": "share"}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = f
        .app
        .post("/api/agents/ada/runtime-token", &f.bob, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
}

#[tokio::test]
async fn everyone_on_the_host_is_capped_and_includes_later_accounts() {
    let f = family().await;
    let r = f
        .share(&f.olga, json!({"everyone": true, "level": "edit"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = f
        .share(&f.admin, json!({"everyone": true, "level": "manage"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = f
        .share(&f.olga, json!({"everyone": true, "level": "use"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["share"]["everyone"], true);
    assert_eq!(f.access(&f.carol).await.as_deref(), Some("use"));
    // Someone who signs up later is part of everyone.
    let dan = f.app.add_user(&f.admin, "dan", "dan-password").await;
    let r = f.app.get("/api/agents", &dan).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body[0]["name"], "ada");
    assert_eq!(r.body[0]["access"], "use");
    assert_eq!(r.body[0]["shared_with_everyone"], "use");
    // Use does not let them share it onward.
    let r = f
        .share(&dan, json!({"user": "carol", "level": "view"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = f
        .app
        .delete("/api/agents/ada/shares/everyone", &f.olga)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(f.access(&dan).await, None);
}

#[tokio::test]
async fn an_expired_share_confers_nothing_on_the_next_request_and_stays_listed() {
    let f = family().await;
    let now = f.app.state.now();
    let r = f
        .share(
            &f.olga,
            json!({"user": "past", "level": "use", "expires_at": now - 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    for body in [
        json!({"user": "carol", "level": "use", "expires_at": now + 60}),
        json!({"group": "family", "level": "view", "expires_at": now + 120}),
        json!({"everyone": true, "level": "view", "expires_at": now + 180}),
    ] {
        let r = f.share(&f.olga, body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let dan = f.app.add_user(&f.admin, "dan", "dan-password").await;
    // Warm every decision first: a remembered one must not outlive expiry.
    for _ in 0..2 {
        assert_eq!(f.access(&f.carol).await.as_deref(), Some("use"));
        assert_eq!(f.access(&f.bob).await.as_deref(), Some("view"));
        assert_eq!(f.access(&dan).await.as_deref(), Some("view"));
    }
    f.app.state.config.clock.advance(61);
    assert_eq!(f.access(&f.carol).await.as_deref(), Some("view"));
    f.app.state.config.clock.advance(60);
    assert_eq!(f.access(&f.carol).await.as_deref(), Some("view"));
    assert_eq!(f.access(&f.bob).await.as_deref(), Some("view"));
    f.app.state.config.clock.advance(60);
    for token in [&f.carol, &f.bob, &dan] {
        assert_eq!(f.access(token).await, None);
    }
    // Still listed, as expired, until removed.
    let r = f.app.get("/api/agents/ada/shares", &f.olga).await;
    let shares = r.body["shares"].as_array().unwrap();
    assert_eq!(shares.len(), 3, "{}", r.body);
    assert!(shares
        .iter()
        .all(|s| s["expired"] == true && s["effective"] == false));
    let r = f.app.get("/api/agents/ada/access", &f.olga).await;
    let carol = r.body["access"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["user"]["username"] == "carol")
        .unwrap()
        .clone();
    assert_eq!(carol["level"], Value::Null);
    assert_eq!(carol["via"][0]["in_effect"], false);
    assert_eq!(carol["via"][0]["expires_at"], now + 60);
    let r = f.app.delete("/api/agents/ada/shares/carol", &f.olga).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f.app.get("/api/audit", &f.olga).await;
    let events = r.body["events"].as_array().unwrap();
    let unshare = events
        .iter()
        .find(|e| e["action"] == "agent.unshare")
        .unwrap();
    assert_eq!(unshare["detail"]["expired"], true);
    assert!(events
        .iter()
        .any(|e| e["action"] == "agent.share" && e["detail"]["group"] == "family"));
}

#[tokio::test]
async fn deleting_a_person_takes_their_memberships() {
    let f = family().await;
    let r = f.app.delete("/auth/users/bob", &f.admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f.app.get("/api/groups/family", &f.olga).await;
    let members: Vec<&str> = r.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["olga"]);
}

#[tokio::test]
async fn forward_auth_names_the_groups() {
    let f = family().await;
    let req = Request::builder()
        .method(Method::GET)
        .uri("/auth/verify")
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/desktop")
        .header("authorization", format!("Bearer {}", f.bob))
        .body(Body::empty())
        .unwrap();
    let r = f.app.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for name in ["remote-groups", "x-auth-request-groups"] {
        assert_eq!(r.headers[name], "users,family");
    }
    assert_eq!(
        f.remove_member(&f.bob, "family", "bob").await,
        StatusCode::OK
    );
    let req = Request::builder()
        .method(Method::GET)
        .uri("/auth/verify")
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/desktop")
        .header("authorization", format!("Bearer {}", f.bob))
        .body(Body::empty())
        .unwrap();
    let r = f.app.send(req).await;
    assert_eq!(r.headers["remote-groups"], "users");
}

#[tokio::test]
async fn a_runtime_reads_what_a_member_bound_only_while_the_group_gives_them_manage() {
    let f = family().await;
    let r = f
        .share(&f.olga, json!({"group": "family", "level": "manage"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // bob binds his secret to ada through the group's manage...
    let r = f
        .app
        .post(
            "/api/secrets",
            &f.bob,
            json!({"name": "BOBS_KEY", "value": "bob-secret-value", "agents": ["ada"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f
        .app
        .post("/api/agents/ada/runtime-token", &f.olga, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let runtime = r.body["token"].as_str().unwrap().to_owned();
    let released = |body: &Value| body.to_string().contains("bob-secret-value");
    let r = f.app.get("/api/secrets/agent/ada", &runtime).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(released(&r.body), "{}", r.body);
    // ...and once he is out of the group the runtime reads it no more.
    assert_eq!(
        f.remove_member(&f.olga, "family", "bob").await,
        StatusCode::OK
    );
    let r = f.app.get("/api/secrets/agent/ada", &runtime).await;
    assert!(!released(&r.body), "{}", r.body);
}

#[tokio::test]
async fn scoped_listings_and_checks_count_group_access() {
    let f = family().await;
    let r = f
        .share(&f.olga, json!({"group": "family", "level": "edit"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let names = |r: &Response| -> Vec<String> {
        r.body
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let r = f.app.get("/api/agents?min_level=edit", &f.bob).await;
    assert_eq!(names(&r), ["ada"]);
    let r = f.app.get("/api/agents?min_level=manage", &f.bob).await;
    assert!(names(&r).is_empty());
    let r = f
        .app
        .post(
            "/api/check",
            &f.bob,
            json!({"checks": [
                {"operation": "agent:update", "agent": "ada"},
                {"operation": "agent:archive", "agent": "ada"},
                {"operation": "agent:share", "agent": "ada", "level": "view", "user": "group:family"}
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let allowed: Vec<bool> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["allowed"].as_bool().unwrap())
        .collect();
    assert_eq!(allowed, [true, false, false]);
}

/// Sharing with everyone on a host with more accounts than one decision may
/// hold facts: a decision carries the caller's own membership, never the
/// whole host, so reading, listing and the owner's view still answer.
#[tokio::test]
async fn everyone_on_a_large_host_is_decided_on_the_callers_facts() {
    use tessera::domain::keyspace;
    use tessera::store::Transaction;
    let f = family().await;
    let mut tx = Transaction::new();
    for i in 0..2_500 {
        tx.put(keyspace::active(&format!("seeded{i:05}")), Vec::new());
    }
    f.app.state.store.commit(&tx).unwrap();
    let r = f
        .share(&f.olga, json!({"everyone": true, "level": "use"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(f.access(&f.carol).await.as_deref(), Some("use"));
    let r = f.app.get("/api/agents?min_level=use", &f.carol).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body[0]["name"], "ada");
    let r = f.app.get("/api/agents/ada", &f.olga).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["shared_with"][0]["effective"], true);
    // Who reaches it: every account, through everyone.
    let r = f.app.get("/api/agents/ada/access?limit=200", &f.olga).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["access"].as_array().unwrap().len(), 200);
    assert!(r.headers.get("link").is_some(), "more pages follow");
}
