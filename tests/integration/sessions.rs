//! Every way of ending a session makes the very next request with the old
//! token fail with 401, while unrelated sessions keep working.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Auth, TestApp, ADMIN_PASSWORD};

async fn assert_revoked(app: &TestApp, token: &str, how: &str) {
    let r = app.get("/auth/me", token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{how}: {}", r.body);
    // The cookie path is checked the same way as the bearer path.
    let r = app
        .call(Method::GET, "/auth/me", Auth::Cookie(token), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{how} (cookie)");
}

#[tokio::test]
async fn logout_and_lock_end_only_that_session() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let bob1 = app.add_user(&admin, "bob", "bob-password").await;
    let bob2 = app.login("bob", "bob-password").await.token();
    let bob3 = app.login("bob", "bob-password").await.token();

    let r = app
        .call(Method::POST, "/auth/logout", Auth::Cookie(&bob1), None)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.set_cookie().unwrap().contains("Max-Age=0"));
    assert_revoked(&app, &bob1, "logout").await;

    let r = app
        .call(Method::POST, "/auth/lock", Auth::Bearer(&bob2), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_revoked(&app, &bob2, "lock").await;

    assert_eq!(app.get("/auth/me", &bob3).await.status, StatusCode::OK);
    assert_eq!(app.get("/auth/me", &admin).await.status, StatusCode::OK);
}

#[tokio::test]
async fn password_change_ends_the_other_sessions() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let here = app.add_user(&admin, "bob", "bob-password").await;
    let elsewhere = app.login("bob", "bob-password").await.token();

    let r = app
        .post(
            "/auth/users/bob/password",
            &here,
            json!({"current": "wrong-password", "new": "new-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error(), "current password is incorrect");

    let r = app
        .post(
            "/auth/users/bob/password",
            &here,
            json!({"current": "bob-password", "new": "new-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_revoked(&app, &elsewhere, "password change").await;
    assert_eq!(app.get("/auth/me", &here).await.status, StatusCode::OK);
    assert_eq!(
        app.login("bob", "bob-password").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("bob", "new-password").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn admin_reset_delete_and_revoke_end_every_session() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;

    let bob = app.add_user(&admin, "bob", "bob-password").await;
    let r = app.post("/auth/users/bob/reset", &admin, json!({})).await;
    assert_eq!(r.status, StatusCode::OK);
    let code = r.body["invite_code"].as_str().unwrap().to_owned();
    assert_revoked(&app, &bob, "reset").await;
    assert_eq!(
        app.login("bob", "bob-password").await.status,
        StatusCode::UNAUTHORIZED
    );
    let pending = app.login("bob", &code).await;
    assert_eq!(pending.body["needs_onboarding"], true);

    let carol = app.add_user(&admin, "carol", "carol-password").await;
    let r = app.delete("/auth/users/carol/sessions", &admin).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["revoked"], 1);
    assert_revoked(&app, &carol, "admin revoke").await;

    let dave = app.add_user(&admin, "dave", "dave-password").await;
    let r = app.delete("/auth/users/dave", &admin).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_revoked(&app, &dave, "delete").await;
    assert_eq!(
        app.login("dave", "dave-password").await.status,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(app.get("/auth/me", &admin).await.status, StatusCode::OK);
}

#[tokio::test]
async fn completing_an_invite_ends_the_invite_phase_session_and_the_code() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let code = app
        .post("/auth/users", &admin, json!({"username": "bob"}))
        .await
        .body["invite_code"]
        .as_str()
        .unwrap()
        .to_owned();
    let invite_session = app.login("bob", &code).await.token();
    // A pending user may look at themselves but not act as a full account.
    assert_eq!(
        app.get("/auth/me", &invite_session).await.status,
        StatusCode::OK
    );
    let r = app
        .post(
            "/auth/users/bob/profile",
            &invite_session,
            json!({"full_name": "B"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let done = app
        .anon_post(
            "/auth/complete",
            json!({"username": "bob", "invite_code": code, "password": "bob-password"}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK);
    assert_revoked(&app, &invite_session, "invite completion").await;
    // Single use: neither login nor a second completion accept the code again.
    assert_eq!(
        app.login("bob", &code).await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = app
        .anon_post(
            "/auth/complete",
            json!({"username": "bob", "invite_code": code, "password": "other-password"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.login("bob", "bob-password").await.status,
        StatusCode::OK
    );
    let _ = ADMIN_PASSWORD;
}

#[tokio::test]
async fn an_expired_session_record_is_refused_even_if_the_token_is_not() {
    let app = TestApp::with_config(|c| c.session_ttl = std::time::Duration::from_secs(0));
    let admin = app.setup_admin().await; // long-lived by default: still valid
    app.add_user(&admin, "bob", "bob-password").await;
    let r = app
        .anon_post(
            "/auth/login",
            json!({"username": "bob", "password": "bob-password", "auto_login": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let status = app.get("/auth/me", &r.token()).await;
    assert_eq!(status.status, StatusCode::UNAUTHORIZED);
    assert_eq!(status.error(), "token expired");
}
