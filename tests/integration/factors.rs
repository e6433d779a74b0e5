//! Second factors (issue 14): TOTP enrolment and sign-in, recovery codes,
//! the halfway session, step-up, the admin requirement and reset.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use tessera::domain::factors::{hotp, step_of};

const BOB_PASSWORD: &str = "bob-password-123";

fn now() -> i64 {
    tessera::domain::now()
}

/// The TOTP code of `secret` (base32) for the step `offset` steps from now.
fn code(secret: &str, offset: i64) -> String {
    let raw = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .expect("base32 secret");
    let step = step_of(now()) + offset;
    format!("{:06}", hotp(&raw, step as u64, 6).unwrap())
}

/// Enrol TOTP at `token`'s session; the secret and the recovery codes.
async fn enrol(app: &TestApp, token: &str) -> (String, Vec<String>) {
    let (secret, codes, _) = enrol_with(app, token).await;
    (secret, codes)
}

/// [`enrol`], with the code that confirmed it.
async fn enrol_with(app: &TestApp, token: &str) -> (String, Vec<String>, String) {
    let begun = app.post("/auth/factors/totp", token, json!({})).await;
    assert_eq!(begun.status, StatusCode::OK, "{}", begun.body);
    let secret = begun.body["secret"].as_str().unwrap().to_owned();
    let url = begun.body["otpauth_url"].as_str().unwrap();
    assert!(url.starts_with("otpauth://totp/tessera%3A"), "{url}");
    assert!(url.contains(&format!("secret={secret}")), "{url}");
    assert!(url.contains("algorithm=SHA1&digits=6&period=30"), "{url}");
    let first = code(&secret, 0);
    let confirmed = app
        .post("/auth/factors/totp/confirm", token, json!({"code": first}))
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    let codes: Vec<String> = confirmed.body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    (secret, codes, first)
}

