//! Account management: who may call which `/auth` route, validation, admin
//! rules, brute-force limits and the legacy password upgrade.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use tessera::domain::keyspace;
use tessera::domain::users::User;
use tessera::store::Transaction;

use crate::helpers::{Auth, TestApp, ADMIN_PASSWORD};

/// Who a protected `/auth` route is for, as the policy in `datalog/auth.dl`
/// says it.
#[derive(Clone, Copy, Debug)]
enum Needs {
    /// Any signed-in session, even one still completing an invite.
    SignedIn,
    /// The account named in the path, once sign-up is complete.
    OnlyBob,
    Admin,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Anonymous,
    Pending,
    Bob,
    Carol,
    Admin,
}

struct Route {
    method: Method,
    path: &'static str,
    body: Option<fn() -> Value>,
    needs: Needs,
}

fn routes() -> Vec<Route> {
    use Needs::*;
    let r = |method, path, body, needs| Route {
        method,
        path,
        body,
        needs,
    };
    vec![
        r(Method::GET, "/auth/me", None, SignedIn),
        r(Method::GET, "/auth/users", None, Admin),
        r(
            Method::POST,
            "/auth/users",
            Some(|| json!({"username": "newcomer"})),
            Admin,
        ),
        r(Method::POST, "/auth/users/bob/reset", None, Admin),
        r(Method::DELETE, "/auth/users/bob", None, Admin),
        r(
            Method::POST,
            "/auth/users/bob/admin",
            Some(|| json!({"is_admin": true})),
            Admin,
        ),
        r(Method::DELETE, "/auth/users/bob/sessions", None, Admin),
        r(
            Method::POST,
            "/auth/users/bob/profile",
            Some(|| json!({"full_name": "Robert"})),
            OnlyBob,
        ),
        r(
            Method::POST,
            "/auth/users/bob/password",
            Some(|| json!({"current": "bob-password", "new": "bob-new-password"})),
            OnlyBob,
        ),
    ]
}

fn expected(needs: Needs, who: Who) -> StatusCode {
    match (needs, who) {
        (_, Who::Anonymous) => StatusCode::UNAUTHORIZED,
        (Needs::SignedIn, _) => StatusCode::OK,
        (Needs::OnlyBob, Who::Bob) => StatusCode::OK,
        (Needs::Admin, Who::Admin) => StatusCode::OK,
        _ => StatusCode::FORBIDDEN,
    }
}

/// Every protected route × every kind of caller, each on a fresh host so a
/// destructive call cannot mask the next one.
#[tokio::test]
async fn every_auth_route_admits_exactly_who_the_policy_names() {
    for route in routes() {
        for who in [
            Who::Anonymous,
            Who::Pending,
            Who::Bob,
            Who::Carol,
            Who::Admin,
        ] {
            let app = TestApp::new();
            let admin = app.setup_admin().await;
            let bob = app.add_user(&admin, "bob", "bob-password").await;
            let carol = app.add_user(&admin, "carol", "carol-password").await;
            let code = app
                .post("/auth/users", &admin, json!({"username": "pat"}))
                .await
                .body["invite_code"]
                .as_str()
                .unwrap()
                .to_owned();
            let pending = app.login("pat", &code).await.token();
            let token = match who {
                Who::Anonymous => None,
                Who::Pending => Some(pending),
                Who::Bob => Some(bob),
                Who::Carol => Some(carol),
                Who::Admin => Some(admin),
            };
            let auth = token.as_deref().map_or(Auth::None, Auth::Bearer);
            let r = app
                .call(
                    route.method.clone(),
                    route.path,
                    auth,
                    route.body.map(|b| b()),
                )
                .await;
            assert_eq!(
                r.status,
                expected(route.needs, who),
                "{} {} as {who:?}: {}",
                route.method,
                route.path,
                r.body
            );
            assert!(r.body["error"].is_string() || r.status == StatusCode::OK);
        }
    }
}

