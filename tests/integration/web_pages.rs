//! The pages before the console (sign in, first run, onboarding, `/`), and
//! the cross-site request rules every cookie-authenticated change obeys, on
//! pages and JSON API alike.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use crate::helpers::{Auth, Response, TestApp, ADMIN_PASSWORD, TEST_CSRF};

/// A request as a browser sends it: `cookies`, extra `headers`, and a form
/// or JSON body.
fn browser(
    method: Method,
    path: &str,
    cookies: &str,
    headers: &[(&str, &str)],
    form: Option<&str>,
) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(path);
    if !cookies.is_empty() {
        req = req.header("cookie", cookies);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match form {
        Some(form) => req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    }
}

fn location(r: &Response) -> &str {
    r.headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The session token a response's cookie carries.
fn session_of(r: &Response) -> String {
    let cookie = r.set_cookie().expect("a session cookie");
    cookie
        .trim_start_matches("taos_session=")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn first_run_then_sign_in_then_home() {
    let app = TestApp::new();
    // Before anyone exists: / and the sign-in page lead to first run.
    let r = app.send(browser(Method::GET, "/", "", &[], None)).await;
    assert_eq!(
        (r.status, location(&r)),
        (StatusCode::SEE_OTHER, "/auth/login")
    );
    let r = app
        .send(browser(Method::GET, "/auth/login", "", &[], None))
        .await;
    assert_eq!(
        (r.status, location(&r)),
        (StatusCode::SEE_OTHER, "/auth/setup")
    );
    let r = app
        .send(browser(Method::GET, "/auth/setup", "", &[], None))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains(r#"action="/auth/setup""#), "{}", r.text);
    // The page hands the browser its CSRF cookie: strict, readable by
    // tessera's own script (not HttpOnly).
    let csrf_cookie = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("csrf_token="))
        .expect("a CSRF cookie");
    assert!(csrf_cookie.contains("SameSite=Strict") && !csrf_cookie.contains("HttpOnly"));
    let token = csrf_cookie
        .trim_start_matches("csrf_token=")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(r
        .text
        .contains(&format!(r#"name="csrf_token" value="{token}""#)));

    let cookies = format!("csrf_token={token}");
    let same = [("sec-fetch-site", "same-origin")];
    // A browser's form post without the form token is refused (login CSRF).
    let r = app
        .send(browser(
            Method::POST,
            "/auth/setup",
            &cookies,
            &same,
            Some(&format!("username=alice&password={ADMIN_PASSWORD}")),
        ))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // A weak password comes back to the page with the reason in words.
    let r = app
        .send(browser(
            Method::POST,
            "/auth/setup",
            &cookies,
            &same,
            Some(&format!("username=alice&password=short&csrf_token={token}")),
        ))
        .await;
    assert_eq!(
        (r.status, location(&r)),
        (StatusCode::SEE_OTHER, "/auth/setup?error=password")
    );
    let r = app
        .send(browser(
            Method::GET,
            "/auth/setup?error=password",
            &cookies,
            &[],
            None,
        ))
        .await;
    assert!(r.text.contains("at least 8 characters"), "{}", r.text);
    let r = app
        .send(browser(
            Method::POST,
            "/auth/setup",
            &cookies,
            &same,
            Some(&format!(
                "username=alice&password={ADMIN_PASSWORD}&csrf_token={token}"
            )),
        ))
        .await;
    assert_eq!(
        (r.status, location(&r)),
        (StatusCode::SEE_OTHER, "/console")
    );
    let alice = session_of(&r);
    // First run is over: its page is gone.
    let r = app
        .send(browser(Method::GET, "/auth/setup", "", &[], None))
        .await;
    assert_eq!(
        (r.status, location(&r)),
        (StatusCode::SEE_OTHER, "/auth/login")
    );

    // Signed in, / goes home and the console shows the person.
    let signed_in = format!("taos_session={alice}; csrf_token={token}");
    let r = app
        .send(browser(Method::GET, "/", &signed_in, &[], None))
        .await;
    assert_eq!(location(&r), "/console");
    let r = app
        .send(browser(Method::GET, "/console", &signed_in, &[], None))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("alice") && r.text.contains(r#"action="/auth/logout""#));

    // Signing out with the page's form lands on the sign-in page.
    let r = app
        .send(browser(
            Method::POST,
            "/auth/logout",
            &signed_in,
            &same,
            Some(&format!("csrf_token={token}")),
        ))
        .await;
    assert_eq!(
        (r.status, location(&r)),
        (StatusCode::SEE_OTHER, "/auth/login")
    );
    let r = app
        .send(browser(Method::GET, "/console", &signed_in, &[], None))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        location(&r).starts_with("/auth/login?next=%2Fconsole"),
        "{}",
        location(&r)
    );
}

#[tokio::test]
async fn the_sign_in_page_says_what_failed_and_keeps_next() {
    let app = TestApp::new();
    app.setup_admin().await;
    let r = app
        .send(browser(
            Method::GET,
            "/auth/login?error=1&next=%2Fconsole%2Fmemory",
            "",
            &[],
            None,
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("Wrong username or password"), "{}", r.text);
    assert!(
        r.text.contains(r#"name="next" value="/console/memory""#),
        "{}",
        r.text
    );
    assert!(r.text.contains(r#"name="auto_login""#));
    // A next that leaves the site is dropped.
    let r = app
        .send(browser(
            Method::GET,
            "/auth/login?next=%2F%2Fevil.example",
            "",
            &[],
            None,
        ))
        .await;
    assert!(!r.text.contains("evil.example"), "{}", r.text);
    // Unknown error codes show a generic line, never text from the URL.
    let r = app
        .send(browser(
            Method::GET,
            "/auth/login?error=%3Cb%3Ephish%3C%2Fb%3E",
            "",
            &[],
            None,
        ))
        .await;
    assert!(!r.text.contains("phish"), "{}", r.text);
}

#[tokio::test]
async fn an_invite_code_typed_as_password_leads_to_onboarding() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let invite = app
        .post("/auth/users", &admin, json!({"username": "bob"}))
        .await;
    let code = invite.body["invite_code"].as_str().unwrap().to_owned();
    let cookies = format!("csrf_token={TEST_CSRF}");
    let same = [("sec-fetch-site", "same-origin")];
    let r = app
        .send(browser(
            Method::POST,
            "/auth/login",
            &cookies,
            &same,
            Some(&format!(
                "username=bob&password={code}&csrf_token={TEST_CSRF}"
            )),
        ))
        .await;
    assert_eq!(
        (r.status, location(&r)),
        (StatusCode::SEE_OTHER, "/auth/onboarding")
    );
    let pending = session_of(&r);
    let with = format!("taos_session={pending}; csrf_token={TEST_CSRF}");
    // The console sends an invited person back to onboarding.
    let r = app
        .send(browser(Method::GET, "/console", &with, &[], None))
        .await;
    assert_eq!(location(&r), "/auth/onboarding");
    let r = app
        .send(browser(Method::GET, "/auth/onboarding", &with, &[], None))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("Welcome, bob") && r.text.contains(r#"action="/auth/complete""#));
    // Too short a password: back to the page, in words.
    let r = app
        .send(browser(
            Method::POST,
            "/auth/complete",
            &with,
            &same,
            Some(&format!(
                "username=bob&password=short&csrf_token={TEST_CSRF}"
            )),
        ))
        .await;
    assert_eq!(location(&r), "/auth/onboarding?error=password");
    let r = app
        .send(browser(
            Method::POST,
            "/auth/complete",
            &with,
            &same,
            Some(&format!(
                "username=bob&full_name=Bob+B&password=bob-password&csrf_token={TEST_CSRF}"
            )),
        ))
        .await;
    assert_eq!(
        (r.status, location(&r)),
        (StatusCode::SEE_OTHER, "/console")
    );
    let bob = session_of(&r);
    let me = app.get("/auth/me", &bob).await;
    assert_eq!(me.body["user"]["full_name"], "Bob B");
    assert_eq!(me.body["user"]["pending"], false);
    // The code worked once; the invite-phase session is over.
    assert_eq!(
        app.login("bob", &code).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/auth/me", &pending).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Without an invite-phase session the onboarding form is refused.
    let r = app
        .send(browser(
            Method::POST,
            "/auth/complete",
            &cookies,
            &same,
            Some(&format!(
                "username=bob&password=other-password&csrf_token={TEST_CSRF}"
            )),
        ))
        .await;
    assert_eq!(location(&r), "/auth/onboarding?error=invite");
}

#[tokio::test]
async fn cookie_changes_need_the_token_and_the_same_origin() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let body = json!({"name": "helper"});
    // The session cookie alone (what a forged request carries): refused.
    let r = app
        .call(
            Method::POST,
            "/api/agents",
            Auth::CookieOnly(&admin),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.error().contains("CSRF"), "{}", r.body);
    assert!(
        app.state.agents.get("helper").unwrap().is_none(),
        "nothing changed"
    );
    // A wrong token: refused.
    let forged = Request::post("/api/agents")
        .header(
            "cookie",
            format!("taos_session={admin}; csrf_token={TEST_CSRF}"),
        )
        .header("x-csrf-token", "wrongwrongwrongwrongwrongwrongwr")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    assert_eq!(app.send(forged).await.status, StatusCode::FORBIDDEN);
    // Another origin (another port of the same host is the same site, not
    // the same origin), even with the token: refused.
    for (name, value) in [
        ("origin", "http://127.0.0.1:9999"),
        ("sec-fetch-site", "same-site"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let req = Request::post("/api/agents")
            .header("host", "127.0.0.1:7700")
            .header(
                "cookie",
                format!("taos_session={admin}; csrf_token={TEST_CSRF}"),
            )
            .header("x-csrf-token", TEST_CSRF)
            .header(name, value)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let r = app.send(req).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{name}: {value}");
    }
    assert!(
        app.state.agents.get("helper").unwrap().is_none(),
        "nothing changed"
    );
    // The page's way: token echoed, same origin.
    let req = Request::post("/api/agents")
        .header("host", "127.0.0.1:7700")
        .header("origin", "http://127.0.0.1:7700")
        .header("sec-fetch-site", "same-origin")
        .header(
            "cookie",
            format!("taos_session={admin}; csrf_token={TEST_CSRF}"),
        )
        .header("x-csrf-token", TEST_CSRF)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::OK);
    // Bearer tokens carry no ambient authority: exempt.
    let r = app
        .post("/api/agents", &admin, json!({"name": "other"}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Reading needs nothing more than the cookie.
    let r = app
        .call(Method::GET, "/api/agents", Auth::CookieOnly(&admin), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn credential_routes_work_with_a_stale_cookie_but_not_cross_origin() {
    let app = TestApp::new();
    app.setup_admin().await;
    let login = json!({"username": "alice", "password": ADMIN_PASSWORD});
    // A JSON login with a stale session cookie and no CSRF token works (the
    // legacy front end logs in this way).
    let r = app
        .call(
            Method::POST,
            "/auth/login",
            Auth::CookieOnly("stale-token"),
            Some(login.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // A form post from a client that is not a browser works as before.
    let r = app
        .send(browser(
            Method::POST,
            "/auth/login",
            "",
            &[],
            Some(&format!("username=alice&password={ADMIN_PASSWORD}")),
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    // A cross-origin page posting the sign-in form (login CSRF): refused,
    // with or without a token of its own.
    for cookies in ["", "csrf_token=attackerattackerattackerattacker"] {
        let r = app
            .send(browser(
                Method::POST,
                "/auth/login",
                cookies,
                &[("host", "127.0.0.1:7700"), ("origin", "http://127.0.0.1:9999")],
                Some(&format!(
                    "username=alice&password={ADMIN_PASSWORD}&csrf_token=attackerattackerattackerattacker"
                )),
            ))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.set_cookie().is_none(), "no session is set");
    }
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = TestApp::with_config(|c| c.cookie_secure = true);
    for path in ["/auth/login", "/health", "/api/agents", "/no-such-page"] {
        let r = app
            .send(browser(
                Method::GET,
                path,
                "",
                &[("accept", "text/html")],
                None,
            ))
            .await;
        let h = &r.headers;
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"),
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert!(h.contains_key("strict-transport-security"), "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
    }
    // A browser gets a page for a path that does not exist, API clients JSON.
    let r = app
        .send(browser(
            Method::GET,
            "/no-such-page",
            "",
            &[("accept", "text/html")],
            None,
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text.contains("Not found"));
    let r = app
        .send(browser(Method::GET, "/no-such-page", "", &[], None))
        .await;
    assert_eq!(r.body["error"], "no such route");
    // Pages load nothing from another origin.
    let r = app
        .send(browser(Method::GET, "/auth/login", "", &[], None))
        .await;
    for needle in ["http://", "https://", "<script>"] {
        assert!(!r.text.contains(needle), "{needle} in the sign-in page");
    }
}

#[tokio::test]
async fn a_refused_form_post_from_a_page_is_explained_in_words() {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let r = app
        .send(browser(
            Method::POST,
            "/console/agents",
            &format!("taos_session={admin}; csrf_token={TEST_CSRF}"),
            &[
                ("accept", "text/html,application/xhtml+xml"),
                ("sec-fetch-site", "same-origin"),
            ],
            Some("name=helper&csrf_token=stalestalestalestalestalestalest"),
        ))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("reload the page"), "{}", r.text);
    assert!(app.state.agents.get("helper").unwrap().is_none());
}