/// Sign in with the password and then `second`; the full session's token.
async fn sign_in(app: &TestApp, user: &str, password: &str, second: &str) -> Value {
    let first = app.login(user, password).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(
        first.body["needs_second_factor"],
        json!(true),
        "{}",
        first.body
    );
    let done = app
        .post(
            "/auth/second-factor",
            &first.token(),
            json!({"code": second}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    done.body
}

/// Make the session behind `token` have verified its last factor `secs`
/// ago (as if that much time had passed).
fn age_factor(app: &TestApp, token: &str, secs: i64) {
    use tessera::authz::tokens::{verify, Claims};
    let claims = verify(app.state.authz.keys(), token).unwrap().claims;
    let Claims::Session { session, .. } = claims else {
        panic!("not a session token")
    };
    let key = format!("session/{session}");
    let mut record: Value =
        serde_json::from_slice(&app.state.store.get(key.as_bytes()).unwrap().unwrap()).unwrap();
    if record.get("factor_at").is_some_and(|v| !v.is_null()) {
        record["factor_at"] = json!(now() - secs);
    }
    let mut tx = tessera::store::Transaction::durable();
    tx.put(key, serde_json::to_vec(&record).unwrap());
    app.state.store.commit(&tx).unwrap();
}

#[tokio::test]
async fn totp_sign_in_takes_two_steps_and_a_code_works_once() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", BOB_PASSWORD).await;
    let (secret, _, spent) = enrol_with(&app, &bob).await;

    let listed = app.get("/auth/factors", &bob).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["factors"][0]["kind"], "totp");
    assert_eq!(listed.body["factors"][1]["remaining"], 10);
    assert!(!listed.text.contains(&secret), "the list shows no secret");

    // The password step: a halfway session, no user in the answer.
    let first = app.login("bob", BOB_PASSWORD).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["ok"], json!(true));
    assert_eq!(first.body["needs_second_factor"], json!(true));
    assert_eq!(first.body["factors"], json!(["totp", "recovery_code"]));
    assert!(first.body.get("user").is_none(), "{}", first.body);
    assert!(first.set_cookie().is_some());
    let lifetime = |token: &str| {
        use tessera::authz::tokens::verify;
        verify(app.state.authz.keys(), token)
            .unwrap()
            .claims
            .expires_at()
            - now()
    };
    assert!(
        lifetime(&first.token()) <= 10 * 60,
        "a halfway session lives minutes"
    );
    let halfway = first.token();
    for path in ["/auth/me", "/api/agents", "/auth/factors", "/api/secrets"] {
        let r = app.get(path, &halfway).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.body);
    }

    // Wrong, and the code already spent at enrolment: refused.
    let wrong = app
        .post("/auth/second-factor", &halfway, json!({"code": "000000"}))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
    let replay = app
        .post("/auth/second-factor", &halfway, json!({"code": spent}))
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{}", replay.body);

    // The next step's code (one step of skew): signed in in full.
    let next = code(&secret, 1);
    let done = app
        .post("/auth/second-factor", &halfway, json!({"code": next}))
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["user"]["username"], "bob");
    assert!(done.set_cookie().is_some());
    let full = done.token();
    assert!(
        lifetime(&full) > 24 * 60 * 60,
        "the full session lives days"
    );
    assert_eq!(app.get("/auth/me", &full).await.status, StatusCode::OK);
    // The halfway token ended with the step it was for.
    assert_eq!(
        app.get("/auth/me", &halfway).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The same code does not open a second sign-in.
    let again = app.login("bob", BOB_PASSWORD).await.token();
    let r = app
        .post("/auth/second-factor", &again, json!({"code": next}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    // A halfway session may still sign out.
    let out = app
        .call(
            axum::http::Method::POST,
            "/auth/logout",
            Auth::Bearer(&again),
            None,
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.get("/auth/me", &again).await.status,
        StatusCode::UNAUTHORIZED
    );

    // An account without a factor keeps the legacy answer.
    let alice = app.login("alice", ADMIN_PASSWORD).await;
    assert_eq!(alice.status, StatusCode::OK);
    assert_eq!(alice.body["user"]["username"], "alice");
    assert!(alice.body.get("needs_second_factor").is_none());
}

#[tokio::test]
async fn recovery_codes_work_once_and_their_use_is_shown_at_the_next_sign_in() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", BOB_PASSWORD).await;
    let (secret, codes) = enrol(&app, &bob).await;

    // Typed in capitals without the dash: still the code.
    let typed = codes[0].replace('-', "").to_uppercase();
    let used = sign_in(&app, "bob", BOB_PASSWORD, &typed).await;
    assert!(
        used.get("recovery_codes_used").is_none(),
        "the sign-in that used it is not the one told: {used}"
    );
    let first = app.login("bob", BOB_PASSWORD).await.token();
    let r = app
        .post("/auth/second-factor", &first, json!({"code": codes[0]}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a code works once");

    let listed = app.get("/auth/factors", &bob).await;
    assert_eq!(listed.body["factors"][1]["remaining"], 9);

    // The next full sign-in hears of it, once.
    let next = sign_in(&app, "bob", BOB_PASSWORD, &code(&secret, 1)).await;
    assert_eq!(next["recovery_codes_used"].as_array().unwrap().len(), 1);
    let after = sign_in(&app, "bob", BOB_PASSWORD, &codes[1]).await;
    assert!(after.get("recovery_codes_used").is_none(), "{after}");

    let audit = app.get("/api/audit", &admin).await;
    assert!(
        audit.text.contains("auth.recovery_code_used"),
        "{}",
        audit.text
    );
}

#[tokio::test]
async fn wrong_codes_count_toward_the_login_limits() {
    let app = TestApp::with_config(|c| c.rate_limit.per_account = 3);
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", BOB_PASSWORD).await;
    enrol(&app, &bob).await;
    let halfway = app.login("bob", BOB_PASSWORD).await.token();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = app
            .post("/auth/second-factor", &halfway, json!({"code": "000000"}))
            .await;
        statuses.push(r.status);
    }
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
}

/// Each step-up operation at alice's (an admin's) session: its status.
/// (Changing the password ends every other session, so it is tried on its
/// own, last.)
async fn step_up_ops(app: &TestApp, token: &str) -> Vec<(&'static str, StatusCode)> {
    let mut out = Vec::new();
    let r = app.get("/api/secrets/key", token).await;
    out.push(("reveal a secret", r.status));
    let r = app
        .post(
            "/api/tokens",
            token,
            json!({"agent": "helper", "level": "manage", "expires_in": 600}),
        )
        .await;
    out.push(("mint at manage", r.status));
    let r = app
        .post(
            "/api/admin/backup",
            token,
            json!({"password": ADMIN_PASSWORD}),
        )
        .await;
    out.push(("download a backup", r.status));
    let r = app.delete("/auth/users/bob/sessions", token).await;
    out.push(("admin: end bob's sessions", r.status));
    let r = app
        .post("/auth/users", token, json!({"username": "carol"}))
        .await;
    out.push(("admin: invite", r.status));
    if r.status == StatusCode::OK {
        app.delete("/auth/users/carol", token).await;
    }
    out
}

fn all(ops: &[(&'static str, StatusCode)], want: StatusCode) {
    for (op, status) in ops {
        assert_eq!(*status, want, "{op}: {ops:?}");
    }
}

#[tokio::test]
async fn step_up_asks_for_a_recent_factor_at_sessions_of_each_kind() {
    let app = TestApp::new();
    let alice = app.setup_admin().await;
    app.add_user(&alice, "bob", BOB_PASSWORD).await;
    let r = app
        .post("/api/secrets", &alice, json!({"name": "key", "value": "v"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .post("/api/agents", &alice, json!({"name": "helper"}))
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    // A session opened before enrolment, and a delegated token.
    let before = app.login("alice", ADMIN_PASSWORD).await.token();
    let delegated = app
        .post(
            "/api/tokens",
            &alice,
            json!({"agent": "helper", "level": "manage", "expires_in": 3600}),
        )
        .await;
    assert_eq!(delegated.status, StatusCode::OK, "{}", delegated.body);
    let delegated = delegated.token();
    let delegated_rights = rights(&app, &delegated).await;

    // Without a factor nothing is asked.
    all(&step_up_ops(&app, &before).await, StatusCode::OK);

    let (secret, codes) = enrol(&app, &alice).await;
    // The enrolling session just verified one.
    all(&step_up_ops(&app, &alice).await, StatusCode::OK);

    // Established by password alone, before enrolment: refused until a step-up.
    all(&step_up_ops(&app, &before).await, StatusCode::FORBIDDEN);
    assert_eq!(app.get("/auth/me", &before).await.status, StatusCode::OK);
    let r = app
        .post("/auth/second-factor", &before, json!({"code": codes[0]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    all(&step_up_ops(&app, &before).await, StatusCode::OK);

    // password+totp, and by recovery code: allowed while recent, refused
    // 15 minutes on, allowed again after a step-up.
    let totp = sign_in(&app, "alice", ADMIN_PASSWORD, &code(&secret, 1)).await;
    let recovery = sign_in(&app, "alice", ADMIN_PASSWORD, &codes[1]).await;
    for (kind, body, step_up) in [
        ("password+totp", totp, &codes[2]),
        ("recovery code", recovery, &codes[3]),
    ] {
        let token = body["token"].as_str().unwrap().to_owned();
        all(&step_up_ops(&app, &token).await, StatusCode::OK);
        age_factor(&app, &token, 14 * 60);
        all(&step_up_ops(&app, &token).await, StatusCode::OK);
        age_factor(&app, &token, 16 * 60);
        let refused = step_up_ops(&app, &token).await;
        all(&refused, StatusCode::FORBIDDEN);
        // Minting below manage is no step-up operation.
        let r = app
            .post(
                "/api/tokens",
                &token,
                json!({"agent": "helper", "level": "use", "expires_in": 600}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.body);
        let r = app
            .post("/auth/second-factor", &token, json!({"code": step_up}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.body);
        all(&step_up_ops(&app, &token).await, StatusCode::OK);
    }

    // Factor removal is a step-up operation too.
    let token = app.login("alice", ADMIN_PASSWORD).await.token();
    let done = app
        .post("/auth/second-factor", &token, json!({"code": codes[4]}))
        .await
        .token();
    age_factor(&app, &done, 16 * 60);
    let listed = app.get("/auth/factors", &done).await;
    let id = listed.body["factors"][0]["id"].as_str().unwrap().to_owned();
    let r = app.delete(&format!("/auth/factors/{id}"), &done).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(
        r.error()
            .contains("needs a second factor verified at this session"),
        "the refusal says what is missing: {}",
        r.body
    );
    // A page still offers what a step-up would allow.
    let page = app
        .send(
            axum::http::Request::builder()
                .uri("/console/admin")
                .header(
                    "cookie",
                    format!("taos_session={done}; csrf_token={TEST_CSRF}"),
                )
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.text.contains("/console/admin/users/bob/reset"),
        "{}",
        page.text
    );
    let change = json!({"current": ADMIN_PASSWORD, "new": ADMIN_PASSWORD});
    let r = app
        .post("/auth/users/alice/password", &done, change.clone())
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);

    // The delegated token minted before enrolment: exactly its old rights.
    assert_eq!(rights(&app, &delegated).await, delegated_rights);

    let r = app
        .post("/auth/second-factor", &done, json!({"code": codes[5]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app.post("/auth/users/alice/password", &done, change).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app.delete(&format!("/auth/factors/{id}"), &done).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // No factor left: the password alone signs in, recovery codes went too.
    let plain = app.login("alice", ADMIN_PASSWORD).await;
    assert_eq!(plain.body["user"]["username"], "alice", "{}", plain.body);
    assert_eq!(
        app.get("/auth/factors", &done).await.body["factors"],
        json!([])
    );
}

/// What a token may do, as statuses of a fixed set of requests.
async fn rights(app: &TestApp, token: &str) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for path in [
        "/api/agents/helper",
        "/api/agents",
        "/api/secrets",
        "/api/secrets/key",
        "/auth/me",
    ] {
        out.push(app.get(path, token).await.status);
    }
    out.push(
        app.post(
            "/api/tokens",
            token,
            json!({"agent": "helper", "level": "manage", "expires_in": 60}),
        )
        .await
        .status,
    );
    out
}

#[tokio::test]
async fn a_required_factor_gives_a_session_that_can_only_enrol() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    app.add_user(&admin, "bob", BOB_PASSWORD).await;
    let r = app.get("/auth/settings/second-factor", &admin).await;
    assert_eq!(r.body["required"], "nobody");
    let r = app
        .post(
            "/auth/settings/second-factor",
            &admin,
            json!({"required": "everyone"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let bob = app.get("/auth/settings/second-factor", &admin).await;
    assert_eq!(bob.body["required"], "everyone");

    let first = app.login("bob", BOB_PASSWORD).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["needs_enrolment"], json!(true), "{}", first.body);
    let token = first.token();
    assert_eq!(
        app.get("/api/agents", &token).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/auth/factors", &token).await.status,
        StatusCode::OK
    );
    enrol(&app, &token).await;
    assert_eq!(app.get("/api/agents", &token).await.status, StatusCode::OK);

    // An invite completed now opens a session that must enrol too.
    let invite = app
        .post("/auth/users", &admin, json!({"username": "carol"}))
        .await;
    let done = app
        .anon_post(
            "/auth/complete",
            json!({"username": "carol", "invite_code": invite.body["invite_code"], "password": "carol-password-1"}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["needs_enrolment"], json!(true), "{}", done.body);
    assert_eq!(
        app.get("/api/agents", &done.token()).await.status,
        StatusCode::FORBIDDEN
    );

    // Only admins may change the setting.
    let r = app
        .post(
            "/auth/settings/second-factor",
            &token,
            json!({"required": "nobody"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_admin_reset_clears_the_factors() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", BOB_PASSWORD).await;
    enrol(&app, &bob).await;
    let reset = app.post("/auth/users/bob/reset", &admin, json!({})).await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    let code = reset.body["invite_code"].as_str().unwrap();
    let done = app
        .anon_post(
            "/auth/complete",
            json!({"username": "bob", "invite_code": code, "password": "new-password-456"}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let again = app.login("bob", "new-password-456").await;
    assert_eq!(again.body["user"]["username"], "bob", "{}", again.body);
    assert!(again.body.get("needs_second_factor").is_none());
    let audit = app.get("/api/audit", &admin).await;
    assert!(
        audit.text.contains("\"factors_cleared\":true"),
        "{}",
        audit.text
    );
}

/// `tessera users reset-factors` on a stopped server: the locked-out last
/// admin signs in with the password alone afterwards. Refused while the
/// server runs (the store lock).
#[test]
fn the_offline_reset_clears_factors_on_a_stopped_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let server = start(dir.path());
    let (status, body) = http(
        server.addr,
        "POST",
        "/auth/setup",
        None,
        Some(&json!({"username": "alice", "password": ADMIN_PASSWORD})),
    );
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let (status, body) = http(
        server.addr,
        "POST",
        "/auth/factors/totp",
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let secret = body["secret"].as_str().unwrap().to_owned();
    let (status, body) = http(
        server.addr,
        "POST",
        "/auth/factors/totp/confirm",
        Some(&token),
        Some(&json!({"code": code(&secret, 0)})),
    );
    assert_eq!(status, 200, "{body}");
    let login = json!({"username": "alice", "password": ADMIN_PASSWORD});
    let (_, body) = http(server.addr, "POST", "/auth/login", None, Some(&login));
    assert_eq!(body["needs_second_factor"], json!(true), "{body}");

    let reset = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["users", "reset-factors", "--data", &data, "alice"])
            .env("RUST_LOG", "warn")
            .env_remove("TESSERA_DATA")
            .output()
            .unwrap()
    };
    let running = reset();
    assert!(!running.status.success(), "refused while the server runs");
    stop(server);

    let out = reset();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed the second factors of alice"));

    let server = start(dir.path());
    // Her old session ended with the reset.
    let (status, _) = http(server.addr, "GET", "/auth/me", Some(&token), None);
    assert_eq!(status, 401);
    let (status, body) = http(server.addr, "POST", "/auth/login", None, Some(&login));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["username"], "alice", "{body}");
    assert!(body.get("needs_second_factor").is_none(), "{body}");
    let token = body["token"].as_str().unwrap();
    let (_, audit) = http(server.addr, "GET", "/api/audit", Some(token), None);
    assert!(
        audit.to_string().contains("user.reset_factors_offline"),
        "{audit}"
    );
    stop(server);
}

/// A browser's form post with the session cookie and the form token.
fn form_post(
    path: &str,
    session: Option<&str>,
    form: &str,
) -> axum::http::Request<axum::body::Body> {
    let cookies = match session {
        Some(s) => format!("taos_session={s}; csrf_token={TEST_CSRF}"),
        None => format!("csrf_token={TEST_CSRF}"),
    };
    axum::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("cookie", cookies)
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(format!(
            "{form}&csrf_token={TEST_CSRF}"
        )))
        .unwrap()
}

fn page_get(path: &str, session: &str) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::builder()
        .uri(path)
        .header(
            "cookie",
            format!("taos_session={session}; csrf_token={TEST_CSRF}"),
        )
        .body(axum::body::Body::empty())
        .unwrap()
}

fn location(r: &Response) -> &str {
    r.headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn cookie_token(r: &Response) -> String {
    r.set_cookie()
        .expect("a session cookie")
        .trim_start_matches("taos_session=")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// The console: enrol from the factor page (QR code and key, confirm, the
/// recovery codes once), sign in through the second-step page, remove.
#[tokio::test]
async fn the_pages_enrol_sign_in_in_two_steps_and_remove() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let bob = app.add_user(&admin, "bob", BOB_PASSWORD).await;

    let r = app.send(page_get("/console/account/factors", &bob)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("You have no second factor"), "{}", r.text);
    let r = app
        .send(form_post("/console/account/factors/totp", Some(&bob), ""))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("<svg"), "the QR code is inline SVG");
    let secret = r
        .text
        .split(r#"<code id="totp-secret">"#)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap()
        .to_owned();
    let r = app
        .send(form_post(
            "/console/account/factors/totp/confirm",
            Some(&bob),
            "code=123",
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = app
        .send(form_post(
            "/console/account/factors/totp/confirm",
            Some(&bob),
            &format!("code={}", code(&secret, 0)),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("shown only now"), "{}", r.text);
    let recovery: Vec<String> = r
        .text
        .split("<li><code>")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);

    // Sign in with the form: the password leads to the second step.
    let r = app
        .send(form_post(
            "/auth/login",
            None,
            &format!("username=bob&password={BOB_PASSWORD}"),
        ))
        .await;
    assert_eq!(
        (r.status, location(&r)),
        (StatusCode::SEE_OTHER, "/auth/second-factor")
    );
    let halfway = cookie_token(&r);
    // Console pages send a halfway session to the step left.
    let r = app.send(page_get("/console", &halfway)).await;
    assert_eq!(location(&r), "/auth/second-factor");
    let r = app.send(page_get("/auth/second-factor", &halfway)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains(r#"action="/auth/second-factor""#));
    assert_page_says(
        &r.text,
        "Enter the 6-digit code from your authenticator app, or one of your recovery codes.",
        "passkey",
    );
    let r = app
        .send(form_post(
            "/auth/second-factor",
            Some(&halfway),
            "code=000000",
        ))
        .await;
    assert_eq!(location(&r), "/auth/second-factor?error=1");
    let r = app
        .send(form_post(
            "/auth/second-factor",
            Some(&halfway),
            &format!("code={}", recovery[0]),
        ))
        .await;
    assert_eq!(
        (r.status, location(&r)),
        (StatusCode::SEE_OTHER, "/console")
    );
    let full = cookie_token(&r);
    let r = app.send(page_get("/console/account/factors", &full)).await;
    assert!(r.text.contains("Recovery codes (9 left)"), "{}", r.text);
    let id = r
        .text
        .split("/console/account/factors/")
        .filter_map(|s| s.split("/remove").next())
        .find(|s| !s.contains('"') && *s != "recovery" && !s.is_empty())
        .unwrap()
        .to_owned();

    // Stale: removal is refused with the reason, a code opens it again.
    age_factor(&app, &full, 16 * 60);
    let path = format!("/console/account/factors/{id}/remove");
    let r = app.send(form_post(&path, Some(&full), "")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(
        r.text
            .contains("needs a second factor verified at this session"),
        "{}",
        r.text
    );
    let r = app
        .send(form_post(
            "/console/account/factors/verify",
            Some(&full),
            &format!("code={}", recovery[1]),
        ))
        .await;
    assert_eq!(location(&r), "/console/account/factors?ok=verified");
    let r = app.send(form_post(&path, Some(&full), "")).await;
    assert_eq!(location(&r), "/console/account/factors?ok=removed");
    let r = app.send(page_get("/console/account/factors", &full)).await;
    assert!(r.text.contains("You have no second factor"), "{}", r.text);
}

/// The configured default applies until an admin stores a setting.
#[tokio::test]
async fn the_configured_default_asks_admins_to_enrol() {
    let app = TestApp::with_config(|c| {
        c.second_factor_required = tessera::domain::factors::Requirement::Admins
    });
    let admin = app.setup_admin().await;
    app.add_user(&admin, "bob", BOB_PASSWORD).await;
    let alice = app.login("alice", ADMIN_PASSWORD).await;
    assert_eq!(alice.body["needs_enrolment"], json!(true), "{}", alice.body);
    let bob = app.login("bob", BOB_PASSWORD).await;
    assert_eq!(bob.body["user"]["username"], "bob", "{}", bob.body);
    let r = app
        .get("/auth/settings/second-factor", &alice.token())
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "an enrol-only session");
    let r = app.get("/auth/settings/second-factor", &admin).await;
    assert_eq!(r.body["required"], "admins");
}