#[tokio::test]
async fn setup_happens_once() {
    let app = TestApp::new();
    app.setup_admin().await;
    let again = app
        .anon_post(
            "/auth/setup",
            json!({"username": "mallory", "password": "mallory-pass"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error(), "already configured");
}

#[tokio::test]
async fn bad_input_gets_a_clear_400() {
    let app = TestApp::new();
    for (body, says) in [
        (
            json!({"username": "", "password": "long-enough"}),
            "username is required",
        ),
        (
            json!({"username": "a b", "password": "long-enough"}),
            "username may contain only",
        ),
        (
            json!({"username": "x".repeat(33), "password": "long-enough"}),
            "at most 32",
        ),
        (
            json!({"username": "alice", "password": "short"}),
            "at least 8",
        ),
        (
            json!({"username": "alice", "password": "long-enough", "email": "nope"}),
            "email",
        ),
        (
            json!({"username": 5, "password": "long-enough"}),
            "must be a string",
        ),
    ] {
        let r = app.anon_post("/auth/setup", body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(r.error().contains(says), "{body}: {}", r.error());
    }
    let admin = app.setup_admin().await;
    let r = app
        .post("/auth/users", &admin, json!({"username": "../etc"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app
        .post("/auth/users", &admin, json!({"username": "Alice"}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "usernames are case-insensitive"
    );

    let req = Request::post("/auth/users")
        .header("authorization", format!("Bearer {admin}"))
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let r = app.send(req).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().to_lowercase().contains("json"));

    let r = app
        .call(Method::GET, "/no/such/route", Auth::None, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.call(Method::PUT, "/auth/login", Auth::None, None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.body["error"].is_string());

    let big = "x".repeat(app.state.config.max_body_bytes + 1);
    let r = app
        .anon_post("/auth/login", json!({"username": "alice", "password": big}))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.body["error"].is_string());
}

#[tokio::test]
async fn wrong_credentials_look_the_same_whether_or_not_the_user_exists() {
    let app = TestApp::new();
    app.setup_admin().await;
    let known = app.login("alice", "wrong-password").await;
    let unknown = app.login("nobody", "wrong-password").await;
    assert_eq!(known.status, StatusCode::UNAUTHORIZED);
    assert_eq!(known.body, json!({"error": "invalid credentials"}));
    assert_eq!(unknown.status, known.status);
    assert_eq!(unknown.body, known.body);
}

#[tokio::test]
async fn the_admin_flag_is_read_from_the_store_on_every_request() {
    let app = TestApp::new();
    let alice = app.setup_admin().await;
    let bob = app.add_user(&alice, "bob", "bob-password").await;
    assert_eq!(
        app.get("/auth/users", &bob).await.status,
        StatusCode::FORBIDDEN
    );

    let r = app
        .post("/auth/users/bob/admin", &alice, json!({"is_admin": true}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        app.get("/auth/users", &bob).await.status,
        StatusCode::OK,
        "promotion is immediate"
    );

    let r = app
        .post("/auth/users/bob/admin", &alice, json!({"is_admin": false}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        app.get("/auth/users", &bob).await.status,
        StatusCode::FORBIDDEN,
        "demotion is immediate"
    );
}

#[tokio::test]
async fn the_last_admin_stays_and_nobody_deletes_themselves() {
    let app = TestApp::new();
    let alice = app.setup_admin().await;
    let r = app
        .post(
            "/auth/users/alice/admin",
            &alice,
            json!({"is_admin": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error(), "cannot remove the last admin");
    let r = app.delete("/auth/users/alice", &alice).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let bob = app.add_user(&alice, "bob", "bob-password").await;
    app.post("/auth/users/bob/admin", &alice, json!({"is_admin": true}))
        .await;
    // With two admins one may step down, and then the other is the last.
    let r = app
        .post("/auth/users/alice/admin", &bob, json!({"is_admin": false}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .post("/auth/users/bob/admin", &bob, json!({"is_admin": false}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app.delete("/auth/users/nobody", &bob).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn brute_force_is_answered_429_with_retry_after() {
    let app = TestApp::with_config(|c| c.rate_limit.per_account = 3);
    app.setup_admin().await;
    for _ in 0..3 {
        assert_eq!(
            app.login("alice", "wrong-password").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = app.login("alice", ADMIN_PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait > 0);
    // Another account is not locked by alice's limit.
    assert_eq!(
        app.login("bob", "whatever-pass").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn form_login_redirects_only_within_the_site() {
    let app = TestApp::new();
    app.setup_admin().await;
    let form = |body: &str| {
        Request::post("/auth/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let ok = format!("username=alice&password={ADMIN_PASSWORD}");
    for (next, to) in [
        ("%2Fagents%3Ftab%3D1", "/agents?tab=1"),
        ("https%3A%2F%2Fevil.example", "/console"),
        ("%2F%2Fevil.example", "/console"),
        ("%2F%5Cevil.example", "/console"),
    ] {
        let r = app.send(form(&format!("{ok}&next={next}"))).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(r.headers["location"], to);
        assert!(r.set_cookie().unwrap().contains("HttpOnly"));
    }
    let r = app
        .send(form(
            "username=alice&password=wrong-password&next=%2Fagents",
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers["location"], "/auth/login?error=1&next=%2Fagents");
    assert!(r.set_cookie().is_none());
}

#[tokio::test]
async fn cookies_are_secure_when_configured() {
    let app = TestApp::with_config(|c| c.cookie_secure = true);
    let r = app
        .anon_post(
            "/auth/setup",
            json!({"username": "alice", "password": ADMIN_PASSWORD}),
        )
        .await;
    let cookie = r.set_cookie().unwrap();
    assert!(
        cookie.contains("; Secure")
            && cookie.contains("SameSite=Lax")
            && cookie.contains("HttpOnly")
    );
    assert!(
        cookie.contains("Max-Age=2592000"),
        "setup stays signed in for 30 days: {cookie}"
    );
}

#[tokio::test]
async fn legacy_password_hashes_verify_and_are_upgraded_on_first_login() {
    let app = TestApp::new();
    // alice's record as the legacy import writes it: salted SHA-256.
    let legacy = "dd782d219c065910f066ac2ce3da75d3:e8824dbdb5b47872a4dd3480e71e69e1b6efa22194dce8f7364f55faa444bf59";
    let user = User {
        id: "pPuWAS-Ylhk".into(),
        username: "alice".into(),
        full_name: "Alice Admin".into(),
        email: String::new(),
        is_admin: true,
        password_hash: Some(legacy.into()),
        invite: None,
        created_at: Some(1_795_869_593),
        last_login_at: None,
    };
    let mut tx = Transaction::durable();
    tx.put(keyspace::user(&user.id), serde_json::to_vec(&user).unwrap())
        .put(keyspace::username("alice"), user.id.as_bytes().to_vec())
        .put(keyspace::admin(&user.id), Vec::new())
        .put(keyspace::active(&user.id), Vec::new());
    app.state.store.commit(&tx).unwrap();

    assert_eq!(
        app.login("alice", "not-alice-pass").await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = app.login("alice", "alice-pass").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let stored = app.state.accounts.get(&user.id).unwrap().unwrap();
    assert!(stored
        .password_hash
        .clone()
        .unwrap()
        .starts_with("$argon2id$"));
    assert!(stored.last_login_at.is_some());
    assert_eq!(
        app.login("alice", "alice-pass").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn expired_invites_do_not_log_in() {
    let app = TestApp::with_config(|c| c.invite_ttl = std::time::Duration::from_secs(0));
    let admin = app.setup_admin().await;
    let code = app
        .post("/auth/users", &admin, json!({"username": "bob"}))
        .await
        .body["invite_code"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.login("bob", &code).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .anon_post(
            "/auth/complete",
            json!({"username": "bob", "invite_code": code, "password": "bob-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error(), "invalid or expired invite code");
}

#[tokio::test]
async fn health_and_ready_answer() {
    let app = TestApp::on_sled();
    let r = app.call(Method::GET, "/health", Auth::None, None).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let r = app.call(Method::GET, "/ready", Auth::None, None).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );
    // sled's answer is as it always was (PostgreSQL's names its engine).
    assert!(r.body.get("store").is_none(), "{}", r.body);
    assert!(r.headers.get("x-request-id").is_some());
}

/// Policy is data: the same server with one line of `auth.dl` changed
/// behaves differently, with no Rust changed.
#[tokio::test]
async fn changing_the_policy_file_changes_the_decision() {
    let dir = crate::helpers::edited_policy(
        r#"requires("auth:users:list", "admin");"#,
        r#"requires("auth:users:list", "signed_in");"#,
    );
    let stock = TestApp::new();
    let edited = TestApp::with_config(|c| c.policy_dir = Some(dir.path().to_owned()));
    for (app, expected) in [(&stock, StatusCode::FORBIDDEN), (&edited, StatusCode::OK)] {
        let admin = app.setup_admin().await;
        let bob = app.add_user(&admin, "bob", "bob-password").await;
        assert_eq!(app.get("/auth/users", &bob).await.status, expected);
    }
}
